//! The core driven by hand: no tokio, no runtime, no disk. Each test feeds inputs and checks
//! the exact commands that come out, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::v1::{
    AckStatus, AgentInfo, AgentMessage, KillTask, LaunchTasks, TaskInfo, TaskReason, TaskState,
    TaskStatus, agent_message, master_message,
};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId};

use super::{AgentCore, Command, CoreConfig, Input, Step, kill_grace_from_master};
use crate::checkpoint::{RecoveredTask, TaskCheckpoint};
use crate::config::RuntimeKind;
use crate::durations::MAX_KILL_GRACE;
use crate::error::RuntimeError;
use crate::launch_policy::LaunchPolicy;
use crate::runtime::{ContainerHandle, ContainerState, DiscoveredContainer, ExitStatus};
use crate::task_key::TaskKey;
use crate::update_stream::UpdateRecord;

const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// A core and a deterministic clock and uuid source.
struct Harness {
    core: AgentCore,
    now: f64,
    next_uuid: u64,
}

impl Harness {
    fn new() -> Self {
        let config = CoreConfig {
            hostname: "host-a".to_owned(),
            launch_policy: LaunchPolicy {
                runtime: RuntimeKind::Sim,
                allow_privileged: false,
                allowed_host_paths: Vec::new(),
            },
            default_kill_grace: DEFAULT_GRACE,
        };
        let core = AgentCore::new(
            config,
            Some(AgentId::new("agent-1")),
            AgentInfo::default(),
            Resources::cpus_mem(4.0, 4096.0),
        );
        Self {
            core,
            now: 1_000.0,
            next_uuid: 0,
        }
    }

    /// A harness whose core is registered, so that updates are sent.
    fn connected() -> Self {
        let mut harness = Self::new();
        let commands = harness.feed(Input::Connected {
            agent_id: AgentId::new("agent-1"),
        });
        assert_eq!(
            commands,
            Vec::new(),
            "same id: nothing to save, nothing pending"
        );
        harness
    }

    fn feed(&mut self, input: Input) -> Vec<Command> {
        self.now += 1.0;
        let counter = &mut self.next_uuid;
        let mut new_uuid = move || {
            *counter += 1;
            format!("uuid-{counter}")
        };
        let mut step = Step {
            now: self.now,
            new_uuid: &mut new_uuid,
        };
        self.core.handle(input, &mut step)
    }

    fn master(&mut self, message: master_message::Message) -> Vec<Command> {
        self.feed(Input::Master(message))
    }

    fn launch(&mut self, task: TaskInfo) -> Vec<Command> {
        self.master(master_message::Message::LaunchTasks(LaunchTasks {
            framework_id: "fw".to_owned(),
            tasks: vec![task],
        }))
    }

    fn ack(&mut self, uuid: &str) -> Vec<Command> {
        self.master(master_message::Message::AckStatus(AckStatus {
            framework_id: "fw".to_owned(),
            task_id: "web".to_owned(),
            uuid: uuid.to_owned(),
        }))
    }

    fn kill(&mut self, grace_period_seconds: Option<f64>) -> Vec<Command> {
        self.master(master_message::Message::KillTask(KillTask {
            framework_id: "fw".to_owned(),
            task_id: "web".to_owned(),
            grace_period_seconds,
        }))
    }

    /// Launches `web` and completes its launch in container `c-1`; returns nothing pending
    /// beyond its STARTING and RUNNING updates.
    fn running(&mut self, task: TaskInfo) {
        self.launch(task);
        self.feed(Input::Launched {
            key: key(),
            result: Ok(handle("c-1")),
        });
    }
}

fn key() -> TaskKey {
    TaskKey::new(FrameworkId::new("fw"), TaskId::new("web"))
}

fn task() -> TaskInfo {
    TaskInfo {
        task_id: "web".to_owned(),
        name: "web".to_owned(),
        resources: Resources::cpus_mem(0.5, 64.0).to_proto(),
        ..Default::default()
    }
}

fn handle(container_id: &str) -> ContainerHandle {
    ContainerHandle {
        container_id: container_id.to_owned(),
        pid: None,
    }
}

/// The status of an `AppendUpdate` command.
fn appended(command: &Command) -> &TaskStatus {
    match command {
        Command::AppendUpdate {
            record: UpdateRecord::Update(status),
            ..
        } => status,
        other => panic!("expected an appended update, got {other:?}"),
    }
}

