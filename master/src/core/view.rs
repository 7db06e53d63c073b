//! What operators see: cluster state and metrics.

use std::collections::BTreeMap;

use agora_proto::v1;

use super::agents::AgentStatus;
use super::frameworks::FrameworkConnection;
use super::{Master, MasterMetrics};

impl Master {
    /// The cluster as operators see it.
    pub fn state(&self) -> v1::ClusterState {
        let agents = self
            .agents
            .agents
            .values()
            .map(|agent| v1::AgentState {
                info: Some(agent.info.clone()),
                status: agent.status.as_str().to_owned(),
                used: agent.used.to_proto(),
                offered: agent.offered.to_proto(),
                registered_at: agent.registered_at,
            })
            .collect();
        let frameworks = self
            .frameworks
            .frameworks
            .values()
            .map(|framework| {
                let connected = framework.conn().is_some();
                v1::FrameworkState {
                    info: Some(framework.info.clone()),
                    connected,
                    active: connected,
                    suppressed: framework.suppressed,
                    dominant_share: framework.allocated.dominant_share(&self.cluster_total),
                }
            })
            .collect();
        let tasks = self
            .tasks
            .live()
            .chain(self.tasks.completed())
            .map(super::tasks::Task::entry)
            .collect();
        let mut offers: Vec<v1::Offer> = self
            .offers
            .iter()
            .map(|offer| self.offer_proto(offer))
            .collect();
        offers.sort_by(|left, right| left.id.cmp(&right.id));
        v1::ClusterState {
            agents,
            frameworks,
            tasks,
            offers,
            leader: String::new(),
            version: agora_proto::VERSION.to_owned(),
        }
    }

    /// Counts for `/metrics`.
    pub fn metrics(&self) -> MasterMetrics {
        let mut metrics = MasterMetrics {
            offers_outstanding: self.offers.len() as u64,
            offers_made_total: self.offers.made_total(),
            allocation_runs_total: self.allocation_runs_total,
            ..MasterMetrics::default()
        };
        for agent in self.agents.agents.values() {
            match agent.status {
                AgentStatus::Active => metrics.agents_active += 1,
                AgentStatus::Unreachable | AgentStatus::Recovering => {
                    metrics.agents_unreachable += 1
                }
                AgentStatus::Draining => metrics.agents_draining += 1,
            }
        }
        for framework in self.frameworks.frameworks.values() {
            match framework.connection {
                FrameworkConnection::Connected { .. } => metrics.frameworks_connected += 1,
                FrameworkConnection::Disconnected { .. } => metrics.frameworks_disconnected += 1,
            }
        }
        let mut tasks_by_state: BTreeMap<String, u64> = BTreeMap::new();
        for task in self.tasks.live().chain(self.tasks.completed()) {
            *tasks_by_state
                .entry(task.state().as_str_name().to_owned())
                .or_default() += 1;
        }
        metrics.tasks_by_state = tasks_by_state;
        metrics
    }
}
