//! svcframework end to end against a real master, three agents with the Docker runtime and
//! the real Docker Engine, driven through the `svcframework` CLI and REST API.
//! Skipped (with a printed line) without Docker, unless `AGORA_REQUIRE_DOCKER=1`.

mod svc_support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use agora_agent::RuntimeKind;
use agora_tests::docker_image::{docker_or_skip, ensure_test_image};
use agora_tests::eventually;
use bollard::query_parameters::{KillContainerOptions, ListContainersOptions};
use serde_json::Value;
use svc_support::{SvcCluster, answers_http, describe, write_file};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

fn web_app(id: &str, image: &str, instances: u32, greeting: &str, constraints: &str) -> String {
    format!(
        r#"{{
  "id": "{id}",
  "cmd": "exec httpd -f -p $PORT0 -h /www",
  "cpus": 0.1, "mem": 32, "instances": {instances},
  "container": {{ "type": "DOCKER", "docker": {{ "image": "{image}" }} }},
  "portDefinitions": [{{ "port": 0, "name": "http" }}],
  "env": {{ "GREETING": "{greeting}" }},
  "constraints": {constraints},
  "healthChecks": [{{ "protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 10,
                     "intervalSeconds": 2, "timeoutSeconds": 1, "maxConsecutiveFailures": 3 }}],
  "upgradeStrategy": {{ "minimumHealthCapacity": 1, "maximumOverCapacity": 1 }},
  "taskKillGracePeriodSeconds": 1
}}"#
    )
}

