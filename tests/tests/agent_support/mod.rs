//! Helpers shared by the agent end-to-end tests (`agent_*.rs`).
#![allow(dead_code)]

pub mod fake_master;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_agent::{AgentConfig, AgentHandle, RuntimeKind};
use agora_proto::v1;
use agora_proto::{OfferId, Resources};
use agora_sdk::TaskBuilder;
use agora_tests::{
    ClusterOptions, DEFAULT_TIMEOUT, TestCluster, TestFramework, fast_master_config,
};
use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A cluster whose master tolerates an agent being away for ~10 s before calling it unreachable.
pub async fn patient_cluster() -> anyhow::Result<TestCluster> {
    let mut core = fast_master_config();
    core.agent_heartbeat_interval = Duration::from_millis(200);
    core.max_missed_heartbeats = 50;
    TestCluster::start(ClusterOptions { core }).await
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(39999)
}

/// Agent resources with `count` free host ports.
pub fn resources_with_ports(count: usize) -> String {
    let ports: Vec<String> = (0..count).map(|_| free_port().to_string()).collect();
    format!("cpus:4;mem:4096;disk:1024;ports:[{}]", ports.join(","))
}

/// An in-process agent configuration for tests: fast reconnects and resends.
pub fn agent_config(
    master_url: &str,
    runtime: RuntimeKind,
    resources: &str,
    work_dir: &Path,
) -> AgentConfig {
    let mut config = AgentConfig::new(master_url);
    config.runtime = Some(runtime);
    config.work_dir = Some(work_dir.to_path_buf());
    config.resource_overrides = Resources::parse(resources).expect("valid test resources");
    config.hostname = "127.0.0.1".to_owned();
    config.reconnect_backoff_min = Duration::from_millis(50);
    config.reconnect_backoff_max = Duration::from_millis(500);
    config.status_resend_interval = Duration::from_secs(1);
    config.default_kill_grace = Duration::from_secs(2);
    config
}

/// Starts an in-process agent.
pub async fn start_agent(config: AgentConfig) -> anyhow::Result<AgentHandle> {
    agora_agent::spawn(config, CancellationToken::new())
        .await
        .context("starting the agent")
}

/// Waits for an offer and launches the task `builder` describes on it.
pub async fn launch(
    framework: &mut TestFramework,
    builder: TaskBuilder,
) -> anyhow::Result<v1::TaskInfo> {
    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let task = builder.build(&offers[0])?;
    framework
        .driver
        .launch(OfferId::new(offers[0].id.clone()), vec![task.clone()])
        .await?;
    framework.forget_offers();
    Ok(task)
}

/// The built `agent` binary next to the test executable.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    agora_tests::workspace_binary("agora-agent", "agent")
}

/// The `agent` binary running as a child process.
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts `agent` with `args`; its stderr goes to `log`.
    pub fn start(args: &[String], log: PathBuf) -> anyhow::Result<Self> {
        let binary = agent_binary()?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("spawning the agent binary")?;
        Ok(Self { child, log })
    }

    /// SIGKILL, as `kill -9`.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /` on 127.0.0.1:port; the whole response, or `None` when nothing answers.
pub async fn http_get_raw(port: u16) -> Option<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        Some(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// Removes every container carrying `agora.agent_id=<agent_id>` (test cleanup).
pub async fn remove_agent_containers(docker: &bollard::Docker, agent_id: &str) {
    use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
    let filters = [(
        "label".to_owned(),
        vec![format!("{}={agent_id}", agora_agent::LABEL_AGENT_ID)],
    )]
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
    for container in containers {
        if let Some(id) = container.id {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}
