//! What the REST API can ask of the core. Every operation checks everything first and
//! changes nothing when it refuses.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, json};

use super::deployments::deployment_payload;
use super::model::{
    ActionKind, AppState, Deployment, DeploymentAction, LaunchBackoff, PreviousApp, StoredApp,
};
use super::offers::app_constraints;
use super::{AppId, DeploymentId, StoreWrite, SvcCore};
use crate::app::{AppDefinition, PathId, ValidationErrors};

/// Why the core refused an API request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// A path id that does not parse.
    #[error("{id:?} is not a valid app id: {reason}")]
    InvalidId {
        /// What was given.
        id: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The definition breaks rules that need the cluster's state (constraints, dependencies).
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// No such app.
    #[error("app {0} does not exist")]
    AppNotFound(String),
    /// `POST /v2/apps` for an id that exists.
    #[error("app {0} already exists")]
    AppExists(String),
    /// A running deployment owns the app; `force` cancels it.
    #[error("app {app_id} is locked by deployment(s) {}; retry with force=true to override", deployments.join(", "))]
    Locked {
        /// The app.
        app_id: String,
        /// The deployments that hold it.
        deployments: Vec<String>,
    },
    /// No such deployment (or it has already ended).
    #[error("deployment {0} does not exist or is not running")]
    DeploymentNotFound(String),
    /// No such stored version.
    #[error("app {app_id} has no version {version}")]
    VersionNotFound {
        /// The app.
        app_id: String,
        /// The version asked for.
        version: String,
    },
    /// Rollback without an earlier version.
    #[error("app {0} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// The app is being destroyed.
    #[error("app {0} is being destroyed")]
    BeingDestroyed(String),
}

/// The answer to a change: the deployment that carries it out and the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef {
    /// Deployment id.
    pub deployment_id: String,
    /// Version stamp of the change.
    pub version: String,
}

/// One app's change in a deployment.
#[derive(Debug, Clone)]
enum Change {
    /// Make the app look like this. `restart` forces new instances even without a config
    /// change.
    Define {
        definition: Box<AppDefinition>,
        restart: bool,
    },
    /// Destroy the app.
    Destroy { app_id: String },
}

impl Change {
    fn app_id(&self) -> String {
        match self {
            Change::Define { definition, .. } => definition.id.as_str().to_owned(),
            Change::Destroy { app_id } => app_id.clone(),
        }
    }
}

impl SvcCore {
    /// `POST /v2/apps`: creates an app; refuses an existing id.
    pub fn create_app(
        &mut self,
        definition: AppDefinition,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        let app_id = definition.id.as_str().to_owned();
        if self.apps.contains_key(app_id.as_str()) {
            return Err(ApiError::AppExists(app_id));
        }
        self.check_definitions(std::slice::from_ref(&definition))?;
        self.deploy(
            vec![Change::Define {
                definition: Box::new(definition),
                restart: false,
            }],
            false,
            now,
        )
    }

    /// `PUT /v2/apps/{id}`: creates or updates an app.
    pub fn put_app(
        &mut self,
        definition: AppDefinition,
        force: bool,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        self.check_definitions(std::slice::from_ref(&definition))?;
        self.deploy(
            vec![Change::Define {
                definition: Box::new(definition),
                restart: false,
            }],
            force,
            now,
        )
    }

    /// `POST /v2/groups`: creates or updates several apps in one deployment, dependencies
    /// first.
    pub fn put_apps(
        &mut self,
        definitions: Vec<AppDefinition>,
        force: bool,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        self.check_definitions(&definitions)?;
        let changes = definitions
            .into_iter()
            .map(|definition| Change::Define {
                definition: Box::new(definition),
                restart: false,
            })
            .collect();
        self.deploy(changes, force, now)
    }

    /// `POST /v2/apps/{id}/restart`: replaces every instance without a config change.
    pub fn restart_app(
        &mut self,
        app_id: &PathId,
        force: bool,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        let app = self.existing_app(app_id)?;
        let definition = app.definition.clone();
        self.deploy(
            vec![Change::Define {
                definition: Box::new(definition),
                restart: true,
            }],
            force,
            now,
        )
    }

