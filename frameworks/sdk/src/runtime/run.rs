//! The loop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1;
use agora_proto::{AgentId, Clock, SystemClock, TaskId};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::calls::CallReceiver;
use super::command::{Command, LaunchFailure};
use super::framework::{FrameworkCore, FrameworkStore};
use super::reconcile::ReconcileQueue;
use crate::spans::{FrameworkSpan, task_span};
use crate::{DriverEvent, EventStream, SchedulerDriver};

/// The runtime's tunables.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How often [`FrameworkCore::tick`] runs (and the next reconciliation chunk goes out).
    pub tick_interval: Duration,
    /// Driver events handled together at most (the ones already waiting when one arrives).
    pub events_per_batch: usize,
    /// Launches sent concurrently at most.
    pub launches_in_flight: usize,
    /// Acknowledgements sent concurrently at most.
    pub acks_in_flight: usize,
    /// Tasks per explicit reconciliation call at most.
    pub reconcile_chunk: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            tick_interval: Duration::from_millis(500),
            events_per_batch: 1_000,
            launches_in_flight: 64,
            acks_in_flight: 256,
            reconcile_chunk: 5_000,
        }
    }
}

/// Why the runtime stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError<E: std::error::Error + 'static> {
    /// A store write failed: the runtime stops rather than act on state it could not save.
    #[error(transparent)]
    Store(E),
    /// The store write could not be run (its blocking task failed).
    #[error("store write task failed: {0}")]
    StoreTask(String),
    /// The master ended the framework for good (removed, torn down, superseded), or the
    /// driver stopped.
    #[error("the master ended the framework: {0}")]
    Ended(String),
}

/// Runs a [`FrameworkCore`] against the driver and a [`FrameworkStore`]; see the module docs.
pub struct Runtime<C: FrameworkCore, S> {
    core: C,
    store: Arc<S>,
    driver: SchedulerDriver,
    config: RuntimeConfig,
    notices: Option<broadcast::Sender<C::Notice>>,
    clock: Arc<dyn Clock>,
    reconciling: ReconcileQueue,
    /// The span the loop runs in; it learns the framework id at the first subscription.
    span: FrameworkSpan,
}

