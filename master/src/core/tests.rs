//! Scenario tests of the master core, driven through its public methods with injected time.

use std::time::Duration;

use agora_proto::v1::{TaskReason, TaskState};
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId, v1};

use super::test_support::*;
use super::{Command, MasterConfig, MasterError, Registry, RegistryUpdate};

type Message = v1::master_message::Message;
type Event = v1::event::Event;

/// One agent, one framework, and the first offer it got.
fn one_offer(agent_text: &str) -> (Harness, AgentId, super::ConnId, TestFramework, v1::Offer) {
    let mut harness = Harness::new();
    let (agent_id, agent_conn) = harness.register_agent(agent_text);
    let framework = harness.subscribe(framework_info("fw", ""));
    let commands = harness.allocate();
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1, "one agent, one offer");
    let offer = offers.into_iter().next().unwrap_or_default();
    (harness, agent_id, agent_conn, framework, offer)
}

fn launched_task(
    agent_text: &str,
    task_text: &str,
) -> (Harness, AgentId, super::ConnId, TestFramework) {
    let (mut harness, agent_id, agent_conn, framework, offer) = one_offer(agent_text);
    harness
        .accept(
            &framework,
            &offer_ids(&[offer]),
            vec![task("t1", task_text)],
            Some(0.0),
        )
        .expect("accept");
    harness.master.take_commands();
    (harness, agent_id, agent_conn, framework)
}

fn task_state(harness: &Harness, task_id: &str) -> Option<TaskState> {
    harness
        .master
        .state()
        .tasks
        .iter()
        .rev()
        .find(|entry| {
            entry
                .task
                .as_ref()
                .is_some_and(|task| task.task_id == task_id)
        })
        .and_then(|entry| entry.latest_status.as_ref().map(|status| status.state()))
}

fn agent_status(harness: &Harness, agent_id: &AgentId) -> String {
    harness
        .master
        .state()
        .agents
        .iter()
        .find(|agent| {
            agent
                .info
                .as_ref()
                .is_some_and(|info| info.id == agent_id.as_str())
        })
        .map(|agent| agent.status.clone())
        .unwrap_or_default()
}

// ----- agents --------------------------------------------------------------------------------

#[test]
fn register_assigns_an_id_persists_and_answers_registered() {
    let mut harness = Harness::new();
    let (agent_id, conn) = harness.register_agent("cpus:4;mem:4096;ports:[31000-31099]");
    assert!(agent_id.as_str().starts_with("agent-"));
    let commands = harness.master.take_commands();
    let Some(Command::Persist(RegistryUpdate::UpsertAgent(info))) = commands.first() else {
        panic!("persist comes first: {commands:?}");
    };
    assert_eq!(info.id, agent_id.as_str());
    assert_eq!(
        messages_for(&commands, conn),
        vec![Message::Registered(v1::Registered {
            agent_id: agent_id.to_string(),
            heartbeat_interval_seconds: 5.0,
        })]
    );
    assert_eq!(agent_status(&harness, &agent_id), "active");
}

#[test]
fn register_with_bad_resources_is_refused_and_changes_nothing() {
    let mut harness = Harness::new();
    let before = harness.master.state();
    let mut info = agent_info("host", "cpus:1");
    info.resources.push(v1::Resource {
        name: "mem".into(),
        value: Some(v1::resource::Value::Scalar(-5.0)),
    });
    let conn = harness.conn();
    let now = harness.now();
    let error = harness.master.agent_register(now, conn, info);
    assert!(
        matches!(&error, Err(MasterError::InvalidField { field, .. }) if field == "agent.resources"),
        "{error:?}"
    );
    assert_eq!(harness.master.state(), before);
    assert!(harness.master.take_commands().is_empty());
}

#[test]
fn agent_becomes_unreachable_only_after_the_missed_heartbeat_limit() {
    let mut harness = Harness::new();
    let (agent_id, conn) = harness.register_agent("cpus:4;mem:4096");
    harness.silence(conn);
    // Heartbeats keep it alive well past the limit (5 x 5 s).
    for _ in 0..10 {
        harness.run_for(Duration::from_secs(5));
        let now = harness.now();
        harness.master.agent_heartbeat(now, conn);
    }
    assert_eq!(agent_status(&harness, &agent_id), "active");
    let commands = harness.run_for(Duration::from_secs(20));
    assert_eq!(
        agent_status(&harness, &agent_id),
        "active",
        "4 missed heartbeats are fine"
    );
    assert!(messages_for(&commands, conn).contains(&Message::Heartbeat(v1::MasterHeartbeat {})));
    let commands = harness.run_for(Duration::from_secs(6));
    assert_eq!(agent_status(&harness, &agent_id), "unreachable");
    assert!(commands.contains(&Command::CloseAgent {
        conn,
        reason: "agent missed too many heartbeats and is unreachable".into()
    }));
    assert_eq!(harness.master.metrics().agents_unreachable, 1);
}

#[test]
fn disconnect_alone_does_not_make_an_agent_unreachable_but_rescinds_its_offers() {
    let (mut harness, agent_id, agent_conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let now = harness.now();
    harness.master.agent_disconnected(now, agent_conn);
    let commands = harness.master.take_commands();
    assert_eq!(
        rescinds_for(&commands, framework.conn),
        vec![offer.id.clone()]
    );
    assert_eq!(agent_status(&harness, &agent_id), "active");
    // Not offered while disconnected.
    let commands = harness.run_for(Duration::from_secs(2));
    assert!(offers_for(&commands, framework.conn).is_empty());
}

#[test]
fn unreachable_agent_reports_lost_or_unreachable_by_capability_and_rescinds_offers() {
    let mut harness = Harness::new();
    let (agent_id, agent_conn) = harness.register_agent("cpus:4;mem:4096");
    harness.silence(agent_conn);
    let plain = harness.subscribe(framework_info("plain", "a"));
    let mut aware_info = framework_info("aware", "b");
    aware_info.capabilities = vec![v1::FrameworkCapability::PartitionAware as i32];
    let aware = harness.subscribe(aware_info);

    // Give each framework one task on the agent: the lower share gets each offer.
    let mut launched = Vec::new();
    for round in 0..2 {
        let commands = harness.allocate();
        let mut receivers = Vec::new();
        for framework in [&plain, &aware] {
            let offers = offers_for(&commands, framework.conn);
            if !offers.is_empty() {
                receivers.push((framework, offers));
            }
        }
        assert_eq!(
            receivers.len(),
            1,
            "round {round}: exactly one framework gets the agent"
        );
        let (framework, offers) = receivers.remove(0);
        assert!(
            !launched.contains(&framework.id),
            "the framework without a task is lower"
        );
        let task_id = if framework.id == plain.id { "p1" } else { "a1" };
        harness
            .accept(
                framework,
                &offer_ids(&offers),
                vec![task(task_id, "cpus:1;mem:512")],
                Some(0.0),
            )
            .expect("accept");
        launched.push(framework.id.clone());
    }
    let commands = harness.allocate();
    let outstanding: Vec<_> = [plain.conn, aware.conn]
        .iter()
        .flat_map(|conn| offers_for(&commands, *conn))
        .collect();
    assert_eq!(outstanding.len(), 1, "the rest is offered to one of them");

    let commands = harness.run_for(Duration::from_secs(31));
    assert_eq!(agent_status(&harness, &agent_id), "unreachable");
    let plain_updates = updates_for(&commands, plain.conn);
    let aware_updates = updates_for(&commands, aware.conn);
    assert_eq!(plain_updates.len(), 1);
    assert_eq!(plain_updates[0].state(), TaskState::TaskLost);
    assert_eq!(
        plain_updates[0].reason(),
        TaskReason::ReasonAgentUnreachable
    );
    assert!(plain_updates[0].uuid.is_empty());
    assert_eq!(plain_updates[0].source(), v1::StatusSource::SourceMaster);
    assert_eq!(aware_updates.len(), 1);
    assert_eq!(aware_updates[0].state(), TaskState::TaskUnreachable);
    let rescinded: Vec<_> = [plain.conn, aware.conn]
        .iter()
        .flat_map(|conn| rescinds_for(&commands, *conn))
        .collect();
    assert_eq!(rescinded, vec![outstanding[0].id.clone()]);
    for conn in [plain.conn, aware.conn] {
        assert!(
            events_for(&commands, conn).contains(&Event::Failure(v1::Failure {
                agent_id: agent_id.to_string(),
                message: "agent unreachable".into(),
            }))
        );
    }
    assert_eq!(harness.master.state().offers.len(), 0);
}

#[test]
fn unreachable_agent_that_returns_is_readmitted_and_frameworks_learn_the_real_state() {
    let (mut harness, agent_id, old_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    harness.silence(old_conn);
    let commands = harness.run_for(Duration::from_secs(31));
    assert_eq!(
        updates_for(&commands, framework.conn)[0].state(),
        TaskState::TaskLost
    );
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskLost));

    let conn = harness.conn();
    let now = harness.now();
    let mut info = agent_info("host", "cpus:4;mem:4096");
    info.id = agent_id.to_string();
    let returned = harness.master.agent_reregister(
        now,
        conn,
        v1::Reregister {
            agent: Some(info),
            tasks: vec![v1::AgentTask {
                framework_id: framework.id.to_string(),
                task: Some(task("t1", "cpus:1;mem:128")),
                latest_status: Some(v1::TaskStatus {
                    task_id: "t1".into(),
                    state: TaskState::TaskRunning as i32,
                    ..Default::default()
                }),
            }],
            framework_ids: vec![framework.id.to_string()],
        },
    );
    assert_eq!(returned, Ok(agent_id.clone()));
    let commands = harness.master.take_commands();
    let updates = updates_for(&commands, framework.conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state(), TaskState::TaskRunning);
    assert_eq!(agent_status(&harness, &agent_id), "active");
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskRunning));
    // Its resources count again: the next offer holds only what the task leaves free.
    let commands = harness.allocate();
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);
    let offered = Resources::from_proto(&offers[0].resources).unwrap_or_default();
    assert_eq!(offered.cpus(), 3.0);
}

