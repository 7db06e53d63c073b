//! The agent with the Docker runtime against the real Docker Engine and the real master.
//! Skipped (with a printed line) without Docker, unless `AGORA_REQUIRE_DOCKER=1`.

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::{
    agent_config, http_get_raw, launch, patient_cluster, remove_agent_containers,
    resources_with_ports, start_agent,
};
use agora_agent::{AgentHandle, RuntimeKind};
use agora_proto::v1::{HealthCheck, HealthCheckProtocol, TaskReason, TaskState};
use agora_proto::{AgentId, TaskId};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::docker_image::{docker_or_skip, ensure_test_image};
use agora_tests::{DEFAULT_TIMEOUT, TestCluster, TestFramework, eventually};

const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

struct DockerSetup {
    docker: bollard::Docker,
    image: String,
    cluster: TestCluster,
    agent: AgentHandle,
    framework: TestFramework,
    _work_dir: tempfile::TempDir,
}

async fn setup(test: &str, ports: usize) -> anyhow::Result<Option<DockerSetup>> {
    let Some(docker) = docker_or_skip(test).await else {
        return Ok(None);
    };
    let image = ensure_test_image(&docker).await?;
    let cluster = patient_cluster().await?;
    let work_dir = tempfile::tempdir()?;
    let agent = start_agent(agent_config(
        &cluster.master_url(),
        RuntimeKind::Docker,
        &resources_with_ports(ports),
        work_dir.path(),
    ))
    .await?;
    let framework = cluster.start_framework(test, &[]).await?;
    Ok(Some(DockerSetup {
        docker,
        image,
        cluster,
        agent,
        framework,
        _work_dir: work_dir,
    }))
}

async fn teardown(setup: DockerSetup) -> anyhow::Result<()> {
    let agent_id = setup.agent.snapshot().await.and_then(|s| s.agent_id);
    setup.agent.shutdown().await?;
    if let Some(agent_id) = agent_id {
        remove_agent_containers(&setup.docker, &agent_id).await;
    }
    drop(setup.cluster);
    Ok(())
}

