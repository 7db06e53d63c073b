//! Starting and stopping a master: [`spawn`] binds, recovers the registry and serves gRPC and
//! HTTP/JSON on one port; [`MasterHandle`] stops it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::agent_service_server::AgentServiceServer;
use agora_proto::v1::operator_service_server::OperatorServiceServer;
use agora_proto::v1::scheduler_service_server::SchedulerServiceServer;
use agora_proto::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actor::Actor;
use crate::core::{Master, MasterConfig};
use crate::error::{MasterRunError, MasterStartError};
use crate::grpc::{AgentGrpc, OperatorGrpc, SchedulerGrpc};
use crate::metrics::ShellMetrics;
use crate::store::{RedbStore, RegistryStore, StoreError};

/// How long [`MasterHandle::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest gRPC message accepted or sent (cluster state of big clusters is large).
const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded redb store at `<work_dir>/master.redb`.
    Redb,
    /// etcd at these endpoints (`etcd://host:port[,host:port…]`). Not built yet: starting a
    /// master with it fails with [`MasterStartError::UnsupportedStore`].
    Etcd {
        /// The spec as given.
        url: String,
    },
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "redb" {
            return Ok(StoreSpec::Redb);
        }
        if text.starts_with("etcd://") {
            return Ok(StoreSpec::Etcd {
                url: text.to_owned(),
            });
        }
        Err(format!(
            "{text:?} is not a store: use \"redb\" or \"etcd://host:port[,host:port...]\""
        ))
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Redb => f.write_str("redb"),
            StoreSpec::Etcd { url } => f.write_str(url),
        }
    }
}

/// Everything [`spawn`] needs to run a master.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = agora_master::MasterSettings::new(
///     "127.0.0.1:0".parse()?,
///     std::path::PathBuf::from("/tmp/agora-master"),
/// );
/// let master = agora_master::spawn(settings).await?;
/// println!("master at {}", master.url());
/// master.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MasterSettings {
    /// Address to serve gRPC and HTTP on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory for the embedded store; created when missing.
    pub work_dir: PathBuf,
    /// The core's settings (timeouts, intervals, weights).
    pub core: MasterConfig,
    /// Where the registry lives.
    pub store: StoreSpec,
    /// Messages buffered per agent stream before that agent counts as too slow and is dropped.
    /// A framework's event stream gets 16 times as much: one deploy of many tasks sends a
    /// burst of updates that a healthy framework drains a moment later.
    pub stream_buffer: usize,
    /// Connection timeouts and limits of the port: a connection silent for 10 s, or an
    /// HTTP/1 request head slower than 30 s, is closed, so half-open connections cannot
    /// starve the master.
    pub serve_limits: agora_proto::ServeLimits,
}

impl MasterSettings {
    /// Settings with the default core configuration and the embedded store.
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> Self {
        Self {
            listen,
            work_dir,
            core: MasterConfig::default(),
            store: StoreSpec::Redb,
            stream_buffer: 4096,
            serve_limits: agora_proto::ServeLimits {
                shutdown_grace: SHUTDOWN_GRACE,
                ..agora_proto::ServeLimits::default()
            },
        }
    }
}

/// A running master. Dropping it stops the master in the background; call
/// [`MasterHandle::shutdown`] to wait until it has stopped and its store is closed.
pub struct MasterHandle {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    state_task: Option<JoinHandle<Result<(), MasterRunError>>>,
    server_task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for MasterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MasterHandle {
    /// The address actually bound (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL for clients, e.g. `http://127.0.0.1:5050`. A wildcard bind address is
    /// reported as loopback.
    pub fn url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Resolves once the master has begun to stop: [`MasterHandle::shutdown`] was called, or
    /// it failed on its own (then `shutdown` returns why).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops gracefully: ends every agent and framework stream, stops serving, waits for
    /// connections (at most a few seconds) and closes the store. Returns the error that made
    /// the master stop on its own, if one did.
    pub async fn shutdown(mut self) -> Result<(), MasterRunError> {
        self.shutdown.cancel();
        let state_result = match self.state_task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|error| Err(MasterRunError::ActorFailed(error.to_string()))),
            None => Ok(()),
        };
        let serve_result = match self.server_task.take() {
            Some(mut task) => match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                Ok(Ok(result)) => result.map_err(MasterRunError::Serve),
                Ok(Err(error)) => Err(MasterRunError::Serve(std::io::Error::other(error))),
                Err(_elapsed) => {
                    tracing::warn!("connections still open after the grace period; closing them");
                    task.abort();
                    Ok(())
                }
            },
            None => Ok(()),
        };
        tracing::info!("master stopped");
        state_result.and(serve_result)
    }
}

