//! What svcframework remembers: apps, their instances and deployments. Every type here is
//! stored as JSON in the daemon's embedded store and survives a restart.

use serde::{Deserialize, Serialize};

use crate::app::AppDefinition;

/// An app as the daemon drives it: the definition it converges to and its bookkeeping.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The target definition, with `version` set to [`AppState::version`].
    pub definition: AppDefinition,
    /// Version of the latest change of any kind (scale included).
    pub version: String,
    /// Version of the latest change that needs new instances; instances launched for the
    /// current definition carry it.
    pub config_version: String,
    /// Destroy requested: kill every instance, then forget the app.
    pub deleting: bool,
    /// Launch delay after failures.
    pub backoff: LaunchBackoff,
    /// Why the app's missing instances are not placed, when they are not.
    pub waiting_reason: Option<String>,
    /// When the app started waiting for instances to be placed.
    pub waiting_since: Option<f64>,
    /// The last unexpected end of one of its instances, for `status` and the queue.
    pub last_failure: Option<String>,
}

/// How an app is stored (the definition as Marathon JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredApp {
    /// The definition's JSON.
    pub definition: serde_json::Value,
    /// See [`AppState::version`].
    pub version: String,
    /// See [`AppState::config_version`].
    pub config_version: String,
    /// See [`AppState::deleting`].
    pub deleting: bool,
    /// See [`AppState::backoff`].
    #[serde(default)]
    pub backoff: LaunchBackoff,
}

/// Marathon's launch backoff: after each unexpected failure the next launch waits
/// `backoffSeconds × backoffFactor^(failures-1)`, capped by `maxLaunchDelaySeconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchBackoff {
    /// Unexpected failures since the last reset.
    pub failures: u32,
    /// Current delay in seconds (0 when none).
    pub delay_seconds: f64,
    /// No launch before this instant (seconds since the epoch).
    pub not_before: f64,
}

impl LaunchBackoff {
    /// Records one failure at `now` for an app with these backoff settings.
    pub fn record_failure(&mut self, now: f64, base: f64, factor: f64, max: f64) {
        self.failures = self.failures.saturating_add(1);
        let exponent = i32::try_from(self.failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let delay = (base * factor.powi(exponent)).min(max).max(0.0);
        self.delay_seconds = if delay.is_finite() { delay } else { max };
        self.not_before = now + self.delay_seconds;
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        *self = LaunchBackoff::default();
    }

    /// Seconds left before a launch is allowed at `now` (0 when allowed).
    pub fn time_left(&self, now: f64) -> f64 {
        (self.not_before - now).max(0.0)
    }
}

/// Where an instance is in its life, as far as the daemon knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Stored and sent to the master in an accept; no update yet.
    Staging,
    /// The agent is starting it.
    Starting,
    /// Running (its health, if checked, is in [`Instance::healthy`]).
    Running,
    /// The agent is stopping it.
    Killing,
    /// Its agent cannot be reached; a replacement is launched, and it is killed if it
    /// comes back.
    Unreachable,
}

impl InstanceState {
    /// The Marathon-style name (`TASK_RUNNING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Staging => "TASK_STAGING",
            InstanceState::Starting => "TASK_STARTING",
            InstanceState::Running => "TASK_RUNNING",
            InstanceState::Killing => "TASK_KILLING",
            InstanceState::Unreachable => "TASK_UNREACHABLE",
        }
    }
}

/// Why the daemon asked for an instance to be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillReason {
    /// The app has more instances than it should.
    ScaleDown,
    /// Replaced by an instance of a newer version.
    Upgrade,
    /// Its health check failed too often.
    Unhealthy,
    /// The app is being destroyed.
    Destroy,
    /// Staged for too long without starting.
    LaunchTimeout,
    /// A copy that came back after being replaced.
    Superfluous,
}

impl KillReason {
    /// A short phrase for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::ScaleDown => "scale down",
            KillReason::Upgrade => "replaced by a newer version",
            KillReason::Unhealthy => "failed its health check",
            KillReason::Destroy => "app destroyed",
            KillReason::LaunchTimeout => "did not start in time",
            KillReason::Superfluous => "superfluous after being replaced",
        }
    }
}

