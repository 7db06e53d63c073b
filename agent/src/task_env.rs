//! Ports and environment of a task: `PORT0…`, `PORT`, `PORT_<NAME>`, `HOST`, the command's
//! own variables, and how port mappings bind host ports. Pure.

use std::collections::BTreeMap;

use agora_proto::Resources;
use agora_proto::v1::{NetworkMode, TaskInfo};

use crate::error::RuntimeError;

/// One published port: container port (0 in host networking) bound to a host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// Port inside the container.
    pub container_port: u32,
    /// Port on the host.
    pub host_port: u32,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Name of the mapping, if any.
    pub name: String,
}

/// The host ports of a task, in the order `PORT0`, `PORT1`, …: the port mappings' host ports
/// in order (a mapping with host port 0 takes the next unused port of the "ports" resource),
/// else the "ports" resource in ascending order.
pub fn task_host_ports(task: &TaskInfo) -> Result<Vec<u32>, RuntimeError> {
    let resources =
        Resources::from_proto(&task.resources).map_err(|error| RuntimeError::InvalidTask {
            reason: format!("resources: {error}"),
        })?;
    let mut resource_ports = Vec::new();
    for value in resources.ports().values() {
        let port = u32::try_from(value)
            .ok()
            .filter(|port| *port <= u32::from(u16::MAX))
            .ok_or_else(|| RuntimeError::InvalidTask {
                reason: format!("resources.ports: {value} is not a valid port"),
            })?;
        resource_ports.push(port);
        if resource_ports.len() > 65536 {
            break;
        }
    }
    let mappings = task
        .container
        .as_ref()
        .map(|container| container.port_mappings.as_slice())
        .unwrap_or_default();
    if mappings.is_empty() {
        return Ok(resource_ports);
    }
    let explicit: Vec<u32> = mappings
        .iter()
        .map(|m| m.host_port)
        .filter(|port| *port != 0)
        .collect();
    let mut free = resource_ports
        .iter()
        .copied()
        .filter(|port| !explicit.contains(port));
    let mut host_ports = Vec::with_capacity(mappings.len());
    for (index, mapping) in mappings.iter().enumerate() {
        let host_port = if mapping.host_port != 0 {
            mapping.host_port
        } else {
            free.next().ok_or_else(|| RuntimeError::InvalidTask {
                reason: format!(
                    "container.port_mappings[{index}]: host_port is 0 and the task's ports resource has no port left"
                ),
            })?
        };
        if host_port > u32::from(u16::MAX) {
            return Err(RuntimeError::InvalidTask {
                reason: format!(
                    "container.port_mappings[{index}].host_port: {host_port} is not a valid port"
                ),
            });
        }
        host_ports.push(host_port);
    }
    Ok(host_ports)
}

/// The port bindings a container needs: one per port mapping, with its host port resolved.
pub fn port_bindings(task: &TaskInfo, host_ports: &[u32]) -> Vec<PortBinding> {
    let mappings = task
        .container
        .as_ref()
        .map(|container| container.port_mappings.as_slice())
        .unwrap_or_default();
    mappings
        .iter()
        .zip(host_ports)
        .map(|(mapping, &host_port)| PortBinding {
            container_port: if mapping.container_port == 0 {
                host_port
            } else {
                mapping.container_port
            },
            host_port,
            protocol: if mapping.protocol.is_empty() {
                "tcp".to_owned()
            } else {
                mapping.protocol.to_lowercase()
            },
            name: mapping.name.clone(),
        })
        .collect()
}

/// The task's network: as asked, else BRIDGE when it maps ports and HOST otherwise.
pub fn network_mode(task: &TaskInfo) -> NetworkMode {
    let Some(container) = task.container.as_ref() else {
        return NetworkMode::Host;
    };
    match container.network() {
        NetworkMode::Unspecified if container.port_mappings.is_empty() => NetworkMode::Host,
        NetworkMode::Unspecified => NetworkMode::Bridge,
        explicit => explicit,
    }
}

