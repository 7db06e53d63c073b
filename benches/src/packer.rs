//! A plain SDK framework for the scale benches: it deploys many identical simulated tasks,
//! packing as many into each offer as fit (like `frameworks/examples/everywhere`, but many
//! tasks per agent), acknowledges updates concurrently, and after a master failover
//! reconciles every task explicitly until the master has answered for all of them.
//!
//! It records when each task was sent in an accept and when it was reported RUNNING, so a
//! deploy yields placements per second and deploy-to-RUNNING latencies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::v1::{self, TaskState};
use agora_proto::{AgentId, OfferId, TaskId};
use agora_sdk::{
    DriverConfig, DriverEvent, EventStream, OfferResources, SchedulerDriver, TaskBuilder,
};
use tokio::sync::{Semaphore, mpsc};

use crate::stats::Percentiles;

/// What the packer deploys and how hard it drives the master.
#[derive(Debug, Clone)]
pub struct PackerConfig {
    /// Master URL, e.g. `http://127.0.0.1:5050`.
    pub master_url: String,
    /// Framework name.
    pub name: String,
    /// Number of tasks to run.
    pub tasks: usize,
    /// Cores per task.
    pub cpus: f64,
    /// MiB per task.
    pub mem: f64,
    /// Acknowledgements in flight at once.
    pub ack_concurrency: usize,
    /// Accept calls in flight at once.
    pub accept_concurrency: usize,
    /// Explicit reconciliation asks about this many tasks per call.
    pub reconcile_chunk: usize,
    /// Give up when the deploy or the reconciliation takes longer.
    pub timeout: Duration,
    /// Container image of every task (Docker agents); `None` for simulated tasks.
    pub image: Option<String>,
    /// Shell command of every task; `None`: the image's default (or nothing, for sim tasks).
    pub shell: Option<String>,
}

impl PackerConfig {
    /// `tasks` tasks of 0.1 cpus and 32 MiB against `master_url`.
    pub fn new(master_url: impl Into<String>, tasks: usize) -> Self {
        Self {
            master_url: master_url.into(),
            name: "packer".to_owned(),
            tasks,
            cpus: 0.1,
            mem: 32.0,
            ack_concurrency: 512,
            accept_concurrency: 256,
            reconcile_chunk: 2_000,
            timeout: Duration::from_secs(600),
            image: None,
            shell: None,
        }
    }
}

/// What a deploy measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeployReport {
    /// Tasks asked for.
    pub tasks: usize,
    /// Tasks RUNNING at the end (equal to `tasks` on success).
    pub running: usize,
    /// The framework's id.
    pub framework_id: String,
    /// Offers received.
    pub offers_received: usize,
    /// Accept calls made.
    pub accept_calls: usize,
    /// Tasks launched again after a drop or failure.
    pub relaunched: usize,
    /// Seconds from the start of the driver to the first offer.
    pub first_offer_seconds: f64,
    /// Seconds from the first offer until the master had accepted every task.
    pub placement_seconds: f64,
    /// `tasks / placement_seconds`.
    pub placements_per_second: f64,
    /// Seconds from the first offer until every task was RUNNING.
    pub all_running_seconds: f64,
    /// From a task's accept being sent to its RUNNING update arriving.
    pub deploy_to_running: Percentiles,
    /// RUNNING tasks per agent id.
    pub running_per_agent: BTreeMap<String, usize>,
}

/// What a post-failover reconciliation measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReconcileReport {
    /// Seconds since the Unix epoch when the driver was subscribed again.
    pub resubscribed_at_unix: f64,
    /// Seconds since the Unix epoch when the master had answered for every task.
    pub reconciled_at_unix: f64,
    /// Tasks the master reported RUNNING in its answers.
    pub running: usize,
    /// Tasks the master reported in another state.
    pub other: usize,
    /// Reconcile calls made.
    pub reconcile_calls: usize,
}

