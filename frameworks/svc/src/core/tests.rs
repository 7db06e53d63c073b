//! Unit and property tests of the deployment core, driven without any IO.

use std::collections::BTreeMap;

use agora_proto::v1::{self, TaskState};
use agora_proto::{Resources, TaskId};
use proptest::prelude::*;

use super::*;
use crate::app::{AppDefinition, KillSelection};

const T0: f64 = 1_800_000_000.0;

fn app(json: &str) -> AppDefinition {
    AppDefinition::from_json_str(json)
        .expect("valid test app")
        .app
}

fn offer(index: usize, resources: &str) -> v1::Offer {
    v1::Offer {
        id: format!("offer-{index}-{}", uuid::Uuid::new_v4().simple()),
        framework_id: "fw".into(),
        agent_id: format!("agent-{index}"),
        hostname: format!("node-{index}"),
        resources: Resources::parse(resources)
            .expect("valid resources")
            .to_proto(),
        labels: Default::default(),
    }
}

fn offers(count: usize) -> Vec<v1::Offer> {
    (1..=count)
        .map(|index| offer(index, "cpus:4;mem:4096;ports:[31000-31010]"))
        .collect()
}

fn subscribed_core() -> SvcCore {
    let mut core = SvcCore::new(CoreConfig {
        seed: 7,
        ..CoreConfig::default()
    });
    core.on_subscribed("fw", T0);
    core.take_commands();
    core
}

/// Every task launched by these commands, in order.
fn launched(commands: &[Command]) -> Vec<v1::TaskInfo> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Launch { tasks, .. } => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn killed(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Kill { task_id, .. } => Some(task_id.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

fn status(task: &v1::TaskInfo, state: TaskState, healthy: Option<bool>) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.task_id.clone(),
        agent_id: task.agent_id.clone(),
        state: state as i32,
        healthy,
        timestamp: T0,
        ..Default::default()
    }
}

fn run_all(core: &mut SvcCore, tasks: &[v1::TaskInfo], now: f64) {
    for task in tasks {
        core.on_update(&status(task, TaskState::TaskRunning, None), now);
    }
}

fn deployment_state(core: &SvcCore, id: &str) -> String {
    core.deployment_json(id).expect("deployment exists")["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_new_app_is_stored_before_it_is_launched_and_its_deployment_succeeds() {
    let mut core = subscribed_core();
    let answer = core
        .create_app(
            app(r#"{"id":"/web","cmd":"sleep 1000","cpus":1,"mem":64,"instances":2}"#),
            T0,
        )
        .expect("created");
    core.take_commands();
    core.on_offers(offers(2), T0 + 1.0);
    let commands = core.take_commands();
    let first_persist = commands
        .iter()
        .position(|c| matches!(c, Command::Persist(_)));
    let first_launch = commands
        .iter()
        .position(|c| matches!(c, Command::Launch { .. }));
    assert!(first_persist.expect("persisted") < first_launch.expect("launched"));
    let tasks = launched(&commands);
    assert_eq!(tasks.len(), 2);
    assert!(
        commands.contains(&Command::Suppress),
        "nothing left to place: {commands:?}"
    );
    assert_eq!(deployment_state(&core, &answer.deployment_id), "running");
    run_all(&mut core, &tasks, T0 + 2.0);
    assert_eq!(deployment_state(&core, &answer.deployment_id), "succeeded");
}

#[test]
fn bin_packing_fills_one_agent_before_the_next() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/packed","cmd":"sleep 1000","cpus":1,"mem":64,"instances":3}"#),
        T0,
    )
    .expect("created");
    core.on_offers(offers(3), T0);
    let tasks = launched(&core.take_commands());
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks.iter().all(|task| task.agent_id == tasks[0].agent_id),
        "{tasks:?}"
    );
}

