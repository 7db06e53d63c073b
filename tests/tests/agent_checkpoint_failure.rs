//! The real agent (process runtime) whose checkpoint directory breaks under it: a checkpoint
//! write that fails stops the agent with an error, before it reports or launches anything that
//! depended on the state it could not save.

mod agent_support;

use agent_support::fake_master::FakeMaster;
use agent_support::{agent_config, resources_with_ports, start_agent};
use agora_agent::RuntimeKind;
use agora_proto::Resources;
use agora_proto::v1::{self, CommandInfo, agent_message, master_message};
use agora_tests::DEFAULT_TIMEOUT;
use std::time::Duration;

#[tokio::test]
async fn a_failed_checkpoint_write_stops_the_agent_before_it_reports_or_launches()
-> anyhow::Result<()> {
    let mut master = FakeMaster::start(1.0).await?;
    let work_dir = tempfile::tempdir()?;
    let config = agent_config(
        &master.url(),
        RuntimeKind::Process,
        &resources_with_ports(1),
        work_dir.path(),
    );
    let agent = start_agent(config).await?;
    master.wait_connected(DEFAULT_TIMEOUT).await?;

    // A file where the task checkpoints go: creating a task's directory fails, even for root.
    let tasks_dir = work_dir.path().join("meta").join("framework_tasks");
    std::fs::remove_dir_all(&tasks_dir)?;
    std::fs::write(&tasks_dir, b"not a directory")?;

    let marker = work_dir.path().join("launched");
    master
        .send(master_message::Message::LaunchTasks(v1::LaunchTasks {
            framework_id: "fw-checkpoint".to_owned(),
            tasks: vec![v1::TaskInfo {
                task_id: "unsaved".to_owned(),
                name: "unsaved".to_owned(),
                resources: Resources::cpus_mem(0.1, 16.0).to_proto(),
                command: Some(CommandInfo {
                    shell: true,
                    value: format!("touch {}; sleep 60", marker.display()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }))
        .await?;

    let stopped = tokio::time::timeout(DEFAULT_TIMEOUT, agent.wait()).await?;
    let error = stopped.expect_err("the agent stops when it cannot checkpoint a task");
    let message = error.to_string();
    assert!(
        message.contains("cannot checkpoint task fw-checkpoint/unsaved"),
        "the error names what could not be saved: {message}"
    );

    // Its connection is gone and it never told the master about the task.
    let update = master
        .expect("any status update", Duration::from_secs(2), |message| {
            matches!(message, agent_message::Message::StatusUpdate(_)).then_some(())
        })
        .await;
    assert!(update.is_err(), "no update of an unsaved task was sent");
    assert!(!marker.exists(), "the task was never launched");
    Ok(())
}
