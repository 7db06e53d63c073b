//! Reads Marathon app JSON field by field, so that every type error names its JSON pointer and
//! every field we do not know is reported instead of silently dropped.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::constraint::ConstraintSpec;
use super::defaults;
use super::definition::{
    AppDefinition, Container, ContainerType, DockerSpec, HealthCheck, HealthCheckProtocol,
    KillSelection, Network, NetworkMode, Placement, PortDefinition, PortMapping, PortProtocol,
    UpgradeStrategy, Volume, VolumeMode,
};
use super::path_id::PathId;
use super::validate::ValidationErrors;

/// A field present in the JSON that the app model does not know; it was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// JSON pointer of the field, e.g. `/container/docker/foo`.
    pub path: String,
}

impl fmt::Display for UnknownField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "unknown field {:?}", self.path)
    }
}

/// A parsed, valid app definition and the fields that were ignored on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedApp {
    /// The definition, defaults filled in.
    pub app: AppDefinition,
    /// Unknown fields, in document order.
    pub warnings: Vec<UnknownField>,
}

/// Why app JSON was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppJsonError {
    /// The text is not JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON reader expected.
        message: String,
    },
    /// The JSON is not a valid app definition.
    #[error("{0}")]
    Invalid(ValidationErrors),
}

impl AppJsonError {
    /// The HTTP body Marathon returns for this error (400 for syntax, 422 for invalid).
    pub fn to_json(&self) -> Value {
        match self {
            AppJsonError::Syntax {
                line,
                column,
                message,
            } => serde_json::json!({
                "message": "Invalid JSON",
                "details": [{
                    "path": "/",
                    "errors": [format!("line {line}, column {column}: {message}")],
                }],
            }),
            AppJsonError::Invalid(errors) => errors.to_json(),
        }
    }
}

impl AppDefinition {
    /// Parses and validates app JSON text.
    pub fn from_json_str(text: &str) -> Result<ParsedApp, AppJsonError> {
        let value: Value = serde_json::from_str(text).map_err(|error| {
            let full = error.to_string();
            let message = full
                .rfind(" at line ")
                .map_or(full.as_str(), |end| &full[..end]);
            AppJsonError::Syntax {
                line: error.line(),
                column: error.column(),
                message: message.to_owned(),
            }
        })?;
        AppDefinition::from_json_value(&value).map_err(AppJsonError::Invalid)
    }

    /// Parses and validates an app JSON value; type errors and rule violations come back
    /// together.
    pub fn from_json_value(value: &Value) -> Result<ParsedApp, ValidationErrors> {
        let mut reader = Reader::default();
        let app = read_app(&mut reader, value);
        let mut errors = reader.errors;
        if let Some(app) = &app
            && let Err(rule_errors) = app.validate()
        {
            for field in rule_errors.details {
                // A field that failed to parse kept its default; its rule verdict is noise.
                if errors.errors_at(&field.path).is_empty() {
                    for message in field.errors {
                        errors.push(field.path.clone(), message);
                    }
                }
            }
        }
        match app {
            Some(app) if errors.is_empty() => Ok(ParsedApp {
                app,
                warnings: reader.warnings,
            }),
            _ => Err(errors),
        }
    }
}

/// Collects errors and unknown fields while reading.
#[derive(Default)]
struct Reader {
    errors: ValidationErrors,
    warnings: Vec<UnknownField>,
}