#[test]
fn scaling_down_kills_the_youngest_first_and_never_counts_killed_instances() {
    let mut core = subscribed_core();
    let mut definition =
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.5,"mem":32,"instances":3}"#);
    core.create_app(definition.clone(), T0).expect("created");
    core.on_offers(offers(1), T0);
    let tasks = launched(&core.take_commands());
    for (offset, task) in tasks.iter().enumerate() {
        core.on_update(
            &status(task, TaskState::TaskRunning, None),
            T0 + 1.0 + offset as f64,
        );
    }
    core.take_commands();
    definition.instances = 1;
    definition.kill_selection = KillSelection::YoungestFirst;
    core.put_app(definition, false, T0 + 10.0).expect("scaled");
    let kills = killed(&core.take_commands());
    assert_eq!(
        kills,
        vec![tasks[2].task_id.clone(), tasks[1].task_id.clone()]
    );
    // More offers do not launch replacements for the instances being killed.
    core.on_offers(offers(1), T0 + 11.0);
    assert!(launched(&core.take_commands()).is_empty());
}

#[test]
fn a_failed_instance_is_replaced_after_a_growing_backoff() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/crash","cmd":"exit 1","cpus":0.1,"mem":16,"backoffSeconds":2,"backoffFactor":2,"maxLaunchDelaySeconds":5}"#),
        T0,
    )
    .expect("created");
    let mut now = T0;
    let mut delays = Vec::new();
    for _ in 0..4 {
        core.on_offers(offers(1), now);
        let tasks = launched(&core.take_commands());
        assert_eq!(tasks.len(), 1, "one replacement at {now}");
        core.on_update(&status(&tasks[0], TaskState::TaskFailed, None), now);
        let queue = core.queue_json(now);
        let delay = queue["queue"][0]["delay"]["timeLeftSeconds"]
            .as_f64()
            .expect("delay");
        delays.push(delay);
        // While backing off, offers are declined.
        core.on_offers(offers(1), now + delay / 2.0);
        assert!(launched(&core.take_commands()).is_empty());
        now += delay;
    }
    assert_eq!(delays, vec![2.0, 4.0, 5.0, 5.0]);
}

#[test]
fn an_unhealthy_instance_is_killed_and_replaced() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/hc","cmd":"sleep 1000","cpus":0.1,"mem":16,
                "portDefinitions":[{"port":0}],
                "healthChecks":[{"protocol":"TCP","portIndex":0}]}"#),
        T0,
    )
    .expect("created");
    core.on_offers(offers(1), T0);
    let tasks = launched(&core.take_commands());
    core.on_update(
        &status(&tasks[0], TaskState::TaskRunning, Some(true)),
        T0 + 1.0,
    );
    core.on_update(
        &status(&tasks[0], TaskState::TaskRunning, Some(false)),
        T0 + 2.0,
    );
    assert_eq!(
        killed(&core.take_commands()),
        vec![tasks[0].task_id.clone()]
    );
    core.on_offers(offers(1), T0 + 3.0);
    assert_eq!(
        launched(&core.take_commands()).len(),
        1,
        "replacement launched"
    );
}

