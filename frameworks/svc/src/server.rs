//! Running the daemon: [`spawn`] opens the store, recovers the core, subscribes to the master
//! and serves the REST API. The SDK's [`Runtime`] owns the core and carries out its commands
//! (store writes before anything is sent); this file only plugs svc's core and store into it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use agora_sdk::runtime::core_calls;
use agora_sdk::{
    CoreCalls, DriverConfig, FrameworkCore, FrameworkStore, LaunchFailure, Runtime, RuntimeConfig,
    RuntimeError, SchedulerDriver,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::core::StoreWrite;
use crate::core::{Command, CoreConfig, SvcCore, SvcEvent};
use crate::http;
use crate::store::{StoreError, SvcStore};

/// Everything [`spawn`] needs.
#[derive(Debug, Clone)]
pub struct SvcSettings {
    /// The master's URL, e.g. `http://127.0.0.1:5050`.
    pub master_url: String,
    /// Where the REST API listens.
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    pub work_dir: PathBuf,
    /// Framework name shown by the master.
    pub framework_name: String,
    /// How long the master keeps the framework's tasks while it is away (seconds).
    pub failover_timeout_seconds: f64,
    /// Core tunables.
    pub core: CoreConfig,
    /// How often timers are checked.
    pub tick_interval: Duration,
}

impl SvcSettings {
    /// Settings with the defaults for a master URL, listen address and work directory.
    pub fn new(master_url: impl Into<String>, listen: SocketAddr, work_dir: PathBuf) -> Self {
        SvcSettings {
            master_url: master_url.into(),
            listen,
            work_dir,
            framework_name: "svcframework".to_owned(),
            failover_timeout_seconds: 7.0 * 24.0 * 3600.0,
            core: CoreConfig::default(),
            tick_interval: Duration::from_millis(500),
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum SvcStartError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored state no longer loads.
    #[error(transparent)]
    Recovery(#[from] crate::core::RecoveryError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The driver refused its configuration.
    #[error("cannot start the scheduler driver: {0}")]
    Driver(String),
}

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum SvcRunError {
    /// A store write failed: the daemon stops rather than act on state it could not save.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master ended the framework for good (torn down or removed).
    #[error("the master ended the framework: {0}")]
    Removed(String),
}

/// A handle to the runtime that owns the core.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    calls: CoreCalls<SvcCore>,
    events: broadcast::Sender<SvcEvent>,
    shutdown: CancellationToken,
}

impl CoreHandle {
    /// Runs `function` on the core inside the runtime and returns its result. The answer
    /// arrives only after the commands the call produced are carried out, so a change the API
    /// confirms is already in the store; `None` when the daemon stopped (or could not store).
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        function: impl FnOnce(&mut SvcCore, f64) -> T + Send + 'static,
    ) -> Option<T> {
        self.calls
            .call(move |core, now| function(core, seconds(now)))
            .await
    }

    /// A receiver of every event published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SvcEvent> {
        self.events.subscribe()
    }

    /// Cancelled when the daemon stops: long-lived responses (the event stream) end then.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct SvcHandle {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    actor: JoinHandle<Result<(), SvcRunError>>,
    server: JoinHandle<()>,
}

impl SvcHandle {
    /// The REST API's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops serving and leaves the framework registered (its tasks keep running for the
    /// failover timeout, as after a crash), then waits for both tasks.
    pub async fn shutdown(self) -> Result<(), SvcRunError> {
        self.cancel.cancel();
        stop_server(self.server).await;
        match self.actor.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }

    /// Waits until the daemon stops by itself (or is shut down).
    pub async fn wait(self) -> Result<(), SvcRunError> {
        let result = match self.actor.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        };
        self.cancel.cancel();
        stop_server(self.server).await;
        result
    }

    /// A token that stops the daemon when cancelled.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// Waits for open HTTP requests to finish, at most [`SHUTDOWN_GRACE`].
async fn stop_server(server: JoinHandle<()>) {
    let abort = server.abort_handle();
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        abort.abort();
    }
}

