//! Helpers for the svcframework end-to-end tests (`svc_*.rs`): a master, several named
//! agents and an in-process svcframework daemon, plus the real `svcframework` CLI binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use agora_agent::{AgentConfig, AgentHandle, RuntimeKind};
use agora_proto::Resources;
use agora_svc::{SvcHandle, SvcSettings};
use agora_tests::{ClusterOptions, TestCluster, fast_master_config};
use anyhow::Context;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(39999)
}

/// A master, agents `node-1..n` and a svcframework daemon.
pub struct SvcCluster {
    pub cluster: TestCluster,
    pub agents: Vec<AgentHandle>,
    pub svc: Option<SvcHandle>,
    svc_listen: std::net::SocketAddr,
    pub svc_dir: tempfile::TempDir,
    _agent_dirs: Vec<tempfile::TempDir>,
    http: reqwest::Client,
}

impl SvcCluster {
    /// Starts everything; agents use `runtime` and have `cpus`/`mem` and 12 free host ports.
    pub async fn start(runtime: RuntimeKind, agents: usize, cpus: f64) -> anyhow::Result<Self> {
        let mut core = fast_master_config();
        core.agent_heartbeat_interval = Duration::from_millis(200);
        core.max_missed_heartbeats = 50;
        let cluster = TestCluster::start(ClusterOptions { core }).await?;
        let mut handles = Vec::new();
        let mut dirs = Vec::new();
        for index in 1..=agents {
            let dir = tempfile::tempdir()?;
            let ports: Vec<String> = (0..12).map(|_| free_port().to_string()).collect();
            let resources = format!("cpus:{cpus};mem:2048;disk:1024;ports:[{}]", ports.join(","));
            let mut config = AgentConfig::new(cluster.master_url());
            config.runtime = Some(runtime);
            config.work_dir = Some(dir.path().to_path_buf());
            config.resource_overrides = Resources::parse(&resources)?;
            config.hostname = format!("node-{index}");
            config.reconnect_backoff_min = Duration::from_millis(50);
            config.reconnect_backoff_max = Duration::from_millis(500);
            config.status_resend_interval = Duration::from_secs(1);
            config.default_kill_grace = Duration::from_secs(1);
            config.remove_exited_after = Duration::from_millis(200);
            config.kill_tasks_on_shutdown = true;
            let handle = agora_agent::spawn(config, CancellationToken::new())
                .await
                .context("starting an agent")?;
            handles.push(handle);
            dirs.push(dir);
        }
        let svc_dir = tempfile::tempdir()?;
        let svc_listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut this = SvcCluster {
            cluster,
            agents: handles,
            svc: None,
            svc_listen,
            svc_dir,
            _agent_dirs: dirs,
            http: reqwest::Client::new(),
        };
        this.start_svc().await?;
        Ok(this)
    }

    fn settings(&self) -> SvcSettings {
        let mut settings = SvcSettings::new(
            self.cluster.master_url(),
            self.svc_listen,
            self.svc_dir.path().to_path_buf(),
        );
        settings.tick_interval = Duration::from_millis(200);
        settings
    }

    /// Starts the daemon (again) on the same work dir and port.
    pub async fn start_svc(&mut self) -> anyhow::Result<()> {
        let handle = agora_svc::spawn(self.settings()).await?;
        self.svc = Some(handle);
        Ok(())
    }

    /// Stops the daemon as a crash would leave things: tasks keep running.
    pub async fn stop_svc(&mut self) -> anyhow::Result<()> {
        if let Some(handle) = self.svc.take() {
            handle.shutdown().await?;
        }
        Ok(())
    }

    /// Starts the real `svcframework serve` binary on the daemon's work dir and port (the
    /// in-process daemon must be stopped first).
    pub fn spawn_binary(&self) -> anyhow::Result<DaemonProcess> {
        let log = std::fs::File::create(self.svc_dir.path().join("serve.log"))?;
        Command::new(svc_binary()?)
            .args(["serve", "--master", &self.cluster.master_url()])
            .args(["--listen", &self.svc_listen.to_string()])
            .arg("--work-dir")
            .arg(self.svc_dir.path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map(DaemonProcess)
            .context("starting svcframework serve")
    }

    /// The daemon's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.svc_listen)
    }

    /// GET a JSON document from the daemon.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "GET {path} answered {status}: {body}");
        Ok(body)
    }

    /// Sends a JSON body; returns the status code and the JSON answer.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The app's tasks.
    pub async fn tasks(&self, app_id: &str) -> anyhow::Result<Vec<Value>> {
        let body = self
            .get(&format!(
                "/v2/apps/{}/tasks",
                app_id.trim_start_matches('/')
            ))
            .await?;
        Ok(body["tasks"].as_array().cloned().unwrap_or_default())
    }

    /// Runs the CLI against the daemon (blocking work off the runtime).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let binary = svc_binary()?;
        let url = self.url();
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(&args)
                .env("AGORA_SVC_URL", url)
                .output()
                .context("running svcframework")
        })
        .await?
    }

    /// Runs the CLI and fails with its output unless it exits 0.
    pub async fn cli_ok(&self, args: &[&str]) -> anyhow::Result<Output> {
        let output = self.cli(args).await?;
        anyhow::ensure!(
            output.status.success(),
            "svcframework {} failed: {}",
            args.join(" "),
            describe(&output)
        );
        Ok(output)
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_svc().await?;
        for agent in self.agents.drain(..) {
            agent.shutdown().await?;
        }
        Ok(())
    }
}

/// A `svcframework serve` child process, SIGKILLed when dropped (so a failing test leaves
/// no daemon behind).
pub struct DaemonProcess(std::process::Child);

impl DaemonProcess {
    /// SIGKILL, then reap.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Output as text, for messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes `text` to `<dir>/<name>` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// The `svcframework` binary next to the test executable.
pub fn svc_binary() -> anyhow::Result<PathBuf> {
    agora_tests::workspace_binary("agora-svc", "svcframework")
}

/// GET `/` on a local port; true when it answers 200.
pub async fn answers_http(port: u64) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}