    /// Rolls an app back to a stored version (default: the one before the current).
    pub fn rollback_app(
        &mut self,
        app_id: &PathId,
        to_version: Option<&str>,
        force: bool,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        let app = self.existing_app(app_id)?;
        let current = app.version.clone();
        let versions = self.versions.get(app_id.as_str());
        let chosen = match to_version {
            Some(version) => versions
                .and_then(|versions| versions.get(version))
                .ok_or_else(|| ApiError::VersionNotFound {
                    app_id: app_id.as_str().to_owned(),
                    version: version.to_owned(),
                })?,
            None => versions
                .and_then(|versions| versions.range(..current).next_back())
                .map(|(_, definition)| definition)
                .ok_or_else(|| ApiError::NoEarlierVersion(app_id.as_str().to_owned()))?,
        };
        let parsed = AppDefinition::from_json_value(chosen).map_err(ApiError::Invalid)?;
        self.deploy(
            vec![Change::Define {
                definition: Box::new(parsed.app),
                restart: false,
            }],
            force,
            now,
        )
    }

    /// `DELETE /v2/apps/{id}`: kills every instance, then forgets the app.
    pub fn destroy_app(
        &mut self,
        app_id: &PathId,
        force: bool,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        self.existing_app(app_id)?;
        self.deploy(
            vec![Change::Destroy {
                app_id: app_id.as_str().to_owned(),
            }],
            force,
            now,
        )
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stops the deployment where it is;
    /// without, stops it and starts a new deployment that restores its apps as they were.
    pub fn cancel_deployment(
        &mut self,
        id: &str,
        force: bool,
        now: f64,
    ) -> Result<Option<DeploymentRef>, ApiError> {
        let Some(deployment) = self
            .deployments
            .get(id)
            .filter(|deployment| deployment.is_running())
            .cloned()
        else {
            return Err(ApiError::DeploymentNotFound(id.to_owned()));
        };
        if force {
            self.end_deployment(id, "cancelled by the user", now);
            self.drive(now);
            return Ok(None);
        }
        let mut changes = Vec::new();
        for previous in &deployment.previous {
            match &previous.before {
                None => {
                    if self.apps.contains_key(previous.app_id.as_str()) {
                        changes.push(Change::Destroy {
                            app_id: previous.app_id.clone(),
                        });
                    }
                }
                Some(stored) => {
                    let stored: StoredApp =
                        serde_json::from_value(stored.clone()).map_err(|error| {
                            let mut errors = ValidationErrors::default();
                            errors.push(
                                "/",
                                format!("stored app {} is unreadable: {error}", previous.app_id),
                            );
                            ApiError::Invalid(errors)
                        })?;
                    let parsed = AppDefinition::from_json_value(&stored.definition)
                        .map_err(ApiError::Invalid)?;
                    changes.push(Change::Define {
                        definition: Box::new(parsed.app),
                        restart: false,
                    });
                }
            }
        }
        self.end_deployment(id, "rolled back", now);
        let rollback = self.deploy(changes, true, now)?;
        if let Some(cancelled) = self.deployments.get_mut(id) {
            cancelled.reason = Some(format!(
                "rolled back by deployment {}",
                rollback.deployment_id
            ));
        }
        self.persist_deployment(id);
        Ok(Some(rollback))
    }

    fn existing_app(&self, app_id: &PathId) -> Result<&AppState, ApiError> {
        self.apps
            .get(app_id.as_str())
            .ok_or_else(|| ApiError::AppNotFound(app_id.as_str().to_owned()))
    }

    /// Checks what only the core can: constraints parse, dependencies exist (here or in the
    /// same request) and have no cycle, apps are not being destroyed.
    fn check_definitions(&self, definitions: &[AppDefinition]) -> Result<(), ApiError> {
        let mut errors = ValidationErrors::default();
        let in_request: BTreeSet<&str> = definitions
            .iter()
            .map(|definition| definition.id.as_str())
            .collect();
        for definition in definitions {
            let app_id = definition.id.as_str();
            if self.apps.get(app_id).is_some_and(|app| app.deleting) {
                return Err(ApiError::BeingDestroyed(app_id.to_owned()));
            }
            if let Err((index, reason)) = app_constraints(definition) {
                errors.push(format!("/constraints/{index}"), reason);
            }
            for (index, dependency) in definition.dependencies.iter().enumerate() {
                let known = in_request.contains(dependency.as_str())
                    || self
                        .apps
                        .get(dependency.as_str())
                        .is_some_and(|app| !app.deleting);
                if dependency.as_str() == app_id {
                    errors.push(
                        format!("/dependencies/{index}"),
                        "an app cannot depend on itself",
                    );
                } else if !known {
                    errors.push(
                        format!("/dependencies/{index}"),
                        format!("app {dependency} does not exist"),
                    );
                }
            }
        }
        if errors.is_empty() && dependency_steps(definitions).is_none() {
            errors.push("/dependencies", "dependencies form a cycle");
        }
        errors.into_result().map_err(ApiError::Invalid)
    }

    /// Refuses when a running deployment holds an app (unless `force`), then applies every
    /// change and records one deployment for all of them.
    fn deploy(
        &mut self,
        changes: Vec<Change>,
        force: bool,
        now: f64,
    ) -> Result<DeploymentRef, ApiError> {
        let affected: Vec<String> = changes.iter().map(Change::app_id).collect();
        let mut locking: BTreeSet<DeploymentId> = BTreeSet::new();
        for app_id in &affected {
            let holders: Vec<DeploymentId> = self
                .deployments
                .running_affecting(app_id)
                .map(|deployment| deployment.id.clone())
                .collect();
            if !holders.is_empty() && !force {
                return Err(ApiError::Locked {
                    app_id: app_id.clone(),
                    deployments: holders.iter().map(ToString::to_string).collect(),
                });
            }
            locking.extend(holders);
        }

        let version = self.next_version(now);
        let deployment_id = self.new_deployment_id();
        for holder in &locking {
            self.end_deployment(
                holder,
                &format!("superseded by deployment {deployment_id}"),
                now,
            );
        }

        let definitions: Vec<AppDefinition> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Define { definition, .. } => Some((**definition).clone()),
                Change::Destroy { .. } => None,
            })
            .collect();
        let steps_by_id = dependency_steps(&definitions).unwrap_or_default();