#[test]
fn reregister_without_a_task_reports_it_lost_and_shuts_down_unknown_frameworks() {
    let (mut harness, agent_id, old_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let conn = harness.conn();
    let now = harness.now();
    let mut info = agent_info("host", "cpus:4;mem:4096");
    info.id = agent_id.to_string();
    harness
        .master
        .agent_reregister(
            now,
            conn,
            v1::Reregister {
                agent: Some(info),
                tasks: vec![v1::AgentTask {
                    framework_id: "fw-gone".into(),
                    task: Some(task("orphan", "cpus:1;mem:32")),
                    latest_status: None,
                }],
                framework_ids: vec!["fw-gone".into()],
            },
        )
        .expect("reregister");
    let commands = harness.master.take_commands();
    assert!(commands.contains(&Command::CloseAgent {
        conn: old_conn,
        reason: "superseded by a newer connection of the same agent".into()
    }));
    let updates = updates_for(&commands, framework.conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state(), TaskState::TaskLost);
    assert_eq!(updates[0].reason(), TaskReason::ReasonAgentRestarted);
    let shutdowns: Vec<_> = messages_for(&commands, conn)
        .into_iter()
        .filter(|message| matches!(message, Message::ShutdownFramework(_)))
        .collect();
    assert_eq!(
        shutdowns,
        vec![Message::ShutdownFramework(v1::ShutdownFramework {
            framework_id: "fw-gone".into()
        })]
    );
    // The orphan of an unknown framework is not adopted.
    assert_eq!(task_state(&harness, "orphan"), None);
}

#[test]
fn drain_rescinds_offers_kills_tasks_and_offers_nothing_more() {
    let (mut harness, agent_id, agent_conn, framework, offer) = one_offer("cpus:4;mem:4096");
    harness
        .accept(
            &framework,
            &offer_ids(&[offer]),
            vec![task("t1", "cpus:1;mem:128")],
            Some(0.0),
        )
        .expect("accept");
    let commands = harness.allocate();
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);
    let now = harness.now();
    harness.master.drain_agent(now, &agent_id).expect("drain");
    let commands = harness.master.take_commands();
    assert_eq!(
        rescinds_for(&commands, framework.conn),
        vec![offers[0].id.clone()]
    );
    assert!(
        messages_for(&commands, agent_conn).contains(&Message::KillTask(v1::KillTask {
            framework_id: framework.id.to_string(),
            task_id: "t1".into(),
            grace_period_seconds: None,
        }))
    );
    assert_eq!(agent_status(&harness, &agent_id), "draining");
    let commands = harness.run_for(Duration::from_secs(3));
    assert!(offers_for(&commands, framework.conn).is_empty());
    assert_eq!(
        harness
            .master
            .drain_agent(harness.now(), &AgentId::new("nope")),
        Err(MasterError::UnknownAgent(AgentId::new("nope")))
    );
}

#[test]
fn resource_update_rescinds_and_reoffers_the_new_total() {
    let (mut harness, _agent_id, agent_conn, framework, offer) = one_offer("cpus:4;mem:4096");
    let now = harness.now();
    harness
        .master
        .agent_resource_update(
            now,
            agent_conn,
            v1::ResourceUpdate {
                resources: resources("cpus:8;mem:4096"),
            },
        )
        .expect("update");
    let commands = harness.allocate();
    assert_eq!(rescinds_for(&commands, framework.conn), vec![offer.id]);
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::from_proto(&offers[0].resources)
            .unwrap_or_default()
            .cpus(),
        8.0
    );
}

// ----- frameworks ----------------------------------------------------------------------------

#[test]
fn subscribe_assigns_an_id_and_subscribed_is_the_first_event() {
    let mut harness = Harness::new();
    let framework = harness.subscribe(framework_info("fw", ""));
    assert!(framework.id.as_str().starts_with("fw-"));
    let commands = harness.master.take_commands();
    let Some(Command::Persist(RegistryUpdate::UpsertFramework(info))) = commands.first() else {
        panic!("persist first: {commands:?}");
    };
    assert_eq!(info.role, "*");
    let events = events_for(&commands, framework.conn);
    assert!(matches!(events.first(), Some(Event::Subscribed(subscribed))
        if subscribed.framework_id == framework.id.as_str()
            && subscribed.stream_id == framework.stream_id
            && subscribed.master_version == agora_proto::VERSION));
}

#[test]
fn failover_keeps_tasks_and_closes_the_older_stream() {
    let (mut harness, _agent_id, _agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let mut info = framework_info("fw", "");
    info.id = framework.id.to_string();
    let second = harness.subscribe(info.clone());
    assert_eq!(second.id, framework.id);
    assert_ne!(second.stream_id, framework.stream_id);
    let commands = harness.master.take_commands();
    assert!(commands.contains(&Command::CloseFramework {
        conn: framework.conn,
        reason: "superseded by a newer subscription of the same framework".into()
    }));
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskStaging));
    // The old stream id is stale now.
    let now = harness.now();
    let stale = harness.master.suppress(
        now,
        v1::SuppressRequest {
            header: framework.header(),
        },
    );
    assert!(
        matches!(stale, Err(MasterError::StaleStream { .. })),
        "{stale:?}"
    );

    // Disconnect and come back within the failover timeout: still there.
    harness.master.framework_disconnected(now, second.conn);
    harness.run_for(Duration::from_secs(59));
    assert_eq!(harness.master.metrics().frameworks_disconnected, 1);
    let third = harness.subscribe(info);
    assert_eq!(third.id, framework.id);
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskStaging));
}

#[test]
fn failover_expiry_removes_the_framework_and_shuts_its_tasks_down() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let now = harness.now();
    harness.master.framework_disconnected(now, framework.conn);
    let commands = harness.run_for(Duration::from_secs(61));
    assert!(
        commands.contains(&Command::Persist(RegistryUpdate::RemoveFramework(
            framework.id.clone()
        )))
    );
    assert!(
        messages_for(&commands, agent_conn).contains(&Message::ShutdownFramework(
            v1::ShutdownFramework {
                framework_id: framework.id.to_string()
            }
        ))
    );
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskKilled));
    let state = harness.master.state();
    assert!(state.frameworks.is_empty());
    assert!(state.agents[0].used.is_empty(), "resources freed");

    let mut info = framework_info("fw", "");
    info.id = framework.id.to_string();
    let conn = harness.conn();
    let now = harness.now();
    assert_eq!(
        harness.master.subscribe(now, conn, info, false),
        Err(MasterError::FrameworkRemoved(framework.id.clone()))
    );
}

