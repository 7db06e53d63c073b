//! Helpers shared by the batchframework end-to-end tests (`batch_*.rs`): a master, agents and
//! an in-process batch daemon, plus a small JSON-over-HTTP client for its API.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_agent::{AgentConfig, AgentHandle, RuntimeKind};
use agora_batch::{BatchHandle, BatchSettings};
use agora_proto::Resources;
use agora_tests::{ClusterOptions, TestCluster, eventually, fast_master_config};
use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A master, agents and a batch daemon with their work dirs.
pub struct BatchCluster {
    pub cluster: TestCluster,
    pub agents: Vec<AgentHandle>,
    pub batch: Option<BatchHandle>,
    pub batch_dir: tempfile::TempDir,
    pub scratch: tempfile::TempDir,
    agent_dirs: Vec<tempfile::TempDir>,
}

/// Settings for an in-process batch daemon on an ephemeral port with fast ticks.
pub fn batch_settings(master_url: &str, work_dir: &Path) -> BatchSettings {
    let mut settings = BatchSettings::new(
        master_url,
        "127.0.0.1:0".parse().expect("valid address"),
        work_dir.to_path_buf(),
    );
    settings.tick_interval = Duration::from_millis(50);
    settings.failover_timeout = Duration::from_secs(600);
    settings
}

/// An agent configuration with `runtime` and `resources`.
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
    config.default_kill_grace = Duration::from_secs(1);
    config.kill_tasks_on_shutdown = true;
    config
}

impl BatchCluster {
    /// A master, `agents` agents of `runtime` with `resources` each, and a batch daemon.
    pub async fn start(
        agents: usize,
        runtime: RuntimeKind,
        resources: &str,
    ) -> anyhow::Result<Self> {
        let mut core = fast_master_config();
        core.max_missed_heartbeats = 50;
        let cluster = TestCluster::start(ClusterOptions { core }).await?;
        let mut handles = Vec::new();
        let mut agent_dirs = Vec::new();
        for _ in 0..agents {
            let dir = tempfile::tempdir()?;
            let config = agent_config(&cluster.master_url(), runtime, resources, dir.path());
            handles.push(
                agora_agent::spawn(config, CancellationToken::new())
                    .await
                    .context("starting an agent")?,
            );
            agent_dirs.push(dir);
        }
        let batch_dir = tempfile::tempdir()?;
        let batch = agora_batch::spawn(batch_settings(&cluster.master_url(), batch_dir.path()))
            .await
            .context("starting batchframework")?;
        Ok(Self {
            cluster,
            agents: handles,
            batch: Some(batch),
            batch_dir,
            scratch: tempfile::tempdir()?,
            agent_dirs,
        })
    }

    /// The daemon's API address.
    pub fn api(&self) -> SocketAddr {
        self.batch
            .as_ref()
            .expect("batchframework runs")
            .local_addr()
    }

    /// A file path in the scratch dir.
    pub fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// Stops the daemon (its tasks keep running) and starts it again on the same work dir.
    pub async fn restart_batch(&mut self, downtime: Duration) -> anyhow::Result<()> {
        if let Some(batch) = self.batch.take() {
            batch.shutdown().await.context("stopping batchframework")?;
        }
        tokio::time::sleep(downtime).await;
        let batch = agora_batch::spawn(batch_settings(
            &self.cluster.master_url(),
            self.batch_dir.path(),
        ))
        .await
        .context("restarting batchframework")?;
        self.batch = Some(batch);
        Ok(())
    }

    /// Submits a job; returns the response body.
    pub async fn submit(&self, job: &Value) -> anyhow::Result<Value> {
        let (status, body) = request(self.api(), "POST", "/v1/jobs", Some(job)).await?;
        if status != 201 {
            bail!("POST /v1/jobs: {status} {body}");
        }
        Ok(body)
    }

    /// `GET path` as JSON, expecting 200.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = request(self.api(), "GET", path, None).await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// The run, once `done` says it is done.
    pub async fn wait_run(
        &self,
        job: &str,
        run: u64,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let path = format!("/v1/jobs/{job}/runs/{run}");
        eventually(&format!("run {run} of {job}"), timeout, || async {
            let value = self.get(&path).await?;
            Ok(done(&value).then_some(value))
        })
        .await
    }

