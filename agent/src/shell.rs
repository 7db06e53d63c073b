//! The agent's shell around its sans-IO [`AgentCore`]: it turns the connection, the runtime,
//! the health checks and the timer into [`Input`]s, and carries out the core's [`Command`]s in
//! order. Checkpoint writes come first in every step; when one fails, the rest of the step is
//! dropped and the agent stops with an error, before it sends or launches anything that
//! depended on the unsaved state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::AgentId;
use agora_proto::v1::{AgentMessage, HealthCheck, agent_message};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::CheckpointStore;
use crate::config::AgentConfig;
use crate::core::{AgentCore, Command, Input, Step, task_span};
use crate::error::AgentError;
use crate::health::{HealthPolicy, HealthTracker, ProbeTarget, probe};
use crate::runtime::{ContainerHandle, ContainerState, Runtime};
use crate::snapshot::AgentSnapshot;
use crate::task_key::TaskKey;

/// Capacity of the agent's event channel.
pub(crate) const EVENT_CAPACITY: usize = 1024;

/// Everything the shell's loop reacts to.
#[derive(Debug)]
pub(crate) enum AgentEvent {
    /// An input for the core as it is: a master message, or what the runtime and the health
    /// checks report (launched, progress, exited, health).
    Core(Input),
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
    /// A read of the agent's state, for `/state`, `/metrics` and tests.
    Snapshot(oneshot::Sender<AgentSnapshot>),
}

/// The shell's state: the I/O handles around the core.
pub(crate) struct AgentShell {
    config: Arc<AgentConfig>,
    core: AgentCore,
    runtime: Arc<dyn Runtime>,
    checkpoint: CheckpointStore,
    outbound: Option<mpsc::Sender<AgentMessage>>,
    events: mpsc::Sender<AgentEvent>,
    health_checks: BTreeMap<TaskKey, AbortHandle>,
    /// Status updates handed to the connection (the core cannot know what was delivered).
    status_updates_sent: u64,
}

impl AgentShell {
    pub(crate) fn new(
        config: Arc<AgentConfig>,
        core: AgentCore,
        runtime: Arc<dyn Runtime>,
        checkpoint: CheckpointStore,
        events: mpsc::Sender<AgentEvent>,
    ) -> Self {
        Self {
            config,
            core,
            runtime,
            checkpoint,
            outbound: None,
            events,
            health_checks: BTreeMap::new(),
            status_updates_sent: 0,
        }
    }

