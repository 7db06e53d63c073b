//! `AgentService.Connect`: one bidirectional stream per agent.

use agora_proto::v1;
use agora_proto::v1::agent_message::Message;
use agora_proto::v1::agent_service_server::AgentService;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::actor::{self, ActorHandle, AgentAttach, ConnLink};
use crate::core::ConnId;
use crate::error::status_from_master_error;

/// The agent API over the state task.
pub(crate) struct AgentGrpc {
    actor: ActorHandle,
    stream_buffer: usize,
}

impl AgentGrpc {
    /// Serves agents, buffering up to `stream_buffer` messages per agent.
    pub fn new(actor: ActorHandle, stream_buffer: usize) -> Self {
        Self {
            actor,
            stream_buffer,
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    type ConnectStream = ReceiverStream<Result<v1::MasterMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let inbound = request.into_inner();
        let conn = self.actor.next_conn_id();
        let (sender, outbound) = mpsc::channel(self.stream_buffer);
        // Answer at once and read the agent's messages in a task, so an agent that waits for
        // the response headers before it sends `Register` does not deadlock.
        tokio::spawn(serve_agent(self.actor.clone(), conn, inbound, sender));
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

/// Reads one agent stream: attaches it with its first message, then forwards the rest until
/// either side ends it.
async fn serve_agent(
    actor: ActorHandle,
    conn: ConnId,
    mut inbound: Streaming<v1::AgentMessage>,
    sender: mpsc::Sender<Result<v1::MasterMessage, Status>>,
) {
    let first = match inbound.next().await {
        Some(Ok(message)) => message.message,
        Some(Err(status)) => {
            tracing::debug!(conn = conn.0, %status, "agent stream failed before registering");
            return;
        }
        None => return,
    };
    let attach = match first {
        Some(Message::Register(register)) => match register.agent {
            Some(agent) => AgentAttach::Register(agent),
            None => {
                let _ = sender
                    .send(Err(Status::invalid_argument("register.agent: missing")))
                    .await;
                return;
            }
        },
        Some(Message::Reregister(reregister)) => AgentAttach::Reregister(reregister),
        _ => {
            let _ = sender
                .send(Err(Status::invalid_argument(
                    "message: the first message on an agent stream must be register or reregister",
                )))
                .await;
            return;
        }
    };

    let closed = CancellationToken::new();
    let link = ConnLink {
        sender: sender.clone(),
        closed: closed.clone(),
    };
    let attached = actor
        .call(|reply| actor::Request::AgentAttach {
            conn,
            attach,
            link,
            reply,
        })
        .await;
    match attached {
        Ok(Ok(agent_id)) => {
            tracing::info!(conn = conn.0, agent_id = %agent_id, "agent attached");
        }
        Ok(Err(error)) => {
            tracing::info!(conn = conn.0, %error, "agent registration refused");
            let _ = sender.send(Err(status_from_master_error(&error))).await;
            return;
        }
        Err(status) => {
            let _ = sender.send(Err(status)).await;
            return;
        }
    }
    // From here on the state task owns the outgoing stream: it ends when the task drops it.
    drop(sender);

    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            next = inbound.next() => match next {
                Some(Ok(v1::AgentMessage { message: Some(message) })) => {
                    actor.notify(actor::Request::AgentMessage { conn, message }).await;
                }
                Some(Ok(v1::AgentMessage { message: None })) => {
                    tracing::debug!(conn = conn.0, "empty agent message ignored");
                }
                Some(Err(status)) => {
                    tracing::info!(conn = conn.0, %status, "agent stream failed");
                    break;
                }
                None => break,
            },
        }
    }
    actor
        .notify(actor::Request::AgentDisconnected { conn })
        .await;
}
