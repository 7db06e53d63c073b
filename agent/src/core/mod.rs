//! The agent's sans-IO core: it owns the tasks, their update streams and every decision. Events
//! come in ([`Input`]: master messages, runtime events, timer ticks, checkpoint-write failures),
//! commands go out ([`Command`]: checkpoint writes, runtime launches and kills, messages to the
//! master), in the order the shell must carry them out. The clock and the update uuids are
//! passed in ([`Step`]), so a test drives the core without tokio, a socket or a disk.

mod events;
mod recovery;
mod task;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agora_proto::v1::{
    AgentInfo, AgentMessage, AgentTask, HealthCheckProtocol, Register, Reregister, StatusSource,
    StatusUpdate, TaskInfo, TaskReason, TaskState, TaskStatus, agent_message, master_message,
};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId};

use crate::checkpoint::TaskCheckpoint;
use crate::config::RuntimeKind;
use crate::durations::{MAX_KILL_GRACE, clamped_seconds};
use crate::error::RuntimeError;
use crate::launch_policy::{LaunchPolicy, validate_launch};
use crate::runtime::{ContainerHandle, ExitStatus, LaunchSpec};
use crate::snapshot::{AgentMetrics, AgentSnapshot};
use crate::task_env::{task_environment, task_host_ports};
use crate::task_key::TaskKey;
use crate::update_stream::{StatusUpdateStream, UpdateRecord};
use agora_proto::TaskPhase;

pub(crate) use events::{Command, Input, Step};
pub(crate) use task::{Lifecycle, PendingKill, TaskEntry};

/// The agent's settings the core decides with.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// The host name tasks see in their environment.
    pub(crate) hostname: String,
    /// What the agent refuses to launch, and the runtime in use.
    pub(crate) launch_policy: LaunchPolicy,
    /// The grace period of a kill when neither the master nor the task gives one.
    pub(crate) default_kill_grace: Duration,
}

/// The span every log line about one task is written in, so that a grep of its id follows it.
pub(crate) fn task_span(key: &TaskKey) -> tracing::Span {
    tracing::info_span!("task", framework_id = %key.framework_id, task_id = %key.task_id)
}

/// The span of what the agent does for a framework as a whole (its launches, its shutdown).
pub(crate) fn framework_span(framework_id: &FrameworkId) -> tracing::Span {
    tracing::info_span!("framework", framework_id = %framework_id)
}

/// The agent's state and decisions.
#[derive(Debug)]
pub(crate) struct AgentCore {
    config: CoreConfig,
    agent_id: Option<AgentId>,
    info: AgentInfo,
    resources: Resources,
    /// Keyed by (framework id, task id): a task id is unique only within its framework.
    tasks: BTreeMap<TaskKey, TaskEntry>,
    connected: bool,
    metrics: AgentMetrics,
    /// Set once a checkpoint write failed: the core then decides nothing more.
    stopped: Option<String>,
    commands: Vec<Command>,
}

impl AgentCore {
    /// A core with no task, under the checkpointed `agent_id` if there is one.
    pub(crate) fn new(
        config: CoreConfig,
        agent_id: Option<AgentId>,
        info: AgentInfo,
        resources: Resources,
    ) -> Self {
        Self {
            config,
            agent_id,
            info,
            resources,
            tasks: BTreeMap::new(),
            connected: false,
            metrics: AgentMetrics::default(),
            stopped: None,
            commands: Vec::new(),
        }
    }

