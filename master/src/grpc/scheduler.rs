//! `SchedulerService`: frameworks subscribe for events and make unary calls.

use std::pin::Pin;
use std::task::{Context, Poll};

use agora_proto::v1;
use agora_proto::v1::scheduler_service_server::SchedulerService;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::respond;
use crate::actor::{self, ActorHandle, ConnLink, SchedulerCall};
use crate::core::ConnId;
use crate::error::status_from_master_error;

/// A framework's stream carries the updates of all its tasks on every agent, so it gets this
/// many times the per-agent buffer before it counts as too slow. Measured at 5,000 agents and
/// 100,000 tasks on 2 cores: with the per-agent buffer (4,096) a framework that was merely
/// short of CPU for a moment was dropped, lost the updates in flight and waited for the
/// agents' 5 s resend; the channel allocates only what is queued, so the room costs nothing
/// while unused.
const FRAMEWORK_STREAM_BUFFER_FACTOR: usize = 16;

/// The scheduler API over the state task.
pub(crate) struct SchedulerGrpc {
    actor: ActorHandle,
    stream_buffer: usize,
}

impl SchedulerGrpc {
    /// Serves frameworks, buffering up to `stream_buffer` times
    /// [`FRAMEWORK_STREAM_BUFFER_FACTOR`] events per subscription.
    pub fn new(actor: ActorHandle, stream_buffer: usize) -> Self {
        Self {
            actor,
            stream_buffer: stream_buffer
                .saturating_mul(FRAMEWORK_STREAM_BUFFER_FACTOR)
                .max(1),
        }
    }

    async fn unit_call(
        &self,
        make_call: impl FnOnce(
            tokio::sync::oneshot::Sender<Result<(), crate::core::MasterError>>,
        ) -> SchedulerCall,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let result = self
            .actor
            .call(|reply| actor::Request::Scheduler(make_call(reply)))
            .await?;
        respond(result.map(|()| v1::CallResponse {}))
    }
}

/// A subscription's event stream. Dropping it (the framework went away) tells the core.
pub(crate) struct EventStream {
    events: mpsc::Receiver<Result<v1::Event, Status>>,
    conn: ConnId,
    actor: ActorHandle,
}

impl Stream for EventStream {
    type Item = Result<v1::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.actor
            .notify_detached(actor::Request::FrameworkDisconnected { conn: self.conn });
    }
}

#[tonic::async_trait]
impl SchedulerService for SchedulerGrpc {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let suppressed = request.suppressed;
        let Some(framework) = request.framework else {
            return Err(Status::invalid_argument("framework: missing"));
        };
        let conn = self.actor.next_conn_id();
        let (sender, events) = mpsc::channel(self.stream_buffer);
        let link = ConnLink {
            sender,
            closed: CancellationToken::new(),
        };
        let result = self
            .actor
            .call(|reply| actor::Request::Subscribe {
                conn,
                framework,
                suppressed,
                link,
                reply,
            })
            .await?;
        match result {
            Ok(subscribed) => {
                tracing::info!(
                    conn = conn.0,
                    framework_id = %subscribed.framework_id,
                    "framework subscribed"
                );
                Ok(Response::new(EventStream {
                    events,
                    conn,
                    actor: self.actor.clone(),
                }))
            }
            Err(error) => Err(status_from_master_error(&error)),
        }
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptResponse>, Status> {
        let request = request.into_inner();
        let result = self
            .actor
            .call(|reply| actor::Request::Scheduler(SchedulerCall::Accept(request, reply)))
            .await?;
        respond(result)
    }

    async fn decline(
        &self,
        request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Decline(request, reply))
            .await
    }

    async fn revive(
        &self,
        request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Revive(request, reply))
            .await
    }

    async fn suppress(
        &self,
        request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Suppress(request, reply))
            .await
    }

    async fn kill(
        &self,
        request: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Kill(request, reply))
            .await
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Acknowledge(request, reply))
            .await
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Reconcile(request, reply))
            .await
    }

    async fn teardown(
        &self,
        request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        self.unit_call(|reply| SchedulerCall::Teardown(request, reply))
            .await
    }
}
