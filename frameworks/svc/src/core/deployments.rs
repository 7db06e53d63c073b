//! Deployment progress: running deployments move step by step as their apps converge, and
//! end (succeeded, or failed after no progress for the deployment timeout).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::model::{Deployment, DeploymentId};
use super::plan::{DeploymentPlan, plan_deployment};
use super::{StoreWrite, SvcCore};

/// Every deployment the daemon remembers: running ones, and the latest finished ones for
/// `status` and the API.
#[derive(Debug, Default)]
pub struct DeploymentBook {
    by_id: BTreeMap<DeploymentId, Deployment>,
}

impl DeploymentBook {
    /// The deployment with this id, running or finished.
    pub fn get(&self, id: &str) -> Option<&Deployment> {
        self.by_id.get(id)
    }

    /// The deployment with this id, to change it (its state only through its transitions).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Deployment> {
        self.by_id.get_mut(id)
    }

    /// Stores a deployment, replacing one with its id.
    pub fn insert(&mut self, deployment: Deployment) {
        self.by_id.insert(deployment.id.clone(), deployment);
    }

    /// Every deployment, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Deployment> {
        self.by_id.values()
    }

    /// The running deployments, by id.
    pub fn running(&self) -> impl Iterator<Item = &Deployment> {
        self.iter().filter(|deployment| deployment.is_running())
    }

    /// The running deployments that include an app, by id.
    pub fn running_affecting<'a>(
        &'a self,
        app_id: &'a str,
    ) -> impl Iterator<Item = &'a Deployment> + 'a {
        self.running()
            .filter(move |deployment| deployment.affects(app_id))
    }

    /// True when a running deployment has not reached the app's step yet (its dependencies
    /// go first).
    pub fn holds_back(&self, app_id: &str) -> bool {
        self.iter().any(|deployment| deployment.holds_back(app_id))
    }

    /// Forgets the oldest finished deployments beyond `kept`; returns their ids.
    pub fn remove_oldest_finished(&mut self, kept: usize) -> Vec<String> {
        let mut finished: Vec<(f64, DeploymentId)> = self
            .iter()
            .filter(|deployment| deployment.state().is_finished())
            .map(|deployment| (deployment.finished_at.unwrap_or(0.0), deployment.id.clone()))
            .collect();
        if finished.len() <= kept {
            return Vec::new();
        }
        finished.sort_by(|left, right| left.0.total_cmp(&right.0));
        let excess = finished.len() - kept;
        let removed: Vec<DeploymentId> = finished
            .into_iter()
            .take(excess)
            .map(|(_, id)| id)
            .collect();
        for id in &removed {
            self.by_id.remove(id);
        }
        removed.into_iter().map(String::from).collect()
    }
}

impl SvcCore {
    /// Moves running deployments: notes progress, advances steps, ends them.
    pub(super) fn advance_deployments(&mut self, now: f64) {
        let running: Vec<DeploymentId> = self
            .deployments
            .running()
            .map(|deployment| deployment.id.clone())
            .collect();
        for id in running {
            self.advance_deployment(&id, now);
        }
    }

    pub(super) fn advance_deployment(&mut self, id: &str, now: f64) {
        let Some(deployment) = self.deployments.get(id) else {
            return;
        };
        if !deployment.is_running() {
            return;
        }
        let DeploymentPlan {
            current_step,
            reason,
            progress_mark: mark,
        } = plan_deployment(deployment, &self.apps, &self.instances);
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
            // Only running deployments are advanced (see the callers): one that ended
            // already is left as it is.
            if let Err(error) = stored.succeed(now) {
                tracing::warn!(deployment_id = id, %error, "not advancing deployment");
                return;
            }
            let payload = deployment_payload(stored);
            tracing::info!(deployment_id = id, "deployment succeeded");
            self.persist_deployment(id);
            self.emit("deployment_success", now, payload);
            self.trim_finished_deployments();
            return;
        }
        if now - stored.last_progress_at >= self.config.deployment_timeout {
            let why = format!(
                "no progress for {:.0} s; {}",
                now - stored.last_progress_at,
                reason.unwrap_or_else(|| "waiting".to_owned())
            );
            if let Err(error) = stored.fail(why, now) {
                tracing::warn!(deployment_id = id, %error, "not advancing deployment");
                return;
            }
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

    fn trim_finished_deployments(&mut self) {
        for id in self
            .deployments
            .remove_oldest_finished(self.config.finished_deployments_kept)
        {
            self.writes.push(StoreWrite::DeleteDeployment { id });
        }
    }
}

/// The body of deployment events.
pub(super) fn deployment_payload(deployment: &super::Deployment) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert("id".into(), json!(deployment.id));
    payload.insert("state".into(), json!(deployment.state().as_str()));
    payload.insert("reason".into(), json!(deployment.reason));
    payload.insert(
        "affectedApps".into(),
        json!(deployment.affected_apps().collect::<Vec<_>>()),
    );
    payload
}
