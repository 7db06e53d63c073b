//! Planner tests: operators in plans, explanations, and properties over random clusters.

use std::collections::HashMap;

use agora_proto::{AgentId, PORTS, RangeSet, Resources};
use proptest::prelude::*;

use super::planner::{Mode, plan_with_mode};
use super::*;

fn agent(name: &str, cpus: f64, mem: f64, labels: &[(&str, &str)]) -> AgentCandidate {
    AgentCandidate {
        attributes: AgentAttributes {
            agent_id: AgentId::new(name),
            hostname: format!("{name}.example"),
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        },
        free: Resources::cpus_mem(cpus, mem).with_ranges(PORTS, RangeSet::from_range(31000, 31009)),
        total: Resources::cpus_mem(cpus, mem),
    }
}

fn problem(agents: Vec<AgentCandidate>, cpus: f64, mem: f64, count: usize) -> PlacementProblem {
    PlacementProblem {
        agents,
        demand: InstanceDemand {
            resources: Resources::cpus_mem(cpus, mem),
            ports: 0,
        },
        count,
        ..Default::default()
    }
}

fn constraint(text: &str) -> Constraint {
    text.parse().unwrap()
}

fn agents_used(plan: &PlacementPlan) -> Vec<String> {
    plan.placements
        .iter()
        .map(|placement| placement.agent_id.to_string())
        .collect()
}

#[test]
fn binpack_fills_the_most_utilised_agent_first() {
    let mut agents = vec![agent("a", 4.0, 4096.0, &[]), agent("b", 4.0, 4096.0, &[])];
    agents[1].free = Resources::cpus_mem(2.0, 2048.0);
    let plan = plan(&problem(agents, 1.0, 1024.0, 3), 1);
    assert_eq!(agents_used(&plan), ["b", "b", "a"]);
    assert!(plan.explanation.is_none());
}

#[test]
fn spread_prefers_agents_with_fewest_instances() {
    let agents = vec![agent("a", 4.0, 4096.0, &[]), agent("b", 4.0, 4096.0, &[])];
    let mut problem = problem(agents, 1.0, 128.0, 3);
    problem.strategy = PlacementStrategy::Spread;
    problem.running = vec![AgentId::new("a")];
    let plan = plan(&problem, 1);
    assert_eq!(agents_used(&plan), ["b", "a", "b"]);
}

#[test]
fn random_is_deterministic_per_seed_and_respects_resources() {
    let agents: Vec<_> = (0..20)
        .map(|i| agent(&format!("a{i}"), 2.0, 2048.0, &[]))
        .collect();
    let mut problem = problem(agents, 1.0, 128.0, 30);
    problem.strategy = PlacementStrategy::Random;
    let first = plan(&problem, 7);
    assert_eq!(first, plan(&problem, 7));
    assert_eq!(first.placements.len(), 30);
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    for name in agents_used(&first) {
        *per_agent.entry(name).or_default() += 1;
    }
    assert!(per_agent.values().all(|&count| count <= 2));
    assert!(per_agent.len() > 2, "random should not pack: {per_agent:?}");
}

#[test]
fn ports_are_lowest_free_and_never_reused() {
    let mut agents = vec![agent("a", 8.0, 8192.0, &[])];
    agents[0].free = Resources::cpus_mem(8.0, 8192.0).with_ranges(
        PORTS,
        RangeSet::from_ranges([(31000, 31001), (31005, 31005)]),
    );
    let mut problem = problem(agents, 1.0, 1.0, 3);
    problem.demand.ports = 2;
    let plan = plan(&problem, 1);
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].ports, vec![31000, 31001]);
    assert_eq!(
        plan.explanation.unwrap().to_string(),
        "no agent has 2 free ports; most free is 1"
    );
}

#[test]
fn unique_holds_within_the_batch_and_explains() {
    let agents = vec![
        agent("a", 8.0, 8192.0, &[]),
        agent("b", 8.0, 8192.0, &[]),
        agent("c", 8.0, 8192.0, &[]),
    ];
    let mut problem = problem(agents, 1.0, 1.0, 5);
    problem.constraints = vec![constraint("hostname:UNIQUE")];
    problem.running = vec![AgentId::new("c")];
    let plan = plan(&problem, 1);
    assert_eq!(agents_used(&plan), ["a", "b"]);
    assert_eq!(plan.unplaced, 3);
    assert_eq!(
        plan.explanation.unwrap().to_string(),
        "constraint hostname:UNIQUE excludes all 3 agents"
    );
}

