//! Helpers shared by the newcomer-path tests (`deploy_*.rs`, `examples_*.rs`): repository
//! paths, building workspace binaries, child processes that end with the test, in-process
//! agents with the process runtime, and waiting for RUNNING tasks in the master's state.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_agent::{AgentConfig, AgentHandle, RuntimeKind};
use agora_proto::Resources;
use agora_proto::v1;
use agora_proto::v1::operator_service_client::OperatorServiceClient;
use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// How long a framework may take from start to a RUNNING task (process start included).
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(60);

/// The packages whose bins the tests build: the same set as `deploy/local-cluster.sh` builds,
/// so that cargo resolves features once for both and the second build is a no-op.
pub const CLUSTER_PACKAGES: &[&str] = &[
    "agora-master",
    "agora-agent",
    "agora-svc",
    "agora-batch",
    "agora-example-everywhere",
];

/// The repository root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate
        .parent()
        .map_or_else(|| tests_crate.to_path_buf(), Path::to_path_buf)
}

/// The profile directory the test executable was built into (`target/debug`).
pub fn target_profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/debug/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the test executable has no target dir")
}

/// Builds the bins of `packages` with the cargo running this test (a no-op when they are up to
/// date) and returns the directory holding them. Call it before starting a cluster: it blocks.
pub fn build_binaries(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let profile_dir = target_profile_dir()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.current_dir(repo_root()).args(["build", "--quiet"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    for package in packages {
        command.args(["-p", package]);
    }
    command.arg("--bins");
    // The test's own target dir, so the bins land next to the test executable.
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = command
        .status()
        .with_context(|| format!("running cargo build for {packages:?}"))?;
    anyhow::ensure!(status.success(), "cargo build of {packages:?} failed");
    Ok(profile_dir)
}

/// `count` distinct ports nobody uses right now, below Linux's ephemeral range (32768-60999)
/// and away from Agora's defaults (5050-5053, 8080, 8090, 31000-32000). A port the OS hands
/// out for port 0 or for an outgoing connection could be taken again on a busy machine before
/// Docker binds it; ports in 20000-30999 are only ever taken by an explicit bind.
pub fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 11_000;
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count * 100 {
        if ports.len() == count {
            break;
        }
        let random = uuid::Uuid::new_v4().as_u128() % u128::from(SPAN);
        let port = FIRST + u16::try_from(random).unwrap_or(0);
        if !ports.contains(&port) && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            ports.push(port);
        }
    }
    anyhow::ensure!(
        ports.len() == count,
        "only {} of {count} free ports found in {FIRST}-{}",
        ports.len(),
        FIRST + SPAN - 1
    );
    Ok(ports)
}

/// A child process with its output in a log file; killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn start(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let stderr = log_file.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// What the process printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails (with the log) when the process has already exited.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited early ({status}); its output:\n{}",
                self.name,
                self.log_text()
            );
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .with_context(|| format!("sending SIGTERM to {}", self.name))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {timeout:?} of SIGTERM; its output:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process agent with the process runtime, labelled, its checkpoints in `work_dir`;
/// its tasks are killed when it shuts down.
pub async fn start_process_agent(
    master_url: &str,
    hostname: &str,
    labels: &[(&str, &str)],
    work_dir: &Path,
) -> anyhow::Result<AgentHandle> {
    let mut config = AgentConfig::new(master_url);
    config.runtime = Some(RuntimeKind::Process);
    config.work_dir = Some(work_dir.to_path_buf());
    config.resource_overrides =
        Resources::parse("cpus:2;mem:1024;disk:1024").context("agent resources")?;
    config.hostname = hostname.to_owned();
    config.labels = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect::<BTreeMap<_, _>>();
    config.reconnect_backoff_min = Duration::from_millis(50);
    config.reconnect_backoff_max = Duration::from_millis(500);
    config.default_kill_grace = Duration::from_secs(1);
    config.kill_tasks_on_shutdown = true;
    agora_agent::spawn(config, CancellationToken::new())
        .await
        .with_context(|| format!("starting agent {hostname}"))
}

/// The cluster state through `OperatorService.GetState` of the master at `master_url`.
pub async fn cluster_state(master_url: &str) -> anyhow::Result<v1::ClusterState> {
    let channel = tonic::transport::Endpoint::from_shared(master_url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("connecting to {master_url}"))?;
    let state = OperatorServiceClient::new(channel)
        .get_state(v1::GetStateRequest {})
        .await
        .context("GetState")?
        .into_inner();
    Ok(state)
}

/// The tasks of the framework named `framework_name` in `state`.
pub fn tasks_of<'a>(
    state: &'a v1::ClusterState,
    framework_name: &str,
) -> impl Iterator<Item = &'a v1::TaskEntry> {
    let framework_ids: Vec<&str> = state
        .frameworks
        .iter()
        .filter_map(|framework| framework.info.as_ref())
        .filter(|info| info.name == framework_name)
        .map(|info| info.id.as_str())
        .collect();
    state
        .tasks
        .iter()
        .filter(move |task| framework_ids.contains(&task.framework_id.as_str()))
}

/// The state of a task entry, from its latest status.
pub fn task_state(task: &v1::TaskEntry) -> v1::TaskState {
    task.latest_status
        .as_ref()
        .map_or(v1::TaskState::Unspecified, v1::TaskStatus::state)
}

/// The agent id a task entry runs on.
pub fn task_agent(task: &v1::TaskEntry) -> &str {
    task.task.as_ref().map_or("", |info| info.agent_id.as_str())
}

/// The host ports a task entry holds.
pub fn task_ports(task: &v1::TaskEntry) -> Vec<u64> {
    task.task
        .as_ref()
        .and_then(|info| Resources::from_proto(&info.resources).ok())
        .map(|resources| resources.ports().values().collect())
        .unwrap_or_default()
}

