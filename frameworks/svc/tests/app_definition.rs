//! Behaviour of the Marathon app definition: defaults, validation paths, unknown fields, round trips.

use agora_svc::{
    AppDefinition, AppJsonError, ConstraintSpec, HealthCheckProtocol, KillSelection, NetworkMode,
    PathId, Placement, PortProtocol, ValidationErrors, defaults,
};
use serde_json::{Value, json};

fn parse(value: Value) -> Result<agora_svc::ParsedApp, ValidationErrors> {
    AppDefinition::from_json_value(&value)
}

fn errors(value: Value) -> ValidationErrors {
    match parse(value) {
        Ok(parsed) => panic!("expected errors, got {:?}", parsed.app),
        Err(errors) => errors,
    }
}

fn assert_error_at(errors: &ValidationErrors, path: &str, needle: &str) {
    let messages = errors.errors_at(path);
    assert!(
        messages.iter().any(|message| message.contains(needle)),
        "expected {needle:?} at {path}, got {}",
        errors.to_json()
    );
}

#[test]
fn defaults_are_marathons() {
    let parsed = parse(json!({"id": "web", "cmd": "sleep 1000"})).unwrap();
    let app = parsed.app;
    assert!(parsed.warnings.is_empty());
    assert_eq!(app.id.as_str(), "/web");
    assert_eq!(app.cpus, 1.0);
    assert_eq!(app.mem, 128.0);
    assert_eq!(app.disk, 0.0);
    assert_eq!(app.gpus, 0);
    assert_eq!(app.instances, 1);
    assert_eq!(app.backoff_seconds, 1);
    assert_eq!(app.backoff_factor, 1.15);
    assert_eq!(
        app.max_launch_delay_seconds,
        defaults::MAX_LAUNCH_DELAY_SECONDS
    );
    assert_eq!(app.upgrade_strategy.minimum_health_capacity, 1.0);
    assert_eq!(app.upgrade_strategy.maximum_over_capacity, 1.0);
    assert_eq!(app.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(app.placement, Placement::Binpack);
    assert_eq!(app.networks.len(), 1);
    assert_eq!(app.networks[0].mode, NetworkMode::Host);
    assert_eq!(app.port_definitions.len(), 1, "one dynamic port by default");
    assert_eq!(app.port_definitions[0].port, 0);
    assert_eq!(app.port_definitions[0].protocol, PortProtocol::Tcp);
    assert!(!app.require_ports);
    assert!(app.container.is_none());
    assert_eq!(app.version, None);
}

#[test]
fn health_check_defaults() {
    let app = parse(json!({"id": "/web", "cmd": "x", "healthChecks": [{}]}))
        .unwrap()
        .app;
    let check = &app.health_checks[0];
    assert_eq!(check.protocol, HealthCheckProtocol::Http);
    assert_eq!(check.path.as_deref(), Some("/"));
    assert_eq!(check.port_index, Some(0));
    assert_eq!(check.grace_period_seconds, 300);
    assert_eq!(check.interval_seconds, 60);
    assert_eq!(check.timeout_seconds, 20);
    assert_eq!(check.max_consecutive_failures, 3);
    assert_eq!(check.delay_seconds, 15);
    assert!(!check.ignore_http1xx);
}

#[test]
fn bridge_networking_has_no_default_port_definitions() {
    let app = parse(json!({
        "id": "/web",
        "container": {"docker": {"image": "nginx", "network": "BRIDGE"},
                      "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]},
    }))
    .unwrap()
    .app;
    assert_eq!(
        app.networks[0].mode,
        NetworkMode::ContainerBridge,
        "legacy network folded in"
    );
    assert!(app.port_definitions.is_empty());
    assert_eq!(app.port_count(), 1);
    assert_eq!(app.port_mappings()[0].host_port, Some(0));
    assert_eq!(app.docker_image(), Some("nginx"));
}

#[test]
fn dependencies_resolve_against_parent_group() {
    let app = parse(json!({
        "id": "/prod/web", "cmd": "x", "dependencies": ["db", "../shared/cache", "/ops/log"],
    }))
    .unwrap()
    .app;
    let dependencies: Vec<&str> = app.dependencies.iter().map(PathId::as_str).collect();
    assert_eq!(dependencies, ["/prod/db", "/shared/cache", "/ops/log"]);
}

#[test]
fn constraints_accept_both_forms() {
    let app = parse(json!({
        "id": "/web", "cmd": "x", "constraints": [["hostname", "UNIQUE"], "~zone==a", "disk==ssd"],
    }))
    .unwrap()
    .app;
    assert_eq!(
        app.constraints[0],
        ConstraintSpec::Marathon(vec!["hostname".into(), "UNIQUE".into()])
    );
    assert_eq!(
        app.constraints[1],
        ConstraintSpec::Expression("~zone==a".into())
    );
}

#[test]
fn each_rule_reports_its_path() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"id": "/a", "cmd": "x", "cpus": 0}),
            "/cpus",
            "between 0.01",
        ),
        (
            json!({"id": "/a", "cmd": "x", "mem": -1}),
            "/mem",
            "between 6",
        ),
        (
            json!({"id": "/a", "cmd": "x", "mem": 0}),
            "/mem",
            "between 6",
        ),
        (
            json!({"id": "/a", "cmd": "x", "mem": 5}),
            "/mem",
            "between 6",
        ),
        (
            json!({"id": "/a", "cmd": "x", "disk": -1}),
            "/disk",
            "between 0",
        ),
        (
            json!({"id": "/a", "cmd": "x", "instances": 4_000_000_000u32}),
            "/instances",
            "at most 1000000",
        ),
        (
            json!({"id": "/a", "cmd": "x", "cpus": 1e18}),
            "/cpus",
            "and 1e12, got 1e18",
        ),
        (
            json!({"id": format!("/{}", "a".repeat(70_000)), "cmd": "x"}),
            "/id",
            "at most 200 characters, got 70001",
        ),
        (
            json!({"id": "/a", "cmd": "x", "taskKillGracePeriodSeconds": 100_000_000_000u64}),
            "/taskKillGracePeriodSeconds",
            "at most 31536000 seconds",
        ),
        (
            json!({"id": "/a", "cmd": "x", "backoffSeconds": 100_000_000_000u64}),
            "/backoffSeconds",
            "at most",
        ),
        (
            json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "COMMAND",
                "command": {"value": "true"}, "gracePeriodSeconds": 4_000_000_000u64}]}),
            "/healthChecks/0/gracePeriodSeconds",
            "at most",
        ),
        (
            json!({"id": "/a", "container": {"docker": {"image": "busybox",
                "parameters": [{"key": "cap-add", "value": "ALL"}]}}}),
            "/container/docker/parameters",
            "not supported",
        ),
        (
            json!({"id": "/a", "container": {"docker": {"image": "busybox"},
                "volumes": [{"containerPath": "/data", "mode": "RW"}]}}),
            "/container/volumes/0/hostPath",
            "only host bind mounts",
        ),
        (
            json!({"id": "/a", "cmd": "x",
                "container": {"volumes": [{"containerPath": "/data", "hostPath": "/srv"}]}}),
            "/container/volumes/0",
            "need container.docker.image",
        ),
        (
            json!({"id": "/a", "container": {"docker": {"image": "busybox"},
                "volumes": [{"containerPath": "/data", "hostPath": "/srv:/etc"}]}}),
            "/container/volumes/0/hostPath",
            "must not contain ':'",
        ),
        (
            json!({"id": "/a", "cmd": "x", "instances": -1}),
            "/instances",
            ">= 0",
        ),
        (json!({"id": "/Bad_Id", "cmd": "x"}), "/id", "invalid"),
        (json!({"id": "/a//b", "cmd": "x"}), "/id", "empty segment"),
        (json!({"cmd": "x"}), "/id", "required"),
        (
            json!({"id": "/a", "cmd": "x", "args": ["y"]}),
            "/cmd",
            "mutually exclusive",
        ),
        (
            json!({"id": "/a"}),
            "/",
            "needs cmd, args or container.docker.image",
        ),
        (
            json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}}),
            "/upgradeStrategy/minimumHealthCapacity",
            "between 0 and 1",
        ),
        (
            json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"maximumOverCapacity": -0.1}}),
            "/upgradeStrategy/maximumOverCapacity",
            "between 0 and 1",
        ),
        (
            json!({"id": "/a", "cmd": "x", "backoffFactor": 0.5}),
            "/backoffFactor",
            ">= 1",
        ),
        (
            json!({"id": "/a", "cmd": "x", "healthChecks": [{"portIndex": 1}]}),
            "/healthChecks/0/portIndex",
            "has 1 port",
        ),
        (
            json!({"id": "/a", "cmd": "x", "portDefinitions": [{"port": 70000}]}),
            "/portDefinitions/0/port",
            "<= 65535",
        ),
        (
            json!({"id": "/a", "networks": [{"mode": "container/bridge"}],
                   "container": {"docker": {"image": "i"}, "portMappings": [{"containerPort": -1}]}}),
            "/container/portMappings/0/containerPort",
            ">= 0",
        ),
        (
            json!({"id": "/a", "networks": [{"mode": "container/bridge"}],
                   "container": {"docker": {"image": "i"}, "portMappings": [{"hostPort": 65536}]}}),
            "/container/portMappings/0/hostPort",
            "<= 65535",
        ),
        (
            json!({"id": "/a", "cmd": "x", "portDefinitions": [{"name": "http"}, {"name": "http"}]}),
            "/portDefinitions/1/name",
            "duplicate port name",
        ),
        (
            json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "COMMAND"}]}),
            "/healthChecks/0/command",
            "need a command",
        ),
        (
            json!({"id": "/a", "cmd": "x", "cpus": "two"}),
            "/cpus",
            "expected number, found string",
        ),
        (
            json!({"id": "/a", "cmd": "x", "instances": 1.5}),
            "/instances",
            "expected integer",
        ),
        (
            json!({"id": "/a", "cmd": "x", "env": {"A": 1}}),
            "/env/A",
            "expected string",
        ),
        (
            json!({"id": "/a", "cmd": "x", "env": {"PW": {"secret": "pw"}}}),
            "/env/PW",
            "secret references are not supported",
        ),
        (
            json!({"id": "/a", "cmd": "x", "constraints": [["h"]]}),
            "/constraints/0",
            "2 or 3",
        ),
        (
            json!({"id": "/a", "cmd": "x", "constraints": ["x==y", ["h", "NEAR"]]}),
            "/constraints/1",
            "unknown constraint operator",
        ),
        (
            json!({"id": "/a", "cmd": "x", "constraints": ["h>=2"]}),
            "/constraints/0",
            "operator",
        ),
        (
            json!({"id": "/a", "cmd": "x", "killSelection": "RANDOM"}),
            "/killSelection",
            "YOUNGEST_FIRST",
        ),
        (
            json!({"id": "/a", "cmd": "x", "placement": "fast"}),
            "/placement",
            "binpack",
        ),
        (
            json!({"id": "/a", "cmd": "x", "dependencies": ["../../x"]}),
            "/dependencies/0",
            "above",
        ),
        (
            json!(["not", "an", "object"]),
            "/",
            "expected object, found array",
        ),
        (
            json!({"id": "/a", "cmd": "x", "secrets": {"s": {}}}),
            "/secrets",
            "not supported",
        ),
        (
            json!({"id": "/a", "networks": [{"mode": "host"}],
                   "container": {"docker": {"image": "i", "network": "BRIDGE"}}}),
            "/container/docker/network",
            "conflicts with networks",
        ),
        (
            json!({"id": "/a", "cmd": "x", "container": {"volumes": [{"mode": "RO"}]}}),
            "/container/volumes/0/containerPath",
            "must not be empty",
        ),
        (
            json!({"id": "/a", "cmd": "x", "container": {"portMappings": [{"containerPort": 80}]}}),
            "/container/portMappings",
            "needs container networking",
        ),
        (
            json!({"id": "/a", "cmd": "x", "healthChecks": [{"timeoutSeconds": 60}]}),
            "/healthChecks/0/timeoutSeconds",
            "smaller than intervalSeconds",
        ),
        (
            json!({"id": "/a", "cmd": "x", "requirePorts": true}),
            "/requirePorts",
            "fixed",
        ),
    ];
    for (input, path, needle) in cases {
        let found = errors(input.clone());
        assert_error_at(&found, path, needle);
    }
}

