//! Driving apps towards their targets: what to launch and kill now (a pure plan per app),
//! and the periodic work around it (timeouts, deployment progress, offer interest).

use std::collections::{BTreeMap, BTreeSet};

use agora_proto::{AgentId, TaskId};
use serde_json::{Map, Value, json};

use super::model::{
    ActionKind, AppState, DeploymentState, Instance, InstanceState, KillReason, KillRequest,
};
use super::{Command, StoreWrite, SvcCore};
use crate::app::KillSelection;

/// What one app needs right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppPlan {
    /// New instances of the current version to launch.
    pub wanted: usize,
    /// Instances to kill now, and why.
    pub kills: Vec<(String, KillReason)>,
    /// True when the app is exactly at its target: the right number of ready instances of
    /// the current version and nothing else left.
    pub converged: bool,
    /// What the app is waiting for, when it is not converged.
    pub waiting_for: Option<String>,
}

/// Plans one app from its instances (all of them, in any state).
///
/// Scaling launches or kills the difference (kill order: instances not running yet, then
/// unhealthy ones, then per `killSelection`). An upgrade (instances of an older config
/// version present) follows Marathon's rolling rule: keep at least
/// `ceil(instances × minimumHealthCapacity)` ready instances, never run more than
/// `floor(instances × (1 + maximumOverCapacity))`; when those two are equal one extra
/// instance is allowed, or the upgrade could never start.
pub fn plan_app(app: &AppState, instances: &[&Instance]) -> AppPlan {
    let has_checks = !app.definition.health_checks.is_empty();
    let target = usize::try_from(app.definition.instances).unwrap_or(usize::MAX);
    let mut plan = AppPlan::default();

    if app.deleting {
        plan.kills = instances
            .iter()
            .filter(|instance| instance.is_live())
            .map(|instance| (instance.task_id.clone(), KillReason::Destroy))
            .collect();
        plan.converged = instances.is_empty();
        if !plan.converged {
            plan.waiting_for = Some(format!(
                "waiting for {} instance(s) to be killed",
                instances.len()
            ));
        }
        return plan;
    }

    // One pass of counts; the instances themselves are only gathered to choose kills (the
    // common case, an app short of or at its target with one version, allocates nothing).
    let mut live = 0;
    let mut killing = 0;
    let mut lingering = 0;
    let mut current_count = 0;
    let mut current_ready = 0;
    let mut ready_total = 0;
    for instance in instances {
        if instance.kill.is_some() {
            killing += 1;
        }
        if instance.state != InstanceState::Unreachable {
            lingering += 1;
        }
        if instance.is_live() {
            live += 1;
            let ready = instance.is_ready(has_checks);
            ready_total += usize::from(ready);
            if instance.config_version == app.config_version {
                current_count += 1;
                current_ready += usize::from(ready);
            }
        }
    }
    let has_old = current_count < live;
    let is_current =
        |instance: &&Instance| instance.is_live() && instance.config_version == app.config_version;

    if !has_old {
        if current_count > target {
            let surplus = current_count - target;
            let current: Vec<&Instance> = instances.iter().copied().filter(is_current).collect();
            plan.kills = kill_order(&current, has_checks, app.definition.kill_selection)
                .into_iter()
                .take(surplus)
                .map(|instance| (instance.task_id.clone(), KillReason::ScaleDown))
                .collect();
        } else {
            plan.wanted = target - current_count;
        }
    } else {
        let current: Vec<&Instance> = instances.iter().copied().filter(is_current).collect();
        let old: Vec<&Instance> = instances
            .iter()
            .copied()
            .filter(|instance| instance.is_live() && !is_current(instance))
            .collect();
        let minimum_healthy = (target as f64
            * app.definition.upgrade_strategy.minimum_health_capacity)
            .ceil() as usize;
        let mut maximum_capacity = (target as f64
            * (1.0 + app.definition.upgrade_strategy.maximum_over_capacity))
            .floor() as usize;
        if maximum_capacity <= minimum_healthy {
            maximum_capacity = minimum_healthy + 1;
        }
        // Old instances that are not ready do not count towards health: stop them first.
        let mut kills: Vec<(String, KillReason)> = Vec::new();
        let mut healthy_budget = ready_total.saturating_sub(minimum_healthy);
        for instance in kill_order(&old, has_checks, app.definition.kill_selection) {
            if !instance.is_ready(has_checks) {
                kills.push((instance.task_id.clone(), KillReason::Upgrade));
            } else if healthy_budget > 0 {
                healthy_budget -= 1;
                kills.push((instance.task_id.clone(), KillReason::Upgrade));
            }
        }
        // Surplus new instances (e.g. scaled down mid-upgrade).
        if current.len() > target {
            let surplus = current.len() - target;
            for instance in kill_order(&current, has_checks, app.definition.kill_selection)
                .into_iter()
                .take(surplus)
            {
                kills.push((instance.task_id.clone(), KillReason::ScaleDown));
            }
        }
        // Instances being killed still hold their resources until they are gone.
        let occupied = live + killing;
        let room = maximum_capacity.saturating_sub(occupied);
        plan.wanted = target.saturating_sub(current.len()).min(room);
        plan.kills = kills;
    }

    plan.converged = !has_old
        && current_count == target
        && current_ready == target
        && lingering == current_count;
    if !plan.converged {
        plan.waiting_for = Some(if current_count < target {
            format!(
                "{current_count} of {target} instance(s) of version {} launched, {current_ready} ready",
                app.config_version
            )
        } else if current_ready < target {
            format!(
                "waiting for {} instance(s) to become {}",
                target - current_ready,
                if has_checks { "healthy" } else { "running" }
            )
        } else {
            format!(
                "waiting for {} killed instance(s) to stop",
                lingering - current_count
            )
        });
    }
    plan
}

