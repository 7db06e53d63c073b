//! A master core filled with agents and frameworks, for the allocator bench (no sockets).

use std::time::Duration;

use agora_master::core::{Command, ConnId, Master, MasterConfig, Now, Registry};
use agora_proto::{RangeSet, Resources, v1};
use tokio::time::Instant;

/// The shape of an allocation benchmark: how many agents, how many frameworks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationShape {
    /// Registered, connected agents.
    pub agents: usize,
    /// Subscribed frameworks, all wanting offers.
    pub frameworks: usize,
}

impl std::fmt::Display for AllocationShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.agents, self.frameworks)
    }
}

/// The shapes of Mesos' `HierarchicalAllocator_BENCHMARK_Test` that Agora reports against.
pub const MESOS_SHAPES: [AllocationShape; 3] = [
    AllocationShape {
        agents: 1_000,
        frameworks: 100,
    },
    AllocationShape {
        agents: 5_000,
        frameworks: 500,
    },
    AllocationShape {
        agents: 10_000,
        frameworks: 1_000,
    },
];

/// A master core with every agent registered and every framework subscribed, and the instant
/// at which the next [`Master::tick`] runs a full allocation pass.
#[derive(Debug)]
pub struct LoadedMaster {
    /// The core.
    pub master: Master,
    /// A time at which a tick runs the periodic allocation pass (and nothing else).
    pub allocation_due: Now,
}

/// Resources of one benchmark agent: a mid-size machine with ports, as in Mesos' bench.
pub fn bench_agent_resources() -> Resources {
    Resources::cpus_mem(16.0, 65_536.0)
        .with_scalar(agora_proto::DISK, 500_000.0)
        .with_ranges(agora_proto::PORTS, RangeSet::from_range(31_000, 32_000))
}

/// Builds a master holding `shape.agents` agents (labelled with a zone and a rack) and
/// `shape.frameworks` subscribed frameworks, with no offer outstanding yet.
pub fn loaded_master(shape: AllocationShape, seed: u64) -> LoadedMaster {
    let origin = Instant::now();
    let now = Now {
        instant: origin,
        unix_seconds: 1_700_000_000.0,
    };
    let config = MasterConfig {
        seed,
        ..MasterConfig::default()
    };
    let allocation_interval = config.allocation_interval;
    let mut master = Master::new(config, now, Registry::default());
    let resources = bench_agent_resources().to_proto();
    for index in 0..shape.agents {
        let info = v1::AgentInfo {
            hostname: format!("node-{index:05}"),
            resources: resources.clone(),
            labels: [
                ("zone".to_owned(), format!("zone-{}", index % 3)),
                ("rack".to_owned(), format!("rack-{}", index % 50)),
            ]
            .into_iter()
            .collect(),
            runtimes: vec!["sim".to_owned()],
            ..Default::default()
        };
        // Registration only fails on malformed input, which this fixture never builds.
        if let Err(error) = master.agent_register(now, ConnId(index as u64 + 1), info) {
            panic!("fixture agent {index} refused: {error}");
        }
    }
    for index in 0..shape.frameworks {
        let framework = v1::FrameworkInfo {
            name: format!("framework-{index:04}"),
            role: "*".to_owned(),
            failover_timeout_seconds: 3600.0,
            ..Default::default()
        };
        let conn = ConnId(1_000_000 + index as u64);
        if let Err(error) = master.subscribe(now, conn, framework, false) {
            panic!("fixture framework {index} refused: {error}");
        }
    }
    drop(master.take_commands());
    // Past the periodic allocation deadline, before the first agent heartbeat check.
    let due = origin + allocation_interval + Duration::from_millis(1);
    LoadedMaster {
        master,
        allocation_due: Now {
            instant: due,
            unix_seconds: now.unix_seconds + allocation_interval.as_secs_f64(),
        },
    }
}

/// Runs one allocation pass and returns the commands it produced (offers to frameworks),
/// so that the caller decides when they are dropped.
pub fn run_allocation(loaded: &mut LoadedMaster) -> (usize, Vec<Command>) {
    let report = loaded.master.tick(loaded.allocation_due);
    (report.offers_made, loaded.master.take_commands())
}

/// Counts the offers in `commands` (each agent's free resources go whole to one framework).
pub fn offers_in(commands: &[Command]) -> usize {
    commands
        .iter()
        .map(|command| match command {
            Command::SendToFramework {
                event: v1::event::Event::Offers(offers),
                ..
            } => offers.offers.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_offers_every_agent_once() {
        let shape = AllocationShape {
            agents: 200,
            frameworks: 20,
        };
        let mut loaded = loaded_master(shape, 7);
        let (made, commands) = run_allocation(&mut loaded);
        assert_eq!(made, 200);
        assert_eq!(offers_in(&commands), 200);
        let state = loaded.master.state();
        assert_eq!(state.offers.len(), 200);
        // DRF over identical agents: every framework gets the same number of offers.
        for framework in &state.frameworks {
            let held = state
                .offers
                .iter()
                .filter(|offer| {
                    Some(offer.framework_id.as_str())
                        == framework.info.as_ref().map(|info| info.id.as_str())
                })
                .count();
            assert_eq!(held, 10, "framework {:?}", framework.info);
        }
    }
}
