//! svcframework placement per task (`agora_sdk::scheduling::plan`): bin-pack with a
//! constraint, identical instances of one app, over 500, 1,000 and 5,000 agents. Reported as
//! throughput in instances, so the cost per task can be compared across cluster sizes.
//!
//! `cargo bench -p agora-benches --bench placement`

use std::time::Duration;

use agora_proto::{AgentId, RangeSet, Resources};
use agora_sdk::scheduling::{
    AgentAttributes, AgentCandidate, Constraint, InstanceDemand, PlacementProblem, plan,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn agents(count: usize) -> Vec<AgentCandidate> {
    let total = Resources::cpus_mem(16.0, 65_536.0)
        .with_ranges(agora_proto::PORTS, RangeSet::from_range(31_000, 32_000));
    (0..count)
        .map(|index| {
            // A quarter of the cluster is already half full, as in a live cluster.
            let used = if index % 4 == 0 {
                Resources::cpus_mem(8.0, 32_768.0)
            } else {
                Resources::new()
            };
            let mut free = total.clone();
            free.subtract_saturating(&used);
            AgentCandidate {
                attributes: AgentAttributes {
                    agent_id: AgentId::new(format!("agent-{index:05}")),
                    hostname: format!("node-{index:05}"),
                    labels: [
                        ("zone".to_owned(), format!("zone-{}", index % 3)),
                        ("rack".to_owned(), format!("rack-{}", index % 50)),
                    ]
                    .into_iter()
                    .collect(),
                },
                free,
                total: total.clone(),
            }
        })
        .collect()
}

fn problem(agent_count: usize, count: usize) -> PlacementProblem {
    let constraint =
        match Constraint::from_marathon(&["hostname".into(), "MAX_PER".into(), "4".into()]) {
            Ok(constraint) => constraint,
            Err(error) => panic!("bench constraint: {error}"),
        };
    PlacementProblem {
        agents: agents(agent_count),
        demand: InstanceDemand {
            resources: Resources::cpus_mem(0.5, 512.0),
            ports: 1,
        },
        count,
        constraints: vec![constraint],
        ..Default::default()
    }
}

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement_binpack_max_per");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    for agent_count in [500, 1_000, 5_000] {
        for count in [1, 100, 1_000] {
            let problem = problem(agent_count, count);
            group.throughput(Throughput::Elements(count as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{agent_count}_agents"), count),
                &problem,
                |bencher, problem| {
                    bencher.iter(|| {
                        let plan = plan(problem, 7);
                        assert_eq!(plan.placements.len(), problem.count);
                        plan
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
