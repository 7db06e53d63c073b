//! Marathon-style validation: every problem at once, each under the JSON pointer it concerns.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Value, json};

use agora_proto::{MAX_SCALAR, limits};

use super::definition::{AppDefinition, HealthCheckProtocol, NetworkMode};

/// Most instances one app may ask for (ten times the largest deployment benchmarked).
pub const MAX_INSTANCES: u32 = 1_000_000;

/// The errors found at one JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldErrors {
    /// JSON pointer such as `/cpus` or `/healthChecks/0/portIndex` (`/` for the whole app).
    pub path: String,
    /// One message per problem.
    pub errors: Vec<String>,
}

/// All problems of a definition, in Marathon's 422 shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors {
    /// Problems grouped by path, in the order they were found.
    pub details: Vec<FieldErrors>,
}

impl ValidationErrors {
    /// Records `message` under `path`, grouping messages of the same path.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let message = message.into();
        match self.details.iter_mut().find(|field| field.path == path) {
            Some(field) => field.errors.push(message),
            None => self.details.push(FieldErrors {
                path,
                errors: vec![message],
            }),
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.details.is_empty()
    }

    /// The messages recorded under `path` (empty when none).
    pub fn errors_at(&self, path: &str) -> &[String] {
        self.details
            .iter()
            .find(|field| field.path == path)
            .map_or(&[], |field| field.errors.as_slice())
    }

