//! The typed app definition, its JSON rendering and change detection.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::constraint::ConstraintSpec;
use super::defaults;
use super::path_id::PathId;

/// Gives a fieldless enum its Marathon spelling both ways.
macro_rules! named_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every accepted spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The Marathon spelling of this value.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the Marathon spelling; `None` for anything else.
            pub fn from_name(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

/// A Marathon app: a long-running service of `instances` identical tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDefinition {
    /// Absolute path id, e.g. `/prod/web`.
    pub id: PathId,
    /// Shell command (`sh -c`); exclusive with `args`.
    pub cmd: Option<String>,
    /// Argument vector run without a shell (or appended to the image entrypoint).
    pub args: Option<Vec<String>>,
    /// User to run tasks as.
    pub user: Option<String>,
    /// Environment variables (plain strings; secret references are rejected).
    pub env: BTreeMap<String, String>,
    /// Wanted number of running tasks.
    pub instances: u32,
    /// CPU shares per task.
    pub cpus: f64,
    /// Memory per task, MiB.
    pub mem: f64,
    /// Scratch disk per task, MiB.
    pub disk: f64,
    /// GPUs per task.
    pub gpus: u32,
    /// Container (Docker or Mesos) settings; `None` runs the command on the agent.
    pub container: Option<Container>,
    /// Networks the tasks join; `[host]` unless the definition says otherwise.
    pub networks: Vec<Network>,
    /// Host ports for host networking (one dynamic port by default).
    pub port_definitions: Vec<PortDefinition>,
    /// Use the declared host ports exactly instead of dynamic ones.
    pub require_ports: bool,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Placement constraints, Marathon arrays or Swarm-style expressions.
    pub constraints: Vec<ConstraintSpec>,
    /// Health checks.
    pub health_checks: Vec<HealthCheck>,
    /// Rolling-upgrade capacity bounds.
    pub upgrade_strategy: UpgradeStrategy,
    /// First restart delay after a failure, seconds.
    pub backoff_seconds: u64,
    /// Multiplier applied to the delay after each consecutive failure.
    pub backoff_factor: f64,
    /// Upper bound of the restart delay, seconds.
    pub max_launch_delay_seconds: u64,
    /// Which tasks to kill first when scaling down.
    pub kill_selection: KillSelection,
    /// Apps that must be deployed before this one (absolute path ids).
    pub dependencies: Vec<PathId>,
    /// Seconds between SIGTERM and SIGKILL; `None` uses the agent default.
    pub task_kill_grace_period_seconds: Option<u64>,
    /// Version stamp set by svcframework when the definition is stored.
    pub version: Option<String>,
    /// Agora extension: how to choose among agents that fit.
    pub placement: Placement,
}

/// Container settings (`container`).
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Containerizer.
    pub container_type: ContainerType,
    /// Docker image settings.
    pub docker: Option<DockerSpec>,
    /// Port mappings for container networking.
    pub port_mappings: Vec<PortMapping>,
    /// Volumes mounted into the container.
    pub volumes: Vec<Volume>,
}

/// `container.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerType {
    /// Docker containerizer.
    Docker,
    /// Mesos (universal) containerizer.
    Mesos,
}
named_enum!(ContainerType { Docker => "DOCKER", Mesos => "MESOS" });

/// `container.docker`. The legacy `network` field is folded into [`AppDefinition::networks`].
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSpec {
    /// Image reference.
    pub image: String,
    /// Pull the image even when present.
    pub force_pull_image: bool,
    /// Run the container privileged.
    pub privileged: bool,
}

/// One `container.portMappings` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PortMapping {
    /// Port inside the container (0 = same as the host port).
    pub container_port: u16,
    /// Host port; `Some(0)` = any free port, `None` = not exposed on the host.
    pub host_port: Option<u16>,
    /// Service (load balancer) port; 0 = assigned.
    pub service_port: u16,
    /// Transport protocol.
    pub protocol: PortProtocol,
    /// Port name, unique within the app.
    pub name: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// One `portDefinitions` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PortDefinition {
    /// Host port (0 = any free port).
    pub port: u16,
    /// Transport protocol.
    pub protocol: PortProtocol,
    /// Port name, unique within the app.
    pub name: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

impl PortDefinition {
    /// Marathon's default port: dynamic, tcp, unnamed.
    pub fn dynamic() -> Self {
        PortDefinition {
            port: 0,
            protocol: PortProtocol::Tcp,
            name: None,
            labels: BTreeMap::new(),
        }
    }
}

/// Port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Both UDP and TCP.
    UdpTcp,
}
named_enum!(PortProtocol { Tcp => "tcp", Udp => "udp", UdpTcp => "udp,tcp" });

