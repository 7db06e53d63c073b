//! The master's sans-IO core: agents, frameworks, offers, the DRF allocator and task tracking.
//!
//! Nothing here touches a socket, a clock or a disk. The shell (gRPC services, HTTP, store)
//! calls the methods of [`Master`] with the current time, then drains [`Master::take_commands`]
//! and carries each [`Command`] out in order: persisting first, then sending. Timers are driven
//! by calling [`Master::tick`] no later than [`Master::next_deadline`].
//!
//! Connections are named by [`ConnId`], allocated by the shell: one per agent stream and one
//! per framework subscription stream.
//!
//! Where each entry point of [`Master`] lives:
//! - `agent_calls`: `agent_register`, `agent_reregister`, `agent_heartbeat`,
//!   `agent_status_update`, `agent_resource_update`, `agent_disconnected`, `drain_agent`;
//! - `scheduler_calls`: `subscribe`, `framework_disconnected`, `accept`, `decline`, `revive`,
//!   `suppress`, `kill`, `acknowledge`, `reconcile`, `teardown`;
//! - `timers`: `next_deadline`, `tick`; `view`: `state`, `metrics`.
//!
//! The books they work on: `agents`, `frameworks`, `offers` (offer lifecycle: made, accepted,
//! declined, rescinded, expired), `filters`, `tasks`, `awaiting` (kills and questions held for
//! disconnected agents); `accounting` keeps the books consistent with each other, `allocator`
//! and `allocation` are DRF, `recovery` rebuilds the books from the registry.

mod accounting;
mod agent_calls;
mod agents;
mod allocation;
mod allocator;
mod awaiting;
mod filters;
mod frameworks;
mod offers;
mod recovery;
mod scheduler_calls;
mod tasks;
mod timers;
mod validation;
mod view;

#[cfg(test)]
mod held_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod span_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use rand::SeedableRng;
use rand::rngs::StdRng;

use agents::AgentBook;
use awaiting::AwaitingBook;
use filters::FilterBook;
use frameworks::FrameworkBook;
use offers::{OfferBook, OfferIdSource};
use tasks::TaskBook;
use timers::Timers;

/// Identifies one agent connection or one framework subscription stream. Allocated by the
/// shell, never reused within a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

pub use agora_proto::clock::Now;

/// Master settings; see the `master` binary's flags for what each means to an operator.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Outstanding offers are rescinded after this long. `None`: never.
    pub offer_timeout: Option<Duration>,
    /// How often agents must heartbeat (sent to them in `Registered`).
    pub agent_heartbeat_interval: Duration,
    /// Missed agent heartbeats after which an agent is unreachable.
    pub max_missed_heartbeats: u32,
    /// How often frameworks get a `Heartbeat` event.
    pub framework_heartbeat_interval: Duration,
    /// Allocation waits this long after resources free up or demand appears, to batch events.
    pub allocation_batch_window: Duration,
    /// Period of the allocation pass that runs even without events.
    pub allocation_interval: Duration,
    /// Filter duration for declines (and unused accepted resources) that name none.
    pub default_refuse: Duration,
    /// Upper bound on any framework's `failover_timeout_seconds`.
    pub max_failover_timeout: Duration,
    /// After a master restart, agents from the registry that have not re-registered within this
    /// time become unreachable.
    pub agent_reregister_timeout: Duration,
    /// Fair-share weight per role; roles not listed weigh 1.
    pub role_weights: BTreeMap<String, f64>,
    /// Seed for the allocator's agent shuffling, so tests are deterministic.
    pub seed: u64,
    /// How many terminal tasks to keep for `/state` and reconciliation.
    pub max_completed_tasks: usize,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            offer_timeout: Some(Duration::from_secs(30)),
            agent_heartbeat_interval: Duration::from_secs(5),
            max_missed_heartbeats: 5,
            framework_heartbeat_interval: Duration::from_secs(15),
            allocation_batch_window: Duration::from_millis(20),
            allocation_interval: Duration::from_secs(1),
            default_refuse: Duration::from_secs(5),
            max_failover_timeout: Duration::from_secs(7 * 24 * 3600),
            agent_reregister_timeout: Duration::from_secs(600),
            role_weights: BTreeMap::new(),
            seed: 0,
            max_completed_tasks: 10_000,
        }
    }
}

