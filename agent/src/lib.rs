//! The Agora agent: reports what the machine has to the master and runs the tasks it is given
//! through Docker, as plain processes, or not at all (sim), without ever losing one.

mod checkpoint;
mod config;
mod connection;
mod core;
mod durations;
mod error;
mod health;
mod http;
mod launch_policy;
mod naming;
mod resources;
mod runtime;
mod shell;
mod snapshot;
mod task_env;
mod task_key;
mod update_stream;

use std::net::SocketAddr;
use std::sync::Arc;

use agora_proto::v1::AgentInfo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use checkpoint::{CheckpointStore, RecoveredTask, TaskCheckpoint, parse_update_log};
pub use config::{
    AgentConfig, DEFAULT_KILL_GRACE_SECONDS, RuntimeKind, default_hostname, parse_label,
    parse_resource_overrides,
};
pub use durations::{
    DurationError, MAX_HEALTH_CHECK_SECONDS, MAX_KILL_GRACE, checked_seconds, clamped_seconds,
};
pub use error::{AgentError, RuntimeError};
pub use health::{HealthPolicy, HealthTracker};
pub use launch_policy::{LaunchPolicy, LaunchRefusal, normalise, validate_launch};
pub use naming::{
    MAX_NAME_LEN, escape as escape_name_part, task_name, unescape as unescape_name_part,
};
pub use resources::{DEFAULT_PORTS, detect_resources, memory_reserve_mib, merge_overrides};
pub use runtime::docker::{
    LABEL_AGENT_ID, LABEL_FRAMEWORK_ID, LABEL_TASK_ID, connect_docker, container_name,
};
pub use runtime::sim::SIM_DURATION_LABEL;
pub use runtime::{
    ContainerHandle, ContainerState, DiscoveredContainer, DockerRuntime, ExitStatus, LaunchSpec,
    ProcessRuntime, Runtime, SimRuntime,
};
pub use snapshot::{AgentMetrics, AgentSnapshot, TaskSnapshot};
pub use task_env::{env_name, network_mode, port_bindings, task_environment, task_host_ports};
pub use task_key::TaskKey;
pub use update_stream::{StatusUpdateStream, UpdateRecord, UpdateStreamError};

use crate::core::{AgentCore, CoreConfig};
use shell::{AgentEvent, AgentShell, EVENT_CAPACITY};

/// A running agent started with [`spawn`].
#[derive(Debug)]
pub struct AgentHandle {
    events: mpsc::Sender<AgentEvent>,
    shutdown: CancellationToken,
    join: JoinHandle<Result<(), AgentError>>,
    http_address: Option<SocketAddr>,
    runtime: RuntimeKind,
}

impl AgentHandle {
    /// Where the HTTP endpoint listens (useful with port 0), if it does.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_address
    }

    /// The runtime in use (after automatic selection).
    pub fn runtime(&self) -> RuntimeKind {
        self.runtime
    }

    /// The agent's current state; `None` once it stopped.
    pub async fn snapshot(&self) -> Option<AgentSnapshot> {
        http::request_snapshot(&self.events).await
    }

    /// Stops the agent (tasks keep running unless `kill_tasks_on_shutdown`) and waits for it.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the agent stops: `Ok` once its shutdown token was cancelled, an error when
    /// it stopped on its own (a checkpoint write failed).
    pub async fn wait(self) -> Result<(), AgentError> {
        self.join.await.map_err(|error| AgentError::Stopped {
            reason: error.to_string(),
        })?
    }
}

