//! What svcframework remembers: apps, their instances and deployments. Every type here is
//! stored as JSON in the daemon's embedded store and survives a restart.

use std::fmt;
use std::time::Duration;

use agora_proto::v1::TaskState;
use agora_proto::{AgentId, Backoff, TaskId, TaskPhase};
use serde::{Deserialize, Serialize};

use crate::app::AppDefinition;

/// A string id with its own type, so an app id is never passed where a deployment id is
/// expected. Stored as a plain string.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id.
            pub fn new(id: impl Into<String>) -> Self {
                $name(id.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// An app's path id as the core keys its apps and instances by (`/prod/web`, the form of
    /// [`crate::app::PathId`] once validated).
    AppId
);

string_id!(
    /// A deployment's id (a UUID).
    DeploymentId
);

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
        let seconds = |value: f64| Duration::try_from_secs_f64(value.max(0.0)).ok();
        let backoff = Backoff::new(
            seconds(base).unwrap_or(Duration::ZERO),
            seconds(max).unwrap_or(Duration::ZERO),
        )
        .with_factor(factor);
        self.delay_seconds = backoff.delay(self.failures - 1).as_secs_f64();
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
    /// The task id, `<app id with / as _>.<uuid>`: the instance's id.
    pub task_id: TaskId,
    /// The app's path id.
    pub app_id: AppId,
    /// The app's `config_version` this instance was launched with.
    pub config_version: String,
    /// The agent it runs on.
    pub agent_id: AgentId,
    /// That agent's hostname.
    pub host: String,
    /// Host ports reserved for it.
    pub ports: Vec<u64>,
    /// Lifecycle state: private, so that it changes only through [`Instance::observe`].
    state: InstanceState,
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

/// A reported task state an instance cannot move to from where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("instance cannot go from {} to {}", from.as_str(), to.as_str_name())]
pub struct IllegalInstanceTransition {
    /// The state the instance is in.
    pub from: InstanceState,
    /// The state reported.
    pub to: TaskState,
}

/// What a reported task state did to an instance ([`Instance::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceTransition {
    /// Still alive, now in `to` (possibly the state it was in: updates repeat).
    Moved {
        /// The state before.
        from: InstanceState,
        /// The state now.
        to: InstanceState,
    },
    /// The master does not know the task (`TASK_UNKNOWN`, a reconciliation answer): nothing
    /// about its state is learnt, it stays in `state`.
    Unknown {
        /// The state it stays in.
        state: InstanceState,
    },
    /// A terminal state: the instance is over and its owner forgets it.
    Ended {
        /// The state before.
        from: InstanceState,
        /// The terminal state reported.
        reported: TaskState,
    },
}

impl InstanceState {
    /// The task phase of an instance in this state.
    pub fn phase(self) -> TaskPhase {
        match self {
            InstanceState::Staging => TaskPhase::Staging,
            InstanceState::Starting => TaskPhase::Starting,
            InstanceState::Running => TaskPhase::Running,
            InstanceState::Killing => TaskPhase::Killing,
            InstanceState::Unreachable => TaskPhase::Unreachable,
        }
    }

    /// The state an instance is in after `reported`, from `self`: the cluster's one task
    /// state machine ([`TaskPhase::receive`]), so an instance moves as its task does (never
    /// back, a repeat changes nothing, an unreachable instance may come back in any state,
    /// a terminal state ends it from anywhere), plus `TASK_UNKNOWN`, the master's answer for
    /// a task it does not know, which teaches nothing about the instance.
    pub fn after(
        self,
        reported: TaskState,
    ) -> Result<InstanceTransition, IllegalInstanceTransition> {
        if reported == TaskState::TaskUnknown {
            return Ok(InstanceTransition::Unknown { state: self });
        }
        let next = self
            .phase()
            .receive(reported)
            .map_err(|_| IllegalInstanceTransition {
                from: self,
                to: reported,
            })?;
        let to = match next {
            TaskPhase::Staging => InstanceState::Staging,
            TaskPhase::Starting => InstanceState::Starting,
            TaskPhase::Running => InstanceState::Running,
            TaskPhase::Killing => InstanceState::Killing,
            TaskPhase::Unreachable => InstanceState::Unreachable,
            TaskPhase::Terminal(reported) => {
                return Ok(InstanceTransition::Ended {
                    from: self,
                    reported,
                });
            }
        };
        Ok(InstanceTransition::Moved { from: self, to })
    }
}