/// Instances in the order they should be killed: not running yet, then unready, then per
/// the app's kill selection.
fn kill_order<'a>(
    instances: &[&'a Instance],
    has_checks: bool,
    selection: KillSelection,
) -> Vec<&'a Instance> {
    let mut ordered = instances.to_vec();
    ordered.sort_by(|left, right| {
        let rank = |instance: &Instance| {
            if instance.state != InstanceState::Running {
                0
            } else if !instance.is_ready(has_checks) {
                1
            } else {
                2
            }
        };
        let age = |instance: &Instance| instance.started_at.unwrap_or(instance.staged_at);
        rank(left).cmp(&rank(right)).then_with(|| {
            let order = age(left).total_cmp(&age(right));
            match selection {
                KillSelection::YoungestFirst => order.reverse(),
                KillSelection::OldestFirst => order,
            }
            .then_with(|| left.task_id.cmp(&right.task_id))
        })
    });
    ordered
}

impl SvcCore {
    /// The instances of an app, in task id order.
    pub(super) fn instances_of(&self, app_id: &str) -> Vec<&Instance> {
        self.instances
            .get(app_id)
            .map(|instances| instances.values().collect())
            .unwrap_or_default()
    }

    /// The instance of a task.
    pub(super) fn instance(&self, task_id: &str) -> Option<&Instance> {
        let app_id = self.app_of_task.get(task_id)?;
        self.instances.get(app_id)?.get(task_id)
    }

    /// The instance of a task, to change it (its task, app and agent stay).
    pub(super) fn instance_mut(&mut self, task_id: &str) -> Option<&mut Instance> {
        let app_id = self.app_of_task.get(task_id)?;
        self.instances.get_mut(app_id)?.get_mut(task_id)
    }