#[test]
fn teardown_removes_immediately_and_closes_the_stream() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let now = harness.now();
    harness
        .master
        .teardown(
            now,
            v1::TeardownRequest {
                header: framework.header(),
            },
        )
        .expect("teardown");
    let commands = harness.master.take_commands();
    assert!(commands.contains(&Command::CloseFramework {
        conn: framework.conn,
        reason: "framework torn down".into()
    }));
    assert!(
        messages_for(&commands, agent_conn)
            .iter()
            .any(|message| matches!(message, Message::ShutdownFramework(_)))
    );
    let again = harness.master.teardown(
        now,
        v1::TeardownRequest {
            header: framework.header(),
        },
    );
    assert_eq!(
        again,
        Err(MasterError::FrameworkRemoved(framework.id.clone()))
    );
}

#[test]
fn framework_heartbeats_are_sent_periodically() {
    let mut harness = Harness::new();
    let framework = harness.subscribe(framework_info("fw", ""));
    let commands = harness.run_for(Duration::from_secs(31));
    let heartbeats = events_for(&commands, framework.conn)
        .into_iter()
        .filter(|event| matches!(event, Event::Heartbeat(_)))
        .count();
    assert_eq!(heartbeats, 2);
}

// ----- offers and allocation -----------------------------------------------------------------

#[test]
fn allocation_waits_for_the_batching_window() {
    let mut harness = Harness::new();
    harness.register_agent("cpus:4;mem:4096");
    let framework = harness.subscribe(framework_info("fw", ""));
    let deadline = harness.master.next_deadline().expect("a deadline");
    assert_eq!(
        deadline,
        harness.now().instant + harness.master.config().allocation_batch_window
    );
    let now = harness.now();
    let report = harness.master.tick(now);
    assert!(!report.allocation_ran);
    let commands = harness.allocate();
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);
    let offered = Resources::from_proto(&offers[0].resources).unwrap_or_default();
    assert_eq!(
        offered,
        Resources::parse("cpus:4;mem:4096").unwrap_or_default()
    );
    assert_eq!(harness.master.metrics().offers_outstanding, 1);
}

#[test]
fn offers_are_exclusive_between_frameworks() {
    let mut harness = Harness::new();
    harness.register_agent("cpus:4;mem:4096");
    let first = harness.subscribe(framework_info("a", ""));
    let second = harness.subscribe(framework_info("b", ""));
    let commands = harness.allocate();
    let total = offers_for(&commands, first.conn).len() + offers_for(&commands, second.conn).len();
    assert_eq!(total, 1);
    let commands = harness.run_for(Duration::from_secs(5));
    let total = offers_for(&commands, first.conn).len() + offers_for(&commands, second.conn).len();
    assert_eq!(total, 0, "nothing is free while the offer is outstanding");
}

#[test]
fn offer_timeout_rescinds_and_reoffers() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:4;mem:4096");
    let commands = harness.run_for(Duration::from_secs(29));
    assert!(rescinds_for(&commands, framework.conn).is_empty());
    let commands = harness.run_for(Duration::from_secs(2));
    assert_eq!(
        rescinds_for(&commands, framework.conn),
        vec![offer.id.clone()]
    );
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1, "resources come back in a new offer");
    assert_ne!(offers[0].id, offer.id);
}

#[test]
fn decline_filter_holds_for_its_duration_then_expires() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:4;mem:4096");
    harness
        .decline(&framework, &offer_ids(&[offer]), Some(10.0))
        .expect("decline");
    let commands = harness.run_for(Duration::from_millis(9_900));
    assert!(
        offers_for(&commands, framework.conn).is_empty(),
        "filtered for 10 s"
    );
    let commands = harness.run_for(Duration::from_millis(200));
    assert_eq!(
        offers_for(&commands, framework.conn).len(),
        1,
        "offered again after expiry"
    );
}

#[test]
fn filtered_resources_go_to_another_framework() {
    let mut harness = Harness::new();
    harness.register_agent("cpus:4;mem:4096");
    let first = harness.subscribe(framework_info("a", ""));
    let second = harness.subscribe(framework_info("b", ""));
    let commands = harness.allocate();
    let (taker, other) = if offers_for(&commands, first.conn).is_empty() {
        (&second, &first)
    } else {
        (&first, &second)
    };
    let offers = offers_for(&commands, taker.conn);
    harness
        .decline(taker, &offer_ids(&offers), Some(60.0))
        .expect("decline");
    let commands = harness.allocate();
    assert!(offers_for(&commands, taker.conn).is_empty());
    assert_eq!(offers_for(&commands, other.conn).len(), 1);
}

#[test]
fn decline_without_refuse_uses_the_default_and_zero_means_no_filter() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:4;mem:4096");
    let now = harness.now();
    harness
        .master
        .decline(
            now,
            v1::DeclineRequest {
                header: framework.header(),
                offer_ids: vec![offer.id],
                filters: None,
            },
        )
        .expect("decline");
    let commands = harness.run_for(Duration::from_millis(4_900));
    assert!(
        offers_for(&commands, framework.conn).is_empty(),
        "default refuse is 5 s"
    );
    let commands = harness.run_for(Duration::from_millis(200));
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);
    harness
        .decline(&framework, &offer_ids(&offers), Some(0.0))
        .expect("decline");
    let commands = harness.allocate();
    assert_eq!(
        offers_for(&commands, framework.conn).len(),
        1,
        "no filter: offered again"
    );
}

#[test]
fn decline_of_an_unknown_offer_is_refused_and_changes_nothing() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:4;mem:4096");
    let before = harness.master.state();
    let result = harness.decline(
        &framework,
        &[OfferId::new(offer.id.clone()), OfferId::new("offer-x")],
        Some(5.0),
    );
    assert_eq!(
        result,
        Err(MasterError::UnknownOffer(OfferId::new("offer-x")))
    );
    assert_eq!(harness.master.state(), before);
}

#[test]
fn suppress_stops_offers_and_revive_resumes_them_and_clears_filters() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:4;mem:4096");
    let now = harness.now();
    harness
        .master
        .suppress(
            now,
            v1::SuppressRequest {
                header: framework.header(),
            },
        )
        .expect("suppress");
    harness
        .decline(&framework, &offer_ids(&[offer]), Some(0.0))
        .expect("decline");
    let commands = harness.run_for(Duration::from_secs(10));
    assert!(
        offers_for(&commands, framework.conn).is_empty(),
        "suppressed"
    );
    assert!(harness.master.state().frameworks[0].suppressed);

    let now = harness.now();
    harness
        .master
        .revive(
            now,
            v1::ReviveRequest {
                header: framework.header(),
            },
        )
        .expect("revive");
    let commands = harness.allocate();
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);

    // A long filter, then revive: offered again at once.
    harness
        .decline(&framework, &offer_ids(&offers), Some(3600.0))
        .expect("decline");
    let commands = harness.allocate();
    assert!(offers_for(&commands, framework.conn).is_empty());
    let now = harness.now();
    harness
        .master
        .revive(
            now,
            v1::ReviveRequest {
                header: framework.header(),
            },
        )
        .expect("revive");
    let commands = harness.allocate();
    assert_eq!(offers_for(&commands, framework.conn).len(), 1);
}

#[test]
fn weighted_roles_get_offers_in_drf_order() {
    let mut config = config();
    config.role_weights.insert("gold".into(), 3.0);
    let mut harness = Harness::with_config(config);
    for _ in 0..8 {
        harness.register_agent("cpus:1;mem:1024");
    }
    let gold = harness.subscribe(framework_info("gold", "gold"));
    let plain = harness.subscribe(framework_info("plain", "plain"));
    let commands = harness.allocate();
    // Each offer is 1/8 of the cluster: gold's weighted share grows three times slower.
    assert_eq!(offers_for(&commands, gold.conn).len(), 6);
    assert_eq!(offers_for(&commands, plain.conn).len(), 2);
    let shares: Vec<f64> = harness
        .master
        .state()
        .frameworks
        .iter()
        .map(|f| f.dominant_share)
        .collect();
    assert!(
        shares.iter().any(|share| (share - 0.75).abs() < 1e-9),
        "{shares:?}"
    );
}