impl Instance {
    /// A new instance, staging: stored and about to be sent to the master in an accept.
    pub fn staging(
        task_id: TaskId,
        app_id: AppId,
        config_version: String,
        agent_id: AgentId,
        host: String,
        ports: Vec<u64>,
        staged_at: f64,
    ) -> Self {
        Instance {
            task_id,
            app_id,
            config_version,
            agent_id,
            host,
            ports,
            state: InstanceState::Staging,
            healthy: None,
            staged_at,
            started_at: None,
            kill: None,
            message: String::new(),
            unconfirmed_since: None,
        }
    }

    /// Where it is in its life.
    pub fn state(&self) -> InstanceState {
        self.state
    }

    /// Applies a reported task state to the instance's state (not to its other fields),
    /// checked by [`InstanceState::after`]; an illegal report changes nothing. On
    /// [`InstanceTransition::Ended`] the instance keeps its last live state: its owner
    /// forgets it.
    pub fn observe(
        &mut self,
        reported: TaskState,
    ) -> Result<InstanceTransition, IllegalInstanceTransition> {
        let transition = self.state.after(reported)?;
        if let InstanceTransition::Moved { to, .. } = transition {
            self.state = to;
        }
        Ok(transition)
    }

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

/// A deployment change its lifecycle does not allow: only a running deployment ends, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deployment cannot go from {} to {}", from.as_str(), to.as_str())]
pub struct IllegalDeploymentTransition {
    /// The state it is in.
    pub from: DeploymentState,
    /// The state asked for.
    pub to: DeploymentState,
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
    pub id: DeploymentId,
    /// The version stamp the change created.
    pub version: String,
    /// Steps in order.
    pub steps: Vec<Vec<DeploymentAction>>,
    /// Index of the step in progress (== `steps.len()` once all are done).
    pub current_step: usize,
    /// Lifecycle state: private, so that it changes only through [`Deployment::succeed`],
    /// [`Deployment::fail`] and [`Deployment::cancel`].
    state: DeploymentState,
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
    /// A deployment starting at `now` with these steps (dependencies first).
    pub fn start(
        id: DeploymentId,
        version: String,
        steps: Vec<Vec<DeploymentAction>>,
        previous: Vec<PreviousApp>,
        now: f64,
    ) -> Self {
        Deployment {
            id,
            version,
            steps,
            current_step: 0,
            state: DeploymentState::Running,
            reason: None,
            started_at: now,
            last_progress_at: now,
            progress_mark: 0,
            finished_at: None,
            previous,
        }
    }

    /// Where it is in its lifecycle.
    pub fn state(&self) -> DeploymentState {
        self.state
    }

    /// True until it ends.
    pub fn is_running(&self) -> bool {
        self.state == DeploymentState::Running
    }

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

    /// Every step is done: `Running` -> `Succeeded`.
    pub fn succeed(&mut self, now: f64) -> Result<(), IllegalDeploymentTransition> {
        self.end(DeploymentState::Succeeded, None, now)
    }

    /// No progress for too long: `Running` -> `Failed`, its apps keep their targets.
    pub fn fail(&mut self, reason: String, now: f64) -> Result<(), IllegalDeploymentTransition> {
        self.end(DeploymentState::Failed, Some(reason), now)
    }

    /// Cancelled by the user or superseded: `Running` -> `Cancelled`.
    pub fn cancel(&mut self, reason: String, now: f64) -> Result<(), IllegalDeploymentTransition> {
        self.end(DeploymentState::Cancelled, Some(reason), now)
    }

