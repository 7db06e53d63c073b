//! Fault suite, batch (issue 12, item 3 and "batchframework SIGKILL mid-run"): the real master,
//! three Docker agents and batchframework as processes. A run is exact when it SUCCEEDED with
//! every completion done exactly once: the succeeded attempts are exactly the containers that
//! exited 0, none still runs, the master has no live task of the run, and the containers never
//! ran more than `parallelism` at once. Skipped without Docker unless `AGORA_REQUIRE_DOCKER=1`.

use std::time::Duration;

use agora_tests::fault::{BatchExpectation, FaultCluster, FaultOptions, FaultSuite, fault_docker};
use bollard::Docker;
use serde_json::{Value, json};
use tokio::time::Instant;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

fn batch_options() -> FaultOptions {
    FaultOptions {
        svc: false,
        batch: true,
        ..FaultOptions::default()
    }
}

/// A job of `completions` containers sleeping `seconds`, `parallelism` at a time.
fn job(
    image: &str,
    id: &str,
    seconds: u32,
    completions: u32,
    parallelism: u32,
    retries: u32,
) -> Value {
    json!({
        "id": id,
        "run": { "cmd": format!("sleep {seconds}"), "image": image, "cpus": 0.1, "mem": 16 },
        "completions": completions,
        "parallelism": parallelism,
        "retries": retries
    })
}

/// A job id no other run uses: batch task ids (and so container names) derive from it, and
/// another test run may share the Docker Engine.
fn unique_job_id(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Waits until `check` accepts the run's JSON; returns it.
async fn wait_run(
    cluster: &FaultCluster,
    job_id: &str,
    run: u64,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = cluster.batch_run(job_id, run).await?;
        if check(&body) {
            return Ok(body);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "job {job_id} run {run}: {what} not within 60 s: {body}\n{}",
            cluster.log_tails(25)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attempts_in(run: &Value, state: &str) -> usize {
    run["attempts"].as_array().map_or(0, |attempts| {
        attempts.iter().filter(|a| a["state"] == state).count()
    })
}

/// Item 3: "an agent down longer than the timeout whose containers finish meanwhile reports
/// TASK_FINISHED on its return; batch ignores it: work runs twice, parallelism exceeded, and
/// with retries 0 a run FAILED although every container exited 0." The agent of the first
/// attempt is frozen `delay` after all attempts run, for `stop_for` (longer than the heartbeat
/// timeout and than the containers' 4 s), then continued. With `retries` > 0 the attempts
/// lost with the agent may be retried, but the work must still be done (and counted) once
/// per completion, within `parallelism`.
async fn attempts_finishing_during_a_partition(
    docker: &Docker,
    image: &str,
    delay: Duration,
    stop_for: Duration,
    retries: u32,
) -> anyhow::Result<Duration> {
    let mut cluster = FaultCluster::start(docker.clone(), image, batch_options()).await?;
    let job_id = unique_job_id("item3");
    let run = cluster
        .batch_submit(&job(image, &job_id, 4, 3, 3, retries))
        .await?;
    let body = wait_run(&cluster, &job_id, run, "3 attempts RUNNING", |body| {
        attempts_in(body, "RUNNING") == 3
    })
    .await?;
    tokio::time::sleep(delay).await;
    let host = body["attempts"][0]["hostname"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let number: usize = host
        .strip_prefix("node-")
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("attempt on an unknown host {host:?}: {body}"))?;
    cluster.agent(number)?.sigstop()?;
    cluster.mark_fault();
    tokio::time::sleep(stop_for).await;
    cluster.agent(number)?.sigcont()?;
    cluster
        .assert_exact_batch(
            &job_id,
            run,
            BatchExpectation {
                completions: 3,
                parallelism: 3,
                failures: 0,
            },
            CONVERGE_TIMEOUT,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item3_attempts_that_finish_during_a_partition_count_once() -> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker("fault item 3").await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    for (run, (moment, delay, stop_for, retries)) in [
        (
            "retries 0, agent frozen as soon as all attempts run, for 7 s",
            Duration::ZERO,
            Duration::from_secs(7),
            0,
        ),
        (
            "retries 0, agent frozen 2 s after all attempts run, for 5 s",
            Duration::from_secs(2),
            Duration::from_secs(5),
            0,
        ),
        (
            "retries 2, agent frozen as soon as all attempts run, for 7 s",
            Duration::ZERO,
            Duration::from_secs(7),
            2,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        suite
            .run(
                "item3-batch-finished-after-lost",
                run + 1,
                moment,
                attempts_finishing_during_a_partition(&docker, &image, delay, stop_for, retries),
            )
            .await;
    }
    suite.finish()
}

/// batchframework SIGKILL mid-run: 6 completions, 3 at a time, 2 s each; the daemon is
/// SIGKILLed once `finished_before` attempts succeeded (0: as soon as one runs) and started
/// again 1 s later on the same store. Nothing may run twice or be lost.
async fn batch_sigkill_mid_run(
    docker: &Docker,
    image: &str,
    finished_before: usize,
) -> anyhow::Result<Duration> {
    let mut cluster = FaultCluster::start(docker.clone(), image, batch_options()).await?;
    let job_id = unique_job_id("midrun");
    let run = cluster
        .batch_submit(&job(image, &job_id, 2, 6, 3, 0))
        .await?;
    wait_run(&cluster, &job_id, run, "the chosen moment", |body| {
        if finished_before == 0 {
            attempts_in(body, "RUNNING") >= 1
        } else {
            attempts_in(body, "SUCCEEDED") >= finished_before
        }
    })
    .await?;
    let batch = cluster
        .batch
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("no batchframework"))?;
    batch.sigkill()?;
    cluster.mark_fault();
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(batch) = cluster.batch.as_mut() {
        batch.start()?;
    }
    cluster
        .assert_exact_batch(
            &job_id,
            run,
            BatchExpectation {
                completions: 6,
                parallelism: 3,
                failures: 0,
            },
            CONVERGE_TIMEOUT,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batchframework_sigkill_mid_run_neither_loses_nor_repeats_work() -> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker("fault batch sigkill").await? else {
        return Ok(());
    };
    let mut suite = FaultSuite::new();
    for (run, (moment, finished_before)) in [
        ("SIGKILL as soon as an attempt runs", 0),
        ("SIGKILL once 3 attempts succeeded", 3),
    ]
    .into_iter()
    .enumerate()
    {
        suite
            .run(
                "batch-sigkill-mid-run",
                run + 1,
                moment,
                batch_sigkill_mid_run(&docker, &image, finished_before),
            )
            .await;
    }
    suite.finish()
}
