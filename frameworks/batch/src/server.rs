//! The daemon's shell: [`spawn`] opens the store, starts the SDK driver with the stored
//! framework id and serves the HTTP API. The SDK's [`Runtime`] owns the [`BatchCore`] and
//! carries out its commands (store writes before the launches that depend on them); this file
//! only plugs batch's core and store into it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use agora_sdk::runtime::core_calls;
use agora_sdk::{
    CoreCalls, DriverConfig, FrameworkCore, FrameworkStore, LaunchFailure, Runtime, RuntimeConfig,
    RuntimeError, SchedulerDriver, SdkError,
};
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::core::{BatchCore, Command, CoreConfig, StoreOp};
use crate::store::{BatchStore, StoreError};

/// Everything [`spawn`] needs.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// The master's URL, e.g. `http://127.0.0.1:5050`.
    pub master_url: String,
    /// Address of the HTTP API. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the store (`batch.redb`); created when missing.
    pub work_dir: PathBuf,
    /// Framework name shown by the master.
    pub framework_name: String,
    /// How long the master keeps our tasks while we are away.
    pub failover_timeout: Duration,
    /// How often the clock ticks into the core (schedules, deadlines, backoffs).
    pub tick_interval: Duration,
    /// The core's tunables.
    pub core: CoreConfig,
}