        let mut previous = Vec::new();
        let mut steps: BTreeMap<usize, Vec<DeploymentAction>> = BTreeMap::new();
        for change in changes {
            let app_id = change.app_id();
            previous.push(PreviousApp {
                app_id: app_id.clone(),
                before: self.stored_app(&app_id),
            });
            let (action, step) = match change {
                Change::Destroy { .. } => {
                    if let Some(app) = self.apps.get_mut(app_id.as_str()) {
                        app.deleting = true;
                        app.version = version.clone();
                    }
                    (ActionKind::StopApplication, 0)
                }
                Change::Define {
                    definition,
                    restart,
                } => {
                    let step = steps_by_id.get(&app_id).copied().unwrap_or(0);
                    (self.define_app(*definition, restart, &version), step)
                }
            };
            self.persist_app(&app_id);
            steps
                .entry(step)
                .or_default()
                .push(DeploymentAction { app_id, action });
        }

        let deployment = Deployment::start(
            deployment_id.clone(),
            version.clone(),
            steps.into_values().collect(),
            previous,
            now,
        );
        tracing::info!(deployment_id = deployment_id.as_str(), apps = ?affected, version, "deployment started");
        let payload = deployment_payload(&deployment);
        self.deployments.insert(deployment);
        self.persist_deployment(&deployment_id);
        self.emit("deployment_info", now, payload);
        self.drive(now);
        Ok(DeploymentRef {
            deployment_id: deployment_id.to_string(),
            version,
        })
    }

    /// Installs a definition as the app's target; returns the deployment action.
    fn define_app(
        &mut self,
        mut definition: AppDefinition,
        restart: bool,
        version: &str,
    ) -> ActionKind {
        let app_id = definition.id.as_str().to_owned();
        definition.version = Some(version.to_owned());
        self.versions
            .entry(AppId::new(app_id.clone()))
            .or_default()
            .insert(version.to_owned(), definition.to_json());
        self.writes.push(StoreWrite::PutVersion {
            app_id: app_id.clone(),
            version: version.to_owned(),
            definition: definition.to_json(),
        });
        let reusable = (!restart)
            .then(|| self.equivalent_config_version(&app_id, &definition))
            .flatten();
        match self.apps.get_mut(app_id.as_str()) {
            None => {
                self.apps.insert(
                    AppId::new(app_id),
                    AppState {
                        definition,
                        version: version.to_owned(),
                        config_version: version.to_owned(),
                        deleting: false,
                        backoff: LaunchBackoff::default(),
                        waiting_reason: None,
                        waiting_since: None,
                        last_failure: None,
                    },
                );
                ActionKind::StartApplication
            }
            Some(app) => {
                let config_changed = restart || app.definition.needs_restart(&definition);
                app.definition = definition;
                app.version = version.to_owned();
                app.deleting = false;
                app.backoff.reset();
                app.last_failure = None;
                if !config_changed {
                    return ActionKind::ScaleApplication;
                }
                app.config_version = reusable.unwrap_or_else(|| version.to_owned());
                ActionKind::RestartApplication
            }
        }
    }

    /// A config version some live instance of the app runs whose definition needs no
    /// restart to become `definition` (so a rollback keeps the instances of the version it
    /// returns to).
    fn equivalent_config_version(
        &self,
        app_id: &str,
        definition: &AppDefinition,
    ) -> Option<String> {
        let versions = self.versions.get(app_id)?;
        let mut candidates: Vec<&str> = self
            .instances
            .of_app(app_id)
            .iter()
            .filter(|instance| instance.is_live())
            .map(|instance| instance.config_version.as_str())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        candidates.into_iter().find_map(|config_version| {
            let stored = versions.get(config_version)?;
            let parsed = AppDefinition::from_json_value(stored).ok()?;
            (!parsed.app.needs_restart(definition)).then(|| config_version.to_owned())
        })
    }

    fn stored_app(&self, app_id: &str) -> Option<serde_json::Value> {
        let app = self.apps.get(app_id)?;
        serde_json::to_value(StoredApp {
            definition: app.definition.to_json(),
            version: app.version.clone(),
            config_version: app.config_version.clone(),
            deleting: app.deleting,
            backoff: LaunchBackoff::default(),
        })
        .ok()
    }

    /// Marks a running deployment cancelled with `reason`.
    fn end_deployment(&mut self, id: &str, reason: &str, now: f64) {
        let Some(deployment) = self.deployments.get_mut(id) else {
            return;
        };
        // Only a running deployment is cancelled; one that already ended keeps its end.
        if deployment.cancel(reason.to_owned(), now).is_err() {
            return;
        }
        let mut payload: Map<String, serde_json::Value> = deployment_payload(deployment);
        payload.insert("reason".into(), json!(reason));
        tracing::info!(deployment_id = id, reason, "deployment cancelled");
        self.persist_deployment(id);
        self.emit("deployment_failed", now, payload);
    }
}

/// The deployment step of each app: 0 for apps without dependencies in the set, else one
/// more than the latest of their dependencies. `None` on a cycle.
fn dependency_steps(definitions: &[AppDefinition]) -> Option<BTreeMap<String, usize>> {
    let by_id: BTreeMap<&str, &AppDefinition> = definitions
        .iter()
        .map(|definition| (definition.id.as_str(), definition))
        .collect();
    let mut steps: BTreeMap<String, usize> = BTreeMap::new();
    // Longest path layering by repeated relaxation; more rounds than apps means a cycle.
    for _ in 0..=definitions.len() {
        let mut changed = false;
        for definition in definitions {
            let step = definition
                .dependencies
                .iter()
                .filter(|dependency| by_id.contains_key(dependency.as_str()))
                .map(|dependency| steps.get(dependency.as_str()).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            let entry = steps.entry(definition.id.as_str().to_owned()).or_insert(0);
            if *entry != step {
                *entry = step;
                changed = true;
            }
        }
        if !changed {
            return Some(steps);
        }
    }
    None
}