    /// Moves `other`'s problems into `self`.
    pub fn extend(&mut self, other: ValidationErrors) {
        for field in other.details {
            for message in field.errors {
                self.push(field.path.clone(), message);
            }
        }
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The HTTP 422 body: `{"message":"Object is not valid","details":[{"path","errors"}]}`.
    pub fn to_json(&self) -> Value {
        let details: Vec<Value> = self
            .details
            .iter()
            .map(|field| json!({ "path": field.path, "errors": field.errors }))
            .collect();
        json!({ "message": "Object is not valid", "details": details })
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("object is not valid")?;
        for field in &self.details {
            write!(formatter, "; {}: {}", field.path, field.errors.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl AppDefinition {
    /// Checks every rule and reports all violations at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        self.validate_identity(&mut errors);
        self.validate_command(&mut errors);
        self.validate_resources(&mut errors);
        self.validate_durations(&mut errors);
        self.validate_instances(&mut errors);
        self.validate_container_options(&mut errors);
        self.validate_networking(&mut errors);
        self.validate_health_checks(&mut errors);
        self.validate_scheduling(&mut errors);
        errors.into_result()
    }

    fn validate_identity(&self, errors: &mut ValidationErrors) {
        if self.id.is_root() {
            errors.push("/id", "app id must name an app, not the root group");
        }
        // Task ids are `<app id without the leading slash>.<uuid>`: the protocol's limit for
        // ids that task ids derive from keeps them within the master's task id limit (and the
        // app's URLs well within any server's request-line limit).
        let max = limits::MAX_DERIVING_ID_LEN;
        if self.id.as_str().len() > max {
            errors.push(
                "/id",
                format!(
                    "must be at most {max} characters, got {}",
                    self.id.as_str().len()
                ),
            );
        }
        for (index, dependency) in self.dependencies.iter().enumerate() {
            if *dependency == self.id {
                errors.push(
                    format!("/dependencies/{index}"),
                    "an app cannot depend on itself",
                );
            }
        }
    }

    fn validate_command(&self, errors: &mut ValidationErrors) {
        if self.cmd.is_some() && self.args.is_some() {
            errors.push("/cmd", "cmd and args are mutually exclusive");
        }
        if self.cmd.as_deref().is_some_and(|cmd| cmd.trim().is_empty()) {
            errors.push("/cmd", "must not be empty");
        }
        if self.args.as_ref().is_some_and(Vec::is_empty) {
            errors.push("/args", "must not be empty");
        }
        if let Some(docker) = self.container.as_ref().and_then(|c| c.docker.as_ref())
            && docker.image.trim().is_empty()
        {
            errors.push("/container/docker/image", "must not be empty");
        }
        if self.cmd.is_none() && self.args.is_none() && self.docker_image().is_none() {
            errors.push("/", "an app needs cmd, args or container.docker.image");
        }
    }

    fn validate_resources(&self, errors: &mut ValidationErrors) {
        // Zero cpus or mem would start a container without any limit; the master refuses
        // such tasks, so the app is refused here, where the field can be named.
        for (path, value, min) in [
            ("/cpus", self.cpus, limits::MIN_TASK_CPUS),
            ("/mem", self.mem, limits::MIN_TASK_MEM_MIB),
            ("/disk", self.disk, 0.0),
        ] {
            if !(value.is_finite() && (min..=MAX_SCALAR).contains(&value)) {
                errors.push(
                    path,
                    format!(
                        "must be between {min} and {MAX_SCALAR:e}, got {}",
                        limits::display_number(value)
                    ),
                );
            }
        }
    }

    fn validate_instances(&self, errors: &mut ValidationErrors) {
        // Every instance is a record in memory and in the store: a typo of 4 billion
        // instances must not exhaust the daemon.
        if self.instances > MAX_INSTANCES {
            errors.push(
                "/instances",
                format!("must be at most {MAX_INSTANCES}, got {}", self.instances),
            );
        }
    }

    fn validate_durations(&self, errors: &mut ValidationErrors) {
        let mut check = |path: String, seconds: u64| {
            // Every duration becomes a protocol `*_seconds` field or a timer: bounded by
            // the protocol's one-year limit.
            if let Err(error) = limits::check_duration_seconds(seconds as f64) {
                errors.push(path, error.to_string());
            }
        };
        check("/backoffSeconds".to_owned(), self.backoff_seconds);
        check(
            "/maxLaunchDelaySeconds".to_owned(),
            self.max_launch_delay_seconds,
        );
        if let Some(grace) = self.task_kill_grace_period_seconds {
            check("/taskKillGracePeriodSeconds".to_owned(), grace);
        }
        for (index, health) in self.health_checks.iter().enumerate() {
            let base = format!("/healthChecks/{index}");
            check(
                format!("{base}/gracePeriodSeconds"),
                u64::from(health.grace_period_seconds),
            );
            check(
                format!("{base}/intervalSeconds"),
                u64::from(health.interval_seconds),
            );
            check(
                format!("{base}/timeoutSeconds"),
                u64::from(health.timeout_seconds),
            );
            check(
                format!("{base}/delaySeconds"),
                u64::from(health.delay_seconds),
            );
        }
    }

    fn validate_container_options(&self, errors: &mut ValidationErrors) {
        let Some(container) = &self.container else {
            return;
        };
        // `privileged` lives in `container.docker`, whose image is required: nothing to check.
        let has_image = self.docker_image().is_some();
        for (index, volume) in container.volumes.iter().enumerate() {
            let base = format!("/container/volumes/{index}");
            if volume
                .host_path
                .as_deref()
                .is_none_or(|path| path.trim().is_empty())
            {
                errors.push(
                    format!("{base}/hostPath"),
                    "is required: only host bind mounts are supported (no persistent or external volumes)",
                );
            }
            if !has_image {
                errors.push(
                    base.clone(),
                    "volumes need container.docker.image (a plain process has nothing to mount into)",
                );
            }
            for (field, value) in [
                ("hostPath", volume.host_path.as_deref().unwrap_or("")),
                ("containerPath", volume.container_path.as_str()),
            ] {
                if value.contains(':') {
                    errors.push(
                        format!("{base}/{field}"),
                        "must not contain ':' (it separates the parts of a bind mount)",
                    );
                }
            }
        }
    }

    fn validate_networking(&self, errors: &mut ValidationErrors) {
        if let Some(container) = &self.container {
            for (index, volume) in container.volumes.iter().enumerate() {
                if volume.container_path.trim().is_empty() {
                    errors.push(
                        format!("/container/volumes/{index}/containerPath"),
                        "must not be empty",
                    );
                }
            }
        }
        let has_host = self.networks.iter().any(|n| n.mode == NetworkMode::Host);
        if has_host && self.networks.len() > 1 {
            errors.push(
                "/networks",
                "host networking cannot be combined with other networks",
            );
        }
        let bridges = self
            .networks
            .iter()
            .filter(|n| n.mode == NetworkMode::ContainerBridge);
        if bridges.count() > 1 {
            errors.push("/networks", "at most one container/bridge network");
        }
        for (index, network) in self.networks.iter().enumerate() {
            if network.mode == NetworkMode::Container && network.name.is_none() {
                errors.push(
                    format!("/networks/{index}/name"),
                    "container networks need a name",
                );
            }
        }
        if self.uses_container_networking() && !self.port_definitions.is_empty() {
            errors.push(
                "/portDefinitions",
                "must be empty with container networking; use container.portMappings",
            );
        }
        if !self.uses_container_networking() && !self.port_mappings().is_empty() {
            errors.push(
                "/container/portMappings",
                "needs container networking (networks [{\"mode\": \"container/bridge\"}])",
            );
        }
        let mut names = BTreeSet::new();
        for (index, definition) in self.port_definitions.iter().enumerate() {
            if let Some(name) = &definition.name
                && !names.insert(name.as_str())
            {
                errors.push(
                    format!("/portDefinitions/{index}/name"),
                    format!("duplicate port name {name:?}"),
                );
            }
        }
        let mut names = BTreeSet::new();
        for (index, mapping) in self.port_mappings().iter().enumerate() {
            if let Some(name) = &mapping.name
                && !names.insert(name.as_str())
            {
                errors.push(
                    format!("/container/portMappings/{index}/name"),
                    format!("duplicate port name {name:?}"),
                );
            }
        }
        if self.require_ports && self.port_definitions.iter().any(|d| d.port == 0) {
            errors.push("/requirePorts", "requirePorts needs fixed (non-zero) ports");
        }
    }

    fn validate_health_checks(&self, errors: &mut ValidationErrors) {
        let port_count = self.port_count();
        for (index, check) in self.health_checks.iter().enumerate() {
            let base = format!("/healthChecks/{index}");
            if check.protocol == HealthCheckProtocol::Command {
                if check.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    errors.push(
                        format!("{base}/command"),
                        "COMMAND health checks need a command",
                    );
                }
            } else {
                if check.port.is_some() && check.port_index.is_some() {
                    errors.push(
                        format!("{base}/port"),
                        "set either port or portIndex, not both",
                    );
                }
                match check.port_index {
                    Some(port_index) if port_index as usize >= port_count => errors.push(
                        format!("{base}/portIndex"),
                        format!("is {port_index} but the app has {port_count} port(s)"),
                    ),
                    None if check.port.is_none() => errors.push(
                        format!("{base}/portIndex"),
                        format!(
                            "{} health checks need port or portIndex",
                            check.protocol.as_str()
                        ),
                    ),
                    _ => {}
                }
            }
            if check.protocol.is_http() && check.path.as_deref().is_none_or(str::is_empty) {
                errors.push(format!("{base}/path"), "HTTP health checks need a path");
            }
            if check.timeout_seconds >= check.interval_seconds {
                errors.push(
                    format!("{base}/timeoutSeconds"),
                    "must be smaller than intervalSeconds",
                );
            }
            if check.interval_seconds == 0 {
                errors.push(format!("{base}/intervalSeconds"), "must be > 0");
            }
        }
    }

    fn validate_scheduling(&self, errors: &mut ValidationErrors) {
        let strategy = &self.upgrade_strategy;
        if !(0.0..=1.0).contains(&strategy.minimum_health_capacity) {
            errors.push(
                "/upgradeStrategy/minimumHealthCapacity",
                "must be between 0 and 1",
            );
        }
        if !(0.0..=1.0).contains(&strategy.maximum_over_capacity) {
            errors.push(
                "/upgradeStrategy/maximumOverCapacity",
                "must be between 0 and 1",
            );
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            errors.push("/backoffFactor", "must be >= 1");
        }
        for (index, constraint) in self.constraints.iter().enumerate() {
            if let Err(message) = constraint.check() {
                errors.push(format!("/constraints/{index}"), message);
            }
        }
    }
}
