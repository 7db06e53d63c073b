//! The vocabulary a framework core speaks to the runtime.

use agora_proto::v1;
use agora_proto::{AgentId, OfferId, TaskId};

/// What a core asks the runtime to do, in order. `W` is the core's store write, `N` what it
/// publishes to its own subscribers (e.g. an HTTP event stream).
#[derive(Debug, Clone, PartialEq)]
pub enum Command<W, N> {
    /// Write these to the store; they are durable before any later command is carried out.
    /// Consecutive `Persist`s go in one transaction.
    Persist(Vec<W>),
    /// Accept `offer_id` launching `tasks` (the rest of the offer goes back to the master).
    Launch {
        /// The offer.
        offer_id: OfferId,
        /// Tasks built from it, all on the offer's agent.
        tasks: Vec<v1::TaskInfo>,
    },
    /// Decline offers, keeping them away for `refuse_seconds`.
    Decline {
        /// The offers.
        offer_ids: Vec<OfferId>,
        /// How long the master should not offer those resources again.
        refuse_seconds: f64,
    },
    /// Kill a task.
    Kill {
        /// The task.
        task_id: TaskId,
        /// Its agent.
        agent_id: AgentId,
    },
    /// Resume offers: work is waiting.
    Revive,
    /// Stop offers: nothing waits.
    Suppress,
    /// Ask the master for the state of these tasks; empty asks for every task it runs for
    /// the framework. A long list is sent in chunks, one per tick.
    Reconcile(Vec<(TaskId, AgentId)>),
    /// Hand `N` to the runtime's notice subscribers.
    Publish(N),
}

/// How a launch failed, as far as the framework can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchFailure {
    /// The master answered and refused the launch: the tasks were not launched.
    Refused,
    /// The call did not get an answer (connection lost, timeout): the tasks may or may not
    /// have been launched; reconciliation tells.
    Unknown,
}

impl LaunchFailure {
    /// Classifies a failed launch call.
    pub fn of(error: &crate::SdkError) -> Self {
        match error {
            crate::SdkError::Unavailable(_) | crate::SdkError::Rpc { .. } => LaunchFailure::Unknown,
            _ => LaunchFailure::Refused,
        }
    }
}
