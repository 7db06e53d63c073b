//! Simulated agents at scale: thousands of real `agora-agent`s with the `sim` runtime in one
//! process, each with its own `AgentService.Connect` stream over real gRPC to a real master.
//! They write nothing to disk and serve no HTTP, so 10,000 of them fit in one process.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_agent::{AgentConfig, AgentHandle, RuntimeKind};
use agora_proto::{RangeSet, Resources};
use tokio_util::sync::CancellationToken;

/// What one simulated agent reports to the master.
#[derive(Debug, Clone, PartialEq)]
pub struct SimAgentSpec {
    /// Hostname (unique per agent, so constraints on `hostname` behave as on real machines).
    pub hostname: String,
    /// Resources it offers (cpus, mem, disk, ports, ...).
    pub resources: Resources,
    /// Labels (attributes) for constraints.
    pub labels: BTreeMap<String, String>,
}

/// How to build a fleet: how many agents and what each one looks like.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Number of agents.
    pub agents: usize,
    /// Resources of every agent.
    pub resources: Resources,
    /// Labels of agent `i`: every `(key, values)` gives the agent `key = values[i % len]`.
    pub label_cycles: Vec<(String, Vec<String>)>,
    /// Agents started per wave; the next wave starts once this one is spawned, so that the
    /// master sees a registration storm of bounded size.
    pub wave: usize,
    /// Pause between waves.
    pub wave_pause: Duration,
}

impl FleetSpec {
    /// `agents` identical agents with `resources`, a `zone` label over three zones and a
    /// `rack` label over fifty racks.
    pub fn uniform(agents: usize, resources: Resources) -> Self {
        Self {
            agents,
            resources,
            label_cycles: vec![
                (
                    "zone".to_owned(),
                    (0..3).map(|zone| format!("zone-{zone}")).collect(),
                ),
                (
                    "rack".to_owned(),
                    (0..50).map(|rack| format!("rack-{rack:02}")).collect(),
                ),
            ],
            wave: 500,
            wave_pause: Duration::from_millis(20),
        }
    }

    /// The spec of agent `index`.
    pub fn agent(&self, index: usize) -> SimAgentSpec {
        let labels = self
            .label_cycles
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(key, values)| (key.clone(), values[index % values.len()].clone()))
            .collect();
        SimAgentSpec {
            hostname: format!("sim-{index:05}"),
            resources: self.resources.clone(),
            labels,
        }
    }
}

/// Resources of a small simulated machine: `cpus` cores, `mem` MiB, 10 GiB disk and the
/// default port range.
pub fn sim_machine(cpus: f64, mem: f64) -> Resources {
    Resources::cpus_mem(cpus, mem)
        .with_scalar(agora_proto::DISK, 10_240.0)
        .with_ranges(agora_proto::PORTS, RangeSet::from_range(31_000, 32_000))
}

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An agent refused to start (bad spec, runtime error).
    #[error("simulated agent {index} ({hostname}) did not start: {source}")]
    AgentStart {
        /// Its index in the fleet.
        index: usize,
        /// Its hostname.
        hostname: String,
        /// Why.
        source: agora_agent::AgentError,
    },
}

/// A running fleet of simulated agents. Dropping it stops them in the background.
#[derive(Debug)]
pub struct SimFleet {
    agents: Vec<AgentHandle>,
    shutdown: CancellationToken,
}

impl SimFleet {
    /// Starts `spec.agents` simulated agents that connect to `master_url`. Returns once all
    /// are spawned; they register in the background (see [`SimFleet::connected`]).
    pub async fn start(master_url: &str, spec: &FleetSpec) -> Result<SimFleet, FleetError> {
        let shutdown = CancellationToken::new();
        let mut agents = Vec::with_capacity(spec.agents);
        for index in 0..spec.agents {
            let agent = spec.agent(index);
            let mut config = AgentConfig::new(master_url);
            config.runtime = Some(RuntimeKind::Sim);
            config.hostname = agent.hostname.clone();
            config.labels = agent.labels;
            config.resource_overrides = agent.resources;
            config.kill_tasks_on_shutdown = false;
            // Reconnect quickly after a master restart (the failover bench measures this),
            // but not so eagerly that thousands of agents hammer a master that is starting.
            config.reconnect_backoff_min = Duration::from_millis(100);
            config.reconnect_backoff_max = Duration::from_secs(2);
            let handle = agora_agent::spawn(config, shutdown.clone())
                .await
                .map_err(|source| FleetError::AgentStart {
                    index,
                    hostname: agent.hostname,
                    source,
                })?;
            agents.push(handle);
            if spec.wave > 0 && (index + 1) % spec.wave == 0 {
                tokio::time::sleep(spec.wave_pause).await;
            }
        }
        Ok(SimFleet { agents, shutdown })
    }

    /// Number of agents in the fleet.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when the fleet has no agents.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// How many agents have a registered connection to the master now.
    pub async fn connected(&self) -> usize {
        let mut connected = 0;
        for agent in &self.agents {
            if agent
                .snapshot()
                .await
                .is_some_and(|snapshot| snapshot.connected)
            {
                connected += 1;
            }
        }
        connected
    }

    /// Tasks the agents hold, by state name (`TASK_RUNNING`, ...), summed over the fleet.
    pub async fn task_states(&self) -> BTreeMap<String, usize> {
        let mut states = BTreeMap::new();
        for agent in &self.agents {
            if let Some(snapshot) = agent.snapshot().await {
                for task in snapshot.tasks {
                    *states.entry(task.state).or_insert(0) += 1;
                }
            }
        }
        states
    }

    /// Per agent, the number of tasks it holds, in fleet order.
    pub async fn tasks_per_agent(&self) -> Vec<usize> {
        let mut counts = Vec::with_capacity(self.agents.len());
        for agent in &self.agents {
            counts.push(
                agent
                    .snapshot()
                    .await
                    .map_or(0, |snapshot| snapshot.tasks.len()),
            );
        }
        counts
    }

    /// Stops every agent and waits for them (their simulated tasks are forgotten).
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for agent in std::mem::take(&mut self.agents) {
            let _ = agent.wait().await;
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cycle_over_their_values() {
        let spec = FleetSpec::uniform(10, sim_machine(2.0, 4096.0));
        let fourth = spec.agent(4);
        assert_eq!(fourth.hostname, "sim-00004");
        assert_eq!(
            fourth.labels.get("zone").map(String::as_str),
            Some("zone-1")
        );
        assert_eq!(
            fourth.labels.get("rack").map(String::as_str),
            Some("rack-04")
        );
        assert_eq!(fourth.resources.cpus(), 2.0);
    }
}