#[test]
fn an_app_too_big_for_every_agent_waits_with_the_reason() {
    let mut core = subscribed_core();
    let answer = core
        .create_app(
            app(r#"{"id":"/big","cmd":"sleep 1","cpus":64,"mem":16}"#),
            T0,
        )
        .expect("created");
    core.on_offers(offers(2), T0);
    assert!(launched(&core.take_commands()).is_empty());
    let queue = core.queue_json(T0);
    assert_eq!(
        queue["queue"][0]["reason"],
        "no agent has 64 cpus; largest free is 4"
    );
    let deployment = core.deployment_json(&answer.deployment_id).expect("exists");
    assert_eq!(deployment["state"], "running");
    assert!(
        deployment["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no agent has 64 cpus")
    );
    // It never claims success, and fails once the deployment timeout passes.
    core.tick(T0 + 601.0);
    assert_eq!(deployment_state(&core, &answer.deployment_id), "failed");
}

#[test]
fn a_group_starts_apps_in_dependency_order() {
    let mut core = subscribed_core();
    let database = app(r#"{"id":"/shop/db","cmd":"sleep 1000","cpus":0.1,"mem":16}"#);
    let web = app(
        r#"{"id":"/shop/web","cmd":"sleep 1000","cpus":0.1,"mem":16,"dependencies":["/shop/db"]}"#,
    );
    let answer = core
        .put_apps(vec![web, database], false, T0)
        .expect("deployed");
    core.on_offers(offers(1), T0);
    let first = launched(&core.take_commands());
    assert_eq!(first.len(), 1);
    assert!(first[0].task_id.starts_with("shop_db."), "{first:?}");
    run_all(&mut core, &first, T0 + 1.0);
    core.on_offers(offers(1), T0 + 2.0);
    let second = launched(&core.take_commands());
    assert_eq!(second.len(), 1);
    assert!(second[0].task_id.starts_with("shop_web."));
    run_all(&mut core, &second, T0 + 3.0);
    assert_eq!(deployment_state(&core, &answer.deployment_id), "succeeded");
}

#[test]
fn invalid_constraints_and_dependency_cycles_are_refused_without_change() {
    let mut core = subscribed_core();
    let error = core
        .create_app(
            app(r#"{"id":"/a","cmd":"sleep 1","constraints":[["rack","GROUP_BY","x"]]}"#),
            T0,
        )
        .expect_err("GROUP_BY takes a number");
    let ApiError::Invalid(errors) = error else {
        panic!("expected a validation error, got {error:?}");
    };
    assert_eq!(errors.details[0].path, "/constraints/0");
    let cycle = core.put_apps(
        vec![
            app(r#"{"id":"/a","cmd":"sleep 1","dependencies":["/b"]}"#),
            app(r#"{"id":"/b","cmd":"sleep 1","dependencies":["/a"]}"#),
        ],
        false,
        T0,
    );
    assert!(matches!(cycle, Err(ApiError::Invalid(_))), "{cycle:?}");
    assert_eq!(core.apps_json(None, false)["apps"], serde_json::json!([]));
    assert!(core.take_commands().is_empty(), "nothing written or sent");
}

#[test]
fn a_running_deployment_locks_its_app_until_forced_and_can_be_rolled_back() {
    let mut core = subscribed_core();
    let mut definition = app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.1,"mem":16}"#);
    core.create_app(definition.clone(), T0).expect("created");
    core.on_offers(offers(1), T0);
    let v1_tasks = launched(&core.take_commands());
    run_all(&mut core, &v1_tasks, T0 + 1.0);

    definition.cmd = Some("sleep 2000".into());
    let upgrade = core
        .put_app(definition.clone(), false, T0 + 2.0)
        .expect("upgrade");
    let locked = core.put_app(definition.clone(), false, T0 + 3.0);
    assert!(matches!(locked, Err(ApiError::Locked { .. })), "{locked:?}");
    core.on_offers(offers(1), T0 + 4.0);
    let v2_tasks = launched(&core.take_commands());
    assert_eq!(
        v2_tasks.len(),
        1,
        "new version launched next to the old one"
    );

    let rollback = core
        .cancel_deployment(&upgrade.deployment_id, false, T0 + 5.0)
        .expect("rolled back")
        .expect("a rollback deployment");
    assert_eq!(deployment_state(&core, &upgrade.deployment_id), "cancelled");
    let commands = core.take_commands();
    assert_eq!(
        killed(&commands),
        vec![v2_tasks[0].task_id.clone()],
        "the new instance goes"
    );
    core.on_update(&status(&v2_tasks[0], TaskState::TaskKilled, None), T0 + 6.0);
    assert_eq!(
        deployment_state(&core, &rollback.deployment_id),
        "succeeded"
    );
    let detail = core.app_detail_json("/web").expect("app");
    assert_eq!(detail["app"]["cmd"], "sleep 1000");
    assert_eq!(
        detail["app"]["tasks"][0]["id"],
        v1_tasks[0].task_id.as_str()
    );
}

#[test]
fn recovery_from_the_stored_writes_keeps_instances_and_reconciles_them() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":2}"#),
        T0,
    )
    .expect("created");
    core.on_offers(offers(2), T0);
    let mut writes = Vec::new();
    let commands = core.take_commands();
    let tasks = launched(&commands);
    for command in commands {
        if let Command::Persist(batch) = command {
            writes.extend(batch);
        }
    }
    // Replay the writes into a model of the store.
    let mut state = RecoveredState::default();
    let mut apps = BTreeMap::new();
    let mut instances = BTreeMap::new();
    for write in writes {
        match write {
            StoreWrite::FrameworkId(id) => state.framework_id = Some(id),
            StoreWrite::PutApp { app_id, app } => {
                apps.insert(app_id, app);
            }
            StoreWrite::PutVersion {
                app_id,
                version,
                definition,
            } => {
                state.versions.push((app_id, version, definition));
            }
            StoreWrite::PutInstance(instance) => {
                instances.insert(instance.task_id.clone(), instance);
            }
            StoreWrite::DeleteInstance { task_id } => {
                instances.remove(&task_id);
            }
            StoreWrite::PutDeployment(deployment) => state.deployments.push(deployment),
            StoreWrite::DeleteApp { .. } | StoreWrite::DeleteDeployment { .. } => {}
        }
    }
    state.apps = apps.into_iter().collect();
    state.instances = instances.into_values().collect();
    let mut recovered = SvcCore::recover(CoreConfig::default(), state).expect("recovers");
    recovered.on_subscribed("fw", T0 + 10.0);
    let commands = recovered.take_commands();
    let reconcile = commands
        .iter()
        .find(|command| matches!(command, Command::Reconcile(_)));
    let Some(Command::Reconcile(listed)) = reconcile else {
        panic!("explicit reconciliation first: {commands:?}");
    };
    assert_eq!(listed.len(), 2);
    // Offers after the restart launch nothing: the two staged instances count.
    recovered.on_offers(offers(2), T0 + 11.0);
    assert!(launched(&recovered.take_commands()).is_empty());
    // A stored instance the master does not know is replaced; a task nobody stored is killed.
    recovered.on_update(&status(&tasks[0], TaskState::TaskLost, None), T0 + 12.0);
    let stray = v1::TaskInfo {
        task_id: "web.stray".into(),
        agent_id: "agent-1".into(),
        ..Default::default()
    };
    recovered.on_update(&status(&stray, TaskState::TaskRunning, None), T0 + 12.0);
    assert_eq!(
        killed(&recovered.take_commands()),
        vec!["web.stray".to_owned()]
    );
    recovered.on_offers(offers(2), T0 + 13.0);
    assert_eq!(launched(&recovered.take_commands()).len(), 1);
}

#[test]
fn instances_on_a_lost_agent_are_replaced_elsewhere_and_a_returning_copy_is_killed() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":2}"#),
        T0,
    )
    .expect("created");
    core.on_offers(vec![offer(1, "cpus:4;mem:4096;ports:[31000-31010]")], T0);
    let first = launched(&core.take_commands());
    run_all(&mut core, &first, T0 + 1.0);

    // Unreachable: replaced at once, without backoff.
    core.on_update(
        &status(&first[0], TaskState::TaskUnreachable, None),
        T0 + 2.0,
    );
    core.on_offers(
        vec![offer(2, "cpus:4;mem:4096;ports:[31000-31010]")],
        T0 + 2.0,
    );
    let replacement = launched(&core.take_commands());
    assert_eq!(replacement.len(), 1);
    assert_eq!(replacement[0].agent_id, "agent-2");
    run_all(&mut core, &replacement, T0 + 3.0);

    // The cut-off copy comes back: one too many, so it is killed.
    core.on_update(&status(&first[0], TaskState::TaskRunning, None), T0 + 4.0);
    assert_eq!(
        killed(&core.take_commands()),
        vec![first[0].task_id.clone()]
    );

    // The whole agent is lost: its instances are replaced on the agents that are left.
    core.on_agent_lost("agent-1", T0 + 5.0);
    core.on_offers(
        vec![offer(2, "cpus:3;mem:4000;ports:[31001-31010]")],
        T0 + 5.0,
    );
    let after_loss = launched(&core.take_commands());
    assert_eq!(after_loss.len(), 1);
    assert!(after_loss.iter().all(|task| task.agent_id == "agent-2"));
    let queue = core.queue_json(T0 + 5.0);
    assert_eq!(
        queue["queue"],
        serde_json::json!([]),
        "nothing waits: {queue}"
    );
}