/// What the registry holds: everything that must survive a master restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    /// Registered agents (with their assigned ids).
    pub agents: Vec<v1::AgentInfo>,
    /// Subscribed frameworks (with their assigned ids and failover timeouts).
    pub frameworks: Vec<v1::FrameworkInfo>,
    /// Frameworks that were torn down or whose failover timeout expired: they may not
    /// re-subscribe, and agents kill what they still run for them.
    pub removed_frameworks: Vec<FrameworkId>,
}

/// One change to the registry. The shell applies these in order, before it sends any message
/// produced after them.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryUpdate {
    /// Insert or replace an agent.
    UpsertAgent(v1::AgentInfo),
    /// Forget an agent.
    RemoveAgent(AgentId),
    /// Insert or replace a framework.
    UpsertFramework(v1::FrameworkInfo),
    /// Mark a framework removed (and forget its info).
    RemoveFramework(FrameworkId),
}

/// What the shell must do. Carried out in the order returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Persist a registry change.
    Persist(RegistryUpdate),
    /// Send a message on the agent connection `conn`.
    SendToAgent {
        /// The agent's connection.
        conn: ConnId,
        /// The message.
        message: v1::master_message::Message,
    },
    /// Send an event on the framework subscription stream `conn`.
    SendToFramework {
        /// The framework's subscription stream.
        conn: ConnId,
        /// The event.
        event: v1::event::Event,
    },
    /// End a framework subscription stream (superseded by a newer one, or torn down).
    CloseFramework {
        /// The stream to end.
        conn: ConnId,
        /// Sent to the framework as the stream's closing status message.
        reason: String,
    },
    /// End an agent connection (superseded by a newer one, or refused).
    CloseAgent {
        /// The connection to end.
        conn: ConnId,
        /// Sent to the agent as the stream's closing status message.
        reason: String,
    },
}

/// Why a call was refused. Every variant leaves the master's state unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MasterError {
    /// No such framework is subscribed (or known from the registry).
    #[error("unknown framework {0}")]
    UnknownFramework(FrameworkId),
    /// The framework was torn down or failed over past its timeout.
    #[error("framework {0} has been removed and cannot subscribe again")]
    FrameworkRemoved(FrameworkId),
    /// The call's stream id is not the framework's current subscription.
    #[error("stream {stream_id} is not the current subscription of framework {framework_id}")]
    StaleStream {
        /// Framework named by the call.
        framework_id: FrameworkId,
        /// Stream named by the call.
        stream_id: String,
    },
    /// An offer id that is not outstanding for this framework.
    #[error("offer {0} is not outstanding for this framework (unknown, expired or rescinded)")]
    UnknownOffer(OfferId),
    /// No such agent.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// No such task.
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// An acknowledgement names an update the master does not know as the task's latest.
    #[error(
        "task {task_id}: update {uuid} is not its latest update (the master knows {latest}); \
         acknowledge the uuid of the update you received last"
    )]
    UnknownUpdate {
        /// The task.
        task_id: TaskId,
        /// The uuid acknowledged.
        uuid: String,
        /// The uuid of the task's latest update from its agent.
        latest: String,
    },
    /// A request field is missing or malformed.
    #[error("{field}: {reason}")]
    InvalidField {
        /// Path of the offending field, e.g. `operations[0].launch.tasks[1].resources`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Tasks of an accept need more than the offers hold.
    #[error("tasks need {needed} but the offers hold {offered}")]
    InsufficientResources {
        /// What the tasks ask for, in resource text form.
        needed: String,
        /// What the offers hold, in resource text form.
        offered: String,
    },
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MasterMetrics {
    /// Agents connected and heartbeating.
    pub agents_active: u64,
    /// Agents past the missed-heartbeat limit (or not re-registered after a restart).
    pub agents_unreachable: u64,
    /// Agents being drained.
    pub agents_draining: u64,
    /// Frameworks with an open subscription.
    pub frameworks_connected: u64,
    /// Frameworks within their failover timeout, without a subscription.
    pub frameworks_disconnected: u64,
    /// Tasks by state name (`TASK_RUNNING`, ...), non-terminal and retained terminal ones.
    pub tasks_by_state: BTreeMap<String, u64>,
    /// Offers outstanding now.
    pub offers_outstanding: u64,
    /// Offers made since start.
    pub offers_made_total: u64,
    /// Allocation passes run since start.
    pub allocation_runs_total: u64,
}

/// What one [`Master::tick`] did, so the shell can time allocation runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Whether an allocation pass ran.
    pub allocation_ran: bool,
    /// Offers made by that pass.
    pub offers_made: usize,
}

