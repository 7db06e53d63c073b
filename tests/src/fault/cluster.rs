//! `FaultCluster`: the real `master`, `agent` (Docker runtime), `svcframework` and
//! `batchframework` binaries as child processes on loopback ports, with short heartbeat
//! settings, each with its own work dir and log file in the test's temp dir.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::operator_service_client::OperatorServiceClient;
use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::wait::{Probe, poll_until};

use super::daemon::Daemon;

/// How the cluster is configured; the defaults are the CI sizes of the fault suite.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// Agents `node-1..n`, each with the Docker runtime.
    pub agents: usize,
    /// Master `--agent-heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// Master `--max-missed-heartbeats`.
    pub max_missed_heartbeats: u32,
    /// Master `--agent-reregister-timeout` (after a master restart).
    pub agent_reregister_timeout: Duration,
    /// Start `svcframework serve`.
    pub svc: bool,
    /// Start `batchframework serve`.
    pub batch: bool,
}

impl Default for FaultOptions {
    fn default() -> Self {
        Self {
            agents: 3,
            heartbeat_interval: Duration::from_millis(500),
            max_missed_heartbeats: 3,
            // The master's default: scenarios that need a short one say so.
            agent_reregister_timeout: Duration::from_secs(600),
            svc: true,
            batch: false,
        }
    }
}

impl FaultOptions {
    /// How long an agent must be cut off before the master declares it unreachable, plus a
    /// margin for the master's check period.
    pub fn unreachable_after(&self) -> Duration {
        self.heartbeat_interval * (self.max_missed_heartbeats + 2)
    }
}

/// Host ports each agent offers (disjoint ranges).
const PORTS_PER_AGENT: u16 = 20;

/// A cluster of real daemon processes. Dropping it kills every daemon it started (continuing
/// stopped ones first) and removes the containers of its frameworks and agents.
pub struct FaultCluster {
    /// The options it was started with.
    pub options: FaultOptions,
    dir: tempfile::TempDir,
    /// The master process.
    pub master: Daemon,
    /// The agent processes, `node-1..n` in order.
    pub agents: Vec<Daemon>,
    /// `svcframework serve`, when started.
    pub svc: Option<Daemon>,
    /// `batchframework serve`, when started.
    pub batch: Option<Daemon>,
    master_port: u16,
    svc_port: u16,
    batch_port: u16,
    /// The Docker Engine the agents use.
    pub docker: Docker,
    /// The test image (`agora-test-busybox:<hash>`).
    pub image: String,
    /// The svcframework's name at the master (unique per cluster).
    pub svc_name: String,
    /// The batchframework's name at the master (unique per cluster).
    pub batch_name: String,
    framework_ids: BTreeMap<String, String>,
    agent_ids: BTreeMap<String, String>,
    http: reqwest::Client,
    fault_at: Option<Instant>,
}