/// A `container.volumes` entry (host bind mounts).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Mount point inside the container.
    pub container_path: String,
    /// Host path to bind; `None` for an anonymous volume.
    pub host_path: Option<String>,
    /// Read-only or read-write.
    pub mode: VolumeMode,
}

/// Volume access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeMode {
    /// Read-only.
    ReadOnly,
    /// Read-write.
    ReadWrite,
}
named_enum!(VolumeMode { ReadOnly => "RO", ReadWrite => "RW" });

/// One `networks` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Networking mode.
    pub mode: NetworkMode,
    /// Network name (for `container` mode).
    pub name: Option<String>,
}

impl Network {
    /// Host networking, the default.
    pub fn host() -> Self {
        Network {
            mode: NetworkMode::Host,
            name: None,
        }
    }
}

/// `networks[].mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Share the agent's network namespace.
    Host,
    /// Docker bridge with port mappings.
    ContainerBridge,
    /// A named container network.
    Container,
}
named_enum!(NetworkMode {
    Host => "host",
    ContainerBridge => "container/bridge",
    Container => "container",
});

/// One `healthChecks` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// How to probe.
    pub protocol: HealthCheckProtocol,
    /// HTTP path (HTTP-style protocols).
    pub path: Option<String>,
    /// Index into the app's ports.
    pub port_index: Option<u32>,
    /// Fixed port, instead of `port_index`.
    pub port: Option<u16>,
    /// Command to run (COMMAND protocol), from `command.value`.
    pub command: Option<String>,
    /// Failures are ignored this long after the task starts.
    pub grace_period_seconds: u32,
    /// Seconds between probes.
    pub interval_seconds: u32,
    /// Seconds before a probe counts as failed.
    pub timeout_seconds: u32,
    /// Consecutive failures before the task is killed (0 = never).
    pub max_consecutive_failures: u32,
    /// Seconds before the first probe (Mesos checks).
    pub delay_seconds: u32,
    /// Treat 1xx answers as neither healthy nor unhealthy.
    pub ignore_http1xx: bool,
}

impl HealthCheck {
    /// A check with Marathon's defaults for `protocol`.
    pub fn new(protocol: HealthCheckProtocol) -> Self {
        HealthCheck {
            protocol,
            path: protocol.is_http().then(|| defaults::HEALTH_PATH.to_owned()),
            port_index: protocol.needs_port().then_some(0),
            port: None,
            command: None,
            grace_period_seconds: defaults::HEALTH_GRACE_PERIOD_SECONDS,
            interval_seconds: defaults::HEALTH_INTERVAL_SECONDS,
            timeout_seconds: defaults::HEALTH_TIMEOUT_SECONDS,
            max_consecutive_failures: defaults::HEALTH_MAX_CONSECUTIVE_FAILURES,
            delay_seconds: defaults::HEALTH_DELAY_SECONDS,
            ignore_http1xx: false,
        }
    }
}

/// `healthChecks[].protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckProtocol {
    /// HTTP GET, 2xx/3xx healthy.
    Http,
    /// HTTPS GET.
    Https,
    /// TCP connect.
    Tcp,
    /// Command run inside the task.
    Command,
    /// HTTP probe run next to the task.
    MesosHttp,
    /// TCP probe run next to the task.
    MesosTcp,
}
named_enum!(HealthCheckProtocol {
    Http => "HTTP",
    Https => "HTTPS",
    Tcp => "TCP",
    Command => "COMMAND",
    MesosHttp => "MESOS_HTTP",
    MesosTcp => "MESOS_TCP",
});

impl HealthCheckProtocol {
    /// True when the check probes a port.
    pub fn needs_port(&self) -> bool {
        !matches!(self, HealthCheckProtocol::Command)
    }

    /// True for protocols that take a `path`.
    pub fn is_http(&self) -> bool {
        matches!(
            self,
            HealthCheckProtocol::Http | HealthCheckProtocol::Https | HealthCheckProtocol::MesosHttp
        )
    }
}

/// `upgradeStrategy`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpgradeStrategy {
    /// Fraction of `instances` that must stay healthy during an upgrade.
    pub minimum_health_capacity: f64,
    /// Fraction of `instances` that may run on top during an upgrade.
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: defaults::MINIMUM_HEALTH_CAPACITY,
            maximum_over_capacity: defaults::MAXIMUM_OVER_CAPACITY,
        }
    }
}

