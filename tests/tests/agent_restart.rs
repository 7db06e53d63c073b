//! The `agent` binary killed with SIGKILL and restarted: containers keep running with the same
//! ids, tasks are re-registered, RUNNING is reported once, and a container that exited while
//! the agent was down is reported with its exit code. Real Docker Engine and real master.

mod agent_support;

use std::net::SocketAddr;
use std::time::Duration;

use agent_support::{
    AgentProcess, free_port, launch, patient_cluster, remove_agent_containers, resources_with_ports,
};
use agora_proto::v1::{StatusSource, TaskState};
use agora_proto::{AgentId, TaskId};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::docker_image::{docker_or_skip, ensure_test_image};
use agora_tests::{DEFAULT_TIMEOUT, eventually, http_get};

const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_sigkilled_agent_recovers_its_containers_and_reports_what_exited_meanwhile()
-> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("agent_restart_sigkill").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let cluster = patient_cluster().await?;
    let work_dir = tempfile::tempdir()?;
    let state_port = free_port();
    let args: Vec<String> = [
        "--master",
        &cluster.master_url(),
        "--listen",
        &format!("127.0.0.1:{state_port}"),
        "--work-dir",
        &work_dir.path().join("agent").display().to_string(),
        "--runtime",
        "docker",
        "--resources",
        &resources_with_ports(2),
        "--hostname",
        "127.0.0.1",
        "--label",
        "suite=restart",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = work_dir.path().join("agent.log");
    let mut agent = AgentProcess::start(&args, log.clone())?;
    let mut framework = cluster.start_framework("restart", &[]).await?;

    let steady = launch(
        &mut framework,
        TaskBuilder::new("steady")
            .cpus(0.1)
            .mem(32.0)
            .image(image.clone())
            .shell("sleep 600"),
    )
    .await?;
    let steady_id = TaskId::new(steady.task_id.clone());
    let steady_running = framework
        .expect_update(&steady_id, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    let short = launch(
        &mut framework,
        TaskBuilder::new("short")
            .cpus(0.1)
            .mem(32.0)
            .image(image.clone())
            .shell("sleep 3; exit 7"),
    )
    .await?;
    let short_id = TaskId::new(short.task_id.clone());
    let short_running = framework
        .expect_update(&short_id, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    let agent_id = steady_running.agent_id.clone();
    // The acknowledgements of RUNNING reached the agent's checkpoint: nothing is pending.
    let state_address = SocketAddr::from(([127, 0, 0, 1], state_port));
    eventually(
        "the agent holds no unacknowledged update",
        DEFAULT_TIMEOUT,
        || async {
            let state = http_get(state_address, "/state").await?.json()?;
            let tasks = state["tasks"].as_array().cloned().unwrap_or_default();
            let settled = tasks.len() == 2 && tasks.iter().all(|task| task["pending_updates"] == 0);
            Ok(settled.then_some(()))
        },
    )
    .await?;

    agent.kill_9()?;
    // The short task exits (code 7) while the agent is down.
    eventually(
        "short container exits while the agent is down",
        Duration::from_secs(15),
        || async {
            let inspect = docker
                .inspect_container(&short_running.container_id, None)
                .await?;
            Ok((inspect.state.and_then(|s| s.running) == Some(false)).then_some(()))
        },
    )
    .await?;
    let inspect = docker
        .inspect_container(&steady_running.container_id, None)
        .await?;
    assert_eq!(
        inspect.state.and_then(|s| s.running),
        Some(true),
        "containers survive the agent"
    );

    let agent_restarted = AgentProcess::start(&args, log)?;
    let failed = framework
        .expect_update(&short_id, TaskState::TaskFailed, LAUNCH_TIMEOUT)
        .await
        .map_err(|error| error.context(agent_restarted.log_text()))?;
    assert_eq!(failed.exit_code, Some(7), "{failed:?}");
    assert_eq!(failed.container_id, short_running.container_id);

    let state = eventually(
        "steady task re-registered as RUNNING",
        Duration::from_secs(20),
        || async {
            let state = cluster.state().await?;
            let ok = state.tasks.iter().any(|entry| {
                entry
                    .task
                    .as_ref()
                    .is_some_and(|t| t.task_id == steady_id.as_str())
                    && entry
                        .latest_status
                        .as_ref()
                        .is_some_and(|s| s.state() == TaskState::TaskRunning)
            });
            Ok(ok.then_some(state))
        },
    )
    .await?;
    assert!(
        state
            .agents
            .iter()
            .any(|a| a.info.as_ref().is_some_and(|i| i.id == agent_id)),
        "same agent id"
    );
    let inspect = docker
        .inspect_container(&steady_running.container_id, None)
        .await?;
    assert_eq!(
        inspect.state.and_then(|s| s.running),
        Some(true),
        "same container still running"
    );

    // RUNNING was reported once by the agent: no new RUNNING update after the restart.
    let wanted = steady_id.to_string();
    framework
        .expect_no_event(
            "a second agent RUNNING update for the steady task",
            |event| matches!(event, DriverEvent::Update(status) if status.task_id == wanted && status.state() == TaskState::TaskRunning && status.source() == StatusSource::SourceAgent),
            Duration::from_secs(2),
        )
        .await?;

    framework
        .driver
        .kill(&steady_id, &AgentId::new(agent_id.clone()))
        .await?;
    let killed = framework
        .expect_update(&steady_id, TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(
        killed.container_id, steady_running.container_id,
        "the same container was killed"
    );

    drop(agent_restarted);
    drop(agent);
    remove_agent_containers(&docker, &agent_id).await;
    Ok(())
}
