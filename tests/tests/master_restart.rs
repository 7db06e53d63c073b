//! A master restarted on the same work dir takes agents and frameworks back without killing
//! anything, and reconciliation reports the tasks still running.

use agora_proto::v1::{TaskState, master_message};
use agora_proto::{OfferId, TaskId};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::{AgentSpec, DEFAULT_TIMEOUT, TestCluster, eventually};
use std::time::Duration;

#[tokio::test]
async fn restarted_master_recovers_agents_frameworks_and_running_tasks() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_default().await?;
    let mut agent = cluster
        .add_agent(AgentSpec::new(
            "host-a",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;
    let mut framework = cluster.start_framework("survivor", &[]).await?;
    let framework_id = framework.framework_id.clone();

    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let task = TaskBuilder::new("long")
        .cpus(1.0)
        .mem(128.0)
        .ports(1)
        .shell("sleep 1000")
        .build(&offers[0])?;
    let task_id = TaskId::new(task.task_id.clone());
    framework
        .driver
        .launch(OfferId::new(offers[0].id.clone()), vec![task.clone()])
        .await?;
    agent.expect_launch(DEFAULT_TIMEOUT).await?;
    let uuid = agent
        .send_status(&framework_id, &task_id, TaskState::TaskRunning)
        .await?;
    framework
        .expect_update(&task_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    agent.expect_ack(&uuid, DEFAULT_TIMEOUT).await?;
    let agent_id = agent.agent_id();

    cluster.restart_master().await?;

    // The agent comes back with its running task and keeps its id.
    let running = agent.running_task(&framework_id, &task);
    let reregistered_id = agent
        .reregister(&cluster.master_url(), vec![running])
        .await?;
    assert_eq!(reregistered_id, agent_id);

    // The driver notices the lost stream and re-subscribes with the same framework id.
    framework
        .expect_event(
            |event| matches!(event, DriverEvent::Disconnected { .. }).then_some(()),
            DEFAULT_TIMEOUT,
        )
        .await?;
    let resubscribed = framework
        .expect_event(
            |event| match event {
                DriverEvent::Subscribed {
                    framework_id,
                    reconnected: true,
                } => Some(framework_id.clone()),
                _ => None,
            },
            DEFAULT_TIMEOUT,
        )
        .await?;
    assert_eq!(resubscribed, framework_id);
    assert_eq!(framework.driver.framework_id(), Some(framework_id.clone()));

    // Implicit reconciliation reports the task as still running (no uuid: nothing to ack).
    framework.driver.reconcile(Vec::new()).await?;
    let reconciled = framework
        .expect_update(&task_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    assert!(
        reconciled.uuid.is_empty(),
        "reconciliation updates carry no uuid"
    );

    let state = cluster.state().await?;
    assert!(
        state.frameworks.iter().any(|entry| {
            entry.connected
                && entry
                    .info
                    .as_ref()
                    .is_some_and(|info| info.id == framework_id.as_str())
        }),
        "framework connected again: {:?}",
        state.frameworks
    );
    let entry = state
        .tasks
        .iter()
        .find(|entry| {
            entry
                .task
                .as_ref()
                .is_some_and(|t| t.task_id == task_id.as_str())
        })
        .expect("task still known after the restart");
    assert_eq!(
        entry.latest_status.as_ref().map(|status| status.state()),
        Some(TaskState::TaskRunning)
    );
    eventually("agent active again", DEFAULT_TIMEOUT, || async {
        let state = cluster.state().await?;
        Ok(state
            .agents
            .iter()
            .any(|entry| {
                entry.status == "active"
                    && entry
                        .info
                        .as_ref()
                        .is_some_and(|info| info.id == agent_id.as_str())
            })
            .then_some(()))
    })
    .await?;

    // Nothing was killed by the failover.
    agent
        .expect_none(
            "no kill after a master restart",
            Duration::from_millis(300),
            |message| {
                matches!(
                    message,
                    master_message::Message::KillTask(_)
                        | master_message::Message::ShutdownFramework(_)
                )
            },
        )
        .await?;
    Ok(())
}