#[tokio::test]
async fn httpd_runs_with_cpu_and_memory_limits_and_answers_on_its_host_port() -> anyhow::Result<()>
{
    let Some(mut setup) = setup("agent_docker_httpd", 2).await? else {
        return Ok(());
    };
    let task = launch(
        &mut setup.framework,
        TaskBuilder::new("httpd")
            .cpus(0.5)
            .mem(64.0)
            .ports(1)
            .image(setup.image.clone())
            .shell("exec httpd -f -p $PORT0 -h /www"),
    )
    .await?;
    let task_id = TaskId::new(task.task_id.clone());
    let running = setup
        .framework
        .expect_update(&task_id, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;

    let inspect = setup
        .docker
        .inspect_container(&running.container_id, None)
        .await?;
    let host_config = inspect.host_config.expect("host config");
    assert_eq!(host_config.nano_cpus, Some(500_000_000));
    assert_eq!(host_config.memory, Some(67_108_864));
    let expected_name = format!(
        "/{}",
        agora_agent::container_name(&setup.framework.framework_id, &task_id)
    );
    assert_eq!(inspect.name.as_deref(), Some(expected_name.as_str()));
    assert!(expected_name.starts_with("/agora-"));
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(
        labels.get("agora.task_id").map(String::as_str),
        Some(task_id.as_str())
    );
    assert_eq!(
        labels.get("agora.framework_id").map(String::as_str),
        Some(setup.framework.framework_id.as_str())
    );
    assert_eq!(
        labels.get("agora.agent_id").map(String::as_str),
        Some(running.agent_id.as_str())
    );

    let snapshot = setup.agent.snapshot().await.expect("agent runs");
    let port = snapshot
        .tasks
        .iter()
        .find(|t| t.task_id == task_id.as_str())
        .expect("task in /state")
        .host_ports[0];
    let response = eventually(
        "httpd answers on its host port",
        DEFAULT_TIMEOUT,
        || async {
            Ok(http_get_raw(port as u16)
                .await
                .filter(|r| r.starts_with("HTTP/1")))
        },
    )
    .await?;
    assert!(response.contains("200"), "{response}");
    assert!(response.contains("hello from agora"), "{response}");

    setup
        .framework
        .driver
        .kill(&task_id, &AgentId::new(running.agent_id.clone()))
        .await?;
    setup
        .framework
        .expect_update(&task_id, TaskState::TaskKilled, LAUNCH_TIMEOUT)
        .await?;
    teardown(setup).await
}

#[tokio::test]
async fn exit_codes_fail_the_task_and_sigterm_gets_its_grace_period() -> anyhow::Result<()> {
    let Some(mut setup) = setup("agent_docker_exit_and_grace", 1).await? else {
        return Ok(());
    };
    let failing = launch(
        &mut setup.framework,
        TaskBuilder::new("exit3")
            .cpus(0.1)
            .mem(32.0)
            .image(setup.image.clone())
            .shell("exit 3"),
    )
    .await?;
    let failing_id = TaskId::new(failing.task_id.clone());
    let failed = setup
        .framework
        .expect_update(&failing_id, TaskState::TaskFailed, LAUNCH_TIMEOUT)
        .await?;
    assert_eq!(failed.exit_code, Some(3), "{failed:?}");
    assert_eq!(failed.reason(), TaskReason::ReasonCommandExited);
    assert!(failed.message.contains('3'), "{failed:?}");

    let trapper = launch(
        &mut setup.framework,
        TaskBuilder::new("trapper")
            .cpus(0.1)
            .mem(32.0)
            .image(setup.image.clone())
            .kill_grace(Duration::from_secs(10))
            .shell("trap 'sleep 2; exit 0' TERM; while true; do sleep 0.2; done"),
    )
    .await?;
    let trapper_id = TaskId::new(trapper.task_id.clone());
    let running = setup
        .framework
        .expect_update(&trapper_id, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    setup
        .framework
        .driver
        .kill(&trapper_id, &AgentId::new(running.agent_id.clone()))
        .await?;
    let killed = setup
        .framework
        .expect_update(&trapper_id, TaskState::TaskKilled, LAUNCH_TIMEOUT)
        .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the trap had its 2 s"
    );
    assert_eq!(
        killed.exit_code,
        Some(0),
        "the trap finished instead of being SIGKILLed: {killed:?}"
    );
    teardown(setup).await
}

#[tokio::test]
async fn health_goes_healthy_then_unhealthy_when_the_server_stops() -> anyhow::Result<()> {
    let Some(mut setup) = setup("agent_docker_health", 1).await? else {
        return Ok(());
    };
    let check = HealthCheck {
        protocol: HealthCheckProtocol::Http as i32,
        path: "/".into(),
        port_index: 0,
        grace_period_seconds: 10.0,
        interval_seconds: 0.5,
        timeout_seconds: 1.0,
        max_consecutive_failures: 2,
        ..Default::default()
    };
    let task = launch(
        &mut setup.framework,
        TaskBuilder::new("flaky")
            .cpus(0.1)
            .mem(32.0)
            .ports(1)
            .image(setup.image.clone())
            .health_check(check)
            .shell("httpd -f -p $PORT0 -h /www & pid=$!; sleep 4; kill $pid; sleep 600"),
    )
    .await?;
    let task_id = TaskId::new(task.task_id.clone());
    let wanted = task_id.to_string();
    let healthy = setup
        .framework
        .expect_event(
            |event| match event {
                DriverEvent::Update(status)
                    if status.task_id == wanted
                        && status.state() == TaskState::TaskRunning
                        && status.healthy == Some(true) =>
                {
                    Some(status.clone())
                }
                _ => None,
            },
            LAUNCH_TIMEOUT,
        )
        .await?;
    let unhealthy = setup
        .framework
        .expect_event(
            |event| match event {
                DriverEvent::Update(status)
                    if status.task_id == wanted && status.healthy == Some(false) =>
                {
                    Some(status.clone())
                }
                _ => None,
            },
            LAUNCH_TIMEOUT,
        )
        .await?;
    assert_eq!(unhealthy.state(), TaskState::TaskRunning);
    assert_eq!(unhealthy.reason(), TaskReason::ReasonHealthCheckFailed);
    assert!(unhealthy.timestamp > healthy.timestamp);
    teardown(setup).await
}

#[tokio::test]
async fn a_missing_image_fails_the_task_naming_the_image() -> anyhow::Result<()> {
    let Some(mut setup) = setup("agent_docker_missing_image", 1).await? else {
        return Ok(());
    };
    // A registry on a closed local port: the pull fails at once, no network needed.
    let image = format!(
        "127.0.0.1:9/agora/no-such-image:{}",
        uuid::Uuid::new_v4().simple()
    );
    let task = launch(
        &mut setup.framework,
        TaskBuilder::new("ghost")
            .cpus(0.1)
            .mem(16.0)
            .image(image.clone())
            .shell("true"),
    )
    .await?;
    let task_id = TaskId::new(task.task_id.clone());
    let failed = setup
        .framework
        .expect_update(&task_id, TaskState::TaskFailed, LAUNCH_TIMEOUT)
        .await?;
    assert_eq!(
        failed.reason(),
        TaskReason::ReasonImagePullFailed,
        "{failed:?}"
    );
    assert!(failed.message.contains(&image), "{failed:?}");
    teardown(setup).await
}

#[tokio::test]
async fn after_a_master_restart_the_agent_reregisters_with_its_running_tasks() -> anyhow::Result<()>
{
    let Some(mut setup) = setup("agent_docker_master_restart", 1).await? else {
        return Ok(());
    };
    let task = launch(
        &mut setup.framework,
        TaskBuilder::new("steady")
            .cpus(0.1)
            .mem(32.0)
            .image(setup.image.clone())
            .shell("sleep 600"),
    )
    .await?;
    let task_id = TaskId::new(task.task_id.clone());
    let running = setup
        .framework
        .expect_update(&task_id, TaskState::TaskRunning, LAUNCH_TIMEOUT)
        .await?;
    let registrations_before = setup
        .agent
        .snapshot()
        .await
        .expect("agent runs")
        .metrics
        .registrations;

    setup.cluster.restart_master().await?;
    eventually(
        "agent re-registered after the master restart",
        Duration::from_secs(20),
        || async {
            let snapshot = setup.agent.snapshot().await.expect("agent runs");
            Ok(
                (snapshot.connected && snapshot.metrics.registrations > registrations_before)
                    .then_some(()),
            )
        },
    )
    .await?;
    let state = eventually(
        "master knows the task again",
        Duration::from_secs(20),
        || async {
            let state = setup.cluster.state().await?;
            let known = state.tasks.iter().any(|entry| {
                entry
                    .task
                    .as_ref()
                    .is_some_and(|t| t.task_id == task_id.as_str())
                    && entry
                        .latest_status
                        .as_ref()
                        .is_some_and(|s| s.state() == TaskState::TaskRunning)
            });
            Ok(known.then_some(state))
        },
    )
    .await?;
    assert!(
        state
            .agents
            .iter()
            .any(|a| a.info.as_ref().is_some_and(|i| i.id == running.agent_id))
    );
    let inspect = setup
        .docker
        .inspect_container(&running.container_id, None)
        .await?;
    assert_eq!(
        inspect.state.and_then(|s| s.running),
        Some(true),
        "the container kept running"
    );
    teardown(setup).await
}
