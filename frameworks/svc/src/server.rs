//! Running the daemon: [`spawn`] opens the store, recovers the core, subscribes to the master
//! and serves the REST API; one actor task owns the core and carries out its commands in
//! order (store writes before anything is sent).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1;
use agora_sdk::{DriverConfig, DriverEvent, EventStream, SchedulerDriver};
use futures::{FutureExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Sends a call's answer; run only once the commands the call produced are carried out.
type Reply = Box<dyn FnOnce() + Send>;
type CoreCall = Box<dyn FnOnce(&mut SvcCore, f64) -> Reply + Send>;

/// A handle to the actor that owns the core.
#[derive(Clone)]
pub(crate) struct CoreHandle {
    calls: mpsc::Sender<CoreCall>,
    events: broadcast::Sender<SvcEvent>,
    shutdown: CancellationToken,
}

impl CoreHandle {
    /// Runs `function` on the core inside the actor and returns its result. The answer
    /// arrives only after the commands the call produced are carried out, so a change the API
    /// confirms is already in the store; `None` when the daemon stopped (or could not store).
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        function: impl FnOnce(&mut SvcCore, f64) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let call: CoreCall = Box::new(move |core, now| {
            let result = function(core, now);
            Box::new(move || {
                let _ = reply.send(result);
            })
        });
        self.calls.send(call).await.ok()?;
        answer.await.ok()
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
    let (calls_sender, calls) = mpsc::channel::<CoreCall>(256);
    let (events, _) = broadcast::channel(1024);
    let handle = CoreHandle {
        calls: calls_sender,
        events: events.clone(),
        shutdown: cancel.clone(),
    };
    let (acknowledgements, to_acknowledge) = mpsc::unbounded_channel();
    tokio::spawn(acknowledge(driver.clone(), to_acknowledge));
    let actor = Actor {
        core,
        store,
        driver,
        events,
        acknowledgements,
    };
    let actor =
        tokio::spawn(actor.run(calls, driver_events, settings.tick_interval, cancel.clone()));

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

struct Actor {
    core: SvcCore,
    store: Arc<SvcStore>,
    driver: SchedulerDriver,
    events: broadcast::Sender<SvcEvent>,
    /// Acknowledgements in flight at most.
    acknowledgements: mpsc::UnboundedSender<v1::TaskStatus>,
}

/// Acknowledgements sent concurrently at most.
const ACKS_IN_FLIGHT: usize = 256;

/// Sends the acknowledgements the actor queues (only for updates whose effects are stored), a
/// bounded number at once; ends when the actor does. The agent resends anything not
/// acknowledged.
async fn acknowledge(driver: SchedulerDriver, statuses: mpsc::UnboundedReceiver<v1::TaskStatus>) {
    tokio_stream::wrappers::UnboundedReceiverStream::new(statuses)
        .map(|status| {
            let driver = driver.clone();
            async move {
                if let Err(error) = driver.acknowledge(&status).await {
                    tracing::debug!(%error, task_id = %status.task_id, "acknowledgement not sent");
                }
            }
        })
        .buffer_unordered(ACKS_IN_FLIGHT)
        .for_each(|()| async {})
        .await;
}

/// Driver events buffered between the master's stream and the actor.
const DRIVER_EVENT_BUFFER: usize = 1 << 16;

/// Launches sent concurrently at most.
const LAUNCHES_IN_FLIGHT: usize = 64;

/// Driver events handled together at most (the ones already waiting when one arrives).
const EVENTS_PER_BATCH: usize = 1_000;

impl Actor {
    async fn run(
        mut self,
        mut calls: mpsc::Receiver<CoreCall>,
        mut driver_events: EventStream,
        tick_interval: Duration,
        cancel: CancellationToken,
    ) -> Result<(), SvcRunError> {
        let mut ticker = tokio::time::interval(tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                Some(call) = calls.recv() => {
                    let reply = call(&mut self.core, agora_proto::now_seconds());
                    if let Err(error) = self.execute().await {
                        break Err(error);
                    }
                    reply();
                }
                event = driver_events.next() => {
                    let Some(event) = event else {
                        break Ok(());
                    };
                    // Take the events that are already waiting too: their updates are stored
                    // in one transaction and each app they touch is planned once.
                    let mut events = vec![event];
                    let mut ended = false;
                    while events.len() < EVENTS_PER_BATCH {
                        match driver_events.next().now_or_never() {
                            Some(Some(event)) => events.push(event),
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    if let Err(error) = self.on_driver_events(events).await {
                        break Err(error);
                    }
                    if ended {
                        break Ok(());
                    }
                }
                _ = ticker.tick() => {
                    self.core.tick(agora_proto::now_seconds());
                    if let Err(error) = self.execute().await {
                        break Err(error);
                    }
                }
            }
        };
        self.driver.stop();
        if let Err(error) = &result {
            tracing::error!(%error, "svcframework stopped");
        }
        result
    }

    /// Applies driver events in order, carries out the commands they produced (their store
    /// writes in one transaction, ahead of anything sent), then acknowledges their updates.
    async fn on_driver_events(&mut self, events: Vec<DriverEvent>) -> Result<(), SvcRunError> {
        let now = agora_proto::now_seconds();
        let mut updates: Vec<v1::TaskStatus> = Vec::new();
        let mut acknowledgements: Vec<v1::TaskStatus> = Vec::new();
        let mut removed = None;
        for event in events {
            if let DriverEvent::Update(status) = event {
                updates.push(status);
                continue;
            }
            // Updates before another event are applied before it, as they arrived.
            self.apply_updates(&mut updates, &mut acknowledgements, now);
            match event {
                DriverEvent::Subscribed {
                    framework_id,
                    reconnected,
                } => {
                    tracing::info!(framework_id = %framework_id, reconnected, "subscribed to the master");
                    self.core.on_subscribed(framework_id.as_str(), now);
                }
                DriverEvent::Offers(offers) => self.core.on_offers(offers, now),
                DriverEvent::Rescind(offer_id) => self.core.on_rescind(offer_id.as_str()),
                DriverEvent::Update(_) => {}
                DriverEvent::Failure { agent_id, message } => {
                    tracing::warn!(agent_id = %agent_id, message, "agent lost");
                    self.core.on_agent_lost(agent_id.as_str(), now);
                }
                DriverEvent::Error(message) => {
                    if !self.driver.is_running() {
                        removed = Some(message);
                        break;
                    }
                    tracing::warn!(message, "error from the master");
                }
                DriverEvent::Disconnected { reason } => {
                    tracing::warn!(reason, "disconnected from the master; re-subscribing");
                    self.core.on_disconnected();
                }
            }
        }
        self.apply_updates(&mut updates, &mut acknowledgements, now);
        self.execute().await?;
        if let Some(message) = removed {
            return Err(SvcRunError::Removed(message));
        }
        // The updates' effects are stored: acknowledge them without holding up the next
        // events (a busy master answering slowly must not stop the daemon from reading its
        // stream, or the master drops the stream as too slow).
        for status in acknowledgements {
            let _ = self.acknowledgements.send(status);
        }
        Ok(())
    }

    /// Applies the pending updates to the core and keeps those to acknowledge once stored.
    fn apply_updates(
        &mut self,
        updates: &mut Vec<v1::TaskStatus>,
        acknowledgements: &mut Vec<v1::TaskStatus>,
        now: f64,
    ) {
        if updates.is_empty() {
            return;
        }
        self.core.on_updates(updates, now);
        acknowledgements.extend(updates.drain(..).filter(|status| !status.uuid.is_empty()));
    }

    /// Carries out the core's commands in order.
    async fn execute(&mut self) -> Result<(), SvcRunError> {
        let mut commands = self.core.take_commands().into_iter().peekable();
        while let Some(command) = commands.next() {
            match command {
                Command::Persist(writes) => {
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || store.apply(&writes))
                        .await
                        .map_err(|error| StoreError::Backend {
                            operation: "write",
                            reason: error.to_string(),
                        })??;
                }
                Command::Launch { offer_id, tasks } => {
                    // Launches into different offers do not depend on each other: a run of
                    // them (one per agent of an offer batch) is sent concurrently, after the
                    // writes before it and before the commands after it. One at a time, an
                    // offer batch of 5,000 agents kept the daemon from reading its events for
                    // seconds, and the master dropped its stream as too slow.
                    let mut launches = vec![(offer_id, tasks)];
                    while let Some(Command::Launch { .. }) = commands.peek() {
                        if let Some(Command::Launch { offer_id, tasks }) = commands.next() {
                            launches.push((offer_id, tasks));
                        }
                    }
                    let driver = &self.driver;
                    futures::stream::iter(launches)
                        .map(|(offer_id, tasks)| async move {
                            let count = tasks.len();
                            if let Err(error) = driver.launch(offer_id.clone(), tasks).await {
                                // The instances stay staged; reconciliation or the launch
                                // timeout replaces them if the master never got them.
                                tracing::warn!(%error, offer_id = %offer_id, count, "launch not sent");
                            }
                        })
                        .buffer_unordered(LAUNCHES_IN_FLIGHT)
                        .collect::<()>()
                        .await;
                }
                Command::Decline {
                    offer_ids,
                    refuse_seconds,
                } => {
                    if let Err(error) = self.driver.decline(offer_ids, Some(refuse_seconds)).await {
                        tracing::debug!(%error, "decline not sent");
                    }
                }
                Command::Kill { task_id, agent_id } => {
                    if let Err(error) = self.driver.kill(&task_id, &agent_id).await {
                        tracing::warn!(%error, task_id = %task_id, "kill not sent; will retry");
                    }
                }
                Command::Revive => {
                    if let Err(error) = self.driver.revive().await {
                        tracing::debug!(%error, "revive not sent");
                    }
                }
                Command::Suppress => {
                    if let Err(error) = self.driver.suppress().await {
                        tracing::debug!(%error, "suppress not sent");
                    }
                }
                Command::Reconcile(tasks) => {
                    if let Err(error) = self.driver.reconcile(tasks).await {
                        tracing::debug!(%error, "reconcile not sent");
                    }
                }
                Command::Event(event) => {
                    let _ = self.events.send(event);
                }
            }
        }
        Ok(())
    }
}