/// A JSON object being read and where it sits in the document.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn child_path(base: &str, key: &str) -> String {
    format!("{base}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn shown_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Reader {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(shown_path(path), message);
    }

    fn type_error(&mut self, path: &str, expected: &str, found: &Value) {
        self.error(path, format!("expected {expected}, found {}", kind(found)));
    }

    fn object<'a>(&mut self, value: &'a Value, path: &str) -> Option<Obj<'a>> {
        match value {
            Value::Object(map) => Some(Obj {
                map,
                path: path.to_owned(),
            }),
            other => {
                self.type_error(path, "object", other);
                None
            }
        }
    }

    fn unknown(&mut self, obj: &Obj<'_>, known: &[&str]) {
        for key in obj.map.keys() {
            if !known.contains(&key.as_str()) {
                self.warnings.push(UnknownField {
                    path: child_path(&obj.path, key),
                });
            }
        }
    }

    /// The field's value and path; `None` when absent or `null`.
    fn field<'a>(&self, obj: &Obj<'a>, key: &str) -> Option<(&'a Value, String)> {
        match obj.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some((value, child_path(&obj.path, key))),
        }
    }

    fn number(&mut self, obj: &Obj<'_>, key: &str) -> Option<f64> {
        let (value, path) = self.field(obj, key)?;
        match value.as_f64() {
            Some(number) => Some(number),
            None => {
                self.type_error(&path, "number", value);
                None
            }
        }
    }

    fn uint_at(&mut self, value: &Value, path: &str, max: u64) -> Option<u64> {
        let integer = match value {
            Value::Number(number) => number.as_i64().map(i128::from).or_else(|| {
                number.as_u64().map(i128::from).or_else(|| {
                    number
                        .as_f64()
                        .filter(|float| float.fract() == 0.0 && float.abs() < 1e18)
                        .map(|float| float as i128)
                })
            }),
            _ => None,
        };
        match integer {
            None => {
                self.type_error(path, "integer", value);
                None
            }
            Some(negative) if negative < 0 => {
                self.error(path, "must be >= 0");
                None
            }
            Some(large) if large > i128::from(max) => {
                self.error(path, format!("must be <= {max}"));
                None
            }
            Some(integer) => u64::try_from(integer).ok(),
        }
    }

    fn uint(&mut self, obj: &Obj<'_>, key: &str, max: u64) -> Option<u64> {
        let (value, path) = self.field(obj, key)?;
        self.uint_at(value, &path, max)
    }

    fn u32(&mut self, obj: &Obj<'_>, key: &str) -> Option<u32> {
        self.uint(obj, key, u64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok())
    }

    fn port(&mut self, obj: &Obj<'_>, key: &str) -> Option<u16> {
        self.uint(obj, key, u64::from(u16::MAX))
            .and_then(|n| u16::try_from(n).ok())
    }

    fn boolean(&mut self, obj: &Obj<'_>, key: &str) -> Option<bool> {
        let (value, path) = self.field(obj, key)?;
        match value {
            Value::Bool(flag) => Some(*flag),
            other => {
                self.type_error(&path, "boolean", other);
                None
            }
        }
    }

    fn string(&mut self, obj: &Obj<'_>, key: &str) -> Option<String> {
        let (value, path) = self.field(obj, key)?;
        match value {
            Value::String(text) => Some(text.clone()),
            other => {
                self.type_error(&path, "string", other);
                None
            }
        }
    }

    fn named<T>(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        names: &[&str],
        from_name: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let (value, path) = self.field(obj, key)?;
        let Value::String(text) = value else {
            self.type_error(&path, "string", value);
            return None;
        };
        let parsed = from_name(text);
        if parsed.is_none() {
            self.error(
                &path,
                format!(
                    "unknown value {text:?}, expected one of {}",
                    names.join(", ")
                ),
            );
        }
        parsed
    }

    fn array<'a>(&mut self, obj: &Obj<'a>, key: &str) -> Option<(&'a [Value], String)> {
        let (value, path) = self.field(obj, key)?;
        match value {
            Value::Array(items) => Some((items.as_slice(), path)),
            other => {
                self.type_error(&path, "array", other);
                None
            }
        }
    }

    fn strings_at(&mut self, items: &[Value], path: &str) -> Option<Vec<String>> {
        let mut strings = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => strings.push(text.clone()),
                other => {
                    self.type_error(&format!("{path}/{index}"), "string", other);
                    all_ok = false;
                }
            }
        }
        all_ok.then_some(strings)
    }

    fn strings(&mut self, obj: &Obj<'_>, key: &str) -> Option<Vec<String>> {
        let (items, path) = self.array(obj, key)?;
        self.strings_at(items, &path)
    }

    /// A string-to-string map; with `env_rules`, secret references get a clear refusal.
    fn string_map(
        &mut self,
        obj: &Obj<'_>,
        key: &str,
        env_rules: bool,
    ) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let Some((value, path)) = self.field(obj, key) else {
            return map;
        };
        let Some(entries) = self.object(value, &path) else {
            return map;
        };
        for (name, entry) in entries.map {
            let entry_path = child_path(&path, name);
            match entry {
                Value::String(text) => {
                    map.insert(name.clone(), text.clone());
                }
                Value::Object(reference) if env_rules && reference.contains_key("secret") => {
                    self.error(
                        &entry_path,
                        "secret references are not supported; set the value as a plain string",
                    );
                }
                other => self.type_error(&entry_path, "string", other),
            }
        }
        map
    }
}

const APP_FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "user",
    "env",
    "instances",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "container",
    "networks",
    "portDefinitions",
    "requirePorts",
    "labels",
    "constraints",
    "healthChecks",
    "upgradeStrategy",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "killSelection",
    "dependencies",
    "taskKillGracePeriodSeconds",
    "version",
    "placement",
    "secrets",
];

