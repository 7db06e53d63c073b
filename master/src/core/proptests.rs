//! Property tests: offers never double-allocate under random call sequences, and weighted
//! DRF converges to fair shares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agora_proto::v1::TaskState;
use agora_proto::{OfferId, Resources, is_terminal, v1};
use proptest::prelude::*;

use super::test_support::*;
use super::{ConnId, MasterConfig};

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    Accept {
        framework: usize,
        fraction: f64,
        take_port: bool,
    },
    Decline {
        framework: usize,
        refuse: u8,
    },
    Finish {
        pick: usize,
    },
    Advance {
        seconds: u8,
    },
    Suppress {
        framework: usize,
    },
    Revive {
        framework: usize,
    },
    SilenceAgent {
        agent: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Allocate),
        4 => (0..3usize, 0.05..1.3f64, any::<bool>())
            .prop_map(|(framework, fraction, take_port)| Op::Accept { framework, fraction, take_port }),
        2 => (0..3usize, 0..3u8).prop_map(|(framework, refuse)| Op::Decline { framework, refuse }),
        2 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
        2 => (0..40u8).prop_map(|seconds| Op::Advance { seconds }),
        1 => (0..3usize).prop_map(|framework| Op::Suppress { framework }),
        1 => (0..3usize).prop_map(|framework| Op::Revive { framework }),
        1 => (0..3usize).prop_map(|agent| Op::SilenceAgent { agent }),
    ]
}

fn parse(resources: &[v1::Resource]) -> Resources {
    Resources::from_proto(resources).unwrap_or_default()
}

/// True when no port appears twice among `parts`.
fn ports_disjoint(parts: &[Resources]) -> bool {
    let mut union = Resources::new();
    let mut count = 0;
    for part in parts {
        count += part.ports().count();
        union.add(part);
    }
    union.ports().count() == count
}

/// Offers never overlap, and used + offered never exceeds an agent's total.
fn check_invariants(state: &v1::ClusterState) -> Result<(), TestCaseError> {
    for agent in &state.agents {
        let info = agent.info.clone().unwrap_or_default();
        let total = parse(&info.resources);
        let used = parse(&agent.used);
        let offered = parse(&agent.offered);
        prop_assert!(
            total.contains(&used.plus(&offered)),
            "agent {} over-committed: used {used} + offered {offered} > total {total}",
            info.id
        );
        prop_assert!(
            ports_disjoint(&[used.clone(), offered.clone()]),
            "a port is both used and offered"
        );

        let offers: Vec<Resources> = state
            .offers
            .iter()
            .filter(|offer| offer.agent_id == info.id)
            .map(|offer| parse(&offer.resources))
            .collect();
        prop_assert!(ports_disjoint(&offers), "a port is in two offers");
        let mut offer_sum = Resources::new();
        for offer in &offers {
            offer_sum.add(offer);
        }
        prop_assert_eq!(
            &offer_sum,
            &offered,
            "offers of agent {} disagree with its offered",
            info.id
        );
        if agent.status != "active" {
            prop_assert!(
                offers.is_empty(),
                "agent {} is {} but has offers",
                info.id,
                agent.status
            );
        }

        let task_resources: Vec<Resources> = state
            .tasks
            .iter()
            .filter(|entry| {
                entry
                    .task
                    .as_ref()
                    .is_some_and(|task| task.agent_id == info.id)
                    && entry
                        .latest_status
                        .as_ref()
                        .is_some_and(|status| !is_terminal(status.state()))
            })
            .map(|entry| parse(&entry.task.clone().unwrap_or_default().resources))
            .collect();
        prop_assert!(
            ports_disjoint(&task_resources),
            "two live tasks hold the same port"
        );
        let mut task_sum = Resources::new();
        for resources in &task_resources {
            task_sum.add(resources);
        }
        prop_assert_eq!(
            &task_sum,
            &used,
            "live tasks of agent {} disagree with its used",
            info.id
        );
    }
    Ok(())
}

