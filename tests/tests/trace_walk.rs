//! One task's walk through the daemons' logs. The real `master`, one `agent` with the Docker
//! runtime and `svcframework serve` run as child processes logging at INFO to files; one app
//! of one instance is deployed with the `svcframework deploy` CLI. Once the instance runs,
//! `grep <task-id>` of each log must show every hop, in order: svcframework placed it and sent
//! the launch, the master sent it to the agent, the agent created the Docker container and
//! reported TASK_RUNNING, the master relayed it and svcframework received it; and after the
//! app is destroyed, TASK_KILLED in all three logs. No line carries the task's environment.
//! Skipped without Docker unless `AGORA_REQUIRE_DOCKER=1`.

use std::path::Path;
use std::time::Duration;

use agora_tests::eventually;
use agora_tests::fault::{FaultCluster, FaultOptions, daemon_binaries, fault_docker};
use anyhow::Context;
use serde_json::json;

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(90);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// A line is written before the message it describes is sent, so once the API shows a state
/// the lines are there; the margin only covers a daemon's write reaching the file.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The lines of `log` that mention `text` (what `grep <text>` prints).
fn lines_about(log: &Path, text: &str) -> anyhow::Result<Vec<String>> {
    let content =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(content
        .lines()
        .filter(|line| line.contains(text))
        .map(str::to_owned)
        .collect())
}

/// True when `lines` hold one line per step, in the steps' order, each line holding every
/// text of its step.
fn walk_in_order(lines: &[String], steps: &[&[&str]]) -> bool {
    let mut from = 0;
    for step in steps {
        let found = lines[from..]
            .iter()
            .position(|line| step.iter().all(|text| line.contains(text)));
        match found {
            Some(offset) => from += offset + 1,
            None => return false,
        }
    }
    true
}

/// Waits until `daemon`'s log shows `steps` in order on lines naming `grep` (a task id).
async fn expect_walk(
    daemon: &str,
    log: &Path,
    grep: &str,
    steps: &[&[&str]],
) -> anyhow::Result<()> {
    let shown = eventually(
        &format!("{daemon}'s log shows {steps:?} for {grep}"),
        LOG_TIMEOUT,
        || async { Ok(walk_in_order(&lines_about(log, grep)?, steps).then_some(())) },
    )
    .await;
    shown.with_context(|| {
        let lines = lines_about(log, grep).unwrap_or_default();
        format!("{daemon}'s lines about {grep}:\n{}", lines.join("\n"))
    })
}

