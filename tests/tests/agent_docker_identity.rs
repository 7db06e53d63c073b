//! Task identity in the Docker runtime, against the real Docker Engine and the real master: a
//! task id is unique only within its framework, container names are injective, and a launch
//! never removes a container it does not own. Skipped (with a printed line) without Docker,
//! unless `AGORA_REQUIRE_DOCKER=1`.

mod agent_support;

use std::collections::HashMap;
use std::time::Duration;

use agent_support::{
    agent_config, patient_cluster, remove_agent_containers, resources_with_ports, start_agent,
};
use agora_agent::{LABEL_FRAMEWORK_ID, LABEL_TASK_ID, RuntimeKind, container_name};
use agora_proto::v1::{self, TaskState};
use agora_proto::{AgentId, OfferId, TaskId};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::docker_image::{docker_or_skip, ensure_test_image};
use agora_tests::{DEFAULT_TIMEOUT, TestFramework};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

fn sleeper(image: &str, task_id: &str) -> TaskBuilder {
    TaskBuilder::new("identity")
        .task_id(TaskId::new(task_id))
        .cpus(0.1)
        .mem(16.0)
        .image(image.to_owned())
        .shell("trap 'exit 0' TERM; while true; do sleep 0.2; done")
}

/// Launches `builders` on the framework's next offer, in one accept.
async fn launch_all(
    framework: &mut TestFramework,
    builders: &[TaskBuilder],
) -> anyhow::Result<Vec<v1::TaskInfo>> {
    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let mut tasks = Vec::new();
    for builder in builders {
        tasks.push(builder.build(&offers[0])?);
    }
    framework
        .driver
        .launch(OfferId::new(offers[0].id.clone()), tasks.clone())
        .await?;
    framework.forget_offers();
    Ok(tasks)
}

async fn container_running(docker: &bollard::Docker, container_id: &str) -> anyhow::Result<bool> {
    let inspect = docker.inspect_container(container_id, None).await?;
    Ok(inspect.state.and_then(|s| s.running).unwrap_or(false))
}

async fn labels(
    docker: &bollard::Docker,
    container_id: &str,
) -> anyhow::Result<(String, HashMap<String, String>)> {
    let inspect = docker.inspect_container(container_id, None).await?;
    let name = inspect.name.unwrap_or_default();
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    Ok((name, labels))
}