/// A task asking for `fraction` of `offer` (more than all of it when `fraction > 1`).
fn task_for(offer: &v1::Offer, id: &str, fraction: f64, take_port: bool) -> v1::TaskInfo {
    let offered = parse(&offer.resources);
    let mut wanted = Resources::new()
        .with_scalar(
            "cpus",
            (offered.cpus() * fraction * 1000.0).floor() / 1000.0,
        )
        .with_scalar("mem", (offered.mem() * fraction).floor());
    if take_port && let Some(&(first, _)) = offered.ports().ranges().first() {
        wanted = wanted.with_ranges("ports", agora_proto::RangeSet::from_range(first, first));
    }
    v1::TaskInfo {
        task_id: id.to_owned(),
        resources: wanted.to_proto(),
        ..Default::default()
    }
}

proptest! {
    // Failures are not persisted to a regressions file: the shrunk input is in the failure
    // message, and the tree under master/ is not this module's to write.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn offers_never_double_allocate(ops in proptest::collection::vec(op(), 1..60)) {
        let mut harness = Harness::new();
        let mut agent_conns: Vec<ConnId> = Vec::new();
        let mut conn_of_agent: HashMap<String, ConnId> = HashMap::new();
        for index in 0..3 {
            let (agent_id, conn) =
                harness.register_agent(&format!("cpus:{};mem:4096;ports:[31000-31004]", index + 2));
            agent_conns.push(conn);
            conn_of_agent.insert(agent_id.to_string(), conn);
        }
        let frameworks: Vec<TestFramework> = (0..3)
            .map(|index| harness.subscribe(framework_info(&format!("fw{index}"), &format!("role{}", index % 2))))
            .collect();
        let mut next_task = 0;

        for op in ops {
            match op {
                Op::Allocate => {
                    harness.allocate();
                }
                Op::Accept { framework, fraction, take_port } => {
                    let framework = &frameworks[framework];
                    let state = harness.master.state();
                    let Some(offer) = state.offers.iter().find(|offer| offer.framework_id == framework.id.as_str()) else {
                        continue;
                    };
                    next_task += 1;
                    let task = task_for(offer, &format!("t{next_task}"), fraction, take_port);
                    let offer_id = OfferId::new(offer.id.clone());
                    let result = harness.accept(framework, &[offer_id], vec![task], Some(1.0));
                    // Well above 1 so that rounding down cannot bring it back within the offer.
                    if fraction > 1.01 {
                        prop_assert!(result.is_err(), "over-ask accepted");
                    }
                    if result.is_err() {
                        prop_assert_eq!(harness.master.state(), state, "a refused accept changed state");
                    }
                }
                Op::Decline { framework, refuse } => {
                    let framework = &frameworks[framework];
                    let offers: Vec<OfferId> = harness
                        .master
                        .state()
                        .offers
                        .iter()
                        .filter(|offer| offer.framework_id == framework.id.as_str())
                        .map(|offer| OfferId::new(offer.id.clone()))
                        .collect();
                    let refuse_seconds = [0.0, 1.0, 10.0][usize::from(refuse)];
                    harness.decline(framework, &offers, Some(refuse_seconds)).ok();
                }
                Op::Finish { pick } => {
                    let state = harness.master.state();
                    let live: Vec<&v1::TaskEntry> = state
                        .tasks
                        .iter()
                        .filter(|entry| entry.latest_status.as_ref().is_some_and(|status| !is_terminal(status.state())))
                        .collect();
                    if live.is_empty() {
                        continue;
                    }
                    let entry = live[pick % live.len()];
                    let task = entry.task.clone().unwrap_or_default();
                    if let Some(&conn) = conn_of_agent.get(&task.agent_id) {
                        let framework_id = agora_proto::FrameworkId::new(entry.framework_id.clone());
                        harness.status_update(conn, &framework_id, &task.task_id, TaskState::TaskFinished, "u").ok();
                    }
                }
                Op::Advance { seconds } => {
                    harness.run_for(Duration::from_secs(u64::from(seconds)));
                }
                Op::Suppress { framework } => {
                    let now = harness.now();
                    harness.master.suppress(now, v1::SuppressRequest { header: frameworks[framework].header() }).ok();
                }
                Op::Revive { framework } => {
                    let now = harness.now();
                    harness.master.revive(now, v1::ReviveRequest { header: frameworks[framework].header() }).ok();
                }
                Op::SilenceAgent { agent } => {
                    harness.silence(agent_conns[agent]);
                }
            }
            harness.master.take_commands();
            check_invariants(&harness.master.state())?;
        }
    }

    #[test]
    fn weighted_drf_converges_within_one_task(
        demands in proptest::collection::vec((1..=40u32, 1..=64u32, 1..=4u32), 2..=4)
    ) {
        // Each framework has its own role with weight 1..=4 and a task shape of
        // 0.1..4 cpus and 64..4096 MiB; the agent holds 64 cpus and 64 GiB.
        let mut config = MasterConfig::default();
        for (index, &(_, _, weight)) in demands.iter().enumerate() {
            config.role_weights.insert(format!("role{index}"), f64::from(weight));
        }
        let mut harness = Harness::with_config(config);
        let (_agent_id, agent_conn) = harness.register_agent("cpus:64;mem:65536");
        let total = Resources::parse("cpus:64;mem:65536").unwrap_or_default();
        let frameworks: Vec<TestFramework> = (0..demands.len())
            .map(|index| harness.subscribe(framework_info(&format!("fw{index}"), &format!("role{index}"))))
            .collect();
        let shapes: Vec<Resources> = demands
            .iter()
            .map(|&(tenth_cpus, mem_64, _)| Resources::cpus_mem(f64::from(tenth_cpus) / 10.0, f64::from(mem_64 * 64)))
            .collect();
        let task_share = |shape: &Resources| (shape.cpus() / total.cpus()).max(shape.mem() / total.mem());

        let mut launched = vec![0u32; demands.len()];
        let mut next_task = 0;
        'passes: for _ in 0..5_000 {
            let now = harness.now();
            harness.master.agent_heartbeat(now, agent_conn);
            let commands = harness.allocate();
            let mut any_offer = false;
            for (index, framework) in frameworks.iter().enumerate() {
                for offer in offers_for(&commands, framework.conn) {
                    any_offer = true;
                    let offered = parse(&offer.resources);
                    if !offered.contains(&shapes[index]) {
                        // The lowest-share framework no longer fits: the cluster is full for it.
                        harness.decline(framework, &[OfferId::new(offer.id.clone())], Some(0.0)).ok();
                        break 'passes;
                    }
                    next_task += 1;
                    let task = v1::TaskInfo {
                        task_id: format!("t{next_task}"),
                        resources: shapes[index].to_proto(),
                        ..Default::default()
                    };
                    let result = harness.accept(framework, &[OfferId::new(offer.id.clone())], vec![task], Some(0.0));
                    prop_assert!(result.is_ok(), "{:?}", result);
                    launched[index] += 1;
                }
            }
            prop_assert!(any_offer, "an allocation pass with free resources made no offer");
        }

        let weighted: Vec<f64> = demands
            .iter()
            .enumerate()
            .map(|(index, &(_, _, weight))| {
                f64::from(launched[index]) * task_share(&shapes[index]) / f64::from(weight)
            })
            .collect();
        let slack = demands
            .iter()
            .enumerate()
            .map(|(index, &(_, _, weight))| task_share(&shapes[index]) / f64::from(weight))
            .fold(0.0, f64::max);
        let highest = weighted.iter().copied().fold(0.0, f64::max);
        let lowest = weighted.iter().copied().fold(f64::INFINITY, f64::min);
        prop_assert!(
            highest - lowest <= slack + 1e-9,
            "weighted shares {:?} spread more than one task ({}); launched {:?}",
            weighted, slack, launched
        );
        let state_shares: BTreeMap<String, f64> = harness
            .master
            .state()
            .frameworks
            .iter()
            .map(|framework| (framework.info.clone().unwrap_or_default().name, framework.dominant_share))
            .collect();
        for (index, &(_, _, weight)) in demands.iter().enumerate() {
            let reported = state_shares.get(&format!("fw{index}")).copied().unwrap_or(-1.0);
            prop_assert!((reported / f64::from(weight) - weighted[index]).abs() < 1e-9);
        }
    }
}
