//! The agent's control loop: one task that owns all task state, applies master messages,
//! runtime events and health results, and emits checkpointed status updates in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{
    AgentInfo, AgentMessage, AgentTask, HealthCheckProtocol, Register, Reregister, StatusSource,
    StatusUpdate, TaskInfo, TaskReason, TaskState, TaskStatus, agent_message, master_message,
};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId, now_seconds};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointStore, TaskCheckpoint};
use crate::config::AgentConfig;
use crate::durations::{MAX_KILL_GRACE, clamped_seconds};
use crate::error::RuntimeError;
use crate::health::{HealthPolicy, HealthTracker, ProbeTarget, probe};
use crate::launch_policy::{LaunchPolicy, validate_launch};
use crate::runtime::{ContainerHandle, ContainerState, ExitStatus, LaunchSpec, Runtime};
use crate::snapshot::{AgentMetrics, AgentSnapshot, TaskSnapshot};
use crate::task_env::{task_environment, task_host_ports};
use crate::task_key::TaskKey;
use crate::task_state::TaskPhase;
use crate::update_stream::{StatusUpdateStream, UpdateRecord};

/// Capacity of the agent's event channel.
pub(crate) const EVENT_CAPACITY: usize = 1024;

/// Everything the control loop reacts to.
#[derive(Debug)]
pub(crate) enum AgentEvent {
    /// A message from the master.
    Master(master_message::Message),
    /// The master accepted our (re-)registration; `outbound` reaches it until the next
    /// `Disconnected`.
    Connected {
        agent_id: AgentId,
        outbound: mpsc::Sender<AgentMessage>,
    },
    /// The connection to the master ended.
    Disconnected,
    /// The connection asks for the `Register` or `Reregister` message to open with.
    RegistrationMessage(oneshot::Sender<AgentMessage>),
    /// A launch finished.
    Launched {
        key: TaskKey,
        result: Result<ContainerHandle, RuntimeError>,
    },
    /// Launch progress (image pull).
    Progress { key: TaskKey, message: String },
    /// A container or process ended.
    Exited {
        key: TaskKey,
        container_id: String,
        exit: ExitStatus,
    },
    /// A health check changed its verdict.
    Health {
        key: TaskKey,
        container_id: String,
        healthy: bool,
    },
    /// A read of the agent's state, for `/state`, `/metrics` and tests.
    Snapshot(oneshot::Sender<AgentSnapshot>),
}

#[derive(Debug)]
struct TaskEntry {
    framework_id: FrameworkId,
    info: TaskInfo,
    phase: TaskPhase,
    stream: StatusUpdateStream,
    checkpoint: TaskCheckpoint,
    handle: Option<ContainerHandle>,
    host_ports: Vec<u32>,
    env: BTreeMap<String, String>,
    launching: bool,
    kill_requested: bool,
    kill_grace: Option<Duration>,
    healthy: Option<bool>,
    health_check: Option<AbortHandle>,
}

impl TaskEntry {
    fn snapshot(&self, key: &TaskKey) -> TaskSnapshot {
        TaskSnapshot {
            task_id: key.task_id.to_string(),
            framework_id: self.framework_id.to_string(),
            name: self.info.name.clone(),
            state: self.phase.state().as_str_name().to_owned(),
            healthy: self.healthy,
            container_id: self.handle.as_ref().map(|h| h.container_id.clone()),
            pid: self.handle.as_ref().and_then(|h| h.pid),
            host_ports: self.host_ports.clone(),
            pending_updates: self.stream.pending_len(),
        }
    }
}

/// The control loop's state.
pub(crate) struct Agent {
    config: Arc<AgentConfig>,
    runtime: Arc<dyn Runtime>,
    checkpoint: CheckpointStore,
    agent_id: Option<AgentId>,
    info: AgentInfo,
    resources: Resources,
    /// Keyed by (framework id, task id): a task id is unique only within its framework.
    tasks: BTreeMap<TaskKey, TaskEntry>,
    outbound: Option<mpsc::Sender<AgentMessage>>,
    events: mpsc::Sender<AgentEvent>,
    metrics: AgentMetrics,
}

impl Agent {
    pub(crate) fn new(
        config: Arc<AgentConfig>,
        runtime: Arc<dyn Runtime>,
        checkpoint: CheckpointStore,
        info: AgentInfo,
        resources: Resources,
        events: mpsc::Sender<AgentEvent>,
    ) -> Self {
        let agent_id = checkpoint.load_agent_id();
        Self {
            config,
            runtime,
            checkpoint,
            agent_id,
            info,
            resources,
            tasks: BTreeMap::new(),
            outbound: None,
            events,
            metrics: AgentMetrics::default(),
        }
    }

