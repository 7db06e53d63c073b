//! A task's life through the master: launch, status updates, acknowledgements back to the
//! agent, resources freed at the end.

use agora_proto::v1::TaskState;
use agora_proto::{OfferId, Resources, TaskId};
use agora_sdk::TaskBuilder;
use agora_tests::{AgentSpec, DEFAULT_TIMEOUT, TestCluster, eventually};

#[tokio::test]
async fn task_goes_staging_running_finished_and_acknowledgements_reach_the_agent()
-> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let mut agent = cluster
        .add_agent(AgentSpec::new(
            "host-a",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;
    let mut framework = cluster.start_framework("lifecycle", &[]).await?;

    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let offer = &offers[0];
    assert_eq!(offer.agent_id, agent.agent_id().as_str());
    assert_eq!(offer.framework_id, framework.framework_id.as_str());
    let task = TaskBuilder::new("sleeper")
        .cpus(0.5)
        .mem(64.0)
        .ports(1)
        .shell("sleep 1")
        .build(offer)?;
    let task_id = TaskId::new(task.task_id.clone());
    let launched = framework
        .driver
        .launch(OfferId::new(offer.id.clone()), vec![task.clone()])
        .await?;
    assert_eq!(launched, vec![task_id.clone()]);

    let launch = agent.expect_launch(DEFAULT_TIMEOUT).await?;
    assert_eq!(launch.framework_id, framework.framework_id.as_str());
    assert_eq!(launch.tasks.len(), 1);
    assert_eq!(launch.tasks[0].task_id, task_id.as_str());
    assert_eq!(launch.tasks[0].resources, task.resources);

    // Before the agent reports anything the master knows the task as STAGING.
    let state = cluster.state().await?;
    let entry = state
        .tasks
        .iter()
        .find(|entry| {
            entry
                .task
                .as_ref()
                .is_some_and(|t| t.task_id == task_id.as_str())
        })
        .expect("launched task is in the state");
    assert_eq!(
        entry.latest_status.as_ref().map(|status| status.state()),
        Some(TaskState::TaskStaging)
    );
    let used = Resources::from_proto(&state.agents[0].used)?;
    assert_eq!(used.cpus(), 0.5);

    for state in [TaskState::TaskRunning, TaskState::TaskFinished] {
        let uuid = agent
            .send_status(&framework.framework_id, &task_id, state)
            .await?;
        let update = framework
            .expect_update(&task_id, state, DEFAULT_TIMEOUT)
            .await?;
        assert_eq!(update.uuid, uuid);
        assert_eq!(update.agent_id, agent.agent_id().as_str());
        // The driver acknowledges automatically; the master forwards it to the agent.
        let ack = agent.expect_ack(&uuid, DEFAULT_TIMEOUT).await?;
        assert_eq!(ack.task_id, task_id.as_str());
        assert_eq!(ack.framework_id, framework.framework_id.as_str());
    }

    // The terminal update releases the task's resources.
    eventually("agent resources freed", DEFAULT_TIMEOUT, || async {
        let state = cluster.state().await?;
        let used = Resources::from_proto(&state.agents[0].used)?;
        Ok(used.is_empty().then_some(()))
    })
    .await?;
    let state = cluster.state().await?;
    if let Some(entry) = state.tasks.iter().find(|entry| {
        entry
            .task
            .as_ref()
            .is_some_and(|t| t.task_id == task_id.as_str())
    }) {
        assert_eq!(
            entry.latest_status.as_ref().map(|status| status.state()),
            Some(TaskState::TaskFinished)
        );
    }
    Ok(())
}
