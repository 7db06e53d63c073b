//! Running a framework as a daemon: [`start`] binds the HTTP API, starts the
//! [`SchedulerDriver`] and a [`Runtime`] around an already recovered core and its store, and
//! serves the API; the [`DaemonHandle`] stops both in order. A framework's own shell only
//! opens its store, recovers its core, describes its [`v1::FrameworkInfo`] and builds its
//! routes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::runtime::{CoreCalls, FrameworkCore, FrameworkStore, Runtime, RuntimeConfig};
use crate::runtime::{RuntimeError, core_calls};
use crate::store::StoreError;
use crate::{DriverConfig, SchedulerDriver, SdkError};

/// Calls from the HTTP API that may wait for the runtime at once.
const CALL_QUEUE: usize = 256;

/// How long a shutdown waits for open HTTP requests before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What [`start`] needs besides the core, the store and the routes.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The master's URL, e.g. `http://127.0.0.1:5050`.
    pub master_url: String,
    /// The framework as it subscribes: the stored id (empty when new), name, failover
    /// timeout, capabilities.
    pub framework: v1::FrameworkInfo,
    /// Where the HTTP API listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How often the core's timers run.
    pub tick_interval: Duration,
    /// Driver events buffered between the master's stream and the runtime; `None` keeps the
    /// driver's default. The master drops a framework stream that falls too far behind, so
    /// a framework with bursts of updates asks for more.
    pub event_buffer: Option<usize>,
}