fn instance(index: usize, version: &str, ready: bool) -> Instance {
    let mut instance = Instance::staging(
        TaskId::new(format!("web.{index:04}")),
        "/web".into(),
        version.into(),
        "agent-1".into(),
        "node-1".into(),
        Vec::new(),
        index as f64,
    );
    if ready {
        instance
            .observe(TaskState::TaskRunning)
            .expect("a staging instance may run");
        instance.started_at = Some(index as f64);
    }
    instance
}

proptest! {
    /// During a rolling upgrade the plan never kills so many ready instances that fewer than
    /// ceil(instances × minimumHealthCapacity) stay ready, and never launches past
    /// floor(instances × (1 + maximumOverCapacity)) (+1 when both bounds meet).
    #[test]
    fn rolling_upgrades_respect_health_and_capacity_bounds(
        target in 0u32..12,
        minimum in 0.0f64..=1.0,
        over in 0.0f64..=1.0,
        old in proptest::collection::vec(any::<bool>(), 0..12),
        new in proptest::collection::vec(any::<bool>(), 0..12),
    ) {
        let mut definition = app(r#"{"id":"/web","cmd":"sleep 1"}"#);
        definition.instances = target;
        definition.upgrade_strategy.minimum_health_capacity = minimum;
        definition.upgrade_strategy.maximum_over_capacity = over;
        let state = AppState {
            definition,
            version: "v2".into(),
            config_version: "v2".into(),
            deleting: false,
            backoff: LaunchBackoff::default(),
            waiting_reason: None,
            waiting_since: None,
            last_failure: None,
        };
        let mut instances: Vec<Instance> = Vec::new();
        for (index, ready) in old.iter().enumerate() {
            instances.push(instance(index, "v1", *ready));
        }
        for (index, ready) in new.iter().enumerate() {
            instances.push(instance(100 + index, "v2", *ready));
        }
        let references: Vec<&Instance> = instances.iter().collect();
        let plan = plan_app(&state, &references);
        let ready_before = instances.iter().filter(|i| i.is_ready(false)).count();
        let ready_killed = plan.kills.iter().filter(|(task_id, _)| {
            instances.iter().any(|i| &i.task_id == task_id && i.is_ready(false))
        }).count();
        let minimum_healthy = (f64::from(target) * minimum).ceil() as usize;
        let new_count = new.len();
        if !old.is_empty() && new_count <= target as usize {
            prop_assert!(
                ready_before - ready_killed >= minimum_healthy.min(ready_before),
                "ready {} -> {} below {}", ready_before, ready_before - ready_killed, minimum_healthy
            );
            let mut maximum = (f64::from(target) * (1.0 + over)).floor() as usize;
            if maximum <= minimum_healthy {
                maximum = minimum_healthy + 1;
            }
            prop_assert!(instances.len() + plan.wanted <= maximum.max(instances.len()));
        }
        prop_assert!(plan.wanted + new_count.min(target as usize) <= target as usize);
        // Killed instances are distinct and known.
        let mut ids: Vec<&TaskId> = plan.kills.iter().map(|(task_id, _)| task_id).collect();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), plan.kills.len());
    }
}

