//! svcframework's REST API end to end with the process runtime (fast, no Docker): groups in
//! dependency order, partial updates, versions, the event stream, info, ping and metrics.

mod svc_support;

use std::collections::BTreeSet;
use std::time::Duration;

use agora_agent::RuntimeKind;
use agora_tests::eventually;
use futures::StreamExt;
use serde_json::Value;
use svc_support::SvcCluster;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn running_count(svc: &SvcCluster, app_id: &str) -> anyhow::Result<usize> {
    let tasks = svc.tasks(app_id).await?;
    Ok(tasks
        .iter()
        .filter(|task| task["state"] == "TASK_RUNNING")
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_updates_versions_and_events_follow_marathons_api() -> anyhow::Result<()> {
    let svc = SvcCluster::start(RuntimeKind::Process, 2, 2.0).await?;
    let http = reqwest::Client::new();

    // Subscribe to the event stream before anything happens.
    let events = http
        .get(format!("{}/v2/events", svc.url()))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    assert_eq!(events.status(), 200);
    let mut event_bytes = events.bytes_stream();

    assert_eq!(
        http.get(format!("{}/ping", svc.url()))
            .send()
            .await?
            .text()
            .await?,
        "pong"
    );

    // A group whose web app depends on its db: db runs before web is launched.
    let group = r#"{ "id": "/shop", "apps": [
        { "id": "web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "dependencies": ["/shop/db"] },
        { "id": "db", "cmd": "sleep 600", "cpus": 0.1, "mem": 16 } ] }"#;
    let (status, answer) = svc.send(reqwest::Method::POST, "/v2/groups", group).await?;
    assert_eq!(status, 201, "{answer}");
    let deployment_id = answer["deploymentId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eventually("group deployed", TIMEOUT, || async {
        let deployment = svc.get(&format!("/v2/deployments/{deployment_id}")).await?;
        Ok((deployment["state"] == "succeeded").then_some(()))
    })
    .await?;
    let db = svc.tasks("/shop/db").await?;
    let web = svc.tasks("/shop/web").await?;
    let started = |tasks: &[Value]| {
        tasks[0]["startedAt"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        started(&db) <= started(&web),
        "db started first: {db:?} {web:?}"
    );

    // A partial update only scales; it keeps the rest of the definition.
    let (status, answer) = svc
        .send(
            reqwest::Method::PUT,
            "/v2/apps/shop/web",
            r#"{ "instances": 3 }"#,
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    eventually("scaled to 3", TIMEOUT, || async {
        Ok((running_count(&svc, "/shop/web").await? == 3).then_some(()))
    })
    .await?;
    let app = svc.get("/v2/apps/shop/web").await?;
    assert_eq!(app["app"]["cmd"], "sleep 600");
    assert_eq!(app["app"]["instances"], 3);
    let versions = svc.get("/v2/apps/shop/web/versions").await?;
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(2));

    // Creating an existing app is a conflict; an unknown app is 404.
    let (status, _) = svc
        .send(
            reqwest::Method::POST,
            "/v2/apps",
            r#"{ "id": "/shop/web", "cmd": "sleep 1" }"#,
        )
        .await?;
    assert_eq!(status, 409);
    let missing = http
        .get(format!("{}/v2/apps/nope", svc.url()))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    // Info names the framework id the master gave; metrics count the instances.
    let info = svc.get("/v2/info").await?;
    assert!(
        info["frameworkId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{info}"
    );
    let metrics = http
        .get(format!("{}/metrics", svc.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("agora_svc_instances_running 4"),
        "{metrics}"
    );

    // The event stream saw the deployments succeed and tasks run.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !(seen.contains("event: deployment_success") && seen.contains("TASK_RUNNING")) {
        let chunk = tokio::time::timeout_at(deadline, event_bytes.next())
            .await
            .map_err(|_| anyhow::anyhow!("events missing; got: {seen}"))?;
        let Some(chunk) = chunk else { break };
        seen.push_str(&String::from_utf8_lossy(&chunk?));
    }
    assert!(seen.contains("event: deployment_success"), "{seen}");
    assert!(seen.contains("event: status_update_event"), "{seen}");

    // Destroying the group's apps leaves nothing.
    for app_id in ["shop/web", "shop/db"] {
        let (status, _) = svc
            .send(
                reqwest::Method::DELETE,
                &format!("/v2/apps/{app_id}?force=true"),
                "",
            )
            .await?;
        assert_eq!(status, 200);
    }
    eventually("apps gone", TIMEOUT, || async {
        let apps = svc.get("/v2/apps").await?;
        Ok(apps["apps"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(()))
    })
    .await?;
    svc.shutdown().await
}

/// Non-terminal tasks the master holds for frameworks named `svcframework`.
async fn master_live_tasks(svc: &SvcCluster) -> anyhow::Result<BTreeSet<String>> {
    let state = svc.cluster.state().await?;
    let ours: BTreeSet<&str> = state
        .frameworks
        .iter()
        .filter_map(|framework| framework.info.as_ref())
        .filter(|info| info.name == "svcframework")
        .map(|info| info.id.as_str())
        .collect();
    Ok(state
        .tasks
        .iter()
        .filter(|entry| ours.contains(entry.framework_id.as_str()))
        .filter(|entry| {
            entry
                .latest_status
                .as_ref()
                .is_none_or(|status| !agora_proto::is_terminal(status.state()))
        })
        .filter_map(|entry| entry.task.as_ref().map(|task| task.task_id.clone()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_daemon_comes_back_with_the_same_instances_and_no_duplicates()
-> anyhow::Result<()> {
    let mut svc = SvcCluster::start(RuntimeKind::Process, 2, 2.0).await?;
    svc.stop_svc().await?;
    let mut daemon = svc.spawn_binary()?;
    eventually("the daemon answers", TIMEOUT, || async {
        Ok(svc.get("/v2/info").await.ok().map(|_| ()))
    })
    .await?;
    let app = r#"{ "id": "/steady", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 4 }"#;
    let (status, answer) = svc.send(reqwest::Method::POST, "/v2/apps", app).await?;
    assert_eq!(status, 201, "{answer}");
    eventually("4 running", TIMEOUT, || async {
        Ok((running_count(&svc, "/steady").await? == 4).then_some(()))
    })
    .await?;
    let before: BTreeSet<String> = svc
        .tasks("/steady")
        .await?
        .iter()
        .filter_map(|task| task["id"].as_str().map(str::to_owned))
        .collect();

    // Scale up and kill -9 the daemon while that deployment is under way.
    let (status, answer) = svc
        .send(
            reqwest::Method::PUT,
            "/v2/apps/steady",
            r#"{ "instances": 8 }"#,
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    daemon.kill_9()?;

    let mut daemon = svc.spawn_binary()?;
    let after = eventually("8 running after the restart", TIMEOUT, || async {
        let tasks = svc.tasks("/steady").await.unwrap_or_default();
        let running: BTreeSet<String> = tasks
            .iter()
            .filter(|task| task["state"] == "TASK_RUNNING")
            .filter_map(|task| task["id"].as_str().map(str::to_owned))
            .collect();
        Ok((tasks.len() == 8 && running.len() == 8).then_some(running))
    })
    .await?;
    assert!(
        before.is_subset(&after),
        "the first 4 survived: {before:?} vs {after:?}"
    );
    // The master agrees: exactly these 8 tasks live, nothing launched twice.
    let live = eventually("the master holds exactly the 8", TIMEOUT, || async {
        let live = master_live_tasks(&svc).await?;
        Ok((live == after).then_some(live))
    })
    .await?;
    assert_eq!(live.len(), 8);
    daemon.kill_9()?;
    svc.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_app_bodies_get_415_or_422_naming_the_field_and_change_nothing() -> anyhow::Result<()> {
    let svc = SvcCluster::start(RuntimeKind::Process, 1, 1.0).await?;
    let http = reqwest::Client::new();
    let url = format!("{}/v2/apps", svc.url());
    let valid = r#"{ "id": "/strict", "cmd": "sleep 600", "cpus": 0.1, "mem": 16 }"#;
    let long_id = format!(
        r#"{{ "id": "/{}", "cmd": "sleep 600" }}"#,
        "a".repeat(70_000)
    );
    for (content_type, body, status, needle) in [
        ("text/plain", valid.to_owned(), 415, "application/json"),
        ("", valid.to_owned(), 415, "application/json"),
        ("application/json", long_id, 422, "/id"),
        (
            "application/json",
            r#"{ "id": "/strict", "cmd": "x", "cpus": 0.1, "mem": 0 }"#.to_owned(),
            422,
            "/mem",
        ),
        (
            "application/json",
            r#"{ "id": "/strict", "cmd": "x", "cpus": 0, "mem": 16 }"#.to_owned(),
            422,
            "/cpus",
        ),
        (
            "application/json",
            r#"{ "id": "/strict", "cpus": 0.1, "mem": 16, "container": { "docker": {
                 "image": "busybox", "parameters": [{"key": "cap-add", "value": "ALL"}] } } }"#
                .to_owned(),
            422,
            "/container/docker/parameters",
        ),
        (
            "application/json",
            format!("{valid} trailing"),
            422,
            "trailing",
        ),
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
    let apps = svc.get("/v2/apps").await?;
    assert_eq!(apps["apps"], serde_json::json!([]), "nothing was created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_answers_while_300_half_open_connections_are_held() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;

    let svc = SvcCluster::start(RuntimeKind::Process, 1, 1.0).await?;
    let address = svc.url().trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(300);
    for index in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        if index % 2 == 0 {
            // Half a request head; the others send nothing at all.
            stream
                .write_all(b"POST /v2/apps HTTP/1.1\r\nHost: x")
                .await?;
        }
        held.push(stream);
    }
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::Client::new()
            .get(format!("{}/health", svc.url()))
            .send(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("/health did not answer while 300 connections were held"))??;
    assert_eq!(health.status(), 200);
    drop(held);
    Ok(())
}