/// The status of a `Send` command carrying a status update.
fn sent(command: &Command) -> &TaskStatus {
    match command {
        Command::Send(AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(update)),
        }) => update.status.as_ref().expect("a status"),
        other => panic!("expected a sent update, got {other:?}"),
    }
}

fn kill_grace_of(commands: &[Command]) -> Option<Duration> {
    commands.iter().find_map(|command| match command {
        Command::Kill { grace, .. } => Some(*grace),
        _ => None,
    })
}

#[test]
fn launch_updates_and_acks_run_in_order_and_forget_the_task_at_the_end() {
    let mut harness = Harness::connected();

    let launched = harness.launch(task());
    assert_eq!(launched.len(), 4, "{launched:?}");
    assert!(
        matches!(&launched[0], Command::SaveTask { key: saved, checkpoint } if *saved == key() && checkpoint.container_id.is_none())
    );
    let starting = appended(&launched[1]).clone();
    assert_eq!(starting.state(), TaskState::TaskStarting);
    assert_eq!(starting.uuid, "uuid-1");
    assert_eq!(starting.timestamp, harness.now);
    assert_eq!(
        sent(&launched[2]),
        &starting,
        "sent after it is checkpointed"
    );
    assert!(
        matches!(&launched[3], Command::Launch { key: launching, spec } if *launching == key() && spec.agent_id.as_str() == "agent-1")
    );

    let started = harness.feed(Input::Launched {
        key: key(),
        result: Ok(handle("c-1")),
    });
    assert_eq!(started.len(), 3, "{started:?}");
    assert!(
        matches!(&started[0], Command::SaveTask { checkpoint, .. } if checkpoint.container_id.as_deref() == Some("c-1"))
    );
    assert_eq!(
        started[1],
        Command::WatchExit {
            key: key(),
            handle: handle("c-1")
        }
    );
    let running = appended(&started[2]).clone();
    assert_eq!(running.state(), TaskState::TaskRunning);
    assert_eq!(running.container_id, "c-1");
    // RUNNING waits behind the unacknowledged STARTING: per task, updates go out in order.

    let resent = harness.feed(Input::ResendTick);
    assert_eq!(resent.len(), 1);
    assert_eq!(
        sent(&resent[0]),
        &starting,
        "the head is resent until acked"
    );

    let acked = harness.ack(&starting.uuid);
    assert_eq!(
        acked[0],
        Command::AppendUpdate {
            key: key(),
            record: UpdateRecord::Ack(starting.uuid.clone())
        }
    );
    assert_eq!(sent(&acked[1]), &running);

    assert_eq!(harness.ack("not-a-uuid-we-sent"), Vec::new());

    let exited = harness.feed(Input::Exited {
        key: key(),
        container_id: "c-1".to_owned(),
        exit: ExitStatus {
            code: Some(0),
            message: "exited with 0".to_owned(),
        },
    });
    assert_eq!(exited[0], Command::StopHealthCheck { key: key() });
    let finished = appended(&exited[1]).clone();
    assert_eq!(finished.state(), TaskState::TaskFinished);
    assert_eq!(finished.exit_code, Some(0));
    assert_eq!(
        exited[2],
        Command::RemoveContainer {
            handle: handle("c-1")
        }
    );

    let acked = harness.ack(&running.uuid);
    assert_eq!(sent(&acked[1]), &finished);
    assert_eq!(harness.core.snapshot().tasks.len(), 1);

    let forgotten = harness.ack(&finished.uuid);
    assert_eq!(
        forgotten,
        vec![Command::RemoveTaskCheckpoint { key: key() }]
    );
    assert!(harness.core.snapshot().tasks.is_empty());
}

#[test]
fn updates_are_checkpointed_but_not_sent_while_disconnected_and_resent_on_reconnect() {
    let mut harness = Harness::new();
    let launched = harness.launch(task());
    assert!(
        !launched.iter().any(|c| matches!(c, Command::Send(_))),
        "{launched:?}"
    );
    assert!(matches!(launched[1], Command::AppendUpdate { .. }));
    let connected = harness.feed(Input::Connected {
        agent_id: AgentId::new("agent-1"),
    });
    assert_eq!(connected.len(), 1);
    assert_eq!(sent(&connected[0]).state(), TaskState::TaskStarting);
}