    /// Every instance, by app id, then task id.
    pub(super) fn all_instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values().flat_map(BTreeMap::values)
    }

    /// How many instances there are.
    pub(super) fn instance_count(&self) -> usize {
        self.app_of_task.len()
    }

    /// The instances on an agent, in task id order (through the per-agent index).
    pub(super) fn instances_on(&self, agent_id: &str) -> Vec<&Instance> {
        self.instances_by_agent
            .get(agent_id)
            .map(|task_ids| {
                task_ids
                    .iter()
                    .filter_map(|task_id| self.instance(task_id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stores an instance and indexes it by app and agent (an instance keeps both for life).
    pub(super) fn insert_instance(&mut self, instance: Instance) {
        self.remove_instance(&instance.task_id);
        self.instances_by_agent
            .entry(instance.agent_id.clone())
            .or_default()
            .insert(instance.task_id.clone());
        self.app_of_task
            .insert(instance.task_id.clone(), instance.app_id.clone());
        self.instances
            .entry(instance.app_id.clone())
            .or_default()
            .insert(instance.task_id.clone(), instance);
    }

    /// Forgets an instance and its index entries.
    pub(super) fn remove_instance(&mut self, task_id: &str) -> Option<Instance> {
        let app_id = self.app_of_task.remove(task_id)?;
        let of_app = self.instances.get_mut(&app_id)?;
        let instance = of_app.remove(task_id)?;
        if of_app.is_empty() {
            self.instances.remove(&app_id);
        }
        if let Some(task_ids) = self.instances_by_agent.get_mut(&instance.agent_id) {
            task_ids.remove(task_id);
            if task_ids.is_empty() {
                self.instances_by_agent.remove(&instance.agent_id);
            }
        }
        Some(instance)
    }

    pub(super) fn is_held_back(&self, app_id: &str) -> bool {
        self.deployments
            .values()
            .any(|deployment| deployment.holds_back(app_id))
    }

    /// The plan of an app, or `None` while a deployment holds it back.
    pub(super) fn current_plan(&self, app_id: &str) -> Option<AppPlan> {
        let app = self.apps.get(app_id)?;
        if self.is_held_back(app_id) {
            return None;
        }
        Some(plan_app(app, &self.instances_of(app_id)))
    }

    /// Number of instances the app can launch now (0 while held back or backing off).
    pub(super) fn launchable(&self, app_id: &str, now: f64) -> usize {
        let Some(app) = self.apps.get(app_id) else {
            return 0;
        };
        if app.backoff.time_left(now) > 0.0 {
            return 0;
        }
        self.current_plan(app_id).map_or(0, |plan| plan.wanted)
    }

    /// Applies every app's kills, handles timeouts, forgets destroyed apps, moves
    /// deployments on and decides whether the framework wants offers.
    pub(super) fn drive(&mut self, now: f64) {
        self.expire_instances(now);
        let app_ids: Vec<String> = self.apps.keys().cloned().collect();
        self.wanting.clear();
        for app_id in &app_ids {
            self.drive_one(app_id, now);
        }
        self.advance_deployments(now);
        for app_id in &app_ids {
            self.note_wanting(app_id, now);
        }
        self.update_offer_interest();
    }

    /// [`SvcCore::drive`] after a change to one app's instances (a status update): only that
    /// app, the running deployments that include it and their apps are planned again. What
    /// depends on time alone (timeouts, kill retries, backoffs ending) waits for the next
    /// [`SvcCore::tick`], which drives everything; at 100,000 instances planning every app
    /// after every update was the framework's whole CPU.
    pub(super) fn drive_app(&mut self, app_id: &str, now: f64) {
        self.drive_apps(&BTreeSet::from([app_id.to_owned()]), now);
    }

    /// [`SvcCore::drive_app`] for several apps at once: each app, each running deployment
    /// that includes any of them and each app of a deployment whose step moved is planned
    /// once.
    pub(super) fn drive_apps(&mut self, app_ids: &BTreeSet<String>, now: f64) {
        if app_ids.is_empty() {
            return;
        }
        for app_id in app_ids {
            self.drive_one(app_id, now);
        }
        let deployments: Vec<String> = self
            .deployments
            .values()
            .filter(|deployment| {
                deployment.state == DeploymentState::Running
                    && deployment
                        .affected_apps()
                        .any(|affected| app_ids.contains(affected))
            })
            .map(|deployment| deployment.id.clone())
            .collect();
        let mut driven: BTreeSet<String> = app_ids.clone();
        for id in &deployments {
            let before = self
                .deployments
                .get(id)
                .map(|deployment| deployment.current_step);
            self.advance_deployment(id, now);
            let after = self.deployments.get(id).map(|deployment| {
                (
                    deployment.current_step,
                    deployment.state == DeploymentState::Running,
                )
            });
            // A step moved on (or the deployment ended): the apps it held back may act now.
            if after.map(|(step, _)| step) != before || after.is_some_and(|(_, running)| !running) {
                let apps: Vec<String> = self
                    .deployments
                    .get(id)
                    .map(|deployment| deployment.affected_apps().map(str::to_owned).collect())
                    .unwrap_or_default();
                for other in apps {
                    if driven.insert(other.clone()) {
                        self.drive_one(&other, now);
                    }
                }
            }
        }
        for driven_app in &driven {
            self.note_wanting(driven_app, now);
        }
        self.update_offer_interest();
    }

    /// Applies one app's kills and forgets it once destroyed.
    fn drive_one(&mut self, app_id: &str, now: f64) {
        let Some(plan) = self.current_plan(app_id) else {
            return;
        };
        for (task_id, reason) in plan.kills {
            self.kill_instance(&task_id, reason, now);
        }
        self.update_waiting(app_id, plan.wanted, now);
        let destroyed = self.apps.get(app_id).is_some_and(|app| app.deleting)
            && self.instances_of(app_id).is_empty();
        if destroyed {
            self.apps.remove(app_id);
            self.versions.remove(app_id);
            self.wanting.remove(app_id);
            self.writes.push(StoreWrite::DeleteApp {
                app_id: app_id.to_owned(),
            });
            let mut payload = Map::new();
            payload.insert("appId".into(), json!(app_id));
            self.emit("app_terminated_event", now, payload);
        }
    }

    /// Records whether an app can launch now, for [`SvcCore::update_offer_interest`].
    fn note_wanting(&mut self, app_id: &str, now: f64) {
        if self.launchable(app_id, now) > 0 {
            self.wanting.insert(app_id.to_owned());
        } else {
            self.wanting.remove(app_id);
        }
    }

    fn update_waiting(&mut self, app_id: &str, wanted: usize, now: f64) {
        let Some(app) = self.apps.get_mut(app_id) else {
            return;
        };
        if wanted == 0 {
            app.waiting_since = None;
            app.waiting_reason = None;
        } else if app.waiting_since.is_none() {
            app.waiting_since = Some(now);
        }
    }

    /// Asks the agent to kill an instance (once; resent by [`SvcCore::expire_instances`]).
    pub(super) fn kill_instance(&mut self, task_id: &str, reason: KillReason, now: f64) {
        let Some(instance) = self.instance_mut(task_id) else {
            return;
        };
        if instance.kill.is_some() {
            return;
        }
        instance.kill = Some(KillRequest {
            reason,
            sent_at: now,
        });
        let command = Command::Kill {
            task_id: TaskId::new(instance.task_id.clone()),
            agent_id: AgentId::new(instance.agent_id.clone()),
        };
        tracing::info!(task_id, app_id = %instance.app_id, reason = reason.as_str(), "killing instance");
        self.persist_instance(task_id);
        self.outbox.push(command);
        self.counters.kills += 1;
    }

    /// Resends unanswered kills and kills instances that never started.
    fn expire_instances(&mut self, now: f64) {
        let mut resend = Vec::new();
        let mut timed_out = Vec::new();
        for instance in self.instances.values_mut().flat_map(BTreeMap::values_mut) {
            match instance.kill {
                Some(ref mut request) if now - request.sent_at >= self.config.kill_retry => {
                    request.sent_at = now;
                    resend.push((instance.task_id.clone(), instance.agent_id.clone()));
                }
                Some(_) => {}
                None => {
                    let staging = matches!(
                        instance.state,
                        InstanceState::Staging | InstanceState::Starting
                    );
                    if staging && now - instance.staged_at >= self.config.launch_timeout {
                        timed_out.push(instance.task_id.clone());
                    }
                }
            }
        }
        for (task_id, agent_id) in resend {
            self.persist_instance(&task_id);
            self.outbox.push(Command::Kill {
                task_id: TaskId::new(task_id),
                agent_id: AgentId::new(agent_id),
            });
        }
        for task_id in timed_out {
            self.kill_instance(&task_id, KillReason::LaunchTimeout, now);
        }
    }

    /// Moves running deployments: notes progress, advances steps, ends them.
    fn advance_deployments(&mut self, now: f64) {
        let running: Vec<String> = self
            .deployments
            .values()
            .filter(|deployment| deployment.state == DeploymentState::Running)
            .map(|deployment| deployment.id.clone())
            .collect();
        for id in running {
            self.advance_deployment(&id, now);
        }
    }

    fn advance_deployment(&mut self, id: &str, now: f64) {
        let Some(deployment) = self.deployments.get(id).cloned() else {
            return;
        };
        let mut current_step = deployment.current_step;
        let mut reason = None;
        while let Some(step) = deployment.steps.get(current_step) {
            let mut pending = None;
            for action in step {
                if let Some(waiting) = self.action_pending(&action.app_id, action.action) {
                    pending = Some(format!("{}: {waiting}", action.app_id));
                    break;
                }
            }
            match pending {
                Some(waiting) => {
                    reason = Some(waiting);
                    break;
                }
                None => current_step += 1,
            }
        }
        let mark = self.progress_mark(&deployment, current_step);
        let Some(stored) = self.deployments.get_mut(id) else {
            return;
        };
        let mut changed = stored.current_step != current_step || stored.reason != reason;
        stored.current_step = current_step;
        stored.reason = reason.clone();
        if stored.progress_mark != mark {
            stored.progress_mark = mark;
            stored.last_progress_at = now;
            changed = true;
        }
        if current_step >= stored.steps.len() {
            stored.state = DeploymentState::Succeeded;
            stored.finished_at = Some(now);
            stored.reason = None;
            let payload = deployment_payload(stored);
            tracing::info!(deployment_id = id, "deployment succeeded");
            self.persist_deployment(id);
            self.emit("deployment_success", now, payload);
            self.trim_finished_deployments();
            return;
        }
        if now - stored.last_progress_at >= self.config.deployment_timeout {
            stored.state = DeploymentState::Failed;
            stored.finished_at = Some(now);
            stored.reason = Some(format!(
                "no progress for {:.0} s; {}",
                now - stored.last_progress_at,
                reason.unwrap_or_else(|| "waiting".to_owned())
            ));
            let payload = deployment_payload(stored);
            tracing::warn!(deployment_id = id, reason = ?stored.reason, "deployment failed");
            self.persist_deployment(id);
            self.emit("deployment_failed", now, payload);
            self.trim_finished_deployments();
            return;
        }
        if changed {
            self.persist_deployment(id);
        }
    }

    /// What an app in a deployment still waits for, or `None` when its action is done.
    fn action_pending(&self, app_id: &str, action: ActionKind) -> Option<String> {
        let Some(app) = self.apps.get(app_id) else {
            return match action {
                ActionKind::StopApplication => None,
                _ => Some("app no longer exists".to_owned()),
            };
        };
        let plan = plan_app(app, &self.instances_of(app_id));
        if plan.converged {
            return None;
        }
        if let Some(reason) = &app.waiting_reason {
            return Some(reason.clone());
        }
        let now_hint = app.backoff.not_before;
        if app.backoff.failures > 0 && now_hint > 0.0 && plan.wanted > 0 {
            return Some(format!(
                "launch delayed {:.1} s by backoff after {} failure(s){}",
                app.backoff.delay_seconds,
                app.backoff.failures,
                app.last_failure
                    .as_ref()
                    .map(|failure| format!("; last: {failure}"))
                    .unwrap_or_default()
            ));
        }
        plan.waiting_for
    }

    fn progress_mark(&self, deployment: &super::Deployment, step: usize) -> u64 {
        let mut mark = step as u64;
        for app_id in deployment.affected_apps() {
            for instance in self.instances_of(app_id) {
                let state = instance.state as u64 + 1;
                let health = match instance.healthy {
                    None => 1,
                    Some(false) => 2,
                    Some(true) => 3,
                };
                let killing = u64::from(instance.kill.is_some()) + 1;
                mark = mark
                    .wrapping_mul(31)
                    .wrapping_add(state * 7 + health * 3 + killing)
                    .wrapping_add(instance.task_id.len() as u64);
            }
            mark = mark
                .wrapping_mul(131)
                .wrapping_add(u64::from(self.apps.contains_key(app_id)));
        }
        mark
    }

    fn trim_finished_deployments(&mut self) {
        let mut finished: Vec<(f64, String)> = self
            .deployments
            .values()
            .filter(|deployment| deployment.state.is_finished())
            .map(|deployment| (deployment.finished_at.unwrap_or(0.0), deployment.id.clone()))
            .collect();
        if finished.len() <= self.config.finished_deployments_kept {
            return;
        }
        finished.sort_by(|left, right| left.0.total_cmp(&right.0));
        let excess = finished.len() - self.config.finished_deployments_kept;
        for (_, id) in finished.into_iter().take(excess) {
            self.deployments.remove(&id);
            self.writes.push(StoreWrite::DeleteDeployment { id });
        }
    }

    /// Revives when an app can launch and offers are suppressed; suppresses when nothing can
    /// (per the apps' launchability as last driven).
    pub(super) fn update_offer_interest(&mut self) {
        if !self.subscribed {
            return;
        }
        let wants = !self.wanting.is_empty();
        if wants && self.suppressed {
            self.suppressed = false;
            self.outbox.push(Command::Revive);
        } else if !wants && !self.suppressed {
            self.suppressed = true;
            self.outbox.push(Command::Suppress);
        }
    }
}

/// The body of deployment events.
pub(super) fn deployment_payload(deployment: &super::Deployment) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert("id".into(), json!(deployment.id));
    payload.insert("state".into(), json!(deployment.state.as_str()));
    payload.insert("reason".into(), json!(deployment.reason));
    payload.insert(
        "affectedApps".into(),
        json!(deployment.affected_apps().collect::<Vec<_>>()),
    );
    payload
}
