//! Book-keeping shared by every call: sending, persisting, and keeping the resource
//! accounting (agents' used/offered, frameworks' allocations, the cluster total) consistent.
//!
//! Invariants kept here:
//! - `agent.used` = resources of the agent's non-terminal live tasks;
//! - `agent.offered` = resources of its outstanding offers;
//! - `framework.allocated` = its offers plus its non-terminal tasks on agents in the pool;
//! - `cluster_total` = totals of agents in the pool (active or draining).

use agora_proto::v1::TaskState;
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, TaskId, v1};
use tokio::time::Instant;
use tracing::debug;

use super::offers::Offer;
use super::tasks::Task;
use super::{Command, ConnId, Master, MasterError, Now, RegistryUpdate};

impl Master {
    pub(super) fn persist(&mut self, update: RegistryUpdate) {
        self.commands.push(Command::Persist(update));
    }

    pub(super) fn send_to_agent_conn(
        &mut self,
        conn: ConnId,
        message: v1::master_message::Message,
    ) {
        self.commands.push(Command::SendToAgent { conn, message });
    }

    /// Sends to the agent if it is connected; otherwise the message is dropped (the agent
    /// learns the state when it re-registers).
    pub(super) fn send_to_agent(
        &mut self,
        agent_id: &AgentId,
        message: v1::master_message::Message,
    ) {
        if let Some(conn) = self.agents.conn_of(agent_id) {
            self.send_to_agent_conn(conn, message);
        }
    }

    /// Sends to the framework's current stream if it has one.
    pub(super) fn send_to_framework(
        &mut self,
        framework_id: &FrameworkId,
        event: v1::event::Event,
    ) {
        if let Some(conn) = self.frameworks.conn_of(framework_id) {
            self.commands.push(Command::SendToFramework { conn, event });
        }
    }

    /// Sends `event` to every framework with an open subscription.
    pub(super) fn broadcast_to_frameworks(&mut self, event: v1::event::Event) {
        let connections: Vec<ConnId> = self
            .frameworks
            .frameworks
            .values()
            .filter_map(|framework| framework.conn())
            .collect();
        for conn in connections {
            self.commands.push(Command::SendToFramework {
                conn,
                event: event.clone(),
            });
        }
    }

    /// Sends a status update to the framework. One the master made itself (no uuid: no agent
    /// resends it) is kept for a framework without a subscription and delivered when it
    /// subscribes again, so a LOST, a held kill's answer or an adopted task is never missed.
    pub(super) fn send_update(&mut self, framework_id: &FrameworkId, mut status: v1::TaskStatus) {
        let knows_killing = self.frameworks.get(framework_id).is_none_or(|framework| {
            framework
                .info
                .capabilities
                .contains(&(v1::FrameworkCapability::TaskKillingState as i32))
        });
        if status.state() == TaskState::TaskKilling && !knows_killing {
            // As in Mesos, a framework without TASK_KILLING_STATE never sees TASK_KILLING: to
            // it the task is still running until its terminal update. An agent's update is
            // acknowledged here on the framework's behalf (it will never acknowledge what it
            // never got), so the agent's update stream moves on to the terminal update.
            if status.uuid.is_empty() {
                status.set_state(TaskState::TaskRunning);
            } else {
                let agent_id = AgentId::new(status.agent_id.clone());
                self.send_to_agent(
                    &agent_id,
                    v1::master_message::Message::AckStatus(v1::AckStatus {
                        framework_id: framework_id.to_string(),
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.clone(),
                    }),
                );
                return;
            }
        }
        if status.uuid.is_empty()
            && let Some(framework) = self.frameworks.get_mut(framework_id)
            && framework.conn().is_none()
        {
            framework
                .unannounced
                .insert(TaskId::new(status.task_id.clone()), status);
            return;
        }
        self.send_to_framework(
            framework_id,
            v1::event::Event::Update(v1::Update {
                status: Some(status),
            }),
        );
    }

