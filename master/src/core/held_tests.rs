//! Kills and questions about tasks on agents that have not re-registered after a master
//! restart, tasks adopted from re-registering agents, and updates made while a framework was
//! away: the framework's view and the agents' tasks must converge to one exact set.

use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::TaskState;

use super::test_support::*;
use super::{Command, ConnId, MasterConfig, Registry};

type Message = v1::master_message::Message;

/// A master restarted with two agents and one framework in its registry, the framework
/// subscribed again; the agents have not re-registered yet.
fn restarted(capabilities: &[v1::FrameworkCapability]) -> (Harness, TestFramework) {
    let mut agents = Vec::new();
    for index in 1..=2 {
        let mut agent = agent_info(&format!("host{index}"), "cpus:4;mem:4096");
        agent.id = format!("agent-{index}");
        agents.push(agent);
    }
    let mut framework = framework_info("fw", "");
    framework.id = "fw-1".into();
    framework.failover_timeout_seconds = 3600.0;
    framework.capabilities = capabilities.iter().map(|c| *c as i32).collect();
    let registry = Registry {
        agents,
        frameworks: vec![framework.clone()],
        removed_frameworks: Vec::new(),
    };
    let mut config = config();
    config.agent_reregister_timeout = Duration::from_secs(60);
    let mut harness = Harness::recovering(config, registry);
    let subscribed = harness.subscribe(framework);
    harness.master.take_commands();
    (harness, subscribed)
}

fn running(task_id: &str) -> v1::AgentTask {
    v1::AgentTask {
        framework_id: "fw-1".into(),
        task: Some(task(task_id, "cpus:1;mem:128")),
        latest_status: Some(v1::TaskStatus {
            task_id: task_id.into(),
            state: TaskState::TaskRunning as i32,
            uuid: "agent-uuid".into(),
            ..Default::default()
        }),
    }
}

fn reregister(harness: &mut Harness, agent: &str, tasks: Vec<v1::AgentTask>) -> ConnId {
    let conn = harness.conn();
    let now = harness.now();
    let mut info = agent_info(agent, "cpus:4;mem:4096");
    info.id = agent.into();
    harness
        .master
        .agent_reregister(
            now,
            conn,
            v1::Reregister {
                agent: Some(info),
                tasks,
                framework_ids: vec!["fw-1".into()],
            },
        )
        .expect("reregister");
    harness.keep_alive.push(conn);
    conn
}

fn kill(harness: &mut Harness, framework: &TestFramework, task_id: &str, agent_id: &str) {
    let now = harness.now();
    harness
        .master
        .kill(
            now,
            v1::KillRequest {
                header: framework.header(),
                task_id: task_id.into(),
                agent_id: agent_id.into(),
                grace_period_seconds: Some(2.0),
            },
        )
        .expect("kill accepted");
}

fn kills(commands: &[Command], conn: ConnId) -> Vec<String> {
    messages_for(commands, conn)
        .into_iter()
        .filter_map(|message| match message {
            Message::KillTask(kill) => Some(kill.task_id),
            _ => None,
        })
        .collect()
}

fn states(commands: &[Command], conn: ConnId) -> Vec<(String, TaskState)> {
    updates_for(commands, conn)
        .into_iter()
        .map(|status| (status.task_id.clone(), status.state()))
        .collect()
}

#[test]
fn a_kill_for_a_task_on_a_recovering_agent_waits_for_it_and_is_not_answered_lost() {
    let (mut harness, framework) = restarted(&[]);
    kill(&mut harness, &framework, "t1", "agent-1");
    // Naming no agent: it waits while any agent is recovering.
    kill(&mut harness, &framework, "t2", "");
    let commands = harness.master.take_commands();
    assert!(
        updates_for(&commands, framework.conn).is_empty(),
        "no premature TASK_LOST: {:?}",
        states(&commands, framework.conn)
    );

    let conn = reregister(&mut harness, "agent-1", vec![running("t1"), running("t2")]);
    let commands = harness.master.take_commands();
    let mut killed = kills(&commands, conn);
    killed.sort();
    assert_eq!(killed, vec!["t1".to_owned(), "t2".to_owned()]);
    let reported = states(&commands, framework.conn);
    assert!(
        reported
            .iter()
            .all(|(_, state)| *state == TaskState::TaskRunning),
        "the kill's outcome comes from the agent, nothing is lost: {reported:?}"
    );
}