#[test]
fn a_reconnect_reconciles_known_instances_only() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":1,"mem":64,"instances":2}"#),
        T0,
    )
    .expect("created");
    core.on_offers(offers(2), T0 + 1.0);
    let tasks = launched(&core.take_commands());
    assert_eq!(tasks.len(), 2);
    core.on_disconnected();
    core.on_subscribed("fw", T0 + 2.0);
    let reconciles: Vec<Vec<(TaskId, AgentId)>> = core
        .take_commands()
        .into_iter()
        .filter_map(|command| match command {
            Command::Reconcile(listed) => Some(listed),
            _ => None,
        })
        .collect();
    // The known instances, explicitly; no implicit reconciliation (its answers for every
    // task the master has could overflow the stream again).
    assert_eq!(reconciles.len(), 1, "{reconciles:?}");
    assert_eq!(reconciles[0].len(), 2);
}

#[test]
fn a_kill_asked_for_while_disconnected_goes_out_as_soon_as_the_subscription_is_back() {
    let mut core = subscribed_core();
    let mut definition =
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.5,"mem":32,"instances":3}"#);
    core.create_app(definition.clone(), T0).expect("created");
    core.on_offers(offers(1), T0);
    let tasks = launched(&core.take_commands());
    run_all(&mut core, &tasks, T0 + 1.0);
    core.take_commands();
    core.on_disconnected();
    definition.instances = 1;
    core.put_app(definition, false, T0 + 2.0).expect("scaled");
    let first = killed(&core.take_commands());
    assert_eq!(first.len(), 2);
    // Back one second later, long before the 30 s retry: the same kills go out again.
    core.on_subscribed("fw", T0 + 3.0);
    let mut again = killed(&core.take_commands());
    again.sort();
    let mut expected = first;
    expected.sort();
    assert_eq!(again, expected);
}