#[test]
fn max_per_and_cluster_limit_placements() {
    let agents = vec![
        agent("a", 8.0, 8192.0, &[("rack", "r1")]),
        agent("b", 8.0, 8192.0, &[("rack", "r2")]),
        agent("c", 8.0, 8192.0, &[]),
    ];
    let mut max_per = problem(agents.clone(), 1.0, 1.0, 5);
    max_per.constraints = vec![constraint("rack:MAX_PER:2")];
    let plan_max = plan(&max_per, 1);
    assert_eq!(plan_max.placements.len(), 4);
    assert_eq!(
        plan_max.explanation.unwrap().to_string(),
        "constraint rack:MAX_PER:2 excludes 2 agents; 1 agent lacks label rack:MAX_PER:2"
    );

    let mut cluster_value = problem(agents.clone(), 1.0, 1.0, 3);
    cluster_value.constraints = vec![constraint("rack:CLUSTER:r2")];
    assert_eq!(agents_used(&plan(&cluster_value, 1)), ["b", "b", "b"]);

    let mut cluster_follow = problem(agents, 1.0, 1.0, 2);
    cluster_follow.constraints = vec![constraint("rack:CLUSTER")];
    cluster_follow.known_agents = vec![AgentAttributes {
        agent_id: AgentId::new("gone"),
        hostname: "gone".into(),
        labels: HashMap::from([("rack".to_owned(), "r1".to_owned())]),
    }];
    cluster_follow.running = vec![AgentId::new("gone")];
    assert_eq!(agents_used(&plan(&cluster_follow, 1)), ["a", "a"]);
}

#[test]
fn group_by_spreads_evenly_over_values() {
    let agents = vec![
        agent("a", 8.0, 8192.0, &[("rack", "r1")]),
        agent("b", 8.0, 8192.0, &[("rack", "r1")]),
        agent("c", 8.0, 8192.0, &[("rack", "r2")]),
        agent("d", 8.0, 8192.0, &[("rack", "r3")]),
    ];
    let mut problem = problem(agents, 1.0, 1.0, 6);
    problem.constraints = vec![constraint("rack:GROUP_BY")];
    let plan = plan(&problem, 1);
    let mut per_rack: HashMap<&str, usize> = HashMap::new();
    for placement in &plan.placements {
        let rack = problem.agents[placement.agent_index].attributes.labels["rack"].as_str();
        *per_rack.entry(rack).or_default() += 1;
    }
    assert_eq!(per_rack, HashMap::from([("r1", 2), ("r2", 2), ("r3", 2)]));
}

#[test]
fn label_operators_filter_agents() {
    let agents = vec![
        agent("a", 8.0, 8192.0, &[("zone", "us-east"), ("disk", "ssd")]),
        agent("b", 8.0, 8192.0, &[("zone", "eu-west"), ("disk", "hdd")]),
        agent("c", 8.0, 8192.0, &[]),
    ];
    let only = |text: &str| {
        let mut problem = problem(agents.clone(), 1.0, 1.0, 1);
        problem.constraints = vec![constraint(text)];
        agents_used(&plan(&problem, 1))
    };
    assert_eq!(only("zone:LIKE:us-.*"), ["a"]);
    assert_eq!(only("zone:UNLIKE:(us|eu)-.*"), ["c"]);
    assert_eq!(only("disk:IS:hdd"), ["b"]);
    assert_eq!(only("disk==ssd"), ["a"]);
    assert_eq!(only("zone==eu-*"), ["b"]);
    assert_eq!(only("zone==/(us|eu)-west/"), ["b"]);
    assert_eq!(only("agent_id==c"), ["c"]);
    assert_eq!(only("node==b.example"), ["b"]);
}

