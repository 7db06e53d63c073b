//! What frameworks ask of the master: subscribe, accept, decline, revive, suppress, kill,
//! acknowledge, reconcile, teardown.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use agora_proto::v1::{TaskReason, TaskState};
use agora_proto::{AgentId, FrameworkId, OfferId, Resources, StreamId, TaskId, v1};
use tracing::{debug, info};

use super::agents::AgentStatus;
use super::allocator::Quantities;
use super::frameworks::{Framework, FrameworkConnection};
use super::tasks::Task;
use super::{
    Command, ConnId, Master, MasterError, Now, RegistryUpdate, subscribe_span, task_span,
    validation,
};

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MasterError {
    MasterError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A task of an accept call that passed validation.
struct ValidTask {
    info: v1::TaskInfo,
    task_id: TaskId,
    resources: Resources,
}

impl Master {
    /// A framework subscribes on stream `conn` (first time, or failing over with its id).
    /// Emits `Subscribed` on `conn` first, and closes any older stream of the same framework.
    /// With `suppressed` (the request's flag) the framework starts, or failing over stays,
    /// suppressed and gets no offers until it revives.
    pub fn subscribe(
        &mut self,
        now: Now,
        conn: ConnId,
        mut info: v1::FrameworkInfo,
        suppressed: bool,
    ) -> Result<v1::Subscribed, MasterError> {
        let _framework = subscribe_span(&info).entered();
        validation::framework_info(&info)?;
        if !info.id.is_empty() {
            let requested = FrameworkId::new(info.id.clone());
            if self.frameworks.removed.contains(&requested) {
                return Err(MasterError::FrameworkRemoved(requested));
            }
        }
        if let Some(existing) = self.frameworks.by_conn.get(&conn) {
            return Err(invalid(
                "subscribe",
                format!("this stream is already subscribed as framework {existing}"),
            ));
        }

        let framework_id = if info.id.is_empty() {
            let assigned = FrameworkId::generate();
            // The subscription's span (`subscribe_span`) names the framework from now on.
            tracing::Span::current().record("framework_id", tracing::field::display(&assigned));
            assigned
        } else {
            FrameworkId::new(info.id.clone())
        };
        info.id = framework_id.to_string();
        if info.role.is_empty() {
            info.role = "*".to_owned();
        }
        let stream_id = StreamId::generate();
        let connection = FrameworkConnection::Connected {
            conn,
            stream_id: stream_id.clone(),
        };

        let failover = self.frameworks.get(&framework_id).is_some();
        let mut superseded = None;
        if failover {
            let old_conn = self.frameworks.conn_of(&framework_id);
            self.drop_framework_offers(now.instant, &framework_id);
            if let Some(old_conn) = old_conn {
                self.frameworks.by_conn.remove(&old_conn);
                superseded = Some(old_conn);
            }
            if let Some(framework) = self.frameworks.get_mut(&framework_id) {
                framework.info = info.clone();
                framework.connection = connection;
                // What the subscription asks for, as Mesos's `suppressed_roles`: a framework
                // restarting does not inherit a suppression it may not remember.
                framework.suppressed = suppressed;
            }
        } else {
            self.frameworks.frameworks.insert(
                framework_id.clone(),
                Framework {
                    id: framework_id.clone(),
                    info: info.clone(),
                    connection,
                    suppressed,
                    allocated: Quantities::default(),
                    unannounced: BTreeMap::new(),
                },
            );
        }
        self.frameworks.by_conn.insert(conn, framework_id.clone());
        info!(framework_id = %framework_id, name = %info.name, role = %info.role, failover, "framework subscribed");

        self.persist(RegistryUpdate::UpsertFramework(info));
        if let Some(old_conn) = superseded {
            self.commands.push(Command::CloseFramework {
                conn: old_conn,
                reason: "superseded by a newer subscription of the same framework".to_owned(),
            });
        }
        let subscribed = v1::Subscribed {
            framework_id: framework_id.to_string(),
            stream_id: stream_id.to_string(),
            heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
            master_version: agora_proto::VERSION.to_owned(),
        };
        self.commands.push(Command::SendToFramework {
            conn,
            event: v1::event::Event::Subscribed(subscribed.clone()),
        });
        self.announce_missed_updates(now, &framework_id);
        self.schedule_allocation(now.instant);
        Ok(subscribed)
    }

    /// Delivers what the master told nobody while the framework was away, as it stands now.
    fn announce_missed_updates(&mut self, now: Now, framework_id: &FrameworkId) {
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let missed = std::mem::take(&mut framework.unannounced);
        if !missed.is_empty() {
            debug!(framework_id = %framework_id, updates = missed.len(), "delivering updates made while disconnected");
        }
        for (task_id, status) in missed {
            let current = self
                .tasks
                .get(framework_id, &task_id)
                .map(|task| Self::reconciliation_status(now, task));
            self.send_update(framework_id, current.unwrap_or(status));
        }
    }

    /// The subscription stream `conn` ended; the framework's failover timer starts if it was
    /// the current one.
    pub fn framework_disconnected(&mut self, now: Now, conn: ConnId) {
        let span = match self.frameworks.by_conn.get(&conn) {
            Some(framework_id) => self.framework_span(framework_id.as_str()),
            None => tracing::Span::none(),
        };
        let _framework = span.entered();
        let Some(framework_id) = self.frameworks.by_conn.remove(&conn) else {
            return;
        };
        let max = self.config.max_failover_timeout;
        let Some(framework) = self.frameworks.get_mut(&framework_id) else {
            return;
        };
        if framework.conn() != Some(conn) {
            return;
        }
        let timeout = framework.failover_timeout(max);
        framework.connection = FrameworkConnection::Disconnected {
            failover_deadline: now.instant + timeout,
        };
        info!(framework_id = %framework_id, failover_timeout_seconds = timeout.as_secs_f64(), "framework disconnected");
        self.drop_framework_offers(now.instant, &framework_id);
    }

    /// Removes a framework for good: its offers and filters vanish, its tasks are killed on
    /// their agents and retired, and it may never subscribe again. Returns its stream.
    pub(super) fn remove_framework(
        &mut self,
        now: Now,
        framework_id: &FrameworkId,
        why: &str,
    ) -> Option<ConnId> {
        self.frameworks.get(framework_id)?;
        self.drop_framework_offers(now.instant, framework_id);
        self.filters.clear_framework(framework_id);

        let mut agents_to_shut_down: BTreeSet<AgentId> = BTreeSet::new();
        for task_id in self.tasks.of_framework(framework_id) {
            let Some(task) = self.tasks.get(framework_id, &task_id) else {
                continue;
            };
            let agent_id = task.agent_id.clone();
            let _task = task_span(framework_id, &task_id).entered();
            if !task.is_terminal() {
                agents_to_shut_down.insert(agent_id.clone());
                info!(agent_id = %agent_id, state = TaskState::TaskKilled.as_str_name(), reason = why, "task killed: framework removed");
                let status = Self::master_status(
                    now,
                    framework_id,
                    &task_id,
                    Some(&agent_id),
                    TaskState::TaskKilled,
                    TaskReason::ReasonFrameworkRemoved,
                    format!("framework removed: {why}"),
                );
                let _ = self.apply_task_status(framework_id, &task_id, status);
            }
            self.retire_task(framework_id, &task_id);
        }
        for agent_id in agents_to_shut_down {
            self.send_to_agent(
                &agent_id,
                v1::master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: framework_id.to_string(),
                }),
            );
        }

        let conn = self.frameworks.conn_of(framework_id);
        if let Some(conn) = conn {
            self.frameworks.by_conn.remove(&conn);
        }
        self.frameworks.frameworks.remove(framework_id);
        self.frameworks.removed.insert(framework_id.clone());
        self.awaiting.forget_framework(framework_id);
        self.persist(RegistryUpdate::RemoveFramework(framework_id.clone()));
        self.schedule_allocation(now.instant);
        info!(framework_id = %framework_id, reason = why, "framework removed");
        conn
    }

    /// Removes the framework: kills its tasks, rescinds its offers, closes its stream.
    pub fn teardown(&mut self, now: Now, request: v1::TeardownRequest) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        if let Some(conn) = self.remove_framework(now, &framework_id, "torn down") {
            self.commands.push(Command::CloseFramework {
                conn,
                reason: "framework torn down".to_owned(),
            });
        }
        Ok(())
    }

    /// How long to filter declined or unused resources; `None` installs no filter.
    fn refuse_duration(
        &self,
        filters: Option<&v1::Filters>,
    ) -> Result<Option<Duration>, MasterError> {
        let Some(seconds) = filters.and_then(|filters| filters.refuse_seconds) else {
            return Ok(Some(self.config.default_refuse).filter(|d| !d.is_zero()));
        };
        // Negative and zero both mean "no filter" (Mesos treats them alike); anything above
        // a year or not finite is refused rather than silently clamped.
        if seconds.is_finite() && seconds <= 0.0 {
            return Ok(None);
        }
        validation::duration("filters.refuse_seconds", seconds)?;
        Ok(Duration::try_from_secs_f64(seconds).ok())
    }

    /// Validates that every id names an offer outstanding for `framework_id`.
    fn outstanding_offers(
        &self,
        framework_id: &FrameworkId,
        offer_ids: &[String],
    ) -> Result<Vec<OfferId>, MasterError> {
        let mut seen = HashSet::new();
        let mut valid = Vec::with_capacity(offer_ids.len());
        for (index, raw) in offer_ids.iter().enumerate() {
            validation::id(&format!("offer_ids[{index}]"), raw)?;
            let offer_id = OfferId::new(raw.clone());
            let outstanding = self
                .offers
                .get(&offer_id)
                .is_some_and(|offer| &offer.framework_id == framework_id);
            if !outstanding {
                return Err(MasterError::UnknownOffer(offer_id));
            }
            if !seen.insert(offer_id.clone()) {
                return Err(invalid(
                    format!("offer_ids[{index}]"),
                    format!("offer {offer_id} is listed twice"),
                ));
            }
            valid.push(offer_id);
        }
        Ok(valid)
    }

    /// Sends `state` updates for every task of an accept call that launched nothing.
    fn reject_accept_tasks(
        &mut self,
        now: Now,
        framework_id: &FrameworkId,
        request: &v1::AcceptRequest,
        state: TaskState,
        reason: TaskReason,
        error: &MasterError,
    ) {
        let statuses: Vec<v1::TaskStatus> = request
            .operations
            .iter()
            .filter_map(|operation| {
                operation
                    .operation
                    .as_ref()
                    .map(|v1::operation::Operation::Launch(launch)| launch.tasks.iter())
            })
            .flatten()
            .map(|task| {
                let agent_id =
                    (!task.agent_id.is_empty()).then(|| AgentId::new(task.agent_id.clone()));
                Self::master_status(
                    now,
                    framework_id,
                    &TaskId::new(task.task_id.clone()),
                    agent_id.as_ref(),
                    state,
                    reason,
                    error.to_string(),
                )
            })
            .collect();
        for status in statuses {
            let _task = task_span(framework_id, &TaskId::new(status.task_id.clone())).entered();
            info!(
                state = status.state().as_str_name(),
                reason = status.reason().as_str_name(),
                "launch refused"
            );
            self.send_update(framework_id, status);
        }
    }

    /// Launches tasks on offered resources. Validates everything before changing anything.
    pub fn accept(
        &mut self,
        now: Now,
        request: v1::AcceptRequest,
    ) -> Result<v1::AcceptResponse, MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;

        let offers_checked = if request.offer_ids.is_empty() {
            Err(invalid("offer_ids", "at least one offer id is required"))
        } else {
            self.outstanding_offers(&framework_id, &request.offer_ids)
        }
        .and_then(|offer_ids| {
            let agents: BTreeSet<AgentId> = offer_ids
                .iter()
                .filter_map(|offer_id| self.offers.get(offer_id))
                .map(|offer| offer.agent_id.clone())
                .collect();
            match agents.len() {
                1 => Ok((offer_ids, agents.into_iter().next().unwrap_or_default())),
                _ => Err(invalid(
                    "offer_ids",
                    format!(
                        "offers of one accept must be on one agent, these are on {}",
                        agents
                            .iter()
                            .map(AgentId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        });
        let (offer_ids, agent_id) = match offers_checked {
            Ok(checked) => checked,
            Err(error) => {
                info!(framework_id = %framework_id, %error, "accept with invalid offers");
                self.reject_accept_tasks(
                    now,
                    &framework_id,
                    &request,
                    TaskState::TaskDropped,
                    TaskReason::ReasonInvalidOffers,
                    &error,
                );
                return Err(error);
            }
        };

        if request.operations.is_empty() {
            let refuse = self.refuse_duration(request.filters.as_ref())?;
            self.return_offers_with_filter(now, &framework_id, &offer_ids, refuse);
            return Ok(v1::AcceptResponse::default());
        }

        let mut offered = Resources::new();
        for offer_id in &offer_ids {
            if let Some(offer) = self.offers.get(offer_id) {
                offered.add(&offer.resources);
            }
        }
        let validated = self
            .refuse_duration(request.filters.as_ref())
            .and_then(|refuse| {
                self.validate_launches(&framework_id, &agent_id, &offered, &request)
                    .map(|tasks| (refuse, tasks))
            });
        let (refuse, tasks) = match validated {
            Ok(validated) => validated,
            Err(error) => {
                info!(framework_id = %framework_id, %error, "accept refused");
                self.reject_accept_tasks(
                    now,
                    &framework_id,
                    &request,
                    TaskState::TaskError,
                    TaskReason::ReasonTaskInvalid,
                    &error,
                );
                return Err(error);
            }
        };

        // Everything is valid: from here on, mutate.
        for offer_id in &offer_ids {
            self.take_offer(offer_id);
        }
        let mut needed = Resources::new();
        let mut launched = Vec::with_capacity(tasks.len());
        let mut launched_ids = Vec::with_capacity(tasks.len());
        let mut launched_infos = Vec::with_capacity(tasks.len());
        for valid in tasks {
            needed.add(&valid.resources);
            let mut info = valid.info;
            info.agent_id = agent_id.to_string();
            let status = Self::master_status(
                now,
                &framework_id,
                &valid.task_id,
                Some(&agent_id),
                TaskState::TaskStaging,
                TaskReason::ReasonUnspecified,
                "",
            );
            self.tasks.forget_completed(&framework_id, &valid.task_id);
            self.track_task(
                Task {
                    framework_id: framework_id.clone(),
                    task_id: valid.task_id.clone(),
                    agent_id: agent_id.clone(),
                    info: info.clone(),
                    quantities: Quantities::of(&valid.resources),
                    status,
                },
                &valid.resources,
            );
            launched.push(valid.task_id.to_string());
            launched_ids.push(valid.task_id);
            launched_infos.push(info);
        }
        let mut unused = offered;
        unused.subtract_saturating(&needed);
        if let Some(refuse) = refuse
            && !unused.is_empty()
        {
            self.filters
                .install(&framework_id, &agent_id, unused, now.instant + refuse);
        }
        if !launched_infos.is_empty() {
            debug!(framework_id = %framework_id, agent_id = %agent_id, tasks = launched_infos.len(), "launching tasks");
            self.send_to_agent(
                &agent_id,
                v1::master_message::Message::LaunchTasks(v1::LaunchTasks {
                    framework_id: framework_id.to_string(),
                    tasks: launched_infos,
                }),
            );
            for task_id in &launched_ids {
                let _task = task_span(&framework_id, task_id).entered();
                info!(agent_id = %agent_id, "launch sent to agent");
            }
        }
        self.schedule_allocation(now.instant);
        Ok(v1::AcceptResponse {
            launched_task_ids: launched,
        })
    }

    /// Checks every launch of an accept against the framework's tasks and the offered
    /// resources, without changing anything.
    fn validate_launches(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        offered: &Resources,
        request: &v1::AcceptRequest,
    ) -> Result<Vec<ValidTask>, MasterError> {
        let mut valid = Vec::new();
        let mut needed = Resources::new();
        let mut ids_in_call: HashSet<TaskId> = HashSet::new();
        for (op_index, operation) in request.operations.iter().enumerate() {
            let Some(v1::operation::Operation::Launch(launch)) = &operation.operation else {
                return Err(invalid(
                    format!("operations[{op_index}]"),
                    "no operation set (expected launch)",
                ));
            };
            for (task_index, info) in launch.tasks.iter().enumerate() {
                let prefix = format!("operations[{op_index}].launch.tasks[{task_index}]");
                validation::task_info(&prefix, info)?;
                let task_id = TaskId::new(info.task_id.clone());
                if self
                    .tasks
                    .get(framework_id, &task_id)
                    .is_some_and(|task| !task.is_terminal())
                {
                    return Err(invalid(
                        format!("{prefix}.task_id"),
                        format!("task {task_id} is already live in this framework"),
                    ));
                }
                if !ids_in_call.insert(task_id.clone()) {
                    return Err(invalid(
                        format!("{prefix}.task_id"),
                        format!("task {task_id} appears twice in this call"),
                    ));
                }
                if !info.agent_id.is_empty() && info.agent_id != agent_id.as_str() {
                    return Err(invalid(
                        format!("{prefix}.agent_id"),
                        format!(
                            "is {} but the offers are on agent {agent_id}",
                            info.agent_id
                        ),
                    ));
                }
                let resources = Resources::from_proto(&info.resources)
                    .map_err(|error| invalid(format!("{prefix}.resources"), error.to_string()))?;
                if resources.is_empty() {
                    return Err(invalid(format!("{prefix}.resources"), "must not be empty"));
                }
                validation::task_minimums(&prefix, &resources)?;
                for resource in &info.resources {
                    if !matches!(resource.value, Some(v1::resource::Value::Ranges(_))) {
                        continue;
                    }
                    let asked = resources.ranges(&resource.name);
                    let earlier = needed.ranges(&resource.name);
                    let mut union = earlier.clone();
                    union.add(&asked);
                    if union.count() < earlier.count() + asked.count() {
                        return Err(invalid(
                            format!("{prefix}.resources"),
                            format!(
                                "{} {asked} overlap those of another task of this call",
                                resource.name
                            ),
                        ));
                    }
                }
                needed.checked_add(&resources).map_err(|error| {
                    invalid(
                        "operations",
                        format!("the tasks of this call together: {error}"),
                    )
                })?;
                valid.push(ValidTask {
                    info: info.clone(),
                    task_id,
                    resources,
                });
            }
        }
        if !offered.contains(&needed) {
            return Err(MasterError::InsufficientResources {
                needed: needed.to_string(),
                offered: offered.to_string(),
            });
        }
        Ok(valid)
    }

    /// Returns offers and filters their resources for `refuse_seconds`.
    pub fn decline(&mut self, now: Now, request: v1::DeclineRequest) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        let refuse = self.refuse_duration(request.filters.as_ref())?;
        let offer_ids = self.outstanding_offers(&framework_id, &request.offer_ids)?;
        self.return_offers_with_filter(now, &framework_id, &offer_ids, refuse);
        Ok(())
    }

    /// Gives offers back to the pool and filters their resources per agent.
    fn return_offers_with_filter(
        &mut self,
        now: Now,
        framework_id: &FrameworkId,
        offer_ids: &[OfferId],
        refuse: Option<Duration>,
    ) {
        let mut refused: BTreeMap<AgentId, Resources> = BTreeMap::new();
        for offer_id in offer_ids {
            if let Some(offer) = self.take_offer(offer_id) {
                refused
                    .entry(offer.agent_id.clone())
                    .or_default()
                    .add(&offer.resources);
            }
        }
        if let Some(refuse) = refuse {
            for (agent_id, resources) in refused {
                self.filters
                    .install(framework_id, &agent_id, resources, now.instant + refuse);
            }
        }
        debug!(framework_id = %framework_id, offers = offer_ids.len(), "offers declined");
        self.schedule_allocation(now.instant);
    }

    /// Clears the framework's filters and resumes offers.
    pub fn revive(&mut self, now: Now, request: v1::ReviveRequest) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        let cleared = self.filters.clear_framework(&framework_id);
        if let Some(framework) = self.frameworks.get_mut(&framework_id) {
            framework.suppressed = false;
        }
        debug!(framework_id = %framework_id, filters_cleared = cleared, "framework revived");
        self.schedule_allocation(now.instant);
        Ok(())
    }

    /// Stops offers to the framework until it revives.
    pub fn suppress(&mut self, _now: Now, request: v1::SuppressRequest) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        if let Some(framework) = self.frameworks.get_mut(&framework_id) {
            framework.suppressed = true;
        }
        debug!(framework_id = %framework_id, "framework suppressed");
        Ok(())
    }

    /// The status to answer for a task the master does not know.
    pub(super) fn unknown_task_status(
        &self,
        now: Now,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        agent_id: Option<&AgentId>,
        reason: TaskReason,
    ) -> v1::TaskStatus {
        let partition_aware = self
            .frameworks
            .get(framework_id)
            .is_some_and(Framework::partition_aware);
        let agent_unreachable = agent_id
            .and_then(|agent_id| self.agents.get(agent_id))
            .is_some_and(|agent| agent.status == AgentStatus::Unreachable);
        let state = match (partition_aware, agent_unreachable) {
            (false, _) => TaskState::TaskLost,
            (true, true) => TaskState::TaskUnreachable,
            (true, false) => TaskState::TaskUnknown,
        };
        Self::master_status(
            now,
            framework_id,
            task_id,
            agent_id,
            state,
            reason,
            format!("task {task_id} is unknown to the master"),
        )
    }

    /// Kills a task.
    pub fn kill(&mut self, now: Now, request: v1::KillRequest) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        validation::id("task_id", &request.task_id)?;
        validation::optional_id("agent_id", &request.agent_id)?;
        if let Some(grace) = request.grace_period_seconds {
            validation::duration("grace_period_seconds", grace)?;
        }
        let task_id = TaskId::new(request.task_id.clone());
        let _task = task_span(&framework_id, &task_id).entered();
        info!(grace_period_seconds = ?request.grace_period_seconds, "kill asked");
        if let Some(task) = self.tasks.get(&framework_id, &task_id) {
            if task.is_terminal() {
                let status = task.status.clone();
                debug!(
                    state = status.state().as_str_name(),
                    "kill of an ended task: its last status answered"
                );
                self.send_update(&framework_id, status);
                return Ok(());
            }
            let grace = request.grace_period_seconds.or_else(|| {
                (task.info.kill_grace_period_seconds > 0.0)
                    .then_some(task.info.kill_grace_period_seconds)
            });
            let agent_id = task.agent_id.clone();
            if self.agents.conn_of(&agent_id).is_none() {
                // Sent now, the kill would be dropped with nobody to receive it.
                self.hold_kill_for_agent(&agent_id, &framework_id, &task_id, grace);
                return Ok(());
            }
            info!(agent_id = %agent_id, "kill sent to agent");
            self.send_to_agent(
                &agent_id,
                v1::master_message::Message::KillTask(v1::KillTask {
                    framework_id: framework_id.to_string(),
                    task_id: task_id.to_string(),
                    grace_period_seconds: grace,
                }),
            );
            return Ok(());
        }
        if let Some(task) = self.tasks.find_completed(&framework_id, &task_id) {
            let status = task.status.clone();
            debug!(
                state = status.state().as_str_name(),
                "kill of an ended task: its last status answered"
            );
            self.send_update(&framework_id, status);
            return Ok(());
        }
        let agent_id =
            (!request.agent_id.is_empty()).then(|| AgentId::new(request.agent_id.clone()));
        if let Some(held_for) = self.held_for_unknown(agent_id.as_ref()) {
            // Its agent may still re-register with it: kill it then, or answer once that
            // agent is declared unreachable. Answering TASK_LOST now would make the
            // framework forget a task that is still running.
            info!(?held_for, "kill of a task on a recovering agent held");
            self.awaiting.hold_kill(
                held_for,
                framework_id,
                task_id,
                super::awaiting::KillAsked {
                    grace_period_seconds: request.grace_period_seconds,
                },
            );
            return Ok(());
        }
        let status = self.unknown_task_status(
            now,
            &framework_id,
            &task_id,
            agent_id.as_ref(),
            TaskReason::ReasonTaskUnknown,
        );
        info!(
            state = status.state().as_str_name(),
            "kill of a task unknown to the master answered"
        );
        self.send_update(&framework_id, status);
        Ok(())
    }

    /// Acknowledges a status update; forwarded to the agent.
    pub fn acknowledge(
        &mut self,
        _now: Now,
        request: v1::AcknowledgeRequest,
    ) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        validation::id("task_id", &request.task_id)?;
        validation::optional_id("agent_id", &request.agent_id)?;
        validation::text("uuid", &request.uuid, validation::MAX_UUID_LEN)?;
        if request.uuid.is_empty() {
            return Err(invalid(
                "uuid",
                "must not be empty (updates without a uuid need no acknowledgement)",
            ));
        }
        let task_id = TaskId::new(request.task_id.clone());
        let _task = task_span(&framework_id, &task_id).entered();
        let live = self.tasks.get(&framework_id, &task_id);
        let known = live.or_else(|| self.tasks.find_completed(&framework_id, &task_id));
        // An agent sends a task's updates one at a time and moves on only once the oldest is
        // acknowledged, so the update awaiting acknowledgement is the latest agent update the
        // master holds. Another uuid is a mistake (or a late duplicate of an update already
        // acknowledged): refused, so that a framework acknowledging garbage learns of it.
        // When the master's latest status is its own (no uuid, e.g. TASK_LOST after the agent
        // went unreachable) it cannot judge, and forwards the acknowledgement to the agent,
        // which ignores uuids it does not wait for.
        if let Some(task) = known
            && !task.status.uuid.is_empty()
            && task.status.uuid != request.uuid
        {
            return Err(MasterError::UnknownUpdate {
                task_id,
                uuid: request.uuid.clone(),
                latest: task.status.uuid.clone(),
            });
        }
        let known_agent = known.map(|task| task.agent_id.clone());
        let agent_id = match known_agent {
            Some(agent_id) => agent_id,
            None => {
                let named = AgentId::new(request.agent_id.clone());
                if request.agent_id.is_empty() || self.agents.get(&named).is_none() {
                    return Err(MasterError::UnknownTask(task_id));
                }
                named
            }
        };
        let retire =
            live.is_some_and(|task| task.is_terminal() && task.status.uuid == request.uuid);
        debug!(agent_id = %agent_id, uuid = %request.uuid, "acknowledgement forwarded to agent");
        self.send_to_agent(
            &agent_id,
            v1::master_message::Message::AckStatus(v1::AckStatus {
                framework_id: framework_id.to_string(),
                task_id: task_id.to_string(),
                uuid: request.uuid.clone(),
            }),
        );
        if retire {
            self.retire_task(&framework_id, &task_id);
        }
        Ok(())
    }

    /// The latest status of a task, as a reconciliation answer.
    pub(super) fn reconciliation_status(now: Now, task: &Task) -> v1::TaskStatus {
        let mut status = task.status.clone();
        status.uuid.clear();
        status.reason = TaskReason::ReasonReconciliation as i32;
        status.source = v1::StatusSource::SourceMaster as i32;
        status.timestamp = now.unix_seconds;
        status.framework_id = task.framework_id.to_string();
        status
    }

    /// Answers with the latest known state of the listed tasks, or of all of the framework's
    /// tasks when none are listed, as `Update` events.
    pub fn reconcile(
        &mut self,
        now: Now,
        request: v1::ReconcileRequest,
    ) -> Result<(), MasterError> {
        let _framework = self.call_span(request.header.as_ref()).entered();
        let framework_id = self.check_caller(request.header.as_ref())?;
        for (index, listed) in request.tasks.iter().enumerate() {
            validation::id(&format!("tasks[{index}].task_id"), &listed.task_id)?;
            validation::optional_id(&format!("tasks[{index}].agent_id"), &listed.agent_id)?;
        }
        let mut answers = Vec::new();
        if request.tasks.is_empty() {
            for task_id in self.tasks.of_framework(&framework_id) {
                if let Some(task) = self.tasks.get(&framework_id, &task_id)
                    && !task.is_terminal()
                {
                    answers.push(Self::reconciliation_status(now, task));
                }
            }
        } else {
            for listed in &request.tasks {
                let task_id = TaskId::new(listed.task_id.clone());
                let known = self
                    .tasks
                    .get(&framework_id, &task_id)
                    .or_else(|| self.tasks.find_completed(&framework_id, &task_id));
                if let Some(task) = known {
                    answers.push(Self::reconciliation_status(now, task));
                    continue;
                }
                let agent_id =
                    (!listed.agent_id.is_empty()).then(|| AgentId::new(listed.agent_id.clone()));
                if let Some(held_for) = self.held_for_unknown(agent_id.as_ref()) {
                    // Its agent may still re-register with it: answer once it has, or once
                    // it is declared unreachable.
                    self.awaiting
                        .hold_question(held_for, framework_id.clone(), task_id);
                    continue;
                }
                answers.push(self.unknown_task_status(
                    now,
                    &framework_id,
                    &task_id,
                    agent_id.as_ref(),
                    TaskReason::ReasonReconciliation,
                ));
            }
        }
        debug!(framework_id = %framework_id, answers = answers.len(), explicit = !request.tasks.is_empty(), "reconciliation");
        for status in answers {
            self.send_update(&framework_id, status);
        }
        Ok(())
    }
}