impl Drop for MasterHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn blocking_failed(operation: &'static str) -> impl Fn(tokio::task::JoinError) -> StoreError {
    move |error| StoreError::Backend {
        operation,
        reason: format!("store task failed: {error}"),
    }
}

/// Starts a master: opens the store and recovers the registry, binds `settings.listen`, and
/// serves gRPC (scheduler, agent and operator services) and HTTP/JSON on that one port.
/// Returns once it is serving.
pub async fn spawn(settings: MasterSettings) -> Result<MasterHandle, MasterStartError> {
    let store: Arc<dyn RegistryStore> = match &settings.store {
        StoreSpec::Redb => {
            let work_dir = settings.work_dir.clone();
            let opened = tokio::task::spawn_blocking(move || RedbStore::open_in(&work_dir))
                .await
                .map_err(blocking_failed("open"))??;
            Arc::new(opened)
        }
        StoreSpec::Etcd { url } => {
            return Err(MasterStartError::UnsupportedStore {
                spec: url.clone(),
                reason: "the etcd store is not built yet; use --store redb".to_owned(),
            });
        }
    };
    let loading_store = Arc::clone(&store);
    let registry = tokio::task::spawn_blocking(move || loading_store.load())
        .await
        .map_err(blocking_failed("load"))??;

    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| MasterStartError::Bind {
                address: settings.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| MasterStartError::Bind {
            address: settings.listen,
            source,
        })?;

    let shutdown = CancellationToken::new();
    let metrics = Arc::new(ShellMetrics::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let master = Master::new(settings.core.clone(), clock.now(), registry);
    let (actor, actor_handle) = Actor::new(
        master,
        store,
        Arc::clone(&metrics),
        shutdown.clone(),
        local_addr.to_string(),
        clock,
    );

    let state_shutdown = shutdown.clone();
    let state_task = tokio::spawn(async move {
        let result = tokio::spawn(actor.run()).await;
        // However the state task ended, nothing can be served without it.
        state_shutdown.cancel();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(store_error)) => Err(MasterRunError::Store(store_error)),
            Err(join_error) => {
                tracing::error!(error = %join_error, "master state task failed");
                Err(MasterRunError::ActorFailed(join_error.to_string()))
            }
        }
    });

    let grpc_routes = tonic::service::Routes::new(
        SchedulerServiceServer::new(SchedulerGrpc::new(
            actor_handle.clone(),
            settings.stream_buffer,
        ))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
    )
    .add_service(
        AgentServiceServer::new(AgentGrpc::new(actor_handle.clone(), settings.stream_buffer))
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
    )
    .add_service(
        OperatorServiceServer::new(OperatorGrpc::new(actor_handle.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
    );
    let app = crate::http::routes(actor_handle, metrics)
        .merge(grpc_routes.into_axum_router())
        .fallback(crate::http::not_found);

    let serve_shutdown = shutdown.clone();
    let serve_limits = settings.serve_limits;
    let server_task = tokio::spawn(async move {
        agora_proto::serve(
            listener,
            app,
            serve_limits,
            serve_shutdown.cancelled_owned(),
        )
        .await
    });
    tracing::info!(address = %local_addr, "master listening (grpc and http)");

    Ok(MasterHandle {
        local_addr,
        shutdown,
        state_task: Some(state_task),
        server_task: Some(server_task),
    })
}
