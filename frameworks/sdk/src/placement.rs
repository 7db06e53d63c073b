//! Packing tasks into offers: what is left of an offer, and tasks built against it.

use std::collections::HashMap;
use std::time::Duration;

use agora_proto::v1;
use agora_proto::{AgentId, DISK, OfferId, PORTS, RangeSet, Resources, TaskId};

/// Why a task could not be built against an offer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The offer's resources are malformed.
    #[error("offer {offer_id}: resources: {reason}")]
    InvalidOffer {
        /// The offer.
        offer_id: OfferId,
        /// What is wrong with its resources.
        reason: String,
    },
    /// A task field is missing or out of range.
    #[error("task {field}: {reason}")]
    InvalidTask {
        /// The offending builder field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// What is left of the offer cannot hold the task.
    #[error("offer {offer_id}: task needs {needed} but only {available} is left")]
    InsufficientResources {
        /// The offer.
        offer_id: OfferId,
        /// What the task asks for (ports as a count).
        needed: String,
        /// What is left of the offer.
        available: String,
    },
}

/// What is left of one offer while several tasks are packed into it.
#[derive(Debug, Clone)]
pub struct OfferResources {
    offer_id: OfferId,
    agent_id: AgentId,
    hostname: String,
    labels: HashMap<String, String>,
    remaining: Resources,
}

impl OfferResources {
    /// Reads an offer; fails when its resources are malformed.
    pub fn new(offer: &v1::Offer) -> Result<Self, PlacementError> {
        let offer_id = OfferId::new(offer.id.clone());
        let remaining = Resources::from_proto(&offer.resources).map_err(|error| {
            PlacementError::InvalidOffer {
                offer_id: offer_id.clone(),
                reason: error.to_string(),
            }
        })?;
        Ok(Self {
            offer_id,
            agent_id: AgentId::new(offer.agent_id.clone()),
            hostname: offer.hostname.clone(),
            labels: offer.labels.clone(),
            remaining,
        })
    }

    /// The offer's id, to pass to `accept`.
    pub fn offer_id(&self) -> &OfferId {
        &self.offer_id
    }

    /// The agent the offer is on.
    pub fn agent_id(&self) -> &AgentId {
        &self.agent_id
    }

    /// The agent's hostname.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The agent's labels, for constraints.
    pub fn labels(&self) -> &HashMap<String, String> {
        &self.labels
    }

    /// What has not been taken yet.
    pub fn remaining(&self) -> &Resources {
        &self.remaining
    }

    /// True when what is left holds `wanted`.
    pub fn fits(&self, wanted: &Resources) -> bool {
        self.remaining.contains(wanted)
    }

    /// Takes `wanted` out of what is left and returns it, or `None` (taking nothing) when it
    /// does not fit.
    pub fn try_take(&mut self, wanted: &Resources) -> Option<Resources> {
        let rest = self.remaining.checked_sub(wanted)?;
        self.remaining = rest;
        Some(wanted.clone())
    }

    /// The lowest `count` host ports still free in the offer, without taking them.
    pub fn free_ports(&self, count: usize) -> Option<Vec<u64>> {
        if count == 0 {
            return Some(Vec::new());
        }
        self.remaining.ranges_ref(PORTS)?.first_values(count)
    }
}

/// Builds a [`v1::TaskInfo`] against an offer: resources, host ports picked from the offer's
/// ranges, command or container image, env, labels, health check and kill grace period.
#[derive(Debug, Clone, Default)]
pub struct TaskBuilder {
    name: String,
    task_id: Option<TaskId>,
    cpus: f64,
    mem: f64,
    disk: f64,
    port_count: usize,
    shell: Option<String>,
    arguments: Vec<String>,
    user: Option<String>,
    image: Option<String>,
    network: Option<v1::NetworkMode>,
    container_ports: Vec<u32>,
    environment: HashMap<String, String>,
    labels: HashMap<String, String>,
    health_check: Option<v1::HealthCheck>,
    kill_grace: Option<Duration>,
    privileged: bool,
    volumes: Vec<String>,
}