/// `killSelection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KillSelection {
    /// Kill the newest tasks first (Marathon default).
    #[default]
    YoungestFirst,
    /// Kill the oldest tasks first.
    OldestFirst,
}
named_enum!(KillSelection { YoungestFirst => "YOUNGEST_FIRST", OldestFirst => "OLDEST_FIRST" });

/// Agora extension `placement`: how to pick among agents that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Fill the most utilised agent first (default).
    #[default]
    Binpack,
    /// Prefer the least loaded agent.
    Spread,
    /// Pick uniformly at random.
    Random,
}
named_enum!(Placement { Binpack => "binpack", Spread => "spread", Random => "random" });

impl AppDefinition {
    /// An app with Marathon's defaults and no command yet (it will not validate until it gets
    /// `cmd`, `args` or a Docker image).
    pub fn new(id: PathId) -> Self {
        AppDefinition {
            id,
            cmd: None,
            args: None,
            user: None,
            env: BTreeMap::new(),
            instances: defaults::INSTANCES,
            cpus: defaults::CPUS,
            mem: defaults::MEM,
            disk: defaults::DISK,
            gpus: defaults::GPUS,
            container: None,
            networks: vec![Network::host()],
            port_definitions: vec![PortDefinition::dynamic()],
            require_ports: false,
            labels: BTreeMap::new(),
            constraints: Vec::new(),
            health_checks: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            backoff_seconds: defaults::BACKOFF_SECONDS,
            backoff_factor: defaults::BACKOFF_FACTOR,
            max_launch_delay_seconds: defaults::MAX_LAUNCH_DELAY_SECONDS,
            kill_selection: KillSelection::default(),
            dependencies: Vec::new(),
            task_kill_grace_period_seconds: None,
            version: None,
            placement: Placement::default(),
        }
    }

    /// True when tasks use container networking (ports come from `portMappings`).
    pub fn uses_container_networking(&self) -> bool {
        self.networks
            .iter()
            .any(|network| network.mode != NetworkMode::Host)
    }

    /// The app's port mappings (empty without a container).
    pub fn port_mappings(&self) -> &[PortMapping] {
        self.container
            .as_ref()
            .map_or(&[], |container| container.port_mappings.as_slice())
    }

    /// Number of ports a task gets, which bounds health-check `portIndex`.
    pub fn port_count(&self) -> usize {
        if self.uses_container_networking() {
            self.port_mappings().len()
        } else {
            self.port_definitions.len()
        }
    }

    /// The Docker image, when the app runs one.
    pub fn docker_image(&self) -> Option<&str> {
        self.container
            .as_ref()?
            .docker
            .as_ref()
            .map(|docker| docker.image.as_str())
    }

    /// The definition as Marathon's app JSON (what `GET /v2/apps/{id}` returns), defaults filled.
    pub fn to_json(&self) -> Value {
        let mut app = Map::new();
        app.insert("id".into(), json!(self.id.as_str()));
        app.insert("cmd".into(), json!(self.cmd));
        app.insert("args".into(), json!(self.args));
        app.insert("user".into(), json!(self.user));
        app.insert("env".into(), json!(self.env));
        app.insert("instances".into(), json!(self.instances));
        app.insert("cpus".into(), json!(self.cpus));
        app.insert("mem".into(), json!(self.mem));
        app.insert("disk".into(), json!(self.disk));
        app.insert("gpus".into(), json!(self.gpus));
        app.insert(
            "container".into(),
            self.container.as_ref().map_or(Value::Null, container_json),
        );
        app.insert(
            "networks".into(),
            self.networks.iter().map(network_json).collect(),
        );
        app.insert(
            "portDefinitions".into(),
            self.port_definitions
                .iter()
                .map(port_definition_json)
                .collect(),
        );
        app.insert("requirePorts".into(), json!(self.require_ports));
        app.insert("labels".into(), json!(self.labels));
        app.insert(
            "constraints".into(),
            self.constraints
                .iter()
                .map(ConstraintSpec::to_json)
                .collect(),
        );
        app.insert(
            "healthChecks".into(),
            self.health_checks.iter().map(health_check_json).collect(),
        );
        app.insert(
            "upgradeStrategy".into(),
            json!({
                "minimumHealthCapacity": self.upgrade_strategy.minimum_health_capacity,
                "maximumOverCapacity": self.upgrade_strategy.maximum_over_capacity,
            }),
        );
        app.insert("backoffSeconds".into(), json!(self.backoff_seconds));
        app.insert("backoffFactor".into(), json!(self.backoff_factor));
        app.insert(
            "maxLaunchDelaySeconds".into(),
            json!(self.max_launch_delay_seconds),
        );
        app.insert("killSelection".into(), json!(self.kill_selection.as_str()));
        app.insert(
            "dependencies".into(),
            self.dependencies
                .iter()
                .map(|dependency| json!(dependency.as_str()))
                .collect(),
        );
        app.insert(
            "taskKillGracePeriodSeconds".into(),
            json!(self.task_kill_grace_period_seconds),
        );
        app.insert("version".into(), json!(self.version));
        app.insert("placement".into(), json!(self.placement.as_str()));
        Value::Object(app)
    }