#[test]
fn explanation_counts_constraints_then_resources() {
    let agents = vec![
        agent("a", 8.0, 256.0, &[("disk", "ssd")]),
        agent("b", 8.0, 8192.0, &[]),
        agent("c", 8.0, 8192.0, &[("disk", "hdd")]),
    ];
    let mut problem = problem(agents, 1.0, 512.0, 1);
    problem.constraints = vec![constraint("disk==ssd")];
    let plan = plan(&problem, 1);
    assert_eq!(plan.unplaced, 1);
    assert_eq!(
        plan.explanation.unwrap().to_string(),
        "constraint disk==ssd excludes 1 agent; 1 agent lacks label disk==ssd; \
         1 agent has too little mem (needs 512, largest free 256)"
    );

    let big = problem_with_cpus(64.0);
    assert_eq!(plan_text(&big), "no agent has 64 cpus; largest free is 2");
    let none = problem_none();
    assert_eq!(plan_text(&none), "no agents are offered");
}

fn problem_with_cpus(cpus: f64) -> PlacementProblem {
    problem(
        vec![agent("a", 2.0, 1024.0, &[]), agent("b", 1.0, 1024.0, &[])],
        cpus,
        1.0,
        1,
    )
}

fn problem_none() -> PlacementProblem {
    problem(Vec::new(), 1.0, 1.0, 2)
}

fn plan_text(problem: &PlacementProblem) -> String {
    plan(problem, 0)
        .explanation
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn soft_constraints_prefer_but_never_refuse() {
    let agents = vec![
        agent("a", 8.0, 8192.0, &[("disk", "hdd")]),
        agent("b", 2.0, 8192.0, &[("disk", "ssd")]),
    ];
    let mut problem = problem(agents, 1.0, 1.0, 4);
    problem.constraints = vec![constraint("~disk==ssd")];
    assert_eq!(agents_used(&plan(&problem, 1)), ["b", "b", "a", "a"]);

    problem.constraints = vec![constraint("~hostname:UNIQUE")];
    problem.strategy = PlacementStrategy::BinPack;
    let unique = plan(&problem, 1);
    assert_eq!(agents_used(&unique)[..2], ["b", "a"]);
    assert_eq!(unique.placements.len(), 4);
}

// ---- properties ----

#[derive(Debug, Clone)]
struct Scenario {
    problem: PlacementProblem,
}

fn agent_strategy() -> impl Strategy<Value = (u8, u16, u8, u8, u8, u8)> {
    // cpus (tenths /10), mem, port start offset, port count, rack, disk
    (0u8..=40, 0u16..=4096, 0u8..50, 0u8..6, 0u8..4, 0u8..3)
}

fn constraint_pool() -> Vec<&'static str> {
    vec![
        "hostname:UNIQUE",
        "rack:UNIQUE",
        "rack:MAX_PER:2",
        "rack:CLUSTER",
        "rack:CLUSTER:r1",
        "rack:GROUP_BY",
        "disk==ssd",
        "disk!=hdd",
        "rack:LIKE:r[12]",
        "rack:UNLIKE:r0",
        "disk:IS:ssd",
        "rack==r*",
        "~disk==ssd",
        "~hostname:UNIQUE",
    ]
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(agent_strategy(), 0..12),
        0u8..=20,
        0u16..=1024,
        0usize..3,
        0usize..15,
        prop::collection::vec(0usize..14, 0..3),
        0u8..3,
        prop::collection::vec(0usize..12, 0..4),
    )
        .prop_map(
            |(agents, cpus, mem, ports, count, constraint_picks, strategy, running)| {
                let agents: Vec<AgentCandidate> = agents
                    .into_iter()
                    .enumerate()
                    .map(|(index, (cpus, mem, port_start, port_count, rack, disk))| {
                        let mut labels = HashMap::new();
                        if rack < 3 {
                            labels.insert("rack".to_owned(), format!("r{rack}"));
                        }
                        if disk < 2 {
                            labels.insert(
                                "disk".to_owned(),
                                if disk == 0 { "ssd" } else { "hdd" }.to_owned(),
                            );
                        }
                        let total = Resources::cpus_mem(f64::from(cpus) / 10.0, f64::from(mem));
                        let mut free = total.clone();
                        if port_count > 0 {
                            let begin = 31000 + u64::from(port_start);
                            free.set_ranges(
                                PORTS,
                                RangeSet::from_ranges([
                                    (begin, begin + u64::from(port_count) - 1),
                                    (begin + 10, begin + 11),
                                ]),
                            );
                        }
                        AgentCandidate {
                            attributes: AgentAttributes {
                                agent_id: AgentId::new(format!("agent-{index}")),
                                hostname: format!("host-{index}"),
                                labels,
                            },
                            free,
                            total,
                        }
                    })
                    .collect();
                let pool = constraint_pool();
                let constraints = constraint_picks
                    .into_iter()
                    .map(|pick| constraint(pool[pick]))
                    .collect();
                let running = running
                    .into_iter()
                    .filter(|index| *index < agents.len())
                    .map(|index| agents[index].attributes.agent_id.clone())
                    .collect();
                Scenario {
                    problem: PlacementProblem {
                        agents,
                        known_agents: Vec::new(),
                        running,
                        demand: InstanceDemand {
                            resources: Resources::cpus_mem(f64::from(cpus) / 10.0, f64::from(mem)),
                            ports,
                        },
                        count,
                        strategy: match strategy {
                            0 => PlacementStrategy::BinPack,
                            1 => PlacementStrategy::Spread,
                            _ => PlacementStrategy::Random,
                        },
                        constraints,
                    },
                }
            },
        )
}

