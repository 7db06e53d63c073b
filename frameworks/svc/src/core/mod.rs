//! The sans-IO heart of svcframework: apps, instances and deployments as plain state.
//!
//! API requests, offers, status updates and clock ticks go in (each call takes `now`, seconds
//! since the epoch); [`Command`]s come out through [`SvcCore::take_commands`]. A command batch
//! always starts with the store writes of that batch, so the shell persists an instance
//! before it asks the master to launch it. No sockets, no clock, no global RNG in here.
//!
//! Where each concept lives:
//! - `model`: the stored types, typed ids ([`AppId`]; tasks and agents use `agora_proto`'s)
//!   and the checked lifecycles ([`Instance::observe`], [`Deployment::succeed`] / `fail` /
//!   `cancel`, returning [`IllegalInstanceTransition`] / [`IllegalDeploymentTransition`]).
//! - `instances`: the [`InstanceBook`], every instance indexed by app, task and agent.
//! - `deployments`: the [`DeploymentBook`] and how running deployments advance and end.
//! - `plan`: the pure steps, [`plan_app`] (what to place and stop) and `plan_deployment`
//!   (how far a deployment's steps advance).
//! - `drive`: applies the plans after a change or a tick.
//! - `expiry`: kills, their retries, and launch timeouts.
//! - `offers`: placing wanted instances on offers, and reviving / suppressing offers.
//! - `updates`: status updates, lost agents and failed launches.
//! - `api` and `views`: the Marathon API's changes and reads.

mod api;
mod deployments;
mod drive;
mod expiry;
mod instances;
mod model;
mod offers;
mod plan;
pub mod time;
mod updates;
mod views;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_proto::{AgentId, Resources, TaskId};
use agora_sdk::scheduling::AgentAttributes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::app::{AppDefinition, PathId};

pub use api::{ApiError, DeploymentRef};
pub use deployments::DeploymentBook;
pub use instances::InstanceBook;
pub use model::{
    ActionKind, AppId, AppState, Deployment, DeploymentAction, DeploymentId, DeploymentState,
    IllegalDeploymentTransition, IllegalInstanceTransition, Instance, InstanceState,
    InstanceTransition, KillReason, KillRequest, LaunchBackoff, PreviousApp, StoredApp,
};
pub use plan::{AppPlan, plan_app};
pub use views::CoreMetrics;

/// Tunables of the core; the daemon's flags set them.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// A running deployment that makes no progress for this long fails (seconds).
    pub deployment_timeout: f64,
    /// An instance still staging after this long is killed and replaced (seconds).
    pub launch_timeout: f64,
    /// A kill with no answer is sent again after this long (seconds).
    pub kill_retry: f64,
    /// How long declined offers stay away while nothing waits (seconds).
    pub idle_refuse_seconds: f64,
    /// How long declined offers stay away while instances wait but did not fit (seconds).
    pub waiting_refuse_seconds: f64,
    /// Finished deployments kept for `status` and the API.
    pub finished_deployments_kept: usize,
    /// Seed of the id and placement RNG.
    pub seed: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            deployment_timeout: 600.0,
            launch_timeout: 300.0,
            kill_retry: 30.0,
            idle_refuse_seconds: 30.0,
            waiting_refuse_seconds: 1.0,
            finished_deployments_kept: 50,
            seed: 0,
        }
    }
}

/// One write to the daemon's store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// The framework id the master assigned.
    FrameworkId(String),
    /// Create or replace an app.
    PutApp {
        /// Path id.
        app_id: String,
        /// Stored form.
        app: StoredApp,
    },
    /// Forget an app and all its versions.
    DeleteApp {
        /// Path id.
        app_id: String,
    },
    /// Remember one version of an app's definition.
    PutVersion {
        /// Path id.
        app_id: String,
        /// Version stamp.
        version: String,
        /// The definition's JSON.
        definition: Value,
    },
    /// Create or replace an instance.
    PutInstance(Instance),
    /// Forget an instance.
    DeleteInstance {
        /// Its task id.
        task_id: TaskId,
    },
    /// Create or replace a deployment.
    PutDeployment(Deployment),
    /// Forget a deployment.
    DeleteDeployment {
        /// Its id.
        id: String,
    },
}

/// Something the runtime must do, in order: the SDK's command vocabulary with svc's store
/// writes and `/v2/events` events.
pub type Command = agora_sdk::Command<StoreWrite, SvcEvent>;

/// An event for `/v2/events` subscribers, Marathon-style.
#[derive(Debug, Clone, PartialEq)]
pub struct SvcEvent {
    /// Marathon's `eventType`, e.g. `deployment_success`.
    pub event_type: &'static str,
    /// The event body (includes `eventType` and `timestamp`).
    pub payload: Value,
}

