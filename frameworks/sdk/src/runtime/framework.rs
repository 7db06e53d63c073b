//! What a framework plugs into the runtime: a sans-IO core and a store.

use std::time::SystemTime;

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};

use super::command::{Command, LaunchFailure};

/// A framework's sans-IO core: events in, [`Command`]s out, time passed in. Every method
/// only records commands; the runtime takes them with [`FrameworkCore::take_commands`] and
/// carries them out in order.
pub trait FrameworkCore: Send + 'static {
    /// One store write (the store applies a batch of them in one transaction).
    type Write: Send + 'static;
    /// What the core publishes to its own subscribers ([`Command::Publish`]).
    type Notice: Clone + Send + 'static;

    /// The driver subscribed, first time or again. The core stores the id when it is new
    /// and asks for reconciliation of what it knows ([`Command::Reconcile`]; the runtime
    /// chunks long lists).
    fn on_subscribed(&mut self, framework_id: &FrameworkId, now: SystemTime);

    /// The subscription ended; the driver re-subscribes by itself. Reconciliation still
    /// pending is dropped by the runtime (the next subscription asks again).
    fn on_disconnected(&mut self);

    /// New offers; each must end in a launch or a decline.
    fn on_offers(&mut self, offers: Vec<v1::Offer>, now: SystemTime);

    /// An offer is no longer valid.
    fn on_rescind(&mut self, offer_id: &OfferId, now: SystemTime);

    /// Status updates in the order they arrived (answers to reconciliation included). The
    /// runtime acknowledges them once the writes they produced are stored.
    fn on_updates(&mut self, statuses: &[v1::TaskStatus], now: SystemTime);

    /// The master removed an agent: the tasks on it are gone.
    fn on_agent_failure(&mut self, agent_id: &AgentId, now: SystemTime);

    /// A [`Command::Launch`] of these tasks failed.
    fn on_launch_failed(&mut self, task_ids: &[TaskId], failure: LaunchFailure, now: SystemTime);

    /// Periodic work: timers, retries, backoffs ending.
    fn tick(&mut self, now: SystemTime);

    /// The commands recorded since the last call, in order.
    fn take_commands(&mut self) -> Vec<Command<Self::Write, Self::Notice>>;
}

/// A framework's durable store.
pub trait FrameworkStore: Send + Sync + 'static {
    /// One write, as the core produces it.
    type Write: Send + 'static;
    /// Why writing failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies `writes` in one transaction, durably. Blocking: the runtime calls it off the
    /// async threads.
    fn apply(&self, writes: &[Self::Write]) -> Result<(), Self::Error>;
}

/// The store of a framework that keeps nothing on disk (its core never persists): after a
/// restart it learns its tasks again from reconciliation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl FrameworkStore for NoStore {
    type Write = std::convert::Infallible;
    type Error = std::convert::Infallible;

    fn apply(&self, _writes: &[Self::Write]) -> Result<(), Self::Error> {
        Ok(())
    }
}