impl FaultCluster {
    /// Builds the binaries (a no-op when up to date), starts the master, the agents and the
    /// frameworks asked for, and waits until every agent is registered and every framework is
    /// subscribed.
    pub async fn start(docker: Docker, image: &str, options: FaultOptions) -> anyhow::Result<Self> {
        let bin_dir = daemon_binaries()?;
        let master_bin = bin_dir.join("master");
        let agent_bin = bin_dir.join("agent");
        let dir = tempfile::Builder::new().prefix("agora-fault-").tempdir()?;
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let agent_count = u16::try_from(options.agents).context("agent count")?;
        let ports = free_port_block(3 + agent_count, agent_count * PORTS_PER_AGENT)?;
        let (master_port, svc_port, batch_port) =
            (ports.singles[0], ports.singles[1], ports.singles[2]);
        let master_url = format!("http://127.0.0.1:{master_port}");

        let master_dir = make_dir(dir.path(), "master")?;
        let master = Daemon::new(
            "master",
            master_bin,
            vec![
                "--listen".into(),
                format!("127.0.0.1:{master_port}"),
                "--work-dir".into(),
                master_dir.display().to_string(),
                "--agent-heartbeat-interval".into(),
                millis(options.heartbeat_interval),
                "--max-missed-heartbeats".into(),
                options.max_missed_heartbeats.to_string(),
                "--agent-reregister-timeout".into(),
                millis(options.agent_reregister_timeout),
                "--offer-timeout".into(),
                "5s".into(),
                "--framework-heartbeat-interval".into(),
                "2s".into(),
                "--allocation-interval".into(),
                "250ms".into(),
                "--default-refuse".into(),
                "1s".into(),
            ],
            dir.path().join("master.log"),
        );

        let mut agents = Vec::new();
        for index in 0..agent_count {
            let hostname = format!("node-{}", index + 1);
            let agent_dir = make_dir(dir.path(), &hostname)?;
            let first = ports.range_start + index * PORTS_PER_AGENT;
            let last = first + PORTS_PER_AGENT - 1;
            agents.push(Daemon::new(
                &format!("agent {hostname}"),
                agent_bin.clone(),
                vec![
                    "--master".into(),
                    master_url.clone(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", ports.singles[3 + usize::from(index)]),
                    "--work-dir".into(),
                    agent_dir.display().to_string(),
                    "--runtime".into(),
                    "docker".into(),
                    "--hostname".into(),
                    hostname.clone(),
                    "--label".into(),
                    format!("node={hostname}"),
                    "--label".into(),
                    format!("fault-cluster={unique}"),
                    "--resources".into(),
                    format!("cpus:2;mem:2048;disk:2048;ports:[{first}-{last}]"),
                    // Exited containers stay for the test's inspection (work done, exit codes);
                    // the cluster removes them when dropped.
                    "--remove-exited-after".into(),
                    "600".into(),
                    "--kill-grace".into(),
                    "1".into(),
                ],
                dir.path().join(format!("{hostname}.log")),
            ));
        }

        let svc_name = format!("fault-svc-{unique}");
        let batch_name = format!("fault-batch-{unique}");
        let svc = if options.svc {
            let svc_bin = bin_dir.join("svcframework");
            let svc_dir = make_dir(dir.path(), "svc")?;
            Some(Daemon::new(
                "svcframework",
                svc_bin,
                vec![
                    "serve".into(),
                    "--master".into(),
                    master_url.clone(),
                    "--listen".into(),
                    format!("127.0.0.1:{svc_port}"),
                    "--work-dir".into(),
                    svc_dir.display().to_string(),
                    "--name".into(),
                    svc_name.clone(),
                    "--failover-timeout".into(),
                    "600".into(),
                    "--deployment-timeout".into(),
                    "300".into(),
                    "--launch-timeout".into(),
                    "60".into(),
                ],
                dir.path().join("svcframework.log"),
            ))
        } else {
            None
        };
        let batch = if options.batch {
            let batch_bin = bin_dir.join("batchframework");
            let batch_dir = make_dir(dir.path(), "batch")?;
            Some(Daemon::new(
                "batchframework",
                batch_bin,
                vec![
                    "serve".into(),
                    "--master".into(),
                    master_url.clone(),
                    "--listen".into(),
                    format!("127.0.0.1:{batch_port}"),
                    "--work-dir".into(),
                    batch_dir.display().to_string(),
                    "--name".into(),
                    batch_name.clone(),
                    "--failover-timeout".into(),
                    "600".into(),
                ],
                dir.path().join("batchframework.log"),
            ))
        } else {
            None
        };

        let mut cluster = Self {
            options,
            dir,
            master,
            agents,
            svc,
            batch,
            master_port,
            svc_port,
            batch_port,
            docker,
            image: image.to_owned(),
            svc_name,
            batch_name,
            framework_ids: BTreeMap::new(),
            agent_ids: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            fault_at: None,
        };
        cluster.master.start()?;
        cluster.wait_master_up().await?;
        for agent in &mut cluster.agents {
            agent.start()?;
        }
        let agents = cluster.agents.len();
        cluster
            .wait_agents_active(agents, Duration::from_secs(30))
            .await?;
        if let Some(svc) = &mut cluster.svc {
            svc.start()?;
        }
        if let Some(batch) = &mut cluster.batch {
            batch.start()?;
        }
        cluster
            .wait_frameworks_connected(Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    /// The master's URL.
    pub fn master_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.master_port)
    }

    /// svcframework's REST base URL.
    pub fn svc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.svc_port)
    }

    /// batchframework's REST base URL.
    pub fn batch_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.batch_port)
    }

    /// The test's temp dir (daemon work dirs and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Remembers now as the moment of the fault; convergence times are measured from it.
    pub fn mark_fault(&mut self) {
        self.fault_at = Some(Instant::now());
    }

    /// The moment of the last fault, if any.
    pub fn fault_at(&self) -> Option<Instant> {
        self.fault_at
    }

    /// The agent `node-<number>` (1-based).
    pub fn agent(&mut self, number: usize) -> anyhow::Result<&mut Daemon> {
        let count = self.agents.len();
        self.agents
            .get_mut(number.wrapping_sub(1))
            .with_context(|| format!("no agent node-{number} (the cluster has {count})"))
    }

    /// The agent id the master gave `node-<number>`.
    pub fn agent_id(&self, number: usize) -> Option<&str> {
        self.agent_ids
            .get(&format!("node-{number}"))
            .map(String::as_str)
    }

    /// The hostname (`node-N`) of an agent id.
    pub fn hostname_of(&self, agent_id: &str) -> Option<&str> {
        self.agent_ids
            .iter()
            .find(|(_, id)| id.as_str() == agent_id)
            .map(|(hostname, _)| hostname.as_str())
    }

    /// The framework id of the framework named `name`, once it subscribed.
    pub fn framework_id(&self, name: &str) -> Option<&str> {
        self.framework_ids.get(name).map(String::as_str)
    }

    /// SIGKILL the master and start it again on the same work dir and port.
    pub async fn restart_master(&mut self, downtime: Duration) -> anyhow::Result<()> {
        self.master.sigkill()?;
        tokio::time::sleep(downtime).await;
        self.master.start()?;
        self.wait_master_up().await
    }

    /// Cluster state through `OperatorService.GetState`.
    pub async fn state(&self) -> anyhow::Result<v1::ClusterState> {
        let channel = tonic::transport::Endpoint::from_shared(self.master_url())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to the master at {}", self.master_url()))?;
        Ok(OperatorServiceClient::new(channel)
            .get_state(v1::GetStateRequest {})
            .await
            .context("GetState")?
            .into_inner())
    }

    /// Waits until the master answers `GetState`.
    pub async fn wait_master_up(&mut self) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(30);
        let answered = poll_until(timeout, Duration::from_millis(100), async || {
            match self.state().await {
                Ok(_) => Probe::Met(()),
                Err(_) if !self.master.is_running() => Probe::Failed("it exited".to_owned()),
                Err(error) => Probe::NotYet(format!("{error:#}")),
            }
        })
        .await;
        answered.map_err(|last| {
            anyhow::anyhow!(
                "the master did not answer GetState within {timeout:?} ({last}); its log:\n{}",
                self.master.log_tail(40)
            )
        })
    }

    /// Waits until `count` agents are active at the master; learns their ids.
    pub async fn wait_agents_active(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let active = poll_until(timeout, Duration::from_millis(200), async || {
            let state = match self.state().await {
                Ok(state) => state,
                Err(error) => return Probe::NotYet(format!("{error:#}")),
            };
            for agent in &state.agents {
                if let Some(info) = &agent.info {
                    self.agent_ids
                        .insert(info.hostname.clone(), info.id.clone());
                }
            }
            match active_agents(&state) {
                active if active >= count => Probe::Met(()),
                active => Probe::NotYet(format!("{active} active")),
            }
        })
        .await;
        active.map_err(|last| self.not_within(&format!("{count} active agents"), timeout, &last))
    }

    /// Waits until every framework process of the cluster is connected at the master; learns
    /// their framework ids.
    pub async fn wait_frameworks_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut names = Vec::new();
        if self.svc.is_some() {
            names.push(self.svc_name.clone());
        }
        if self.batch.is_some() {
            names.push(self.batch_name.clone());
        }
        let connected = poll_until(timeout, Duration::from_millis(100), async || {
            let state = match self.state().await {
                Ok(state) => state,
                Err(error) => return Probe::NotYet(format!("{error:#}")),
            };
            let mut connected = 0;
            for framework in &state.frameworks {
                let Some(info) = &framework.info else {
                    continue;
                };
                if names.contains(&info.name) {
                    self.framework_ids
                        .insert(info.name.clone(), info.id.clone());
                    if framework.connected {
                        connected += 1;
                    }
                }
            }
            match connected {
                all if all == names.len() => Probe::Met(()),
                some => Probe::NotYet(format!("{some} of {} connected", names.len())),
            }
        })
        .await;
        connected.map_err(|last| {
            self.not_within(
                &format!("frameworks {names:?} all connected"),
                timeout,
                &last,
            )
        })
    }

    /// The failure of a wait for `what`: what the last look saw, and the daemons' log tails.
    fn not_within(&self, what: &str, timeout: Duration, last: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{what} not within {timeout:?} ({last})\n{}",
            self.log_tails(30)
        )
    }

    /// The last `lines` lines of every daemon's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut text = String::new();
        let daemons = std::iter::once(&self.master)
            .chain(self.agents.iter())
            .chain(self.svc.iter())
            .chain(self.batch.iter());
        for daemon in daemons {
            text.push_str(&format!(
                "----- {} (last {lines} lines) -----\n{}\n",
                daemon.name(),
                daemon.log_tail(lines)
            ));
        }
        text
    }

    // ----- svcframework -----

    /// Creates app `app_id`: `instances` containers of the test image running `sleep 3600`.
    pub async fn svc_create_app(&self, app_id: &str, instances: u32) -> anyhow::Result<Value> {
        let app = json!({
            "id": app_id,
            "cmd": "exec sleep 3600",
            "cpus": 0.1,
            "mem": 16,
            "instances": instances,
            // Spread, so every agent holds instances and every agent fault hits some.
            "placement": "spread",
            "container": { "type": "DOCKER", "docker": { "image": self.image } },
            "taskKillGracePeriodSeconds": 1,
            "upgradeStrategy": { "minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5 }
        });
        self.svc_api()
            .send(reqwest::Method::POST, "/v2/apps", Some(&app))
            .await
    }

    /// Scales app `app_id` to `instances` (overriding a running deployment).
    pub async fn svc_scale(&self, app_id: &str, instances: u32) -> anyhow::Result<Value> {
        let path = format!("/v2/apps/{}?force=true", app_id.trim_start_matches('/'));
        self.svc_api()
            .send(
                reqwest::Method::PUT,
                &path,
                Some(&json!({ "instances": instances })),
            )
            .await
    }

    /// Rolling restart of app `app_id` (`svcframework restart APP`).
    pub async fn svc_restart_app(&self, app_id: &str) -> anyhow::Result<Value> {
        let path = format!(
            "/v2/apps/{}/restart?force=true",
            app_id.trim_start_matches('/')
        );
        self.svc_api()
            .send(reqwest::Method::POST, &path, None)
            .await
    }

    /// The instances svcframework lists for app `app_id`.
    pub async fn svc_tasks(&self, app_id: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/v2/apps/{}/tasks", app_id.trim_start_matches('/'));
        let body = self
            .svc_api()
            .send(reqwest::Method::GET, &path, None)
            .await?;
        Ok(body["tasks"].as_array().cloned().unwrap_or_default())
    }

    /// svcframework's deployments.
    pub async fn svc_deployments(&self) -> anyhow::Result<Vec<Value>> {
        let body = self
            .svc_api()
            .send(reqwest::Method::GET, "/v2/deployments", None)
            .await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    fn svc_api(&self) -> FrameworkApi<'_> {
        FrameworkApi {
            http: &self.http,
            base: self.svc_url(),
        }
    }

    /// Waits until svcframework lists at least `count` RUNNING instances of `app_id`; returns
    /// the instances.
    pub async fn svc_wait_running(
        &self,
        app_id: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let running = poll_until(timeout, Duration::from_millis(200), async || {
            let tasks = match self.svc_tasks(app_id).await {
                Ok(tasks) => tasks,
                Err(error) => return Probe::NotYet(format!("{error:#}")),
            };
            let running = tasks
                .iter()
                .filter(|task| task["state"] == "TASK_RUNNING")
                .count();
            match running {
                enough if enough >= count => Probe::Met(tasks),
                fewer => Probe::NotYet(format!("{fewer} running of {}", tasks.len())),
            }
        })
        .await;
        running.map_err(|last| {
            self.not_within(
                &format!("{app_id}: {count} running instances"),
                timeout,
                &last,
            )
        })
    }

    // ----- batchframework -----

    /// Submits a job; returns the run number it started.
    pub async fn batch_submit(&self, job: &Value) -> anyhow::Result<u64> {
        let body = self
            .batch_api()
            .send(reqwest::Method::POST, "/v1/jobs", Some(job))
            .await?;
        body["run"]
            .as_u64()
            .with_context(|| format!("POST /v1/jobs answered no run: {body}"))
    }

    /// One run of a job, with its attempts.
    pub async fn batch_run(&self, job_id: &str, run: u64) -> anyhow::Result<Value> {
        self.batch_api()
            .send(
                reqwest::Method::GET,
                &format!("/v1/jobs/{job_id}/runs/{run}"),
                None,
            )
            .await
    }

    fn batch_api(&self) -> FrameworkApi<'_> {
        FrameworkApi {
            http: &self.http,
            base: self.batch_url(),
        }
    }

    // ----- Docker -----

    /// Containers (running or not) of the framework named `framework_name`.
    pub async fn framework_containers(
        &self,
        framework_name: &str,
        all: bool,
    ) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
        let framework_id = self
            .framework_id(framework_name)
            .with_context(|| format!("{framework_name} has no framework id yet"))?;
        list_labelled(
            &self.docker,
            &format!("agora.framework_id={framework_id}"),
            all,
        )
        .await
    }

    /// `docker rm -f` of the container of task `task_id`, behind the agent's back.
    pub async fn docker_remove_task(&self, task_id: &str) -> anyhow::Result<()> {
        let containers =
            list_labelled(&self.docker, &format!("agora.task_id={task_id}"), true).await?;
        anyhow::ensure!(!containers.is_empty(), "no container of task {task_id}");
        for container in containers {
            if let Some(id) = container.id {
                self.docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await
                    .with_context(|| format!("removing container {id} of {task_id}"))?;
            }
        }
        Ok(())
    }

    /// Removes every container an agent of this cluster created (the machine is gone).
    pub async fn docker_remove_agent_containers(&self, number: usize) -> anyhow::Result<usize> {
        let agent_id = self
            .agent_id(number)
            .with_context(|| format!("node-{number} has no agent id"))?;
        remove_labelled(&self.docker, &format!("agora.agent_id={agent_id}")).await
    }

    fn cleanup_labels(&self) -> Vec<String> {
        self.framework_ids
            .values()
            .map(|id| format!("agora.framework_id={id}"))
            .chain(
                self.agent_ids
                    .values()
                    .map(|id| format!("agora.agent_id={id}")),
            )
            .collect()
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        // Daemons first, so no agent restarts a container being removed.
        let daemons = std::iter::once(&mut self.master)
            .chain(self.agents.iter_mut())
            .chain(self.svc.iter_mut())
            .chain(self.batch.iter_mut());
        for daemon in daemons {
            if daemon.is_running() {
                let _ = daemon.sigkill();
            }
        }
        let labels = self.cleanup_labels();
        let docker = self.docker.clone();
        // Drop cannot await; a short-lived runtime on its own thread does the Docker calls
        // (a runtime cannot be blocked on from inside the test's runtime).
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                for label in labels {
                    let _ = remove_labelled(&docker, &label).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The Docker Engine and the test image for a fault test, or `None` (printed) when Docker is
/// unavailable and not required (see [`crate::docker_image::docker_or_skip`]).
pub async fn fault_docker(test: &str) -> anyhow::Result<Option<(Docker, String)>> {
    let Some(docker) = crate::docker_image::docker_or_skip(test).await else {
        return Ok(None);
    };
    let image = crate::docker_image::ensure_test_image(&docker).await?;
    Ok(Some((docker, image)))
}

/// Active agents in a cluster state.
pub fn active_agents(state: &v1::ClusterState) -> usize {
    state
        .agents
        .iter()
        .filter(|agent| agent.status == "active")
        .count()
}

async fn list_labelled(
    docker: &Docker,
    label: &str,
    all: bool,
) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
    let filters: HashMap<String, Vec<String>> = [("label".to_owned(), vec![label.to_owned()])]
        .into_iter()
        .collect();
    docker
        .list_containers(Some(ListContainersOptions {
            all,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing containers with label {label}"))
}

async fn remove_labelled(docker: &Docker, label: &str) -> anyhow::Result<usize> {
    let containers = list_labelled(docker, label, true).await?;
    let mut removed = 0;
    for container in containers {
        if let Some(id) = container.id {
            let result = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            if result.is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// One framework's API, as the suite calls it.
struct FrameworkApi<'a> {
    http: &'a reqwest::Client,
    base: String,
}

impl FrameworkApi<'_> {
    /// Sends `method path` (with a JSON `body`); the answer's JSON, or an error naming the
    /// request and the status.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        anyhow::ensure!(
            status.is_success(),
            "{method} {url} answered {status}: {value}"
        );
        Ok(value)
    }
}

/// The daemon packages, built in one cargo invocation: building them one package at a time
/// resolves dependency features differently each time and rebuilds shared dependencies.
const DAEMON_PACKAGES: &[&str] = &["agora-master", "agora-agent", "agora-svc", "agora-batch"];

/// Builds the daemons' bins once per test process (a no-op when they are up to date) and
/// returns the directory holding them (next to the test executable, so the test never runs a
/// stale daemon).
pub fn daemon_binaries() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_daemons().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_daemons() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target dir")?
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--bins"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    for package in DAEMON_PACKAGES {
        command.args(["-p", package]);
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = command
        .status()
        .with_context(|| format!("building {DAEMON_PACKAGES:?}"))?;
    anyhow::ensure!(
        status.success(),
        "cargo build of {DAEMON_PACKAGES:?} failed"
    );
    for bin in ["master", "agent", "svcframework", "batchframework"] {
        anyhow::ensure!(
            profile_dir.join(bin).exists(),
            "{} missing after the build",
            profile_dir.join(bin).display()
        );
    }
    Ok(profile_dir)
}

fn make_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = root.join(name);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// Single free ports and one contiguous free range.
struct PortBlock {
    singles: Vec<u16>,
    range_start: u16,
}

/// `singles` free ports and a free contiguous range of `range` ports, all in 20000-30999:
/// below Linux's ephemeral range (so no outgoing connection takes one before the daemon binds
/// it) and away from Agora's defaults. Random, so concurrent tests rarely pick the same.
fn free_port_block(singles: u16, range: u16) -> anyhow::Result<PortBlock> {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 11_000;
    let is_free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let random_port = |span: u16| {
        let random = uuid::Uuid::new_v4().as_u128() % u128::from(span);
        FIRST + u16::try_from(random).unwrap_or(0)
    };
    let mut range_start = None;
    for _ in 0..200 {
        let start = random_port(SPAN - range);
        if (start..start + range).all(is_free) {
            range_start = Some(start);
            break;
        }
    }
    let range_start = range_start.context("no free contiguous port range found")?;
    let mut ports = Vec::new();
    for _ in 0..usize::from(singles) * 100 {
        if ports.len() == usize::from(singles) {
            break;
        }
        let port = random_port(SPAN);
        let in_range = (range_start..range_start + range).contains(&port);
        if !in_range && !ports.contains(&port) && is_free(port) {
            ports.push(port);
        }
    }
    anyhow::ensure!(
        ports.len() == usize::from(singles),
        "only {} of {singles} free ports found",
        ports.len()
    );
    Ok(PortBlock {
        singles: ports,
        range_start,
    })
}