#[test]
fn an_instance_the_master_has_not_confirmed_since_subscribing_is_not_shown_running() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.5,"mem":32,"instances":2}"#),
        T0,
    )
    .expect("created");
    core.on_offers(offers(1), T0);
    let tasks = launched(&core.take_commands());
    run_all(&mut core, &tasks, T0 + 1.0);
    let running = |core: &SvcCore| {
        core.app_detail_json("/web").expect("app")["app"]["tasksRunning"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    assert_eq!(running(&core), 2);

    // The master restarted: the daemon subscribes again and asks; one instance's agent
    // has re-registered and is answered, the other's has not.
    core.on_disconnected();
    core.on_subscribed("fw", T0 + 10.0);
    core.take_commands();
    assert_eq!(running(&core), 0, "nothing confirmed yet");
    core.on_update(&status(&tasks[0], TaskState::TaskRunning, None), T0 + 11.0);
    assert_eq!(running(&core), 1);
    let listed = core.tasks_json("/web").expect("tasks");
    let states: Vec<&str> = listed["tasks"]
        .as_array()
        .map(|tasks| tasks.iter().filter_map(|t| t["state"].as_str()).collect())
        .unwrap_or_default();
    let mut states = states;
    states.sort_unstable();
    assert_eq!(states, vec!["TASK_RUNNING", "TASK_UNKNOWN"]);
    // Nothing is replaced meanwhile: it may well come back.
    core.on_offers(offers(1), T0 + 12.0);
    assert!(launched(&core.take_commands()).is_empty());
}

#[test]
fn privileged_and_host_volumes_are_passed_to_the_task_not_dropped() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/priv","cpus":0.1,"mem":32,
               "container":{"docker":{"image":"busybox","privileged":true,"parameters":[]},
                            "volumes":[{"containerPath":"/data","hostPath":"/srv/data","mode":"RO"},
                                       {"containerPath":"/scratch","hostPath":"/tmp/scratch","mode":"RW"}]}}"#),
        T0,
    )
    .expect("created");
    core.take_commands();
    core.on_offers(offers(1), T0 + 1.0);
    let tasks = launched(&core.take_commands());
    assert_eq!(tasks.len(), 1);
    let container = tasks[0].container.clone().expect("a container");
    assert!(container.privileged, "{container:?}");
    assert_eq!(
        container.volumes,
        ["/srv/data:/data:ro", "/tmp/scratch:/scratch"],
        "{container:?}"
    );
}