#[tokio::test]
async fn two_frameworks_with_the_same_task_ids_and_colliding_names_each_get_their_own_container()
-> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("agent_docker_identity").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let cluster = patient_cluster().await?;
    let work_dir = tempfile::tempdir()?;
    let agent = start_agent(agent_config(
        &cluster.master_url(),
        RuntimeKind::Docker,
        &resources_with_ports(1),
        work_dir.path(),
    ))
    .await?;
    let mut framework_a = cluster.start_framework("identity-a", &[]).await?;
    // Unique per run, so concurrent runs on the same engine never meet.
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Task ids may not hold '/' (agora-proto limits); ':' and '_' both fall outside Docker's name
    // alphabet, so a naive name mapping would give these two the same container.
    let colon_id = format!("{run}:a:b");
    let underscore_id = format!("{run}_a_b");

    launch_all(
        &mut framework_a,
        &[sleeper(&image, &colon_id), sleeper(&image, &underscore_id)],
    )
    .await?;
    // B subscribes only now: an offer of the whole agent to B would leave A none to launch on.
    let mut framework_b = cluster.start_framework("identity-b", &[]).await?;
    launch_all(&mut framework_b, &[sleeper(&image, &colon_id)]).await?;

    let colon = TaskId::new(colon_id.clone());
    let underscore = TaskId::new(underscore_id.clone());
    let a_colon = framework_a
        .expect_update(&colon, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    let a_underscore = framework_a
        .expect_update(&underscore, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    let b_colon = framework_b
        .expect_update(&colon, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    let agent_id = AgentId::new(a_colon.agent_id.clone());

    // Three containers, three names, each labelled with its own framework and task.
    let expected = [
        (&a_colon, &framework_a, &colon),
        (&a_underscore, &framework_a, &underscore),
        (&b_colon, &framework_b, &colon),
    ];
    let mut names = Vec::new();
    for (status, framework, task_id) in expected {
        assert!(container_running(&docker, &status.container_id).await?);
        let (name, labels) = labels(&docker, &status.container_id).await?;
        assert_eq!(
            name,
            format!("/{}", container_name(&framework.framework_id, task_id))
        );
        assert_eq!(
            labels.get(LABEL_FRAMEWORK_ID).map(String::as_str),
            Some(framework.framework_id.as_str())
        );
        assert_eq!(
            labels.get(LABEL_TASK_ID).map(String::as_str),
            Some(task_id.as_str())
        );
        names.push(name);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "injective names: {names:?}");

    // Killing framework B's task leaves framework A's task of the same id running.
    framework_b.driver.kill(&colon, &agent_id).await?;
    let b_killed = framework_b
        .expect_update(&colon, TaskState::TaskKilled, LAUNCH_TIMEOUT)
        .await?;
    assert_eq!(b_killed.container_id, b_colon.container_id);
    assert!(!container_running(&docker, &b_colon.container_id).await?);
    assert!(container_running(&docker, &a_colon.container_id).await?);
    // Killing `_a_b` leaves `:a:b` running too.
    framework_a.driver.kill(&underscore, &agent_id).await?;
    framework_a
        .expect_update(&underscore, TaskState::TaskKilled, LAUNCH_TIMEOUT)
        .await?;
    assert!(container_running(&docker, &a_colon.container_id).await?);
    // Framework A's `:a:b` task never left RUNNING meanwhile (its STARTING and RUNNING
    // updates are still in the inbox; anything else would be a stray).
    let colon_text = colon_id.clone();
    framework_a
        .expect_no_event(
            "an update of framework A's :a:b task",
            |event| {
                matches!(event, DriverEvent::Update(status)
                    if status.task_id == colon_text
                        && !matches!(status.state(), TaskState::TaskStarting | TaskState::TaskRunning))
            },
            Duration::from_millis(300),
        )
        .await?;

    framework_a.driver.kill(&colon, &agent_id).await?;
    framework_a
        .expect_update(&colon, TaskState::TaskKilled, LAUNCH_TIMEOUT)
        .await?;
    agent.shutdown().await?;
    remove_agent_containers(&docker, agent_id.as_str()).await;
    Ok(())
}

#[tokio::test]
async fn a_launch_never_removes_a_container_of_its_name_that_it_does_not_own() -> anyhow::Result<()>
{
    let Some(docker) = docker_or_skip("agent_docker_identity_squatter").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let cluster = patient_cluster().await?;
    let work_dir = tempfile::tempdir()?;
    let agent = start_agent(agent_config(
        &cluster.master_url(),
        RuntimeKind::Docker,
        &resources_with_ports(1),
        work_dir.path(),
    ))
    .await?;
    let mut framework = cluster.start_framework("identity-squat", &[]).await?;
    let task_id = TaskId::new(format!("squat-{}", uuid::Uuid::new_v4().simple()));
    // Someone else's container already has the name the task would get.
    let name = container_name(&framework.framework_id, &task_id);
    let squatter = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["sleep".to_owned(), "60".to_owned()]),
                ..Default::default()
            },
        )
        .await?;
    docker.start_container(&squatter.id, None).await?;

    launch_all(&mut framework, &[sleeper(&image, task_id.as_str())]).await?;
    let failed = framework
        .expect_update(&task_id, TaskState::TaskFailed, LAUNCH_TIMEOUT)
        .await?;
    assert!(
        failed
            .message
            .contains("is taken by a container this task does not own"),
        "{failed:?}"
    );
    assert!(
        container_running(&docker, &squatter.id).await?,
        "the squatter was left alone"
    );

    let _ = docker
        .remove_container(
            &squatter.id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    let agent_id = agent.snapshot().await.and_then(|s| s.agent_id);
    agent.shutdown().await?;
    if let Some(agent_id) = agent_id {
        remove_agent_containers(&docker, &agent_id).await;
    }
    Ok(())
}