#[test]
fn a_duplicate_or_invalid_launch_is_refused_without_touching_the_existing_task() {
    let mut harness = Harness::connected();
    harness.running(task());
    let duplicate = harness.launch(task());
    assert_eq!(duplicate.len(), 1, "one-shot refusal, nothing checkpointed");
    assert_eq!(sent(&duplicate[0]).state(), TaskState::TaskError);
    assert!(sent(&duplicate[0]).uuid.is_empty());

    let unlimited = TaskInfo {
        task_id: "other".to_owned(),
        ..Default::default()
    };
    let refused = harness.launch(unlimited);
    assert_eq!(refused.len(), 1);
    assert_eq!(sent(&refused[0]).state(), TaskState::TaskError);
    assert_eq!(harness.core.snapshot().tasks.len(), 1);
}

#[test]
fn a_kill_uses_the_masters_grace_clamped_else_the_tasks_own_else_the_default() {
    let own_grace = TaskInfo {
        kill_grace_period_seconds: 3.0,
        ..task()
    };

    let mut harness = Harness::connected();
    harness.running(own_grace.clone());
    let killed = harness.kill(None);
    assert_eq!(killed[0], Command::StopHealthCheck { key: key() });
    let killing = appended(&killed[1]);
    assert_eq!(killing.state(), TaskState::TaskKilling);
    assert_eq!(killing.container_id, "c-1");
    assert_eq!(
        killed.last(),
        Some(&Command::Kill {
            key: key(),
            handle: handle("c-1"),
            grace: Duration::from_secs(3)
        }),
        "the kill is sent to the runtime after KILLING is checkpointed"
    );
    assert_eq!(
        harness.kill(None),
        Vec::new(),
        "a second kill changes nothing"
    );

    let mut harness = Harness::connected();
    harness.running(own_grace);
    assert_eq!(
        kill_grace_of(&harness.kill(Some(1e308))),
        Some(MAX_KILL_GRACE)
    );

    let mut harness = Harness::connected();
    harness.running(task());
    assert_eq!(
        kill_grace_of(&harness.kill(Some(f64::NAN))),
        Some(DEFAULT_GRACE)
    );

    let mut harness = Harness::connected();
    harness.running(task());
    assert_eq!(
        kill_grace_of(&harness.kill(Some(0.5))),
        Some(Duration::from_millis(500))
    );
}

#[test]
fn a_kill_during_the_launch_waits_for_it_then_stops_the_container_and_reports_killed() {
    let mut harness = Harness::connected();
    harness.launch(task());
    let killed = harness.kill(Some(1.5));
    assert_eq!(appended(&killed[0]).state(), TaskState::TaskKilling);
    assert_eq!(kill_grace_of(&killed), None, "nothing to kill yet");

    let launched = harness.feed(Input::Launched {
        key: key(),
        result: Ok(handle("c-1")),
    });
    assert!(matches!(launched[0], Command::SaveTask { .. }));
    assert!(matches!(launched[1], Command::WatchExit { .. }));
    assert_eq!(
        launched[2],
        Command::Kill {
            key: key(),
            handle: handle("c-1"),
            grace: Duration::from_millis(1500)
        }
    );
    assert_eq!(launched.len(), 3, "no RUNNING for a task being killed");

    let exited = harness.feed(Input::Exited {
        key: key(),
        container_id: "c-1".to_owned(),
        exit: ExitStatus {
            code: Some(137),
            message: "signal 9".to_owned(),
        },
    });
    let last = appended(&exited[1]);
    assert_eq!(last.state(), TaskState::TaskKilled);
    assert_eq!(last.reason(), TaskReason::ReasonTaskKilled);

    // A failed launch of a task being killed ends KILLED too.
    let mut harness = Harness::connected();
    harness.launch(task());
    harness.kill(None);
    let failed = harness.feed(Input::Launched {
        key: key(),
        result: Err(RuntimeError::Launch {
            reason: "no".to_owned(),
        }),
    });
    assert_eq!(
        appended(&failed[0]).reason(),
        TaskReason::ReasonTaskKilledDuringLaunch
    );
}

#[test]
fn an_exit_of_another_container_than_the_tasks_is_ignored() {
    let mut harness = Harness::connected();
    harness.running(task());
    let stale = harness.feed(Input::Exited {
        key: key(),
        container_id: "c-0".to_owned(),
        exit: ExitStatus {
            code: Some(1),
            message: "old".to_owned(),
        },
    });
    assert_eq!(stale, Vec::new());
}