    /// The run, once it finished.
    pub async fn wait_finished(
        &self,
        job: &str,
        run: u64,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_run(job, run, timeout, |run| {
            matches!(
                run["phase"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "CANCELLED")
            )
        })
        .await
    }

    /// Stops everything.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(batch) = self.batch.take() {
            batch.shutdown().await?;
        }
        for agent in self.agents.drain(..) {
            agent.shutdown().await?;
        }
        Ok(())
    }
}

/// One HTTP/1.1 request with an optional JSON body; the status and the JSON body (or the text
/// as a JSON string, or null when empty).
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let payload = body.map(Value::to_string).unwrap_or_default();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(payload.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("HTTP request timed out")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body_text = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let value = if body_text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body_text).unwrap_or(Value::String(body_text))
    };
    Ok((status, value))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time in a JSON value.
pub fn seconds(value: &Value) -> Option<f64> {
    let text = value.as_str()?;
    let timestamp: jiff_free::Rfc3339 = text.parse().ok()?;
    Some(timestamp.0)
}

/// Tiny RFC 3339 reader (UTC `Z` times as the daemon writes them), so the tests need no
/// date crate.
pub mod jiff_free {
    /// Seconds since the epoch.
    pub struct Rfc3339(pub f64);

    impl std::str::FromStr for Rfc3339 {
        type Err = String;

        fn from_str(text: &str) -> Result<Self, Self::Err> {
            let text = text.strip_suffix('Z').ok_or("not UTC")?;
            let (date, time) = text.split_once('T').ok_or("no T")?;
            let mut parts = date.split('-').map(|part| part.parse::<i64>());
            let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err("bad date".into());
            };
            let mut clock = time.split(':');
            let hour: f64 = clock.next().ok_or("no hour")?.parse().map_err(|_| "hour")?;
            let minute: f64 = clock
                .next()
                .ok_or("no minute")?
                .parse()
                .map_err(|_| "minute")?;
            let second: f64 = clock
                .next()
                .ok_or("no second")?
                .parse()
                .map_err(|_| "second")?;
            // Days from civil (Howard Hinnant's algorithm).
            let year = if month <= 2 { year - 1 } else { year };
            let era = year.div_euclid(400);
            let year_of_era = year - era * 400;
            let month_index = (month + 9) % 12;
            let day_of_year = (153 * month_index + 2) / 5 + day - 1;
            let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
            let days = era * 146_097 + day_of_era - 719_468;
            Ok(Rfc3339(
                days as f64 * 86_400.0 + hour * 3600.0 + minute * 60.0 + second,
            ))
        }
    }
}

/// The most attempts of `run` active at once, from their launch and finish times.
pub fn max_overlap(run: &Value) -> usize {
    let mut events: Vec<(f64, i32)> = Vec::new();
    for attempt in run["attempts"].as_array().into_iter().flatten() {
        if let Some(launched) = seconds(&attempt["launchedAt"]) {
            events.push((launched, 1));
        }
        if let Some(finished) = seconds(&attempt["finishedAt"]) {
            events.push((finished, -1));
        }
    }
    // A finish and a launch at the same instant: the finish came first.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut active = 0i32;
    let mut most = 0i32;
    for (_, delta) in events {
        active += delta;
        most = most.max(active);
    }
    most as usize
}

/// The most tasks running at once according to a log of `s`/`e` lines the tasks wrote.
pub fn max_concurrency_in_log(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut active = 0i64;
    let mut most = 0i64;
    for line in text.lines() {
        match line.trim() {
            "s" => active += 1,
            "e" => active -= 1,
            _ => {}
        }
        most = most.max(active);
    }
    most as usize
}

/// The `batchframework` binary next to the test executable.
pub fn batch_binary() -> anyhow::Result<PathBuf> {
    agora_tests::workspace_binary("agora-batch", "batchframework")
}