// ----- accept --------------------------------------------------------------------------------

#[test]
fn accept_launches_tasks_and_returns_the_rest_with_a_filter() {
    let (mut harness, agent_id, agent_conn, framework, offer) =
        one_offer("cpus:4;mem:4096;ports:[31000-31009]");
    let response = harness
        .accept(
            &framework,
            &offer_ids(&[offer]),
            vec![
                task("web", "cpus:1;mem:512;ports:[31000-31001]"),
                task("db", "cpus:2;mem:1024"),
            ],
            Some(10.0),
        )
        .expect("accept");
    assert_eq!(
        response.launched_task_ids,
        vec!["web".to_owned(), "db".to_owned()]
    );
    let commands = harness.master.take_commands();
    let launches: Vec<_> = messages_for(&commands, agent_conn)
        .into_iter()
        .filter_map(|message| match message {
            Message::LaunchTasks(launch) => Some(launch),
            _ => None,
        })
        .collect();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].framework_id, framework.id.as_str());
    assert!(
        launches[0]
            .tasks
            .iter()
            .all(|task| task.agent_id == agent_id.as_str())
    );
    assert_eq!(task_state(&harness, "web"), Some(TaskState::TaskStaging));
    let state = harness.master.state();
    let used = Resources::from_proto(&state.agents[0].used).unwrap_or_default();
    assert_eq!(
        used,
        Resources::parse("cpus:3;mem:1536;ports:[31000-31001]").unwrap_or_default()
    );
    assert!(state.offers.is_empty());

    // The remainder is filtered for 10 s, then offered again.
    let commands = harness.run_for(Duration::from_secs(9));
    assert!(offers_for(&commands, framework.conn).is_empty());
    let commands = harness.run_for(Duration::from_secs(2));
    let offers = offers_for(&commands, framework.conn);
    assert_eq!(offers.len(), 1);
    assert_eq!(
        Resources::from_proto(&offers[0].resources).unwrap_or_default(),
        Resources::parse("cpus:1;mem:2560;ports:[31002-31009]").unwrap_or_default()
    );
}

#[test]
fn accept_asking_for_more_than_offered_is_refused_with_task_error_and_changes_nothing() {
    let (mut harness, _agent_id, agent_conn, framework, offer) =
        one_offer("cpus:2;mem:1024;ports:[31000-31001]");
    let before = harness.master.state();
    for (tasks, expected_field) in [
        (vec![task("big", "cpus:3;mem:128")], None),
        (
            vec![task("a", "cpus:1;mem:128"), task("b", "cpus:1.5;mem:128")],
            None,
        ),
        (
            vec![task("port", "cpus:1;mem:32;ports:[32000-32000]")],
            None,
        ),
        (
            vec![
                task("p1", "cpus:0.5;mem:32;ports:[31000-31000]"),
                task("p2", "cpus:0.5;mem:32;ports:[31000-31000]"),
            ],
            Some("operations[0].launch.tasks[1].resources"),
        ),
        (
            vec![task("", "cpus:1;mem:32")],
            Some("operations[0].launch.tasks[0].task_id"),
        ),
        (
            vec![task("empty", "")],
            Some("operations[0].launch.tasks[0].resources"),
        ),
    ] {
        let count = tasks.len();
        let result = harness.accept(
            &framework,
            &offer_ids(std::slice::from_ref(&offer)),
            tasks,
            None,
        );
        match (expected_field, &result) {
            (None, Err(MasterError::InsufficientResources { needed, offered })) => {
                assert!(!needed.is_empty() && offered.contains("cpus:2"));
            }
            (Some(expected), Err(MasterError::InvalidField { field, .. })) => {
                assert_eq!(field, expected)
            }
            _ => panic!("unexpected {result:?} for {expected_field:?}"),
        }
        let commands = harness.master.take_commands();
        let updates = updates_for(&commands, framework.conn);
        assert_eq!(updates.len(), count);
        assert!(
            updates
                .iter()
                .all(|update| update.state() == TaskState::TaskError)
        );
        assert!(messages_for(&commands, agent_conn).is_empty());
        assert_eq!(harness.master.state(), before, "nothing changed");
    }
    // The offer is still good.
    harness
        .accept(
            &framework,
            &offer_ids(&[offer]),
            vec![task("fits", "cpus:2;mem:1024")],
            None,
        )
        .expect("offer still outstanding");
}

#[test]
fn accept_of_a_task_on_another_agent_is_refused() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let mut misplaced = task("t", "cpus:1;mem:32");
    misplaced.agent_id = "agent-elsewhere".into();
    let result = harness.accept(&framework, &offer_ids(&[offer]), vec![misplaced], None);
    assert!(
        matches!(&result, Err(MasterError::InvalidField { field, .. })
        if field == "operations[0].launch.tasks[0].agent_id"),
        "{result:?}"
    );
}

#[test]
fn accept_naming_a_stale_offer_drops_every_task_and_keeps_valid_offers() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let before = harness.master.state();
    let stale = OfferId::new("offer-stale");
    let result = harness.accept(
        &framework,
        &[OfferId::new(offer.id.clone()), stale.clone()],
        vec![task("t1", "cpus:1;mem:32"), task("t2", "cpus:1;mem:32")],
        None,
    );
    assert_eq!(result, Err(MasterError::UnknownOffer(stale)));
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(updates.len(), 2);
    for update in &updates {
        assert_eq!(update.state(), TaskState::TaskDropped);
        assert_eq!(update.reason(), TaskReason::ReasonInvalidOffers);
        assert!(update.message.contains("offer-stale"), "{}", update.message);
        assert_eq!(update.framework_id, framework.id.as_str());
        assert!(update.uuid.is_empty());
    }
    assert_eq!(harness.master.state(), before);

    // An offer that was rescinded by timeout is stale too.
    harness.run_for(Duration::from_secs(31));
    harness.master.take_commands();
    let result = harness.accept(
        &framework,
        &offer_ids(std::slice::from_ref(&offer)),
        vec![task("t3", "cpus:1;mem:32")],
        None,
    );
    assert_eq!(
        result,
        Err(MasterError::UnknownOffer(OfferId::new(offer.id)))
    );
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(updates[0].state(), TaskState::TaskDropped);
}

#[test]
fn accept_from_an_unknown_framework_or_stale_stream_is_refused() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let before = harness.master.state();
    let stranger = TestFramework {
        id: FrameworkId::new("fw-unknown"),
        stream_id: "s".into(),
        conn: super::ConnId(999),
    };
    let result = harness.accept(
        &stranger,
        &offer_ids(std::slice::from_ref(&offer)),
        vec![task("t", "cpus:1;mem:32")],
        None,
    );
    assert_eq!(
        result,
        Err(MasterError::UnknownFramework(FrameworkId::new(
            "fw-unknown"
        )))
    );
    let stale = TestFramework {
        stream_id: "stream-old".into(),
        ..framework.clone()
    };
    let result = harness.accept(
        &stale,
        &offer_ids(&[offer]),
        vec![task("t", "cpus:1;mem:32")],
        None,
    );
    assert!(matches!(result, Err(MasterError::StaleStream { .. })));
    assert_eq!(harness.master.state(), before);
    assert!(harness.master.take_commands().is_empty());
}

#[test]
fn accept_of_another_frameworks_offer_is_an_unknown_offer() {
    let mut harness = Harness::new();
    harness.register_agent("cpus:2;mem:1024");
    let first = harness.subscribe(framework_info("a", ""));
    let second = harness.subscribe(framework_info("b", ""));
    let commands = harness.allocate();
    let (holder, other) = if offers_for(&commands, first.conn).is_empty() {
        (&second, &first)
    } else {
        (&first, &second)
    };
    let offers = offers_for(&commands, holder.conn);
    let result = harness.accept(
        other,
        &offer_ids(&offers),
        vec![task("t", "cpus:1;mem:32")],
        None,
    );
    assert_eq!(
        result,
        Err(MasterError::UnknownOffer(OfferId::new(
            offers[0].id.clone()
        )))
    );
}