impl TaskBuilder {
    /// A task named `name`, needing nothing yet. Its id defaults to `<name>.<uuid>`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Uses this task id instead of a generated one.
    pub fn task_id(mut self, task_id: TaskId) -> Self {
        self.task_id = Some(task_id);
        self
    }

    /// Cores the task needs.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Memory in MiB.
    pub fn mem(mut self, mem: f64) -> Self {
        self.mem = mem;
        self
    }

    /// Disk in MiB.
    pub fn disk(mut self, disk: f64) -> Self {
        self.disk = disk;
        self
    }

    /// How many host ports to reserve (the agent exposes them as `PORT0`, `PORT1`, ...).
    pub fn ports(mut self, count: usize) -> Self {
        self.port_count = count;
        self
    }

    /// Runs `command` through `/bin/sh -c`.
    pub fn shell(mut self, command: impl Into<String>) -> Self {
        self.shell = Some(command.into());
        self
    }

    /// Execs these arguments (for an image: the command after its entrypoint).
    pub fn args(mut self, arguments: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.arguments = arguments.into_iter().map(Into::into).collect();
        self
    }

    /// Runs the command as this user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Runs in a container of this Docker image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Asks for a privileged container; the agent runs it only when started with
    /// `--allow-privileged`, and fails the task otherwise.
    pub fn privileged(mut self, privileged: bool) -> Self {
        self.privileged = privileged;
        self
    }

    /// Bind-mounts a host path: `host:container[:ro]`. The agent mounts it only when its
    /// host-path policy allows, and fails the task otherwise.
    pub fn volume(mut self, spec: impl Into<String>) -> Self {
        self.volumes.push(spec.into());
        self
    }

    /// The container's network mode.
    pub fn network(mut self, network: v1::NetworkMode) -> Self {
        self.network = Some(network);
        self
    }

    /// Publishes `container_port` on the next reserved host port (bridge networking);
    /// reserves one more host port when needed.
    pub fn container_port(mut self, container_port: u32) -> Self {
        self.container_ports.push(container_port);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.insert(name.into(), value.into());
        self
    }

    /// Sets a task label.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// Health check the agent runs.
    pub fn health_check(mut self, health_check: v1::HealthCheck) -> Self {
        self.health_check = Some(health_check);
        self
    }

