//! Time: when the master must next be ticked, and what a tick does.

use std::time::Duration;

use agora_proto::v1;
use tokio::time::Instant;
use tracing::info;

use super::agents::AgentStatus;
use super::{Master, MasterConfig, Now, TickReport};

/// The master's periodic and one-shot timers.
#[derive(Debug, Clone)]
pub(crate) struct Timers {
    /// Next check of agents' heartbeats (and `MasterHeartbeat` to each connected agent).
    pub(crate) next_agent_check: Instant,
    /// Next `Heartbeat` event to subscribed frameworks.
    pub(crate) next_framework_heartbeat: Instant,
    /// Next periodic allocation pass.
    pub(crate) next_periodic_allocation: Instant,
    /// An event-driven allocation pass, due at the end of its batching window.
    pub(crate) pending_allocation: Option<Instant>,
    /// Agents still recovering after a master restart become unreachable at this time.
    pub(crate) reregister_deadline: Option<Instant>,
}

impl Timers {
    /// Timers for a master starting at `now`.
    pub(crate) fn new(config: &MasterConfig, now: Instant) -> Self {
        Self {
            next_agent_check: now + config.agent_heartbeat_interval,
            next_framework_heartbeat: now + config.framework_heartbeat_interval,
            next_periodic_allocation: now + config.allocation_interval,
            pending_allocation: None,
            reregister_deadline: None,
        }
    }
}

impl Master {
    /// When [`Master::tick`] must be called next at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = &self.timers;
        [
            Some(timers.next_agent_check),
            Some(timers.next_framework_heartbeat),
            Some(timers.next_periodic_allocation),
            timers.pending_allocation,
            timers.reregister_deadline,
            self.offers.next_expiry(),
            self.filters.next_expiry(),
            self.frameworks.next_failover_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs due timers: missed agent heartbeats, offer timeouts, filter and failover expiry,
    /// framework and agent heartbeats, and allocation when due.
    pub fn tick(&mut self, now: Now) -> TickReport {
        let instant = now.instant;

        if instant >= self.timers.next_agent_check {
            self.check_agents(now);
            self.timers.next_agent_check = instant + self.config.agent_heartbeat_interval;
        }

        if let Some(deadline) = self.timers.reregister_deadline
            && instant >= deadline
        {
            self.timers.reregister_deadline = None;
            let recovering: Vec<_> = self
                .agents
                .agents
                .values()
                .filter(|agent| agent.status == AgentStatus::Recovering)
                .map(|agent| agent.id.clone())
                .collect();
            for agent_id in recovering {
                info!(agent_id = %agent_id, "agent did not re-register after master restart");
                self.mark_unreachable(now, &agent_id);
            }
        }

        for offer_id in self.offers.expired(instant) {
            self.rescind_offer(instant, &offer_id);
        }

        if self.filters.expire(instant) {
            self.schedule_allocation(instant);
        }

        for framework_id in self.frameworks.failed_over(instant) {
            let _framework = self.framework_span(framework_id.as_str()).entered();
            info!("framework failover timeout expired");
            self.remove_framework(now, &framework_id, "failover timeout expired");
        }

        if instant >= self.timers.next_framework_heartbeat {
            self.broadcast_to_frameworks(v1::event::Event::Heartbeat(v1::Heartbeat {}));
            self.timers.next_framework_heartbeat =
                instant + self.config.framework_heartbeat_interval;
        }

        let pending_due = self
            .timers
            .pending_allocation
            .is_some_and(|due| instant >= due);
        let periodic_due = instant >= self.timers.next_periodic_allocation;
        if pending_due || periodic_due {
            self.timers.pending_allocation = None;
            self.timers.next_periodic_allocation = instant + self.config.allocation_interval;
            let offers_made = self.allocate(now);
            return TickReport {
                allocation_ran: true,
                offers_made,
            };
        }
        TickReport::default()
    }

    /// Heartbeat check: agents silent for too long become unreachable; live ones get a
    /// `MasterHeartbeat`.
    fn check_agents(&mut self, now: Now) {
        let timeout = self
            .config
            .agent_heartbeat_interval
            .checked_mul(self.config.max_missed_heartbeats)
            .unwrap_or(Duration::MAX);
        let mut silent = Vec::new();
        let mut alive = Vec::new();
        for agent in self.agents.agents.values() {
            if !matches!(agent.status, AgentStatus::Active | AgentStatus::Draining) {
                continue;
            }
            if now.instant.saturating_duration_since(agent.last_seen) >= timeout {
                silent.push(agent.id.clone());
            } else if let Some(conn) = agent.conn {
                alive.push(conn);
            }
        }
        for agent_id in silent {
            info!(agent_id = %agent_id, "agent missed too many heartbeats");
            self.mark_unreachable(now, &agent_id);
        }
        for conn in alive {
            self.send_to_agent_conn(
                conn,
                v1::master_message::Message::Heartbeat(v1::MasterHeartbeat {}),
            );
        }
    }
}