    /// Applies one input and returns what to do, in order.
    pub(crate) fn handle(&mut self, input: Input, step: &mut Step<'_>) -> Vec<Command> {
        if let Some(reason) = &self.stopped {
            tracing::debug!(%reason, "agent stopping; input ignored");
            return Vec::new();
        }
        match input {
            Input::Recovered {
                tasks,
                discovered,
                inspected,
            } => self.recover(tasks, discovered, inspected, step),
            Input::Master(message) => self.on_master(message, step),
            Input::Connected { agent_id } => {
                self.adopt_agent_id(agent_id.clone());
                tracing::info!(agent_id = %agent_id, tasks = self.tasks.len(), "registered with the master");
                self.connected = true;
                self.metrics.registrations += 1;
                self.resend_pending();
            }
            Input::Disconnected => {
                if self.connected {
                    tracing::warn!("disconnected from the master");
                }
                self.connected = false;
            }
            Input::Launched { key, result } => {
                let _span = task_span(&key).entered();
                self.on_launched(&key, result, step);
            }
            Input::Progress { key, message } => {
                let _span = task_span(&key).entered();
                let still_starting = self.tasks.get(&key).is_some_and(|entry| {
                    matches!(
                        entry.lifecycle,
                        Lifecycle::Accepted | Lifecycle::Launching { kill: None }
                    )
                });
                if still_starting {
                    self.emit(
                        &key,
                        TaskState::TaskStarting,
                        TaskReason::ReasonUnspecified,
                        message,
                        None,
                        step,
                    );
                }
            }
            Input::Exited {
                key,
                container_id,
                exit,
            } => {
                let _span = task_span(&key).entered();
                self.on_exited(&key, &container_id, exit, step);
            }
            Input::Health {
                key,
                container_id,
                healthy,
            } => {
                let _span = task_span(&key).entered();
                self.on_health(&key, &container_id, healthy, step);
            }
            Input::ResendTick => self.resend_pending(),
            Input::CheckpointFailed { operation, error } => {
                let reason = format!(
                    "cannot checkpoint {operation}: {error}; stopping rather than act on state that is not saved (tasks keep running and are recovered on restart)"
                );
                tracing::error!(%operation, %error, "checkpoint write failed; stopping the agent");
                self.stopped = Some(reason.clone());
                self.commands.clear();
                self.commands.push(Command::Stop { reason });
            }
        }
        std::mem::take(&mut self.commands)
    }

