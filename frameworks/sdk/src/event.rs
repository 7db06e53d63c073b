//! What the driver hands to the framework.

use std::pin::Pin;
use std::task::{Context, Poll};

use agora_proto::v1;
use agora_proto::{AgentId, FrameworkId, OfferId};
use tokio::sync::mpsc;

/// One event from the master, or from the driver about its connection.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverEvent {
    /// The driver is subscribed. `reconnected` is false for the first subscription of this
    /// driver and true for every re-subscription after it (same framework id).
    Subscribed {
        /// The framework's id (assigned by the master on the first subscription).
        framework_id: FrameworkId,
        /// True when this is a re-subscription.
        reconnected: bool,
    },
    /// New offers.
    Offers(Vec<v1::Offer>),
    /// An offer is no longer valid.
    Rescind(OfferId),
    /// A task status update. With `auto_acknowledge`, the driver acknowledges it.
    Update(v1::TaskStatus),
    /// An agent was lost.
    Failure {
        /// The lost agent.
        agent_id: AgentId,
        /// The master's explanation.
        message: String,
    },
    /// An error from the master, or the driver's final event when the master ends the
    /// framework's subscription for good (removed, torn down, or superseded by a newer
    /// subscription with the same id): after that the stream ends.
    Error(String),
    /// The subscription ended; the driver re-subscribes with backoff.
    Disconnected {
        /// Why the subscription ended.
        reason: String,
    },
}

/// The framework's stream of [`DriverEvent`]s. Ends when the driver stops.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<DriverEvent>,
}

impl EventStream {
    pub(crate) fn new(receiver: mpsc::Receiver<DriverEvent>) -> Self {
        Self { receiver }
    }

    /// The next event, or `None` once the driver has stopped.
    pub async fn next(&mut self) -> Option<DriverEvent> {
        self.receiver.recv().await
    }
}

impl futures::Stream for EventStream {
    type Item = DriverEvent;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<DriverEvent>> {
        self.receiver.poll_recv(context)
    }
}
