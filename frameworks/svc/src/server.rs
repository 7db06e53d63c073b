//! Running the daemon: [`spawn`] opens the store, recovers the core and hands it to the SDK's
//! [`daemon`], which subscribes to the master, runs the core in the SDK's runtime (store
//! writes before anything is sent) and serves the REST API; this file only plugs svc's core
//! and store into it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use agora_sdk::daemon::{self, DaemonConfig, DaemonError, DaemonHandle, DaemonStartError};
use agora_sdk::store::blocking;
use agora_sdk::{CoreCalls, FrameworkCore, LaunchFailure};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::core::{Command, CoreConfig, StoreWrite, SvcCore, SvcEvent};
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

/// Why the daemon could not start: its store, its stored state, its listen address or
/// the driver's configuration.
pub type SvcStartError = DaemonStartError;

/// Why the daemon stopped on its own: a store write failed (it stops rather than act on
/// state it could not save), or the master ended the framework for good.
pub type SvcRunError = DaemonError<StoreError>;

/// A running daemon; dropping it stops the daemon in the background.
pub type SvcHandle = DaemonHandle<StoreError>;

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

/// Opens the store, recovers, subscribes and serves.
pub async fn spawn(settings: SvcSettings) -> Result<SvcHandle, SvcStartError> {
    let work_dir = settings.work_dir.clone();
    let store = Arc::new(blocking("open", move || SvcStore::open(&work_dir)).await?);
    let loader = store.clone();
    let recovered = blocking("load", move || loader.load()).await?;
    let mut core_config = settings.core.clone();
    if core_config.seed == 0 {
        core_config.seed = rand::random();
    }
    let core = SvcCore::recover(core_config, recovered).map_err(DaemonStartError::recovery)?;
    tracing::info!(
        framework_id = core.framework_id().unwrap_or("(new)"),
        work_dir = %settings.work_dir.display(),
        "svcframework state loaded"
    );

    let framework = v1::FrameworkInfo {
        id: core.framework_id().unwrap_or_default().to_owned(),
        name: settings.framework_name.clone(),
        failover_timeout_seconds: settings.failover_timeout_seconds,
        // Instances show TASK_KILLING while their grace period runs (as Marathon's do); the
        // master sends it only to frameworks that declare they understand it.
        capabilities: vec![v1::FrameworkCapability::TaskKillingState as i32],
        ..Default::default()
    };
    let mut config = DaemonConfig::new(
        settings.master_url,
        framework,
        settings.listen,
        settings.tick_interval,
    );
    // Room for a burst of updates (100,000 instances starting at once) while the daemon is
    // busy: the master drops a framework stream that falls too far behind.
    config.event_buffer = Some(DRIVER_EVENT_BUFFER);
    let (events, _) = broadcast::channel(1024);
    let notices = events.clone();
    let handle = daemon::start(config, core, store, Some(notices), move |api| {
        http::routes(CoreHandle {
            calls: api.calls,
            events,
            shutdown: api.shutdown,
        })
    })
    .await?;
    Ok(handle)
}

/// Driver events buffered between the master's stream and the runtime.
const DRIVER_EVENT_BUFFER: usize = 1 << 16;

/// Seconds since the epoch, the core's clock.
fn seconds(now: SystemTime) -> f64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0)
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