    /// Asks for an allocation pass after the batching window, unless one is already due.
    pub(super) fn schedule_allocation(&mut self, now: Instant) {
        if self.timers.pending_allocation.is_none() {
            self.timers.pending_allocation = Some(now + self.config.allocation_batch_window);
        }
    }

    /// A status the master generates itself: no uuid (nothing to acknowledge), source master.
    pub(super) fn master_status(
        now: Now,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        agent_id: Option<&AgentId>,
        state: TaskState,
        reason: v1::TaskReason,
        message: impl Into<String>,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task_id.to_string(),
            agent_id: agent_id.map(ToString::to_string).unwrap_or_default(),
            state: state as i32,
            reason: reason as i32,
            message: message.into(),
            timestamp: now.unix_seconds,
            source: v1::StatusSource::SourceMaster as i32,
            framework_id: framework_id.to_string(),
            ..Default::default()
        }
    }

    /// Checks the framework and stream a scheduler call names.
    pub(super) fn check_caller(
        &self,
        header: Option<&v1::CallHeader>,
    ) -> Result<FrameworkId, MasterError> {
        let Some(header) = header else {
            return Err(MasterError::InvalidField {
                field: "header".to_owned(),
                reason: "is required (framework_id and stream_id)".to_owned(),
            });
        };
        super::validation::id("header.framework_id", &header.framework_id)?;
        super::validation::text(
            "header.stream_id",
            &header.stream_id,
            agora_proto::limits::MAX_ID_LEN,
        )?;
        let framework_id = FrameworkId::new(header.framework_id.clone());
        if self.frameworks.removed.contains(&framework_id) {
            return Err(MasterError::FrameworkRemoved(framework_id));
        }
        let Some(framework) = self.frameworks.get(&framework_id) else {
            return Err(MasterError::UnknownFramework(framework_id));
        };
        match &framework.connection {
            super::frameworks::FrameworkConnection::Connected { stream_id, .. }
                if stream_id.as_str() == header.stream_id =>
            {
                Ok(framework_id)
            }
            _ => Err(MasterError::StaleStream {
                framework_id,
                stream_id: header.stream_id.clone(),
            }),
        }
    }

    // ----- resource accounting --------------------------------------------------------------

    /// Puts the agent's resources (and its tasks' allocations) into the pool.
    pub(super) fn agent_join_pool(&mut self, agent_id: &AgentId) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        self.cluster_total.add(&agent.total_quantities);
        for (framework_id, task_id) in &agent.tasks {
            let Some(task) = self.tasks.get(framework_id, task_id) else {
                continue;
            };
            if task.is_terminal() {
                continue;
            }
            if let Some(framework) = self.frameworks.frameworks.get_mut(framework_id) {
                framework.allocated.add(&task.quantities);
            }
        }
    }

    /// Takes the agent's resources (and its tasks' allocations) out of the pool. Its offers
    /// must have been removed first.
    pub(super) fn agent_leave_pool(&mut self, agent_id: &AgentId) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        debug_assert!(
            self.offers.of_agent(agent_id).is_empty(),
            "offers left on agent"
        );
        self.cluster_total.sub(&agent.total_quantities);
        for (framework_id, task_id) in &agent.tasks {
            let Some(task) = self.tasks.get(framework_id, task_id) else {
                continue;
            };
            if task.is_terminal() {
                continue;
            }
            if let Some(framework) = self.frameworks.frameworks.get_mut(framework_id) {
                framework.allocated.sub(&task.quantities);
            }
        }
    }

    /// Adds a task to the live book and charges its `resources` (those of its info, parsed
    /// by the caller) when it is not terminal.
    pub(super) fn track_task(&mut self, task: Task, resources: &Resources) {
        let key = (task.framework_id.clone(), task.task_id.clone());
        if let Some(previous) = self.tasks.remove(&key.0, &key.1) {
            self.release_task_resources(&previous);
            if let Some(agent) = self.agents.get_mut(&previous.agent_id) {
                agent.tasks.remove(&key);
            }
            if previous.is_terminal() {
                self.tasks.complete(previous);
            }
        }
        if !task.is_terminal() {
            self.charge_task_resources(&task, resources);
        }
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.tasks.insert(key);
        }
        self.tasks.insert(task);
    }

    fn charge_task_resources(&mut self, task: &Task, resources: &Resources) {
        let Some(agent) = self.agents.get_mut(&task.agent_id) else {
            return;
        };
        agent.add_used(resources);
        if agent.status.in_pool()
            && let Some(framework) = self.frameworks.frameworks.get_mut(&task.framework_id)
        {
            framework.allocated.add(&task.quantities);
        }
    }

    fn release_task_resources(&mut self, task: &Task) {
        if task.is_terminal() {
            return;
        }
        let Some(agent) = self.agents.get_mut(&task.agent_id) else {
            return;
        };
        agent.remove_used(&task.resources());
        if agent.status.in_pool()
            && let Some(framework) = self.frameworks.frameworks.get_mut(&task.framework_id)
        {
            framework.allocated.sub(&task.quantities);
        }
    }

    /// Moves a live task to its new status, releasing its resources when it turns terminal.
    /// Returns whether resources were freed.
    pub(super) fn apply_task_status(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        status: v1::TaskStatus,
    ) -> Result<bool, agora_proto::IllegalTransition> {
        let Some(task) = self.tasks.get(framework_id, task_id) else {
            return Ok(false);
        };
        let from = task.state();
        let to = status.state();
        agora_proto::check_transition(from, to)?;
        let frees = !task.is_terminal() && agora_proto::is_terminal(to);
        if frees {
            let snapshot = task.clone();
            self.release_task_resources(&snapshot);
        }
        if let Some(task) = self.tasks.get_mut(framework_id, task_id) {
            task.status = status;
        }
        Ok(frees)
    }

    /// Moves a live task (normally terminal) to the completed list.
    pub(super) fn retire_task(&mut self, framework_id: &FrameworkId, task_id: &TaskId) {
        let Some(task) = self.tasks.remove(framework_id, task_id) else {
            return;
        };
        self.release_task_resources(&task);
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.tasks.remove(&(framework_id.clone(), task_id.clone()));
        }
        self.tasks.complete(task);
    }

    // ----- offers ----------------------------------------------------------------------------

    /// Removes an offer and gives its resources back to the pool (no event).
    pub(super) fn take_offer(&mut self, offer_id: &OfferId) -> Option<Offer> {
        let offer = self.offers.remove(offer_id)?;
        if let Some(agent) = self.agents.get_mut(&offer.agent_id) {
            agent.remove_offered(&offer.resources);
        }
        if let Some(framework) = self.frameworks.frameworks.get_mut(&offer.framework_id) {
            framework
                .allocated
                .sub(&super::allocator::Quantities::of(&offer.resources));
        }
        Some(offer)
    }

    /// Withdraws an offer, telling its framework with `Rescind`.
    pub(super) fn rescind_offer(&mut self, now: Instant, offer_id: &OfferId) {
        let Some(offer) = self.take_offer(offer_id) else {
            return;
        };
        debug!(offer_id = %offer.id, framework_id = %offer.framework_id, "offer rescinded");
        self.send_to_framework(
            &offer.framework_id,
            v1::event::Event::Rescind(v1::Rescind {
                offer_id: offer.id.to_string(),
            }),
        );
        self.schedule_allocation(now);
    }

    /// Withdraws every offer on the agent.
    pub(super) fn rescind_agent_offers(&mut self, now: Instant, agent_id: &AgentId) {
        for offer_id in self.offers.of_agent(agent_id) {
            self.rescind_offer(now, &offer_id);
        }
    }

    /// Drops the framework's offers silently (its stream is gone or replaced).
    pub(super) fn drop_framework_offers(&mut self, now: Instant, framework_id: &FrameworkId) {
        let offer_ids = self.offers.of_framework(framework_id);
        if offer_ids.is_empty() {
            return;
        }
        for offer_id in offer_ids {
            self.take_offer(&offer_id);
        }
        self.schedule_allocation(now);
    }
}