/// Waits until the framework named `framework_name` has `count` RUNNING tasks, and returns
/// them. `alive` is checked on every round so that a crashed framework fails fast.
pub async fn wait_running_tasks(
    master_url: &str,
    framework_name: &str,
    count: usize,
    framework: &mut ChildProcess,
) -> anyhow::Result<Vec<v1::TaskEntry>> {
    let deadline = tokio::time::Instant::now() + RUNNING_TIMEOUT;
    loop {
        framework.ensure_alive()?;
        let last_seen = match cluster_state(master_url).await {
            Ok(state) => {
                let running: Vec<v1::TaskEntry> = tasks_of(&state, framework_name)
                    .filter(|task| task_state(task) == v1::TaskState::TaskRunning)
                    .cloned()
                    .collect();
                if running.len() >= count {
                    return Ok(running);
                }
                format!(
                    "{} running of {count}; agents: {}; tasks: {:?}",
                    running.len(),
                    state.agents.len(),
                    tasks_of(&state, framework_name)
                        .map(|task| (task_agent(task).to_owned(), task_state(task)))
                        .collect::<Vec<_>>()
                )
            }
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{framework_name}: {count} RUNNING task(s) not within {RUNNING_TIMEOUT:?} \
                 ({last_seen}); framework output:\n{}",
                framework.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the master lists `count` active agents.
pub async fn wait_agents(master_url: &str, count: usize) -> anyhow::Result<v1::ClusterState> {
    agora_tests::eventually(
        &format!("{count} agents registered"),
        RUNNING_TIMEOUT,
        || async {
            let state = cluster_state(master_url).await?;
            Ok((state.agents.len() >= count).then_some(state))
        },
    )
    .await
}

/// The id of the agent registered with `hostname`.
pub fn agent_id_of(state: &v1::ClusterState, hostname: &str) -> anyhow::Result<String> {
    state
        .agents
        .iter()
        .filter_map(|agent| agent.info.as_ref())
        .find(|info| info.hostname == hostname)
        .map(|info| info.id.clone())
        .with_context(|| format!("no agent with hostname {hostname}"))
}

/// The shared check of the `everywhere` examples (Rust and Python), on a cluster with agents
/// `agent-a` (zone=a) and `agent-b` (zone=b) and the framework started with `--label zone=a
/// --teardown-on-exit`: exactly one copy runs, on agent-a; SIGTERM tears the framework down
/// and the copy is killed.
pub async fn check_one_copy_on_zone_a(
    master_url: &str,
    framework_name: &str,
    framework: &mut ChildProcess,
) -> anyhow::Result<()> {
    let state = cluster_state(master_url).await?;
    let agent_a = agent_id_of(&state, "agent-a")?;
    let running = wait_running_tasks(master_url, framework_name, 1, framework).await?;
    anyhow::ensure!(
        running.len() == 1 && task_agent(&running[0]) == agent_a,
        "expected one copy, on agent-a ({agent_a}): {running:?}"
    );
    let task_id = running[0]
        .task
        .as_ref()
        .map(|info| info.task_id.clone())
        .unwrap_or_default();

    // agent-b's offers are declined, so no copy ever appears there; a few more allocation
    // rounds (100 ms apart in the test master) must not change the picture.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = cluster_state(master_url).await?;
        let copies: Vec<_> = tasks_of(&state, framework_name)
            .map(|task| (task_agent(task).to_owned(), task_state(task)))
            .collect();
        anyhow::ensure!(copies.len() == 1, "one copy expected: {copies:?}");
    }

    let exit_code = framework.terminate(Duration::from_secs(15)).await?;
    anyhow::ensure!(
        exit_code == Some(0),
        "framework exit code {exit_code:?}; output:\n{}",
        framework.log_text()
    );
    agora_tests::eventually(
        "the copy is killed after the teardown",
        RUNNING_TIMEOUT,
        || async {
            let state = cluster_state(master_url).await?;
            let still_running = state.tasks.iter().any(|task| {
                task.task
                    .as_ref()
                    .is_some_and(|info| info.task_id == task_id)
                    && !agora_proto::is_terminal(task_state(task))
            });
            Ok((!still_running).then_some(()))
        },
    )
    .await
}

/// The workspace members' manifests (`<member>/Cargo.toml`), as listed in the root manifest.
fn member_manifests(root: &Path) -> anyhow::Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let members_start = manifest
        .find("members")
        .context("no members in the workspace manifest")?;
    let members_text = &manifest[members_start..];
    let members_end = members_text.find(']').context("unterminated members")?;
    let mut manifests = Vec::new();
    for member in members_text[..members_end].split('"').skip(1).step_by(2) {
        if let Ok(text) = std::fs::read_to_string(root.join(member).join("Cargo.toml")) {
            manifests.push(text);
        }
    }
    Ok(manifests)
}

/// The values of `name = "…"` in the `[header]` tables of a manifest.
fn names_in_tables(manifest: &str, header: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && let Some(value) = line.strip_prefix("name") {
            let name = value.trim_start().trim_start_matches('=').trim();
            names.push(name.trim_matches('"').to_owned());
        }
    }
    names
}

/// Every `[[bin]]` name of the workspace members.
pub fn workspace_bins(root: &Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    Ok(member_manifests(root)?
        .iter()
        .flat_map(|manifest| names_in_tables(manifest, "[[bin]]"))
        .collect())
}

/// Every package name of the workspace members.
pub fn workspace_packages(root: &Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    Ok(member_manifests(root)?
        .iter()
        .flat_map(|manifest| names_in_tables(manifest, "[package]"))
        .collect())
}
