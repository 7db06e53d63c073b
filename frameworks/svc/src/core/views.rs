//! Read-only views of the core in Marathon's JSON shapes, and its counters.

use serde_json::{Value, json};

use super::SvcCore;
use super::model::{AppState, Deployment, Instance, InstanceState};
use super::time::rfc3339_millis;

/// Monotonic counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub(super) struct Counters {
    pub offers_received: u64,
    pub launched: u64,
    pub kills: u64,
    pub failures: u64,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreMetrics {
    /// Apps defined.
    pub apps: usize,
    /// Instances known, any state.
    pub instances: usize,
    /// Instances running.
    pub instances_running: usize,
    /// Instances running and healthy (or without checks).
    pub instances_ready: usize,
    /// Deployments running.
    pub deployments_running: usize,
    /// Instances waiting to be placed, over all apps.
    pub queued: usize,
    /// Offers received.
    pub offers_received: u64,
    /// Instances launched.
    pub launched: u64,
    /// Kills sent.
    pub kills: u64,
    /// Unexpected instance failures.
    pub failures: u64,
}

impl SvcCore {
    /// Whether the app exists.
    pub fn has_app(&self, app_id: &str) -> bool {
        self.apps.contains_key(app_id)
    }

    /// The app's current definition JSON (for partial updates).
    pub fn app_definition_json(&self, app_id: &str) -> Option<Value> {
        self.apps.get(app_id).map(|app| app.definition.to_json())
    }

    /// `GET /v2/apps`: every app with its counts (`prefix` filters by id prefix).
    pub fn apps_json(&self, prefix: Option<&str>, embed_tasks: bool) -> Value {
        let apps: Vec<Value> = self
            .apps
            .iter()
            .filter(|(app_id, _)| prefix.is_none_or(|prefix| app_id.starts_with(prefix)))
            .map(|(app_id, app)| self.app_json(app_id, app, embed_tasks))
            .collect();
        json!({ "apps": apps })
    }

    /// `GET /v2/apps/{id}`.
    pub fn app_detail_json(&self, app_id: &str) -> Option<Value> {
        let app = self.apps.get(app_id)?;
        Some(json!({ "app": self.app_json(app_id, app, true) }))
    }

    fn app_json(&self, app_id: &str, app: &AppState, embed_tasks: bool) -> Value {
        let mut value = app.definition.to_json();
        let instances = self.instances.of_app(app_id);
        let has_checks = !app.definition.health_checks.is_empty();
        let count = |predicate: &dyn Fn(&Instance) -> bool| {
            instances
                .iter()
                .filter(|instance| predicate(instance))
                .count()
        };
        let running =
            count(&|i| i.state() == InstanceState::Running && i.unconfirmed_since.is_none());
        let staged =
            count(&|i| matches!(i.state(), InstanceState::Staging | InstanceState::Starting));
        let healthy = count(&|i| has_checks && i.healthy == Some(true));
        let unhealthy = count(&|i| has_checks && i.healthy == Some(false));
        let deployments: Vec<Value> = self
            .deployments
            .running_affecting(app_id)
            .map(|deployment| json!({ "id": deployment.id }))
            .collect();
        let plan = self.current_plan(app_id);
        if let Value::Object(object) = &mut value {
            object.insert("version".into(), json!(app.version));
            object.insert(
                "versionInfo".into(),
                json!({ "lastConfigChangeAt": app.config_version, "lastScalingAt": app.version }),
            );
            object.insert("tasksRunning".into(), json!(running));
            object.insert("tasksStaged".into(), json!(staged));
            object.insert("tasksHealthy".into(), json!(healthy));
            object.insert("tasksUnhealthy".into(), json!(unhealthy));
            object.insert("deployments".into(), json!(deployments));
            object.insert("deleting".into(), json!(app.deleting));
            object.insert(
                "waiting".into(),
                json!({
                    "count": plan.as_ref().map_or(0, |plan| plan.wanted),
                    "reason": self.waiting_reason(app_id, app),
                }),
            );
            object.insert("lastTaskFailure".into(), json!(app.last_failure));
            if embed_tasks {
                let tasks: Vec<Value> = instances
                    .iter()
                    .map(|instance| instance_json(instance))
                    .collect();
                object.insert("tasks".into(), json!(tasks));
            }
        }
        value
    }

    fn waiting_reason(&self, app_id: &str, app: &AppState) -> Option<String> {
        if self.deployments.holds_back(app_id) {
            return Some("waiting for its dependencies to be deployed first".to_owned());
        }
        if let Some(reason) = &app.waiting_reason {
            return Some(reason.clone());
        }
        if app.waiting_since.is_some() && self.last_offers_at.is_none() {
            return Some("no offers received from the master yet".to_owned());
        }
        None
    }

    /// `GET /v2/apps/{id}/tasks`.
    pub fn tasks_json(&self, app_id: &str) -> Option<Value> {
        self.apps.get(app_id)?;
        let tasks: Vec<Value> = self
            .instances
            .of_app(app_id)
            .iter()
            .map(|instance| instance_json(instance))
            .collect();
        Some(json!({ "tasks": tasks }))
    }

    /// `GET /v2/apps/{id}/versions`, newest first.
    pub fn versions_json(&self, app_id: &str) -> Option<Value> {
        self.apps.get(app_id)?;
        let versions: Vec<&String> = self
            .versions
            .get(app_id)
            .map(|versions| versions.keys().rev().collect())
            .unwrap_or_default();
        Some(json!({ "versions": versions }))
    }

    /// `GET /v2/apps/{id}/versions/{version}`.
    pub fn version_json(&self, app_id: &str, version: &str) -> Option<Value> {
        self.versions.get(app_id)?.get(version).cloned()
    }

