//! The real agent (process runtime) driven by a scripted master that sends what a real master
//! would refuse: durations no `Duration` can hold, tasks without limits, volumes, duplicate
//! launches, and the same task id from two frameworks. The agent must refuse with a clear
//! TASK_ERROR, keep every task of one framework apart from the other's, and keep serving.

mod agent_support;

use std::time::Duration;

use agent_support::fake_master::{FAKE_AGENT_ID, FakeMaster};
use agent_support::{agent_config, resources_with_ports, start_agent};
use agora_agent::{AgentHandle, AgentSnapshot, RuntimeKind, TaskSnapshot};
use agora_proto::Resources;
use agora_proto::v1::{
    self, CommandInfo, ContainerInfo, HealthCheck, HealthCheckProtocol, TaskReason, TaskState,
    agent_message, master_message,
};
use agora_tests::{DEFAULT_TIMEOUT, eventually};

fn task(task_id: &str, script: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: task_id.to_owned(),
        name: task_id.to_owned(),
        resources: Resources::cpus_mem(0.1, 16.0).to_proto(),
        command: Some(CommandInfo {
            shell: true,
            value: script.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn launch(master: &FakeMaster, framework_id: &str, task: v1::TaskInfo) -> anyhow::Result<()> {
    master
        .send(master_message::Message::LaunchTasks(v1::LaunchTasks {
            framework_id: framework_id.to_owned(),
            tasks: vec![task],
        }))
        .await
}

async fn kill(
    master: &FakeMaster,
    framework_id: &str,
    task_id: &str,
    grace_period_seconds: Option<f64>,
) -> anyhow::Result<()> {
    master
        .send(master_message::Message::KillTask(v1::KillTask {
            framework_id: framework_id.to_owned(),
            task_id: task_id.to_owned(),
            grace_period_seconds,
        }))
        .await
}

fn find<'a>(
    snapshot: &'a AgentSnapshot,
    framework_id: &str,
    task_id: &str,
) -> Option<&'a TaskSnapshot> {
    snapshot
        .tasks
        .iter()
        .find(|t| t.framework_id == framework_id && t.task_id == task_id)
}

async fn snapshot(agent: &AgentHandle) -> anyhow::Result<AgentSnapshot> {
    agent
        .snapshot()
        .await
        .ok_or_else(|| anyhow::anyhow!("the agent stopped"))
}

/// Expects a refusal of (`framework_id`, `task_id`) naming `field`.
async fn expect_refused(
    master: &mut FakeMaster,
    framework_id: &str,
    task_id: &str,
    field: &str,
) -> anyhow::Result<v1::TaskStatus> {
    let refused = master
        .expect_update(framework_id, task_id, TaskState::TaskError, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(
        refused.reason(),
        TaskReason::ReasonTaskInvalid,
        "{refused:?}"
    );
    assert!(
        refused.message.starts_with(&format!("{field}:")),
        "the refusal names {field}: {refused:?}"
    );
    Ok(refused)
}

#[tokio::test]
async fn unrepresentable_durations_and_missing_limits_are_refused_and_the_agent_keeps_serving()
-> anyhow::Result<()> {
    // A heartbeat interval of 1e308 s from the master must not panic the connection either.
    let mut master = FakeMaster::start(1e308).await?;
    let work_dir = tempfile::tempdir()?;
    let mut config = agent_config(
        &master.url(),
        RuntimeKind::Process,
        &resources_with_ports(2),
        work_dir.path(),
    );
    config.kill_tasks_on_shutdown = true;
    let agent = start_agent(config).await?;
    master.wait_connected(DEFAULT_TIMEOUT).await?;

    let huge_grace = v1::TaskInfo {
        kill_grace_period_seconds: 1e308,
        ..task("huge-grace", "sleep 30")
    };
    launch(&master, "fw", huge_grace).await?;
    let refused =
        expect_refused(&mut master, "fw", "huge-grace", "kill_grace_period_seconds").await?;
    assert!(refused.message.contains("1e308"), "{refused:?}");

    for (index, (field, value)) in [
        ("interval_seconds", 1e308),
        ("interval_seconds", f64::NAN),
        ("timeout_seconds", -1.0),
        ("grace_period_seconds", f64::INFINITY),
        ("delay_seconds", 1e308),
    ]
    .into_iter()
    .enumerate()
    {
        let mut check = HealthCheck {
            protocol: HealthCheckProtocol::Command as i32,
            command: "true".to_owned(),
            ..Default::default()
        };
        match field {
            "interval_seconds" => check.interval_seconds = value,
            "timeout_seconds" => check.timeout_seconds = value,
            "grace_period_seconds" => check.grace_period_seconds = value,
            _ => check.delay_seconds = value,
        }
        let task_id = format!("bad-health-{index}");
        let checked = v1::TaskInfo {
            health_check: Some(check),
            ..task(&task_id, "sleep 30")
        };
        launch(&master, "fw", checked).await?;
        expect_refused(
            &mut master,
            "fw",
            &task_id,
            &format!("health_check.{field}"),
        )
        .await?;
    }

    let no_mem = v1::TaskInfo {
        resources: Resources::cpus_mem(0.1, 0.0).to_proto(),
        ..task("no-mem", "sleep 30")
    };
    launch(&master, "fw", no_mem).await?;
    let refused = expect_refused(&mut master, "fw", "no-mem", "resources.mem").await?;
    assert!(
        refused
            .message
            .contains("a container without a memory limit is not run"),
        "{refused:?}"
    );
    let no_cpus = v1::TaskInfo {
        resources: Resources::cpus_mem(0.0, 16.0).to_proto(),
        ..task("no-cpus", "sleep 30")
    };
    launch(&master, "fw", no_cpus).await?;
    expect_refused(&mut master, "fw", "no-cpus", "resources.cpus").await?;

    let with_volume = v1::TaskInfo {
        container: Some(ContainerInfo {
            volumes: vec!["/etc:/host-etc".to_owned()],
            ..Default::default()
        }),
        ..task("with-volume", "sleep 30")
    };
    launch(&master, "fw", with_volume).await?;
    expect_refused(&mut master, "fw", "with-volume", "container.volumes[0]").await?;

    let refused_ids = [
        "huge-grace",
        "no-mem",
        "no-cpus",
        "with-volume",
        "bad-health-0",
    ];
    let state = snapshot(&agent).await?;
    for task_id in refused_ids {
        assert!(
            find(&state, "fw", task_id).is_none(),
            "a refused task leaves nothing behind: {task_id}"
        );
    }

    // A running task killed with a grace period of 1e308 s: clamped, the kill goes through.
    launch(&master, "fw", task("sleeper", "exec sleep 30")).await?;
    let running = master
        .expect_update("fw", "sleeper", TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(running.agent_id, FAKE_AGENT_ID);
    kill(&master, "fw", "sleeper", Some(1e308)).await?;
    let killing = master
        .expect_update("fw", "sleeper", TaskState::TaskKilling, DEFAULT_TIMEOUT)
        .await?;
    assert!(killing.message.contains("3600"), "clamped: {killing:?}");
    master
        .expect_update("fw", "sleeper", TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;
    // NaN and negative grace periods, even for unknown tasks, are answered, not a panic.
    kill(&master, "fw", "nobody", Some(f64::NAN)).await?;
    master
        .expect_update("fw", "nobody", TaskState::TaskLost, DEFAULT_TIMEOUT)
        .await?;
    kill(&master, "fw", "nobody-else", Some(-1.0)).await?;
    master
        .expect_update("fw", "nobody-else", TaskState::TaskLost, DEFAULT_TIMEOUT)
        .await?;

    // Still serving: a good task launches and runs.
    launch(&master, "fw", task("after", "exec sleep 30")).await?;
    master
        .expect_update("fw", "after", TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    assert!(snapshot(&agent).await?.connected);
    agent.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn the_same_task_id_in_two_frameworks_is_two_tasks_and_a_duplicate_launch_is_refused()
-> anyhow::Result<()> {
    let mut master = FakeMaster::start(1.0).await?;
    let work_dir = tempfile::tempdir()?;
    let mut config = agent_config(
        &master.url(),
        RuntimeKind::Process,
        &resources_with_ports(2),
        work_dir.path(),
    );
    config.kill_tasks_on_shutdown = true;
    let agent = start_agent(config).await?;
    master.wait_connected(DEFAULT_TIMEOUT).await?;

    for framework_id in ["fw-a", "fw-b"] {
        let script = format!("echo {framework_id}; exec sleep 30");
        launch(&master, framework_id, task("web/1", &script)).await?;
    }
    let running_a = master
        .expect_update("fw-a", "web/1", TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    let running_b = master
        .expect_update("fw-b", "web/1", TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    assert_ne!(running_a.container_id, running_b.container_id);
    // Each has its own sandbox.
    for framework_id in ["fw-a", "fw-b"] {
        let stdout = work_dir
            .path()
            .join("sandboxes")
            .join(format!("agora-{framework_id}__web_2f1"))
            .join("stdout");
        let text = eventually("the task wrote its stdout", DEFAULT_TIMEOUT, || async {
            Ok(std::fs::read_to_string(&stdout)
                .ok()
                .filter(|text| !text.is_empty()))
        })
        .await?;
        assert_eq!(text, format!("{framework_id}\n"));
    }

    master.discard_received();

    // The same (framework, task) again while it runs: refused, the running one untouched.
    launch(&master, "fw-a", task("web/1", "exec sleep 30")).await?;
    let duplicate = master
        .expect_update("fw-a", "web/1", TaskState::TaskError, DEFAULT_TIMEOUT)
        .await?;
    assert!(
        duplicate.message.contains("already TASK_RUNNING"),
        "{duplicate:?}"
    );
    assert!(
        duplicate.uuid.is_empty(),
        "a one-shot refusal needs no acknowledgement"
    );
    let state = snapshot(&agent).await?;
    let task_a = find(&state, "fw-a", "web/1").expect("fw-a's task is still there");
    assert_eq!(task_a.state, "TASK_RUNNING");
    assert_eq!(
        task_a.container_id.as_deref(),
        Some(running_a.container_id.as_str())
    );

    // Killing fw-b's task leaves fw-a's running.
    kill(&master, "fw-b", "web/1", None).await?;
    let killed_b = master
        .expect_update("fw-b", "web/1", TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(killed_b.container_id, running_b.container_id);
    eventually(
        "fw-b's task is forgotten once acknowledged",
        DEFAULT_TIMEOUT,
        || async {
            let state = snapshot(&agent).await?;
            Ok(find(&state, "fw-b", "web/1").is_none().then_some(()))
        },
    )
    .await?;
    let state = snapshot(&agent).await?;
    let task_a = find(&state, "fw-a", "web/1").expect("fw-a's task survives");
    assert_eq!(task_a.state, "TASK_RUNNING");
    let pid_a = task_a.pid.expect("a process id");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_a as i32), None).is_ok(),
        "fw-a's process still runs"
    );
    // No update of fw-a's task's own stream was caused by any of that.
    let stray = master
        .expect(
            "an update of fw-a's task",
            Duration::from_millis(500),
            |message| match message {
                agent_message::Message::StatusUpdate(update)
                    if update.framework_id == "fw-a"
                        && update
                            .status
                            .as_ref()
                            .is_some_and(|s| s.task_id == "web/1" && !s.uuid.is_empty()) =>
                {
                    Some(update.clone())
                }
                _ => None,
            },
        )
        .await;
    assert!(stray.is_err(), "unexpected update: {stray:?}");

    kill(&master, "fw-a", "web/1", None).await?;
    master
        .expect_update("fw-a", "web/1", TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;
    agent.shutdown().await?;
    Ok(())
}
