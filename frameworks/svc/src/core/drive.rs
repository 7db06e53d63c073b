//! Driving apps towards their targets: each app's [`plan_app`] is applied (its kills sent,
//! its wanted launches noted for the offers), destroyed apps are forgotten, then the
//! deployments that include the apps are advanced and offer interest is updated.

use std::collections::BTreeSet;

use serde_json::{Map, json};

use super::plan::{AppPlan, plan_app};
use super::{AppId, DeploymentId, StoreWrite, SvcCore};

impl SvcCore {
    /// The plan of an app, or `None` while a deployment holds it back.
    pub(super) fn current_plan(&self, app_id: &str) -> Option<AppPlan> {
        let app = self.apps.get(app_id)?;
        if self.deployments.holds_back(app_id) {
            return None;
        }
        Some(plan_app(app, &self.instances.of_app(app_id)))
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
        let app_ids: Vec<AppId> = self.apps.keys().cloned().collect();
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
        self.drive_apps(&BTreeSet::from([AppId::new(app_id)]), now);
    }

    /// [`SvcCore::drive_app`] for several apps at once: each app, each running deployment
    /// that includes any of them and each app of a deployment whose step moved is planned
    /// once.
    pub(super) fn drive_apps(&mut self, app_ids: &BTreeSet<AppId>, now: f64) {
        if app_ids.is_empty() {
            return;
        }
        for app_id in app_ids {
            self.drive_one(app_id, now);
        }
        let deployments: Vec<DeploymentId> = self
            .deployments
            .running()
            .filter(|deployment| {
                deployment
                    .affected_apps()
                    .any(|affected| app_ids.contains(affected))
            })
            .map(|deployment| deployment.id.clone())
            .collect();
        let mut driven: BTreeSet<AppId> = app_ids.clone();
        for id in &deployments {
            let before = self
                .deployments
                .get(id)
                .map(|deployment| deployment.current_step);
            self.advance_deployment(id, now);
            let after = self
                .deployments
                .get(id)
                .map(|deployment| (deployment.current_step, deployment.is_running()));
            // A step moved on (or the deployment ended): the apps it held back may act now.
            if after.map(|(step, _)| step) != before || after.is_some_and(|(_, running)| !running) {
                let apps: Vec<AppId> = self
                    .deployments
                    .get(id)
                    .map(|deployment| deployment.affected_apps().map(AppId::new).collect())
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
            self.kill_instance(task_id.as_str(), reason, now);
        }
        self.update_waiting(app_id, plan.wanted, now);
        let destroyed = self.apps.get(app_id).is_some_and(|app| app.deleting)
            && self.instances.of_app(app_id).is_empty();
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
}
