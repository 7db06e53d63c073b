//! What agents tell the master, and what happens to an agent's tasks when it goes away,
//! comes back or is drained.

use std::collections::BTreeSet;

use agora_proto::v1::{TaskReason, TaskState};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId, v1};
use tracing::{debug, info, warn};

use super::agents::{Agent, AgentStatus};
use super::allocator::Quantities;
use super::tasks::Task;
use super::{Command, ConnId, Master, MasterError, Now, RegistryUpdate, task_span, validation};

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MasterError {
    MasterError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A re-registering agent's task, validated.
struct ReportedTask {
    framework_id: FrameworkId,
    info: v1::TaskInfo,
    resources: Resources,
    status: Option<v1::TaskStatus>,
}

impl Master {
    /// A new agent registers on `conn`. Assigns an id, persists it, answers `Registered`.
    pub fn agent_register(
        &mut self,
        now: Now,
        conn: ConnId,
        mut info: v1::AgentInfo,
    ) -> Result<AgentId, MasterError> {
        let total = validation::agent_info(&info)?;
        if let Some(existing) = self.agents.id_of_conn(conn) {
            return Err(invalid(
                "register",
                format!("this connection is already registered as agent {existing}"),
            ));
        }
        let agent_id = AgentId::generate();
        info.id = agent_id.to_string();
        let agent = Agent::new(
            info.clone(),
            total,
            AgentStatus::Active,
            None,
            now.instant,
            now.unix_seconds,
        );
        info!(agent_id = %agent_id, hostname = %info.hostname, resources = %agent.total, "agent registered");
        self.agents.agents.insert(agent_id.clone(), agent);
        self.agents.attach(&agent_id, conn);
        self.agent_join_pool(&agent_id);
        self.persist(RegistryUpdate::UpsertAgent(info));
        self.send_registered(conn, &agent_id);
        self.schedule_allocation(now.instant);
        Ok(agent_id)
    }

    fn send_registered(&mut self, conn: ConnId, agent_id: &AgentId) {
        self.send_to_agent_conn(
            conn,
            v1::master_message::Message::Registered(v1::Registered {
                agent_id: agent_id.to_string(),
                heartbeat_interval_seconds: self.config.agent_heartbeat_interval.as_secs_f64(),
            }),
        );
    }

    fn validate_reported_tasks(tasks: &[v1::AgentTask]) -> Result<Vec<ReportedTask>, MasterError> {
        let mut reported = Vec::with_capacity(tasks.len());
        for (index, agent_task) in tasks.iter().enumerate() {
            validation::id(
                &format!("tasks[{index}].framework_id"),
                &agent_task.framework_id,
            )?;
            let Some(info) = &agent_task.task else {
                return Err(invalid(format!("tasks[{index}].task"), "is required"));
            };
            // Only what the master keys and sums by is checked: a task launched before a
            // limit existed (a longer label, no minimum mem) is adopted as it is, since
            // refusing the whole re-registration would strand every task of the agent.
            validation::id(&format!("tasks[{index}].task.task_id"), &info.task_id)?;
            let resources = Resources::from_proto(&info.resources).map_err(|error| {
                invalid(format!("tasks[{index}].task.resources"), error.to_string())
            })?;
            reported.push(ReportedTask {
                framework_id: FrameworkId::new(agent_task.framework_id.clone()),
                info: info.clone(),
                resources,
                status: agent_task.latest_status.clone(),
            });
        }
        Ok(reported)
    }

    /// A known agent (or one recovering after a master restart) re-registers with its tasks.
    pub fn agent_reregister(
        &mut self,
        now: Now,
        conn: ConnId,
        reregister: v1::Reregister,
    ) -> Result<AgentId, MasterError> {
        let Some(info) = reregister.agent else {
            return Err(invalid("agent", "is required"));
        };
        if info.id.is_empty() {
            return Err(invalid("agent.id", "is required to re-register"));
        }
        let total = validation::agent_info(&info)?;
        for (index, framework_id) in reregister.framework_ids.iter().enumerate() {
            validation::id(&format!("framework_ids[{index}]"), framework_id)?;
        }
        let reported = Self::validate_reported_tasks(&reregister.tasks)?;
        let agent_id = AgentId::new(info.id.clone());
        if let Some(existing) = self.agents.id_of_conn(conn)
            && existing != agent_id
        {
            return Err(invalid(
                "agent.id",
                format!("this connection is registered as agent {existing}"),
            ));
        }

        // Take the agent out of the pool while its tasks are reconciled; it re-joins below.
        let final_status = match self.agents.get(&agent_id) {
            Some(agent) if agent.status == AgentStatus::Draining => AgentStatus::Draining,
            _ => AgentStatus::Active,
        };
        if let Some(agent) = self.agents.get(&agent_id) {
            let was_in_pool = agent.status.in_pool();
            self.rescind_agent_offers(now.instant, &agent_id);
            if was_in_pool {
                self.agent_leave_pool(&agent_id);
            }
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.status = AgentStatus::Recovering;
                agent.info = info.clone();
                agent.set_total(total);
            }
        } else {
            let agent = Agent::new(
                info.clone(),
                total,
                AgentStatus::Recovering,
                None,
                now.instant,
                now.unix_seconds,
            );
            self.agents.agents.insert(agent_id.clone(), agent);
        }
        if let Some(previous_conn) = self.agents.attach(&agent_id, conn) {
            self.commands.push(Command::CloseAgent {
                conn: previous_conn,
                reason: "superseded by a newer connection of the same agent".to_owned(),
            });
        }
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.last_seen = now.instant;
            agent.registered_at = now.unix_seconds;
        }
        self.persist(RegistryUpdate::UpsertAgent(info.clone()));
        self.send_registered(conn, &agent_id);

        let previously_tracked: BTreeSet<(FrameworkId, TaskId)> = self
            .agents
            .get(&agent_id)
            .map(|agent| agent.tasks.clone())
            .unwrap_or_default();
        let mut shutdown: BTreeSet<FrameworkId> = BTreeSet::new();
        let mut reported_keys: BTreeSet<(FrameworkId, TaskId)> = BTreeSet::new();
        for reported_task in reported {
            let framework_id = reported_task.framework_id.clone();
            if self.frameworks.removed.contains(&framework_id)
                || self.frameworks.get(&framework_id).is_none()
            {
                shutdown.insert(framework_id);
                continue;
            }
            let task_id = TaskId::new(reported_task.info.task_id.clone());
            reported_keys.insert((framework_id.clone(), task_id.clone()));
            self.adopt_reported_task(now, &agent_id, reported_task, &task_id);
        }

        for (framework_id, task_id) in previously_tracked {
            if reported_keys.contains(&(framework_id.clone(), task_id.clone())) {
                continue;
            }
            let Some(task) = self.tasks.get(&framework_id, &task_id) else {
                continue;
            };
            let _task = task_span(&framework_id, &task_id).entered();
            if !task.is_terminal() {
                info!(agent_id = %agent_id, state = TaskState::TaskLost.as_str_name(), "task lost: its agent re-registered without it");
                let status = Self::master_status(
                    now,
                    &framework_id,
                    &task_id,
                    Some(&agent_id),
                    TaskState::TaskLost,
                    TaskReason::ReasonAgentRestarted,
                    format!("agent {agent_id} re-registered without this task"),
                );
                let _ = self.apply_task_status(&framework_id, &task_id, status.clone());
                self.send_update(&framework_id, status);
            }
            self.retire_task(&framework_id, &task_id);
        }

        for framework_id in &reregister.framework_ids {
            let framework_id = FrameworkId::new(framework_id.clone());
            if self.frameworks.removed.contains(&framework_id)
                || self.frameworks.get(&framework_id).is_none()
            {
                shutdown.insert(framework_id);
            }
        }
        for framework_id in shutdown {
            info!(agent_id = %agent_id, framework_id = %framework_id, "shutting down framework unknown to the master");
            self.send_to_agent_conn(
                conn,
                v1::master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: framework_id.to_string(),
                }),
            );
        }

        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.status = final_status;
        }
        self.agent_join_pool(&agent_id);
        info!(agent_id = %agent_id, tasks = reregister.tasks.len(), "agent re-registered");
        self.settle_held(now, &agent_id);
        self.schedule_allocation(now.instant);
        Ok(agent_id)
    }

    /// Takes a task a re-registering agent reports as the truth, telling the framework when
    /// its state differs from what the master last reported (e.g. UNREACHABLE or LOST).
    fn adopt_reported_task(
        &mut self,
        now: Now,
        agent_id: &AgentId,
        reported: ReportedTask,
        task_id: &TaskId,
    ) {
        let framework_id = reported.framework_id;
        let _task = task_span(&framework_id, task_id).entered();
        let mut status = reported.status.unwrap_or_default();
        if matches!(
            status.state(),
            TaskState::Unspecified | TaskState::TaskUnknown
        ) {
            status.set_state(TaskState::TaskRunning);
        }
        status.task_id = task_id.to_string();
        status.agent_id = agent_id.to_string();
        status.framework_id = framework_id.to_string();
        if status.timestamp == 0.0 {
            status.timestamp = now.unix_seconds;
        }
        let previous_state = self
            .tasks
            .get(&framework_id, task_id)
            .map(Task::state)
            .or_else(|| {
                self.tasks
                    .find_completed(&framework_id, task_id)
                    .map(Task::state)
            });
        self.tasks.forget_completed(&framework_id, task_id);
        let mut info = reported.info;
        info.agent_id = agent_id.to_string();
        let task = Task {
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
            agent_id: agent_id.clone(),
            info,
            quantities: Quantities::of(&reported.resources),
            status: status.clone(),
        };
        self.track_task(task, &reported.resources);
        // The framework hears of every task the master did not know in this state: one it
        // was told was lost or unreachable, and one the master had never seen (after a master
        // restart). A framework that has no record of it (it was replaced, or killed while
        // the master could not reach it) kills it; without this it would run forever. No
        // uuid: the agent resends its own unacknowledged updates.
        let state = status.state().as_str_name();
        let previous = previous_state
            .as_ref()
            .map_or("none", TaskState::as_str_name);
        if previous_state != Some(status.state()) {
            info!(agent_id = %agent_id, state, previous, "task adopted from the re-registering agent");
            status.uuid.clear();
            self.send_update(&framework_id, status);
        } else {
            debug!(agent_id = %agent_id, state, "task confirmed by the re-registering agent");
        }
    }

    /// The agent on `conn` is alive.
    pub fn agent_heartbeat(&mut self, now: Now, conn: ConnId) {
        let Some(agent_id) = self.agents.id_of_conn(conn) else {
            debug!(conn = conn.0, "heartbeat on an unregistered connection");
            return;
        };
        let Some(agent) = self.agents.get_mut(&agent_id) else {
            return;
        };
        agent.last_seen = now.instant;
        if agent.status == AgentStatus::Unreachable {
            self.agents.detach(conn);
            self.commands.push(Command::CloseAgent {
                conn,
                reason: "agent was marked unreachable; reconnect and re-register".to_owned(),
            });
        }
    }

    fn agent_on_conn(&mut self, now: Now, conn: ConnId) -> Result<AgentId, MasterError> {
        let agent_id = self
            .agents
            .id_of_conn(conn)
            .ok_or_else(|| invalid("agent", "this connection has not registered"))?;
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.last_seen = now.instant;
        }
        Ok(agent_id)
    }

    /// The agent on `conn` reports a task status; forwarded to the framework.
    pub fn agent_status_update(
        &mut self,
        now: Now,
        conn: ConnId,
        update: v1::StatusUpdate,
    ) -> Result<(), MasterError> {
        let Some(mut status) = update.status else {
            return Err(invalid("status", "is required"));
        };
        validation::id("status.task_id", &status.task_id)?;
        validation::optional_id("status.agent_id", &status.agent_id)?;
        let framework_id = if update.framework_id.is_empty() {
            status.framework_id.clone()
        } else {
            update.framework_id.clone()
        };
        validation::id("framework_id", &framework_id)?;
        validation::text("status.uuid", &status.uuid, validation::MAX_UUID_LEN)?;
        if !status.timestamp.is_finite() || status.timestamp < 0.0 {
            return Err(invalid(
                "status.timestamp",
                format!(
                    "must be a finite, non-negative number of seconds since the epoch, got {}",
                    status.timestamp
                ),
            ));
        }
        let state_is_valid = TaskState::try_from(status.state)
            .is_ok_and(|state| !matches!(state, TaskState::Unspecified));
        if !state_is_valid {
            return Err(invalid(
                "status.state",
                format!("{} is not a task state", status.state),
            ));
        }
        let agent_id = self.agent_on_conn(now, conn)?;
        let framework_id = FrameworkId::new(framework_id);
        let task_id = TaskId::new(status.task_id.clone());
        let _task = task_span(&framework_id, &task_id).entered();
        if status.agent_id.is_empty() {
            status.agent_id = agent_id.to_string();
        }
        status.framework_id = framework_id.to_string();

        if self.frameworks.removed.contains(&framework_id) {
            self.send_to_agent_conn(
                conn,
                v1::master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: framework_id.to_string(),
                }),
            );
            return Ok(());
        }
        if self.frameworks.get(&framework_id).is_none() {
            debug!("status update for an unknown framework ignored");
            return Ok(());
        }

        let previous_state = self
            .tasks
            .get(&framework_id, &task_id)
            .or_else(|| self.tasks.find_completed(&framework_id, &task_id))
            .map(Task::state);
        if self.tasks.get(&framework_id, &task_id).is_some() {
            match self.apply_task_status(&framework_id, &task_id, status.clone()) {
                Ok(true) => self.schedule_allocation(now.instant),
                Ok(false) => {}
                Err(error) => {
                    warn!(%error, "status update ignored for the master's state");
                }
            }
        } else if self.tasks.find_completed(&framework_id, &task_id).is_none() {
            info!(agent_id = %agent_id, state = status.state().as_str_name(), "task unknown to the master adopted from its agent's update");
            let task = Task {
                framework_id: framework_id.clone(),
                task_id: task_id.clone(),
                agent_id: agent_id.clone(),
                info: v1::TaskInfo {
                    task_id: task_id.to_string(),
                    agent_id: agent_id.to_string(),
                    ..Default::default()
                },
                quantities: Quantities::default(),
                status: status.clone(),
            };
            self.track_task(task, &Resources::new());
        }
        let state = status.state().as_str_name();
        if previous_state == Some(status.state()) {
            debug!(agent_id = %agent_id, state, uuid = %status.uuid, "status update relayed");
        } else {
            let previous = previous_state
                .as_ref()
                .map_or("none", TaskState::as_str_name);
            info!(agent_id = %agent_id, state, previous, uuid = %status.uuid, "status update relayed");
        }
        self.send_update(&framework_id, status);
        Ok(())
    }

    /// The agent on `conn` reports a change of its total resources.
    pub fn agent_resource_update(
        &mut self,
        now: Now,
        conn: ConnId,
        update: v1::ResourceUpdate,
    ) -> Result<(), MasterError> {
        validation::resource_ranges("resources", &update.resources)?;
        let total = Resources::from_proto(&update.resources)
            .map_err(|error| invalid("resources", error.to_string()))?;
        let agent_id = self.agent_on_conn(now, conn)?;
        self.rescind_agent_offers(now.instant, &agent_id);
        let in_pool = self
            .agents
            .get(&agent_id)
            .is_some_and(|agent| agent.status.in_pool());
        if in_pool {
            self.agent_leave_pool(&agent_id);
        }
        let mut info = None;
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.set_total(total);
            agent.info.resources = update.resources;
            info = Some(agent.info.clone());
        }
        if in_pool {
            self.agent_join_pool(&agent_id);
        }
        if let Some(info) = info {
            self.persist(RegistryUpdate::UpsertAgent(info));
        }
        self.schedule_allocation(now.instant);
        Ok(())
    }

    /// The agent stream `conn` ended. The agent becomes unreachable only after the
    /// missed-heartbeat limit, so a quick reconnect changes nothing for its tasks.
    pub fn agent_disconnected(&mut self, now: Now, conn: ConnId) {
        let Some(agent_id) = self.agents.detach(conn) else {
            return;
        };
        info!(agent_id = %agent_id, "agent disconnected");
        self.rescind_agent_offers(now.instant, &agent_id);
    }

    /// Stops offering the agent's resources and kills its tasks so frameworks move them.
    pub fn drain_agent(&mut self, now: Now, agent_id: &AgentId) -> Result<(), MasterError> {
        validation::id("agent_id", agent_id.as_str())?;
        let Some(agent) = self.agents.get(agent_id) else {
            return Err(MasterError::UnknownAgent(agent_id.clone()));
        };
        let status = agent
            .status
            .transition(AgentStatus::Draining)
            .map_err(|error| invalid("agent_id", error.to_string()))?;
        let tasks: Vec<(FrameworkId, TaskId)> = agent.tasks.iter().cloned().collect();
        self.rescind_agent_offers(now.instant, agent_id);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.status = status;
        }
        info!(agent_id = %agent_id, tasks = tasks.len(), "draining agent");
        for (framework_id, task_id) in tasks {
            let Some(task) = self.tasks.get(&framework_id, &task_id) else {
                continue;
            };
            if task.is_terminal() {
                continue;
            }
            let _task = task_span(&framework_id, &task_id).entered();
            info!(agent_id = %agent_id, "kill sent to agent: the agent is draining");
            let grace = (task.info.kill_grace_period_seconds > 0.0)
                .then_some(task.info.kill_grace_period_seconds);
            self.send_to_agent(
                agent_id,
                v1::master_message::Message::KillTask(v1::KillTask {
                    framework_id: framework_id.to_string(),
                    task_id: task_id.to_string(),
                    grace_period_seconds: grace,
                }),
            );
        }
        Ok(())
    }

    /// The agent missed its heartbeats (or never came back): rescind its offers, take it out
    /// of the pool, report its tasks UNREACHABLE or LOST, and tell frameworks.
    pub(super) fn mark_unreachable(&mut self, now: Now, agent_id: &AgentId) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        let Ok(status) = agent.status.transition(AgentStatus::Unreachable) else {
            return;
        };
        let was_in_pool = agent.status.in_pool();
        let tasks: Vec<(FrameworkId, TaskId)> = agent.tasks.iter().cloned().collect();
        self.rescind_agent_offers(now.instant, agent_id);
        if was_in_pool {
            self.agent_leave_pool(agent_id);
        }
        let conn = self.agents.get(agent_id).and_then(|agent| agent.conn);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.status = status;
        }
        if let Some(conn) = conn {
            self.agents.detach(conn);
            self.commands.push(Command::CloseAgent {
                conn,
                reason: "agent missed too many heartbeats and is unreachable".to_owned(),
            });
        }
        warn!(agent_id = %agent_id, tasks = tasks.len(), "agent unreachable");

        for (framework_id, task_id) in tasks {
            let Some(task) = self.tasks.get(&framework_id, &task_id) else {
                continue;
            };
            if task.is_terminal() {
                continue;
            }
            let partition_aware = self
                .frameworks
                .get(&framework_id)
                .is_some_and(|framework| framework.partition_aware());
            let state = if partition_aware {
                TaskState::TaskUnreachable
            } else {
                TaskState::TaskLost
            };
            let status = Self::master_status(
                now,
                &framework_id,
                &task_id,
                Some(agent_id),
                state,
                TaskReason::ReasonAgentUnreachable,
                format!("agent {agent_id} is unreachable"),
            );
            let _task = task_span(&framework_id, &task_id).entered();
            info!(agent_id = %agent_id, state = state.as_str_name(), "task cut off with its unreachable agent");
            let _ = self.apply_task_status(&framework_id, &task_id, status.clone());
            self.send_update(&framework_id, status);
            if !partition_aware {
                self.retire_task(&framework_id, &task_id);
            }
        }

        self.broadcast_to_frameworks(v1::event::Event::Failure(v1::Failure {
            agent_id: agent_id.to_string(),
            message: "agent unreachable".to_owned(),
        }));
        self.settle_held(now, agent_id);
    }
}
