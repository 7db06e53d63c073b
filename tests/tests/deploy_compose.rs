//! `deploy/compose/compose.yaml` end to end on the local Docker Engine: the offline image is
//! built by `deploy/docker/build-image.sh` from this build's binaries, a uniquely named compose
//! project brings up the master and the three agents (zones a, b, c, each with its own host
//! port), and the `everywhere` example, run from the test process against the published master
//! port, puts one busybox `httpd` on every agent; each answers on its agent's host port.
//! agent-a is restarted and recovers its own container, and only that one, although all three
//! agents share the engine. Then an SDK framework launches an `httpd` with an HTTP health
//! check, which the agent must see pass (the agents share the host's network for that). The
//! project and the task containers are removed at the end, also when the test fails.
//!
//! Needs Docker, busybox-static and `docker compose` or `docker-compose`; skips without them
//! unless `AGORA_REQUIRE_DOCKER=1`.

mod newcomer_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use agora_proto::{OfferId, v1};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::TestFramework;
use agora_tests::docker_image::{docker_or_skip, docker_required, ensure_test_image};
use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use newcomer_support::{
    CLUSTER_PACKAGES, ChildProcess, RUNNING_TIMEOUT, build_binaries, cluster_state, free_ports,
    repo_root, task_agent, task_ports, tasks_of, wait_agents, wait_running_tasks,
};

/// Tag of the image the test builds (kept apart from the user's `agora:local`).
const IMAGE_TAG: &str = "agora-compose-test:latest";

const AGENTS: &[(&str, &str)] = &[("agent-a", "a"), ("agent-b", "b"), ("agent-c", "c")];

/// `docker compose` (v2) or `docker-compose` (v1), whichever answers.
fn compose_program() -> Option<Vec<String>> {
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    candidates.into_iter().find_map(|candidate| {
        let (program, arguments) = candidate.split_first()?;
        let answers = Command::new(program)
            .args(arguments)
            .arg("version")
            .output()
            .is_ok_and(|output| output.status.success());
        answers.then(|| candidate.iter().map(|word| (*word).to_owned()).collect())
    })
}

/// How to run compose commands for one project.
#[derive(Debug, Clone)]
struct ComposeCli {
    program: Vec<String>,
    file: PathBuf,
    name: String,
    env: BTreeMap<String, String>,
}

impl ComposeCli {
    fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .arg("--file")
            .arg(&self.file)
            .args(["--project-name", &self.name])
            .args(arguments)
            .envs(&self.env);
        command
    }

    fn run(&self, arguments: &[&str]) -> anyhow::Result<Output> {
        let output = self
            .command(arguments)
            .output()
            .with_context(|| format!("running compose {arguments:?}"))?;
        anyhow::ensure!(
            output.status.success(),
            "compose {arguments:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output)
    }

    fn logs(&self) -> String {
        match self
            .command(&["logs", "--no-color", "--tail", "60"])
            .output()
        {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("(no logs: {error})"),
        }
    }
}

/// The project's lifetime: `down -v` when dropped, whatever happened.
#[derive(Debug)]
struct ComposeProject(ComposeCli);

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self
            .0
            .command(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .output();
    }
}

/// Removes the task containers the test's framework launched (they outlive their agents).
async fn remove_task_containers(docker: &Docker, framework_name: &str) {
    // Container names are `agora-<framework id>__<escaped task id>`; the task ids start with
    // the framework's name.
    let filters = [("name".to_owned(), vec![format!("__{framework_name}-")])]
        .into_iter()
        .collect();
    let Ok(containers) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    for id in containers.into_iter().filter_map(|container| container.id) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let _ = docker.remove_container(&id, Some(options)).await;
    }
}

struct Scenario {
    compose: ComposeCli,
    master_port: u16,
    /// Host port each agent offers to its tasks, by hostname.
    agent_ports: BTreeMap<String, u16>,
    /// Host port of each agent's HTTP endpoint (/state), by hostname.
    agent_http_ports: BTreeMap<String, u16>,
    test_image: String,
    everywhere: PathBuf,
    svcframework: PathBuf,
    svc_port: u16,
    framework_name: String,
    log_dir: PathBuf,
}