    /// Runs until `shutdown`; recovers checkpointed tasks first.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<AgentEvent>,
        shutdown: CancellationToken,
    ) {
        self.recover().await;
        let mut resend = tokio::time::interval(self.config.status_resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resend.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = resend.tick() => self.resend_pending(),
            }
        }
        if self.config.kill_tasks_on_shutdown {
            self.kill_all_for_shutdown().await;
        }
        for entry in self.tasks.values() {
            if let Some(health) = &entry.health_check {
                health.abort();
            }
        }
        tracing::info!(agent_id = ?self.agent_id.as_ref().map(AgentId::as_str), "agent stopped");
    }

    async fn handle(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Master(message) => self.handle_master(message).await,
            AgentEvent::Connected { agent_id, outbound } => {
                if self.agent_id.as_ref() != Some(&agent_id) {
                    if let Some(previous) = &self.agent_id {
                        tracing::warn!(previous = %previous, new = %agent_id, "master assigned a new agent id");
                    }
                    if let Err(error) = self.checkpoint.save_agent_id(&agent_id).await {
                        tracing::error!(%error, "cannot checkpoint the agent id");
                    }
                    self.agent_id = Some(agent_id.clone());
                }
                tracing::info!(agent_id = %agent_id, tasks = self.tasks.len(), "registered with the master");
                self.outbound = Some(outbound);
                self.metrics.registrations += 1;
                self.resend_pending();
            }
            AgentEvent::Disconnected => {
                if self.outbound.take().is_some() {
                    tracing::warn!("disconnected from the master");
                }
            }
            AgentEvent::RegistrationMessage(reply) => {
                let _ = reply.send(self.registration_message());
            }
            AgentEvent::Launched { key, result } => self.on_launched(key, result).await,
            AgentEvent::Progress { key, message } => {
                let still_starting = self.tasks.get(&key).is_some_and(|entry| {
                    matches!(entry.phase, TaskPhase::Staging | TaskPhase::Starting)
                        && !entry.kill_requested
                });
                if still_starting {
                    self.emit(
                        &key,
                        TaskState::TaskStarting,
                        TaskReason::ReasonUnspecified,
                        message,
                        None,
                    )
                    .await;
                }
            }
            AgentEvent::Exited {
                key,
                container_id,
                exit,
            } => self.on_exited(key, container_id, exit).await,
            AgentEvent::Health {
                key,
                container_id,
                healthy,
            } => self.on_health(key, container_id, healthy).await,
            AgentEvent::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    async fn handle_master(&mut self, message: master_message::Message) {
        match message {
            master_message::Message::Registered(registered) => {
                let agent_id = AgentId::new(registered.agent_id);
                if !agent_id.is_empty() && self.agent_id.as_ref() != Some(&agent_id) {
                    if let Err(error) = self.checkpoint.save_agent_id(&agent_id).await {
                        tracing::error!(%error, "cannot checkpoint the agent id");
                    }
                    self.agent_id = Some(agent_id);
                }
            }
            master_message::Message::LaunchTasks(launch) => {
                let framework_id = FrameworkId::new(launch.framework_id);
                for task in launch.tasks {
                    self.launch(framework_id.clone(), task).await;
                }
            }
            master_message::Message::KillTask(kill) => {
                let key = self.resolve_key(kill.framework_id, kill.task_id);
                let grace = kill
                    .grace_period_seconds
                    .and_then(|seconds| kill_grace_from_master(&key, seconds));
                self.kill(key, grace, TaskReason::ReasonTaskKilled).await;
            }
            master_message::Message::AckStatus(ack) => {
                let key = self.resolve_key(ack.framework_id, ack.task_id);
                self.acknowledge(key, ack.uuid).await;
            }
            master_message::Message::ShutdownFramework(shutdown) => {
                let framework_id = FrameworkId::new(shutdown.framework_id);
                let owned: Vec<TaskKey> = self
                    .tasks
                    .iter()
                    .filter(|(key, entry)| {
                        key.framework_id == framework_id && !entry.phase.is_terminal()
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                tracing::info!(framework_id = %framework_id, tasks = owned.len(), "shutting down framework");
                for key in owned {
                    self.kill(key, None, TaskReason::ReasonFrameworkRemoved)
                        .await;
                }
            }
            master_message::Message::Heartbeat(_) | master_message::Message::Refused(_) => {}
        }
    }

    fn registration_message(&self) -> AgentMessage {
        let mut agent = self.info.clone();
        let message = match &self.agent_id {
            None => agent_message::Message::Register(Register { agent: Some(agent) }),
            Some(agent_id) => {
                agent.id = agent_id.to_string();
                let tasks: Vec<AgentTask> = self
                    .tasks
                    .iter()
                    .map(|(key, entry)| AgentTask {
                        framework_id: entry.framework_id.to_string(),
                        task: Some(entry.info.clone()),
                        latest_status: Some(entry.stream.latest().cloned().unwrap_or_else(|| {
                            TaskStatus {
                                task_id: key.task_id.to_string(),
                                agent_id: agent_id.to_string(),
                                state: entry.phase.state() as i32,
                                timestamp: now_seconds(),
                                container_id: entry
                                    .handle
                                    .as_ref()
                                    .map(|h| h.container_id.clone())
                                    .unwrap_or_default(),
                                source: StatusSource::SourceAgent as i32,
                                framework_id: entry.framework_id.to_string(),
                                healthy: entry.healthy,
                                ..Default::default()
                            }
                        })),
                    })
                    .collect();
                let framework_ids: BTreeSet<String> = self
                    .tasks
                    .values()
                    .map(|entry| entry.framework_id.to_string())
                    .collect();
                agent_message::Message::Reregister(Reregister {
                    agent: Some(agent),
                    tasks,
                    framework_ids: framework_ids.into_iter().collect(),
                })
            }
        };
        AgentMessage {
            message: Some(message),
        }
    }

    fn send(&mut self, message: AgentMessage) -> bool {
        let Some(outbound) = &self.outbound else {
            return false;
        };
        match outbound.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("outbound queue to the master is full; the update will be resent");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.outbound = None;
                false
            }
        }
    }

    fn send_update(&mut self, framework_id: &FrameworkId, status: TaskStatus) {
        let sent = self.send(AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                framework_id: framework_id.to_string(),
                status: Some(status),
            })),
        });
        if sent {
            self.metrics.status_updates_sent += 1;
        }
    }

    fn resend_pending(&mut self) {
        if self.outbound.is_none() {
            return;
        }
        let heads: Vec<(FrameworkId, TaskStatus)> = self
            .tasks
            .values()
            .filter_map(|entry| {
                entry
                    .stream
                    .head()
                    .map(|head| (entry.framework_id.clone(), head.clone()))
            })
            .collect();
        for (framework_id, status) in heads {
            self.send_update(&framework_id, status);
        }
    }

    /// Records and (when it is the oldest pending one) sends a status update for a task.
    async fn emit(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskReason,
        message: String,
        exit_code: Option<i32>,
    ) {
        let agent_id = self
            .agent_id
            .as_ref()
            .map(AgentId::to_string)
            .unwrap_or_default();
        let Some(entry) = self.tasks.get_mut(key) else {
            return;
        };
        let next_phase = match entry.phase.transition(state) {
            Ok(phase) => phase,
            Err(error) => {
                tracing::warn!(task = %key, %error, "status update not sent");
                return;
            }
        };
        let status = TaskStatus {
            task_id: key.task_id.to_string(),
            agent_id,
            state: state as i32,
            reason: reason as i32,
            message,
            healthy: entry.healthy,
            uuid: uuid::Uuid::new_v4().to_string(),
            timestamp: now_seconds(),
            exit_code,
            container_id: entry
                .handle
                .as_ref()
                .map(|h| h.container_id.clone())
                .unwrap_or_default(),
            source: StatusSource::SourceAgent as i32,
            framework_id: entry.framework_id.to_string(),
        };
        if let Err(error) = entry.stream.check(&status) {
            tracing::warn!(task = %key, %error, "status update not recorded");
            return;
        }
        entry.phase = next_phase;
        match state {
            TaskState::TaskFinished => self.metrics.tasks_finished += 1,
            TaskState::TaskFailed => self.metrics.tasks_failed += 1,
            TaskState::TaskKilled => self.metrics.tasks_killed += 1,
            _ => {}
        }
        tracing::info!(task_id = %key.task_id, framework_id = %key.framework_id, state = state.as_str_name(), message = %status.message, "task status");
        if let Err(error) = self
            .checkpoint
            .append_update(key, &UpdateRecord::Update(status.clone()))
            .await
        {
            tracing::error!(task = %key, %error, "cannot checkpoint status update");
        }
        let Some(entry) = self.tasks.get_mut(key) else {
            return;
        };
        let framework_id = entry.framework_id.clone();
        if entry.stream.record(status.clone()).unwrap_or(false) {
            self.send_update(&framework_id, status);
        }
    }

    /// The key a master message names. The master always sends the framework id; an empty
    /// one (an older master) is resolved to the only task with that id, if there is exactly one.
    fn resolve_key(&self, framework_id: String, task_id: String) -> TaskKey {
        let task_id = TaskId::new(task_id);
        if !framework_id.is_empty() {
            return TaskKey::new(FrameworkId::new(framework_id), task_id);
        }
        let mut matching = self.tasks.keys().filter(|key| key.task_id == task_id);
        match (matching.next(), matching.next()) {
            (Some(only), None) => only.clone(),
            _ => TaskKey::new(FrameworkId::default(), task_id),
        }
    }

    async fn acknowledge(&mut self, key: TaskKey, uuid: String) {
        let Some(entry) = self.tasks.get_mut(&key) else {
            tracing::debug!(task = %key, %uuid, "acknowledgement for an unknown task");
            return;
        };
        let next = match entry.stream.acknowledge(&uuid) {
            Ok(next) => next.cloned(),
            Err(error) => {
                tracing::debug!(task = %key, %error, "acknowledgement ignored");
                return;
            }
        };
        let complete = entry.stream.is_complete();
        if complete {
            self.tasks.remove(&key);
            if let Err(error) = self.checkpoint.remove_task(&key).await {
                tracing::error!(task = %key, %error, "cannot remove task checkpoint");
            }
            tracing::debug!(task = %key, "terminal update acknowledged, task forgotten");
            return;
        }
        if let Err(error) = self
            .checkpoint
            .append_update(&key, &UpdateRecord::Ack(uuid))
            .await
        {
            tracing::error!(task = %key, %error, "cannot checkpoint acknowledgement");
        }
        if let Some(next) = next {
            self.send_update(&key.framework_id, next);
        }
    }

    /// Sends a status update that is not part of any task's stream (no uuid, not
    /// checkpointed, never resent): the answer to a launch or kill the agent cannot act on.
    fn send_one_shot(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskReason,
        message: String,
    ) {
        let status = TaskStatus {
            task_id: key.task_id.to_string(),
            agent_id: self
                .agent_id
                .as_ref()
                .map(AgentId::to_string)
                .unwrap_or_default(),
            state: state as i32,
            reason: reason as i32,
            message,
            timestamp: now_seconds(),
            source: StatusSource::SourceAgent as i32,
            framework_id: key.framework_id.to_string(),
            ..Default::default()
        };
        self.send_update(&key.framework_id, status);
    }

    async fn launch(&mut self, framework_id: FrameworkId, task: TaskInfo) {
        let task_id = TaskId::new(task.task_id.clone());
        if task_id.is_empty() {
            tracing::warn!(framework_id = %framework_id, "launch of a task without task_id ignored");
            return;
        }
        let key = TaskKey::new(framework_id.clone(), task_id.clone());
        if let Some(existing) = self.tasks.get(&key) {
            // Never replace a task the agent still tracks: its container, update stream and
            // checkpoint are keyed by this very pair. The refusal is a one-shot update, so the
            // existing task's stream is untouched.
            let (state, message) = if existing.phase.is_terminal() {
                (
                    TaskState::TaskDropped,
                    format!(
                        "task {task_id} of framework {framework_id} ended on this agent and its terminal update is not acknowledged yet; launch refused, try again later"
                    ),
                )
            } else {
                (
                    TaskState::TaskError,
                    format!(
                        "task {task_id} of framework {framework_id} is already {} on this agent; a duplicate launch is refused",
                        existing.phase.state().as_str_name()
                    ),
                )
            };
            tracing::warn!(task = %key, state = state.as_str_name(), "duplicate launch refused");
            self.metrics.launch_failures += 1;
            self.send_one_shot(&key, state, TaskReason::ReasonTaskInvalid, message);
            return;
        }
        if let Err(refusal) = validate_launch(&task, &self.launch_policy()) {
            tracing::warn!(task = %key, %refusal, "launch refused");
            self.metrics.launch_failures += 1;
            self.send_one_shot(
                &key,
                TaskState::TaskError,
                TaskReason::ReasonTaskInvalid,
                refusal.to_string(),
            );
            return;
        }
        self.metrics.launches += 1;
        let checkpoint =
            TaskCheckpoint::new(framework_id.clone(), &task, self.runtime.kind().as_str());
        let host_ports = task_host_ports(&task);
        let ports = host_ports.clone().unwrap_or_default();
        let env = task_environment(&task, &ports, &self.config.hostname);
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                framework_id: framework_id.clone(),
                info: task.clone(),
                phase: TaskPhase::Staging,
                stream: StatusUpdateStream::new(task_id.as_str()),
                checkpoint: checkpoint.clone(),
                handle: None,
                host_ports: ports.clone(),
                env: env.clone(),
                launching: false,
                kill_requested: false,
                kill_grace: None,
                healthy: None,
                health_check: None,
            },
        );
        if let Err(error) = self.checkpoint.save_task(&key, &checkpoint).await {
            tracing::error!(task = %key, %error, "cannot checkpoint task");
        }
        if let Err(error) = host_ports {
            self.metrics.launch_failures += 1;
            self.emit(
                &key,
                TaskState::TaskFailed,
                TaskReason::ReasonTaskInvalid,
                error.to_string(),
                None,
            )
            .await;
            return;
        }
        tracing::info!(task_id = %task_id, framework_id = %framework_id, runtime = self.runtime.kind().as_str(), "launching task");
        self.emit(
            &key,
            TaskState::TaskStarting,
            TaskReason::ReasonUnspecified,
            "launching".to_owned(),
            None,
        )
        .await;
        if let Some(entry) = self.tasks.get_mut(&key) {
            entry.launching = true;
        }
        let spec = LaunchSpec {
            task_id,
            framework_id,
            agent_id: self.agent_id.clone().unwrap_or_default(),
            task,
            env,
            host_ports: ports,
            allow_privileged: self.config.allow_privileged,
        };
        let runtime = Arc::clone(&self.runtime);
        let events = self.events.clone();
        tokio::spawn(async move {
            let progress_events = events.clone();
            let progress_key = key.clone();
            let progress = move |message: String| {
                let _ = progress_events.try_send(AgentEvent::Progress {
                    key: progress_key.clone(),
                    message,
                });
            };
            let result = runtime.launch(&spec, &progress).await;
            let _ = events.send(AgentEvent::Launched { key, result }).await;
        });
    }

    fn launch_policy(&self) -> LaunchPolicy {
        LaunchPolicy {
            runtime: self.runtime.kind(),
            allow_privileged: self.config.allow_privileged,
            allowed_host_paths: self.config.allowed_host_paths.clone(),
        }
    }

    async fn on_launched(&mut self, key: TaskKey, result: Result<ContainerHandle, RuntimeError>) {
        let Some(entry) = self.tasks.get_mut(&key) else {
            return;
        };
        entry.launching = false;
        match result {
            Ok(handle) => {
                entry.handle = Some(handle.clone());
                entry.checkpoint.container_id = Some(handle.container_id.clone());
                entry.checkpoint.pid = handle.pid;
                let checkpoint = entry.checkpoint.clone();
                let kill_requested = entry.kill_requested;
                let grace = self.kill_grace(&key);
                if let Err(error) = self.checkpoint.save_task(&key, &checkpoint).await {
                    tracing::error!(task = %key, %error, "cannot checkpoint container id");
                }
                self.watch_exit(&key, handle.clone());
                if kill_requested {
                    self.spawn_kill(&key, handle, grace);
                    return;
                }
                self.emit(
                    &key,
                    TaskState::TaskRunning,
                    TaskReason::ReasonUnspecified,
                    format!("running in {}", short_id(&handle.container_id)),
                    None,
                )
                .await;
                self.start_health_check(&key);
            }
            Err(error) => {
                self.metrics.launch_failures += 1;
                let (state, reason) = if entry.kill_requested {
                    (
                        TaskState::TaskKilled,
                        TaskReason::ReasonTaskKilledDuringLaunch,
                    )
                } else {
                    match &error {
                        RuntimeError::ImagePull { .. } => {
                            (TaskState::TaskFailed, TaskReason::ReasonImagePullFailed)
                        }
                        RuntimeError::InvalidTask { .. } => {
                            (TaskState::TaskFailed, TaskReason::ReasonTaskInvalid)
                        }
                        _ => (
                            TaskState::TaskFailed,
                            TaskReason::ReasonContainerLaunchFailed,
                        ),
                    }
                };
                tracing::warn!(task = %key, %error, "launch failed");
                self.emit(&key, state, reason, error.to_string(), None)
                    .await;
            }
        }
    }

    fn watch_exit(&self, key: &TaskKey, handle: ContainerHandle) {
        let runtime = Arc::clone(&self.runtime);
        let events = self.events.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let exit = runtime.wait(&handle).await;
            let _ = events
                .send(AgentEvent::Exited {
                    key,
                    container_id: handle.container_id,
                    exit,
                })
                .await;
        });
    }

    fn kill_grace(&self, key: &TaskKey) -> Duration {
        let Some(entry) = self.tasks.get(key) else {
            return self.config.default_kill_grace;
        };
        entry.kill_grace.unwrap_or_else(|| {
            // Validated at launch, but a task recovered from an older agent's checkpoint was
            // not: clamp rather than panic.
            let seconds = entry.info.kill_grace_period_seconds;
            if seconds.is_finite() && seconds > 0.0 {
                clamped_seconds(seconds, MAX_KILL_GRACE).unwrap_or(self.config.default_kill_grace)
            } else {
                self.config.default_kill_grace
            }
        })
    }

    fn spawn_kill(&self, key: &TaskKey, handle: ContainerHandle, grace: Duration) {
        let runtime = Arc::clone(&self.runtime);
        let key = key.clone();
        tokio::spawn(async move {
            if let Err(error) = runtime.kill(&handle, grace).await {
                tracing::warn!(task = %key, %error, "kill failed");
            }
        });
    }

    async fn kill(&mut self, key: TaskKey, grace: Option<Duration>, reason: TaskReason) {
        let Some(entry) = self.tasks.get_mut(&key) else {
            tracing::info!(task = %key, "kill of an unknown task: reporting it lost");
            self.send_one_shot(
                &key,
                TaskState::TaskLost,
                TaskReason::ReasonTaskUnknown,
                "the agent does not know this task".to_owned(),
            );
            return;
        };
        if entry.phase.is_terminal() || entry.kill_requested {
            return;
        }
        entry.kill_requested = true;
        entry.kill_grace = grace;
        if let Some(health) = entry.health_check.take() {
            health.abort();
        }
        let handle = entry.handle.clone();
        let launching = entry.launching;
        let grace = self.kill_grace(&key);
        match handle {
            Some(handle) => {
                self.emit(
                    &key,
                    TaskState::TaskKilling,
                    reason,
                    format!(
                        "stopping with a grace period of {:.1} s",
                        grace.as_secs_f64()
                    ),
                    None,
                )
                .await;
                self.spawn_kill(&key, handle, grace);
            }
            // The kill happens when the launch completes.
            None if launching => {
                self.emit(
                    &key,
                    TaskState::TaskKilling,
                    reason,
                    "killing once the launch completes".to_owned(),
                    None,
                )
                .await;
            }
            None => {
                self.emit(
                    &key,
                    TaskState::TaskKilled,
                    reason,
                    "killed before it was launched".to_owned(),
                    None,
                )
                .await;
            }
        }
    }

    async fn on_exited(&mut self, key: TaskKey, container_id: String, exit: ExitStatus) {
        let Some(entry) = self.tasks.get_mut(&key) else {
            return;
        };
        if entry.handle.as_ref().map(|h| h.container_id.as_str()) != Some(container_id.as_str()) {
            return;
        }
        if let Some(health) = entry.health_check.take() {
            health.abort();
        }
        let handle = entry.handle.clone();
        if entry.phase.is_terminal() {
            return;
        }
        let (state, reason, message) = if entry.kill_requested {
            (
                TaskState::TaskKilled,
                TaskReason::ReasonTaskKilled,
                format!("killed: {}", exit.message),
            )
        } else if exit.code == Some(0) {
            (
                TaskState::TaskFinished,
                TaskReason::ReasonCommandExited,
                exit.message.clone(),
            )
        } else {
            (
                TaskState::TaskFailed,
                TaskReason::ReasonCommandExited,
                exit.message.clone(),
            )
        };
        self.emit(&key, state, reason, message, exit.code).await;
        if let Some(handle) = handle {
            self.schedule_removal(handle);
        }
    }

    fn schedule_removal(&self, handle: ContainerHandle) {
        let runtime = Arc::clone(&self.runtime);
        let delay = self.config.remove_exited_after;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(error) = runtime.remove(&handle).await {
                tracing::warn!(container_id = %handle.container_id, %error, "cannot remove exited container");
            }
        });
    }

    fn start_health_check(&mut self, key: &TaskKey) {
        if self.runtime.kind() == crate::config::RuntimeKind::Sim {
            return;
        }
        let Some(entry) = self.tasks.get_mut(key) else {
            return;
        };
        let Some(check) = entry.info.health_check.clone() else {
            return;
        };
        if check.protocol() == HealthCheckProtocol::Unspecified {
            return;
        }
        let Some(handle) = entry.handle.clone() else {
            return;
        };
        let target = ProbeTarget {
            host_ports: entry.host_ports.clone(),
            runtime: Arc::clone(&self.runtime),
            handle: handle.clone(),
            env: entry.env.clone(),
        };
        let events = self.events.clone();
        let task = key.clone();
        let join = tokio::spawn(async move {
            let policy = HealthPolicy::from_proto(&check);
            let started = tokio::time::Instant::now();
            tokio::time::sleep(policy.delay).await;
            let mut tracker = HealthTracker::new(policy.clone());
            loop {
                let passed = probe(&check, &target, policy.timeout).await;
                if let Some(healthy) = tracker.observe(started.elapsed(), passed) {
                    let event = AgentEvent::Health {
                        key: task.clone(),
                        container_id: handle.container_id.clone(),
                        healthy,
                    };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(policy.interval).await;
            }
        });
        entry.health_check = Some(join.abort_handle());
    }

    async fn on_health(&mut self, key: TaskKey, container_id: String, healthy: bool) {
        let Some(entry) = self.tasks.get_mut(&key) else {
            return;
        };
        let current =
            entry.handle.as_ref().map(|h| h.container_id.as_str()) == Some(container_id.as_str());
        if !current || entry.phase != TaskPhase::Running || entry.healthy == Some(healthy) {
            return;
        }
        entry.healthy = Some(healthy);
        let (reason, message) = if healthy {
            (TaskReason::ReasonUnspecified, "health check passed")
        } else {
            (TaskReason::ReasonHealthCheckFailed, "health check failed")
        };
        self.emit(
            &key,
            TaskState::TaskRunning,
            reason,
            message.to_owned(),
            None,
        )
        .await;
    }

    /// Rebuilds state from the checkpoint and the runtime after a restart.
    async fn recover(&mut self) {
        let store = self.checkpoint.clone();
        let recovered = tokio::task::spawn_blocking(move || store.load_tasks())
            .await
            .unwrap_or_default();
        let discovered = match &self.agent_id {
            Some(agent_id) => match self.runtime.discover(agent_id).await {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(%error, "cannot list this agent's containers");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        if recovered.is_empty() && discovered.is_empty() {
            return;
        }
        tracing::info!(
            checkpointed = recovered.len(),
            containers = discovered.len(),
            "recovering tasks"
        );
        let mut discovered: BTreeMap<TaskKey, crate::runtime::DiscoveredContainer> = discovered
            .into_iter()
            .map(|container| {
                let key = TaskKey::new(container.framework_id.clone(), container.task_id.clone());
                (key, container)
            })
            .collect();
        for task in recovered {
            let key = task.key();
            let (stream, errors) = StatusUpdateStream::replay(task.task_id.as_str(), task.records);
            for error in errors {
                tracing::warn!(task = %key, %error, "checkpoint record skipped");
            }
            let found = discovered.remove(&key);
            let mut checkpoint = task.checkpoint;
            let mut handle = checkpoint
                .container_id
                .clone()
                .map(|container_id| ContainerHandle {
                    container_id,
                    pid: checkpoint.pid,
                });
            if let Some(found) = &found
                && handle.as_ref().map(|h| &h.container_id) != Some(&found.handle.container_id)
            {
                handle = Some(found.handle.clone());
                checkpoint.container_id = Some(found.handle.container_id.clone());
            }
            if stream.is_complete() {
                if let Some(handle) = handle {
                    self.schedule_removal(handle);
                }
                if let Err(error) = self.checkpoint.remove_task(&key).await {
                    tracing::error!(task = %key, %error, "cannot remove task checkpoint");
                }
                continue;
            }
            let phase = stream
                .latest()
                .map(|status| TaskPhase::from_state(status.state()))
                .unwrap_or(TaskPhase::Staging);
            let host_ports = task_host_ports(&task.task).unwrap_or_default();
            let env = task_environment(&task.task, &host_ports, &self.config.hostname);
            let healthy = stream.latest().and_then(|status| status.healthy);
            let kill_requested = phase == TaskPhase::Killing;
            self.tasks.insert(
                key.clone(),
                TaskEntry {
                    framework_id: checkpoint.framework_id.clone(),
                    info: task.task,
                    phase,
                    stream,
                    checkpoint: checkpoint.clone(),
                    handle: handle.clone(),
                    host_ports,
                    env,
                    launching: false,
                    kill_requested,
                    kill_grace: None,
                    healthy,
                    health_check: None,
                },
            );
            if phase.is_terminal() {
                if let Some(handle) = handle {
                    self.schedule_removal(handle);
                }
                continue;
            }
            if let Err(error) = self.checkpoint.save_task(&key, &checkpoint).await {
                tracing::error!(task = %key, %error, "cannot checkpoint task");
            }
            let Some(handle) = handle else {
                self.emit(
                    &key,
                    TaskState::TaskFailed,
                    TaskReason::ReasonAgentRestarted,
                    "the agent restarted while launching the task".to_owned(),
                    None,
                )
                .await;
                continue;
            };
            let state = match found {
                Some(found) => found.state,
                None => self.runtime.inspect(&handle).await,
            };
            self.adopt(&key, handle, state).await;
        }
        // Containers of this agent without a checkpoint: re-registered so the master can decide.
        for (key, found) in discovered {
            let task_id = &key.task_id;
            match found.state {
                ContainerState::Running => {
                    tracing::warn!(task = %key, container_id = %found.handle.container_id, "adopting a running container without checkpoint");
                    let info = TaskInfo {
                        task_id: task_id.to_string(),
                        name: task_id.to_string(),
                        ..Default::default()
                    };
                    let checkpoint = TaskCheckpoint {
                        container_id: Some(found.handle.container_id.clone()),
                        ..TaskCheckpoint::new(
                            found.framework_id.clone(),
                            &info,
                            self.runtime.kind().as_str(),
                        )
                    };
                    if let Err(error) = self.checkpoint.save_task(&key, &checkpoint).await {
                        tracing::error!(task = %key, %error, "cannot checkpoint task");
                    }
                    self.tasks.insert(
                        key.clone(),
                        TaskEntry {
                            framework_id: found.framework_id,
                            info,
                            phase: TaskPhase::Running,
                            stream: StatusUpdateStream::new(task_id.as_str()),
                            checkpoint,
                            handle: Some(found.handle.clone()),
                            host_ports: Vec::new(),
                            env: BTreeMap::new(),
                            launching: false,
                            kill_requested: false,
                            kill_grace: None,
                            healthy: None,
                            health_check: None,
                        },
                    );
                    self.watch_exit(&key, found.handle);
                }
                ContainerState::Exited(_) | ContainerState::Missing => {
                    self.schedule_removal(found.handle);
                }
            }
        }
    }

    async fn adopt(&mut self, key: &TaskKey, handle: ContainerHandle, state: ContainerState) {
        match state {
            ContainerState::Running => {
                tracing::info!(task = %key, container_id = %handle.container_id, "re-attached to running task");
                self.watch_exit(key, handle.clone());
                let killing = self
                    .tasks
                    .get(key)
                    .is_some_and(|entry| entry.kill_requested);
                if killing {
                    let grace = self.kill_grace(key);
                    self.spawn_kill(key, handle, grace);
                } else if self
                    .tasks
                    .get(key)
                    .is_some_and(|entry| entry.phase == TaskPhase::Running)
                {
                    self.start_health_check(key);
                } else {
                    self.emit(
                        key,
                        TaskState::TaskRunning,
                        TaskReason::ReasonUnspecified,
                        "running (recovered after an agent restart)".to_owned(),
                        None,
                    )
                    .await;
                    self.start_health_check(key);
                }
            }
            ContainerState::Exited(exit) => {
                let killing = self
                    .tasks
                    .get(key)
                    .is_some_and(|entry| entry.kill_requested);
                let (state, reason) = if killing {
                    (TaskState::TaskKilled, TaskReason::ReasonTaskKilled)
                } else if exit.code == Some(0) {
                    (
                        TaskState::TaskFinished,
                        TaskReason::ReasonContainerExitedWhileAgentDown,
                    )
                } else {
                    (
                        TaskState::TaskFailed,
                        TaskReason::ReasonContainerExitedWhileAgentDown,
                    )
                };
                self.emit(key, state, reason, exit.message, exit.code).await;
                self.schedule_removal(handle);
            }
            ContainerState::Missing => {
                self.emit(
                    key,
                    TaskState::TaskFailed,
                    TaskReason::ReasonContainerExitedWhileAgentDown,
                    "the container disappeared while the agent was down".to_owned(),
                    None,
                )
                .await;
            }
        }
    }

    async fn kill_all_for_shutdown(&mut self) {
        let kills: Vec<(TaskKey, ContainerHandle)> = self
            .tasks
            .iter()
            .filter(|(_, entry)| !entry.phase.is_terminal())
            .filter_map(|(key, entry)| entry.handle.clone().map(|h| (key.clone(), h)))
            .collect();
        let grace = self.config.default_kill_grace.min(Duration::from_secs(2));
        let runtime = Arc::clone(&self.runtime);
        let all = kills.into_iter().map(|(key, handle)| {
            let runtime = Arc::clone(&runtime);
            async move {
                if let Err(error) = runtime.kill(&handle, grace).await {
                    tracing::warn!(task = %key, %error, "kill at shutdown failed");
                }
            }
        });
        futures::future::join_all(all).await;
    }

    fn snapshot(&self) -> AgentSnapshot {
        let mut used = Resources::new();
        for entry in self
            .tasks
            .values()
            .filter(|entry| !entry.phase.is_terminal())
        {
            if let Ok(resources) = Resources::from_proto(&entry.info.resources) {
                used.add(&resources);
            }
        }
        AgentSnapshot {
            agent_id: self.agent_id.as_ref().map(AgentId::to_string),
            hostname: self.info.hostname.clone(),
            address: self.info.address.clone(),
            runtime: self.runtime.kind().as_str().to_owned(),
            connected: self.outbound.is_some(),
            resources: self.resources.to_string(),
            used_resources: used.to_string(),
            labels: self.info.labels.clone().into_iter().collect(),
            tasks: self
                .tasks
                .iter()
                .map(|(key, entry)| entry.snapshot(key))
                .collect(),
            metrics: self.metrics.clone(),
        }
    }
}

fn short_id(container_id: &str) -> &str {
    container_id.get(..12).unwrap_or(container_id)
}

/// The grace period of a `KillTask`, checked: the master range-checks it, but the agent must
/// never panic on what it is sent. Above [`MAX_KILL_GRACE`] it is clamped (a kill is never
/// refused); NaN or negative means "the task's own grace period". Either way with a warning.
fn kill_grace_from_master(key: &TaskKey, seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        tracing::warn!(task = %key, requested_seconds = seconds, "kill grace period is not a non-negative number; using the task's own");
        return None;
    }
    let grace = clamped_seconds(seconds, MAX_KILL_GRACE);
    if seconds > MAX_KILL_GRACE.as_secs_f64() {
        tracing::warn!(task = %key, requested_seconds = seconds, used_seconds = MAX_KILL_GRACE.as_secs_f64(), "kill grace period out of range; clamped");
    }
    grace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TaskKey {
        TaskKey::new(FrameworkId::new("fw"), TaskId::new("t"))
    }

    #[test]
    fn kill_grace_from_the_master_never_panics_and_stays_in_range() {
        assert_eq!(kill_grace_from_master(&key(), 1e308), Some(MAX_KILL_GRACE));
        assert_eq!(
            kill_grace_from_master(&key(), f64::INFINITY),
            Some(MAX_KILL_GRACE)
        );
        assert_eq!(kill_grace_from_master(&key(), f64::NAN), None);
        assert_eq!(kill_grace_from_master(&key(), -1.0), None);
        assert_eq!(
            kill_grace_from_master(&key(), 2.5),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(kill_grace_from_master(&key(), 0.0), Some(Duration::ZERO));
    }
}
