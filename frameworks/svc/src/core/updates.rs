//! Task status updates and lost agents: instance state, health, failures and backoff.

use std::collections::BTreeSet;

use agora_proto::v1::{self, TaskState};
use agora_proto::{AgentId, TaskId};
use serde_json::{Map, json};

use super::model::{AppId, InstanceState, InstanceTransition, KillReason};
use super::{Command, StoreWrite, SvcCore};

impl SvcCore {
    /// A status update for one of the framework's tasks.
    pub fn on_update(&mut self, status: &v1::TaskStatus, now: f64) {
        if let Some(app_id) = self.apply_update(status, now) {
            self.drive_app(&app_id, now);
        }
    }

    /// Status updates in order, as [`SvcCore::on_update`] one by one, except that each app
    /// they touch (and its running deployments) is planned again once, after all of them: a
    /// daemon draining a thousand ready updates re-plans an app of 1,000 instances once, not
    /// once per update.
    pub fn on_updates(&mut self, statuses: &[v1::TaskStatus], now: f64) {
        let mut touched = BTreeSet::new();
        for status in statuses {
            if let Some(app_id) = self.apply_update(status, now) {
                touched.insert(app_id);
            }
        }
        self.drive_apps(&touched, now);
    }

    /// Applies one update to its instance; returns the app to drive again, if any.
    fn apply_update(&mut self, status: &v1::TaskStatus, now: f64) -> Option<AppId> {
        let state = status.state();
        let Some(instance) = self.instances.get_mut(&status.task_id) else {
            // Not ours (any more): a task we never stored, or one we already forgot. If it
            // still runs, it is a duplicate nobody accounts for: stop it.
            if !agora_proto::is_terminal(state) && !status.agent_id.is_empty() {
                tracing::warn!(task_id = %status.task_id, agent_id = %status.agent_id, "killing unknown task");
                self.outbox.push(Command::Kill {
                    task_id: TaskId::new(status.task_id.clone()),
                    agent_id: AgentId::new(status.agent_id.clone()),
                });
            }
            return None;
        };
        let previous_state = instance.state();
        // Checked first: an update the instance's life does not allow is dropped whole (it
        // neither confirms the instance nor changes its health or message).
        let transition = match instance.observe(state) {
            Ok(transition) => transition,
            Err(error) => {
                tracing::warn!(
                    task_id = %status.task_id,
                    agent_id = %status.agent_id,
                    %error,
                    "ignoring status update"
                );
                return None;
            }
        };
        let app_id = instance.app_id.clone();
        let task_id = instance.task_id.as_str().to_owned();
        let was_unconfirmed = instance.unconfirmed_since.take().is_some();
        if !status.message.is_empty() {
            instance.message = status.message.clone();
        }
        let previous_health = instance.healthy;

        if let InstanceTransition::Ended { .. } = transition {
            let killed_by_us = instance.kill.is_some();
            tracing::debug!(
                task_id = %status.task_id,
                state = state.as_str_name(),
                reason = status.reason().as_str_name(),
                source = status.source().as_str_name(),
                previous = previous_state.as_str(),
                killed_by_us,
                "terminal update"
            );
            let ran_for = instance.started_at.map(|started| now - started);
            let exit = status
                .exit_code
                .map(|code| format!(" (exit code {code})"))
                .unwrap_or_default();
            let message = if status.message.is_empty() {
                String::new()
            } else {
                format!(": {}", status.message)
            };
            let description = format!(
                "{task_id} {}{exit}{message}",
                state
                    .as_str_name()
                    .trim_start_matches("TASK_")
                    .to_lowercase()
            );
            self.instances.remove(&task_id);
            self.writes.push(StoreWrite::DeleteInstance {
                task_id: TaskId::new(task_id.clone()),
            });
            let counts_as_failure = !killed_by_us
                && matches!(
                    state,
                    TaskState::TaskFailed
                        | TaskState::TaskError
                        | TaskState::TaskFinished
                        | TaskState::TaskKilled
                );
            if let Some(app) = self.apps.get_mut(app_id.as_str())
                && !killed_by_us
            {
                app.last_failure = Some(description.clone());
                if counts_as_failure {
                    let definition = &app.definition;
                    let max = definition.max_launch_delay_seconds as f64;
                    // An instance that ran well for longer than the largest delay was not
                    // crash-looping: start the backoff over.
                    if ran_for.is_some_and(|seconds| seconds >= max.max(60.0)) {
                        app.backoff.reset();
                    }
                    app.backoff.record_failure(
                        now,
                        definition.backoff_seconds as f64,
                        definition.backoff_factor,
                        max,
                    );
                    self.counters.failures += 1;
                }
                tracing::info!(
                    task_id,
                    app_id = app_id.as_str(),
                    state = state.as_str_name(),
                    "instance ended unexpectedly"
                );
                self.persist_app(&app_id);
            }
            self.emit_status(&app_id, &task_id, status, now);
            return Some(app_id);
        }

        let new_state = instance.state();
        // A reconciliation answer carries no health: keep what we knew.
        let healthy = status.healthy.or(previous_health);
        instance.healthy = healthy;
        if new_state == InstanceState::Running && instance.started_at.is_none() {
            instance.started_at = Some(status.timestamp.max(instance.staged_at).min(now));
        }
        let came_back =
            previous_state == InstanceState::Unreachable && new_state != InstanceState::Unreachable;
        let changed = new_state != previous_state || healthy != previous_health || was_unconfirmed;
        let has_checks = self
            .apps
            .get(app_id.as_str())
            .is_some_and(|app| !app.definition.health_checks.is_empty());
        if changed {
            self.persist_instance(&task_id);
            self.emit_status(&app_id, &task_id, status, now);
        }
        if healthy != previous_health && healthy.is_some() {
            let mut payload = Map::new();
            payload.insert("appId".into(), json!(app_id));
            payload.insert("instanceId".into(), json!(task_id));
            payload.insert("healthy".into(), json!(healthy));
            self.emit("instance_health_changed_event", now, payload);
        }
        if has_checks && healthy == Some(false) {
            // The agent reports unhealthy only after maxConsecutiveFailures: replace it.
            if let Some(app) = self.apps.get_mut(app_id.as_str()) {
                app.last_failure = Some(format!("{task_id} failed its health check"));
            }
            self.kill_instance(&task_id, KillReason::Unhealthy, now);
        }
        if came_back {
            self.kill_surplus_returned(&app_id, &task_id, now);
        }
        Some(app_id)
    }