#[test]
fn kill_grace_from_the_master_never_panics_and_stays_in_range() {
    assert_eq!(kill_grace_from_master(1e308), Some(MAX_KILL_GRACE));
    assert_eq!(kill_grace_from_master(f64::INFINITY), Some(MAX_KILL_GRACE));
    assert_eq!(kill_grace_from_master(f64::NAN), None);
    assert_eq!(kill_grace_from_master(-1.0), None);
    assert_eq!(
        kill_grace_from_master(2.5),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(kill_grace_from_master(0.0), Some(Duration::ZERO));
}

fn status(task_id: &str, state: TaskState, uuid: &str) -> TaskStatus {
    TaskStatus {
        task_id: task_id.to_owned(),
        framework_id: "fw".to_owned(),
        state: state as i32,
        uuid: uuid.to_owned(),
        ..Default::default()
    }
}

fn recovered(
    task_id: &str,
    container_id: Option<&str>,
    records: Vec<UpdateRecord>,
) -> RecoveredTask {
    let info = TaskInfo {
        task_id: task_id.to_owned(),
        name: task_id.to_owned(),
        kill_grace_period_seconds: 2.0,
        resources: Resources::cpus_mem(0.5, 64.0).to_proto(),
        ..Default::default()
    };
    RecoveredTask {
        task_id: TaskId::new(task_id),
        checkpoint: TaskCheckpoint {
            container_id: container_id.map(str::to_owned),
            ..TaskCheckpoint::new(FrameworkId::new("fw"), &info, "docker")
        },
        task: info,
        records,
    }
}

fn discovered(task_id: &str, container_id: &str, state: ContainerState) -> DiscoveredContainer {
    DiscoveredContainer {
        task_id: TaskId::new(task_id),
        framework_id: FrameworkId::new("fw"),
        handle: handle(container_id),
        state,
    }
}

fn task_key(task_id: &str) -> TaskKey {
    TaskKey::new(FrameworkId::new("fw"), TaskId::new(task_id))
}

fn commands_for<'a>(commands: &'a [Command], task_id: &str) -> Vec<&'a Command> {
    let wanted = task_key(task_id);
    commands
        .iter()
        .filter(|command| match command {
            Command::SaveTask { key, .. }
            | Command::AppendUpdate { key, .. }
            | Command::RemoveTaskCheckpoint { key }
            | Command::WatchExit { key, .. }
            | Command::Kill { key, .. }
            | Command::StartHealthCheck { key, .. } => *key == wanted,
            Command::RemoveContainer { handle } => handle.container_id.starts_with(task_id),
            _ => false,
        })
        .collect()
}