/// Everything after `compose up`: agents registered with their labels, one httpd per agent,
/// each answering on its agent's port, teardown on SIGTERM.
async fn run_scenario(scenario: Scenario) -> anyhow::Result<()> {
    let master_url = format!("http://127.0.0.1:{}", scenario.master_port);
    let state = wait_agents(&master_url, AGENTS.len()).await?;
    let mut agent_ids = BTreeMap::new();
    for (hostname, zone) in AGENTS {
        let info = state
            .agents
            .iter()
            .filter_map(|agent| agent.info.as_ref())
            .find(|info| info.hostname == *hostname)
            .with_context(|| format!("{hostname} is not registered: {:?}", state.agents))?;
        anyhow::ensure!(
            info.labels.get("zone").map(String::as_str) == Some(*zone),
            "{hostname} labels: {:?}",
            info.labels
        );
        anyhow::ensure!(
            info.runtimes.iter().any(|runtime| runtime == "docker"),
            "{hostname} runtimes: {:?}",
            info.runtimes
        );
        agent_ids.insert(info.id.clone(), (*hostname).to_owned());
    }

    let mut command = Command::new(&scenario.everywhere);
    command
        .args(["--master", &master_url])
        .args(["--name", &scenario.framework_name])
        .args(["--image", &scenario.test_image])
        .args(["--cmd", "exec httpd -f -p $PORT0 -h /www"])
        .args(["--ports", "1", "--mem", "16"])
        .arg("--teardown-on-exit")
        .env("RUST_LOG", "info");
    let mut framework = ChildProcess::start(
        "everywhere",
        command,
        scenario.log_dir.join("everywhere.log"),
    )?;
    let running = wait_running_tasks(
        &master_url,
        &scenario.framework_name,
        AGENTS.len(),
        &mut framework,
    )
    .await?;

    let mut served_by = BTreeMap::new();
    for task in &running {
        let hostname = agent_ids
            .get(task_agent(task))
            .with_context(|| format!("task on an unknown agent: {task:?}"))?;
        let ports = task_ports(task);
        let expected_port = scenario.agent_ports[hostname];
        anyhow::ensure!(
            ports == [u64::from(expected_port)],
            "{hostname}'s task holds ports {ports:?}, expected its agent's port {expected_port}"
        );
        let address = SocketAddr::from(([127, 0, 0, 1], expected_port));
        let body = agora_tests::eventually(
            &format!("httpd of {hostname} answers on {address}"),
            RUNNING_TIMEOUT,
            || async move {
                let response = agora_tests::http_get(address, "/").await?;
                Ok((response.status == 200).then_some(response.body))
            },
        )
        .await?;
        anyhow::ensure!(body.contains("hello from agora"), "{hostname}: {body:?}");
        served_by.insert(hostname.clone(), expected_port);
    }
    anyhow::ensure!(
        served_by.len() == AGENTS.len(),
        "one copy per agent expected: {served_by:?}"
    );

    check_agent_restart_recovers_only_its_own_container(&scenario).await?;

    let exit_code = framework.terminate(Duration::from_secs(15)).await?;
    anyhow::ensure!(exit_code == Some(0), "everywhere exit code {exit_code:?}");
    agora_tests::eventually(
        "the copies are killed after the teardown",
        RUNNING_TIMEOUT,
        || async {
            let state = cluster_state(&master_url).await?;
            let live = tasks_of(&state, &scenario.framework_name)
                .filter(|task| !agora_proto::is_terminal(newcomer_support::task_state(task)))
                .count();
            Ok((live == 0).then_some(()))
        },
    )
    .await?;

    check_svcframework_places_unique_instances(&scenario).await?;

    check_health_checks_reach_tasks(&master_url, &scenario.framework_name, &scenario.test_image)
        .await
}