    /// An instance we had given up on is back: keep it only if the app is still short.
    fn kill_surplus_returned(&mut self, app_id: &str, task_id: &str, now: f64) {
        let Some(app) = self.apps.get(app_id) else {
            self.kill_instance(task_id, KillReason::Superfluous, now);
            return;
        };
        let target = app.definition.instances as usize;
        let live = self
            .instances
            .of_app(app_id)
            .iter()
            .filter(|instance| instance.is_live())
            .count();
        if live > target {
            self.kill_instance(task_id, KillReason::Superfluous, now);
        }
    }

    /// The master says an agent is gone: its instances are lost and get replaced.
    pub fn on_agent_lost(&mut self, agent_id: &str, now: f64) {
        let lost: Vec<TaskId> = self
            .instances
            .on_agent(agent_id)
            .iter()
            .map(|instance| instance.task_id.clone())
            .collect();
        let statuses: Vec<v1::TaskStatus> = lost
            .into_iter()
            .map(|task_id| v1::TaskStatus {
                task_id: task_id.into_string(),
                agent_id: agent_id.to_owned(),
                state: TaskState::TaskLost as i32,
                message: format!("agent {agent_id} was lost"),
                timestamp: now,
                ..Default::default()
            })
            .collect();
        self.on_updates(&statuses, now);
        self.agents.remove(agent_id);
    }

    /// Launching these tasks failed. `refused`: the master answered and did not launch them,
    /// so they are dropped and replaced now; otherwise whether they run is unknown and the
    /// master is asked (a launch timeout would replace them only much later).
    pub fn on_launch_failed(&mut self, task_ids: &[TaskId], refused: bool, now: f64) {
        let known: Vec<(TaskId, AgentId)> = task_ids
            .iter()
            .filter_map(|task_id| self.instances.get(task_id.as_str()))
            .map(|instance| (instance.task_id.clone(), instance.agent_id.clone()))
            .collect();
        if known.is_empty() {
            return;
        }
        if !refused {
            self.outbox.push(Command::Reconcile(known));
            return;
        }
        let statuses: Vec<v1::TaskStatus> = known
            .into_iter()
            .map(|(task_id, agent_id)| v1::TaskStatus {
                task_id: task_id.into_string(),
                agent_id: agent_id.into_string(),
                state: TaskState::TaskDropped as i32,
                message: "the master refused the launch".to_owned(),
                timestamp: now,
                ..Default::default()
            })
            .collect();
        self.on_updates(&statuses, now);
    }

    fn emit_status(&mut self, app_id: &str, task_id: &str, status: &v1::TaskStatus, now: f64) {
        let instance = self.instances.get(task_id);
        let mut payload = Map::new();
        payload.insert("appId".into(), json!(app_id));
        payload.insert("taskId".into(), json!(task_id));
        payload.insert("agentId".into(), json!(status.agent_id));
        payload.insert("taskStatus".into(), json!(status.state().as_str_name()));
        payload.insert("message".into(), json!(status.message));
        payload.insert("host".into(), json!(instance.map(|i| i.host.clone())));
        payload.insert("ports".into(), json!(instance.map(|i| i.ports.clone())));
        payload.insert(
            "version".into(),
            json!(instance.map(|i| i.config_version.clone())),
        );
        self.emit("status_update_event", now, payload);
    }
}