/// The environment of a task: its command's variables, then `HOST`, `PORT`, `PORT0…` and
/// `PORT_<NAME>` (the agent's variables win).
pub fn task_environment(
    task: &TaskInfo,
    host_ports: &[u32],
    hostname: &str,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = task
        .command
        .as_ref()
        .map(|command| command.environment.clone().into_iter().collect())
        .unwrap_or_default();
    env.insert("HOST".to_owned(), hostname.to_owned());
    env.insert("AGORA_TASK_ID".to_owned(), task.task_id.clone());
    for (index, port) in host_ports.iter().enumerate() {
        env.insert(format!("PORT{index}"), port.to_string());
    }
    if let Some(first) = host_ports.first() {
        env.insert("PORT".to_owned(), first.to_string());
    }
    env.insert(
        "PORTS".to_owned(),
        host_ports
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    for binding in port_bindings(task, host_ports) {
        if binding.name.is_empty() {
            continue;
        }
        env.insert(
            format!("PORT_{}", env_name(&binding.name)),
            binding.host_port.to_string(),
        );
    }
    env
}

/// `name` as an environment variable suffix: uppercase, anything else than A-Z0-9 becomes `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::RangeSet;
    use agora_proto::v1::{CommandInfo, ContainerInfo, PortMapping};

    fn task_with_ports(ports: RangeSet) -> TaskInfo {
        TaskInfo {
            task_id: "web.1".into(),
            resources: Resources::cpus_mem(0.5, 64.0)
                .with_ranges("ports", ports)
                .to_proto(),
            command: Some(CommandInfo {
                environment: [
                    ("MODE".to_owned(), "prod".to_owned()),
                    ("HOST".to_owned(), "x".to_owned()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ports_resource_gives_port0_onwards_in_ascending_order() {
        let task = task_with_ports(RangeSet::from_values([31005, 31001, 31003]));
        let ports = task_host_ports(&task).unwrap();
        assert_eq!(ports, vec![31001, 31003, 31005]);
        let env = task_environment(&task, &ports, "node-a");
        assert_eq!(env["PORT0"], "31001");
        assert_eq!(env["PORT2"], "31005");
        assert_eq!(env["PORT"], "31001");
        assert_eq!(env["HOST"], "node-a", "the agent's HOST wins");
        assert_eq!(env["MODE"], "prod");
        assert_eq!(network_mode(&task), NetworkMode::Host);
    }

    #[test]
    fn port_mappings_take_resource_ports_and_get_named_variables() {
        let mut task = task_with_ports(RangeSet::from_values([31010, 31011]));
        task.container = Some(ContainerInfo {
            image: "img".into(),
            port_mappings: vec![
                PortMapping {
                    container_port: 8080,
                    host_port: 0,
                    protocol: String::new(),
                    name: "http-api".into(),
                },
                PortMapping {
                    container_port: 53,
                    host_port: 31010,
                    protocol: "UDP".into(),
                    name: String::new(),
                },
            ],
            ..Default::default()
        });
        let ports = task_host_ports(&task).unwrap();
        assert_eq!(ports, vec![31011, 31010]);
        let env = task_environment(&task, &ports, "h");
        assert_eq!(env["PORT_HTTP_API"], "31011");
        assert_eq!(env["PORT1"], "31010");
        let bindings = port_bindings(&task, &ports);
        assert_eq!(bindings[0].container_port, 8080);
        assert_eq!(bindings[0].protocol, "tcp");
        assert_eq!(bindings[1].protocol, "udp");
        assert_eq!(network_mode(&task), NetworkMode::Bridge);
    }

    #[test]
    fn a_mapping_without_a_port_left_is_an_error_naming_it() {
        let mut task = task_with_ports(RangeSet::new());
        task.container = Some(ContainerInfo {
            port_mappings: vec![PortMapping {
                container_port: 80,
                ..Default::default()
            }],
            ..Default::default()
        });
        let error = task_host_ports(&task).unwrap_err().to_string();
        assert!(error.contains("port_mappings[0]"), "{error}");
    }

    #[test]
    fn env_names_are_sanitised() {
        assert_eq!(env_name("web-ui.v2"), "WEB_UI_V2");
    }
}
