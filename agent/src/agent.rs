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
use crate::error::RuntimeError;
use crate::health::{HealthPolicy, HealthTracker, ProbeTarget, probe};
use crate::runtime::{ContainerHandle, ContainerState, ExitStatus, LaunchSpec, Runtime};
use crate::snapshot::{AgentMetrics, AgentSnapshot, TaskSnapshot};
use crate::task_env::{task_environment, task_host_ports};
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
        task_id: TaskId,
        result: Result<ContainerHandle, RuntimeError>,
    },
    /// Launch progress (image pull).
    Progress { task_id: TaskId, message: String },
    /// A container or process ended.
    Exited {
        task_id: TaskId,
        container_id: String,
        exit: ExitStatus,
    },
    /// A health check changed its verdict.
    Health {
        task_id: TaskId,
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
    fn snapshot(&self, task_id: &TaskId) -> TaskSnapshot {
        TaskSnapshot {
            task_id: task_id.to_string(),
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
    tasks: BTreeMap<TaskId, TaskEntry>,
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
            AgentEvent::Launched { task_id, result } => self.on_launched(task_id, result).await,
            AgentEvent::Progress { task_id, message } => {
                let still_starting = self.tasks.get(&task_id).is_some_and(|entry| {
                    matches!(entry.phase, TaskPhase::Staging | TaskPhase::Starting)
                        && !entry.kill_requested
                });
                if still_starting {
                    self.emit(
                        &task_id,
                        TaskState::TaskStarting,
                        TaskReason::ReasonUnspecified,
                        message,
                        None,
                    )
                    .await;
                }
            }
            AgentEvent::Exited {
                task_id,
                container_id,
                exit,
            } => self.on_exited(task_id, container_id, exit).await,
            AgentEvent::Health {
                task_id,
                container_id,
                healthy,
            } => self.on_health(task_id, container_id, healthy).await,
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
                let grace = kill
                    .grace_period_seconds
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64);
                self.kill(
                    FrameworkId::new(kill.framework_id),
                    TaskId::new(kill.task_id),
                    grace,
                    TaskReason::ReasonTaskKilled,
                )
                .await;
            }
            master_message::Message::AckStatus(ack) => {
                self.acknowledge(TaskId::new(ack.task_id), ack.uuid).await;
            }
            master_message::Message::ShutdownFramework(shutdown) => {
                let framework_id = FrameworkId::new(shutdown.framework_id);
                let owned: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, entry)| {
                        entry.framework_id == framework_id && !entry.phase.is_terminal()
                    })
                    .map(|(task_id, _)| task_id.clone())
                    .collect();
                tracing::info!(framework_id = %framework_id, tasks = owned.len(), "shutting down framework");
                for task_id in owned {
                    self.kill(
                        framework_id.clone(),
                        task_id,
                        None,
                        TaskReason::ReasonFrameworkRemoved,
                    )
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
                    .map(|(task_id, entry)| AgentTask {
                        framework_id: entry.framework_id.to_string(),
                        task: Some(entry.info.clone()),
                        latest_status: Some(entry.stream.latest().cloned().unwrap_or_else(|| {
                            TaskStatus {
                                task_id: task_id.to_string(),
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
        task_id: &TaskId,
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
        let Some(entry) = self.tasks.get_mut(task_id) else {
            return;
        };
        let next_phase = match entry.phase.transition(state) {
            Ok(phase) => phase,
            Err(error) => {
                tracing::warn!(task_id = %task_id, %error, "status update not sent");
                return;
            }
        };
        let status = TaskStatus {
            task_id: task_id.to_string(),
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
            tracing::warn!(task_id = %task_id, %error, "status update not recorded");
            return;
        }
        entry.phase = next_phase;
        match state {
            TaskState::TaskFinished => self.metrics.tasks_finished += 1,
            TaskState::TaskFailed => self.metrics.tasks_failed += 1,
            TaskState::TaskKilled => self.metrics.tasks_killed += 1,
            _ => {}
        }
        tracing::info!(task_id = %task_id, state = state.as_str_name(), message = %status.message, "task status");
        if let Err(error) = self
            .checkpoint
            .append_update(task_id, &UpdateRecord::Update(status.clone()))
            .await
        {
            tracing::error!(task_id = %task_id, %error, "cannot checkpoint status update");
        }
        let Some(entry) = self.tasks.get_mut(task_id) else {
            return;
        };
        let framework_id = entry.framework_id.clone();
        if entry.stream.record(status.clone()).unwrap_or(false) {
            self.send_update(&framework_id, status);
        }
    }

    async fn acknowledge(&mut self, task_id: TaskId, uuid: String) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
            tracing::debug!(task_id = %task_id, %uuid, "acknowledgement for an unknown task");
            return;
        };
        let next = match entry.stream.acknowledge(&uuid) {
            Ok(next) => next.cloned(),
            Err(error) => {
                tracing::debug!(task_id = %task_id, %error, "acknowledgement ignored");
                return;
            }
        };
        let framework_id = entry.framework_id.clone();
        let complete = entry.stream.is_complete();
        if complete {
            self.tasks.remove(&task_id);
            if let Err(error) = self.checkpoint.remove_task(&task_id).await {
                tracing::error!(task_id = %task_id, %error, "cannot remove task checkpoint");
            }
            tracing::debug!(task_id = %task_id, "terminal update acknowledged, task forgotten");
            return;
        }
        if let Err(error) = self
            .checkpoint
            .append_update(&task_id, &UpdateRecord::Ack(uuid))
            .await
        {
            tracing::error!(task_id = %task_id, %error, "cannot checkpoint acknowledgement");
        }
        if let Some(next) = next {
            self.send_update(&framework_id, next);
        }
    }

    async fn launch(&mut self, framework_id: FrameworkId, task: TaskInfo) {
        let task_id = TaskId::new(task.task_id.clone());
        if task_id.is_empty() {
            tracing::warn!(framework_id = %framework_id, "launch of a task without task_id ignored");
            return;
        }
        if self.tasks.contains_key(&task_id) {
            tracing::warn!(task_id = %task_id, "launch of a task this agent already has ignored");
            return;
        }
        self.metrics.launches += 1;
        let checkpoint =
            TaskCheckpoint::new(framework_id.clone(), &task, self.runtime.kind().as_str());
        let host_ports = task_host_ports(&task);
        let ports = host_ports.clone().unwrap_or_default();
        let env = task_environment(&task, &ports, &self.config.hostname);
        self.tasks.insert(
            task_id.clone(),
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
        if let Err(error) = self.checkpoint.save_task(&task_id, &checkpoint).await {
            tracing::error!(task_id = %task_id, %error, "cannot checkpoint task");
        }
        if let Err(error) = host_ports {
            self.metrics.launch_failures += 1;
            self.emit(
                &task_id,
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
            &task_id,
            TaskState::TaskStarting,
            TaskReason::ReasonUnspecified,
            "launching".to_owned(),
            None,
        )
        .await;
        if let Some(entry) = self.tasks.get_mut(&task_id) {
            entry.launching = true;
        }
        let spec = LaunchSpec {
            task_id: task_id.clone(),
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
            let progress_task = task_id.clone();
            let progress = move |message: String| {
                let _ = progress_events.try_send(AgentEvent::Progress {
                    task_id: progress_task.clone(),
                    message,
                });
            };
            let result = runtime.launch(&spec, &progress).await;
            let _ = events.send(AgentEvent::Launched { task_id, result }).await;
        });
    }

    async fn on_launched(
        &mut self,
        task_id: TaskId,
        result: Result<ContainerHandle, RuntimeError>,
    ) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
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
                let grace = self.kill_grace(&task_id);
                if let Err(error) = self.checkpoint.save_task(&task_id, &checkpoint).await {
                    tracing::error!(task_id = %task_id, %error, "cannot checkpoint container id");
                }
                self.watch_exit(&task_id, handle.clone());
                if kill_requested {
                    self.spawn_kill(&task_id, handle, grace);
                    return;
                }
                self.emit(
                    &task_id,
                    TaskState::TaskRunning,
                    TaskReason::ReasonUnspecified,
                    format!("running in {}", short_id(&handle.container_id)),
                    None,
                )
                .await;
                self.start_health_check(&task_id);
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
                tracing::warn!(task_id = %task_id, %error, "launch failed");
                self.emit(&task_id, state, reason, error.to_string(), None)
                    .await;
            }
        }
    }

    fn watch_exit(&self, task_id: &TaskId, handle: ContainerHandle) {
        let runtime = Arc::clone(&self.runtime);
        let events = self.events.clone();
        let task_id = task_id.clone();
        tokio::spawn(async move {
            let exit = runtime.wait(&handle).await;
            let _ = events
                .send(AgentEvent::Exited {
                    task_id,
                    container_id: handle.container_id,
                    exit,
                })
                .await;
        });
    }

    fn kill_grace(&self, task_id: &TaskId) -> Duration {
        let Some(entry) = self.tasks.get(task_id) else {
            return self.config.default_kill_grace;
        };
        entry.kill_grace.unwrap_or_else(|| {
            let seconds = entry.info.kill_grace_period_seconds;
            if seconds.is_finite() && seconds > 0.0 {
                Duration::from_secs_f64(seconds)
            } else {
                self.config.default_kill_grace
            }
        })
    }

    fn spawn_kill(&self, task_id: &TaskId, handle: ContainerHandle, grace: Duration) {
        let runtime = Arc::clone(&self.runtime);
        let task_id = task_id.clone();
        tokio::spawn(async move {
            if let Err(error) = runtime.kill(&handle, grace).await {
                tracing::warn!(task_id = %task_id, %error, "kill failed");
            }
        });
    }

    async fn kill(
        &mut self,
        framework_id: FrameworkId,
        task_id: TaskId,
        grace: Option<Duration>,
        reason: TaskReason,
    ) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
            tracing::info!(task_id = %task_id, framework_id = %framework_id, "kill of an unknown task: reporting it lost");
            let status = TaskStatus {
                task_id: task_id.to_string(),
                agent_id: self
                    .agent_id
                    .as_ref()
                    .map(AgentId::to_string)
                    .unwrap_or_default(),
                state: TaskState::TaskLost as i32,
                reason: TaskReason::ReasonTaskUnknown as i32,
                message: "the agent does not know this task".to_owned(),
                timestamp: now_seconds(),
                source: StatusSource::SourceAgent as i32,
                framework_id: framework_id.to_string(),
                ..Default::default()
            };
            self.send_update(&framework_id, status);
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
        let grace = self.kill_grace(&task_id);
        match handle {
            Some(handle) => {
                self.emit(
                    &task_id,
                    TaskState::TaskKilling,
                    reason,
                    format!(
                        "stopping with a grace period of {:.1} s",
                        grace.as_secs_f64()
                    ),
                    None,
                )
                .await;
                self.spawn_kill(&task_id, handle, grace);
            }
            // The kill happens when the launch completes.
            None if launching => {
                self.emit(
                    &task_id,
                    TaskState::TaskKilling,
                    reason,
                    "killing once the launch completes".to_owned(),
                    None,
                )
                .await;
            }
            None => {
                self.emit(
                    &task_id,
                    TaskState::TaskKilled,
                    reason,
                    "killed before it was launched".to_owned(),
                    None,
                )
                .await;
            }
        }
    }

    async fn on_exited(&mut self, task_id: TaskId, container_id: String, exit: ExitStatus) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
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
        self.emit(&task_id, state, reason, message, exit.code).await;
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

    fn start_health_check(&mut self, task_id: &TaskId) {
        if self.runtime.kind() == crate::config::RuntimeKind::Sim {
            return;
        }
        let Some(entry) = self.tasks.get_mut(task_id) else {
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
        let task = task_id.clone();
        let join = tokio::spawn(async move {
            let policy = HealthPolicy::from_proto(&check);
            let started = tokio::time::Instant::now();
            tokio::time::sleep(policy.delay).await;
            let mut tracker = HealthTracker::new(policy.clone());
            loop {
                let passed = probe(&check, &target, policy.timeout).await;
                if let Some(healthy) = tracker.observe(started.elapsed(), passed) {
                    let event = AgentEvent::Health {
                        task_id: task.clone(),
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

    async fn on_health(&mut self, task_id: TaskId, container_id: String, healthy: bool) {
        let Some(entry) = self.tasks.get_mut(&task_id) else {
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
            &task_id,
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
        let mut discovered: BTreeMap<TaskId, crate::runtime::DiscoveredContainer> = discovered
            .into_iter()
            .map(|container| (container.task_id.clone(), container))
            .collect();
        for task in recovered {
            let (stream, errors) = StatusUpdateStream::replay(task.task_id.as_str(), task.records);
            for error in errors {
                tracing::warn!(task_id = %task.task_id, %error, "checkpoint record skipped");
            }
            let found = discovered.remove(&task.task_id);
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
                if let Err(error) = self.checkpoint.remove_task(&task.task_id).await {
                    tracing::error!(task_id = %task.task_id, %error, "cannot remove task checkpoint");
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
                task.task_id.clone(),
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
            if let Err(error) = self.checkpoint.save_task(&task.task_id, &checkpoint).await {
                tracing::error!(task_id = %task.task_id, %error, "cannot checkpoint task");
            }
            let Some(handle) = handle else {
                self.emit(
                    &task.task_id,
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
            self.adopt(&task.task_id, handle, state).await;
        }
        // Containers of this agent without a checkpoint: re-registered so the master can decide.
        for (task_id, found) in discovered {
            match found.state {
                ContainerState::Running => {
                    tracing::warn!(task_id = %task_id, container_id = %found.handle.container_id, "adopting a running container without checkpoint");
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
                    if let Err(error) = self.checkpoint.save_task(&task_id, &checkpoint).await {
                        tracing::error!(task_id = %task_id, %error, "cannot checkpoint task");
                    }
                    self.tasks.insert(
                        task_id.clone(),
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
                    self.watch_exit(&task_id, found.handle);
                }
                ContainerState::Exited(_) | ContainerState::Missing => {
                    self.schedule_removal(found.handle);
                }
            }
        }
    }

    async fn adopt(&mut self, task_id: &TaskId, handle: ContainerHandle, state: ContainerState) {
        match state {
            ContainerState::Running => {
                tracing::info!(task_id = %task_id, container_id = %handle.container_id, "re-attached to running task");
                self.watch_exit(task_id, handle.clone());
                let killing = self
                    .tasks
                    .get(task_id)
                    .is_some_and(|entry| entry.kill_requested);
                if killing {
                    let grace = self.kill_grace(task_id);
                    self.spawn_kill(task_id, handle, grace);
                } else if self
                    .tasks
                    .get(task_id)
                    .is_some_and(|entry| entry.phase == TaskPhase::Running)
                {
                    self.start_health_check(task_id);
                } else {
                    self.emit(
                        task_id,
                        TaskState::TaskRunning,
                        TaskReason::ReasonUnspecified,
                        "running (recovered after an agent restart)".to_owned(),
                        None,
                    )
                    .await;
                    self.start_health_check(task_id);
                }
            }
            ContainerState::Exited(exit) => {
                let killing = self
                    .tasks
                    .get(task_id)
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
                self.emit(task_id, state, reason, exit.message, exit.code)
                    .await;
                self.schedule_removal(handle);
            }
            ContainerState::Missing => {
                self.emit(
                    task_id,
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
        let kills: Vec<(TaskId, ContainerHandle)> = self
            .tasks
            .iter()
            .filter(|(_, entry)| !entry.phase.is_terminal())
            .filter_map(|(task_id, entry)| entry.handle.clone().map(|h| (task_id.clone(), h)))
            .collect();
        let grace = self.config.default_kill_grace.min(Duration::from_secs(2));
        let runtime = Arc::clone(&self.runtime);
        let all = kills.into_iter().map(|(task_id, handle)| {
            let runtime = Arc::clone(&runtime);
            async move {
                if let Err(error) = runtime.kill(&handle, grace).await {
                    tracing::warn!(task_id = %task_id, %error, "kill at shutdown failed");
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
                .map(|(task_id, entry)| entry.snapshot(task_id))
                .collect(),
            metrics: self.metrics.clone(),
        }
    }
}

fn short_id(container_id: &str) -> &str {
    container_id.get(..12).unwrap_or(container_id)
}
