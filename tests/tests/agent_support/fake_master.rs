//! A scripted master speaking `AgentService.Connect`, for sending a real agent exactly what a
//! test wants, including what a real master would never let through.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use agora_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use agora_proto::v1::{self, agent_message, master_message};
use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// The id the fake master gives every agent.
pub const FAKE_AGENT_ID: &str = "fake-agent";

struct Service {
    heartbeat_interval_seconds: f64,
    connections: mpsc::Sender<Connection>,
}

/// One agent connection: what it sent, and a way to send it anything.
struct Connection {
    inbound: mpsc::Receiver<agent_message::Message>,
    outbound: mpsc::Sender<Result<v1::MasterMessage, Status>>,
}

#[tonic::async_trait]
impl AgentService for Service {
    type ConnectStream = ReceiverStream<Result<v1::MasterMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut stream = request.into_inner();
        let (outbound, outbound_receiver) = mpsc::channel(256);
        let (inbound_sender, inbound) = mpsc::channel(1024);
        outbound
            .send(Ok(v1::MasterMessage {
                message: Some(master_message::Message::Registered(v1::Registered {
                    agent_id: FAKE_AGENT_ID.to_owned(),
                    heartbeat_interval_seconds: self.heartbeat_interval_seconds,
                })),
            }))
            .await
            .map_err(|_| Status::internal("closed"))?;
        let acknowledgements = outbound.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                let Some(message) = message.message else {
                    continue;
                };
                if matches!(message, agent_message::Message::Heartbeat(_)) {
                    continue;
                }
                // Acknowledged at once, as a master would once an auto-acknowledging framework
                // did: the agent sends a task's next update only after that.
                if let agent_message::Message::StatusUpdate(update) = &message
                    && let Some(status) = update.status.as_ref().filter(|s| !s.uuid.is_empty())
                {
                    let ack = v1::MasterMessage {
                        message: Some(master_message::Message::AckStatus(v1::AckStatus {
                            framework_id: update.framework_id.clone(),
                            task_id: status.task_id.clone(),
                            uuid: status.uuid.clone(),
                        })),
                    };
                    let _ = acknowledgements.send(Ok(ack)).await;
                }
                if inbound_sender.send(message).await.is_err() {
                    break;
                }
            }
        });
        // The agent reconnects when its master falls silent, as a real master never does.
        let heartbeats = outbound.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            loop {
                ticker.tick().await;
                let beat = v1::MasterMessage {
                    message: Some(master_message::Message::Heartbeat(v1::MasterHeartbeat {})),
                };
                if heartbeats.send(Ok(beat)).await.is_err() {
                    break;
                }
            }
        });
        let _ = self
            .connections
            .send(Connection {
                inbound,
                outbound: outbound.clone(),
            })
            .await;
        Ok(Response::new(ReceiverStream::new(outbound_receiver)))
    }
}

/// A fake master on a free loopback port.
pub struct FakeMaster {
    address: SocketAddr,
    connections: mpsc::Receiver<Connection>,
    current: Option<Connection>,
    backlog: VecDeque<agent_message::Message>,
    server: JoinHandle<()>,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeMaster {
    /// Listens on 127.0.0.1 (free port); registers agents with `heartbeat_interval_seconds`.
    pub async fn start(heartbeat_interval_seconds: f64) -> anyhow::Result<FakeMaster> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (connections_sender, connections) = mpsc::channel(16);
        let service = Service {
            heartbeat_interval_seconds,
            connections: connections_sender,
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Ok(FakeMaster {
            address,
            connections,
            current: None,
            backlog: VecDeque::new(),
            server,
        })
    }

    /// The URL agents connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Waits until an agent (re)connects; later messages come from that connection.
    pub async fn wait_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let connection = tokio::time::timeout(timeout, self.connections.recv())
            .await
            .context("no agent connected in time")?
            .context("the fake master stopped")?;
        self.current = Some(connection);
        Ok(())
    }

    /// Sends `message` to the connected agent.
    pub async fn send(&self, message: master_message::Message) -> anyhow::Result<()> {
        let Some(connection) = &self.current else {
            bail!("no agent connected");
        };
        connection
            .outbound
            .send(Ok(v1::MasterMessage {
                message: Some(message),
            }))
            .await
            .context("the agent's stream is closed")
    }

    /// The first message from the agent (received or to come) that `select` accepts.
    pub async fn expect<R>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut select: impl FnMut(&agent_message::Message) -> Option<R>,
    ) -> anyhow::Result<R> {
        if let Some(index) = self.backlog.iter().position(|m| select(m).is_some()) {
            let message = self.backlog.remove(index).context("backlog index")?;
            return select(&message).context("selected twice");
        }
        let deadline = Instant::now() + timeout;
        loop {
            let Some(connection) = self.current.as_mut() else {
                bail!("no agent connected while waiting for {what}");
            };
            let received = tokio::time::timeout_at(deadline, connection.inbound.recv()).await;
            match received {
                Err(_) => {
                    let latest: Vec<_> = self.backlog.iter().rev().take(5).collect();
                    bail!(
                        "timed out after {timeout:?} waiting for {what}; latest messages received: {latest:?}"
                    )
                }
                Ok(None) => bail!("the agent disconnected while waiting for {what}"),
                Ok(Some(message)) => match select(&message) {
                    Some(result) => return Ok(result),
                    None => self.backlog.push_back(message),
                },
            }
        }
    }

    /// Waits for a status update of (`framework_id`, `task_id`) in `state`.
    pub async fn expect_update(
        &mut self,
        framework_id: &str,
        task_id: &str,
        state: v1::TaskState,
        timeout: Duration,
    ) -> anyhow::Result<v1::TaskStatus> {
        self.expect(
            &format!("{framework_id}/{task_id} {state:?}"),
            timeout,
            |message| match message {
                agent_message::Message::StatusUpdate(update)
                    if update.framework_id == framework_id =>
                {
                    update
                        .status
                        .as_ref()
                        .filter(|s| s.task_id == task_id && s.state() == state)
                        .cloned()
                }
                _ => None,
            },
        )
        .await
    }

    /// Forgets every message received so far, so that a later `expect` sees only new ones.
    pub fn discard_received(&mut self) {
        self.backlog.clear();
        if let Some(connection) = self.current.as_mut() {
            while connection.inbound.try_recv().is_ok() {}
        }
    }
}
