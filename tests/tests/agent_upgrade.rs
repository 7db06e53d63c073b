//! An agent restarted over a checkpoint written by an older agent, which keyed tasks by task
//! id alone (`meta/tasks/<dir>`): the running task is recovered, re-registered under its
//! framework and still killable. Process runtime, scripted master.

mod agent_support;

use agent_support::fake_master::FakeMaster;
use agent_support::{agent_config, resources_with_ports, start_agent};
use agora_agent::{RuntimeKind, TaskKey, task_name};
use agora_proto::v1::{self, CommandInfo, TaskState, agent_message, master_message};
use agora_proto::{FrameworkId, Resources, TaskId};
use agora_tests::{DEFAULT_TIMEOUT, eventually};

#[tokio::test]
async fn a_running_task_in_the_task_id_only_checkpoint_layout_survives_an_upgrade_restart()
-> anyhow::Result<()> {
    let mut master = FakeMaster::start(1.0).await?;
    let work_dir = tempfile::tempdir()?;
    let config = agent_config(
        &master.url(),
        RuntimeKind::Process,
        &resources_with_ports(1),
        work_dir.path(),
    );
    let agent = start_agent(config.clone()).await?;
    master.wait_connected(DEFAULT_TIMEOUT).await?;
    let task = v1::TaskInfo {
        task_id: "web/1".to_owned(),
        name: "web".to_owned(),
        resources: Resources::cpus_mem(0.1, 16.0).to_proto(),
        command: Some(CommandInfo {
            shell: true,
            value: "exec sleep 60".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    master
        .send(master_message::Message::LaunchTasks(v1::LaunchTasks {
            framework_id: "fw".to_owned(),
            tasks: vec![task],
        }))
        .await?;
    let running = master
        .expect_update("fw", "web/1", TaskState::TaskRunning, DEFAULT_TIMEOUT)
        .await?;
    eventually("RUNNING acknowledged", DEFAULT_TIMEOUT, || async {
        let snapshot = agent.snapshot().await;
        Ok(snapshot
            .filter(|s| s.tasks.iter().all(|t| t.pending_updates == 0))
            .map(|_| ()))
    })
    .await?;
    agent.shutdown().await?;

    // Rewrite the checkpoint as an older agent would have laid it out.
    let meta = work_dir.path().join("meta");
    let key = TaskKey::new(FrameworkId::new("fw"), TaskId::new("web/1"));
    let legacy_dir = meta.join("tasks").join("x7765622f31");
    std::fs::create_dir_all(meta.join("tasks"))?;
    std::fs::rename(
        meta.join("framework_tasks").join(task_name(&key)),
        &legacy_dir,
    )?;

    let agent = start_agent(config).await?;
    master.wait_connected(DEFAULT_TIMEOUT).await?;
    let reregistered = master
        .expect("Reregister", DEFAULT_TIMEOUT, |message| match message {
            agent_message::Message::Reregister(reregister) => Some(reregister.clone()),
            _ => None,
        })
        .await?;
    let reported: Vec<(String, String, TaskState)> = reregistered
        .tasks
        .iter()
        .map(|t| {
            let status = t.latest_status.clone().unwrap_or_default();
            (
                t.framework_id.clone(),
                status.task_id.clone(),
                status.state(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        vec![("fw".to_owned(), "web/1".to_owned(), TaskState::TaskRunning)]
    );
    assert!(!legacy_dir.exists(), "moved into the new layout");
    let snapshot = agent.snapshot().await.expect("the agent runs");
    assert_eq!(snapshot.tasks.len(), 1);
    assert_eq!(
        snapshot.tasks[0].container_id.as_deref(),
        Some(running.container_id.as_str()),
        "the same process, adopted"
    );

    master
        .send(master_message::Message::KillTask(v1::KillTask {
            framework_id: "fw".to_owned(),
            task_id: "web/1".to_owned(),
            grace_period_seconds: Some(1.0),
        }))
        .await?;
    master
        .expect_update("fw", "web/1", TaskState::TaskKilled, DEFAULT_TIMEOUT)
        .await?;
    agent.shutdown().await?;
    Ok(())
}