fn check_no_overcommit(
    problem: &PlacementProblem,
    plan: &PlacementPlan,
) -> Result<(), TestCaseError> {
    let mut used: Vec<Resources> = vec![Resources::new(); problem.agents.len()];
    let mut ports: Vec<Vec<u64>> = vec![Vec::new(); problem.agents.len()];
    for placement in &plan.placements {
        prop_assert_eq!(
            &problem.agents[placement.agent_index].attributes.agent_id,
            &placement.agent_id
        );
        used[placement.agent_index].add(&problem.demand.resources);
        prop_assert_eq!(placement.ports.len(), problem.demand.ports);
        ports[placement.agent_index].extend(&placement.ports);
    }
    for (index, agent) in problem.agents.iter().enumerate() {
        let mut scalars = agent.free.clone();
        scalars.set_ranges(PORTS, RangeSet::new());
        prop_assert!(
            scalars.contains(&used[index]),
            "agent {} over-committed",
            index
        );
        let free_ports = agent.free.ports();
        let mut seen = ports[index].clone();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(
            seen.len(),
            ports[index].len(),
            "ports reused on agent {}",
            index
        );
        for port in &ports[index] {
            prop_assert!(free_ports.contains_value(*port));
        }
    }
    Ok(())
}

fn check_hard_constraints(
    problem: &PlacementProblem,
    plan: &PlacementPlan,
) -> Result<(), TestCaseError> {
    let index_of: HashMap<&str, usize> = problem
        .agents
        .iter()
        .enumerate()
        .map(|(index, agent)| (agent.attributes.agent_id.as_str(), index))
        .collect();
    let existing: Vec<usize> = problem
        .running
        .iter()
        .map(|id| index_of[id.as_str()])
        .collect();
    let placed: Vec<usize> = plan
        .placements
        .iter()
        .map(|placement| placement.agent_index)
        .collect();
    let all: Vec<usize> = existing.iter().chain(&placed).copied().collect();
    for constraint in problem.constraints.iter().filter(|c| !c.is_soft()) {
        let value = |index: usize| {
            problem.agents[index]
                .attributes
                .value(constraint.attribute())
        };
        for &index in &placed {
            if let Some(verdict) = constraint.matches_agent(&problem.agents[index].attributes) {
                prop_assert!(verdict, "{} violated on agent {}", constraint, index);
            } else {
                prop_assert!(
                    value(index).is_some(),
                    "{} placed on agent lacking attribute",
                    constraint
                );
            }
        }
        let mut per_value: HashMap<&str, usize> = HashMap::new();
        for &index in &all {
            if let Some(value) = value(index) {
                *per_value.entry(value).or_default() += 1;
            }
        }
        let placed_values: std::collections::HashSet<&str> =
            placed.iter().filter_map(|&i| value(i)).collect();
        match constraint.operator() {
            Operator::Unique => {
                for placed_value in &placed_values {
                    prop_assert_eq!(per_value[placed_value], 1, "{} shared", constraint);
                }
            }
            Operator::MaxPer(limit) => {
                for placed_value in &placed_values {
                    prop_assert!(per_value[placed_value] <= *limit as usize);
                }
            }
            Operator::Cluster(None) => {
                let first = all.iter().find_map(|&index| value(index));
                for placed_value in &placed_values {
                    prop_assert_eq!(Some(*placed_value), first);
                }
            }
            Operator::GroupBy(_) if existing.is_empty() => {
                let min = per_value.values().min().copied().unwrap_or(0);
                let max = per_value.values().max().copied().unwrap_or(0);
                prop_assert!(max - min <= 1, "{} uneven: {:?}", constraint, per_value);
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn plans_never_overcommit_and_keep_hard_constraints(scenario in scenario_strategy(), seed in any::<u64>()) {
        let problem = &scenario.problem;
        let plan = plan(problem, seed);
        check_no_overcommit(problem, &plan)?;
        check_hard_constraints(problem, &plan)?;
        prop_assert_eq!(plan.placements.len() + plan.unplaced, problem.count);
        prop_assert_eq!(plan.explanation.is_some(), plan.unplaced > 0);
        if let Some(explanation) = &plan.explanation {
            prop_assert!(!explanation.exclusions.is_empty());
            prop_assert!(!explanation.to_string().is_empty());
        }
    }

    #[test]
    fn heap_and_rescan_agree(scenario in scenario_strategy()) {
        let problem = &scenario.problem;
        prop_assume!(problem.strategy != PlacementStrategy::Random);
        prop_assume!(!problem.constraints.iter().any(|c| matches!(c.operator(), Operator::GroupBy(_))));
        prop_assert_eq!(plan_with_mode(problem, 1, Mode::Heap), plan_with_mode(problem, 1, Mode::Rescan));
    }

    #[test]
    fn binpack_uses_as_few_identical_agents_as_possible(
        agent_count in 1usize..20,
        cpus_per_agent in 1u8..16,
        cpus in 1u8..8,
        ports_per_instance in 0usize..3,
        count in 0usize..60,
    ) {
        let agents: Vec<_> = (0..agent_count)
            .map(|i| agent(&format!("a{i}"), f64::from(cpus_per_agent), 4096.0, &[]))
            .collect();
        let mut problem = problem(agents, f64::from(cpus), 64.0, count);
        problem.demand.ports = ports_per_instance;
        let per_agent_by_cpus = usize::from(cpus_per_agent / cpus);
        let per_agent_by_ports = 10usize.checked_div(ports_per_instance).unwrap_or(usize::MAX);
        let capacity = per_agent_by_cpus.min(per_agent_by_ports).min(64);
        let plan = plan(&problem, 3);
        let placed = count.min(capacity * agent_count);
        prop_assert_eq!(plan.placements.len(), placed);
        let mut used: Vec<usize> = plan.placements.iter().map(|p| p.agent_index).collect();
        used.sort_unstable();
        used.dedup();
        let expected = if capacity == 0 { 0 } else { placed.div_ceil(capacity) };
        prop_assert_eq!(used.len(), expected);
    }
}

#[test]
fn five_thousand_agents_plan_quickly_with_binpack_and_unique() {
    let agents: Vec<_> = (0..5000)
        .map(|i| {
            agent(
                &format!("a{i}"),
                8.0,
                16384.0,
                &[("rack", &format!("r{}", i % 50))],
            )
        })
        .collect();
    let mut problem = problem(agents, 0.5, 256.0, 20_000);
    problem.demand.ports = 1;
    problem.constraints = vec![constraint("rack!=r7")];
    let started = std::time::Instant::now();
    let packed = plan(&problem, 1);
    // 4900 eligible agents hold 10 instances each (10 free ports).
    assert_eq!(packed.placements.len(), 20_000);
    let mut used: Vec<usize> = packed.placements.iter().map(|p| p.agent_index).collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), 2000);
    problem.constraints.push(constraint("hostname:UNIQUE"));
    let unique = plan(&problem, 1);
    assert_eq!(unique.placements.len(), 4900);
    assert_eq!(unique.unplaced, 15_100);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