/// Why the packer stopped short.
#[derive(Debug, thiserror::Error)]
pub enum PackerError {
    /// The driver would not start.
    #[error("driver: {0}")]
    Driver(#[from] agora_sdk::SdkError),
    /// The event stream ended (driver stopped, framework refused).
    #[error("the driver's event stream ended: {0}")]
    Stopped(String),
    /// Not done in time.
    #[error("{phase} not done after {seconds:.0} s: {progress}")]
    Timeout {
        /// What was being waited for.
        phase: &'static str,
        /// How long.
        seconds: f64,
        /// How far it got.
        progress: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending,
    Launched { accepted_at: Instant },
    Running,
}

#[derive(Debug)]
struct TaskRecord {
    id: String,
    phase: Phase,
    agent_id: String,
}

/// The answer to one accept call.
struct AcceptOutcome {
    tasks: Vec<usize>,
    result: Result<usize, String>,
}

/// The running framework.
pub struct Packer {
    config: PackerConfig,
    driver: SchedulerDriver,
    events: EventStream,
    tasks: Vec<TaskRecord>,
    index: HashMap<String, usize>,
    acks: mpsc::UnboundedSender<v1::TaskStatus>,
    accept_limit: Arc<Semaphore>,
    outcomes_sender: mpsc::UnboundedSender<AcceptOutcome>,
    outcomes: mpsc::UnboundedReceiver<AcceptOutcome>,
    started: Instant,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Packer {
    /// Subscribes (in the background) as a new framework.
    pub fn start(config: PackerConfig) -> Result<Packer, PackerError> {
        let framework = v1::FrameworkInfo {
            name: config.name.clone(),
            role: "*".to_owned(),
            failover_timeout_seconds: 3_600.0,
            ..Default::default()
        };
        let mut driver_config = DriverConfig::new(config.master_url.clone(), framework);
        // Acknowledged here, many at once: the driver acknowledges one update at a time.
        driver_config.auto_acknowledge = false;
        driver_config.event_buffer = 1 << 16;
        driver_config.reconnect_backoff_min = Duration::from_millis(100);
        driver_config.reconnect_backoff_max = Duration::from_secs(1);
        let (driver, events) = SchedulerDriver::start(driver_config)?;
        let tasks: Vec<TaskRecord> = (0..config.tasks)
            .map(|number| TaskRecord {
                id: format!("{}-{number:06}", config.name),
                phase: Phase::Pending,
                agent_id: String::new(),
            })
            .collect();
        let index = tasks
            .iter()
            .enumerate()
            .map(|(position, task)| (task.id.clone(), position))
            .collect();
        let (outcomes_sender, outcomes) = mpsc::unbounded_channel();
        // A fixed pool of acknowledgers draining one queue: a task per update would hold
        // a future per RUNNING task while the master is busy.
        let (acks, queue) = mpsc::unbounded_channel::<v1::TaskStatus>();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..config.ack_concurrency.max(1) {
            let driver = driver.clone();
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().await.recv().await;
                    let Some(status) = next else { return };
                    if let Err(error) = driver.acknowledge(&status).await {
                        tracing::debug!(task_id = %status.task_id, %error, "acknowledgement failed (the agent resends)");
                    }
                }
            });
        }
        Ok(Packer {
            acks,
            accept_limit: Arc::new(Semaphore::new(config.accept_concurrency.max(1))),
            config,
            driver,
            events,
            tasks,
            index,
            outcomes_sender,
            outcomes,
            started: Instant::now(),
        })
    }

    /// The driver, for calls the bench makes itself.
    pub fn driver(&self) -> &SchedulerDriver {
        &self.driver
    }