/// svcframework in the compose cluster: an app with 3 instances and `["hostname","UNIQUE"]`
/// lands one instance on each agent, and each answers on its agent's port.
async fn check_svcframework_places_unique_instances(scenario: &Scenario) -> anyhow::Result<()> {
    scenario
        .compose
        .run(&["up", "-d", "--no-build", "svcframework"])?;
    let svc = SocketAddr::from(([127, 0, 0, 1], scenario.svc_port));
    agora_tests::eventually("svcframework answers", RUNNING_TIMEOUT, || async move {
        let response = agora_tests::http_get(svc, "/ping").await?;
        Ok((response.status == 200).then_some(()))
    })
    .await?;
    let app = serde_json::json!({
        "id": "/compose-web",
        "cmd": "exec httpd -f -p $PORT0 -h /www",
        "cpus": 0.1,
        "mem": 16,
        "instances": 3,
        "container": { "type": "DOCKER", "docker": { "image": scenario.test_image } },
        "portDefinitions": [{ "port": 0 }],
        "constraints": [["hostname", "UNIQUE"]],
        "healthChecks": [{ "protocol": "HTTP", "path": "/", "portIndex": 0,
                           "gracePeriodSeconds": 10, "intervalSeconds": 2, "timeoutSeconds": 1 }],
    });
    let app_file = scenario.log_dir.join("compose-web.json");
    std::fs::write(&app_file, app.to_string())?;
    let svc_url = format!("http://{svc}");
    let run_cli = |arguments: Vec<String>| {
        let binary = scenario.svcframework.clone();
        let svc_url = svc_url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(binary)
                    .args(&arguments)
                    .env("AGORA_SVC_URL", svc_url)
                    .output()
            })
            .await?
            .context("running svcframework")
        }
    };
    let deploy = run_cli(vec![
        "deploy".into(),
        app_file.display().to_string(),
        "--wait".into(),
        "--timeout".into(),
        "120".into(),
    ])
    .await?;
    anyhow::ensure!(
        deploy.status.success(),
        "svcframework deploy failed: {}{}",
        String::from_utf8_lossy(&deploy.stdout),
        String::from_utf8_lossy(&deploy.stderr)
    );
    let tasks = agora_tests::http_get(svc, "/v2/apps/compose-web/tasks")
        .await?
        .json()?;
    let tasks = tasks["tasks"].as_array().cloned().unwrap_or_default();
    let mut hosts: Vec<String> = Vec::new();
    for task in &tasks {
        let host = task["host"].as_str().unwrap_or_default().to_owned();
        let port = task["ports"][0].as_u64().unwrap_or_default();
        anyhow::ensure!(
            scenario.agent_ports.get(&host).map(|p| u64::from(*p)) == Some(port),
            "instance on {host} holds port {port}, expected that agent's port: {tasks:?}"
        );
        let address = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?));
        let response = agora_tests::http_get(address, "/").await?;
        anyhow::ensure!(
            response.status == 200,
            "{host}:{port} answered {}",
            response.status
        );
        hosts.push(host);
    }
    hosts.sort();
    let expected: Vec<String> = AGENTS.iter().map(|(host, _)| (*host).to_owned()).collect();
    anyhow::ensure!(
        hosts == expected,
        "one instance per agent expected, got {hosts:?}"
    );
    let destroy = run_cli(vec![
        "destroy".into(),
        "/compose-web".into(),
        "--wait".into(),
    ])
    .await?;
    anyhow::ensure!(
        destroy.status.success(),
        "svcframework destroy failed: {}",
        String::from_utf8_lossy(&destroy.stderr)
    );
    Ok(())
}

