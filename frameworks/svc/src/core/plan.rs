//! The pure planning steps, in the shape of Nomad's reconciler: from an app and its
//! instances, what to place and what to stop ([`plan_app`]); from a running deployment and
//! its apps, how far its steps advance ([`plan_deployment`]). They decide and change
//! nothing; the core applies them (`drive.rs`, `deployments.rs`). Two steps, not one, on
//! purpose: a deployment's progress is judged after its apps' kills are applied.

use std::collections::BTreeMap;

use agora_proto::TaskId;

use super::instances::InstanceBook;
use super::model::{ActionKind, AppId, AppState, Deployment, Instance, InstanceState, KillReason};
use crate::app::KillSelection;

/// What one app needs right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppPlan {
    /// New instances of the current version to launch.
    pub wanted: usize,
    /// Instances to kill now, and why.
    pub kills: Vec<(TaskId, KillReason)>,
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
        if instance.state() != InstanceState::Unreachable {
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
        let mut kills: Vec<(TaskId, KillReason)> = Vec::new();
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
            if instance.state() != InstanceState::Running {
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

/// How far a running deployment has come ([`plan_deployment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentPlan {
    /// The first step not done yet (== the number of steps once all are done).
    pub current_step: usize,
    /// What that step waits for (`None` once all steps are done).
    pub reason: Option<String>,
    /// A fingerprint of its apps' progress: a change means progress was made.
    pub progress_mark: u64,
}

/// Advances a deployment over every step whose apps are done, in order, stopping at the
/// first app still pending.
pub fn plan_deployment(
    deployment: &Deployment,
    apps: &BTreeMap<AppId, AppState>,
    instances: &InstanceBook,
) -> DeploymentPlan {
    let mut current_step = deployment.current_step;
    let mut reason = None;
    while let Some(step) = deployment.steps.get(current_step) {
        let pending = step.iter().find_map(|action| {
            action_pending(apps, instances, &action.app_id, action.action)
                .map(|waiting| format!("{}: {waiting}", action.app_id))
        });
        match pending {
            Some(waiting) => {
                reason = Some(waiting);
                break;
            }
            None => current_step += 1,
        }
    }
    DeploymentPlan {
        current_step,
        reason,
        progress_mark: progress_mark(apps, instances, deployment, current_step),
    }
}

/// What an app in a deployment still waits for, or `None` when its action is done.
fn action_pending(
    apps: &BTreeMap<AppId, AppState>,
    instances: &InstanceBook,
    app_id: &str,
    action: ActionKind,
) -> Option<String> {
    let Some(app) = apps.get(app_id) else {
        return match action {
            ActionKind::StopApplication => None,
            _ => Some("app no longer exists".to_owned()),
        };
    };
    let plan = plan_app(app, &instances.of_app(app_id));
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

fn progress_mark(
    apps: &BTreeMap<AppId, AppState>,
    instances: &InstanceBook,
    deployment: &Deployment,
    step: usize,
) -> u64 {
    let mut mark = step as u64;
    for app_id in deployment.affected_apps() {
        for instance in instances.of_app(app_id) {
            let state = instance.state() as u64 + 1;
            let health = match instance.healthy {
                None => 1,
                Some(false) => 2,
                Some(true) => 3,
            };
            let killing = u64::from(instance.kill.is_some()) + 1;
            mark = mark
                .wrapping_mul(31)
                .wrapping_add(state * 7 + health * 3 + killing)
                .wrapping_add(instance.task_id.as_str().len() as u64);
        }
        mark = mark
            .wrapping_mul(131)
            .wrapping_add(u64::from(apps.contains_key(app_id)));
    }
    mark
}