#[test]
fn accept_without_operations_declines() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let now = harness.now();
    let response = harness.master.accept(
        now,
        v1::AcceptRequest {
            header: framework.header(),
            offer_ids: vec![offer.id],
            operations: vec![],
            filters: Some(v1::Filters {
                refuse_seconds: Some(30.0),
            }),
        },
    );
    assert_eq!(response, Ok(v1::AcceptResponse::default()));
    assert!(harness.master.state().offers.is_empty());
    let commands = harness.run_for(Duration::from_secs(20));
    assert!(offers_for(&commands, framework.conn).is_empty());
}

#[test]
fn a_live_task_id_cannot_be_launched_twice() {
    let (mut harness, _agent_id, _conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let commands = harness.allocate();
    let offers = offers_for(&commands, framework.conn);
    let result = harness.accept(
        &framework,
        &offer_ids(&offers),
        vec![task("t1", "cpus:1;mem:32")],
        None,
    );
    assert!(
        matches!(&result, Err(MasterError::InvalidField { reason, .. }) if reason.contains("already live"))
    );
}

// ----- status updates, kill, acknowledgements, reconciliation --------------------------------

#[test]
fn status_updates_are_forwarded_and_terminal_ones_free_resources() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskRunning,
            "u1",
        )
        .expect("update");
    let commands = harness.master.take_commands();
    let updates = updates_for(&commands, framework.conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].uuid, "u1");
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskRunning));

    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskFinished,
            "u2",
        )
        .expect("update");
    let state = harness.master.state();
    assert!(state.agents[0].used.is_empty());

    // Acknowledging the terminal update forwards it and retires the task.
    let now = harness.now();
    harness
        .master
        .acknowledge(
            now,
            v1::AcknowledgeRequest {
                header: framework.header(),
                agent_id: String::new(),
                task_id: "t1".into(),
                uuid: "u2".into(),
            },
        )
        .expect("ack");
    let commands = harness.master.take_commands();
    assert!(
        messages_for(&commands, agent_conn).contains(&Message::AckStatus(v1::AckStatus {
            framework_id: framework.id.to_string(),
            task_id: "t1".into(),
            uuid: "u2".into(),
        }))
    );
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskFinished));
    assert_eq!(
        harness.master.metrics().tasks_by_state.get("TASK_FINISHED"),
        Some(&1)
    );
    // A terminal task does not go back to running.
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskRunning,
            "u3",
        )
        .expect("forwarded");
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskFinished));
}

#[test]
fn updates_while_the_framework_is_away_update_state_but_send_nothing() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let now = harness.now();
    harness.master.framework_disconnected(now, framework.conn);
    harness.master.take_commands();
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskRunning,
            "u1",
        )
        .expect("update");
    assert!(events_for(&harness.master.take_commands(), framework.conn).is_empty());
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskRunning));
}

#[test]
fn status_update_validation_names_the_field() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let result = harness.status_update(agent_conn, &framework.id, "", TaskState::TaskRunning, "u");
    assert!(
        matches!(&result, Err(MasterError::InvalidField { field, .. }) if field == "status.task_id")
    );
    let result =
        harness.status_update(agent_conn, &framework.id, "t1", TaskState::Unspecified, "u");
    assert!(
        matches!(&result, Err(MasterError::InvalidField { field, .. }) if field == "status.state")
    );
    let stranger = harness.conn();
    let result = harness.status_update(stranger, &framework.id, "t1", TaskState::TaskRunning, "u");
    assert!(matches!(result, Err(MasterError::InvalidField { .. })));
}

#[test]
fn unknown_task_from_an_agent_is_adopted_for_a_known_framework() {
    let (mut harness, _agent_id, agent_conn, framework, _offer) = one_offer("cpus:4;mem:4096");
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "mystery",
            TaskState::TaskRunning,
            "u",
        )
        .expect("adopted");
    assert_eq!(
        task_state(&harness, "mystery"),
        Some(TaskState::TaskRunning)
    );
    harness
        .status_update(
            agent_conn,
            &FrameworkId::new("fw-nobody"),
            "x",
            TaskState::TaskRunning,
            "u",
        )
        .expect("ignored");
    assert_eq!(task_state(&harness, "x"), None);
}

#[test]
fn kill_sends_kill_task_and_unknown_tasks_get_lost_or_unknown() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    let now = harness.now();
    harness
        .master
        .kill(
            now,
            v1::KillRequest {
                header: framework.header(),
                task_id: "t1".into(),
                agent_id: String::new(),
                grace_period_seconds: Some(3.0),
            },
        )
        .expect("kill");
    let commands = harness.master.take_commands();
    assert_eq!(
        messages_for(&commands, agent_conn),
        vec![Message::KillTask(v1::KillTask {
            framework_id: framework.id.to_string(),
            task_id: "t1".into(),
            grace_period_seconds: Some(3.0),
        })]
    );
    harness
        .master
        .kill(
            now,
            v1::KillRequest {
                header: framework.header(),
                task_id: "ghost".into(),
                ..Default::default()
            },
        )
        .expect("kill unknown");
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state(), TaskState::TaskLost);

    let mut aware_info = framework_info("aware", "");
    aware_info.capabilities = vec![v1::FrameworkCapability::PartitionAware as i32];
    let aware = harness.subscribe(aware_info);
    harness
        .master
        .kill(
            now,
            v1::KillRequest {
                header: aware.header(),
                task_id: "ghost".into(),
                ..Default::default()
            },
        )
        .expect("kill unknown");
    let updates = updates_for(&harness.master.take_commands(), aware.conn);
    assert_eq!(updates[0].state(), TaskState::TaskUnknown);
}

#[test]
fn explicit_and_implicit_reconciliation_answer_with_the_latest_state() {
    let (mut harness, agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskRunning,
            "u1",
        )
        .expect("update");
    harness.master.take_commands();
    let now = harness.now();

    harness
        .master
        .reconcile(
            now,
            v1::ReconcileRequest {
                header: framework.header(),
                tasks: vec![],
            },
        )
        .expect("implicit");
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].task_id, "t1");
    assert_eq!(updates[0].state(), TaskState::TaskRunning);
    assert_eq!(updates[0].reason(), TaskReason::ReasonReconciliation);
    assert!(updates[0].uuid.is_empty());

    harness
        .master
        .reconcile(
            now,
            v1::ReconcileRequest {
                header: framework.header(),
                tasks: vec![
                    v1::ReconcileTask {
                        task_id: "t1".into(),
                        agent_id: agent_id.to_string(),
                    },
                    v1::ReconcileTask {
                        task_id: "ghost".into(),
                        agent_id: "agent-unknown".into(),
                    },
                ],
            },
        )
        .expect("explicit");
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].state(), TaskState::TaskRunning);
    assert_eq!(updates[1].task_id, "ghost");
    assert_eq!(updates[1].state(), TaskState::TaskLost);
    assert_eq!(updates[1].reason(), TaskReason::ReasonReconciliation);

    let result = harness.master.reconcile(
        now,
        v1::ReconcileRequest {
            header: framework.header(),
            tasks: vec![v1::ReconcileTask {
                task_id: String::new(),
                agent_id: String::new(),
            }],
        },
    );
    assert!(
        matches!(&result, Err(MasterError::InvalidField { field, .. }) if field == "tasks[0].task_id")
    );
}

// ----- master restart ------------------------------------------------------------------------