fn read_app(reader: &mut Reader, value: &Value) -> Option<AppDefinition> {
    let obj = reader.object(value, "")?;
    reader.unknown(&obj, APP_FIELDS);

    let id = match reader.string(&obj, "id") {
        Some(text) => match PathId::parse(&text) {
            Ok(id) => id,
            Err(error) => {
                reader.error("/id", error.to_string());
                PathId::root()
            }
        },
        None => {
            if obj.map.get("id").is_none_or(|v| v.is_null()) {
                reader.error("/id", "is required");
            }
            PathId::root()
        }
    };
    let mut app = AppDefinition::new(id);

    app.cmd = reader.string(&obj, "cmd");
    app.args = reader.strings(&obj, "args").filter(|args| !args.is_empty());
    app.user = reader.string(&obj, "user");
    app.env = reader.string_map(&obj, "env", true);
    if obj
        .map
        .get("secrets")
        .is_some_and(|secrets| !secrets.is_null())
    {
        reader.error(
            "/secrets",
            "secrets are not supported; use plain env values",
        );
    }
    if let Some(instances) = reader.u32(&obj, "instances") {
        app.instances = instances;
    }
    if let Some(cpus) = reader.number(&obj, "cpus") {
        app.cpus = cpus;
    }
    if let Some(mem) = reader.number(&obj, "mem") {
        app.mem = mem;
    }
    if let Some(disk) = reader.number(&obj, "disk") {
        app.disk = disk;
    }
    if let Some(gpus) = reader.u32(&obj, "gpus") {
        app.gpus = gpus;
    }

    let mut legacy_network = None;
    if let Some((value, path)) = reader.field(&obj, "container")
        && let Some(container_obj) = reader.object(value, &path)
    {
        let (container, network) = read_container(reader, &container_obj);
        app.container = Some(container);
        legacy_network = network;
    }
    app.networks = match reader.array(&obj, "networks") {
        Some((items, path)) => {
            let networks = read_networks(reader, items, &path);
            if let Some(legacy) = legacy_network
                && networks.first().map(|n| n.mode) != Some(legacy)
            {
                reader.error(
                    "/container/docker/network",
                    "conflicts with networks; drop the legacy field",
                );
            }
            networks
        }
        None => vec![Network {
            mode: legacy_network.unwrap_or(NetworkMode::Host),
            name: None,
        }],
    };
    app.port_definitions = match reader.array(&obj, "portDefinitions") {
        Some((items, path)) => read_port_definitions(reader, items, &path),
        None if app.uses_container_networking() => Vec::new(),
        None => vec![PortDefinition::dynamic()],
    };
    if let Some(require_ports) = reader.boolean(&obj, "requirePorts") {
        app.require_ports = require_ports;
    }
    app.labels = reader.string_map(&obj, "labels", false);
    if let Some((items, path)) = reader.array(&obj, "constraints") {
        app.constraints = read_constraints(reader, items, &path);
    }
    if let Some((items, path)) = reader.array(&obj, "healthChecks") {
        app.health_checks = read_health_checks(reader, items, &path);
    }
    if let Some((value, path)) = reader.field(&obj, "upgradeStrategy")
        && let Some(strategy_obj) = reader.object(value, &path)
    {
        app.upgrade_strategy = read_upgrade_strategy(reader, &strategy_obj);
    }
    if let Some(seconds) = reader.uint(&obj, "backoffSeconds", u64::MAX) {
        app.backoff_seconds = seconds;
    }
    if let Some(factor) = reader.number(&obj, "backoffFactor") {
        app.backoff_factor = factor;
    }
    if let Some(seconds) = reader.uint(&obj, "maxLaunchDelaySeconds", u64::MAX) {
        app.max_launch_delay_seconds = seconds;
    }
    if let Some(selection) = reader.named(
        &obj,
        "killSelection",
        KillSelection::NAMES,
        KillSelection::from_name,
    ) {
        app.kill_selection = selection;
    }
    if let Some((items, path)) = reader.array(&obj, "dependencies")
        && let Some(texts) = reader.strings_at(items, &path)
    {
        let group = app.id.parent();
        for (index, text) in texts.iter().enumerate() {
            match group.resolve(text) {
                Ok(dependency) => app.dependencies.push(dependency),
                Err(error) => reader.error(&format!("{path}/{index}"), error.to_string()),
            }
        }
    }
    app.task_kill_grace_period_seconds = reader.uint(&obj, "taskKillGracePeriodSeconds", u64::MAX);
    app.version = reader.string(&obj, "version");
    if let Some(placement) = reader.named(&obj, "placement", Placement::NAMES, Placement::from_name)
    {
        app.placement = placement;
    }
    Some(app)
}