/// Each agent's own view (`GET /state` on its HTTP port): task id -> container id of its
/// RUNNING tasks, or `None` while it is not connected to the master.
async fn agent_tasks(
    scenario: &Scenario,
    hostname: &str,
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let address = SocketAddr::from(([127, 0, 0, 1], scenario.agent_http_ports[hostname]));
    let snapshot = agora_tests::http_get(address, "/state").await?.json()?;
    if snapshot["connected"] != serde_json::Value::Bool(true) {
        return Ok(None);
    }
    let tasks = snapshot["tasks"]
        .as_array()
        .context("/state has no tasks array")?
        .iter()
        .filter(|task| task["state"] == "TASK_RUNNING")
        .map(|task| {
            let id = task["task_id"].as_str().unwrap_or_default().to_owned();
            let container = task["container_id"].as_str().unwrap_or_default().to_owned();
            (id, container)
        })
        .collect();
    Ok(Some(tasks))
}

/// All three agents share one Docker Engine. A restarted agent finds its containers by its own
/// `agora.agent_id` label: agent-a gets back its one container (the same container, not a new
/// launch) and adopts none of agent-b's or agent-c's, whose own views do not change.
async fn check_agent_restart_recovers_only_its_own_container(
    scenario: &Scenario,
) -> anyhow::Result<()> {
    let mut before = BTreeMap::new();
    for (hostname, _) in AGENTS {
        let tasks = agent_tasks(scenario, hostname)
            .await?
            .with_context(|| format!("{hostname} is not connected"))?;
        anyhow::ensure!(tasks.len() == 1, "{hostname} runs {tasks:?}");
        before.insert(*hostname, tasks);
    }
    scenario
        .compose
        .run(&["restart", "--timeout", "5", "agent-a"])?;
    // Until the new agent process listens, /state fails: `eventually` retries.
    let after_restart = agora_tests::eventually(
        "agent-a reconnected after its restart",
        RUNNING_TIMEOUT,
        || async {
            let tasks = agent_tasks(scenario, "agent-a").await?;
            Ok(tasks.filter(|tasks| !tasks.is_empty()))
        },
    )
    .await?;
    anyhow::ensure!(
        after_restart == before["agent-a"],
        "agent-a recovered {after_restart:?}, ran {:?} before its restart",
        before["agent-a"]
    );
    for hostname in ["agent-b", "agent-c"] {
        let tasks = agent_tasks(scenario, hostname).await?;
        anyhow::ensure!(
            tasks.as_ref() == Some(&before[hostname]),
            "{hostname} changed during agent-a's restart: {tasks:?}, before {:?}",
            before[hostname]
        );
    }
    Ok(())
}