/// Starts an agent in this process: selects the runtime, detects resources, opens the
/// checkpoint, listens for HTTP, then recovers, connects and runs until `shutdown` is cancelled
/// or [`AgentHandle::shutdown`] is called.
pub async fn spawn(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<AgentHandle, AgentError> {
    let shutdown = shutdown.child_token();
    let runtime = select_runtime(&config).await?;
    let runtime_kind = runtime.kind();
    let checkpoint = match &config.work_dir {
        Some(dir) => CheckpointStore::open(dir)?,
        None => CheckpointStore::disabled(),
    };
    let work_dir = config.work_dir.clone();
    let overrides = config.resource_overrides.clone();
    let resources =
        tokio::task::spawn_blocking(move || detect_resources(work_dir.as_deref(), &overrides))
            .await
            .map_err(|error| AgentError::Stopped {
                reason: format!("resource detection failed: {error}"),
            })?;
    let (events, receiver) = mpsc::channel(EVENT_CAPACITY);
    let http_address = match config.listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| AgentError::Listen {
                    address: address.to_string(),
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| AgentError::Listen {
                address: address.to_string(),
                source,
            })?;
            let router = http::router(events.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "http endpoint stopped");
                }
            });
            Some(bound)
        }
        None => None,
    };
    let advertised = http_address.map(|address| {
        if address.ip().is_unspecified() {
            format!("{}:{}", config.hostname, address.port())
        } else {
            address.to_string()
        }
    });
    let info = AgentInfo {
        id: String::new(),
        hostname: config.hostname.clone(),
        address: advertised.unwrap_or_default(),
        resources: resources.to_proto(),
        labels: config.labels.clone().into_iter().collect(),
        runtimes: vec![runtime_kind.as_str().to_owned()],
        version: agora_proto::VERSION.to_owned(),
    };
    tracing::info!(hostname = %config.hostname, runtime = runtime_kind.as_str(), resources = %resources, master = %config.master_url, "agent starting");
    let config = Arc::new(config);
    let core = AgentCore::new(
        CoreConfig {
            hostname: config.hostname.clone(),
            launch_policy: LaunchPolicy {
                runtime: runtime_kind,
                allow_privileged: config.allow_privileged,
                allowed_host_paths: config.allowed_host_paths.clone(),
            },
            default_kill_grace: config.default_kill_grace,
        },
        checkpoint.load_agent_id(),
        info,
        resources,
    );
    let agent = AgentShell::new(
        Arc::clone(&config),
        core,
        runtime,
        checkpoint,
        events.clone(),
    );
    let connection = tokio::spawn(connection::run_connection(
        config.master_url.clone(),
        events.clone(),
        config.reconnect_backoff_min,
        config.reconnect_backoff_max,
        shutdown.clone(),
    ));
    let loop_shutdown = shutdown.clone();
    let join = tokio::spawn(async move {
        let outcome = agent.run(receiver, loop_shutdown).await;
        connection.abort();
        outcome
    });
    Ok(AgentHandle {
        events,
        shutdown,
        join,
        http_address,
        runtime: runtime_kind,
    })
}

/// Runs an agent until `shutdown` is cancelled.
pub async fn run_agent(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    spawn(config, shutdown).await?.wait().await
}

async fn select_runtime(config: &AgentConfig) -> Result<Arc<dyn Runtime>, AgentError> {
    let sandboxes = config.work_dir.as_ref().map(|dir| dir.join("sandboxes"));
    match config.runtime {
        Some(RuntimeKind::Sim) => Ok(Arc::new(SimRuntime::new())),
        Some(RuntimeKind::Process) => Ok(Arc::new(ProcessRuntime::new(sandboxes))),
        Some(RuntimeKind::Docker) => {
            let docker = connect_docker(config.docker_host.as_deref()).await?;
            Ok(Arc::new(DockerRuntime::new(docker)))
        }
        None => match connect_docker(config.docker_host.as_deref()).await {
            Ok(docker) => Ok(Arc::new(DockerRuntime::new(docker))),
            Err(error) => {
                tracing::warn!(%error, "no docker engine answered: falling back to the process runtime; tasks will run as plain processes on this host");
                eprintln!(
                    "agora-agent: WARNING: no Docker Engine answered ({error}); falling back to the PROCESS runtime: tasks run as plain processes on this host"
                );
                Ok(Arc::new(ProcessRuntime::new(sandboxes)))
            }
        },
    }
}