/// Reads `container`; also returns the network implied by legacy `docker.network`.
fn read_container(reader: &mut Reader, obj: &Obj<'_>) -> (Container, Option<NetworkMode>) {
    reader.unknown(obj, &["type", "docker", "portMappings", "volumes"]);
    let container_type = reader
        .named(obj, "type", ContainerType::NAMES, ContainerType::from_name)
        .unwrap_or(ContainerType::Docker);
    let mut docker = None;
    let mut legacy_network = None;
    let mut legacy_mappings = None;
    if let Some((value, path)) = reader.field(obj, "docker")
        && let Some(docker_obj) = reader.object(value, &path)
    {
        reader.unknown(
            &docker_obj,
            &[
                "image",
                "forcePullImage",
                "privileged",
                "network",
                "portMappings",
                "parameters",
            ],
        );
        // Arbitrary `docker run` parameters would bypass the agent's container policy: they
        // are refused rather than silently ignored. An empty list (which Marathon clients
        // send by default) asks for nothing and is accepted.
        if let Some((items, parameters_path)) = reader.array(&docker_obj, "parameters")
            && !items.is_empty()
        {
            reader.error(
                &parameters_path,
                "is not supported: Agora's agents take no arbitrary docker run parameters \
                 (use env, portMappings, volumes with hostPath, or privileged)",
            );
        }
        let image = reader.string(&docker_obj, "image");
        if image.is_none() && reader.field(&docker_obj, "image").is_none() {
            reader.error(&child_path(&path, "image"), "is required");
        }
        docker = Some(DockerSpec {
            image: image.unwrap_or_default(),
            force_pull_image: reader
                .boolean(&docker_obj, "forcePullImage")
                .unwrap_or(false),
            privileged: reader.boolean(&docker_obj, "privileged").unwrap_or(false),
        });
        legacy_network = reader.named(
            &docker_obj,
            "network",
            &["HOST", "BRIDGE", "USER"],
            |name| match name {
                "HOST" => Some(NetworkMode::Host),
                "BRIDGE" => Some(NetworkMode::ContainerBridge),
                "USER" => Some(NetworkMode::Container),
                _ => None,
            },
        );
        if let Some((items, mappings_path)) = reader.array(&docker_obj, "portMappings") {
            legacy_mappings = Some(read_port_mappings(reader, items, &mappings_path));
        }
    }
    let port_mappings = match reader.array(obj, "portMappings") {
        Some((items, path)) => read_port_mappings(reader, items, &path),
        None => legacy_mappings.unwrap_or_default(),
    };
    let mut volumes = Vec::new();
    if let Some((items, path)) = reader.array(obj, "volumes") {
        for (index, item) in items.iter().enumerate() {
            let Some(volume_obj) = reader.object(item, &format!("{path}/{index}")) else {
                continue;
            };
            reader.unknown(&volume_obj, &["containerPath", "hostPath", "mode"]);
            let container_path = reader.string(&volume_obj, "containerPath");
            volumes.push(Volume {
                container_path: container_path.unwrap_or_default(),
                host_path: reader.string(&volume_obj, "hostPath"),
                mode: reader
                    .named(
                        &volume_obj,
                        "mode",
                        VolumeMode::NAMES,
                        VolumeMode::from_name,
                    )
                    .unwrap_or(VolumeMode::ReadWrite),
            });
        }
    }
    let container = Container {
        container_type,
        docker,
        port_mappings,
        volumes,
    };
    (container, legacy_network)
}

fn read_protocol(reader: &mut Reader, obj: &Obj<'_>) -> PortProtocol {
    reader
        .named(
            obj,
            "protocol",
            &["tcp", "udp", "udp,tcp", "tcp,udp"],
            |name| match name {
                "tcp,udp" => Some(PortProtocol::UdpTcp),
                other => PortProtocol::from_name(other),
            },
        )
        .unwrap_or(PortProtocol::Tcp)
}

fn read_port_mappings(reader: &mut Reader, items: &[Value], path: &str) -> Vec<PortMapping> {
    let mut mappings = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(obj) = reader.object(item, &format!("{path}/{index}")) else {
            continue;
        };
        reader.unknown(
            &obj,
            &[
                "containerPort",
                "hostPort",
                "servicePort",
                "protocol",
                "name",
                "labels",
            ],
        );
        mappings.push(PortMapping {
            container_port: reader.port(&obj, "containerPort").unwrap_or(0),
            host_port: reader.port(&obj, "hostPort"),
            service_port: reader.port(&obj, "servicePort").unwrap_or(0),
            protocol: read_protocol(reader, &obj),
            name: reader.string(&obj, "name"),
            labels: reader.string_map(&obj, "labels", false),
        });
    }
    mappings
}