/// How long a shutdown waits for open HTTP requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Opens the store, recovers, subscribes and serves.
pub async fn spawn(settings: SvcSettings) -> Result<SvcHandle, SvcStartError> {
    let work_dir = settings.work_dir.clone();
    let store = tokio::task::spawn_blocking(move || SvcStore::open(&work_dir))
        .await
        .map_err(|error| StoreError::Backend {
            operation: "open",
            reason: error.to_string(),
        })??;
    let store = Arc::new(store);
    let loader = store.clone();
    let recovered = tokio::task::spawn_blocking(move || loader.load())
        .await
        .map_err(|error| StoreError::Backend {
            operation: "load",
            reason: error.to_string(),
        })??;
    let mut core_config = settings.core.clone();
    if core_config.seed == 0 {
        core_config.seed = rand::random();
    }
    let core = SvcCore::recover(core_config, recovered)?;
    tracing::info!(
        framework_id = core.framework_id().unwrap_or("(new)"),
        work_dir = %settings.work_dir.display(),
        "svcframework state loaded"
    );

    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|error| SvcStartError::Bind {
                address: settings.listen,
                reason: error.to_string(),
            })?;
    let local_addr = listener.local_addr().map_err(|error| SvcStartError::Bind {
        address: settings.listen,
        reason: error.to_string(),
    })?;

    let framework = v1::FrameworkInfo {
        id: core.framework_id().unwrap_or_default().to_owned(),
        name: settings.framework_name.clone(),
        failover_timeout_seconds: settings.failover_timeout_seconds,
        // Instances show TASK_KILLING while their grace period runs (as Marathon's do); the
        // master sends it only to frameworks that declare they understand it.
        capabilities: vec![v1::FrameworkCapability::TaskKillingState as i32],
        ..Default::default()
    };
    let mut driver_config = DriverConfig::new(settings.master_url.clone(), framework);
    // Acknowledge an update only after its consequences are stored.
    driver_config.auto_acknowledge = false;
    // Room for a burst of updates (100,000 instances starting at once) while the daemon is
    // busy: the master drops a framework stream that falls too far behind.
    driver_config.event_buffer = DRIVER_EVENT_BUFFER;
    let (driver, driver_events) = SchedulerDriver::start(driver_config)
        .map_err(|error| SvcStartError::Driver(error.to_string()))?;

    let cancel = CancellationToken::new();
    let (calls, call_receiver) = core_calls(256);
    let (events, _) = broadcast::channel(1024);
    let handle = CoreHandle {
        calls,
        events: events.clone(),
        shutdown: cancel.clone(),
    };
    let runtime_config = RuntimeConfig {
        tick_interval: settings.tick_interval,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(core, store, driver, runtime_config).with_notices(events);
    let actor_cancel = cancel.clone();
    let actor = tokio::spawn(async move {
        runtime
            .run(driver_events, call_receiver, actor_cancel)
            .await
            .map_err(SvcRunError::from)
    });

    let router = http::routes(handle);
    let server_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        // Timeouts on silent and slow connections, so half-open ones cannot starve the API.
        let serve = agora_proto::serve(
            listener,
            router,
            agora_proto::ServeLimits::default(),
            server_cancel.cancelled_owned(),
        );
        if let Err(error) = serve.await {
            tracing::error!(%error, "svcframework http server failed");
        }
    });
    tracing::info!(listen = %local_addr, master = %settings.master_url, "svcframework serving");
    Ok(SvcHandle {
        local_addr,
        cancel,
        actor,
        server,
    })
}

/// Driver events buffered between the master's stream and the runtime.
const DRIVER_EVENT_BUFFER: usize = 1 << 16;

impl From<RuntimeError<StoreError>> for SvcRunError {
    fn from(error: RuntimeError<StoreError>) -> Self {
        match error {
            RuntimeError::Store(error) => SvcRunError::Store(error),
            RuntimeError::StoreTask(reason) => SvcRunError::Store(StoreError::Backend {
                operation: "write",
                reason,
            }),
            RuntimeError::Ended(message) => SvcRunError::Removed(message),
        }
    }
}

/// Seconds since the epoch, the core's clock.
fn seconds(now: SystemTime) -> f64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0)
}

impl FrameworkStore for SvcStore {
    type Write = StoreWrite;
    type Error = StoreError;

    fn apply(&self, writes: &[StoreWrite]) -> Result<(), StoreError> {
        SvcStore::apply(self, writes)
    }
}

impl FrameworkCore for SvcCore {
    type Write = StoreWrite;
    type Notice = SvcEvent;

    fn on_subscribed(&mut self, framework_id: &FrameworkId, now: SystemTime) {
        SvcCore::on_subscribed(self, framework_id.as_str(), seconds(now));
    }

    fn on_disconnected(&mut self) {
        SvcCore::on_disconnected(self);
    }

    fn on_offers(&mut self, offers: Vec<v1::Offer>, now: SystemTime) {
        SvcCore::on_offers(self, offers, seconds(now));
    }

    fn on_rescind(&mut self, offer_id: &OfferId, _now: SystemTime) {
        SvcCore::on_rescind(self, offer_id.as_str());
    }

    fn on_updates(&mut self, statuses: &[v1::TaskStatus], now: SystemTime) {
        SvcCore::on_updates(self, statuses, seconds(now));
    }

    fn on_agent_failure(&mut self, agent_id: &AgentId, now: SystemTime) {
        self.on_agent_lost(agent_id.as_str(), seconds(now));
    }

    fn on_launch_failed(&mut self, task_ids: &[TaskId], failure: LaunchFailure, now: SystemTime) {
        SvcCore::on_launch_failed(
            self,
            task_ids,
            failure == LaunchFailure::Refused,
            seconds(now),
        );
    }

    fn tick(&mut self, now: SystemTime) {
        SvcCore::tick(self, seconds(now));
    }

    fn take_commands(&mut self) -> Vec<Command> {
        SvcCore::take_commands(self)
    }
}
