//! The agent in-process with the process runtime against the real master (no Docker needed):
//! registration, launch, exit codes, kill with grace, and recovery from the checkpoint.

mod agent_support;

use std::time::Duration;

use agent_support::{agent_config, launch, patient_cluster, resources_with_ports, start_agent};
use agora_agent::RuntimeKind;
use agora_proto::v1::TaskState;
use agora_proto::{AgentId, TaskId};
use agora_sdk::TaskBuilder;
use agora_tests::{DEFAULT_TIMEOUT, eventually};

#[tokio::test]
async fn process_tasks_report_exit_codes_and_are_killed_with_grace() -> anyhow::Result<()> {
    let cluster = patient_cluster().await?;
    let work_dir = tempfile::tempdir()?;
    let mut config = agent_config(
        &cluster.master_url(),
        RuntimeKind::Process,
        &resources_with_ports(4),
        work_dir.path(),
    );
    config.kill_tasks_on_shutdown = true;
    let agent = start_agent(config).await?;
    let mut framework = cluster.start_framework("process-e2e", &[]).await?;

    let failing = launch(
        &mut framework,
        TaskBuilder::new("fail").cpus(0.1).mem(16.0).shell("exit 3"),
    )
    .await?;
    let failing_id = TaskId::new(failing.task_id.clone());
    framework
        .expect_update(&failing_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    let failed = framework
        .expect_update(&failing_id, TaskState::TaskFailed, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(failed.exit_code, Some(3), "{failed:?}");

    let sleeper = launch(
        &mut framework,
        TaskBuilder::new("sleeper")
            .cpus(0.1)
            .mem(16.0)
            .ports(1)
            .kill_grace(Duration::from_secs(5))
            .shell("trap 'sleep 1; exit 0' TERM; while true; do sleep 0.1; done"),
    )
    .await?;
    let sleeper_id = TaskId::new(sleeper.task_id.clone());
    let running = framework
        .expect_update(&sleeper_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    assert!(running.container_id.starts_with("pid-"), "{running:?}");
    let snapshot = agent.snapshot().await.expect("agent runs");
    assert!(snapshot.connected);
    assert!(
        snapshot
            .tasks
            .iter()
            .any(|t| t.task_id == sleeper_id.as_str() && t.state == "TASK_RUNNING")
    );

    framework
        .driver
        .kill(&sleeper_id, &AgentId::new(running.agent_id.clone()))
        .await?;
    let killed = framework
        .expect_update(&sleeper_id, TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(
        killed.exit_code,
        Some(0),
        "the TERM trap ran to its end: {killed:?}"
    );

    // Acknowledged terminal updates make the agent forget the tasks.
    eventually(
        "tasks forgotten after acknowledgement",
        DEFAULT_TIMEOUT,
        || async {
            let snapshot = agent.snapshot().await.expect("agent runs");
            Ok(snapshot.tasks.is_empty().then_some(()))
        },
    )
    .await?;
    agent.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_restarted_agent_reattaches_to_its_process_and_reports_ones_that_died()
-> anyhow::Result<()> {
    let mut cluster = patient_cluster().await?;
    let work_dir = tempfile::tempdir()?;
    let resources = resources_with_ports(2);
    let agent = start_agent(agent_config(
        &cluster.master_url(),
        RuntimeKind::Process,
        &resources,
        work_dir.path(),
    ))
    .await?;
    let mut framework = cluster.start_framework("process-recovery", &[]).await?;
    let long = launch(
        &mut framework,
        TaskBuilder::new("long")
            .cpus(0.1)
            .mem(16.0)
            .shell("sleep 30"),
    )
    .await?;
    let long_id = TaskId::new(long.task_id.clone());
    let running = framework
        .expect_update(&long_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    let agent_id = AgentId::new(running.agent_id.clone());
    // Let the acknowledgement reach the agent before it stops.
    eventually("RUNNING acknowledged", DEFAULT_TIMEOUT, || async {
        let snapshot = agent.snapshot().await.expect("agent runs");
        Ok(snapshot
            .tasks
            .iter()
            .all(|t| t.pending_updates == 0)
            .then_some(()))
    })
    .await?;
    agent.shutdown().await?;

    // The master restarts too while the agent is away: both come back.
    cluster.restart_master().await?;
    let agent = start_agent(agent_config(
        &cluster.master_url(),
        RuntimeKind::Process,
        &resources,
        work_dir.path(),
    ))
    .await?;
    let snapshot = eventually("agent re-registered", DEFAULT_TIMEOUT, || async {
        let snapshot = agent.snapshot().await.expect("agent runs");
        Ok(snapshot.connected.then_some(snapshot))
    })
    .await?;
    assert_eq!(
        snapshot.agent_id.as_deref(),
        Some(agent_id.as_str()),
        "same agent id after restart"
    );
    let task = snapshot
        .tasks
        .iter()
        .find(|t| t.task_id == long_id.as_str())
        .expect("task recovered");
    assert_eq!(task.state, "TASK_RUNNING");
    assert_eq!(
        task.container_id.as_deref(),
        Some(running.container_id.as_str()),
        "same process"
    );
    framework
        .expect_no_event(
            "a second RUNNING from the agent",
            |event| matches!(event, agora_sdk::DriverEvent::Update(status) if status.task_id == long_id.as_str() && status.state() == TaskState::TaskRunning && status.source() == agora_proto::v1::StatusSource::SourceAgent),
            Duration::from_secs(2),
        )
        .await?;

    // Kill the process behind the agent's back while it is down: reported as failed on restart.
    agent.shutdown().await?;
    let pid: i32 = running.container_id.trim_start_matches("pid-").parse()?;
    nix_kill(pid);
    let agent = start_agent(agent_config(
        &cluster.master_url(),
        RuntimeKind::Process,
        &resources,
        work_dir.path(),
    ))
    .await?;
    let failed = framework
        .expect_update(&long_id, TaskState::TaskFailed, Duration::from_secs(20))
        .await?;
    assert!(
        failed.message.contains("agent was down") || failed.message.contains("adopted"),
        "{failed:?}"
    );
    agent.shutdown().await?;
    Ok(())
}

/// SIGKILLs the task's process group, but only a real, separate group: a pid above 1 that leads
/// its own process group (the process runtime starts every task that way). Anything else is left
/// alone, so a wrong pid can never take down the test runner or the machine.
fn nix_kill(pid: i32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::{Pid, getpgid};
    if pid <= 1 {
        return;
    }
    let task = Pid::from_raw(pid);
    if getpgid(Some(task)).ok() == Some(task) && getpgid(None).ok() != Some(task) {
        let _ = killpg(task, Signal::SIGKILL);
    }
}