#[test]
fn several_errors_come_back_at_once() {
    let found = errors(json!({
        "id": "/web",
        "cmd": "x",
        "cpus": "two",
        "mem": -5,
        "backoffFactor": 0.1,
        "healthChecks": [{"protocol": "TCP", "portIndex": 4}, {"protocol": "COMMAND"}],
        "constraints": [["hostname", "SOMETIMES"]],
    }));
    let paths: Vec<&str> = found
        .details
        .iter()
        .map(|field| field.path.as_str())
        .collect();
    for expected in [
        "/cpus",
        "/mem",
        "/backoffFactor",
        "/healthChecks/0/portIndex",
        "/healthChecks/1/command",
        "/constraints/0",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    let body = found.to_json();
    assert_eq!(body["message"], "Object is not valid");
    assert_eq!(
        body["details"].as_array().unwrap().len(),
        found.details.len()
    );
    assert!(body["details"][0]["errors"].is_array());
}

#[test]
fn unknown_fields_are_reported_at_depth() {
    let parsed = parse(json!({
        "id": "/web",
        "cmd": "x",
        "fetch": [],
        "container": {"docker": {"image": "i", "foo": 1}, "bar": true},
        "healthChecks": [{"protocol": "TCP", "command": {"value": "x", "shell": true}, "extra": 1}],
        "portDefinitions": [{"port": 0, "weird/key": 1}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "speed": "fast"},
    }))
    .unwrap();
    let paths: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    for expected in [
        "unknown field \"/fetch\"",
        "unknown field \"/container/docker/foo\"",
        "unknown field \"/container/bar\"",
        "unknown field \"/healthChecks/0/extra\"",
        "unknown field \"/healthChecks/0/command/shell\"",
        "unknown field \"/portDefinitions/0/weird~1key\"",
        "unknown field \"/upgradeStrategy/speed\"",
    ] {
        assert!(
            paths.iter().any(|path| path == expected),
            "{expected} missing from {paths:?}"
        );
    }
    assert_eq!(paths.len(), 7);
}

#[test]
fn malformed_json_gives_line_and_column() {
    let error = AppDefinition::from_json_str("{\n  \"id\": \"/web\",\n  \"cmd\": \n}").unwrap_err();
    match &error {
        AppJsonError::Syntax { line, column, .. } => {
            assert_eq!(*line, 4);
            assert_eq!(*column, 1);
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(error.to_string().contains("line 4, column 1"));
    assert_eq!(error.to_json()["message"], "Invalid JSON");
}

#[test]
fn invalid_text_maps_to_422_body() {
    let error =
        AppDefinition::from_json_str(r#"{"id": "/web", "cmd": "x", "cpus": -1}"#).unwrap_err();
    let AppJsonError::Invalid(errors) = &error else {
        panic!("expected Invalid, got {error:?}")
    };
    assert_error_at(errors, "/cpus", "between 0.01");
    assert_eq!(error.to_json()["details"][0]["path"], "/cpus");
}

#[test]
fn hello_example_round_trips() {
    let text = include_str!("../../../deploy/examples/hello.json");
    let parsed = AppDefinition::from_json_str(text).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let app = parsed.app;
    assert_eq!(app.id.as_str(), "/hello");
    assert_eq!(app.port_count(), 1);
    assert_eq!(app.health_checks[0].protocol, HealthCheckProtocol::Http);
    assert_eq!(app.upgrade_strategy.minimum_health_capacity, 0.5);
    let rendered = app.to_json();
    let again = AppDefinition::from_json_value(&rendered).unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.app, app);
    assert_eq!(again.app.to_json(), rendered);
}

#[test]
fn full_featured_app_round_trips() {
    let parsed = parse(json!({
        "id": "/prod/api",
        "args": ["serve", "--port", "8080"],
        "user": "nobody",
        "cpus": 0.25, "mem": 256.5, "disk": 10, "gpus": 1, "instances": 3,
        "container": {
            "type": "MESOS",
            "docker": {"image": "api:1.2", "forcePullImage": true, "privileged": true},
            "portMappings": [
                {"containerPort": 8080, "hostPort": 0, "servicePort": 10000, "protocol": "tcp",
                 "name": "http", "labels": {"VIP_0": "/api:80"}},
                {"containerPort": 9090, "protocol": "udp,tcp", "name": "metrics"}
            ],
            "volumes": [{"containerPath": "/data", "hostPath": "/srv/data", "mode": "RO"}]
        },
        "networks": [{"mode": "container/bridge"}],
        "env": {"A": "1", "B/C": "2"},
        "labels": {"team": "x"},
        "constraints": [["rack", "GROUP_BY", "2"], "~zone==a", ["hostname", "MAX_PER", "1"]],
        "healthChecks": [
            {"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 1, "ignoreHttp1xx": true},
            {"protocol": "COMMAND", "command": {"value": "true"}},
            {"protocol": "TCP", "port": 9090}
        ],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0},
        "backoffSeconds": 3, "backoffFactor": 2, "maxLaunchDelaySeconds": 600,
        "killSelection": "OLDEST_FIRST",
        "dependencies": ["db"],
        "taskKillGracePeriodSeconds": 30,
        "version": "2026-01-01T00:00:00.000Z",
        "placement": "spread"
    }))
    .unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let app = parsed.app;
    assert_eq!(
        app.health_checks[2].port_index, None,
        "explicit port wins over the default index"
    );
    let again = parse(app.to_json()).unwrap().app;
    assert_eq!(again, app);
}

#[test]
fn scale_is_not_an_upgrade() {
    let base = parse(json!({"id": "/web", "cmd": "x"})).unwrap().app;
    let mut scaled = base.clone();
    scaled.instances = 5;
    scaled.version = Some("v2".into());
    assert!(!base.needs_restart(&scaled));
    assert_eq!(base.changed_fields(&scaled), ["instances", "version"]);

    let mut bigger = base.clone();
    bigger.mem = 256.0;
    assert!(base.needs_restart(&bigger));
    let mut relabeled = base.clone();
    relabeled.labels.insert("a".into(), "b".into());
    assert!(base.needs_restart(&relabeled));
    assert_eq!(base.changed_fields(&relabeled), ["labels"]);
}

#[test]
fn the_longest_app_id_leaves_room_for_its_task_ids() {
    let longest = format!(
        "/{}",
        "a".repeat(agora_proto::limits::MAX_DERIVING_ID_LEN - 1)
    );
    let parsed = parse(json!({"id": longest, "cmd": "x"})).expect("the longest id is valid");
    let task_id = format!(
        "{}.{}",
        parsed.app.id.as_str().trim_start_matches('/'),
        "f".repeat(32)
    );
    assert_eq!(agora_proto::limits::check_id(&task_id), Ok(()));
    let too_long = format!("/{}", "a".repeat(agora_proto::limits::MAX_DERIVING_ID_LEN));
    assert_error_at(
        &errors(json!({"id": too_long, "cmd": "x"})),
        "/id",
        "at most 200",
    );
}
