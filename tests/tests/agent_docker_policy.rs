//! The agent's launch policy with the real Docker Engine, driven by a scripted master that
//! sends what a real master might let through: host paths are mounted only under
//! `--allow-host-path` (after resolving `..`), privileged only with `--allow-privileged`.
//! Skipped (with a printed line) without Docker, unless `AGORA_REQUIRE_DOCKER=1`.

mod agent_support;

use std::time::Duration;

use agent_support::fake_master::{FAKE_AGENT_ID, FakeMaster};
use agent_support::{agent_config, remove_agent_containers, resources_with_ports, start_agent};
use agora_agent::RuntimeKind;
use agora_proto::Resources;
use agora_proto::v1::{self, CommandInfo, ContainerInfo, TaskReason, TaskState, master_message};
use agora_tests::docker_image::{docker_or_skip, ensure_test_image};
use agora_tests::{DEFAULT_TIMEOUT, eventually};

const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

fn task(task_id: &str, image: &str, script: &str, container: ContainerInfo) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: task_id.to_owned(),
        name: task_id.to_owned(),
        resources: Resources::cpus_mem(0.1, 16.0).to_proto(),
        command: Some(CommandInfo {
            shell: true,
            value: script.to_owned(),
            ..Default::default()
        }),
        container: Some(ContainerInfo {
            image: image.to_owned(),
            ..container
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn host_paths_mount_only_under_allowed_roots_and_privileged_needs_the_flag()
-> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("agent_docker_policy").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let mut master = FakeMaster::start(1.0).await?;
    let work_dir = tempfile::tempdir()?;
    let shared = tempfile::tempdir()?;
    let allowed = shared.path().join("allowed");
    std::fs::create_dir_all(allowed.join("data"))?;
    let mut config = agent_config(
        &master.url(),
        RuntimeKind::Docker,
        &resources_with_ports(1),
        work_dir.path(),
    );
    config.allowed_host_paths = vec![allowed.clone()];
    let agent = start_agent(config).await?;
    master.wait_connected(DEFAULT_TIMEOUT).await?;
    let framework = format!("fw-policy-{}", uuid::Uuid::new_v4().simple());
    let launch = |task: v1::TaskInfo| {
        master_message::Message::LaunchTasks(v1::LaunchTasks {
            framework_id: framework.clone(),
            tasks: vec![task],
        })
    };

    // Under the allowed root, with a `..` that stays inside it: mounted, and writable.
    let inside = format!("{}/data/../data:/data", allowed.display());
    master
        .send(launch(task(
            "writer",
            &image,
            "echo written > /data/proof",
            ContainerInfo {
                volumes: vec![inside],
                ..Default::default()
            },
        )))
        .await?;
    master
        .expect_update(
            &framework,
            "writer",
            TaskState::TaskFinished,
            LAUNCH_TIMEOUT,
        )
        .await?;
    let proof = std::fs::read_to_string(allowed.join("data/proof"))?;
    assert_eq!(proof, "written\n");

    // A `..` climbing out of the allowed root is refused, naming the volume and the path.
    let escape = format!("{}/../escaped:/data", allowed.display());
    master
        .send(launch(task(
            "escaper",
            &image,
            "echo escaped > /data/proof",
            ContainerInfo {
                volumes: vec!["/tmp:/tmp:ro".to_owned(), escape],
                ..Default::default()
            },
        )))
        .await?;
    let refused = master
        .expect_update(&framework, "escaper", TaskState::TaskError, DEFAULT_TIMEOUT)
        .await?;
    assert_eq!(refused.reason(), TaskReason::ReasonTaskInvalid);
    assert!(
        refused.message.starts_with("container.volumes[0]:"),
        "/tmp is not allowed either: {refused:?}"
    );
    assert!(!shared.path().join("escaped").exists());

    let escape_only = format!("{}/../escaped:/data", allowed.display());
    master
        .send(launch(task(
            "escaper-2",
            &image,
            "echo escaped > /data/proof",
            ContainerInfo {
                volumes: vec![escape_only],
                ..Default::default()
            },
        )))
        .await?;
    let refused = master
        .expect_update(
            &framework,
            "escaper-2",
            TaskState::TaskError,
            DEFAULT_TIMEOUT,
        )
        .await?;
    let normalised = format!("host path {}/escaped", shared.path().display());
    assert!(
        refused.message.starts_with("container.volumes[0]:")
            && refused.message.contains(&normalised),
        "{refused:?}"
    );

    // Privileged without --allow-privileged.
    master
        .send(launch(task(
            "privileged",
            &image,
            "true",
            ContainerInfo {
                privileged: true,
                ..Default::default()
            },
        )))
        .await?;
    let refused = master
        .expect_update(
            &framework,
            "privileged",
            TaskState::TaskError,
            DEFAULT_TIMEOUT,
        )
        .await?;
    assert!(
        refused.message.starts_with("container.privileged:"),
        "{refused:?}"
    );

    // None of the refused tasks left a container behind.
    eventually(
        "only the writer's container exists",
        DEFAULT_TIMEOUT,
        || async {
            let snapshot = agent.snapshot().await;
            Ok(snapshot
                .filter(|s| s.tasks.iter().all(|t| t.task_id == "writer"))
                .map(|_| ()))
        },
    )
    .await?;
    agent.shutdown().await?;
    remove_agent_containers(&docker, FAKE_AGENT_ID).await;
    Ok(())
}