/// An app id no other test run uses, so container counts only see this test's containers.
fn unique_app_id(name: &str) -> String {
    format!(
        "/{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Containers the agents created for app `app_id` (any state).
async fn app_containers(docker: &bollard::Docker, app_id: &str) -> anyhow::Result<Vec<String>> {
    let filters: HashMap<String, Vec<String>> = [(
        "label".to_owned(),
        vec![format!("svcframework.app-id={app_id}")],
    )]
    .into_iter()
    .collect();
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    Ok(containers
        .into_iter()
        .filter_map(|container| container.id)
        .collect())
}

fn count(tasks: &[Value], predicate: impl Fn(&Value) -> bool) -> usize {
    tasks.iter().filter(|task| predicate(task)).count()
}

fn is_healthy(task: &Value) -> bool {
    task["state"] == "TASK_RUNNING" && task["healthy"] == Value::Bool(true)
}

async fn wait_for_healthy(
    svc: &SvcCluster,
    app_id: &str,
    wanted: usize,
) -> anyhow::Result<Vec<Value>> {
    eventually("instances healthy", DEPLOY_TIMEOUT, || async {
        let tasks = svc.tasks(app_id).await?;
        Ok((tasks.len() == wanted && count(&tasks, is_healthy) == wanted).then_some(tasks))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unique_app_scales_heals_upgrades_rolls_back_and_is_destroyed() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("svc_docker lifecycle").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let svc = SvcCluster::start(RuntimeKind::Docker, 3, 2.0).await?;
    let web = unique_app_id("web");
    let app_path = format!("/v2/apps{web}");
    let files = tempfile::tempdir()?;
    let unique = r#"[["hostname", "UNIQUE"]]"#;

    // Deploy 3 instances with hostname:UNIQUE: one per agent, each answering on its port.
    let v1 = write_file(
        files.path(),
        "v1.json",
        &web_app(&web, &image, 3, "one", unique),
    )?;
    svc.cli_ok(&["deploy", &v1, "--wait", "--timeout", "60"])
        .await?;
    let tasks = wait_for_healthy(&svc, &web, 3).await?;
    let hosts: BTreeSet<&str> = tasks
        .iter()
        .filter_map(|task| task["host"].as_str())
        .collect();
    assert_eq!(hosts.len(), 3, "one instance per agent: {tasks:?}");
    for task in &tasks {
        let port = task["ports"][0].as_u64().unwrap_or(0);
        assert!(answers_http(port).await, "instance on port {port} answers");
    }
    let v1_version = svc.get(&app_path).await?["app"]["version"].clone();

    // Scale to 5: UNIQUE leaves 2 waiting, and the queue and status say why.
    svc.cli_ok(&["scale", &web, "5"]).await?;
    let reason = eventually("queue explains the wait", DEPLOY_TIMEOUT, || async {
        let queue = svc.get("/v2/queue").await?;
        Ok(queue["queue"][0]["reason"].as_str().map(str::to_owned))
    })
    .await?;
    assert_eq!(reason, "constraint hostname:UNIQUE excludes all 3 agents");
    let status = svc.cli(&["status", &web]).await?;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("hostname:UNIQUE excludes all 3 agents"),
        "status shows the reason: {}",
        describe(&status)
    );
    assert_eq!(svc.tasks(&web).await?.len(), 3, "never two on one agent");

    // Scale down to 1 (overriding the waiting scale-up).
    svc.cli_ok(&["scale", &web, "1", "--force", "--wait"])
        .await?;
    wait_for_healthy(&svc, &web, 1).await?;
    eventually("surplus containers removed", DEPLOY_TIMEOUT, || async {
        Ok((app_containers(&docker, &web).await?.len() == 1).then_some(()))
    })
    .await?;

    // Without the constraint, 5 fit: a config change rolls out 5 new instances.
    let v2 = write_file(
        files.path(),
        "v2.json",
        &web_app(&web, &image, 5, "one", "[]"),
    )?;
    svc.cli_ok(&["deploy", &v2, "--wait", "--timeout", "60"])
        .await?;
    let tasks = wait_for_healthy(&svc, &web, 5).await?;

    // `docker kill` behind the framework's back: a replacement appears.
    let victim = tasks[0]["id"].as_str().unwrap_or_default().to_owned();
    // Found by its task label: the container name also carries the framework id.
    let victim_filters: HashMap<String, Vec<String>> =
        [("label".to_owned(), vec![format!("agora.task_id={victim}")])]
            .into_iter()
            .collect();
    let victim_containers = docker
        .list_containers(Some(ListContainersOptions {
            filters: Some(victim_filters),
            ..Default::default()
        }))
        .await?;
    assert_eq!(
        victim_containers.len(),
        1,
        "one running container for {victim}"
    );
    for container in victim_containers.into_iter().filter_map(|c| c.id) {
        docker
            .kill_container(&container, None::<KillContainerOptions>)
            .await?;
    }
    let healed = eventually("killed instance replaced", DEPLOY_TIMEOUT, || async {
        let tasks = svc.tasks(&web).await?;
        let replaced = tasks.iter().all(|task| task["id"] != victim.as_str());
        Ok((replaced && tasks.len() == 5 && count(&tasks, is_healthy) == 5).then_some(tasks))
    })
    .await?;
    assert_eq!(healed.len(), 5);

    // Upgrade with minimumHealthCapacity 1: never fewer than 5 healthy while it runs.
    let v3 = write_file(
        files.path(),
        "v3.json",
        &web_app(&web, &image, 5, "two", "[]"),
    )?;
    svc.cli_ok(&["deploy", &v3]).await?;
    let mut lowest_healthy = usize::MAX;
    let mut polls = 0;
    loop {
        let app = svc.get(&app_path).await?;
        let healthy = app["app"]["tasksHealthy"].as_u64().unwrap_or(0) as usize;
        lowest_healthy = lowest_healthy.min(healthy);
        polls += 1;
        if app["app"]["deployments"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            break;
        }
        anyhow::ensure!(polls < 600, "upgrade did not finish: {app}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lowest_healthy >= 5,
        "healthy dipped to {lowest_healthy} during the upgrade"
    );
    let upgraded = wait_for_healthy(&svc, &web, 5).await?;
    let upgraded_version = upgraded[0]["version"].clone();
    assert!(
        upgraded
            .iter()
            .all(|task| task["version"] == upgraded_version)
    );
    let app = svc.get(&app_path).await?;
    assert_eq!(app["app"]["env"]["GREETING"], "two");

    // Roll back to the previous version: the old definition returns.
    svc.cli_ok(&["rollback", &web, "--wait"]).await?;
    let app = svc.get(&app_path).await?;
    assert_eq!(app["app"]["env"]["GREETING"], "one", "rolled back: {app}");
    let rolled = wait_for_healthy(&svc, &web, 5).await?;
    assert!(
        rolled
            .iter()
            .all(|task| task["version"] != upgraded_version)
    );
    assert_ne!(
        app["app"]["version"], v1_version,
        "a rollback is a new version"
    );

    // Destroy: every container goes.
    svc.cli_ok(&["destroy", &web, "--wait"]).await?;
    eventually("containers removed", DEPLOY_TIMEOUT, || async {
        Ok(app_containers(&docker, &web)
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    let apps = svc.get("/v2/apps").await?;
    assert_eq!(
        apps["apps"],
        Value::Array(Vec::new()),
        "app forgotten after destroy"
    );
    svc.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_instances_and_impossible_apps_say_why() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("svc_docker restart").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let mut svc = SvcCluster::start(RuntimeKind::Docker, 2, 2.0).await?;
    let web = unique_app_id("kept");
    let files = tempfile::tempdir()?;

    let app = write_file(
        files.path(),
        "web.json",
        &web_app(&web, &image, 2, "one", "[]"),
    )?;
    svc.cli_ok(&["deploy", &app, "--wait", "--timeout", "60"])
        .await?;
    let before = wait_for_healthy(&svc, &web, 2).await?;
    let ids_before: BTreeSet<String> = before
        .iter()
        .filter_map(|task| task["id"].as_str().map(str::to_owned))
        .collect();

    // An app no agent can hold: the deployment says why and does not succeed.
    let big = r#"{ "id": "/big", "cmd": "sleep 600", "cpus": 64, "mem": 16 }"#;
    let big_file = write_file(files.path(), "big.json", big)?;
    let output = svc
        .cli(&["deploy", &big_file, "--wait", "--timeout", "3"])
        .await?;
    assert!(
        !output.status.success(),
        "an impossible deployment must not succeed"
    );
    let queue = svc.get("/v2/queue").await?;
    let entry = queue["queue"]
        .as_array()
        .and_then(|entries| entries.iter().find(|entry| entry["app"]["id"] == "/big"))
        .cloned()
        .unwrap_or(Value::Null);
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("no agent has 64 cpus; largest free is "),
        "{queue}"
    );
    let status = svc.cli(&["status", "/big"]).await?;
    let status_text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status_text.contains("no agent has 64 cpus"),
        "{status_text}"
    );
    assert!(
        status_text.contains("running"),
        "deployment still running: {status_text}"
    );

    // Kill the daemon mid-life and start it again: same instances, none added, none lost.
    svc.stop_svc().await?;
    let containers_before = app_containers(&docker, &web).await?.len();
    svc.start_svc().await?;
    // Subscribed again: from then on an instance shows RUNNING only once the master confirmed it.
    eventually("svcframework subscribed again", DEPLOY_TIMEOUT, || async {
        let info = svc.get("/v2/info").await?;
        Ok((info["subscribed"] == Value::Bool(true)).then_some(()))
    })
    .await?;
    let after = wait_for_healthy(&svc, &web, 2).await?;
    let ids_after: BTreeSet<String> = after
        .iter()
        .filter_map(|task| task["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids_before, ids_after, "the same instances after a restart");
    assert_eq!(
        app_containers(&docker, &web).await?.len(),
        containers_before
    );
    assert_eq!(containers_before, 2);

    // Bad input gets 422 naming the field, and changes nothing.
    let apps_before = svc.get("/v2/apps").await?;
    let malformed = write_file(
        files.path(),
        "malformed.json",
        r#"{ "id": "/bad", "cmd": "sleep 1", "cpus": "lots" }"#,
    )?;
    let output = svc.cli(&["deploy", &malformed]).await?;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/cpus"),
        "{}",
        describe(&output)
    );
    let (status, body) = svc
        .send(
            reqwest::Method::POST,
            "/v2/apps",
            r#"{ "id": "/bad", "cmd": "sleep 1", "constraints": [["hostname", "NEAR"]] }"#,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "/constraints/0", "{body}");
    let (status, body) = svc
        .send(
            reqwest::Method::POST,
            "/v2/apps",
            r#"{ "id": "/bad", "cmd": "sleep 1", "constraints": ["disk==/[unclosed/"] }"#,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"][0]["path"], "/constraints/0", "{body}");
    assert_eq!(svc.get("/v2/apps").await?["apps"], apps_before["apps"]);

    svc.cli_ok(&["destroy", &web, "--wait"]).await?;
    svc.cli(&["destroy", "/big"]).await?;
    eventually("containers removed", DEPLOY_TIMEOUT, || async {
        Ok(app_containers(&docker, &web)
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    svc.shutdown().await
}
