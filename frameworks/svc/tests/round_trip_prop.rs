//! Property: any definition that validates survives `to_json` -> parse unchanged.

use std::collections::BTreeMap;

use agora_svc::{
    AppDefinition, ConstraintSpec, Container, ContainerType, DockerSpec, HealthCheck,
    HealthCheckProtocol, KillSelection, Network, NetworkMode, PathId, Placement, PortDefinition,
    PortMapping, PortProtocol, UpgradeStrategy, Volume, VolumeMode,
};
use proptest::prelude::*;

fn path_id() -> impl Strategy<Value = PathId> {
    prop::collection::vec("[a-z][a-z0-9-]{0,4}[a-z0-9]", 1..4)
        .prop_map(|segments| PathId::parse(&format!("/{}", segments.join("/"))).unwrap())
}

fn text_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[A-Za-z_/~]{1,6}", ".{0,8}", 0..3)
}

fn protocol() -> impl Strategy<Value = PortProtocol> {
    prop_oneof![
        Just(PortProtocol::Tcp),
        Just(PortProtocol::Udp),
        Just(PortProtocol::UdpTcp)
    ]
}

fn port_definition() -> impl Strategy<Value = PortDefinition> {
    (
        any::<u16>(),
        protocol(),
        prop::option::of("[a-z]{1,5}"),
        text_map(),
    )
        .prop_map(|(port, protocol, name, labels)| PortDefinition {
            port,
            protocol,
            name,
            labels,
        })
}

fn port_mapping() -> impl Strategy<Value = PortMapping> {
    (
        any::<u16>(),
        prop::option::of(any::<u16>()),
        any::<u16>(),
        protocol(),
        prop::option::of("[a-z]{1,5}"),
        text_map(),
    )
        .prop_map(
            |(container_port, host_port, service_port, protocol, name, labels)| PortMapping {
                container_port,
                host_port,
                service_port,
                protocol,
                name,
                labels,
            },
        )
}

fn health_check() -> impl Strategy<Value = HealthCheck> {
    let protocols = prop_oneof![
        Just(HealthCheckProtocol::Http),
        Just(HealthCheckProtocol::Https),
        Just(HealthCheckProtocol::Tcp),
        Just(HealthCheckProtocol::Command),
        Just(HealthCheckProtocol::MesosHttp),
        Just(HealthCheckProtocol::MesosTcp),
    ];
    (
        protocols,
        0u32..2,
        prop::option::of(any::<u16>()),
        0u32..100,
        1u32..100,
        any::<bool>(),
    )
        .prop_map(
            |(protocol, port_index, port, timeout, interval_extra, ignore)| {
                let mut check = HealthCheck::new(protocol);
                if protocol == HealthCheckProtocol::Command {
                    check.command = Some("true".into());
                } else if port.is_some() {
                    check.port = port;
                    check.port_index = None;
                } else {
                    check.port_index = Some(port_index);
                }
                check.interval_seconds = timeout + interval_extra;
                check.timeout_seconds = timeout;
                check.ignore_http1xx = ignore;
                check
            },
        )
}

fn constraint() -> impl Strategy<Value = ConstraintSpec> {
    prop_oneof![
        Just(ConstraintSpec::Marathon(vec![
            "hostname".into(),
            "UNIQUE".into()
        ])),
        "[1-9]".prop_map(|n| ConstraintSpec::Marathon(vec!["rack".into(), "MAX_PER".into(), n])),
        "~?[a-z]{1,4}(==|!=)[a-z*]{1,4}".prop_map(ConstraintSpec::Expression),
    ]
}