/// The master's whole state. See the module docs for how the shell drives it.
pub struct Master {
    config: MasterConfig,
    commands: Vec<Command>,
    agents: AgentBook,
    frameworks: FrameworkBook,
    offers: OfferBook,
    offer_ids: OfferIdSource,
    filters: FilterBook,
    tasks: TaskBook,
    /// Kills and reconciliation questions waiting for an agent to re-register.
    awaiting: AwaitingBook,
    /// Sum of the totals of agents in the pool (active or draining).
    cluster_total: allocator::Quantities,
    rng: StdRng,
    timers: Timers,
    allocation_runs_total: u64,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("agents", &self.agents.agents.len())
            .field("frameworks", &self.frameworks.frameworks.len())
            .field("offers", &self.offers.len())
            .field("held_requests", &self.awaiting.len())
            .finish_non_exhaustive()
    }
}

/// The span every log line about one task is written in (as in the agent), so that a grep of
/// its id follows it through the master.
pub(crate) fn task_span(framework_id: &FrameworkId, task_id: &TaskId) -> tracing::Span {
    tracing::info_span!("task", framework_id = %framework_id, task_id = %task_id)
}

/// The span of a subscription: the framework's name, its principal when it has one, and its id
/// when it fails over (a newcomer's id is recorded once the master assigns it).
fn subscribe_span(info: &v1::FrameworkInfo) -> tracing::Span {
    let span = tracing::info_span!(
        "framework",
        name = %info.name,
        framework_id = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    if !info.id.is_empty() {
        span.record("framework_id", tracing::field::display(&info.id));
    }
    if !info.principal.is_empty() {
        span.record("principal", tracing::field::display(&info.principal));
    }
    span
}

impl Master {
    /// The span of a call of framework `framework_id`, with its name and principal when the
    /// master knows them (looked up only when the span is enabled: a quiet master pays nothing).
    pub(crate) fn framework_span(&self, framework_id: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "framework",
            framework_id = %framework_id,
            name = tracing::field::Empty,
            principal = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        if let Some(framework) = self.frameworks.get(&FrameworkId::new(framework_id)) {
            span.record("name", tracing::field::display(&framework.info.name));
            if !framework.info.principal.is_empty() {
                span.record(
                    "principal",
                    tracing::field::display(&framework.info.principal),
                );
            }
        }
        span
    }

    /// [`Master::framework_span`] of the framework a scheduler call names in its header.
    fn call_span(&self, header: Option<&v1::CallHeader>) -> tracing::Span {
        self.framework_span(header.map_or("", |header| header.framework_id.as_str()))
    }

    /// A master starting at `now`, recovering agents and frameworks from `registry`. Recovered
    /// agents wait `agent_reregister_timeout` to re-register; recovered frameworks get their
    /// failover timeout from `now` to re-subscribe.
    pub fn new(config: MasterConfig, now: Now, registry: Registry) -> Self {
        let mut master = Self {
            rng: StdRng::seed_from_u64(config.seed),
            timers: Timers::new(&config, now.instant),
            tasks: TaskBook::new(config.max_completed_tasks),
            awaiting: AwaitingBook::default(),
            config,
            commands: Vec::new(),
            agents: AgentBook::default(),
            frameworks: FrameworkBook::default(),
            offers: OfferBook::default(),
            offer_ids: OfferIdSource::new(),
            filters: FilterBook::default(),
            cluster_total: allocator::Quantities::default(),
            allocation_runs_total: 0,
        };
        master.recover(now, registry);
        master
    }

    /// The configuration in force.
    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// Drains the commands produced since the last call, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}