    /// The message a (re)connection opens with: `Register` for a new agent, `Reregister` with
    /// every task for one that has an id.
    pub(crate) fn registration_message(&self, now: f64) -> AgentMessage {
        let mut agent = self.info.clone();
        let message = match &self.agent_id {
            None => agent_message::Message::Register(Register { agent: Some(agent) }),
            Some(agent_id) => {
                agent.id = agent_id.to_string();
                let tasks: Vec<AgentTask> = self
                    .tasks
                    .iter()
                    .map(|(key, entry)| AgentTask {
                        framework_id: key.framework_id.to_string(),
                        task: Some(entry.info.clone()),
                        latest_status: Some(entry.stream.latest().cloned().unwrap_or_else(|| {
                            TaskStatus {
                                task_id: key.task_id.to_string(),
                                agent_id: agent_id.to_string(),
                                state: entry.reported.state() as i32,
                                timestamp: now,
                                container_id: entry
                                    .lifecycle
                                    .handle()
                                    .map(|h| h.container_id.clone())
                                    .unwrap_or_default(),
                                source: StatusSource::SourceAgent as i32,
                                framework_id: key.framework_id.to_string(),
                                healthy: entry.lifecycle.healthy(),
                                ..Default::default()
                            }
                        })),
                    })
                    .collect();
                let framework_ids: BTreeSet<String> = self
                    .tasks
                    .keys()
                    .map(|key| key.framework_id.to_string())
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

    /// The containers of tasks that have not ended, for a kill at shutdown.
    pub(crate) fn live_containers(&self) -> Vec<(TaskKey, ContainerHandle)> {
        self.tasks
            .iter()
            .filter(|(_, entry)| !entry.reported.is_terminal())
            .filter_map(|(key, entry)| {
                entry
                    .lifecycle
                    .handle()
                    .map(|handle| (key.clone(), handle.clone()))
            })
            .collect()
    }

    /// The agent's state for `/state`, `/metrics` and tests.
    pub(crate) fn snapshot(&self) -> AgentSnapshot {
        let mut used = Resources::new();
        for entry in self
            .tasks
            .values()
            .filter(|entry| !entry.reported.is_terminal())
        {
            if let Ok(resources) = Resources::from_proto(&entry.info.resources) {
                used.add(&resources);
            }
        }
        AgentSnapshot {
            agent_id: self.agent_id.as_ref().map(AgentId::to_string),
            hostname: self.info.hostname.clone(),
            address: self.info.address.clone(),
            runtime: self.config.launch_policy.runtime.as_str().to_owned(),
            connected: self.connected,
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

    /// The agent id, once the master gave one.
    pub(crate) fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    fn adopt_agent_id(&mut self, agent_id: AgentId) {
        if agent_id.is_empty() || self.agent_id.as_ref() == Some(&agent_id) {
            return;
        }
        if let Some(previous) = &self.agent_id {
            tracing::warn!(previous = %previous, new = %agent_id, "master assigned a new agent id");
        }
        self.commands.push(Command::SaveAgentId(agent_id.clone()));
        self.agent_id = Some(agent_id);
    }

    fn on_master(&mut self, message: master_message::Message, step: &mut Step<'_>) {
        match message {
            master_message::Message::Registered(registered) => {
                self.adopt_agent_id(AgentId::new(registered.agent_id));
            }
            master_message::Message::LaunchTasks(launch) => {
                let framework_id = FrameworkId::new(launch.framework_id);
                let _span = framework_span(&framework_id).entered();
                for task in launch.tasks {
                    self.launch(framework_id.clone(), task, step);
                }
            }
            master_message::Message::KillTask(kill) => {
                let key = self.resolve_key(kill.framework_id, kill.task_id);
                let _span = task_span(&key).entered();
                let grace = kill.grace_period_seconds.and_then(kill_grace_from_master);
                self.kill(&key, grace, TaskReason::ReasonTaskKilled, step);
            }
            master_message::Message::AckStatus(ack) => {
                let key = self.resolve_key(ack.framework_id, ack.task_id);
                let _span = task_span(&key).entered();
                self.acknowledge(&key, &ack.uuid);
            }
            master_message::Message::ShutdownFramework(shutdown) => {
                let framework_id = FrameworkId::new(shutdown.framework_id);
                let _span = framework_span(&framework_id).entered();
                let owned: Vec<TaskKey> = self
                    .tasks
                    .iter()
                    .filter(|(key, entry)| {
                        key.framework_id == framework_id && !entry.reported.is_terminal()
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                tracing::info!(tasks = owned.len(), "shutting down framework");
                for key in owned {
                    let _span = task_span(&key).entered();
                    self.kill(&key, None, TaskReason::ReasonFrameworkRemoved, step);
                }
            }
            master_message::Message::Heartbeat(_) | master_message::Message::Refused(_) => {}
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

    fn send_update(&mut self, framework_id: &FrameworkId, status: TaskStatus) {
        if !self.connected {
            return;
        }
        self.commands.push(Command::Send(AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                framework_id: framework_id.to_string(),
                status: Some(status),
            })),
        }));
    }

    fn resend_pending(&mut self) {
        if !self.connected {
            return;
        }
        let heads: Vec<(FrameworkId, TaskStatus)> = self
            .tasks
            .iter()
            .filter_map(|(key, entry)| {
                entry
                    .stream
                    .head()
                    .map(|head| (key.framework_id.clone(), head.clone()))
            })
            .collect();
        for (framework_id, status) in heads {
            self.send_update(&framework_id, status);
        }
    }

    /// Records a status update for a task: checkpointed first, then sent when it is the oldest
    /// unacknowledged one. False (and nothing changes) when the task cannot report `state`.
    fn emit(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskReason,
        message: String,
        exit_code: Option<i32>,
        step: &mut Step<'_>,
    ) -> bool {
        let agent_id = self
            .agent_id
            .as_ref()
            .map(AgentId::to_string)
            .unwrap_or_default();
        let Some(entry) = self.tasks.get_mut(key) else {
            return false;
        };
        let next_phase = match entry.reported.transition(state) {
            Ok(phase) => phase,
            Err(error) => {
                tracing::warn!(%error, "status update not sent");
                return false;
            }
        };
        let status = TaskStatus {
            task_id: key.task_id.to_string(),
            agent_id,
            state: state as i32,
            reason: reason as i32,
            message,
            healthy: entry.lifecycle.healthy(),
            uuid: (step.new_uuid)(),
            timestamp: step.now,
            exit_code,
            container_id: entry
                .lifecycle
                .handle()
                .map(|h| h.container_id.clone())
                .unwrap_or_default(),
            source: StatusSource::SourceAgent as i32,
            framework_id: key.framework_id.to_string(),
        };
        if let Err(error) = entry.stream.check(&status) {
            tracing::warn!(%error, "status update not recorded");
            return false;
        }
        entry.reported = next_phase;
        match state {
            TaskState::TaskFinished => self.metrics.tasks_finished += 1,
            TaskState::TaskFailed => self.metrics.tasks_failed += 1,
            TaskState::TaskKilled => self.metrics.tasks_killed += 1,
            _ => {}
        }
        tracing::info!(state = state.as_str_name(), status_message = %status.message, uuid = %status.uuid, "task status");
        self.commands.push(Command::AppendUpdate {
            key: key.clone(),
            record: UpdateRecord::Update(status.clone()),
        });
        // `check` passed, so `record` accepts it; true when it heads the stream.
        if entry.stream.record(status.clone()).unwrap_or(false) {
            self.send_update(&key.framework_id, status);
        }
        true
    }

    fn acknowledge(&mut self, key: &TaskKey, uuid: &str) {
        let Some(entry) = self.tasks.get_mut(key) else {
            tracing::debug!(%uuid, "acknowledgement for an unknown task");
            return;
        };
        let next = match entry.stream.acknowledge(uuid) {
            Ok(next) => next.cloned(),
            Err(error) => {
                tracing::debug!(%error, "acknowledgement ignored");
                return;
            }
        };
        if entry.stream.is_complete() {
            self.tasks.remove(key);
            self.commands
                .push(Command::RemoveTaskCheckpoint { key: key.clone() });
            tracing::debug!("terminal update acknowledged, task forgotten");
            return;
        }
        self.commands.push(Command::AppendUpdate {
            key: key.clone(),
            record: UpdateRecord::Ack(uuid.to_owned()),
        });
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
        now: f64,
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
            timestamp: now,
            source: StatusSource::SourceAgent as i32,
            framework_id: key.framework_id.to_string(),
            ..Default::default()
        };
        self.send_update(&key.framework_id, status);
    }

    fn launch(&mut self, framework_id: FrameworkId, task: TaskInfo, step: &mut Step<'_>) {
        let task_id = TaskId::new(task.task_id.clone());
        if task_id.is_empty() {
            tracing::warn!(framework_id = %framework_id, "launch of a task without task_id ignored");
            return;
        }
        let key = TaskKey::new(framework_id.clone(), task_id.clone());
        let _span = task_span(&key).entered();
        if let Some(existing) = self.tasks.get(&key) {
            // Never replace a task the agent still tracks: its container, update stream and
            // checkpoint are keyed by this very pair. The refusal is a one-shot update, so the
            // existing task's stream is untouched.
            let (state, message) = if existing.reported.is_terminal() {
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
                        existing.reported.state().as_str_name()
                    ),
                )
            };
            tracing::warn!(state = state.as_str_name(), "duplicate launch refused");
            self.metrics.launch_failures += 1;
            self.send_one_shot(
                &key,
                state,
                TaskReason::ReasonTaskInvalid,
                message,
                step.now,
            );
            return;
        }
        if let Err(refusal) = validate_launch(&task, &self.config.launch_policy) {
            tracing::warn!(%refusal, "launch refused");
            self.metrics.launch_failures += 1;
            self.send_one_shot(
                &key,
                TaskState::TaskError,
                TaskReason::ReasonTaskInvalid,
                refusal.to_string(),
                step.now,
            );
            return;
        }
        self.metrics.launches += 1;
        let runtime = self.config.launch_policy.runtime;
        let checkpoint = TaskCheckpoint::new(framework_id.clone(), &task, runtime.as_str());
        let host_ports = task_host_ports(&task);
        let ports = host_ports.clone().unwrap_or_default();
        let env = task_environment(&task, &ports, &self.config.hostname);
        self.tasks.insert(
            key.clone(),
            TaskEntry {
                info: task.clone(),
                reported: TaskPhase::Staging,
                stream: StatusUpdateStream::new(task_id.as_str()),
                checkpoint: checkpoint.clone(),
                host_ports: ports.clone(),
                env: env.clone(),
                lifecycle: Lifecycle::Accepted,
            },
        );
        self.commands.push(Command::SaveTask {
            key: key.clone(),
            checkpoint,
        });
        if let Err(error) = host_ports {
            self.metrics.launch_failures += 1;
            self.emit(
                &key,
                TaskState::TaskFailed,
                TaskReason::ReasonTaskInvalid,
                error.to_string(),
                None,
                step,
            );
            self.set_lifecycle(&key, Lifecycle::Ended { handle: None });
            return;
        }
        tracing::info!(runtime = runtime.as_str(), "launching task");
        self.set_lifecycle(&key, Lifecycle::Launching { kill: None });
        self.emit(
            &key,
            TaskState::TaskStarting,
            TaskReason::ReasonUnspecified,
            "launching".to_owned(),
            None,
            step,
        );
        let spec = LaunchSpec {
            task_id,
            framework_id,
            agent_id: self.agent_id.clone().unwrap_or_default(),
            task,
            env,
            host_ports: ports,
            allow_privileged: self.config.launch_policy.allow_privileged,
        };
        self.commands.push(Command::Launch {
            key,
            spec: Box::new(spec),
        });
    }

    fn set_lifecycle(&mut self, key: &TaskKey, lifecycle: Lifecycle) {
        if let Some(entry) = self.tasks.get_mut(key) {
            entry.lifecycle = lifecycle;
        }
    }

    fn on_launched(
        &mut self,
        key: &TaskKey,
        result: Result<ContainerHandle, RuntimeError>,
        step: &mut Step<'_>,
    ) {
        let default_grace = self.config.default_kill_grace;
        let Some(entry) = self.tasks.get_mut(key) else {
            return;
        };
        let Lifecycle::Launching { kill } = entry.lifecycle else {
            tracing::warn!(lifecycle = ?entry.lifecycle, "launch result for a task that is not launching; ignored");
            return;
        };
        match result {
            Ok(handle) => {
                entry.checkpoint.container_id = Some(handle.container_id.clone());
                entry.checkpoint.pid = handle.pid;
                // The container id is saved before anything else can refer to it, so that a
                // restart finds it again.
                self.commands.push(Command::SaveTask {
                    key: key.clone(),
                    checkpoint: entry.checkpoint.clone(),
                });
                self.commands.push(Command::WatchExit {
                    key: key.clone(),
                    handle: handle.clone(),
                });
                if let Some(kill) = kill {
                    let grace = entry.kill_grace(kill.grace, default_grace);
                    entry.lifecycle = Lifecycle::Killing {
                        handle: handle.clone(),
                        healthy: None,
                    };
                    self.commands.push(Command::Kill {
                        key: key.clone(),
                        handle,
                        grace,
                    });
                    return;
                }
                entry.lifecycle = Lifecycle::Running {
                    handle: handle.clone(),
                    healthy: None,
                };
                self.emit(
                    key,
                    TaskState::TaskRunning,
                    TaskReason::ReasonUnspecified,
                    format!("running in {}", short_id(&handle.container_id)),
                    None,
                    step,
                );
                self.start_health_check(key);
            }
            Err(error) => {
                self.metrics.launch_failures += 1;
                let (state, reason) = if kill.is_some() {
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
                tracing::warn!(%error, "launch failed");
                self.emit(key, state, reason, error.to_string(), None, step);
                self.set_lifecycle(key, Lifecycle::Ended { handle: None });
            }
        }
    }

    fn kill(
        &mut self,
        key: &TaskKey,
        requested_grace: Option<Duration>,
        reason: TaskReason,
        step: &mut Step<'_>,
    ) {
        let default_grace = self.config.default_kill_grace;
        let Some(entry) = self.tasks.get_mut(key) else {
            tracing::info!("kill of an unknown task: reporting it lost");
            self.send_one_shot(
                key,
                TaskState::TaskLost,
                TaskReason::ReasonTaskUnknown,
                "the agent does not know this task".to_owned(),
                step.now,
            );
            return;
        };
        if entry.reported.is_terminal() || entry.lifecycle.kill_requested() {
            return;
        }
        let grace = entry.kill_grace(requested_grace, default_grace);
        match entry.lifecycle.clone() {
            Lifecycle::Running { handle, healthy } => {
                entry.lifecycle = Lifecycle::Killing {
                    handle: handle.clone(),
                    healthy,
                };
                self.commands
                    .push(Command::StopHealthCheck { key: key.clone() });
                self.emit(
                    key,
                    TaskState::TaskKilling,
                    reason,
                    format!(
                        "stopping with a grace period of {:.1} s",
                        grace.as_secs_f64()
                    ),
                    None,
                    step,
                );
                self.commands.push(Command::Kill {
                    key: key.clone(),
                    handle,
                    grace,
                });
            }
            // The kill happens when the launch completes.
            Lifecycle::Launching { kill: None } => {
                entry.lifecycle = Lifecycle::Launching {
                    kill: Some(PendingKill {
                        grace: requested_grace,
                    }),
                };
                self.emit(
                    key,
                    TaskState::TaskKilling,
                    reason,
                    "killing once the launch completes".to_owned(),
                    None,
                    step,
                );
            }
            Lifecycle::Accepted => {
                self.emit(
                    key,
                    TaskState::TaskKilled,
                    reason,
                    "killed before it was launched".to_owned(),
                    None,
                    step,
                );
                self.set_lifecycle(key, Lifecycle::Ended { handle: None });
            }
            Lifecycle::Launching { kill: Some(_) }
            | Lifecycle::Killing { .. }
            | Lifecycle::Ended { .. } => {}
        }
    }

    fn on_exited(
        &mut self,
        key: &TaskKey,
        container_id: &str,
        exit: ExitStatus,
        step: &mut Step<'_>,
    ) {
        let Some(entry) = self.tasks.get(key) else {
            return;
        };
        let Some(handle) = entry.lifecycle.handle().cloned() else {
            return;
        };
        if handle.container_id != container_id {
            return;
        }
        self.commands
            .push(Command::StopHealthCheck { key: key.clone() });
        if entry.reported.is_terminal() {
            return;
        }
        let (state, reason, message) = if entry.lifecycle.kill_requested() {
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
        if self.emit(key, state, reason, message, exit.code, step) {
            self.set_lifecycle(
                key,
                Lifecycle::Ended {
                    handle: Some(handle.clone()),
                },
            );
        }
        self.commands.push(Command::RemoveContainer { handle });
    }

    fn on_health(&mut self, key: &TaskKey, container_id: &str, healthy: bool, step: &mut Step<'_>) {
        let Some(entry) = self.tasks.get_mut(key) else {
            return;
        };
        let Lifecycle::Running {
            handle,
            healthy: current,
        } = &mut entry.lifecycle
        else {
            return;
        };
        if handle.container_id != container_id
            || entry.reported != TaskPhase::Running
            || *current == Some(healthy)
        {
            return;
        }
        *current = Some(healthy);
        let (reason, message) = if healthy {
            (TaskReason::ReasonUnspecified, "health check passed")
        } else {
            (TaskReason::ReasonHealthCheckFailed, "health check failed")
        };
        self.emit(
            key,
            TaskState::TaskRunning,
            reason,
            message.to_owned(),
            None,
            step,
        );
    }

    fn start_health_check(&mut self, key: &TaskKey) {
        // The sim runtime has no container to probe.
        if self.config.launch_policy.runtime == RuntimeKind::Sim {
            return;
        }
        let Some(entry) = self.tasks.get(key) else {
            return;
        };
        let Some(check) = entry.info.health_check.clone() else {
            return;
        };
        if check.protocol() == HealthCheckProtocol::Unspecified {
            return;
        }
        let Lifecycle::Running { handle, .. } = &entry.lifecycle else {
            return;
        };
        self.commands.push(Command::StartHealthCheck {
            key: key.clone(),
            handle: handle.clone(),
            check,
            host_ports: entry.host_ports.clone(),
            env: entry.env.clone(),
        });
    }
}

fn short_id(container_id: &str) -> &str {
    container_id.get(..12).unwrap_or(container_id)
}

/// The grace period of a `KillTask`, checked: the master range-checks it, but the agent must
/// never panic on what it is sent. Above [`MAX_KILL_GRACE`] it is clamped (a kill is never
/// refused); NaN or negative means "the task's own grace period". Either way with a warning.
fn kill_grace_from_master(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        tracing::warn!(
            requested_seconds = seconds,
            "kill grace period is not a non-negative number; using the task's own"
        );
        return None;
    }
    let grace = clamped_seconds(seconds, MAX_KILL_GRACE);
    if seconds > MAX_KILL_GRACE.as_secs_f64() {
        tracing::warn!(
            requested_seconds = seconds,
            used_seconds = MAX_KILL_GRACE.as_secs_f64(),
            "kill grace period out of range; clamped"
        );
    }
    grace
}