impl<C, S> Runtime<C, S>
where
    C: FrameworkCore,
    S: FrameworkStore<Write = C::Write>,
{
    /// A runtime for `core`, storing into `store` and talking through `driver` (started
    /// with `auto_acknowledge` off: the runtime acknowledges once updates are stored).
    pub fn new(core: C, store: Arc<S>, driver: SchedulerDriver, config: RuntimeConfig) -> Self {
        let reconciling = ReconcileQueue::new(config.reconcile_chunk);
        let span = FrameworkSpan::new(driver.framework_name(), driver.framework_id());
        Runtime {
            core,
            store,
            driver,
            config,
            notices: None,
            clock: Arc::new(SystemClock),
            reconciling,
            span,
        }
    }

    /// Where [`Command::Publish`] goes (dropped without one).
    pub fn with_notices(mut self, notices: broadcast::Sender<C::Notice>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// Where the core's time comes from (the system clock by default).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until `cancel` is cancelled or every [`CoreCalls`](super::CoreCalls) handle is
    /// dropped (`Ok`), a store write fails, or the master ends the framework. Stops the
    /// driver on the way out (without tearing the framework down).
    ///
    /// Everything it logs is in the framework's span (`framework{name, framework_id}`).
    pub async fn run(
        self,
        driver_events: EventStream,
        calls: CallReceiver<C>,
        cancel: CancellationToken,
    ) -> Result<(), RuntimeError<S::Error>> {
        let span = self.span.span().clone();
        self.run_in_span(driver_events, calls, cancel)
            .instrument(span)
            .await
    }

    async fn run_in_span(
        mut self,
        mut driver_events: EventStream,
        mut calls: CallReceiver<C>,
        cancel: CancellationToken,
    ) -> Result<(), RuntimeError<S::Error>> {
        let (acknowledgements, to_acknowledge) = mpsc::unbounded_channel();
        tokio::spawn(
            acknowledge(
                self.driver.clone(),
                to_acknowledge,
                self.config.acks_in_flight.max(1),
            )
            .instrument(self.span.span().clone()),
        );
        let mut ticker = tokio::time::interval(self.config.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let step = tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                call = calls.receiver.recv() => {
                    let Some(call) = call else {
                        break Ok(());
                    };
                    let reply = call(&mut self.core, self.clock.now().system_time());
                    let result = self.execute().await;
                    if result.is_ok() {
                        reply();
                    }
                    result
                }
                event = driver_events.next() => {
                    let Some(event) = event else {
                        break Err(RuntimeError::Ended("the driver stopped".to_owned()));
                    };
                    // Take the events that are already waiting too: their writes are stored
                    // in one transaction and the core plans once for all of them.
                    let mut events = vec![event];
                    let mut ended = false;
                    while events.len() < self.config.events_per_batch {
                        match driver_events.next().now_or_never() {
                            Some(Some(event)) => events.push(event),
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    match self.on_driver_events(events, &acknowledgements).await {
                        Ok(()) if ended => Err(RuntimeError::Ended("the driver stopped".to_owned())),
                        other => other,
                    }
                }
                _ = ticker.tick() => {
                    self.core.tick(self.clock.now().system_time());
                    if let Some(chunk) = self.reconciling.next_chunk() {
                        self.send_reconcile(chunk).await;
                    }
                    self.execute().await
                }
            };
            if let Err(error) = step {
                break Err(error);
            }
        };
        self.driver.stop();
        if let Err(error) = &result {
            tracing::error!(%error, "framework runtime stopped");
        }
        result
    }

    /// Applies driver events in order, carries out the commands they produced, then queues
    /// their updates' acknowledgements.
    async fn on_driver_events(
        &mut self,
        events: Vec<DriverEvent>,
        acknowledgements: &mpsc::UnboundedSender<v1::TaskStatus>,
    ) -> Result<(), RuntimeError<S::Error>> {
        let now = self.clock.now().system_time();
        let mut updates: Vec<v1::TaskStatus> = Vec::new();
        let mut to_acknowledge: Vec<v1::TaskStatus> = Vec::new();
        let mut ended = None;
        for event in events {
            if let DriverEvent::Update(status) = event {
                updates.push(status);
                continue;
            }
            // Updates before another event are applied before it, as they arrived.
            self.apply_updates(&mut updates, &mut to_acknowledge, now);
            match event {
                DriverEvent::Subscribed {
                    framework_id,
                    reconnected,
                } => {
                    self.span.subscribed(&framework_id);
                    tracing::info!(%framework_id, reconnected, "subscribed to the master");
                    // What a previous subscription still had to reconcile is asked again
                    // by the core, in full.
                    self.reconciling.clear();
                    self.core.on_subscribed(&framework_id, now);
                }
                DriverEvent::Offers(offers) => self.core.on_offers(offers, now),
                DriverEvent::Rescind(offer_id) => self.core.on_rescind(&offer_id, now),
                DriverEvent::Update(_) => {}
                DriverEvent::Failure { agent_id, message } => {
                    tracing::warn!(%agent_id, message, "agent lost");
                    self.core.on_agent_failure(&agent_id, now);
                }
                DriverEvent::Error(message) => {
                    if !self.driver.is_running() {
                        ended = Some(message);
                        break;
                    }
                    tracing::warn!(message, "error from the master");
                }
                DriverEvent::Disconnected { reason } => {
                    tracing::warn!(reason, "disconnected from the master; re-subscribing");
                    self.reconciling.clear();
                    self.core.on_disconnected();
                }
            }
        }
        self.apply_updates(&mut updates, &mut to_acknowledge, now);
        // What the events before an end changed is still stored (and acknowledged).
        self.execute().await?;
        // Stored: acknowledge without holding up the next events (a busy master answering
        // slowly must not keep the runtime from reading its stream, or the master drops the
        // stream as too slow).
        for status in to_acknowledge {
            let _ = acknowledgements.send(status);
        }
        match ended {
            Some(message) => Err(RuntimeError::Ended(message)),
            None => Ok(()),
        }
    }

    fn apply_updates(
        &mut self,
        updates: &mut Vec<v1::TaskStatus>,
        to_acknowledge: &mut Vec<v1::TaskStatus>,
        now: SystemTime,
    ) {
        if updates.is_empty() {
            return;
        }
        for status in updates.iter() {
            log_update(status);
        }
        self.core.on_updates(updates, now);
        to_acknowledge.extend(updates.drain(..).filter(|status| !status.uuid.is_empty()));
    }

    /// Carries out the core's commands in order: consecutive writes in one transaction,
    /// durable before the next command; a run of launches concurrently; what the core
    /// answers to failed launches after them.
    async fn execute(&mut self) -> Result<(), RuntimeError<S::Error>> {
        let mut queue: VecDeque<Command<C::Write, C::Notice>> = self.core.take_commands().into();
        let mut writes: Vec<C::Write> = Vec::new();
        while let Some(command) = queue.pop_front() {
            if let Command::Persist(batch) = command {
                writes.extend(batch);
                continue;
            }
            self.flush(&mut writes).await?;
            match command {
                Command::Persist(_) => {}
                Command::Launch { offer_id, tasks } => {
                    let mut launches = vec![(offer_id, tasks)];
                    while let Some(Command::Launch { .. }) = queue.front() {
                        if let Some(Command::Launch { offer_id, tasks }) = queue.pop_front() {
                            launches.push((offer_id, tasks));
                        }
                    }
                    let failures = self.launch(launches).await;
                    if !failures.is_empty() {
                        let now = self.clock.now().system_time();
                        for (task_ids, failure) in failures {
                            self.core.on_launch_failed(&task_ids, failure, now);
                        }
                        queue.extend(self.core.take_commands());
                    }
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
                    let span = task_span(task_id.as_str());
                    match self.driver.kill(&task_id, &agent_id).await {
                        Ok(()) => span.in_scope(|| tracing::info!(%agent_id, "kill sent")),
                        Err(error) => {
                            span.in_scope(|| tracing::warn!(%agent_id, %error, "kill not sent"));
                        }
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
                Command::Reconcile(tasks) if tasks.is_empty() => {
                    self.send_reconcile(tasks).await;
                }
                Command::Reconcile(tasks) => {
                    if let Some(chunk) = self.reconciling.push(tasks) {
                        self.send_reconcile(chunk).await;
                    }
                }
                Command::Publish(notice) => {
                    if let Some(notices) = &self.notices {
                        let _ = notices.send(notice);
                    }
                }
            }
        }
        self.flush(&mut writes).await
    }

    /// Sends launches into different offers concurrently (they do not depend on each
    /// other): one at a time, an offer batch of 5,000 agents kept the loop from reading its
    /// events for seconds, and the master dropped its stream as too slow. Returns the
    /// failed ones.
    async fn launch(
        &self,
        launches: Vec<(agora_proto::OfferId, Vec<v1::TaskInfo>)>,
    ) -> Vec<(Vec<TaskId>, LaunchFailure)> {
        let driver = &self.driver;
        futures::stream::iter(launches)
            .map(|(offer_id, tasks)| async move {
                let placed: Vec<(TaskId, String)> = tasks
                    .iter()
                    .map(|task| (TaskId::new(task.task_id.clone()), task.agent_id.clone()))
                    .collect();
                match driver.launch(offer_id.clone(), tasks).await {
                    Ok(_) => {
                        // The master launches all of an accept's tasks or none.
                        for (task_id, agent_id) in &placed {
                            task_span(task_id.as_str()).in_scope(|| {
                                tracing::info!(%agent_id, %offer_id, "launch sent");
                            });
                        }
                        None
                    }
                    Err(error) => {
                        let failure = LaunchFailure::of(&error);
                        for (task_id, agent_id) in &placed {
                            task_span(task_id.as_str()).in_scope(|| {
                                tracing::warn!(%agent_id, %offer_id, %error, ?failure, "launch failed");
                            });
                        }
                        let task_ids = placed.into_iter().map(|(task_id, _)| task_id).collect();
                        Some((task_ids, failure))
                    }
                }
            })
            .buffer_unordered(self.config.launches_in_flight.max(1))
            .filter_map(|failed| async move { failed })
            .collect()
            .await
    }

    async fn send_reconcile(&self, tasks: Vec<(TaskId, AgentId)>) {
        let count = tasks.len();
        if let Err(error) = self.driver.reconcile(tasks).await {
            tracing::debug!(%error, count, "reconcile not sent");
        }
    }

    async fn flush(&self, writes: &mut Vec<C::Write>) -> Result<(), RuntimeError<S::Error>> {
        if writes.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(writes);
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.apply(&batch))
            .await
            .map_err(|error| RuntimeError::StoreTask(error.to_string()))?
            .map_err(RuntimeError::Store)
    }
}

/// Sends the acknowledgements the loop queues (only for updates whose effects are stored),
/// a bounded number at once; ends when the loop does. The agent resends anything not
/// acknowledged.
async fn acknowledge(
    driver: SchedulerDriver,
    statuses: mpsc::UnboundedReceiver<v1::TaskStatus>,
    in_flight: usize,
) {
    tokio_stream::wrappers::UnboundedReceiverStream::new(statuses)
        .map(|status| {
            let driver = driver.clone();
            async move {
                let result = driver.acknowledge(&status).await;
                task_span(&status.task_id).in_scope(|| match result {
                    Ok(()) => tracing::debug!(uuid = %status.uuid, "status update acknowledged"),
                    Err(error) => {
                        tracing::debug!(uuid = %status.uuid, %error, "acknowledgement not sent");
                    }
                });
            }
        })
        .buffer_unordered(in_flight)
        .for_each(|()| async {})
        .await;
}

/// Logs a status update the framework received, in its task's span: at INFO when it is news
/// (an agent's update, or one the master made: lost, dropped, adopted), at DEBUG when it answers
/// reconciliation about a task still alive, which mostly confirms what the framework knows.
pub(super) fn log_update(status: &v1::TaskStatus) {
    let state = status.state();
    let confirmation =
        status.reason() == v1::TaskReason::ReasonReconciliation && !agora_proto::is_terminal(state);
    task_span(&status.task_id).in_scope(|| {
        let state = state.as_str_name();
        let reason = status.reason().as_str_name();
        if confirmation {
            tracing::debug!(agent_id = %status.agent_id, state, "reconciliation answered");
        } else {
            tracing::info!(agent_id = %status.agent_id, state, reason, healthy = ?status.healthy, "status update received");
        }
    });
}