/// One running copy of an app (one task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The task id, `<app id with / as _>.<uuid>`.
    pub task_id: String,
    /// The app's path id.
    pub app_id: String,
    /// The app's `config_version` this instance was launched with.
    pub config_version: String,
    /// The agent it runs on.
    pub agent_id: String,
    /// That agent's hostname.
    pub host: String,
    /// Host ports reserved for it.
    pub ports: Vec<u64>,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Health-check result, when the app has checks and one has run.
    pub healthy: Option<bool>,
    /// When it was launched.
    pub staged_at: f64,
    /// When it first ran.
    pub started_at: Option<f64>,
    /// Set once the daemon asked for it to be killed.
    pub kill: Option<KillRequest>,
    /// Last message from the agent or master.
    #[serde(default)]
    pub message: String,
    /// Set when the daemon (re-)subscribed and asked the master for this instance's state,
    /// until the answer comes. The master holds its answer while the instance's agent has not
    /// re-registered after a master restart, so an instance that stays unconfirmed may be
    /// gone: it is not shown as running meanwhile. Not stored: every subscription asks again.
    #[serde(skip)]
    pub unconfirmed_since: Option<f64>,
}

/// A kill the daemon asked for, and when (to resend it if nothing happens).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KillRequest {
    /// Why.
    pub reason: KillReason,
    /// When it was last sent.
    pub sent_at: f64,
}

impl Instance {
    /// Not asked to be killed and not cut off: it counts towards the app's instances.
    pub fn is_live(&self) -> bool {
        self.kill.is_none() && self.state != InstanceState::Unreachable
    }

    /// Running, and healthy when the app checks health.
    pub fn is_ready(&self, has_health_checks: bool) -> bool {
        self.state == InstanceState::Running && (!has_health_checks || self.healthy == Some(true))
    }
}

/// The lifecycle of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentState {
    /// Driving its apps towards their targets.
    Running,
    /// Every app reached its target.
    Succeeded,
    /// Made no progress for longer than the deployment timeout; its apps keep their targets.
    Failed,
    /// Cancelled by the user, or superseded by a newer deployment of the same app.
    Cancelled,
}

impl DeploymentState {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Running => "running",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::Cancelled => "cancelled",
        }
    }

    /// True once the deployment has ended.
    pub fn is_finished(self) -> bool {
        self != DeploymentState::Running
    }
}

/// What a deployment does to one app (Marathon's action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// A new app.
    StartApplication,
    /// Only `instances` changed.
    ScaleApplication,
    /// Instances are replaced by new ones (config change, restart, rollback).
    RestartApplication,
    /// The app is destroyed.
    StopApplication,
}

impl ActionKind {
    /// Marathon's name for the action.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::StartApplication => "StartApplication",
            ActionKind::ScaleApplication => "ScaleApplication",
            ActionKind::RestartApplication => "RestartApplication",
            ActionKind::StopApplication => "StopApplication",
        }
    }
}

/// One app's part of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentAction {
    /// The app.
    pub app_id: String,
    /// What happens to it.
    pub action: ActionKind,
}

/// The app as it was before a deployment, to roll back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousApp {
    /// The app.
    pub app_id: String,
    /// Its stored form before the deployment; `None` when it did not exist.
    pub before: Option<serde_json::Value>,
}

/// A change being rolled out: steps run in order (dependencies first), the actions of a
/// step together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Unique id.
    pub id: String,
    /// The version stamp the change created.
    pub version: String,
    /// Steps in order.
    pub steps: Vec<Vec<DeploymentAction>>,
    /// Index of the step in progress (== `steps.len()` once all are done).
    pub current_step: usize,
    /// Lifecycle state.
    pub state: DeploymentState,
    /// Why it is not progressing (while running) or why it ended (failed, cancelled).
    pub reason: Option<String>,
    /// When it started.
    pub started_at: f64,
    /// When it last made progress.
    pub last_progress_at: f64,
    /// A fingerprint of its apps' progress, to notice progress.
    #[serde(default)]
    pub progress_mark: u64,
    /// When it ended.
    pub finished_at: Option<f64>,
    /// The apps as they were before, for a rollback.
    pub previous: Vec<PreviousApp>,
}

impl Deployment {
    /// Every app the deployment touches.
    pub fn affected_apps(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .flatten()
            .map(|action| action.app_id.as_str())
    }

    /// True when `app_id` is part of this deployment.
    pub fn affects(&self, app_id: &str) -> bool {
        self.affected_apps().any(|affected| affected == app_id)
    }

    /// True when the deployment's current step has not reached `app_id` yet, so the app must
    /// wait (its dependencies go first).
    pub fn holds_back(&self, app_id: &str) -> bool {
        self.state == DeploymentState::Running
            && self.steps.iter().enumerate().any(|(index, step)| {
                index > self.current_step && step.iter().any(|action| action.app_id == app_id)
            })
    }
}