    /// Time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = Some(grace);
        self
    }

    fn total_port_count(&self) -> usize {
        self.port_count.max(self.container_ports.len())
    }

    /// The scalar resources the task needs (ports are picked per offer), validated.
    pub fn scalar_resources(&self) -> Result<Resources, PlacementError> {
        if self.name.trim().is_empty() {
            return Err(PlacementError::InvalidTask {
                field: "name",
                reason: "must not be empty".into(),
            });
        }
        let mut resources = Resources::new();
        for (field, name, value) in [
            ("cpus", agora_proto::CPUS, self.cpus),
            ("mem", agora_proto::MEM, self.mem),
            ("disk", DISK, self.disk),
        ] {
            resources
                .set_scalar(name, value)
                .map_err(|error| PlacementError::InvalidTask {
                    field,
                    reason: error.to_string(),
                })?;
        }
        if resources.cpus() <= 0.0 && resources.mem() <= 0.0 {
            return Err(PlacementError::InvalidTask {
                field: "cpus",
                reason: "a task needs some cpus or mem".into(),
            });
        }
        Ok(resources)
    }

    /// Builds the task against a whole offer.
    pub fn build(&self, offer: &v1::Offer) -> Result<v1::TaskInfo, PlacementError> {
        let mut offer_resources = OfferResources::new(offer)?;
        self.build_in(&mut offer_resources)
    }

    /// Builds the task from what is left of an offer and takes its resources out of it.
    /// On error nothing is taken.
    pub fn build_in(&self, offer: &mut OfferResources) -> Result<v1::TaskInfo, PlacementError> {
        let mut needed = self.scalar_resources()?;
        let port_count = self.total_port_count();
        let insufficient = |offer: &OfferResources, needed: &Resources| {
            let mut wanted = needed.to_string();
            if port_count > 0 {
                wanted = format!("{wanted};{port_count} ports");
            }
            PlacementError::InsufficientResources {
                offer_id: offer.offer_id().clone(),
                needed: wanted,
                available: offer.remaining().to_string(),
            }
        };
        let host_ports = offer
            .free_ports(port_count)
            .ok_or_else(|| insufficient(offer, &needed))?;
        if !host_ports.is_empty() {
            needed.set_ranges(PORTS, RangeSet::from_values(host_ports.iter().copied()));
        }
        if offer.try_take(&needed).is_none() {
            needed.set_ranges(PORTS, RangeSet::new());
            return Err(insufficient(offer, &needed));
        }
        Ok(self.task_info(offer.agent_id(), &needed, &host_ports))
    }

    fn task_info(
        &self,
        agent_id: &AgentId,
        resources: &Resources,
        host_ports: &[u64],
    ) -> v1::TaskInfo {
        let task_id = self
            .task_id
            .clone()
            .unwrap_or_else(|| TaskId::new(format!("{}.{}", self.name, uuid::Uuid::new_v4())));
        let has_command = self.shell.is_some()
            || !self.arguments.is_empty()
            || !self.environment.is_empty()
            || self.user.is_some();
        let command = has_command.then(|| v1::CommandInfo {
            shell: self.shell.is_some(),
            value: self.shell.clone().unwrap_or_default(),
            arguments: self.arguments.clone(),
            environment: self.environment.clone(),
            user: self.user.clone().unwrap_or_default(),
        });
        let has_container = self.image.is_some()
            || self.network.is_some()
            || !self.container_ports.is_empty()
            || self.privileged
            || !self.volumes.is_empty();
        let container = has_container.then(|| v1::ContainerInfo {
            image: self.image.clone().unwrap_or_default(),
            force_pull: false,
            network: self.network.unwrap_or(v1::NetworkMode::Unspecified) as i32,
            port_mappings: self
                .container_ports
                .iter()
                .zip(host_ports)
                .map(|(&container_port, &host_port)| v1::PortMapping {
                    container_port,
                    host_port: u32::try_from(host_port).unwrap_or(0),
                    protocol: "tcp".into(),
                    name: String::new(),
                })
                .collect(),
            privileged: self.privileged,
            volumes: self.volumes.clone(),
        });
        v1::TaskInfo {
            task_id: task_id.into_string(),
            name: self.name.clone(),
            agent_id: agent_id.to_string(),
            resources: resources.to_proto(),
            command,
            container,
            health_check: self.health_check.clone(),
            kill_grace_period_seconds: self
                .kill_grace
                .map(|grace| grace.as_secs_f64())
                .unwrap_or(0.0),
            labels: self.labels.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(resources: &str) -> v1::Offer {
        v1::Offer {
            id: "offer-1".into(),
            framework_id: "fw-1".into(),
            agent_id: "agent-1".into(),
            hostname: "host-a".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            labels: HashMap::from([("disk".to_owned(), "ssd".to_owned())]),
        }
    }

    #[test]
    fn builds_a_task_with_ports_from_the_offer() {
        let task = TaskBuilder::new("web")
            .cpus(0.5)
            .mem(128.0)
            .ports(2)
            .shell("httpd -f -p $PORT0")
            .env("MODE", "test")
            .label("app", "web")
            .kill_grace(Duration::from_secs(3))
            .build(&offer("cpus:2;mem:1024;ports:[31000-31000,31005-31010]"))
            .unwrap();
        assert!(task.task_id.starts_with("web."));
        assert_eq!(task.agent_id, "agent-1");
        let resources = Resources::from_proto(&task.resources).unwrap();
        assert_eq!(resources.cpus(), 0.5);
        assert_eq!(resources.mem(), 128.0);
        assert_eq!(
            resources.ports().values().collect::<Vec<_>>(),
            vec![31000, 31005]
        );
        let command = task.command.unwrap();
        assert!(command.shell);
        assert_eq!(command.value, "httpd -f -p $PORT0");
        assert_eq!(command.environment["MODE"], "test");
        assert_eq!(task.labels["app"], "web");
        assert_eq!(task.kill_grace_period_seconds, 3.0);
        assert!(task.container.is_none());
    }

    #[test]
    fn packing_several_tasks_uses_up_the_offer_and_never_reuses_ports() {
        let mut remaining =
            OfferResources::new(&offer("cpus:1;mem:256;ports:[31000-31002]")).unwrap();
        let builder = TaskBuilder::new("worker")
            .cpus(0.4)
            .mem(100.0)
            .ports(1)
            .image("busybox");
        let first = builder.build_in(&mut remaining).unwrap();
        let second = builder.build_in(&mut remaining).unwrap();
        let first_ports = Resources::from_proto(&first.resources).unwrap().ports();
        let second_ports = Resources::from_proto(&second.resources).unwrap().ports();
        assert_ne!(first_ports, second_ports);
        assert_eq!(first.container.unwrap().image, "busybox");
        let error = builder.build_in(&mut remaining).unwrap_err();
        assert!(
            matches!(error, PlacementError::InsufficientResources { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("offer-1"), "{error}");
        // A failed build takes nothing.
        assert_eq!(remaining.remaining().cpus(), 0.2);
        assert_eq!(remaining.remaining().mem(), 56.0);
        assert_eq!(remaining.remaining().ports().count(), 1);
    }

    #[test]
    fn try_take_is_all_or_nothing() {
        let mut remaining = OfferResources::new(&offer("cpus:1;mem:100")).unwrap();
        assert_eq!(remaining.labels()["disk"], "ssd");
        assert!(
            remaining
                .try_take(&Resources::cpus_mem(2.0, 10.0))
                .is_none()
        );
        assert_eq!(remaining.remaining(), &Resources::cpus_mem(1.0, 100.0));
        let taken = remaining
            .try_take(&Resources::cpus_mem(0.25, 10.0))
            .unwrap();
        assert_eq!(taken, Resources::cpus_mem(0.25, 10.0));
        assert_eq!(remaining.remaining(), &Resources::cpus_mem(0.75, 90.0));
    }

    #[test]
    fn container_ports_map_to_picked_host_ports() {
        let task = TaskBuilder::new("api")
            .cpus(0.1)
            .mem(32.0)
            .image("img")
            .network(v1::NetworkMode::Bridge)
            .container_port(8080)
            .build(&offer("cpus:1;mem:100;ports:[40000-40010]"))
            .unwrap();
        let container = task.container.unwrap();
        assert_eq!(container.network, v1::NetworkMode::Bridge as i32);
        assert_eq!(container.port_mappings.len(), 1);
        assert_eq!(container.port_mappings[0].container_port, 8080);
        assert_eq!(container.port_mappings[0].host_port, 40000);
        let ports = Resources::from_proto(&task.resources).unwrap().ports();
        assert_eq!(ports.values().collect::<Vec<_>>(), vec![40000]);
    }

    #[test]
    fn invalid_tasks_name_the_field() {
        let error = TaskBuilder::new("bad")
            .cpus(-1.0)
            .mem(10.0)
            .build(&offer("cpus:1;mem:100"))
            .unwrap_err();
        assert!(error.to_string().contains("cpus"), "{error}");
        let error = TaskBuilder::new("")
            .cpus(1.0)
            .build(&offer("cpus:1;mem:100"))
            .unwrap_err();
        assert!(error.to_string().contains("name"), "{error}");
        let error = TaskBuilder::new("nothing")
            .build(&offer("cpus:1"))
            .unwrap_err();
        assert!(
            matches!(error, PlacementError::InvalidTask { .. }),
            "{error}"
        );
        let mut malformed = offer("cpus:1");
        malformed.resources.push(v1::Resource {
            name: "mem".into(),
            value: None,
        });
        let error = TaskBuilder::new("x")
            .cpus(1.0)
            .build(&malformed)
            .unwrap_err();
        assert!(
            matches!(error, PlacementError::InvalidOffer { .. }),
            "{error}"
        );
    }

    #[test]
    fn ports_missing_from_the_offer_are_insufficient() {
        let error = TaskBuilder::new("web")
            .cpus(0.1)
            .ports(1)
            .build(&offer("cpus:1;mem:100"))
            .unwrap_err();
        assert!(error.to_string().contains("1 ports"), "{error}");
    }
}