/// Everything loaded from the store at start.
#[derive(Debug, Clone, Default)]
pub struct RecoveredState {
    /// The stored framework id, if the daemon ever subscribed.
    pub framework_id: Option<String>,
    /// Apps by path id.
    pub apps: Vec<(String, StoredApp)>,
    /// (app id, version, definition JSON).
    pub versions: Vec<(String, String, Value)>,
    /// Instances.
    pub instances: Vec<Instance>,
    /// Deployments.
    pub deployments: Vec<Deployment>,
}

/// Why stored state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A stored app definition no longer parses.
    #[error("stored app {app_id} is not a valid app definition: {reason}")]
    InvalidApp {
        /// The app.
        app_id: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the daemon knows of an agent from its offers.
#[derive(Debug, Clone)]
struct KnownAgent {
    attributes: AgentAttributes,
    /// Best estimate of the agent's size: the largest (offered + ours) seen.
    total: Resources,
}

/// The daemon's state and decisions.
#[derive(Debug)]
pub struct SvcCore {
    config: CoreConfig,
    framework_id: Option<String>,
    subscribed: bool,
    /// Whether this process has subscribed before (a later subscription is a reconnect).
    subscribed_before: bool,
    apps: BTreeMap<AppId, AppState>,
    /// App id -> version -> definition JSON.
    versions: BTreeMap<AppId, BTreeMap<String, Value>>,
    /// Every instance, by app, task and agent.
    instances: InstanceBook,
    /// Apps that could launch when last driven (decides revive and suppress).
    wanting: BTreeSet<AppId>,
    deployments: DeploymentBook,
    agents: HashMap<AgentId, KnownAgent>,
    suppressed: bool,
    last_offers_at: Option<f64>,
    last_version: String,
    rng: StdRng,
    writes: Vec<StoreWrite>,
    outbox: Vec<Command>,
    counters: views::Counters,
}

impl SvcCore {
    /// An empty core.
    pub fn new(config: CoreConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        SvcCore {
            config,
            framework_id: None,
            subscribed: false,
            subscribed_before: false,
            apps: BTreeMap::new(),
            versions: BTreeMap::new(),
            instances: InstanceBook::default(),
            wanting: BTreeSet::new(),
            deployments: DeploymentBook::default(),
            agents: HashMap::new(),
            suppressed: false,
            last_offers_at: None,
            last_version: String::new(),
            rng,
            writes: Vec::new(),
            outbox: Vec::new(),
            counters: views::Counters::default(),
        }
    }

    /// A core holding what the store had.
    pub fn recover(config: CoreConfig, state: RecoveredState) -> Result<Self, RecoveryError> {
        let mut core = SvcCore::new(config);
        core.framework_id = state.framework_id;
        for (app_id, stored) in state.apps {
            let parsed = AppDefinition::from_json_value(&stored.definition).map_err(|errors| {
                RecoveryError::InvalidApp {
                    app_id: app_id.clone(),
                    reason: errors.to_string(),
                }
            })?;
            if stored.version > core.last_version {
                core.last_version = stored.version.clone();
            }
            core.apps.insert(
                AppId::new(app_id),
                AppState {
                    definition: parsed.app,
                    version: stored.version,
                    config_version: stored.config_version,
                    deleting: stored.deleting,
                    backoff: stored.backoff,
                    waiting_reason: None,
                    waiting_since: None,
                    last_failure: None,
                },
            );
        }
        for (app_id, version, definition) in state.versions {
            core.versions
                .entry(AppId::new(app_id))
                .or_default()
                .insert(version, definition);
        }
        for instance in state.instances {
            core.instances.insert(instance);
        }
        for deployment in state.deployments {
            core.deployments.insert(deployment);
        }
        Ok(core)
    }

    /// The framework id the master gave, once known.
    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// Commands produced since the last call: store writes first, then the rest in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        let mut commands = Vec::with_capacity(self.outbox.len() + 1);
        if !self.writes.is_empty() {
            commands.push(Command::Persist(std::mem::take(&mut self.writes)));
        }
        commands.append(&mut self.outbox);
        commands
    }

    /// The driver subscribed (first time or again): remember the id, then ask the master
    /// for the state of every instance we know, and of every task it has for us, so
    /// instances that ended while we were away are replaced and strays are killed.
    pub fn on_subscribed(&mut self, framework_id: &str, now: f64) {
        if self.framework_id.as_deref() != Some(framework_id) {
            self.framework_id = Some(framework_id.to_owned());
            self.writes
                .push(StoreWrite::FrameworkId(framework_id.to_owned()));
        }
        self.subscribed = true;
        // Every instance is unconfirmed until the master answers for it (it holds the answer
        // while the instance's agent has not re-registered after a master restart), and
        // every kill that was asked for goes out again now, not at its next retry: one sent
        // while the subscription was down went nowhere.
        let mut kills = Vec::new();
        for instance in self.instances.iter_mut() {
            instance.unconfirmed_since = Some(now);
            if let Some(request) = instance.kill.as_mut() {
                request.sent_at = now;
                kills.push(Command::Kill {
                    task_id: instance.task_id.clone(),
                    agent_id: instance.agent_id.clone(),
                });
            }
        }
        self.outbox.extend(kills);
        // Every known instance, explicitly (the framework runtime sends the list a chunk per
        // tick, so 100,000 answers do not overflow the master's buffer for our stream).
        let known: Vec<(TaskId, AgentId)> = self
            .instances
            .iter()
            .map(|instance| (instance.task_id.clone(), instance.agent_id.clone()))
            .collect();
        if !known.is_empty() {
            self.outbox.push(Command::Reconcile(known));
        }
        // Strays (tasks the master runs for us that we do not know) are announced by the
        // master when it adopts them from a re-registering agent, also while we are away; an
        // implicit reconciliation is only needed once per process (for what an earlier process
        // may have left), and on every reconnect it would flood the stream with answers for
        // every task the master has.
        if !self.subscribed_before {
            self.outbox.push(Command::Reconcile(Vec::new()));
        }
        self.subscribed_before = true;
        // After a (re-)subscription the master has no filters or suppression of ours that we
        // can rely on: start from "offers wanted" and suppress again once idle.
        self.suppressed = false;
        self.outbox.push(Command::Revive);
        self.drive(now);
    }

    /// The subscription ended; the driver reconnects by itself.
    pub fn on_disconnected(&mut self) {
        self.subscribed = false;
    }

    /// Periodic work: backoffs ending, kill retries, launch timeouts, deployment timeouts.
    pub fn tick(&mut self, now: f64) {
        self.drive(now);
    }

    fn next_version(&mut self, now: f64) -> String {
        let mut stamp = now;
        loop {
            let candidate = time::rfc3339_millis(stamp);
            if candidate > self.last_version {
                self.last_version = candidate.clone();
                return candidate;
            }
            stamp += 0.001;
        }
    }

    fn new_task_id(&mut self, app_id: &str) -> String {
        let name = task_name(app_id);
        let uuid = uuid::Uuid::from_u128(self.rng.random::<u128>() & !(0xF << 76) | (0x4 << 76));
        format!("{name}.{}", uuid.simple())
    }

    fn new_deployment_id(&mut self) -> DeploymentId {
        let uuid = uuid::Uuid::from_u128(self.rng.random::<u128>() & !(0xF << 76) | (0x4 << 76));
        DeploymentId::new(uuid.to_string())
    }

    fn emit(
        &mut self,
        event_type: &'static str,
        now: f64,
        mut payload: serde_json::Map<String, Value>,
    ) {
        payload.insert("eventType".into(), Value::from(event_type));
        payload.insert("timestamp".into(), Value::from(time::rfc3339_millis(now)));
        self.outbox.push(Command::Publish(SvcEvent {
            event_type,
            payload: Value::Object(payload),
        }));
    }

    fn persist_app(&mut self, app_id: &str) {
        if let Some(app) = self.apps.get(app_id) {
            let stored = StoredApp {
                definition: app.definition.to_json(),
                version: app.version.clone(),
                config_version: app.config_version.clone(),
                deleting: app.deleting,
                backoff: app.backoff.clone(),
            };
            self.writes.push(StoreWrite::PutApp {
                app_id: app_id.to_owned(),
                app: stored,
            });
        }
    }

    fn persist_instance(&mut self, task_id: &str) {
        if let Some(instance) = self.instances.get(task_id) {
            let write = StoreWrite::PutInstance(instance.clone());
            self.writes.push(write);
        }
    }

    fn persist_deployment(&mut self, id: &str) {
        if let Some(deployment) = self.deployments.get(id) {
            self.writes
                .push(StoreWrite::PutDeployment(deployment.clone()));
        }
    }

    fn rng_seed(&mut self) -> u64 {
        self.rng.random()
    }
}

/// The task-name form of an app id: `/prod/web` -> `prod_web`.
pub fn task_name(app_id: &str) -> String {
    app_id.trim_start_matches('/').replace('/', "_")
}

/// Parses a path id the API got (with or without the leading slash).
pub fn parse_app_id(text: &str) -> Result<PathId, ApiError> {
    PathId::parse(&format!("/{}", text.trim_start_matches('/'))).map_err(|error| {
        ApiError::InvalidId {
            id: text.to_owned(),
            reason: error.to_string(),
        }
    })
}