#[test]
fn registry_recovery_waits_for_agents_and_frameworks() {
    let mut agent = agent_info("host", "cpus:4;mem:4096");
    agent.id = "agent-1".into();
    let mut lost_agent = agent_info("host2", "cpus:4;mem:4096");
    lost_agent.id = "agent-2".into();
    let mut framework = framework_info("fw", "");
    framework.id = "fw-1".into();
    framework.failover_timeout_seconds = 3600.0;
    let registry = Registry {
        agents: vec![agent.clone(), lost_agent],
        frameworks: vec![framework.clone()],
        removed_frameworks: vec![FrameworkId::new("fw-old")],
    };
    let mut config = config();
    config.agent_reregister_timeout = Duration::from_secs(60);
    let mut harness = Harness::recovering(config, registry);
    assert_eq!(
        agent_status(&harness, &AgentId::new("agent-1")),
        "recovering"
    );
    assert_eq!(harness.master.metrics().frameworks_disconnected, 1);

    // The framework fails over onto its recovered id and reconciles: no answer for a task
    // that may be on a recovering agent.
    let subscribed = harness.subscribe(framework.clone());
    assert_eq!(subscribed.id, FrameworkId::new("fw-1"));
    harness.master.take_commands();
    let now = harness.now();
    harness
        .master
        .reconcile(
            now,
            v1::ReconcileRequest {
                header: subscribed.header(),
                tasks: vec![v1::ReconcileTask {
                    task_id: "t1".into(),
                    agent_id: "agent-1".into(),
                }],
            },
        )
        .expect("reconcile");
    assert!(updates_for(&harness.master.take_commands(), subscribed.conn).is_empty());

    // Agent 1 comes back with its running task, which is adopted.
    let conn = harness.conn();
    harness
        .master
        .agent_reregister(
            now,
            conn,
            v1::Reregister {
                agent: Some(agent),
                tasks: vec![v1::AgentTask {
                    framework_id: "fw-1".into(),
                    task: Some(task("t1", "cpus:1;mem:128")),
                    latest_status: Some(v1::TaskStatus {
                        task_id: "t1".into(),
                        state: TaskState::TaskRunning as i32,
                        ..Default::default()
                    }),
                }],
                framework_ids: vec!["fw-1".into(), "fw-old".into()],
            },
        )
        .expect("reregister");
    harness.keep_alive.push(conn);
    let commands = harness.master.take_commands();
    assert!(
        messages_for(&commands, conn).contains(&Message::ShutdownFramework(
            v1::ShutdownFramework {
                framework_id: "fw-old".into()
            }
        ))
    );
    assert_eq!(task_state(&harness, "t1"), Some(TaskState::TaskRunning));
    assert_eq!(agent_status(&harness, &AgentId::new("agent-1")), "active");

    // Agent 2 never comes back.
    harness.run_for(Duration::from_secs(61));
    assert_eq!(
        agent_status(&harness, &AgentId::new("agent-2")),
        "unreachable"
    );
    assert_eq!(agent_status(&harness, &AgentId::new("agent-1")), "active");

    let conn = harness.conn();
    let mut old = framework_info("old", "");
    old.id = "fw-old".into();
    assert_eq!(
        harness.master.subscribe(harness.now(), conn, old, false),
        Err(MasterError::FrameworkRemoved(FrameworkId::new("fw-old")))
    );
}

#[test]
fn recovered_framework_that_never_returns_is_removed_after_its_failover_timeout() {
    let mut framework = framework_info("fw", "");
    framework.id = "fw-1".into();
    framework.failover_timeout_seconds = 10.0;
    let registry = Registry {
        frameworks: vec![framework],
        ..Registry::default()
    };
    let mut harness = Harness::recovering(MasterConfig::default(), registry);
    let commands = harness.run_for(Duration::from_secs(11));
    assert!(
        commands.contains(&Command::Persist(RegistryUpdate::RemoveFramework(
            FrameworkId::new("fw-1")
        )))
    );
    assert_eq!(harness.master.metrics().frameworks_disconnected, 0);
}

#[test]
fn metrics_count_everything() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskRunning,
            "u1",
        )
        .expect("update");
    harness.allocate();
    let metrics = harness.master.metrics();
    assert_eq!(metrics.agents_active, 1);
    assert_eq!(metrics.frameworks_connected, 1);
    assert_eq!(metrics.tasks_by_state.get("TASK_RUNNING"), Some(&1));
    assert_eq!(metrics.offers_outstanding, 1);
    assert_eq!(metrics.offers_made_total, 2);
    assert!(metrics.allocation_runs_total >= 2);
    let task_id = TaskId::new("t1");
    assert!(harness.master.state().tasks.iter().any(|entry| {
        entry
            .task
            .as_ref()
            .is_some_and(|t| t.task_id == task_id.as_str())
    }));
}

#[test]
fn failover_withdraws_the_old_streams_offers_and_reoffers_on_the_new_one() {
    let (mut harness, _agent_id, _conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let mut info = framework_info("fw", "");
    info.id = framework.id.to_string();
    let second = harness.subscribe(info);
    let commands = harness.master.take_commands();
    let close_at = commands
        .iter()
        .position(|command| matches!(command, Command::CloseFramework { .. }));
    let persist_at = commands
        .iter()
        .position(|command| matches!(command, Command::Persist(_)));
    assert!(
        persist_at < close_at,
        "persist before sending: {commands:?}"
    );
    assert!(harness.master.state().offers.is_empty());
    let commands = harness.allocate();
    let offers = offers_for(&commands, second.conn);
    assert_eq!(offers.len(), 1);
    assert_ne!(offers[0].id, offer.id);
}

#[test]
fn next_deadline_tracks_offer_expiry_and_failover() {
    let mut config = config();
    config.allocation_interval = Duration::from_secs(3600);
    config.agent_heartbeat_interval = Duration::from_secs(3600);
    config.framework_heartbeat_interval = Duration::from_secs(3600);
    config.offer_timeout = Some(Duration::from_secs(7));
    let mut harness = Harness::with_config(config);
    harness.register_agent("cpus:2;mem:1024");
    let mut info = framework_info("fw", "");
    info.failover_timeout_seconds = 3.0;
    let framework = harness.subscribe(info);
    harness.allocate();
    let offered_at = harness.now().instant;
    assert_eq!(
        harness.master.next_deadline(),
        Some(offered_at + Duration::from_secs(7))
    );
    let disconnected_at = harness.now().instant;
    let now = harness.now();
    harness.master.framework_disconnected(now, framework.conn);
    // Its offer went back to the pool: an allocation pass comes first, then the failover.
    harness.allocate();
    assert_eq!(
        harness.master.next_deadline(),
        Some(disconnected_at + Duration::from_secs(3))
    );
}

#[test]
fn an_unreachable_agent_cannot_be_drained() {
    let mut harness = Harness::new();
    let (agent_id, conn) = harness.register_agent("cpus:2;mem:1024");
    harness.silence(conn);
    harness.run_for(Duration::from_secs(31));
    let result = harness.master.drain_agent(harness.now(), &agent_id);
    assert!(
        matches!(&result, Err(MasterError::InvalidField { field, reason })
            if field == "agent_id" && reason.contains("Unreachable")),
        "{result:?}"
    );
}

#[test]
fn subscribe_validates_the_failover_timeout() {
    let mut harness = Harness::new();
    let mut info = framework_info("fw", "");
    info.failover_timeout_seconds = f64::NAN;
    let conn = harness.conn();
    let result = harness.master.subscribe(harness.now(), conn, info, false);
    assert!(
        matches!(&result, Err(MasterError::InvalidField { field, .. })
        if field == "framework.failover_timeout_seconds")
    );
    assert!(harness.master.state().frameworks.is_empty());
}

#[test]
fn acknowledging_an_update_for_a_retired_task_still_reaches_the_agent() {
    let (mut harness, agent_id, _old_conn, framework) =
        launched_task("cpus:4;mem:4096", "cpus:1;mem:128");
    // The agent drops off, the task is reported LOST and retired; then the agent comes back
    // and resends the task's terminal update.
    harness.silence(_old_conn);
    harness.run_for(Duration::from_secs(31));
    let conn = harness.conn();
    let mut info = agent_info("host", "cpus:4;mem:4096");
    info.id = agent_id.to_string();
    harness
        .master
        .agent_reregister(
            harness.now(),
            conn,
            v1::Reregister {
                agent: Some(info),
                tasks: vec![],
                framework_ids: vec![],
            },
        )
        .expect("reregister");
    harness
        .status_update(conn, &framework.id, "t1", TaskState::TaskFailed, "u9")
        .expect("forwarded");
    let updates = updates_for(&harness.master.take_commands(), framework.conn);
    assert_eq!(
        updates.last().map(|update| update.uuid.as_str()),
        Some("u9")
    );
    harness
        .master
        .acknowledge(
            harness.now(),
            v1::AcknowledgeRequest {
                header: framework.header(),
                agent_id: String::new(),
                task_id: "t1".into(),
                uuid: "u9".into(),
            },
        )
        .expect("ack");
    let commands = harness.master.take_commands();
    assert!(
        messages_for(&commands, conn)
            .iter()
            .any(|message| matches!(message, Message::AckStatus(ack) if ack.uuid == "u9"))
    );
}

// ----- bad input: every number and id range-checked, nothing changed (issue 12, 8-12) ----

/// Asserts `result` is an `InvalidField` error for `field` whose reason contains `reason`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, MasterError>, field: &str, reason: &str) {
    match result {
        Err(MasterError::InvalidField {
            field: got_field,
            reason: got_reason,
        }) => {
            assert_eq!(got_field, field, "reason: {got_reason}");
            assert!(
                got_reason.contains(reason),
                "{got_field}: {got_reason:?} should mention {reason:?}"
            );
            assert!(
                got_reason.len() < 300,
                "error echoes too much: {got_reason}"
            );
        }
        other => panic!("expected {field} to be refused ({reason}), got {other:?}"),
    }
}

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.to_owned(),
        value: Some(v1::resource::Value::Scalar(value)),
    }
}