fn container(bridge: bool) -> impl Strategy<Value = Option<Container>> {
    let mappings = if bridge {
        prop::collection::vec(port_mapping(), 0..3).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        any::<bool>(),
        prop::option::of(("[a-z]{1,6}(:[0-9])?", any::<bool>(), any::<bool>())),
        mappings,
        prop::collection::vec(
            (
                "/[a-z]{1,5}",
                // Only host bind mounts are supported: a volume always has a host path.
                "/[a-z]{1,5}".prop_map(Some),
                any::<bool>(),
            ),
            0..2,
        ),
    )
        .prop_map(move |(mesos, docker, port_mappings, volumes)| {
            // Volumes need an image to be mounted into.
            let volumes = if docker.is_some() {
                volumes
            } else {
                Vec::new()
            };
            if !bridge && docker.is_none() && volumes.is_empty() {
                return None;
            }
            Some(Container {
                container_type: if mesos {
                    ContainerType::Mesos
                } else {
                    ContainerType::Docker
                },
                docker: docker.map(|(image, force_pull_image, privileged)| DockerSpec {
                    image,
                    force_pull_image,
                    privileged,
                }),
                port_mappings,
                volumes: volumes
                    .into_iter()
                    .map(|(container_path, host_path, read_only)| Volume {
                        container_path,
                        host_path,
                        mode: if read_only {
                            VolumeMode::ReadOnly
                        } else {
                            VolumeMode::ReadWrite
                        },
                    })
                    .collect(),
            })
        })
}

fn app() -> impl Strategy<Value = AppDefinition> {
    let command = prop_oneof![
        "[a-z][a-z ]{0,9}".prop_map(|cmd| (Some(cmd), None)),
        prop::collection::vec(".{0,5}", 1..3).prop_map(|args| (None, Some(args))),
        Just((None, None)),
    ];
    let identity = (path_id(), command, text_map(), text_map());
    let sizing = (
        0u32..50,
        // The protocol's task minimums: 0.01 cpus, 6 MiB.
        0.01f64..64.0,
        6.0f64..65536.0,
        0.0f64..1e6,
        0u32..4,
    );
    let networking = any::<bool>().prop_flat_map(|bridge| {
        let definitions = if bridge {
            Just(Vec::new()).boxed()
        } else {
            prop::collection::vec(port_definition(), 0..3).boxed()
        };
        (Just(bridge), container(bridge), definitions)
    });
    let behaviour = (
        prop::collection::vec(health_check(), 0..3),
        prop::collection::vec(constraint(), 0..3),
        (0.0f64..=1.0, 0.0f64..=1.0),
        // Durations within the protocol's one-year bound.
        (0u32..=31_536_000, 1.0f64..10.0, 0u32..=31_536_000),
        (
            any::<bool>(),
            0u8..3,
            prop::option::of(0u32..=31_536_000),
            prop::option::of("[0-9a-z:.-]{1,12}"),
        ),
        prop::collection::vec(path_id(), 0..2),
    );
    (identity, sizing, networking, behaviour).prop_map(
        |(
            (id, (cmd, args), env, labels),
            sizing,
            (bridge, container, port_definitions),
            behaviour,
        )| {
            let (instances, cpus, mem, disk, gpus) = sizing;
            let (health_checks, constraints, capacity, backoff, misc, dependencies) = behaviour;
            let mut app = AppDefinition::new(id);
            app.cmd = cmd;
            app.args = args;
            app.env = env;
            app.labels = labels;
            app.instances = instances;
            app.cpus = cpus;
            app.mem = mem;
            app.disk = disk;
            app.gpus = gpus;
            app.container = container;
            if bridge {
                app.networks = vec![Network {
                    mode: NetworkMode::ContainerBridge,
                    name: None,
                }];
            }
            app.port_definitions = port_definitions;
            app.health_checks = health_checks;
            app.constraints = constraints;
            app.upgrade_strategy = UpgradeStrategy {
                minimum_health_capacity: capacity.0,
                maximum_over_capacity: capacity.1,
            };
            app.backoff_seconds = u64::from(backoff.0);
            app.backoff_factor = backoff.1;
            app.max_launch_delay_seconds = u64::from(backoff.2);
            app.kill_selection = if misc.0 {
                KillSelection::OldestFirst
            } else {
                KillSelection::YoungestFirst
            };
            app.placement =
                [Placement::Binpack, Placement::Spread, Placement::Random][misc.1 as usize];
            app.task_kill_grace_period_seconds = misc.2.map(u64::from);
            app.version = misc.3;
            app.dependencies = dependencies;
            app
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_global_rejects: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn valid_definitions_survive_to_json_and_parse(app in app()) {
        prop_assume!(app.validate().is_ok());
        let rendered = app.to_json();
        let parsed = AppDefinition::from_json_value(&rendered)
            .map_err(|errors| TestCaseError::fail(format!("{errors}: {rendered}")))?;
        prop_assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        prop_assert_eq!(&parsed.app, &app);
        prop_assert!(!parsed.app.needs_restart(&app));
    }
}