impl DaemonConfig {
    /// A daemon of `framework` on the master at `master_url`, its API on `listen`, its core's
    /// timers run every `tick_interval`, the driver's default event buffer.
    pub fn new(
        master_url: impl Into<String>,
        framework: v1::FrameworkInfo,
        listen: SocketAddr,
        tick_interval: Duration,
    ) -> Self {
        DaemonConfig {
            master_url: master_url.into(),
            framework,
            listen,
            tick_interval,
            event_buffer: None,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonStartError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state does not make a core (e.g. records of an unknown version).
    #[error(transparent)]
    Recovery(Box<dyn std::error::Error + Send + Sync>),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The driver refused its configuration.
    #[error("cannot start the scheduler driver: {0}")]
    Driver(#[from] SdkError),
}

/// Why the daemon stopped on its own, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError<E: std::error::Error + 'static> {
    /// The runtime stopped: a store write failed or the master ended the framework.
    #[error(transparent)]
    Runtime(#[from] RuntimeError<E>),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(std::io::Error),
    /// A task of the daemon panicked.
    #[error("daemon task failed: {0}")]
    TaskFailed(String),
}

impl DaemonStartError {
    /// The core could not be recovered from what the store holds.
    pub fn recovery(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        DaemonStartError::Recovery(Box::new(error))
    }
}

/// What the routes of the API get: calls into the core, and a token cancelled when the
/// daemon stops (long-lived responses such as event streams end then).
#[derive(Debug)]
pub struct ApiContext<C> {
    /// Runs functions on the core inside the runtime.
    pub calls: CoreCalls<C>,
    /// Cancelled when the daemon begins to stop.
    pub shutdown: CancellationToken,
}

/// Binds `config.listen`, starts the driver (acknowledging updates only once what they
/// changed is stored) and the runtime over `core` and `store`, and serves the routes
/// `routes` builds. Returns once the API is serving and the driver is subscribing.
/// [`crate::Command::Publish`] notices go to `notices` when given.
pub async fn start<C, S>(
    config: DaemonConfig,
    core: C,
    store: Arc<S>,
    notices: Option<broadcast::Sender<C::Notice>>,
    routes: impl FnOnce(ApiContext<C>) -> axum::Router,
) -> Result<DaemonHandle<S::Error>, DaemonStartError>
where
    C: FrameworkCore + Sync,
    S: FrameworkStore<Write = C::Write>,
{
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonStartError::Bind {
                address: config.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| DaemonStartError::Bind {
            address: config.listen,
            source,
        })?;
    let framework_name = config.framework.name.clone();

    let mut driver_config = DriverConfig::new(config.master_url.clone(), config.framework);
    // Acknowledge an update only after its consequences are stored.
    driver_config.auto_acknowledge = false;
    if let Some(event_buffer) = config.event_buffer {
        driver_config.event_buffer = event_buffer;
    }
    let (driver, driver_events) = SchedulerDriver::start(driver_config)?;

    let shutdown = CancellationToken::new();
    let (calls, call_receiver) = core_calls(CALL_QUEUE);
    let runtime_config = RuntimeConfig {
        tick_interval: config.tick_interval,
        ..RuntimeConfig::default()
    };
    let mut runtime = Runtime::new(core, store, driver, runtime_config);
    if let Some(notices) = notices {
        runtime = runtime.with_notices(notices);
    }
    let runtime_shutdown = shutdown.clone();
    let runtime_task = tokio::spawn(async move {
        let result = runtime
            .run(driver_events, call_receiver, runtime_shutdown.clone())
            .await;
        // A runtime that stopped by itself takes the API down with it.
        runtime_shutdown.cancel();
        result
    });

    let router = routes(ApiContext {
        calls,
        shutdown: shutdown.clone(),
    });
    let server_shutdown = shutdown.clone();
    let server_name = framework_name.clone();
    let server_task = tokio::spawn(async move {
        // Timeouts on silent and slow connections, so half-open ones cannot starve the API.
        let served = agora_proto::serve(
            listener,
            router,
            agora_proto::ServeLimits::default(),
            server_shutdown.cancelled_owned(),
        )
        .await;
        if let Err(error) = &served {
            tracing::error!(%error, framework = %server_name, "http server failed");
        }
        served
    });
    tracing::info!(
        framework = %framework_name,
        listen = %local_addr,
        master = %config.master_url,
        "{framework_name} serving"
    );
    Ok(DaemonHandle {
        local_addr,
        framework_name,
        shutdown,
        runtime: Some(runtime_task),
        server: Some(server_task),
    })
}

/// A running daemon. Dropping it stops the daemon in the background;
/// [`DaemonHandle::shutdown`] waits until it has stopped.
pub struct DaemonHandle<E: std::error::Error + 'static> {
    local_addr: SocketAddr,
    framework_name: String,
    shutdown: CancellationToken,
    runtime: Option<JoinHandle<Result<(), RuntimeError<E>>>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl<E: std::error::Error + 'static> std::fmt::Debug for DaemonHandle<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHandle")
            .field("framework", &self.framework_name)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<E: std::error::Error + Send + 'static> DaemonHandle<E> {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:8090` (a wildcard bind shown as loopback).
    pub fn url(&self) -> String {
        let ip = if self.local_addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.local_addr.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// A token that stops the daemon when cancelled.
    pub fn cancellation(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves once the daemon has begun to stop (cancelled, or its runtime stopped).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops: the driver leaves without tearing the framework down (its tasks keep running
    /// for the failover timeout, as after a crash), the runtime ends (closing the store
    /// once the last reference goes), and the API stops after letting open requests finish
    /// for a few seconds.
    pub async fn shutdown(mut self) -> Result<(), DaemonError<E>> {
        self.shutdown.cancel();
        let runtime_result = match self.runtime.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(DaemonError::Runtime),
                Err(error) => Err(DaemonError::TaskFailed(error.to_string())),
            },
            None => Ok(()),
        };
        let server_result = match self.server.take() {
            Some(mut task) => match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                Ok(Ok(result)) => result.map_err(DaemonError::Serve),
                Ok(Err(error)) => Err(DaemonError::TaskFailed(error.to_string())),
                Err(_) => {
                    task.abort();
                    Ok(())
                }
            },
            None => Ok(()),
        };
        tracing::info!(framework = %self.framework_name, "{} stopped", self.framework_name);
        runtime_result.and(server_result)
    }

    /// Waits until the daemon stops by itself (or through its [`cancellation`] token), then
    /// shuts it down.
    ///
    /// [`cancellation`]: DaemonHandle::cancellation
    pub async fn wait(self) -> Result<(), DaemonError<E>> {
        self.stopped().await;
        self.shutdown().await
    }

    /// Runs until Ctrl-C or SIGTERM (see [`shutdown_signal`]) or until the daemon stops by
    /// itself, then shuts it down: what a daemon's `serve` command does.
    pub async fn serve_until_signal(self) -> Result<(), DaemonError<E>> {
        tokio::select! {
            () = shutdown_signal() => {}
            () = self.stopped() => {}
        }
        self.shutdown().await
    }
}

impl<E: std::error::Error + 'static> Drop for DaemonHandle<E> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Resolves on Ctrl-C or SIGTERM (Ctrl-C alone where SIGTERM cannot be watched).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = ctrl_c => tracing::info!("interrupted; stopping"),
                _ = terminate.recv() => tracing::info!("SIGTERM; stopping"),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = ctrl_c.await;
            tracing::info!("interrupted; stopping");
        }
    }
}