#[test]
fn a_refused_launch_is_replaced_at_once_and_an_unanswered_one_is_reconciled() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.1,"mem":16,"instances":2}"#),
        T0,
    )
    .expect("created");
    core.on_offers(vec![offer(1, "cpus:4;mem:4096;ports:[31000-31010]")], T0);
    let first = launched(&core.take_commands());
    assert_eq!(first.len(), 2);
    let refused = TaskId::new(first[0].task_id.clone());
    let unanswered = TaskId::new(first[1].task_id.clone());

    // Whether the unanswered launch reached the master is unknown: ask it.
    core.on_launch_failed(std::slice::from_ref(&unanswered), false, T0 + 1.0);
    let commands = core.take_commands();
    assert!(
        commands.iter().any(|command| matches!(
            command,
            Command::Reconcile(tasks)
                if tasks == &vec![(unanswered.clone(), AgentId::new("agent-1"))]
        )),
        "{commands:?}"
    );

    // The refused one never ran: forgotten (stored) and replaced by the next offer, with no
    // backoff since it did not fail.
    core.on_launch_failed(std::slice::from_ref(&refused), true, T0 + 1.0);
    let commands = core.take_commands();
    assert!(
        commands.iter().any(|command| matches!(
            command,
            Command::Persist(writes) if writes.contains(&StoreWrite::DeleteInstance {
                task_id: refused.clone()
            })
        )),
        "{commands:?}"
    );
    core.on_offers(
        vec![offer(2, "cpus:4;mem:4096;ports:[31000-31010]")],
        T0 + 1.0,
    );
    let replacement = launched(&core.take_commands());
    assert_eq!(replacement.len(), 1, "one replacement");
    assert_ne!(replacement[0].task_id, refused.as_str());
}

#[test]
fn an_update_that_sends_an_instance_back_in_its_life_is_dropped_whole() {
    let mut core = subscribed_core();
    core.create_app(
        app(r#"{"id":"/web","cmd":"sleep 1000","cpus":0.5,"mem":32,"instances":1}"#),
        T0,
    )
    .expect("created");
    core.on_offers(offers(1), T0);
    let tasks = launched(&core.take_commands());
    assert_eq!(tasks.len(), 1);
    run_all(&mut core, &tasks, T0 + 1.0);
    core.take_commands();
    let state = |core: &SvcCore| {
        core.tasks_json("/web").expect("tasks")["tasks"][0]["state"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(state(&core).as_deref(), Some("TASK_RUNNING"));

    // After a reconnect the instance is unconfirmed; a STARTING for a running instance is
    // not an answer its life allows: it neither moves nor confirms the instance, and
    // nothing is stored, published or sent.
    core.on_disconnected();
    core.on_subscribed("fw", T0 + 10.0);
    core.take_commands();
    assert_eq!(state(&core).as_deref(), Some("TASK_UNKNOWN"));
    let mut backwards = status(&tasks[0], TaskState::TaskStarting, Some(false));
    backwards.message = "late".to_owned();
    core.on_update(&backwards, T0 + 11.0);
    assert!(core.take_commands().is_empty());
    assert_eq!(state(&core).as_deref(), Some("TASK_UNKNOWN"));

    // The real answer still confirms it.
    core.on_update(&status(&tasks[0], TaskState::TaskRunning, None), T0 + 12.0);
    assert_eq!(state(&core).as_deref(), Some("TASK_RUNNING"));
}
