//! Many sim agents in one process against the real master, touching neither Docker nor disk.

use std::time::Duration;

use agora_agent::{AgentConfig, RuntimeKind, SIM_DURATION_LABEL};
use agora_proto::v1::TaskState;
use agora_proto::{AgentId, OfferId, Resources, TaskId};
use agora_sdk::TaskBuilder;
use agora_tests::{DEFAULT_TIMEOUT, TestCluster, eventually};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn sim_agents_register_run_finish_and_kill_tasks() -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let shutdown = CancellationToken::new();
    let mut agents = Vec::new();
    for index in 0..20 {
        let mut config = AgentConfig::new(cluster.master_url());
        config.runtime = Some(RuntimeKind::Sim);
        config.hostname = format!("sim-{index}");
        config.resource_overrides = Resources::parse("cpus:2;mem:2048;ports:[31000-31009]")?;
        agents.push(agora_agent::spawn(config, shutdown.clone()).await?);
    }
    eventually("20 agents registered", DEFAULT_TIMEOUT, || async {
        let state = cluster.state().await?;
        Ok((state.agents.len() == 20).then_some(()))
    })
    .await?;

    let mut framework = cluster.start_framework("sim", &[]).await?;
    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let offer = &offers[0];
    let quick = TaskBuilder::new("quick")
        .cpus(0.5)
        .mem(64.0)
        .label(SIM_DURATION_LABEL, "0.2")
        .build(offer)?;
    let forever = TaskBuilder::new("forever")
        .cpus(0.5)
        .mem(64.0)
        .build(offer)?;
    framework
        .driver
        .launch(
            OfferId::new(offer.id.clone()),
            vec![quick.clone(), forever.clone()],
        )
        .await?;
    let quick_id = TaskId::new(quick.task_id.clone());
    let forever_id = TaskId::new(forever.task_id.clone());
    framework
        .expect_update(&quick_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    let finished = framework
        .expect_update(&quick_id, TaskState::TaskFinished, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(finished.exit_code, Some(0));
    framework
        .expect_update(&forever_id, TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    framework
        .expect_no_event(
            "forever task ending by itself",
            |event| matches!(event, agora_sdk::DriverEvent::Update(s) if s.task_id == forever_id.as_str() && agora_proto::is_terminal(s.state())),
            Duration::from_millis(500),
        )
        .await?;
    framework
        .driver
        .kill(&forever_id, &AgentId::new(offer.agent_id.clone()))
        .await?;
    framework
        .expect_update(&forever_id, TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;

    shutdown.cancel();
    for agent in agents {
        agent.wait().await?;
    }
    Ok(())
}
