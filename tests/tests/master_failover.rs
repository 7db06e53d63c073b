//! Framework failover keeps tasks; teardown kills them.

use std::time::Duration;

use agora_proto::v1::{TaskState, master_message};
use agora_proto::{OfferId, TaskId};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::{AgentSpec, DEFAULT_TIMEOUT, TestCluster, TestFramework, eventually};

#[tokio::test]
async fn failover_keeps_tasks_and_teardown_kills_them() -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let mut agent = cluster
        .add_agent(AgentSpec::new(
            "host-a",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;
    let mut original = cluster.start_framework("failing-over", &[]).await?;
    let framework_id = original.framework_id.clone();

    let offers = original.expect_offers(DEFAULT_TIMEOUT).await?;
    let task = TaskBuilder::new("kept")
        .cpus(0.5)
        .mem(64.0)
        .shell("sleep 1000")
        .build(&offers[0])?;
    let task_id = TaskId::new(task.task_id.clone());
    original
        .driver
        .launch(OfferId::new(offers[0].id.clone()), vec![task])
        .await?;
    agent.expect_launch(DEFAULT_TIMEOUT).await?;
    agent
        .send_status(&framework_id, &task_id, TaskState::TaskRunning)
        .await?;
    original
        .expect_update(&task_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;

    // A second scheduler subscribes with the same id: it takes over.
    let mut info = TestFramework::info("failing-over", &[]);
    info.id = framework_id.to_string();
    let mut successor =
        TestFramework::start(TestFramework::config(&cluster.master_url(), info)).await?;
    assert_eq!(successor.framework_id, framework_id);

    // The first stream is closed: the old driver reports it and stops instead of fighting back.
    original
        .expect_event(
            |event| matches!(event, DriverEvent::Error(_)).then_some(()),
            DEFAULT_TIMEOUT,
        )
        .await?;
    eventually("old driver stopped", DEFAULT_TIMEOUT, || async {
        Ok((!original.driver.is_running()).then_some(()))
    })
    .await?;
    assert!(matches!(
        original.driver.revive().await,
        Err(agora_sdk::SdkError::NotSubscribed)
    ));

    // The task survived the failover.
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
        .expect("task kept across the failover");
    assert_eq!(
        entry.latest_status.as_ref().map(|status| status.state()),
        Some(TaskState::TaskRunning)
    );
    agent
        .expect_none(
            "no kill on failover",
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
    successor.driver.reconcile(Vec::new()).await?;
    successor
        .expect_update(&task_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;

    // Teardown removes the framework and kills its task on the agent.
    successor.driver.teardown().await?;
    agent
        .expect_kill_or_shutdown(&framework_id, &task_id, DEFAULT_TIMEOUT)
        .await?;
    eventually("framework gone from the state", DEFAULT_TIMEOUT, || async {
        let state = cluster.state().await?;
        let still_active = state.frameworks.iter().any(|entry| {
            entry.active
                && entry
                    .info
                    .as_ref()
                    .is_some_and(|info| info.id == framework_id.as_str())
        });
        Ok((!still_active).then_some(()))
    })
    .await?;
    // A removed framework may not come back.
    let mut info = TestFramework::info("failing-over", &[]);
    info.id = framework_id.to_string();
    let error = TestFramework::start(TestFramework::config(&cluster.master_url(), info))
        .await
        .expect_err("a torn-down framework cannot subscribe again");
    assert!(error.to_string().contains("Subscribed"), "{error:#}");
    Ok(())
}