    /// Top-level JSON field names whose values differ between `self` and `other`, in name order.
    pub fn changed_fields(&self, other: &AppDefinition) -> Vec<String> {
        let (Value::Object(mine), Value::Object(theirs)) = (self.to_json(), other.to_json()) else {
            return Vec::new();
        };
        mine.iter()
            .filter(|(name, value)| theirs.get(name.as_str()) != Some(value))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// True when going from `self` to `other` needs new tasks: anything changed except
    /// `instances` (a scale is not an upgrade) and the `version` stamp.
    pub fn needs_restart(&self, other: &AppDefinition) -> bool {
        self.changed_fields(other)
            .iter()
            .any(|field| field != "instances" && field != "version")
    }
}

fn labels_json(labels: &BTreeMap<String, String>) -> Value {
    json!(labels)
}

fn container_json(container: &Container) -> Value {
    let mut object = Map::new();
    object.insert("type".into(), json!(container.container_type.as_str()));
    if let Some(docker) = &container.docker {
        object.insert(
            "docker".into(),
            json!({
                "image": docker.image,
                "forcePullImage": docker.force_pull_image,
                "privileged": docker.privileged,
            }),
        );
    }
    object.insert(
        "portMappings".into(),
        container
            .port_mappings
            .iter()
            .map(port_mapping_json)
            .collect(),
    );
    object.insert(
        "volumes".into(),
        container.volumes.iter().map(volume_json).collect(),
    );
    Value::Object(object)
}

fn port_mapping_json(mapping: &PortMapping) -> Value {
    let mut object = Map::new();
    object.insert("containerPort".into(), json!(mapping.container_port));
    if let Some(host_port) = mapping.host_port {
        object.insert("hostPort".into(), json!(host_port));
    }
    object.insert("servicePort".into(), json!(mapping.service_port));
    object.insert("protocol".into(), json!(mapping.protocol.as_str()));
    if let Some(name) = &mapping.name {
        object.insert("name".into(), json!(name));
    }
    object.insert("labels".into(), labels_json(&mapping.labels));
    Value::Object(object)
}

fn port_definition_json(definition: &PortDefinition) -> Value {
    let mut object = Map::new();
    object.insert("port".into(), json!(definition.port));
    object.insert("protocol".into(), json!(definition.protocol.as_str()));
    if let Some(name) = &definition.name {
        object.insert("name".into(), json!(name));
    }
    object.insert("labels".into(), labels_json(&definition.labels));
    Value::Object(object)
}

fn volume_json(volume: &Volume) -> Value {
    let mut object = Map::new();
    object.insert("containerPath".into(), json!(volume.container_path));
    if let Some(host_path) = &volume.host_path {
        object.insert("hostPath".into(), json!(host_path));
    }
    object.insert("mode".into(), json!(volume.mode.as_str()));
    Value::Object(object)
}

fn network_json(network: &Network) -> Value {
    let mut object = Map::new();
    object.insert("mode".into(), json!(network.mode.as_str()));
    if let Some(name) = &network.name {
        object.insert("name".into(), json!(name));
    }
    Value::Object(object)
}

fn health_check_json(check: &HealthCheck) -> Value {
    let mut object = Map::new();
    object.insert("protocol".into(), json!(check.protocol.as_str()));
    if let Some(path) = &check.path {
        object.insert("path".into(), json!(path));
    }
    if let Some(port_index) = check.port_index {
        object.insert("portIndex".into(), json!(port_index));
    }
    if let Some(port) = check.port {
        object.insert("port".into(), json!(port));
    }
    if let Some(command) = &check.command {
        object.insert("command".into(), json!({ "value": command }));
    }
    object.insert(
        "gracePeriodSeconds".into(),
        json!(check.grace_period_seconds),
    );
    object.insert("intervalSeconds".into(), json!(check.interval_seconds));
    object.insert("timeoutSeconds".into(), json!(check.timeout_seconds));
    object.insert(
        "maxConsecutiveFailures".into(),
        json!(check.max_consecutive_failures),
    );
    object.insert("delaySeconds".into(), json!(check.delay_seconds));
    object.insert("ignoreHttp1xx".into(), json!(check.ignore_http1xx));
    Value::Object(object)
}