/// Runs the `svcframework` CLI against the cluster's daemon; fails unless it exits 0.
async fn svc_cli(cluster: &FaultCluster, args: &[&str]) -> anyhow::Result<()> {
    let binary = daemon_binaries()?.join("svcframework");
    let run = tokio::process::Command::new(binary)
        .args(args)
        .env("AGORA_SVC_URL", cluster.svc_url())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CLI_TIMEOUT, run)
        .await
        .with_context(|| format!("svcframework {args:?} did not end within {CLI_TIMEOUT:?}"))??;
    anyhow::ensure!(
        output.status.success(),
        "svcframework {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The latest state the master knows for `task_id`, as its name.
async fn master_task_state(cluster: &FaultCluster, task_id: &str) -> anyhow::Result<String> {
    let state = cluster.state().await?;
    Ok(state
        .tasks
        .iter()
        .rev()
        .find(|entry| {
            entry
                .task
                .as_ref()
                .is_some_and(|task| task.task_id == task_id)
        })
        .and_then(|entry| entry.latest_status.as_ref())
        .map(|status| status.state().as_str_name().to_owned())
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grep_of_a_task_id_follows_it_from_deploy_to_docker_create_and_back()
-> anyhow::Result<()> {
    let Some((docker, image)) = fault_docker("trace_walk").await? else {
        return Ok(());
    };
    let options = FaultOptions {
        agents: 1,
        ..FaultOptions::default()
    };
    let cluster = FaultCluster::start(docker, &image, options).await?;
    let agent_id = cluster
        .agent_id(1)
        .context("node-1 has no agent id")?
        .to_owned();
    let secret = format!("trace-secret-{}", uuid::Uuid::new_v4().simple());
    let app_id = "/trace-walk";
    let app = json!({
        "id": app_id,
        "cmd": "exec sleep 3600",
        "cpus": 0.1,
        "mem": 16,
        "instances": 1,
        "container": { "type": "DOCKER", "docker": { "image": image } },
        "env": { "TRACE_SECRET": secret },
        "taskKillGracePeriodSeconds": 1
    });
    let app_file = cluster.dir().join("trace-walk.json");
    std::fs::write(&app_file, serde_json::to_vec_pretty(&app)?)?;
    let app_path = app_file.display().to_string();

    svc_cli(&cluster, &["deploy", &app_path]).await?;
    let tasks = cluster.svc_wait_running(app_id, 1, DEPLOY_TIMEOUT).await?;
    let task_id = tasks
        .iter()
        .find(|task| task["state"] == "TASK_RUNNING")
        .and_then(|task| task["id"].as_str())
        .with_context(|| format!("no running task id in {tasks:?}"))?
        .to_owned();

    let svc_log = cluster
        .svc
        .as_ref()
        .context("the cluster runs svcframework")?
        .log_path()
        .to_path_buf();
    let master_log = cluster.master.log_path().to_path_buf();
    let agent_log = cluster.agents[0].log_path().to_path_buf();
    let agent_field = format!("agent_id={agent_id}");

    // The API call that asked for it names the app and its deployment.
    expect_walk(
        "svcframework",
        &svc_log,
        "app_id=/trace-walk",
        &[&["app created or updated", "deployment_id="]],
    )
    .await?;
    // Out: placed and launched by svcframework, sent on by the master, created in Docker.
    // Back: TASK_RUNNING from the agent, relayed by the master, received by svcframework.
    expect_walk(
        "svcframework",
        &svc_log,
        &task_id,
        &[
            &["instance placed", "app_id=/trace-walk", &agent_field],
            &["launch sent", &agent_field, "offer_id="],
            &["status update received", "TASK_RUNNING"],
        ],
    )
    .await?;
    expect_walk(
        "master",
        &master_log,
        &task_id,
        &[
            &["launch sent to agent", &agent_field],
            &["status update relayed", "TASK_RUNNING"],
        ],
    )
    .await?;
    expect_walk(
        "agent",
        &agent_log,
        &task_id,
        &[
            &["launching task"],
            &["docker container created", "container_id="],
            &["task status", "TASK_RUNNING"],
        ],
    )
    .await?;

    svc_cli(&cluster, &["destroy", app_id]).await?;
    eventually(
        "the master knows the task killed",
        DEPLOY_TIMEOUT,
        || async {
            Ok((master_task_state(&cluster, &task_id).await? == "TASK_KILLED").then_some(()))
        },
    )
    .await
    .with_context(|| cluster.log_tails(40))?;
    expect_walk(
        "svcframework",
        &svc_log,
        &task_id,
        &[
            &["kill sent", &agent_field],
            &["status update received", "TASK_KILLED"],
        ],
    )
    .await?;
    expect_walk(
        "master",
        &master_log,
        &task_id,
        &[
            &["kill asked"],
            &["kill sent to agent", &agent_field],
            &["status update relayed", "TASK_KILLED"],
        ],
    )
    .await?;
    expect_walk(
        "agent",
        &agent_log,
        &task_id,
        &[&["task status", "TASK_KILLED"]],
    )
    .await?;

    // The task's environment (where secrets go) is in no log.
    for (daemon, log) in [
        ("svcframework", &svc_log),
        ("master", &master_log),
        ("agent", &agent_log),
    ] {
        let text = std::fs::read_to_string(log)?;
        if let Some(line) = text.lines().find(|line| line.contains(&secret)) {
            anyhow::bail!("{daemon}'s log shows the task's environment: {line}");
        }
    }
    Ok(())
}