#[test]
fn kill_with_an_absurd_grace_period_is_refused_and_changes_nothing() {
    let (mut harness, _agent_id, agent_conn, framework) =
        launched_task("cpus:2;mem:1024", "cpus:1;mem:128");
    let before = harness.master.state();
    for grace in [1e308, f64::INFINITY, f64::NAN, -1.0, 366.0 * 24.0 * 3600.0] {
        let now = harness.now();
        let result = harness.master.kill(
            now,
            v1::KillRequest {
                header: framework.header(),
                task_id: "t1".to_owned(),
                agent_id: String::new(),
                grace_period_seconds: Some(grace),
            },
        );
        assert_invalid(result, "grace_period_seconds", "");
        let commands = harness.master.take_commands();
        assert!(
            messages_for(&commands, agent_conn).is_empty(),
            "no KillTask sent"
        );
        assert_eq!(harness.master.state(), before);
    }
}

#[test]
fn accept_with_out_of_range_durations_is_refused_and_changes_nothing() {
    let (mut harness, _agent_id, agent_conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let before = harness.master.state();
    let field = |name: &str| format!("operations[0].launch.tasks[0].{name}");
    let mut cases: Vec<(v1::TaskInfo, String)> = Vec::new();
    let mut grace = task("t", "cpus:1;mem:128");
    grace.kill_grace_period_seconds = 1e308;
    cases.push((grace, field("kill_grace_period_seconds")));
    for (name, setter) in [
        (
            "grace_period_seconds",
            (|check: &mut v1::HealthCheck| check.grace_period_seconds = 1e308)
                as fn(&mut v1::HealthCheck),
        ),
        ("interval_seconds", |check| {
            check.interval_seconds = f64::NAN
        }),
        ("timeout_seconds", |check| check.timeout_seconds = -1.0),
        ("delay_seconds", |check| check.delay_seconds = f64::INFINITY),
    ] {
        let mut check = v1::HealthCheck::default();
        setter(&mut check);
        let mut info = task("t", "cpus:1;mem:128");
        info.health_check = Some(check);
        cases.push((info, field(&format!("health_check.{name}"))));
    }
    let mut bad_port = task("t", "cpus:1;mem:128");
    bad_port.container = Some(v1::ContainerInfo {
        port_mappings: vec![v1::PortMapping {
            container_port: 70_000,
            ..Default::default()
        }],
        ..Default::default()
    });
    cases.push((bad_port, field("container.port_mappings[0].container_port")));
    for (info, expected_field) in cases {
        let result = harness.accept(
            &framework,
            &offer_ids(std::slice::from_ref(&offer)),
            vec![info],
            None,
        );
        assert_invalid(result, &expected_field, "");
        let commands = harness.master.take_commands();
        assert!(messages_for(&commands, agent_conn).is_empty());
        assert_eq!(harness.master.state(), before, "nothing changed");
    }
    // A refuse_seconds beyond a year is refused too, instead of being clamped.
    let result = harness.accept(
        &framework,
        &offer_ids(std::slice::from_ref(&offer)),
        vec![task("t", "cpus:1;mem:128")],
        Some(1e308),
    );
    assert_invalid(result, "filters.refuse_seconds", "at most");
    assert_eq!(harness.master.state(), before, "nothing changed");
    let result = harness.decline(&framework, &offer_ids(&[offer]), Some(1e308));
    assert_invalid(result, "filters.refuse_seconds", "at most");
    harness.master.take_commands();
    assert_eq!(
        harness.master.state(),
        before,
        "the offer is still outstanding"
    );
}

#[test]
fn subscribe_with_an_absurd_failover_timeout_or_oversized_fields_is_refused() {
    let mut harness = Harness::new();
    let before = harness.master.state();
    type Case = (fn(&mut v1::FrameworkInfo), &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            |info| info.failover_timeout_seconds = 1e308,
            "framework.failover_timeout_seconds",
            "at most",
        ),
        (
            |info| info.id = "f".repeat(70_000),
            "framework.id",
            "at most 255 bytes",
        ),
        (
            |info| info.id = "fw/../etc".to_owned(),
            "framework.id",
            "'/'",
        ),
        (
            |info| info.name = "n".repeat(256),
            "framework.name",
            "at most 255 bytes",
        ),
        (
            |info| info.principal = "p\u{0}".to_owned(),
            "framework.principal",
            "",
        ),
    ];
    for (mutate, field, reason) in cases {
        let mut info = framework_info("fw", "");
        mutate(&mut info);
        let conn = harness.conn();
        let now = harness.now();
        assert_invalid(
            harness.master.subscribe(now, conn, info, false),
            field,
            reason,
        );
        assert!(harness.master.take_commands().is_empty());
        assert_eq!(harness.master.state(), before);
    }
}

