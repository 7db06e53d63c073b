//! An agent that stops heartbeating: offers rescinded, tasks reported by partition awareness.

use agora_proto::v1::{self, FrameworkCapability, TaskState};
use agora_proto::{OfferId, TaskId};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::{AgentSpec, DEFAULT_TIMEOUT, TestCluster, eventually};

async fn agent_stops_heartbeating(
    capabilities: &[FrameworkCapability],
    expected: TaskState,
) -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let mut agent = cluster
        .add_agent(AgentSpec::new(
            "host-a",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;
    let mut framework = cluster.start_framework("partition", capabilities).await?;

    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let first_offer = &offers[0];
    let task = TaskBuilder::new("runner")
        .cpus(0.5)
        .mem(64.0)
        .shell("sleep 1000")
        .build(first_offer)?;
    let task_id = TaskId::new(task.task_id.clone());
    // Refuse nothing, so the rest of the agent comes back as a new outstanding offer.
    framework
        .driver
        .accept(
            vec![OfferId::new(first_offer.id.clone())],
            vec![task],
            v1::Filters {
                refuse_seconds: Some(0.0),
            },
        )
        .await?;
    agent.expect_launch(DEFAULT_TIMEOUT).await?;
    agent
        .send_status(&framework.framework_id, &task_id, TaskState::TaskRunning)
        .await?;
    framework
        .expect_update(&task_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    let rest_offer = framework
        .expect_event(
            |event| match event {
                DriverEvent::Offers(offers) => offers
                    .iter()
                    .find(|offer| offer.id != first_offer.id)
                    .cloned(),
                _ => None,
            },
            DEFAULT_TIMEOUT,
        )
        .await?;

    agent.stop_heartbeats();

    let rescinded = framework
        .expect_event(
            |event| match event {
                DriverEvent::Rescind(offer_id) => Some(offer_id.clone()),
                _ => None,
            },
            DEFAULT_TIMEOUT,
        )
        .await?;
    assert_eq!(rescinded.as_str(), rest_offer.id);
    let update = framework
        .expect_update(&task_id, expected, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(update.agent_id, agent.agent_id().as_str());
    assert_eq!(update.reason(), v1::TaskReason::ReasonAgentUnreachable);

    let agent_id = agent.agent_id();
    eventually("agent shown unreachable", DEFAULT_TIMEOUT, || async {
        let state = cluster.state().await?;
        let status = state
            .agents
            .iter()
            .find(|entry| {
                entry
                    .info
                    .as_ref()
                    .is_some_and(|info| info.id == agent_id.as_str())
            })
            .map(|entry| entry.status.clone());
        Ok((status.as_deref() == Some("unreachable")).then_some(()))
    })
    .await?;
    assert!(
        cluster.state().await?.offers.is_empty(),
        "no offer left on the lost agent"
    );
    Ok(())
}

#[tokio::test]
async fn partition_aware_framework_gets_task_unreachable() -> anyhow::Result<()> {
    agent_stops_heartbeating(
        &[FrameworkCapability::PartitionAware],
        TaskState::TaskUnreachable,
    )
    .await
}

#[tokio::test]
async fn other_frameworks_get_task_lost() -> anyhow::Result<()> {
    agent_stops_heartbeating(&[], TaskState::TaskLost).await
}