    /// `GET /v2/deployments`: running deployments (with `all`, finished ones too).
    pub fn deployments_json(&self, all: bool) -> Value {
        let mut deployments: Vec<&Deployment> = self
            .deployments
            .iter()
            .filter(|deployment| all || deployment.is_running())
            .collect();
        deployments.sort_by(|left, right| left.started_at.total_cmp(&right.started_at));
        Value::Array(deployments.into_iter().map(deployment_json).collect())
    }

    /// One deployment by id (running or finished).
    pub fn deployment_json(&self, id: &str) -> Option<Value> {
        self.deployments.get(id).map(deployment_json)
    }

    /// `GET /v2/queue`: apps with instances not placed yet, and why.
    pub fn queue_json(&self, now: f64) -> Value {
        let mut queue = Vec::new();
        for (app_id, app) in &self.apps {
            if app.deleting {
                continue;
            }
            let held = self.deployments.holds_back(app_id);
            let wanted = if held {
                app.definition.instances as usize
            } else {
                self.current_plan(app_id).map_or(0, |plan| plan.wanted)
            };
            if wanted == 0 {
                continue;
            }
            let time_left = app.backoff.time_left(now);
            let reason = if time_left > 0.0 {
                Some(format!(
                    "launch delayed {time_left:.1} s more by backoff after {} failure(s){}",
                    app.backoff.failures,
                    app.last_failure
                        .as_ref()
                        .map(|failure| format!("; last: {failure}"))
                        .unwrap_or_default()
                ))
            } else {
                self.waiting_reason(app_id, app)
            };
            queue.push(json!({
                "app": { "id": app_id, "version": app.version, "instances": app.definition.instances,
                         "cpus": app.definition.cpus, "mem": app.definition.mem },
                "count": wanted,
                "delay": { "timeLeftSeconds": time_left, "overdue": time_left <= 0.0 },
                "since": app.waiting_since.map(rfc3339_millis),
                "reason": reason,
                "lastTaskFailure": app.last_failure,
            }));
        }
        json!({ "queue": queue })
    }

    /// `GET /v2/info`.
    pub fn info_json(&self) -> Value {
        json!({
            "name": "svcframework",
            "version": env!("CARGO_PKG_VERSION"),
            "frameworkId": self.framework_id,
            "subscribed": self.subscribed,
            "config": {
                "deploymentTimeoutSeconds": self.config.deployment_timeout,
                "launchTimeoutSeconds": self.config.launch_timeout,
            },
        })
    }

    /// Figures for `/metrics`.
    pub fn metrics(&self) -> CoreMetrics {
        let queued = self
            .apps
            .keys()
            .filter_map(|app_id| self.current_plan(app_id))
            .map(|plan| plan.wanted)
            .sum();
        let mut instances_running = 0;
        let mut instances_ready = 0;
        for (app_id, instances) in self.instances.by_app() {
            let has_checks = self
                .apps
                .get(app_id)
                .is_some_and(|app| !app.definition.health_checks.is_empty());
            for instance in instances.values() {
                if instance.state() == InstanceState::Running {
                    instances_running += 1;
                    instances_ready += usize::from(instance.is_ready(has_checks));
                }
            }
        }
        CoreMetrics {
            apps: self.apps.len(),
            instances: self.instances.len(),
            instances_running,
            instances_ready,
            deployments_running: self.deployments.running().count(),
            queued,
            offers_received: self.counters.offers_received,
            launched: self.counters.launched,
            kills: self.counters.kills,
            failures: self.counters.failures,
        }
    }
}

fn instance_json(instance: &Instance) -> Value {
    // An instance the master has not confirmed since the last subscription is not shown as
    // running: its agent has not been heard from since the master restarted.
    let (state, message) = match instance.unconfirmed_since {
        Some(since) => (
            "TASK_UNKNOWN",
            format!(
                "not confirmed since {}: the master is waiting for agent {} to re-register (last known {})",
                rfc3339_millis(since),
                instance.agent_id,
                instance.state().as_str()
            ),
        ),
        None => (instance.state().as_str(), instance.message.clone()),
    };
    json!({
        "id": instance.task_id,
        "appId": instance.app_id,
        "host": instance.host,
        "agentId": instance.agent_id,
        "ports": instance.ports,
        "state": state,
        "healthy": instance.healthy,
        "healthCheckResults": instance.healthy.map(|alive| vec![json!({ "alive": alive })]).unwrap_or_default(),
        "stagedAt": rfc3339_millis(instance.staged_at),
        "startedAt": instance.started_at.map(rfc3339_millis),
        "version": instance.config_version,
        "killing": instance.kill.map(|kill| kill.reason.as_str()),
        "message": message,
    })
}

fn deployment_json(deployment: &Deployment) -> Value {
    let steps: Vec<Value> = deployment
        .steps
        .iter()
        .map(|step| {
            json!({ "actions": step.iter().map(|action| json!({ "action": action.action.as_str(), "app": action.app_id })).collect::<Vec<_>>() })
        })
        .collect();
    let current_actions: Vec<Value> = deployment
        .steps
        .get(deployment.current_step)
        .map(|step| {
            step.iter()
                .map(|action| json!({ "action": action.action.as_str(), "app": action.app_id }))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": deployment.id,
        "version": deployment.version,
        "affectedApps": deployment.affected_apps().collect::<Vec<_>>(),
        "steps": steps,
        "currentStep": (deployment.current_step + 1).min(deployment.steps.len()),
        "totalSteps": deployment.steps.len(),
        "currentActions": current_actions,
        "state": deployment.state().as_str(),
        "reason": deployment.reason,
        "startedAt": rfc3339_millis(deployment.started_at),
        "finishedAt": deployment.finished_at.map(rfc3339_millis),
    })
}