    /// The one way a deployment ends; an illegal end changes nothing.
    fn end(
        &mut self,
        to: DeploymentState,
        reason: Option<String>,
        now: f64,
    ) -> Result<(), IllegalDeploymentTransition> {
        if self.state != DeploymentState::Running || to == DeploymentState::Running {
            return Err(IllegalDeploymentTransition {
                from: self.state,
                to,
            });
        }
        self.state = to;
        self.reason = reason;
        self.finished_at = Some(now);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(state: InstanceState) -> Instance {
        Instance {
            task_id: TaskId::new("web.1"),
            app_id: AppId::new("/web"),
            config_version: "v1".to_owned(),
            agent_id: AgentId::new("agent-1"),
            host: "host-1".to_owned(),
            ports: Vec::new(),
            state,
            healthy: None,
            staged_at: 0.0,
            started_at: None,
            kill: None,
            message: String::new(),
            unconfirmed_since: None,
        }
    }

    fn deployment() -> Deployment {
        Deployment::start(
            DeploymentId::new("d-1"),
            "v1".to_owned(),
            Vec::new(),
            Vec::new(),
            0.0,
        )
    }

    #[test]
    fn an_instance_moves_forward_through_its_life() {
        let mut web = instance(InstanceState::Staging);
        for (reported, expected) in [
            (TaskState::TaskStaging, InstanceState::Staging),
            (TaskState::TaskStarting, InstanceState::Starting),
            (TaskState::TaskRunning, InstanceState::Running),
            (TaskState::TaskRunning, InstanceState::Running),
            (TaskState::TaskUnreachable, InstanceState::Unreachable),
            (TaskState::TaskRunning, InstanceState::Running),
            (TaskState::TaskKilling, InstanceState::Killing),
        ] {
            let from = web.state;
            assert_eq!(
                web.observe(reported),
                Ok(InstanceTransition::Moved { from, to: expected })
            );
            assert_eq!(web.state, expected);
        }
    }

    #[test]
    fn an_instance_never_goes_back_in_its_life() {
        for (from, reported) in [
            (InstanceState::Starting, TaskState::TaskStaging),
            (InstanceState::Running, TaskState::TaskStaging),
            (InstanceState::Running, TaskState::TaskStarting),
            (InstanceState::Killing, TaskState::TaskRunning),
            (InstanceState::Killing, TaskState::TaskStarting),
            (InstanceState::Running, TaskState::Unspecified),
        ] {
            let mut web = instance(from);
            assert_eq!(
                web.observe(reported),
                Err(IllegalInstanceTransition { from, to: reported })
            );
            assert_eq!(web.state, from, "an illegal update changes nothing");
        }
    }

    #[test]
    fn an_unreachable_instance_may_come_back_in_any_state() {
        for reported in [
            TaskState::TaskStaging,
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskKilling,
        ] {
            let mut web = instance(InstanceState::Unreachable);
            assert!(matches!(
                web.observe(reported),
                Ok(InstanceTransition::Moved { .. })
            ));
        }
    }

    #[test]
    fn terminal_and_unknown_reports_leave_the_state_to_the_owner() {
        let mut web = instance(InstanceState::Running);
        assert_eq!(
            web.observe(TaskState::TaskUnknown),
            Ok(InstanceTransition::Unknown {
                state: InstanceState::Running
            })
        );
        assert_eq!(
            web.observe(TaskState::TaskFailed),
            Ok(InstanceTransition::Ended {
                from: InstanceState::Running,
                reported: TaskState::TaskFailed
            })
        );
        assert_eq!(web.state, InstanceState::Running);
    }

    #[test]
    fn a_deployment_ends_once() {
        let mut succeeded = deployment();
        assert_eq!(succeeded.succeed(5.0), Ok(()));
        assert_eq!(succeeded.state(), DeploymentState::Succeeded);
        assert_eq!(succeeded.finished_at, Some(5.0));
        assert_eq!(
            succeeded.cancel("late".to_owned(), 6.0),
            Err(IllegalDeploymentTransition {
                from: DeploymentState::Succeeded,
                to: DeploymentState::Cancelled
            })
        );
        assert_eq!(
            succeeded.finished_at,
            Some(5.0),
            "an illegal end changes nothing"
        );
        assert_eq!(succeeded.reason, None);

        let mut failed = deployment();
        assert_eq!(failed.fail("stuck".to_owned(), 7.0), Ok(()));
        assert_eq!(failed.state(), DeploymentState::Failed);
        assert_eq!(failed.reason.as_deref(), Some("stuck"));
        assert!(failed.succeed(8.0).is_err());
        assert_eq!(failed.state(), DeploymentState::Failed);

        let mut cancelled = deployment();
        assert_eq!(cancelled.cancel("superseded".to_owned(), 9.0), Ok(()));
        assert_eq!(cancelled.state(), DeploymentState::Cancelled);
        assert!(cancelled.fail("late".to_owned(), 10.0).is_err());
        assert_eq!(cancelled.reason.as_deref(), Some("superseded"));
    }
}