    /// Runs until `shutdown`; recovers checkpointed tasks first. An error means the agent
    /// stopped on its own (a checkpoint write failed).
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<AgentEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), AgentError> {
        let mut outcome = self.recover().await;
        if outcome.is_ok() {
            let mut resend = tokio::time::interval(self.config.status_resend_interval);
            resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            resend.tick().await;
            outcome = loop {
                let step = tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    event = events.recv() => match event {
                        Some(event) => self.on_event(event).await,
                        None => break Ok(()),
                    },
                    _ = resend.tick() => self.step(Input::ResendTick).await,
                };
                if let Err(error) = step {
                    break Err(error);
                }
            };
        }
        if outcome.is_ok() && self.config.kill_tasks_on_shutdown {
            self.kill_all_for_shutdown().await;
        }
        for health in self.health_checks.values() {
            health.abort();
        }
        match &outcome {
            Ok(()) => {
                tracing::info!(agent_id = ?self.core.agent_id().map(AgentId::as_str), "agent stopped")
            }
            Err(error) => {
                tracing::error!(agent_id = ?self.core.agent_id().map(AgentId::as_str), %error, "agent stopped")
            }
        }
        outcome
    }

    async fn on_event(&mut self, event: AgentEvent) -> Result<(), AgentError> {
        let input = match event {
            AgentEvent::Core(input) => input,
            AgentEvent::Connected { agent_id, outbound } => {
                self.outbound = Some(outbound);
                Input::Connected { agent_id }
            }
            AgentEvent::Disconnected => {
                self.outbound = None;
                Input::Disconnected
            }
            AgentEvent::RegistrationMessage(reply) => {
                let _ = reply.send(
                    self.core
                        .registration_message(self.config.clock.now().unix_seconds),
                );
                return Ok(());
            }
            AgentEvent::Snapshot(reply) => {
                let mut snapshot = self.core.snapshot();
                snapshot.metrics.status_updates_sent = self.status_updates_sent;
                let _ = reply.send(snapshot);
                return Ok(());
            }
        };
        self.step(input).await
    }

    /// Feeds one input to the core and carries out its commands.
    async fn step(&mut self, input: Input) -> Result<(), AgentError> {
        let mut new_uuid = || uuid::Uuid::new_v4().to_string();
        let mut step = Step {
            now: self.config.clock.now().unix_seconds,
            new_uuid: &mut new_uuid,
        };
        let mut commands = self.core.handle(input, &mut step);
        loop {
            let mut failure = None;
            for command in commands {
                if command.is_checkpoint_write() {
                    if let Err(error) = self.write_checkpoint(&command).await {
                        failure = Some((command, error));
                        break;
                    }
                    continue;
                }
                if let Command::Stop { reason } = command {
                    return Err(AgentError::Stopped { reason });
                }
                self.perform(command);
            }
            // A failed write: what followed it in the step is dropped; the core decides to stop.
            let Some((command, error)) = failure else {
                return Ok(());
            };
            let input = Input::CheckpointFailed {
                operation: checkpoint_operation(&command),
                error: error.to_string(),
            };
            commands = self.core.handle(input, &mut step);
        }
    }

    async fn write_checkpoint(&self, command: &Command) -> Result<(), AgentError> {
        match command {
            Command::SaveAgentId(agent_id) => self.checkpoint.save_agent_id(agent_id).await,
            Command::SaveTask { key, checkpoint } => {
                self.checkpoint
                    .save_task(key, checkpoint)
                    .instrument(task_span(key))
                    .await
            }
            Command::AppendUpdate { key, record } => {
                self.checkpoint
                    .append_update(key, record)
                    .instrument(task_span(key))
                    .await
            }
            Command::RemoveTaskCheckpoint { key } => {
                self.checkpoint
                    .remove_task(key)
                    .instrument(task_span(key))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Carries out a command that is not a checkpoint write; none of them waits.
    fn perform(&mut self, command: Command) {
        match command {
            Command::Send(message) => self.send(message),
            Command::Launch { key, spec } => {
                let runtime = Arc::clone(&self.runtime);
                let events = self.events.clone();
                let span = task_span(&key);
                tokio::spawn(
                    async move {
                        let progress_events = events.clone();
                        let progress_key = key.clone();
                        let progress = move |message: String| {
                            let _ = progress_events.try_send(AgentEvent::Core(Input::Progress {
                                key: progress_key.clone(),
                                message,
                            }));
                        };
                        let result = runtime.launch(&spec, &progress).await;
                        let _ = events
                            .send(AgentEvent::Core(Input::Launched { key, result }))
                            .await;
                    }
                    .instrument(span),
                );
            }
            Command::WatchExit { key, handle } => {
                let runtime = Arc::clone(&self.runtime);
                let events = self.events.clone();
                let span = task_span(&key);
                tokio::spawn(
                    async move {
                        let exit = runtime.wait(&handle).await;
                        let _ = events
                            .send(AgentEvent::Core(Input::Exited {
                                key,
                                container_id: handle.container_id,
                                exit,
                            }))
                            .await;
                    }
                    .instrument(span),
                );
            }
            Command::Kill { key, handle, grace } => {
                let runtime = Arc::clone(&self.runtime);
                let span = task_span(&key);
                tokio::spawn(
                    async move {
                        if let Err(error) = runtime.kill(&handle, grace).await {
                            tracing::warn!(%error, "kill failed");
                        }
                    }
                    .instrument(span),
                );
            }
            Command::RemoveContainer { handle } => {
                let runtime = Arc::clone(&self.runtime);
                let delay = self.config.remove_exited_after;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Err(error) = runtime.remove(&handle).await {
                        tracing::warn!(container_id = %handle.container_id, %error, "cannot remove exited container");
                    }
                });
            }
            Command::StartHealthCheck {
                key,
                handle,
                check,
                host_ports,
                env,
            } => self.start_health_check(key, handle, check, host_ports, env),
            Command::StopHealthCheck { key } => {
                if let Some(health) = self.health_checks.remove(&key) {
                    health.abort();
                }
            }
            Command::SaveAgentId(_)
            | Command::SaveTask { .. }
            | Command::AppendUpdate { .. }
            | Command::RemoveTaskCheckpoint { .. }
            | Command::Stop { .. } => {
                debug_assert!(false, "handled by step: {command:?}");
            }
        }
    }

    fn send(&mut self, message: AgentMessage) {
        let Some(outbound) = &self.outbound else {
            return;
        };
        let is_update = matches!(
            message.message,
            Some(agent_message::Message::StatusUpdate(_))
        );
        match outbound.try_send(message) {
            Ok(()) => {
                if is_update {
                    self.status_updates_sent += 1;
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("outbound queue to the master is full; the update will be resent");
            }
            // The connection ended; its `Disconnected` event tells the core.
            Err(mpsc::error::TrySendError::Closed(_)) => self.outbound = None,
        }
    }

    fn start_health_check(
        &mut self,
        key: TaskKey,
        handle: ContainerHandle,
        check: HealthCheck,
        host_ports: Vec<u32>,
        env: BTreeMap<String, String>,
    ) {
        let target = ProbeTarget {
            host_ports,
            runtime: Arc::clone(&self.runtime),
            handle: handle.clone(),
            env,
        };
        let events = self.events.clone();
        let task = key.clone();
        let span = task_span(&key);
        let join = tokio::spawn(
            async move {
                let policy = HealthPolicy::from_proto(&check);
                let started = tokio::time::Instant::now();
                tokio::time::sleep(policy.delay).await;
                let mut tracker = HealthTracker::new(policy.clone());
                loop {
                    let passed = probe(&check, &target, policy.timeout).await;
                    if let Some(healthy) = tracker.observe(started.elapsed(), passed) {
                        let event = AgentEvent::Core(Input::Health {
                            key: task.clone(),
                            container_id: handle.container_id.clone(),
                            healthy,
                        });
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(policy.interval).await;
                }
            }
            .instrument(span),
        );
        if let Some(previous) = self.health_checks.insert(key, join.abort_handle()) {
            previous.abort();
        }
    }

    /// Reads the checkpoint and asks the runtime what runs, then lets the core decide.
    async fn recover(&mut self) -> Result<(), AgentError> {
        let store = self.checkpoint.clone();
        let recovered = tokio::task::spawn_blocking(move || store.load_tasks())
            .await
            .unwrap_or_default();
        let discovered = match self.core.agent_id() {
            Some(agent_id) => match self.runtime.discover(agent_id).await {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(%error, "cannot list this agent's containers");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        // Checkpointed containers the label search missed are asked about one by one.
        let mut inspected = BTreeMap::new();
        for task in &recovered {
            let key = task.key();
            let labelled = discovered.iter().any(|found| {
                found.framework_id == key.framework_id && found.task_id == key.task_id
            });
            let Some(container_id) = task.checkpoint.container_id.clone() else {
                continue;
            };
            if labelled {
                continue;
            }
            let handle = ContainerHandle {
                container_id,
                pid: task.checkpoint.pid,
            };
            let state: ContainerState = self
                .runtime
                .inspect(&handle)
                .instrument(task_span(&key))
                .await;
            inspected.insert(key, state);
        }
        self.step(Input::Recovered {
            tasks: recovered,
            discovered,
            inspected,
        })
        .await
    }

    async fn kill_all_for_shutdown(&mut self) {
        let kills = self.core.live_containers();
        let grace: Duration = self.config.default_kill_grace.min(Duration::from_secs(2));
        let runtime = Arc::clone(&self.runtime);
        let all = kills.into_iter().map(|(key, handle)| {
            let runtime = Arc::clone(&runtime);
            let span = task_span(&key);
            async move {
                if let Err(error) = runtime.kill(&handle, grace).await {
                    tracing::warn!(%error, "kill at shutdown failed");
                }
            }
            .instrument(span)
        });
        futures::future::join_all(all).await;
    }
}

/// What a checkpoint write was about, for the error that stops the agent.
fn checkpoint_operation(command: &Command) -> String {
    match command {
        Command::SaveAgentId(agent_id) => format!("the agent id {agent_id}"),
        Command::SaveTask { key, .. } => format!("task {key}"),
        Command::AppendUpdate { key, .. } => format!("an update of task {key}"),
        Command::RemoveTaskCheckpoint { key } => format!("the removal of task {key}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use agora_proto::v1::{AckStatus, AgentInfo, LaunchTasks, TaskInfo, TaskState, TaskStatus};
    use agora_proto::{FrameworkId, Resources};

    use super::*;
    use crate::config::RuntimeKind;
    use crate::core::CoreConfig;
    use crate::launch_policy::LaunchPolicy;
    use crate::runtime::SimRuntime;
    use crate::runtime::sim::SIM_DURATION_LABEL;

    const RESEND: Duration = Duration::from_secs(10);

    /// A shell over the sim runtime without a work dir, and the events it reacts to.
    fn start() -> (
        mpsc::Sender<AgentEvent>,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), AgentError>>,
    ) {
        let mut config = AgentConfig::new("http://127.0.0.1:1");
        config.status_resend_interval = RESEND;
        let core = AgentCore::new(
            CoreConfig {
                hostname: "host-a".to_owned(),
                launch_policy: LaunchPolicy {
                    runtime: RuntimeKind::Sim,
                    allow_privileged: false,
                    allowed_host_paths: Vec::new(),
                },
                default_kill_grace: Duration::from_secs(1),
            },
            Some(AgentId::new("agent-1")),
            AgentInfo::default(),
            Resources::cpus_mem(4.0, 4096.0),
        );
        let (events, receiver) = mpsc::channel(EVENT_CAPACITY);
        let shell = AgentShell::new(
            Arc::new(config),
            core,
            Arc::new(SimRuntime::new()),
            CheckpointStore::disabled(),
            events.clone(),
        );
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(shell.run(receiver, shutdown.clone()));
        (events, shutdown, run)
    }

    async fn next_update(to_master: &mut mpsc::Receiver<AgentMessage>) -> TaskStatus {
        match to_master.recv().await {
            Some(AgentMessage {
                message: Some(agent_message::Message::StatusUpdate(update)),
            }) => update.status.expect("a status"),
            other => panic!("expected a status update, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_is_resent_every_interval_until_acknowledged_then_the_next_one_follows() {
        let (events, shutdown, run) = start();
        let (outbound, mut to_master) = mpsc::channel(64);
        let connected = AgentEvent::Connected {
            agent_id: AgentId::new("agent-1"),
            outbound,
        };
        events.send(connected).await.expect("agent runs");
        let task = TaskInfo {
            task_id: "web".to_owned(),
            name: "web".to_owned(),
            resources: Resources::cpus_mem(0.5, 64.0).to_proto(),
            labels: [(SIM_DURATION_LABEL.to_owned(), "300".to_owned())].into(),
            ..Default::default()
        };
        let launch = agora_proto::v1::master_message::Message::LaunchTasks(LaunchTasks {
            framework_id: "fw".to_owned(),
            tasks: vec![task],
        });
        events
            .send(AgentEvent::Core(Input::Master(launch)))
            .await
            .expect("agent runs");

        let started = tokio::time::Instant::now();
        let starting = next_update(&mut to_master).await;
        assert_eq!(starting.state(), TaskState::TaskStarting);
        // RUNNING is recorded meanwhile but waits behind the unacknowledged STARTING.
        for resend in 1..=3u32 {
            let again = next_update(&mut to_master).await;
            assert_eq!(again, starting, "the same update, uuid and all");
            assert_eq!(started.elapsed(), RESEND * resend);
        }

        let ack = agora_proto::v1::master_message::Message::AckStatus(AckStatus {
            framework_id: "fw".to_owned(),
            task_id: "web".to_owned(),
            uuid: starting.uuid.clone(),
        });
        events
            .send(AgentEvent::Core(Input::Master(ack)))
            .await
            .expect("agent runs");
        let running = next_update(&mut to_master).await;
        assert_eq!(running.state(), TaskState::TaskRunning);
        assert_eq!(running.framework_id, FrameworkId::new("fw").to_string());
        assert_eq!(
            started.elapsed(),
            RESEND * 3,
            "sent on the ack, not on a tick"
        );

        shutdown.cancel();
        run.await.expect("no panic").expect("a clean stop");
    }
}
