//! batchframework end to end with the process runtime: parallel completions, retries with
//! growing backoff, deadlines, cron under FORBID, dependencies, validation and placement
//! explanations — a real master, real agents and the daemon in-process.

mod batch_support;

use std::time::Duration;

use agora_agent::RuntimeKind;
use batch_support::{BatchCluster, max_concurrency_in_log, max_overlap, request, seconds};
use serde_json::json;

const RESOURCES: &str = "cpus:4;mem:4096;disk:1024;ports:[31000-31010]";

#[tokio::test]
async fn ten_completions_never_run_more_than_three_at_once() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(2, RuntimeKind::Process, RESOURCES).await?;
    let log = cluster.scratch_file("concurrency.log");
    let created = cluster
        .submit(&json!({
            "id": "parallel",
            "run": {"cmd": "echo s >> \"$LOG\"; sleep 0.4; echo e >> \"$LOG\"", "cpus": 0.1, "mem": 16,
                    "env": {"LOG": log.display().to_string()}},
            "completions": 10,
            "parallelism": 3
        }))
        .await?;
    let run_id = created["run"].as_u64().expect("a run was created");
    let run = cluster
        .wait_finished("parallel", run_id, Duration::from_secs(40))
        .await?;
    assert_eq!(run["phase"], "SUCCEEDED", "{run:#}");
    assert_eq!(run["succeeded"], 10);
    assert_eq!(
        run["attempts"].as_array().map(Vec::len),
        Some(10),
        "{run:#}"
    );
    let overlap = max_overlap(&run);
    assert!(overlap <= 3, "{overlap} attempts active at once: {run:#}");
    assert!(overlap >= 2, "parallelism was used at all: {overlap}");
    let text = std::fs::read_to_string(&log)?;
    assert_eq!(text.lines().filter(|line| *line == "s").count(), 10);
    assert!(max_concurrency_in_log(&log) <= 3, "{text}");
    cluster.stop().await
}

#[tokio::test]
async fn a_failing_command_is_retried_with_growing_delays_then_fails() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    let created = cluster
        .submit(&json!({
            "id": "flaky",
            "run": {"cmd": "exit 3", "cpus": 0.1, "mem": 16},
            "retries": 2,
            "backoffSeconds": 1,
            "maxBackoffSeconds": 30
        }))
        .await?;
    let run_id = created["run"].as_u64().expect("a run");
    let run = cluster
        .wait_finished("flaky", run_id, Duration::from_secs(30))
        .await?;
    assert_eq!(run["phase"], "FAILED", "{run:#}");
    assert_eq!(run["exitCode"], 3, "{run:#}");
    assert_eq!(run["failures"], 3);
    let attempts = run["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{run:#}");
    let gap = |index: usize| {
        seconds(&attempts[index + 1]["launchedAt"]).unwrap_or(0.0)
            - seconds(&attempts[index]["finishedAt"]).unwrap_or(0.0)
    };
    // Backoff doubles from 1 s with equal jitter: the first delay is in [0.5, 1] s, the
    // second in [1, 2] s.
    assert!(gap(0) >= 0.5, "first retry after {:.2}s", gap(0));
    assert!(gap(1) >= 1.0, "second retry after {:.2}s", gap(1));
    for attempt in attempts {
        assert_eq!(attempt["state"], "FAILED");
        assert_eq!(attempt["exitCode"], 3);
    }
    cluster.stop().await
}

#[tokio::test]
async fn active_deadline_kills_a_run_that_overstays() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    let created = cluster
        .submit(&json!({
            "id": "slow",
            "run": {"cmd": "sleep 60", "cpus": 0.1, "mem": 16},
            "activeDeadlineSeconds": 1,
            "retries": 5
        }))
        .await?;
    let run_id = created["run"].as_u64().expect("a run");
    let run = cluster
        .wait_finished("slow", run_id, Duration::from_secs(20))
        .await?;
    assert_eq!(run["phase"], "FAILED", "{run:#}");
    assert!(
        run["message"]
            .as_str()
            .unwrap_or("")
            .contains("deadline exceeded"),
        "{run:#}"
    );
    let run = cluster
        .wait_run("slow", run_id, Duration::from_secs(15), |run| {
            run["attempts"][0]["state"] == "KILLED"
        })
        .await?;
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1), "{run:#}");
    cluster.stop().await
}