#[test]
fn a_held_kill_is_answered_when_its_agent_never_comes_back() {
    // Without an agent named, a partition-aware framework hears TASK_UNKNOWN (as in Mesos:
    // the master cannot say the task is on an unreachable agent).
    for (capabilities, expected, expected_unnamed) in [
        (vec![], TaskState::TaskLost, TaskState::TaskLost),
        (
            vec![v1::FrameworkCapability::PartitionAware],
            TaskState::TaskUnreachable,
            TaskState::TaskUnknown,
        ),
    ] {
        let (mut harness, framework) = restarted(&capabilities);
        kill(&mut harness, &framework, "t1", "agent-2");
        kill(&mut harness, &framework, "t2", "");
        reregister(&mut harness, "agent-1", Vec::new());
        let commands = harness.master.take_commands();
        assert!(updates_for(&commands, framework.conn).is_empty());

        let commands = harness.run_for(Duration::from_secs(61));
        let mut answered = states(&commands, framework.conn);
        answered.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            answered,
            vec![
                ("t1".to_owned(), expected),
                ("t2".to_owned(), expected_unnamed)
            ]
        );
    }
}

#[test]
fn a_reconciliation_question_about_a_recovering_agent_is_answered_when_it_settles() {
    let (mut harness, framework) = restarted(&[v1::FrameworkCapability::PartitionAware]);
    let now = harness.now();
    harness
        .master
        .reconcile(
            now,
            v1::ReconcileRequest {
                header: framework.header(),
                tasks: ["t1", "gone", "far"]
                    .iter()
                    .map(|task_id| v1::ReconcileTask {
                        task_id: (*task_id).into(),
                        agent_id: if *task_id == "far" {
                            "agent-2".into()
                        } else {
                            "agent-1".into()
                        },
                    })
                    .collect(),
            },
        )
        .expect("reconcile");
    assert!(updates_for(&harness.master.take_commands(), framework.conn).is_empty());

    reregister(&mut harness, "agent-1", vec![running("t1")]);
    let mut answered = states(&harness.master.take_commands(), framework.conn);
    answered.sort_by(|a, b| a.0.cmp(&b.0));
    answered.dedup();
    assert_eq!(
        answered,
        vec![
            ("gone".to_owned(), TaskState::TaskUnknown),
            ("t1".to_owned(), TaskState::TaskRunning),
        ]
    );

    let commands = harness.run_for(Duration::from_secs(61));
    assert_eq!(
        states(&commands, framework.conn),
        vec![("far".to_owned(), TaskState::TaskUnreachable)]
    );
}

#[test]
fn a_task_adopted_from_a_reregistering_agent_is_announced_without_a_uuid() {
    let (mut harness, framework) = restarted(&[]);
    reregister(&mut harness, "agent-1", vec![running("stray")]);
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].task_id, "stray");
    assert_eq!(updates[0].state(), TaskState::TaskRunning);
    assert!(
        updates[0].uuid.is_empty(),
        "the agent resends its own updates"
    );
}

#[test]
fn updates_made_while_a_framework_is_away_are_delivered_when_it_returns() {
    let (mut harness, framework) = restarted(&[]);
    let now = harness.now();
    harness.master.framework_disconnected(now, framework.conn);
    reregister(&mut harness, "agent-1", vec![running("stray")]);
    harness.run_for(Duration::from_secs(61));
    harness.master.take_commands();

    let mut info = framework_info("fw", "");
    info.id = "fw-1".into();
    info.failover_timeout_seconds = 3600.0;
    let again = harness.subscribe(info);
    let mut delivered = states(&harness.master.take_commands(), again.conn);
    delivered.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        delivered,
        vec![("stray".to_owned(), TaskState::TaskRunning)],
        "the adopted task is delivered as it stands now"
    );
}

#[test]
fn a_kill_for_a_task_whose_agent_connection_dropped_is_forwarded_when_it_reconnects() {
    let mut harness = Harness::with_config(MasterConfig {
        max_missed_heartbeats: 100,
        ..config()
    });
    let (agent_id, agent_conn) = harness.register_agent("cpus:4;mem:4096");
    let framework = harness.subscribe(framework_info("fw", ""));
    let offers = offers_for(&harness.allocate(), framework.conn);
    harness
        .accept(
            &framework,
            &offer_ids(&offers),
            vec![task("t1", "cpus:1;mem:128")],
            Some(0.0),
        )
        .expect("accept");
    harness.master.take_commands();
    let now = harness.now();
    harness.master.agent_disconnected(now, agent_conn);
    harness.silence(agent_conn);
    kill(&mut harness, &framework, "t1", agent_id.as_str());
    assert!(kills(&harness.master.take_commands(), agent_conn).is_empty());

    let conn = harness.conn();
    let now = harness.now();
    harness
        .master
        .agent_reregister(
            now,
            conn,
            v1::Reregister {
                agent: Some(v1::AgentInfo {
                    id: agent_id.to_string(),
                    ..agent_info("host", "cpus:4;mem:4096")
                }),
                tasks: vec![v1::AgentTask {
                    framework_id: framework.id.to_string(),
                    ..running("t1")
                }],
                framework_ids: vec![framework.id.to_string()],
            },
        )
        .expect("reregister");
    assert_eq!(
        kills(&harness.master.take_commands(), conn),
        vec!["t1".to_owned()]
    );
}
