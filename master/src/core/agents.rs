//! Agents as the master sees them: their lifecycle, connection and resource accounting.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_proto::{AgentId, FrameworkId, Resources, TaskId, v1};
use tokio::time::Instant;

use super::ConnId;
use super::allocator::Quantities;

/// Where an agent is in its life.
///
/// ```text
///   register / reregister ──> Active ──drain──> Draining
///                               │  ^               │
///             missed heartbeats │  │ reregister    │ missed heartbeats
///                               v  │               v
///   master restart ──> Recovering ──timeout──> Unreachable
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentStatus {
    /// Registered and heartbeating; its free resources are offered.
    Active,
    /// Missed too many heartbeats (or never came back after a master restart). Its resources
    /// are out of the pool; it may re-register.
    Unreachable,
    /// An operator drains it: its tasks are being killed and nothing new is offered.
    Draining,
    /// Known from the registry after a master restart, not re-registered yet.
    Recovering,
}

/// A transition an agent cannot make from its current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent cannot go from {from:?} to {to:?}")]
pub(crate) struct IllegalAgentTransition {
    /// The state it is in.
    pub(crate) from: AgentStatus,
    /// The state asked for.
    pub(crate) to: AgentStatus,
}

impl AgentStatus {
    /// The lowercase name shown to operators.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Unreachable => "unreachable",
            AgentStatus::Draining => "draining",
            AgentStatus::Recovering => "recovering",
        }
    }

    /// Whether the agent's resources count in the cluster total (and its tasks in shares).
    pub(crate) fn in_pool(self) -> bool {
        matches!(self, AgentStatus::Active | AgentStatus::Draining)
    }

    /// Checks that `self -> to` is a legal move. Re-registration is legal from anywhere;
    /// nothing becomes `Recovering` except by a master restart.
    pub(crate) fn transition(self, to: AgentStatus) -> Result<AgentStatus, IllegalAgentTransition> {
        let legal = matches!(
            (self, to),
            (_, AgentStatus::Active)
                | (
                    AgentStatus::Active | AgentStatus::Draining,
                    AgentStatus::Draining
                )
                | (
                    AgentStatus::Active | AgentStatus::Draining | AgentStatus::Recovering,
                    AgentStatus::Unreachable
                )
        );
        if legal {
            Ok(to)
        } else {
            Err(IllegalAgentTransition { from: self, to })
        }
    }
}

/// One agent.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    /// Its info, with the id set.
    pub(crate) info: v1::AgentInfo,
    /// Its id.
    pub(crate) id: AgentId,
    /// The live connection, if any.
    pub(crate) conn: Option<ConnId>,
    /// Lifecycle state.
    pub(crate) status: AgentStatus,
    /// Everything it has.
    pub(crate) total: Resources,
    /// Held by its non-terminal tasks.
    pub(crate) used: Resources,
    /// Held by outstanding offers.
    pub(crate) offered: Resources,
    /// DRF quantities of `total`, kept alongside for fast checks.
    pub(crate) total_quantities: Quantities,
    /// DRF quantities of `used`.
    pub(crate) used_quantities: Quantities,
    /// DRF quantities of `offered`.
    pub(crate) offered_quantities: Quantities,
    /// Last message of any kind.
    pub(crate) last_seen: Instant,
    /// Wall-clock time of (re-)registration.
    pub(crate) registered_at: f64,
    /// Tasks the master tracks on it (live ones, including terminal ones not yet acknowledged).
    pub(crate) tasks: BTreeSet<(FrameworkId, TaskId)>,
}

impl Agent {
    /// A new agent record.
    pub(crate) fn new(
        info: v1::AgentInfo,
        total: Resources,
        status: AgentStatus,
        conn: Option<ConnId>,
        now: Instant,
        registered_at: f64,
    ) -> Self {
        Self {
            id: AgentId::new(info.id.clone()),
            info,
            conn,
            status,
            total_quantities: Quantities::of(&total),
            total,
            used: Resources::new(),
            offered: Resources::new(),
            used_quantities: Quantities::default(),
            offered_quantities: Quantities::default(),
            last_seen: now,
            registered_at,
            tasks: BTreeSet::new(),
        }
    }

    /// Replaces the total resources.
    pub(crate) fn set_total(&mut self, total: Resources) {
        self.total_quantities = Quantities::of(&total);
        self.total = total;
    }

    /// Adds task resources to `used`.
    pub(crate) fn add_used(&mut self, resources: &Resources) {
        self.used.add(resources);
        self.used_quantities.add(&Quantities::of(resources));
    }

    /// Removes task resources from `used`.
    pub(crate) fn remove_used(&mut self, resources: &Resources) {
        self.used.subtract_saturating(resources);
        self.used_quantities.sub(&Quantities::of(resources));
    }

    /// Adds offered resources (`quantities` are theirs, computed once by the caller).
    pub(crate) fn add_offered(&mut self, resources: &Resources, quantities: &Quantities) {
        self.offered.add(resources);
        self.offered_quantities.add(quantities);
    }

    /// Removes offered resources.
    pub(crate) fn remove_offered(&mut self, resources: &Resources) {
        self.offered.subtract_saturating(resources);
        self.offered_quantities.sub(&Quantities::of(resources));
    }

