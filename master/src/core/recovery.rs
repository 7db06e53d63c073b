//! Master restart: agents and frameworks come back from the registry.

use agora_proto::{AgentId, FrameworkId, Resources};
use tracing::{info, warn};

use super::agents::{Agent, AgentStatus};
use super::frameworks::{Framework, FrameworkConnection};
use super::{Master, Now, Registry};

impl Master {
    /// Loads the registry: agents wait to re-register (`Recovering`), frameworks wait to
    /// re-subscribe (`Disconnected` with their failover timeout from now).
    pub(super) fn recover(&mut self, now: Now, registry: Registry) {
        for framework_id in registry.removed_frameworks {
            self.frameworks.removed.insert(framework_id);
        }
        for info in registry.agents {
            if info.id.is_empty() {
                warn!(hostname = %info.hostname, "registry agent without id skipped");
                continue;
            }
            let total = Resources::from_proto(&info.resources).unwrap_or_else(|error| {
                warn!(agent_id = %info.id, %error, "registry agent resources unreadable");
                Resources::new()
            });
            let agent_id = AgentId::new(info.id.clone());
            let agent = Agent::new(
                info,
                total,
                AgentStatus::Recovering,
                None,
                now.instant,
                now.unix_seconds,
            );
            self.agents.agents.insert(agent_id, agent);
        }
        if !self.agents.agents.is_empty() {
            self.timers.reregister_deadline =
                Some(now.instant + self.config.agent_reregister_timeout);
        }
        for mut info in registry.frameworks {
            if info.id.is_empty() {
                continue;
            }
            let framework_id = FrameworkId::new(info.id.clone());
            if self.frameworks.removed.contains(&framework_id) {
                continue;
            }
            if info.role.is_empty() {
                info.role = "*".to_owned();
            }
            let mut framework = Framework {
                id: framework_id.clone(),
                info,
                connection: FrameworkConnection::Disconnected {
                    failover_deadline: now.instant,
                },
                suppressed: false,
                allocated: Default::default(),
                unannounced: Default::default(),
            };
            let timeout = framework.failover_timeout(self.config.max_failover_timeout);
            framework.connection = FrameworkConnection::Disconnected {
                failover_deadline: now.instant + timeout,
            };
            self.frameworks.frameworks.insert(framework_id, framework);
        }
        info!(
            agents = self.agents.agents.len(),
            frameworks = self.frameworks.frameworks.len(),
            removed_frameworks = self.frameworks.removed.len(),
            "registry recovered"
        );
    }
}
