//! The daemon's shell: [`spawn`] opens the store, starts the SDK driver with the stored
//! framework id and serves the HTTP API; one actor task owns the [`BatchCore`] and carries out
//! its commands in order (store writes before the launches that depend on them).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::TaskId;
use agora_proto::v1;
use agora_sdk::{DriverConfig, DriverEvent, EventStream, SchedulerDriver, SdkError};
use futures::FutureExt as _;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::core::{BatchCore, Command, CoreConfig, StoreOp};
use crate::store::{BatchStore, StoreError};

/// A reply to send once the commands a call produced have been carried out.
pub(crate) type Reply = Box<dyn FnOnce() + Send>;
/// A call into the core from the HTTP API; runs on the actor.
pub(crate) type CoreCall = Box<dyn FnOnce(&mut BatchCore, Timestamp) -> Reply + Send>;

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
    let (calls, call_receiver) = mpsc::channel::<CoreCall>(256);
    let actor = Actor {
        core,
        store,
        driver,
        tick_interval: settings.tick_interval,
        ack_slots: Arc::new(Semaphore::new(ACKS_IN_FLIGHT)),
    };
    let actor_shutdown = shutdown.clone();
    let actor_task = tokio::spawn(async move {
        let result = actor
            .run(events, call_receiver, actor_shutdown.clone())
            .await;
        if let Err(error) = &result {
            tracing::error!(%error, "batchframework stopping");
        }
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

struct Actor {
    core: BatchCore,
    store: Arc<BatchStore>,
    driver: SchedulerDriver,
    tick_interval: Duration,
    /// Acknowledgements in flight at most.
    ack_slots: Arc<Semaphore>,
}

/// Driver events applied before their store writes are committed together, at most.
const EVENTS_PER_BATCH: usize = 1024;

/// Acknowledgements sent concurrently at most.
const ACKS_IN_FLIGHT: usize = 256;

impl Actor {
    async fn run(
        mut self,
        mut events: EventStream,
        mut calls: mpsc::Receiver<CoreCall>,
        shutdown: CancellationToken,
    ) -> Result<(), BatchRunError> {
        let mut ticker = tokio::time::interval(self.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let step = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                event = events.next() => match event {
                    Some(event) => self.on_events(event, &mut events).await,
                    None => break Err(BatchRunError::FrameworkEnded("the driver stopped".into())),
                },
                call = calls.recv() => match call {
                    Some(call) => {
                        let reply = call(&mut self.core, Timestamp::now());
                        let result = self.execute().await;
                        reply();
                        result
                    }
                    None => break Ok(()),
                },
                _ = ticker.tick() => {
                    self.core.tick(Timestamp::now());
                    self.execute().await
                }
            };
            if let Err(error) = step {
                break Err(error);
            }
        };
        self.driver.stop();
        result
    }

    /// Applies `first` and the driver events already waiting behind it (at most
    /// [`EVENTS_PER_BATCH`]), then carries out what they produced: their store writes go in one
    /// transaction instead of one each.
    async fn on_events(
        &mut self,
        first: DriverEvent,
        events: &mut EventStream,
    ) -> Result<(), BatchRunError> {
        let mut next = Some(first);
        let mut applied = 0;
        let mut ended = Ok(());
        while let Some(event) = next {
            ended = self.apply_event(event);
            applied += 1;
            next = if applied < EVENTS_PER_BATCH && ended.is_ok() {
                // The next event only if it is already waiting.
                events.next().now_or_never().flatten()
            } else {
                None
            };
        }
        // What the events before an end changed is still stored (and acknowledged).
        self.execute().await?;
        ended
    }

    fn apply_event(&mut self, event: DriverEvent) -> Result<(), BatchRunError> {
        let now = Timestamp::now();
        match event {
            DriverEvent::Subscribed {
                framework_id,
                reconnected,
            } => {
                tracing::info!(%framework_id, reconnected, "subscribed");
                self.core.subscribed(framework_id.as_str(), now);
            }
            DriverEvent::Offers(offers) => self.core.offers(offers, now),
            DriverEvent::Rescind(_) => {}
            DriverEvent::Update(status) => self.core.status_update(status, now),
            DriverEvent::Failure { agent_id, message } => {
                tracing::warn!(%agent_id, %message, "agent lost");
            }
            DriverEvent::Error(message) => {
                if !self.driver.is_running() {
                    return Err(BatchRunError::FrameworkEnded(message));
                }
                tracing::warn!(%message, "error from the master");
            }
            DriverEvent::Disconnected { reason } => {
                tracing::warn!(%reason, "disconnected from the master; re-subscribing");
                self.core.disconnected();
            }
        }
        Ok(())
    }

    /// Carries out the core's commands in order; store writes are batched into one
    /// transaction and made durable before the next command that acts on the cluster.
    /// Acknowledgements only wait for the writes before them, not for each other.
    async fn execute(&mut self) -> Result<(), BatchRunError> {
        let mut queue: VecDeque<Command> = self.core.take_commands().into();
        let mut writes = Vec::new();
        let mut acknowledgements = Vec::new();
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Persist(op) => writes.push(op),
                Command::Acknowledge(status) => acknowledgements.push(status),
                command => {
                    self.flush(&mut writes).await?;
                    self.acknowledge(&mut acknowledgements).await;
                    self.perform(command).await;
                    queue.extend(self.core.take_commands());
                }
            }
        }
        self.flush(&mut writes).await?;
        self.acknowledge(&mut acknowledgements).await;
        Ok(())
    }

    /// Sends acknowledgements whose updates' effects are stored, concurrently (at most
    /// [`ACKS_IN_FLIGHT`]) so that the next events need not wait for their round trips; the
    /// master resends any that gets lost.
    async fn acknowledge(&self, statuses: &mut Vec<v1::TaskStatus>) {
        for status in statuses.drain(..) {
            let Ok(permit) = Arc::clone(&self.ack_slots).acquire_owned().await else {
                return;
            };
            let driver = self.driver.clone();
            tokio::spawn(async move {
                if let Err(error) = driver.acknowledge(&status).await {
                    tracing::debug!(%error, task_id = %status.task_id, "acknowledgement not sent");
                }
                drop(permit);
            });
        }
    }

    async fn flush(&self, writes: &mut Vec<StoreOp>) -> Result<(), BatchRunError> {
        if writes.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(writes);
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.apply(&ops))
            .await
            .map_err(|error| BatchRunError::TaskFailed(error.to_string()))??;
        Ok(())
    }

    async fn perform(&mut self, command: Command) {
        let result = match command {
            // Batched by `execute`.
            Command::Persist(_) | Command::Acknowledge(_) => Ok(()),
            Command::Launch { offer_id, tasks } => {
                let task_ids: Vec<TaskId> = tasks
                    .iter()
                    .map(|task| TaskId::new(task.task_id.clone()))
                    .collect();
                match self.driver.launch(offer_id, tasks).await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        let refused =
                            !matches!(error, SdkError::Unavailable(_) | SdkError::Rpc { .. });
                        tracing::warn!(%error, tasks = task_ids.len(), refused, "launch failed");
                        self.core
                            .launch_failed(&task_ids, refused, Timestamp::now());
                        Ok(())
                    }
                }
            }
            Command::Decline {
                offer_ids,
                refuse_seconds,
            } => self.driver.decline(offer_ids, Some(refuse_seconds)).await,
            Command::Kill { task_id, agent_id } => {
                tracing::info!(%task_id, "killing task");
                self.driver.kill(&task_id, &agent_id).await
            }
            Command::Reconcile(tasks) => self.driver.reconcile(tasks).await,
            Command::Revive => self.driver.revive().await,
            Command::Suppress => self.driver.suppress().await,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "driver call failed");
        }
    }
}

/// Sends `call` to the actor and waits for its answer (after its commands were carried out).
pub(crate) async fn call_core<T: Send + 'static>(
    calls: &mpsc::Sender<CoreCall>,
    call: impl FnOnce(&mut BatchCore, Timestamp) -> T + Send + 'static,
) -> Option<T> {
    let (sender, receiver) = oneshot::channel();
    let boxed: CoreCall = Box::new(move |core, now| {
        let answer = call(core, now);
        Box::new(move || {
            let _ = sender.send(answer);
        })
    });
    calls.send(boxed).await.ok()?;
    receiver.await.ok()
}