impl BatchSettings {
    /// Defaults: name `batchframework`, failover timeout one week, ticks every 250 ms.
    pub fn new(master_url: impl Into<String>, listen: SocketAddr, work_dir: PathBuf) -> Self {
        Self {
            master_url: master_url.into(),
            listen,
            work_dir,
            framework_name: "batchframework".to_owned(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            tick_interval: Duration::from_millis(250),
            core: CoreConfig::default(),
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum BatchStartError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("binding {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The driver refused its configuration.
    #[error("scheduler driver: {0}")]
    Driver(#[from] SdkError),
}

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum BatchRunError {
    /// A store write failed; the daemon stops rather than act on unsaved state.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master ended the framework for good.
    #[error("the master ended the framework: {0}")]
    FrameworkEnded(String),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(std::io::Error),
    /// A task of the daemon panicked.
    #[error("daemon task failed: {0}")]
    TaskFailed(String),
}

/// A running daemon. Dropping it stops the daemon in the background; [`BatchHandle::shutdown`]
/// waits until it has stopped and closed its store.
pub struct BatchHandle {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    actor: Option<JoinHandle<Result<(), BatchRunError>>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for BatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl BatchHandle {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:8090` (wildcard binds shown as loopback).
    pub fn url(&self) -> String {
        let ip = if self.local_addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.local_addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Resolves once the daemon has begun to stop.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops: the driver leaves without tearing the framework down (tasks keep running for
    /// the failover timeout), the API stops, the store is closed.
    pub async fn shutdown(mut self) -> Result<(), BatchRunError> {
        self.shutdown.cancel();
        let actor_result = match self.actor.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|error| Err(BatchRunError::TaskFailed(error.to_string()))),
            None => Ok(()),
        };
        let server_result = match self.server.take() {
            Some(mut task) => match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(Ok(result)) => result.map_err(BatchRunError::Serve),
                Ok(Err(error)) => Err(BatchRunError::TaskFailed(error.to_string())),
                Err(_) => {
                    task.abort();
                    Ok(())
                }
            },
            None => Ok(()),
        };
        tracing::info!("batchframework stopped");
        actor_result.and(server_result)
    }
}

impl Drop for BatchHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the daemon; returns once the API is serving and the driver is subscribing.
pub async fn spawn(settings: BatchSettings) -> Result<BatchHandle, BatchStartError> {
    let work_dir = settings.work_dir.clone();
    let store = tokio::task::spawn_blocking(move || BatchStore::open_in(&work_dir))
        .await
        .map_err(|error| StoreError::Backend {
            operation: "open",
            reason: error.to_string(),
        })??;
    let store = Arc::new(store);
    let loading = Arc::clone(&store);
    let snapshot = tokio::task::spawn_blocking(move || loading.load())
        .await
        .map_err(|error| StoreError::Backend {
            operation: "load",
            reason: error.to_string(),
        })??;
    tracing::info!(
        jobs = snapshot.jobs.len(),
        runs = snapshot.runs.len(),
        framework_id = snapshot.meta.framework_id.as_deref().unwrap_or(""),
        path = %store.path().display(),
        "store loaded"
    );
    let core = BatchCore::new(settings.core.clone(), snapshot);

    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| BatchStartError::Bind {
                address: settings.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| BatchStartError::Bind {
            address: settings.listen,
            source,
        })?;

    let framework = v1::FrameworkInfo {
        id: core.framework_id().unwrap_or_default().to_owned(),
        name: settings.framework_name.clone(),
        failover_timeout_seconds: settings.failover_timeout.as_secs_f64(),
        // Attempts on an unreachable agent keep their place for a grace period rather than
        // being reported lost at once (see CoreConfig::unreachable_grace).
        capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
        ..Default::default()
    };
    let mut driver_config = DriverConfig::new(settings.master_url.clone(), framework);
    // Updates are acknowledged only after what they changed is stored.
    driver_config.auto_acknowledge = false;
    let (driver, events) = SchedulerDriver::start(driver_config)?;

    let shutdown = CancellationToken::new();
    let (calls, call_receiver) = core_calls(256);
    let runtime_config = RuntimeConfig {
        tick_interval: settings.tick_interval,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(core, store, driver, runtime_config);
    let actor_shutdown = shutdown.clone();
    let actor_task = tokio::spawn(async move {
        let result = runtime
            .run(events, call_receiver, actor_shutdown.clone())
            .await
            .map_err(BatchRunError::from);
        actor_shutdown.cancel();
        result
    });

    let router = crate::http::router(crate::http::ApiState { calls });
    let server_shutdown = shutdown.clone();
    let server_task = tokio::spawn(async move {
        // Timeouts on silent and slow connections, so half-open ones cannot starve the API.
        agora_proto::serve(
            listener,
            router,
            agora_proto::ServeLimits::default(),
            server_shutdown.cancelled_owned(),
        )
        .await
    });
    tracing::info!(address = %local_addr, master = %settings.master_url, "batchframework serving");
    Ok(BatchHandle {
        local_addr,
        shutdown,
        actor: Some(actor_task),
        server: Some(server_task),
    })
}

impl From<RuntimeError<StoreError>> for BatchRunError {
    fn from(error: RuntimeError<StoreError>) -> Self {
        match error {
            RuntimeError::Store(error) => BatchRunError::Store(error),
            RuntimeError::StoreTask(reason) => BatchRunError::TaskFailed(reason),
            RuntimeError::Ended(message) => BatchRunError::FrameworkEnded(message),
        }
    }
}

/// The core's clock reading for `now` (the system clock's, when out of its range).
fn timestamp(now: SystemTime) -> Timestamp {
    Timestamp::try_from(now).unwrap_or_else(|_| Timestamp::now())
}

impl FrameworkStore for BatchStore {
    type Write = StoreOp;
    type Error = StoreError;

    fn apply(&self, writes: &[StoreOp]) -> Result<(), StoreError> {
        BatchStore::apply(self, writes)
    }
}

impl FrameworkCore for BatchCore {
    type Write = StoreOp;
    type Notice = std::convert::Infallible;

    fn on_subscribed(&mut self, framework_id: &FrameworkId, now: SystemTime) {
        self.subscribed(framework_id.as_str(), timestamp(now));
    }

    fn on_disconnected(&mut self) {
        self.disconnected();
    }

    fn on_offers(&mut self, offers: Vec<v1::Offer>, now: SystemTime) {
        self.offers(offers, timestamp(now));
    }

    /// Offers are answered when they arrive, so a rescinded one holds nothing to undo.
    fn on_rescind(&mut self, _offer_id: &OfferId, _now: SystemTime) {}

    fn on_updates(&mut self, statuses: &[v1::TaskStatus], now: SystemTime) {
        let now = timestamp(now);
        for status in statuses {
            self.status_update(status.clone(), now);
        }
    }

    fn on_agent_failure(&mut self, agent_id: &AgentId, now: SystemTime) {
        self.agent_lost(agent_id, timestamp(now));
    }

    fn on_launch_failed(&mut self, task_ids: &[TaskId], failure: LaunchFailure, now: SystemTime) {
        self.launch_failed(task_ids, failure == LaunchFailure::Refused, timestamp(now));
    }

    fn tick(&mut self, now: SystemTime) {
        BatchCore::tick(self, timestamp(now));
    }

    fn take_commands(&mut self) -> Vec<Command> {
        BatchCore::take_commands(self)
    }
}

/// Sends `call` to the runtime and waits for its answer (after its commands were carried out).
pub(crate) async fn call_core<T: Send + 'static>(
    calls: &CoreCalls<BatchCore>,
    call: impl FnOnce(&mut BatchCore, Timestamp) -> T + Send + 'static,
) -> Option<T> {
    calls
        .call(move |core, now| call(core, timestamp(now)))
        .await
}
