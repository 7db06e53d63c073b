//! The daemon's shell: [`spawn`] opens the store, builds the [`BatchCore`] from it and hands
//! it to the SDK's [`daemon`], which subscribes with the stored framework id, runs the core
//! in the SDK's runtime (store writes before the launches that depend on them) and serves the
//! HTTP API; this file only plugs batch's core and store into it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use agora_sdk::daemon::{self, DaemonConfig, DaemonError, DaemonHandle, DaemonStartError};
use agora_sdk::store::blocking;
use agora_sdk::{CoreCalls, FrameworkCore, LaunchFailure};
use jiff::Timestamp;

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

/// Why the daemon could not start: its store, its stored state, its listen address or
/// the driver's configuration.
pub type BatchStartError = DaemonStartError;

/// Why the daemon stopped on its own: a store write failed (it stops rather than act on
/// unsaved state), the master ended the framework, or the HTTP server failed.
pub type BatchRunError = DaemonError<StoreError>;

/// A running daemon. Dropping it stops the daemon in the background; its `shutdown` waits
/// until it has stopped and closed its store.
pub type BatchHandle = DaemonHandle<StoreError>;

/// Starts the daemon; returns once the API is serving and the driver is subscribing.
pub async fn spawn(settings: BatchSettings) -> Result<BatchHandle, BatchStartError> {
    let work_dir = settings.work_dir.clone();
    let store = Arc::new(blocking("open", move || BatchStore::open_in(&work_dir)).await?);
    let loading = Arc::clone(&store);
    let snapshot = blocking("load", move || loading.load()).await?;
    tracing::info!(
        jobs = snapshot.jobs.len(),
        runs = snapshot.runs.len(),
        framework_id = snapshot.meta.framework_id.as_deref().unwrap_or(""),
        path = %store.path().display(),
        "store loaded"
    );
    let core = BatchCore::new(settings.core.clone(), snapshot);

    let framework = v1::FrameworkInfo {
        id: core.framework_id().unwrap_or_default().to_owned(),
        name: settings.framework_name.clone(),
        failover_timeout_seconds: settings.failover_timeout.as_secs_f64(),
        // Attempts on an unreachable agent keep their place for a grace period rather than
        // being reported lost at once (see CoreConfig::unreachable_grace).
        capabilities: vec![v1::FrameworkCapability::PartitionAware as i32],
        ..Default::default()
    };
    let config = DaemonConfig::new(
        settings.master_url,
        framework,
        settings.listen,
        settings.tick_interval,
    );
    let handle = daemon::start(config, core, store, None, |api| {
        crate::http::router(crate::http::ApiState { calls: api.calls })
    })
    .await?;
    Ok(handle)
}

/// The core's clock reading for `now` (the system clock's, when out of its range).
fn timestamp(now: SystemTime) -> Timestamp {
    Timestamp::try_from(now).unwrap_or_else(|_| Timestamp::now())
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