#[test]
fn recovery_adopts_running_containers_reports_ended_ones_and_forgets_acknowledged_tasks() {
    let running = vec![
        UpdateRecord::Update(status("running", TaskState::TaskStarting, "r1")),
        UpdateRecord::Ack("r1".to_owned()),
        UpdateRecord::Update(status("running", TaskState::TaskRunning, "r2")),
    ];
    let tasks = vec![
        // Its container still runs: watched again, nothing re-reported.
        recovered("running", Some("running-c"), running),
        // Its container exited while the agent was down: reported, then removed.
        recovered(
            "exited",
            Some("exited-c"),
            vec![UpdateRecord::Update(status(
                "exited",
                TaskState::TaskRunning,
                "e1",
            ))],
        ),
        // A kill was under way: finished with the task's own grace period.
        recovered(
            "killing",
            Some("killing-c"),
            vec![UpdateRecord::Update(status(
                "killing",
                TaskState::TaskKilling,
                "k1",
            ))],
        ),
        // Its terminal update was acknowledged: forgotten, its container removed.
        recovered(
            "done",
            Some("done-c"),
            vec![
                UpdateRecord::Update(status("done", TaskState::TaskFinished, "d1")),
                UpdateRecord::Ack("d1".to_owned()),
            ],
        ),
        // The agent died during its launch: no container to adopt.
        recovered(
            "launching",
            None,
            vec![UpdateRecord::Update(status(
                "launching",
                TaskState::TaskStarting,
                "l1",
            ))],
        ),
        // Checkpointed container, missed by the label search, gone when inspected.
        recovered(
            "vanished",
            Some("vanished-c"),
            vec![UpdateRecord::Update(status(
                "vanished",
                TaskState::TaskRunning,
                "v1",
            ))],
        ),
    ];
    let containers = vec![
        discovered("running", "running-c", ContainerState::Running),
        discovered(
            "exited",
            "exited-c",
            ContainerState::Exited(ExitStatus {
                code: Some(3),
                message: "exited with 3".to_owned(),
            }),
        ),
        discovered("killing", "killing-c", ContainerState::Running),
        discovered("orphan", "orphan-c", ContainerState::Running),
        discovered(
            "stale",
            "stale-c",
            ContainerState::Exited(ExitStatus {
                code: Some(0),
                message: "done".to_owned(),
            }),
        ),
    ];
    let inspected = BTreeMap::from([(task_key("vanished"), ContainerState::Missing)]);

    let mut harness = Harness::new();
    let commands = harness.feed(Input::Recovered {
        tasks,
        discovered: containers,
        inspected,
    });

    let running = commands_for(&commands, "running");
    assert!(matches!(running[0], Command::SaveTask { .. }));
    assert_eq!(
        running[1],
        &Command::WatchExit {
            key: task_key("running"),
            handle: handle("running-c")
        }
    );
    assert_eq!(running.len(), 2, "{running:?}");

    let exited = commands_for(&commands, "exited");
    let report = appended(exited[1]);
    assert_eq!(report.state(), TaskState::TaskFailed);
    assert_eq!(
        report.reason(),
        TaskReason::ReasonContainerExitedWhileAgentDown
    );
    assert_eq!(report.exit_code, Some(3));
    assert_eq!(
        exited[2],
        &Command::RemoveContainer {
            handle: handle("exited-c")
        }
    );

    let killing = commands_for(&commands, "killing");
    assert_eq!(
        killing.last(),
        Some(&&Command::Kill {
            key: task_key("killing"),
            handle: handle("killing-c"),
            grace: Duration::from_secs(2)
        })
    );

    let done = commands_for(&commands, "done");
    assert_eq!(
        done,
        vec![
            &Command::RemoveContainer {
                handle: handle("done-c")
            },
            &Command::RemoveTaskCheckpoint {
                key: task_key("done")
            }
        ]
    );

    let launching = commands_for(&commands, "launching");
    let report = appended(launching[1]);
    assert_eq!(report.state(), TaskState::TaskFailed);
    assert_eq!(report.reason(), TaskReason::ReasonAgentRestarted);

    let vanished = commands_for(&commands, "vanished");
    assert_eq!(appended(vanished[1]).state(), TaskState::TaskFailed);

    // A running container no checkpoint names is adopted, for the master to decide on.
    let orphan = commands_for(&commands, "orphan");
    assert!(
        matches!(orphan[0], Command::SaveTask { checkpoint, .. } if checkpoint.container_id.as_deref() == Some("orphan-c"))
    );
    assert!(matches!(orphan[1], Command::WatchExit { .. }));
    assert_eq!(
        commands_for(&commands, "stale"),
        vec![&Command::RemoveContainer {
            handle: handle("stale-c")
        }]
    );
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, Command::Kill { key, .. } if *key != task_key("killing"))),
        "the agent kills nothing on its own but a kill under way"
    );

    let snapshot = harness.core.snapshot();
    let ids: Vec<&str> = snapshot.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "exited",
            "killing",
            "launching",
            "orphan",
            "running",
            "vanished"
        ]
    );

    // Re-registration lists every adopted task with its latest state.
    let registration = harness.core.registration_message(harness.now);
    let Some(agent_message::Message::Reregister(reregister)) = registration.message else {
        panic!("an agent with an id re-registers");
    };
    assert_eq!(reregister.tasks.len(), 6);
    assert_eq!(reregister.framework_ids, ["fw"]);
}

#[test]
fn a_failed_checkpoint_write_produces_stop_and_the_core_then_decides_nothing() {
    let mut harness = Harness::connected();
    harness.launch(task());
    let stop = harness.feed(Input::CheckpointFailed {
        operation: "task fw/web".to_owned(),
        error: "disk full".to_owned(),
    });
    assert_eq!(stop.len(), 1);
    let Command::Stop { reason } = &stop[0] else {
        panic!("expected Stop, got {stop:?}");
    };
    assert!(
        reason.contains("task fw/web") && reason.contains("disk full"),
        "{reason}"
    );

    assert_eq!(
        harness.feed(Input::Launched {
            key: key(),
            result: Ok(handle("c-1")),
        }),
        Vec::new()
    );
    assert_eq!(harness.feed(Input::ResendTick), Vec::new());
}

#[test]
fn checkpoint_writes_come_before_what_depends_on_them() {
    let mut harness = Harness::connected();
    let commands = harness.launch(task());
    let first_effect = commands
        .iter()
        .position(|c| matches!(c, Command::Send(_) | Command::Launch { .. }))
        .expect("an effect");
    assert!(
        commands[..first_effect]
            .iter()
            .all(Command::is_checkpoint_write),
        "{commands:?}"
    );
    assert_eq!(first_effect, 2);
}