#[tokio::test]
async fn a_schedule_every_two_seconds_runs_on_time_without_overlap_under_forbid()
-> anyhow::Result<()> {
    let cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    cluster
        .submit(&json!({
            "id": "tick",
            "run": {"cmd": "sleep 3", "cpus": 0.1, "mem": 16},
            "schedule": {"cron": "*/2 * * * * *", "concurrencyPolicy": "FORBID"}
        }))
        .await?;
    let runs = batch_support_wait_runs(&cluster, "tick", 3).await?;
    let mut intervals = Vec::new();
    for run in &runs {
        let scheduled = seconds(&run["scheduledFor"]).expect("scheduled runs say when");
        assert_eq!(scheduled % 2.0, 0.0, "on the */2 grid: {run:#}");
        let created = seconds(&run["createdAt"]).expect("created");
        assert!(
            created - scheduled < 1.0,
            "fired {:.2}s late",
            created - scheduled
        );
        let finished = seconds(&run["finishedAt"]).unwrap_or(f64::MAX);
        intervals.push((created, finished));
    }
    for pair in intervals.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "runs overlapped: {intervals:?}");
    }
    let (status, _) = request(cluster.api(), "DELETE", "/v1/jobs/tick", None).await?;
    assert_eq!(status, 204);
    cluster.stop().await
}

/// The first `count` runs of `job`, once they all finished.
async fn batch_support_wait_runs(
    cluster: &BatchCluster,
    job: &str,
    count: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    agora_tests::eventually(
        &format!("{count} finished runs of {job}"),
        Duration::from_secs(30),
        || async {
            let runs = cluster.get(&format!("/v1/jobs/{job}/runs")).await?;
            let finished: Vec<serde_json::Value> = runs
                .as_array()
                .into_iter()
                .flatten()
                .take(count)
                .filter(|run| run["phase"] == "SUCCEEDED")
                .cloned()
                .collect();
            Ok((finished.len() == count).then_some(finished))
        },
    )
    .await
}

#[tokio::test]
async fn a_dependent_job_runs_only_after_its_dependency_succeeds() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    let a = cluster
        .submit(&json!({"id": "extract", "run": {"cmd": "exit 1", "cpus": 0.1, "mem": 16}}))
        .await?;
    let a_run = a["run"].as_u64().expect("a run");
    let b = cluster
        .submit(
            &json!({"id": "load", "run": {"cmd": "true", "cpus": 0.1, "mem": 16},
                        "dependencies": ["extract"]}),
        )
        .await?;
    let b_run = b["run"].as_u64().expect("a waiting run");
    let failed = cluster
        .wait_finished("extract", a_run, Duration::from_secs(20))
        .await?;
    assert_eq!(failed["phase"], "FAILED");
    // The dependent waits and says why; give the daemon time to (wrongly) start it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let waiting = cluster.get(&format!("/v1/jobs/load/runs/{b_run}")).await?;
    assert_eq!(waiting["phase"], "WAITING", "{waiting:#}");
    assert_eq!(waiting["attempts"].as_array().map(Vec::len), Some(0));
    assert!(
        waiting["waitingReason"]
            .as_str()
            .unwrap_or("")
            .contains("dependency extract"),
        "{waiting:#}"
    );

    let (status, body) = request(
        cluster.api(),
        "PUT",
        "/v1/jobs/extract",
        Some(&json!({"id": "extract", "run": {"cmd": "true", "cpus": 0.1, "mem": 16}})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (status, rerun) = request(cluster.api(), "POST", "/v1/jobs/extract/runs", None).await?;
    assert_eq!(status, 201, "{rerun}");
    let rerun_id = rerun["id"].as_u64().expect("run id");
    let succeeded = cluster
        .wait_finished("extract", rerun_id, Duration::from_secs(20))
        .await?;
    assert_eq!(succeeded["phase"], "SUCCEEDED");
    let loaded = cluster
        .wait_finished("load", b_run, Duration::from_secs(20))
        .await?;
    assert_eq!(loaded["phase"], "SUCCEEDED", "{loaded:#}");
    let created = seconds(&loaded["startedAt"]).expect("started");
    assert!(created >= seconds(&succeeded["finishedAt"]).expect("finished"));
    let runs = cluster.get("/v1/jobs/load/runs").await?;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "exactly one run of load: {runs:#}"
    );
    cluster.stop().await
}