    /// Quick check, without building [`Resources`], that enough is free to be worth offering:
    /// at least 0.01 cpus or 32 MiB.
    pub(crate) fn has_offerable_free(&self) -> bool {
        let free = self
            .total_quantities
            .minus(&self.used_quantities)
            .minus(&self.offered_quantities);
        free.cpus_millis() >= 10 || free.mem_millis() >= 32_000
    }

    /// What is neither used nor offered.
    pub(crate) fn free(&self) -> Resources {
        let mut free = self.total.clone();
        free.subtract_saturating(&self.used);
        free.subtract_saturating(&self.offered);
        free
    }

    /// Whether its free resources may be offered now.
    pub(crate) fn offerable(&self) -> bool {
        self.status == AgentStatus::Active && self.conn.is_some()
    }
}

/// All agents, in id order, with an index by connection.
#[derive(Debug, Default)]
pub(crate) struct AgentBook {
    /// Every agent ever registered (or recovered), by id.
    pub(crate) agents: BTreeMap<AgentId, Agent>,
    /// Which agent each live connection belongs to.
    pub(crate) by_conn: HashMap<ConnId, AgentId>,
}

impl AgentBook {
    /// The agent on connection `conn`.
    pub(crate) fn id_of_conn(&self, conn: ConnId) -> Option<AgentId> {
        self.by_conn.get(&conn).cloned()
    }

    /// The agent, if known.
    pub(crate) fn get(&self, agent_id: &AgentId) -> Option<&Agent> {
        self.agents.get(agent_id)
    }

    /// The agent, mutably, if known.
    pub(crate) fn get_mut(&mut self, agent_id: &AgentId) -> Option<&mut Agent> {
        self.agents.get_mut(agent_id)
    }

    /// The connection of a connected agent.
    pub(crate) fn conn_of(&self, agent_id: &AgentId) -> Option<ConnId> {
        self.agents.get(agent_id).and_then(|agent| agent.conn)
    }

    /// Binds `agent_id` to `conn`, returning the connection it replaces, if any.
    pub(crate) fn attach(&mut self, agent_id: &AgentId, conn: ConnId) -> Option<ConnId> {
        let agent = self.agents.get_mut(agent_id)?;
        let previous = agent.conn.replace(conn);
        if let Some(previous) = previous {
            self.by_conn.remove(&previous);
        }
        self.by_conn.insert(conn, agent_id.clone());
        previous.filter(|&previous| previous != conn)
    }

    /// Unbinds whatever agent is on `conn`.
    pub(crate) fn detach(&mut self, conn: ConnId) -> Option<AgentId> {
        let agent_id = self.by_conn.remove(&conn)?;
        if let Some(agent) = self.agents.get_mut(&agent_id)
            && agent.conn == Some(conn)
        {
            agent.conn = None;
        }
        Some(agent_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_documented_machine() {
        use AgentStatus::*;
        assert_eq!(Unreachable.transition(Active), Ok(Active));
        assert_eq!(Active.transition(Draining), Ok(Draining));
        assert_eq!(Recovering.transition(Unreachable), Ok(Unreachable));
        assert!(Unreachable.transition(Draining).is_err());
        assert!(Active.transition(Recovering).is_err());
        assert!(Recovering.transition(Draining).is_err());
    }

    #[test]
    fn free_resources_subtract_used_and_offered() {
        let total = Resources::parse("cpus:4;mem:1024;ports:[31000-31010]").unwrap_or_default();
        let mut agent = Agent::new(
            v1::AgentInfo {
                id: "a".into(),
                ..Default::default()
            },
            total,
            AgentStatus::Active,
            Some(ConnId(1)),
            Instant::now(),
            0.0,
        );
        agent.add_used(&Resources::parse("cpus:1;mem:512;ports:[31000-31000]").unwrap_or_default());
        let offered = Resources::parse("cpus:2.99;mem:512").unwrap_or_default();
        agent.add_offered(&offered, &Quantities::of(&offered));
        let free = agent.free();
        assert_eq!(free.cpus(), 0.01);
        assert_eq!(free.mem(), 0.0);
        assert_eq!(free.ports().count(), 10);
        assert!(agent.has_offerable_free());
        let more = Resources::parse("cpus:0.01").unwrap_or_default();
        agent.add_offered(&more, &Quantities::of(&more));
        assert!(!agent.has_offerable_free());
    }

    #[test]
    fn attach_replaces_and_reports_the_older_connection() {
        let mut book = AgentBook::default();
        let id = AgentId::new("a");
        let info = v1::AgentInfo {
            id: "a".into(),
            ..Default::default()
        };
        book.agents.insert(
            id.clone(),
            Agent::new(
                info,
                Resources::new(),
                AgentStatus::Active,
                None,
                Instant::now(),
                0.0,
            ),
        );
        assert_eq!(book.attach(&id, ConnId(1)), None);
        assert_eq!(book.attach(&id, ConnId(2)), Some(ConnId(1)));
        assert_eq!(book.id_of_conn(ConnId(1)), None);
        assert_eq!(book.detach(ConnId(2)), Some(id.clone()));
        assert_eq!(book.conn_of(&id), None);
    }
}