#[test]
fn resources_that_would_overflow_are_refused_at_accept_and_registration() {
    let (mut harness, _agent_id, agent_conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let before = harness.master.state();
    for (resources, reason) in [
        (
            vec![
                scalar("cpus", 1e18),
                scalar("cpus", 1e18),
                scalar("mem", 128.0),
            ],
            "exceeds the maximum",
        ),
        (
            vec![
                scalar("cpus", 6e11),
                scalar("cpus", 6e11),
                scalar("mem", 128.0),
            ],
            "cpus total 1.2e12 exceeds the maximum 1e12",
        ),
    ] {
        let mut info = task("t", "");
        info.resources = resources;
        let result = harness.accept(
            &framework,
            &offer_ids(std::slice::from_ref(&offer)),
            vec![info],
            None,
        );
        assert_invalid(result, "operations[0].launch.tasks[0].resources", reason);
        let commands = harness.master.take_commands();
        assert!(messages_for(&commands, agent_conn).is_empty());
        assert_eq!(harness.master.state(), before);
    }
    // An agent registering cpus 1e18 twice gets an error, not a negative total.
    let conn = harness.conn();
    let now = harness.now();
    let mut agent = agent_info("huge", "mem:1024");
    agent.resources.push(scalar("cpus", 1e18));
    agent.resources.push(scalar("cpus", 1e18));
    let result = harness.master.agent_register(now, conn, agent);
    assert_invalid(result, "agent.resources", "exceeds the maximum");
    let mut agent = agent_info("huge", "mem:1024");
    agent.resources.push(scalar("cpus", 9e11));
    agent.resources.push(scalar("cpus", 9e11));
    let result = harness.master.agent_register(now, conn, agent);
    assert_invalid(result, "agent.resources", "cpus total 1.8e12 exceeds");
    assert!(harness.master.take_commands().is_empty());
    assert_eq!(harness.master.state(), before);
}

#[test]
fn tasks_below_the_cpus_and_mem_minimums_are_refused() {
    let (mut harness, _agent_id, agent_conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let before = harness.master.state();
    for (text, reason) in [
        ("mem:128", "cpus must be at least 0.01"),
        ("cpus:0.001;mem:128", "cpus must be at least 0.01"),
        ("cpus:1", "mem must be at least 6 MiB"),
        ("cpus:1;mem:5", "mem must be at least 6 MiB"),
    ] {
        let result = harness.accept(
            &framework,
            &offer_ids(std::slice::from_ref(&offer)),
            vec![task("t", text)],
            None,
        );
        assert_invalid(result, "operations[0].launch.tasks[0].resources", reason);
        let commands = harness.master.take_commands();
        assert!(messages_for(&commands, agent_conn).is_empty());
        assert_eq!(harness.master.state(), before);
    }
    // The minimums themselves are accepted.
    harness
        .accept(
            &framework,
            &offer_ids(&[offer]),
            vec![task("t", "cpus:0.01;mem:6")],
            None,
        )
        .expect("the minimum task is accepted");
}

#[test]
fn ids_beyond_the_documented_limits_are_refused_everywhere() {
    let (mut harness, agent_id, agent_conn, framework, offer) = one_offer("cpus:2;mem:1024");
    let long = "a".repeat(70_000);
    let before = harness.master.state();

    let result = harness.accept(
        &framework,
        &offer_ids(std::slice::from_ref(&offer)),
        vec![task(&long, "cpus:1;mem:128")],
        None,
    );
    assert_invalid(
        result,
        "operations[0].launch.tasks[0].task_id",
        "at most 255 bytes, got 70000",
    );
    let result = harness.accept(
        &framework,
        &offer_ids(std::slice::from_ref(&offer)),
        vec![task("a b", "cpus:1;mem:128")],
        None,
    );
    assert_invalid(result, "operations[0].launch.tasks[0].task_id", "spaces");
    let mut labelled = task("t", "cpus:1;mem:128");
    labelled.labels.insert("k".to_owned(), long.clone());
    let result = harness.accept(
        &framework,
        &offer_ids(std::slice::from_ref(&offer)),
        vec![labelled],
        None,
    );
    assert_invalid(
        result,
        "operations[0].launch.tasks[0].labels[\"k\"]",
        "at most 4096",
    );
    harness.master.take_commands();

    let now = harness.now();
    let result = harness.master.kill(
        now,
        v1::KillRequest {
            header: framework.header(),
            task_id: long.clone(),
            ..Default::default()
        },
    );
    assert_invalid(result, "task_id", "at most 255 bytes");
    let mut header = framework.header();
    if let Some(header) = header.as_mut() {
        header.framework_id = long.clone();
    }
    let result = harness.master.decline(
        now,
        v1::DeclineRequest {
            header,
            offer_ids: vec![offer.id.clone()],
            filters: None,
        },
    );
    assert_invalid(result, "header.framework_id", "at most 255 bytes");

    let result = harness.status_update(
        agent_conn,
        &framework.id,
        &long,
        TaskState::TaskRunning,
        "u1",
    );
    assert_invalid(result, "status.task_id", "at most 255 bytes");

    let conn = harness.conn();
    let mut agent = agent_info("host", "cpus:1;mem:64");
    agent.id = long.clone();
    let result = harness.master.agent_reregister(
        now,
        conn,
        v1::Reregister {
            agent: Some(agent),
            ..Default::default()
        },
    );
    assert_invalid(result, "agent.id", "at most 255 bytes");
    let mut agent = agent_info("host", "cpus:1;mem:64");
    agent.id = agent_id.to_string();
    agent.hostname = long.clone();
    let result = harness.master.agent_reregister(
        now,
        agent_conn,
        v1::Reregister {
            agent: Some(agent),
            ..Default::default()
        },
    );
    assert_invalid(result, "agent.hostname", "at most 255 bytes");

    assert!(messages_for(&harness.master.take_commands(), agent_conn).is_empty());
    assert_eq!(harness.master.state(), before, "nothing changed");
}

#[test]
fn task_killing_reaches_only_frameworks_with_the_capability_and_is_acknowledged_for_the_others() {
    for capable in [false, true] {
        let mut harness = Harness::new();
        let (_agent_id, agent_conn) = harness.register_agent("cpus:2;mem:1024");
        let mut info = framework_info("fw", "");
        if capable {
            info.capabilities
                .push(v1::FrameworkCapability::TaskKillingState as i32);
        }
        let framework = harness.subscribe(info);
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
        harness
            .status_update(
                agent_conn,
                &framework.id,
                "t1",
                TaskState::TaskRunning,
                "u1",
            )
            .expect("running");
        harness.master.take_commands();
        harness
            .status_update(
                agent_conn,
                &framework.id,
                "t1",
                TaskState::TaskKilling,
                "u2",
            )
            .expect("killing");
        let commands = harness.master.take_commands();
        let updates = updates_for(&commands, framework.conn);
        let acks: Vec<String> = messages_for(&commands, agent_conn)
            .into_iter()
            .filter_map(|message| match message {
                Message::AckStatus(ack) => Some(ack.uuid),
                _ => None,
            })
            .collect();
        if capable {
            assert_eq!(updates.len(), 1);
            assert_eq!(updates[0].state(), TaskState::TaskKilling);
            assert!(acks.is_empty(), "the framework acknowledges: {acks:?}");
        } else {
            assert!(updates.is_empty(), "no TASK_KILLING: {updates:?}");
            assert_eq!(acks, ["u2"], "acknowledged for the framework");
        }
        // Reconciliation answers TASK_RUNNING to a framework that does not know TASK_KILLING.
        let now = harness.now();
        harness
            .master
            .reconcile(
                now,
                v1::ReconcileRequest {
                    header: framework.header(),
                    tasks: Vec::new(),
                },
            )
            .expect("reconcile");
        let answers = updates_for(&harness.master.take_commands(), framework.conn);
        let expected = if capable {
            TaskState::TaskKilling
        } else {
            TaskState::TaskRunning
        };
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].state(), expected);
    }
}

#[test]
fn acknowledging_a_uuid_that_is_not_the_latest_update_is_refused() {
    let (mut harness, agent_id, agent_conn, framework) =
        launched_task("cpus:2;mem:1024", "cpus:1;mem:128");
    harness
        .status_update(
            agent_conn,
            &framework.id,
            "t1",
            TaskState::TaskRunning,
            "u1",
        )
        .expect("running");
    harness.master.take_commands();
    let before = harness.master.state();
    let now = harness.now();
    let acknowledge = |uuid: &str| v1::AcknowledgeRequest {
        header: framework.header(),
        agent_id: agent_id.to_string(),
        task_id: "t1".to_owned(),
        uuid: uuid.to_owned(),
    };
    let result = harness.master.acknowledge(now, acknowledge("made-up"));
    assert!(
        matches!(result, Err(MasterError::UnknownUpdate { ref uuid, .. }) if uuid == "made-up"),
        "{result:?}"
    );
    assert!(messages_for(&harness.master.take_commands(), agent_conn).is_empty());
    assert_eq!(harness.master.state(), before);
    // The latest update's uuid is forwarded to the agent, as before.
    harness
        .master
        .acknowledge(now, acknowledge("u1"))
        .expect("the latest update is acknowledged");
    let forwarded = messages_for(&harness.master.take_commands(), agent_conn);
    assert!(
        matches!(forwarded.as_slice(), [Message::AckStatus(ack)] if ack.uuid == "u1"),
        "{forwarded:?}"
    );
}

#[test]
fn a_subscription_says_whether_the_framework_starts_suppressed_even_on_failover() {
    let mut harness = Harness::new();
    harness.register_agent("cpus:2;mem:1024");
    let conn = harness.conn();
    let now = harness.now();
    let subscribed = harness
        .master
        .subscribe(now, conn, framework_info("fw", ""), true)
        .expect("subscribes suppressed");
    assert!(
        offers_for(&harness.allocate(), conn).is_empty(),
        "suppressed: no offers"
    );

    // Failing over without the flag: offers resume, whatever the old stream had asked.
    let mut info = framework_info("fw", "");
    info.id = subscribed.framework_id.clone();
    let failover_conn = harness.conn();
    let now = harness.now();
    harness
        .master
        .subscribe(now, failover_conn, info.clone(), false)
        .expect("fails over");
    assert_eq!(offers_for(&harness.allocate(), failover_conn).len(), 1);

    // Failing over with the flag keeps it suppressed.
    let suppressed_conn = harness.conn();
    let now = harness.now();
    harness
        .master
        .subscribe(now, suppressed_conn, info, true)
        .expect("fails over suppressed");
    assert!(offers_for(&harness.allocate(), suppressed_conn).is_empty());
    let state = harness.master.state();
    assert!(
        state
            .frameworks
            .iter()
            .all(|framework| framework.suppressed)
    );
}