#[tokio::test]
async fn bad_jobs_get_422_with_every_field_and_waiting_runs_say_why() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    let (status, body) = request(
        cluster.api(),
        "POST",
        "/v1/jobs",
        Some(&json!({"id": "Bad", "run": {"cpus": -1}, "parallelism": 0,
                     "schedule": {"cron": "nope"}, "dependencies": ["missing"]})),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|error| error["path"].as_str())
        .collect();
    for expected in ["/id", "/run", "/run/cpus", "/parallelism", "/schedule/cron"] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {body:#}"
        );
    }
    let jobs = cluster.get("/v1/jobs").await?;
    assert_eq!(jobs, json!([]), "nothing changed");
    let (status, body) = request(
        cluster.api(),
        "POST",
        "/v1/jobs",
        Some(&json!({"id": "orphan", "run": {"cmd": "true"}, "dependencies": ["missing"]})),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["path"], "/dependencies/0");

    let created = cluster
        .submit(
            &json!({"id": "huge", "run": {"cmd": "true", "cpus": 64, "mem": 16}, "colour": "red"}),
        )
        .await?;
    assert_eq!(created["unknownFields"], json!(["/colour"]));
    let run_id = created["run"].as_u64().expect("a run");
    let run = cluster
        .wait_run("huge", run_id, Duration::from_secs(10), |run| {
            run["waitingReason"].is_string()
        })
        .await?;
    let reason = run["waitingReason"].as_str().unwrap_or("");
    assert!(reason.contains("cpus") && reason.contains("64"), "{reason}");
    let metrics = request(cluster.api(), "GET", "/metrics", None).await?;
    assert!(
        metrics
            .1
            .as_str()
            .unwrap_or("")
            .contains("agora_batch_runs{phase=\"ACTIVE\"} 1"),
        "{metrics:?}"
    );
    cluster.stop().await
}

#[tokio::test]
async fn bad_bodies_get_415_or_422_naming_the_field_and_change_nothing() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    let url = format!("http://{}/v1/jobs", cluster.api());
    let http = reqwest::Client::new();
    let valid = r#"{"id":"strict","run":{"cmd":"true","cpus":0.1,"mem":16}}"#;
    let long_id = format!(
        r#"{{"id":"{}","run":{{"cmd":"true","cpus":0.1,"mem":16}}}}"#,
        "j".repeat(70_000)
    );
    for (content_type, body, status, needle) in [
        ("text/plain", valid.to_owned(), 415, "application/json"),
        ("", valid.to_owned(), 415, "application/json"),
        (
            "application/json",
            format!("{valid} trailing garbage"),
            422,
            "malformed JSON",
        ),
        (
            "application/json",
            r#"{"id":"strict","run":{"cmd":"true","cpus":0.1,"mem":0}}"#.to_owned(),
            422,
            "/run/mem",
        ),
        (
            "application/json",
            r#"{"id":"strict","run":{"cmd":"true","cpus":0,"mem":16}}"#.to_owned(),
            422,
            "/run/cpus",
        ),
        ("application/json", long_id, 422, "at most 200 characters"),
    ] {
        let mut request = http.post(&url).body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await?;
        let got = response.status().as_u16();
        let text = response.text().await?;
        assert_eq!(got, status, "{content_type}: {text}");
        assert!(text.contains(needle), "{needle:?} missing from {text}");
        assert!(
            text.len() < 2_000,
            "the error does not echo the body: {}",
            text.len()
        );
    }
    let (status, jobs) = request(cluster.api(), "GET", "/v1/jobs", None).await?;
    assert_eq!(status, 200);
    assert_eq!(jobs, json!([]), "nothing was created");
    cluster.stop().await
}