    /// Runs every task: packs them into offers until all are RUNNING.
    pub async fn deploy(&mut self) -> Result<DeployReport, PackerError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut pending: VecDeque<usize> = (0..self.tasks.len()).collect();
        let mut report = DeployReport {
            tasks: self.tasks.len(),
            ..DeployReport::default()
        };
        let mut first_offer: Option<Instant> = None;
        let mut placed = 0usize;
        let mut placed_at: Option<Instant> = None;
        let mut latencies = Vec::with_capacity(self.tasks.len());
        let mut suppressed = false;
        while report.running < self.tasks.len() {
            tokio::select! {
                event = self.events.next() => {
                    let Some(event) = event else {
                        return Err(PackerError::Stopped("during deploy".to_owned()));
                    };
                    match event {
                        DriverEvent::Subscribed { framework_id, .. } => {
                            report.framework_id = framework_id.to_string();
                        }
                        DriverEvent::Offers(offers) => {
                            first_offer.get_or_insert_with(Instant::now);
                            report.offers_received += offers.len();
                            report.accept_calls += self.place(offers, &mut pending);
                            if pending.is_empty() && !suppressed {
                                suppressed = true;
                                self.spawn_call(Call::Suppress);
                            }
                        }
                        DriverEvent::Update(status) => {
                            self.acknowledge(status.clone());
                            let Some(&position) = self.index.get(&status.task_id) else { continue };
                            let task = &mut self.tasks[position];
                            match status.state() {
                                TaskState::TaskRunning => {
                                    if let Phase::Launched { accepted_at } = task.phase {
                                        latencies.push(accepted_at.elapsed());
                                        task.phase = Phase::Running;
                                        task.agent_id = status.agent_id.clone();
                                        report.running += 1;
                                    }
                                }
                                state if agora_proto::is_terminal(state) => {
                                    if task.phase == Phase::Running {
                                        report.running -= 1;
                                    }
                                    if task.phase != Phase::Pending {
                                        task.phase = Phase::Pending;
                                        pending.push_back(position);
                                        report.relaunched += 1;
                                        if suppressed {
                                            suppressed = false;
                                            self.spawn_call(Call::Revive);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        DriverEvent::Error(message) => {
                            return Err(PackerError::Stopped(message));
                        }
                        DriverEvent::Rescind(_) | DriverEvent::Failure { .. } | DriverEvent::Disconnected { .. } => {}
                    }
                }
                Some(outcome) = self.outcomes.recv() => {
                    match outcome.result {
                        Ok(launched) => {
                            // Tasks the master did not launch get a terminal update.
                            placed += launched;
                            if placed >= self.tasks.len() {
                                placed_at.get_or_insert_with(Instant::now);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, tasks = outcome.tasks.len(), "accept failed; tasks go back to the queue");
                            for position in outcome.tasks {
                                if matches!(self.tasks[position].phase, Phase::Launched { .. }) {
                                    self.tasks[position].phase = Phase::Pending;
                                    pending.push_back(position);
                                    report.relaunched += 1;
                                }
                            }
                            if suppressed {
                                suppressed = false;
                                self.spawn_call(Call::Revive);
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(PackerError::Timeout {
                        phase: "deploy",
                        seconds: self.config.timeout.as_secs_f64(),
                        progress: format!("{} of {} running, {} pending, {placed} placed", report.running, self.tasks.len(), pending.len()),
                    });
                }
            }
        }
        let first_offer = first_offer.unwrap_or(self.started);
        report.first_offer_seconds = first_offer.duration_since(self.started).as_secs_f64();
        let placed_at = placed_at.unwrap_or_else(Instant::now);
        report.placement_seconds = placed_at.duration_since(first_offer).as_secs_f64();
        report.placements_per_second = if report.placement_seconds > 0.0 {
            self.tasks.len() as f64 / report.placement_seconds
        } else {
            0.0
        };
        report.all_running_seconds = first_offer.elapsed().as_secs_f64();
        report.deploy_to_running = Percentiles::of(&mut latencies);
        for task in &self.tasks {
            *report
                .running_per_agent
                .entry(task.agent_id.clone())
                .or_insert(0) += 1;
        }
        Ok(report)
    }

    /// Waits for the driver to lose and regain its subscription (a master restart), then
    /// reconciles every task explicitly, in chunks, until the master answered for each.
    pub async fn reconcile_after_failover(&mut self) -> Result<ReconcileReport, PackerError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut report = ReconcileReport::default();
        // Wait for the re-subscription.
        loop {
            let event = tokio::select! {
                event = self.events.next() => event,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(PackerError::Timeout { phase: "re-subscription", seconds: self.config.timeout.as_secs_f64(), progress: String::new() });
                }
            };
            match event {
                None => return Err(PackerError::Stopped("waiting for failover".to_owned())),
                Some(DriverEvent::Subscribed {
                    reconnected: true, ..
                }) => break,
                Some(DriverEvent::Update(status)) => self.acknowledge(status),
                Some(DriverEvent::Offers(offers)) => self.decline(offers),
                Some(_) => {}
            }
        }
        report.resubscribed_at_unix = agora_proto::now_seconds();
        let mut answered = vec![false; self.tasks.len()];
        let mut unanswered = self.tasks.len();
        let mut next_ask = 0usize;
        let mut asked_in_round = 0usize;
        let mut round = tokio::time::interval(Duration::from_millis(500));
        while unanswered > 0 {
            tokio::select! {
                _ = round.tick() => {
                    // Ask about the next chunk of tasks not answered yet (wrapping around).
                    let chunk = self.config.reconcile_chunk.max(1);
                    let mut listed = Vec::with_capacity(chunk);
                    let mut scanned = 0;
                    while listed.len() < chunk && scanned < self.tasks.len() {
                        let position = next_ask % self.tasks.len();
                        next_ask += 1;
                        scanned += 1;
                        if !answered[position] {
                            let task = &self.tasks[position];
                            listed.push((TaskId::new(task.id.clone()), AgentId::new(task.agent_id.clone())));
                        }
                    }
                    asked_in_round += listed.len();
                    report.reconcile_calls += 1;
                    self.spawn_call(Call::Reconcile(listed));
                }
                event = self.events.next() => {
                    match event {
                        None => return Err(PackerError::Stopped("during reconciliation".to_owned())),
                        Some(DriverEvent::Update(status)) => {
                            self.acknowledge(status.clone());
                            if let Some(&position) = self.index.get(&status.task_id)
                                && !answered[position]
                            {
                                answered[position] = true;
                                unanswered -= 1;
                                if status.state() == TaskState::TaskRunning {
                                    report.running += 1;
                                } else {
                                    report.other += 1;
                                }
                            }
                        }
                        Some(DriverEvent::Offers(offers)) => self.decline(offers),
                        Some(_) => {}
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(PackerError::Timeout { phase: "reconciliation", seconds: self.config.timeout.as_secs_f64(), progress: format!("{unanswered} tasks unanswered after asking {asked_in_round}") });
                }
            }
        }
        report.reconciled_at_unix = agora_proto::now_seconds();
        Ok(report)
    }

    /// Stops the driver (the framework stays registered until its failover timeout); the
    /// acknowledgers end with it.
    pub fn stop(&self) {
        self.driver.stop();
    }

    /// Packs pending tasks into `offers`; returns the number of accept calls made.
    fn place(&mut self, offers: Vec<v1::Offer>, pending: &mut VecDeque<usize>) -> usize {
        let mut accept_calls = 0;
        let mut unused = Vec::new();
        for offer in offers {
            if pending.is_empty() {
                unused.push(OfferId::new(offer.id));
                continue;
            }
            let mut resources = match OfferResources::new(&offer) {
                Ok(resources) => resources,
                Err(error) => {
                    tracing::warn!(%error, "malformed offer declined");
                    unused.push(OfferId::new(offer.id));
                    continue;
                }
            };
            let mut infos = Vec::new();
            let mut positions = Vec::new();
            while let Some(&position) = pending.front() {
                let mut builder = TaskBuilder::new(self.config.name.clone())
                    .task_id(TaskId::new(self.tasks[position].id.clone()))
                    .cpus(self.config.cpus)
                    .mem(self.config.mem);
                if let Some(image) = &self.config.image {
                    builder = builder.image(image.clone());
                }
                if let Some(shell) = &self.config.shell {
                    builder = builder.shell(shell.clone());
                }
                match builder.build_in(&mut resources) {
                    Ok(info) => {
                        infos.push(info);
                        positions.push(position);
                        pending.pop_front();
                    }
                    Err(_) => break,
                }
            }
            if infos.is_empty() {
                unused.push(resources.offer_id().clone());
                continue;
            }
            let accepted_at = Instant::now();
            for &position in &positions {
                self.tasks[position].phase = Phase::Launched { accepted_at };
            }
            accept_calls += 1;
            let driver = self.driver.clone();
            let limit = Arc::clone(&self.accept_limit);
            let outcomes = self.outcomes_sender.clone();
            let offer_id = resources.offer_id().clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                let filters = v1::Filters {
                    refuse_seconds: Some(1.0),
                };
                let result = driver
                    .accept(vec![offer_id], infos, filters)
                    .await
                    .map(|launched| launched.len())
                    .map_err(|error| error.to_string());
                let _ = outcomes.send(AcceptOutcome {
                    tasks: positions,
                    result,
                });
            });
        }
        if !unused.is_empty() {
            let refuse = if pending.is_empty() { 60.0 } else { 1.0 };
            self.spawn_call(Call::Decline(unused, refuse));
        }
        accept_calls
    }

    fn decline(&self, offers: Vec<v1::Offer>) {
        let ids = offers
            .into_iter()
            .map(|offer| OfferId::new(offer.id))
            .collect();
        self.spawn_call(Call::Decline(ids, 60.0));
    }

    fn acknowledge(&self, status: v1::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        // The workers end only with the packer, so the queue is open while we run.
        let _ = self.acks.send(status);
    }

    fn spawn_call(&self, call: Call) {
        let driver = self.driver.clone();
        tokio::spawn(async move {
            let result = match call {
                Call::Decline(ids, refuse) => driver.decline(ids, Some(refuse)).await,
                Call::Suppress => driver.suppress().await,
                Call::Revive => driver.revive().await,
                Call::Reconcile(tasks) => driver.reconcile(tasks).await,
            };
            if let Err(error) = result {
                tracing::debug!(%error, "scheduler call failed");
            }
        });
    }
}

enum Call {
    Decline(Vec<OfferId>, f64),
    Suppress,
    Revive,
    Reconcile(Vec<(TaskId, AgentId)>),
}