fn read_port_definitions(reader: &mut Reader, items: &[Value], path: &str) -> Vec<PortDefinition> {
    let mut definitions = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(obj) = reader.object(item, &format!("{path}/{index}")) else {
            continue;
        };
        reader.unknown(&obj, &["port", "protocol", "name", "labels"]);
        definitions.push(PortDefinition {
            port: reader.port(&obj, "port").unwrap_or(0),
            protocol: read_protocol(reader, &obj),
            name: reader.string(&obj, "name"),
            labels: reader.string_map(&obj, "labels", false),
        });
    }
    definitions
}

fn read_networks(reader: &mut Reader, items: &[Value], path: &str) -> Vec<Network> {
    let mut networks = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(obj) = reader.object(item, &format!("{path}/{index}")) else {
            continue;
        };
        reader.unknown(&obj, &["mode", "name"]);
        let mode = reader
            .named(&obj, "mode", NetworkMode::NAMES, NetworkMode::from_name)
            .unwrap_or(NetworkMode::Container);
        networks.push(Network {
            mode,
            name: reader.string(&obj, "name"),
        });
    }
    networks
}

fn read_constraints(reader: &mut Reader, items: &[Value], path: &str) -> Vec<ConstraintSpec> {
    let mut constraints = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}/{index}");
        match item {
            Value::String(expression) => {
                constraints.push(ConstraintSpec::Expression(expression.clone()));
            }
            Value::Array(parts) => {
                if let Some(parts) = reader.strings_at(parts, &item_path) {
                    constraints.push(ConstraintSpec::Marathon(parts));
                }
            }
            other => reader.type_error(&item_path, "array of strings or string", other),
        }
    }
    constraints
}

fn read_health_checks(reader: &mut Reader, items: &[Value], path: &str) -> Vec<HealthCheck> {
    let mut checks = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(obj) = reader.object(item, &format!("{path}/{index}")) else {
            continue;
        };
        reader.unknown(
            &obj,
            &[
                "protocol",
                "path",
                "portIndex",
                "port",
                "command",
                "gracePeriodSeconds",
                "intervalSeconds",
                "timeoutSeconds",
                "maxConsecutiveFailures",
                "delaySeconds",
                "ignoreHttp1xx",
            ],
        );
        let protocol = reader
            .named(
                &obj,
                "protocol",
                HealthCheckProtocol::NAMES,
                HealthCheckProtocol::from_name,
            )
            .unwrap_or(HealthCheckProtocol::Http);
        let mut check = HealthCheck::new(protocol);
        if let Some(path_value) = reader.string(&obj, "path") {
            check.path = Some(path_value);
        }
        check.port = reader.port(&obj, "port");
        let port_index = reader.u32(&obj, "portIndex");
        if port_index.is_some() || check.port.is_some() || obj.map.contains_key("portIndex") {
            check.port_index = port_index;
        }
        if let Some((value, command_path)) = reader.field(&obj, "command")
            && let Some(command_obj) = reader.object(value, &command_path)
        {
            reader.unknown(&command_obj, &["value"]);
            check.command = reader.string(&command_obj, "value");
        }
        if let Some(seconds) = reader.u32(&obj, "gracePeriodSeconds") {
            check.grace_period_seconds = seconds;
        }
        if let Some(seconds) = reader.u32(&obj, "intervalSeconds") {
            check.interval_seconds = seconds;
        }
        if let Some(seconds) = reader.u32(&obj, "timeoutSeconds") {
            check.timeout_seconds = seconds;
        }
        if let Some(failures) = reader.u32(&obj, "maxConsecutiveFailures") {
            check.max_consecutive_failures = failures;
        }
        if let Some(seconds) = reader.u32(&obj, "delaySeconds") {
            check.delay_seconds = seconds;
        }
        if let Some(ignore) = reader.boolean(&obj, "ignoreHttp1xx") {
            check.ignore_http1xx = ignore;
        }
        checks.push(check);
    }
    checks
}

fn read_upgrade_strategy(reader: &mut Reader, obj: &Obj<'_>) -> UpgradeStrategy {
    reader.unknown(obj, &["minimumHealthCapacity", "maximumOverCapacity"]);
    UpgradeStrategy {
        minimum_health_capacity: reader
            .number(obj, "minimumHealthCapacity")
            .unwrap_or(defaults::MINIMUM_HEALTH_CAPACITY),
        maximum_over_capacity: reader
            .number(obj, "maximumOverCapacity")
            .unwrap_or(defaults::MAXIMUM_OVER_CAPACITY),
    }
}