/// The agents share the host's network, so the HTTP health check an agent runs against
/// 127.0.0.1:<host port> reaches its task (from the compose network it would not).
async fn check_health_checks_reach_tasks(
    master_url: &str,
    framework_name: &str,
    image: &str,
) -> anyhow::Result<()> {
    let info = TestFramework::info(&format!("{framework_name}-health"), &[]);
    let mut framework = TestFramework::start(TestFramework::config(master_url, info)).await?;
    let offers = framework.expect_offers(RUNNING_TIMEOUT).await?;
    let health_check = v1::HealthCheck {
        protocol: v1::HealthCheckProtocol::Http as i32,
        path: "/".to_owned(),
        port_index: 0,
        grace_period_seconds: 10.0,
        interval_seconds: 1.0,
        timeout_seconds: 2.0,
        max_consecutive_failures: 3,
        ..Default::default()
    };
    let task = TaskBuilder::new(format!("{framework_name}-health"))
        .cpus(0.1)
        .mem(16.0)
        .ports(1)
        .image(image)
        .shell("exec httpd -f -p $PORT0 -h /www")
        .health_check(health_check)
        .build(&offers[0])?;
    let task_id = task.task_id.clone();
    framework
        .driver
        .launch(OfferId::new(offers[0].id.clone()), vec![task])
        .await?;
    let healthy = framework
        .expect_event(
            |event| match event {
                DriverEvent::Update(status) if status.task_id == task_id => {
                    status.healthy.map(|healthy| (healthy, status.clone()))
                }
                _ => None,
            },
            RUNNING_TIMEOUT,
        )
        .await?;
    anyhow::ensure!(
        healthy.0,
        "the first health result is a failure: {:?}",
        healthy.1
    );
    framework.driver.teardown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_serves_a_copy_on_every_agent() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("compose_cluster").await else {
        return Ok(());
    };
    let Some(program) = compose_program() else {
        let message = "neither `docker compose` nor `docker-compose` answers \
                       (Debian: apt-get install docker-compose)";
        anyhow::ensure!(!docker_required(), "compose_cluster: {message}");
        println!("skipping compose_cluster: {message}");
        return Ok(());
    };
    let test_image = ensure_test_image(&docker).await?;
    let bin_dir = build_binaries(CLUSTER_PACKAGES)?;
    let root = repo_root();
    let build = Command::new("bash")
        .arg(root.join("deploy/docker/build-image.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--tag", IMAGE_TAG])
        .output()
        .context("running deploy/docker/build-image.sh")?;
    anyhow::ensure!(
        build.status.success(),
        "build-image.sh failed: {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );

    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("agoratest{}", &suffix[..10]);
    let mut ports = free_ports(3 + 2 * AGENTS.len())?.into_iter();
    let mut next_port = || ports.next().context("not enough ports picked");
    let master_port = next_port()?;
    let svc_port = next_port()?;
    let mut env = BTreeMap::from([
        ("AGORA_IMAGE".to_owned(), IMAGE_TAG.to_owned()),
        ("AGORA_MASTER_PORT".to_owned(), master_port.to_string()),
        ("AGORA_SVC_PORT".to_owned(), svc_port.to_string()),
        ("AGORA_BATCH_PORT".to_owned(), next_port()?.to_string()),
    ]);
    let mut agent_ports = BTreeMap::new();
    let mut agent_http_ports = BTreeMap::new();
    for (hostname, zone) in AGENTS {
        let zone = zone.to_uppercase();
        let port = next_port()?;
        agent_ports.insert((*hostname).to_owned(), port);
        env.insert(format!("AGORA_PORTS_{zone}"), format!("[{port}-{port}]"));
        // The agents share the host's network: their own HTTP ports must be free too.
        let http_port = next_port()?;
        agent_http_ports.insert((*hostname).to_owned(), http_port);
        env.insert(format!("AGORA_AGENT_PORT_{zone}"), http_port.to_string());
    }
    let compose = ComposeCli {
        program,
        file: root.join("deploy/compose/compose.yaml"),
        name: name.clone(),
        env,
    };
    let project = ComposeProject(compose.clone());
    let log_dir = tempfile::tempdir()?;
    let framework_name = format!("everywhere-{name}");
    let scenario = Scenario {
        compose: compose.clone(),
        master_port,
        agent_ports,
        agent_http_ports,
        test_image,
        everywhere: bin_dir.join("everywhere"),
        svcframework: bin_dir.join("svcframework"),
        svc_port,
        framework_name: framework_name.clone(),
        log_dir: log_dir.path().to_path_buf(),
    };

    // The master and the agents first; svcframework joins for its part of the scenario.
    let outcome = match compose.run(&[
        "up",
        "-d",
        "--no-build",
        "master",
        "agent-a",
        "agent-b",
        "agent-c",
    ]) {
        // Spawned so that a panic inside still reaches the cleanup below.
        Ok(_) => match tokio::time::timeout(
            Duration::from_secs(300),
            tokio::spawn(run_scenario(scenario)),
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(anyhow::anyhow!("the scenario panicked: {join_error}")),
            Err(_) => Err(anyhow::anyhow!("the scenario took longer than 300 s")),
        },
        Err(error) => Err(error),
    };
    let outcome = outcome.with_context(|| format!("compose logs:\n{}", compose.logs()));
    remove_task_containers(&docker, &framework_name).await;
    drop(project);
    outcome
}
