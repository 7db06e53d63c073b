//! The state task: the one owner of [`core::Master`].
//!
//! Handlers send [`Request`]s over a bounded channel; the task feeds them to the core in
//! batches, runs the core's timers, and carries out the resulting commands in order: all
//! registry changes of a batch in one store transaction first, then the messages, so that
//! nothing is ever announced before it is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agora_proto::v1;
use agora_proto::{AgentId, Clock};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::core::{self, Command, ConnId, Master, MasterError, Now, RegistryUpdate};
use crate::metrics::ShellMetrics;
use crate::store::{RegistryStore, StoreError};

/// Capacity of the request channel into the state task.
const REQUEST_BUFFER: usize = 4096;
/// Most requests fed to the core before its commands are carried out.
const MAX_BATCH: usize = 512;

/// The sending half of one outgoing stream, and the token that tells its reader task the
/// master closed it.
pub(crate) struct ConnLink<T> {
    /// Messages for the peer; an `Err` ends the stream with that status.
    pub sender: mpsc::Sender<Result<T, Status>>,
    /// Cancelled when the master drops the connection.
    pub closed: CancellationToken,
}

/// How an agent opens its connection.
pub(crate) enum AgentAttach {
    /// First registration.
    Register(v1::AgentInfo),
    /// Registration of a known agent, with its tasks.
    Reregister(v1::Reregister),
}

/// A unary scheduler call with its reply channel.
pub(crate) enum SchedulerCall {
    Accept(
        v1::AcceptRequest,
        oneshot::Sender<Result<v1::AcceptResponse, MasterError>>,
    ),
    Decline(v1::DeclineRequest, oneshot::Sender<Result<(), MasterError>>),
    Revive(v1::ReviveRequest, oneshot::Sender<Result<(), MasterError>>),
    Suppress(
        v1::SuppressRequest,
        oneshot::Sender<Result<(), MasterError>>,
    ),
    Kill(v1::KillRequest, oneshot::Sender<Result<(), MasterError>>),
    Acknowledge(
        v1::AcknowledgeRequest,
        oneshot::Sender<Result<(), MasterError>>,
    ),
    Reconcile(
        v1::ReconcileRequest,
        oneshot::Sender<Result<(), MasterError>>,
    ),
    Teardown(
        v1::TeardownRequest,
        oneshot::Sender<Result<(), MasterError>>,
    ),
}

/// One input to the state task.
pub(crate) enum Request {
    /// An agent stream opened with `Register` or `Reregister`.
    AgentAttach {
        conn: ConnId,
        attach: AgentAttach,
        link: ConnLink<v1::MasterMessage>,
        reply: oneshot::Sender<Result<AgentId, MasterError>>,
    },
    /// A later message on an attached agent stream.
    AgentMessage {
        conn: ConnId,
        message: v1::agent_message::Message,
    },
    /// The agent stream ended.
    AgentDisconnected { conn: ConnId },
    /// A framework subscribes; `link` carries its events.
    Subscribe {
        conn: ConnId,
        framework: v1::FrameworkInfo,
        /// Start suppressed (`SubscribeRequest.suppressed`).
        suppressed: bool,
        link: ConnLink<v1::Event>,
        reply: oneshot::Sender<Result<v1::Subscribed, MasterError>>,
    },
    /// The subscription stream was dropped by the client.
    FrameworkDisconnected { conn: ConnId },
    /// A unary scheduler call.
    Scheduler(SchedulerCall),
    /// An operator drains an agent.
    DrainAgent {
        agent_id: AgentId,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    /// The cluster state for operators.
    GetState {
        reply: oneshot::Sender<v1::ClusterState>,
    },
    /// The core's counts for `/metrics`.
    Metrics {
        reply: oneshot::Sender<core::MasterMetrics>,
    },
}

/// A cloneable way to talk to the state task.
#[derive(Clone)]
pub(crate) struct ActorHandle {
    requests: mpsc::Sender<Request>,
    next_conn: Arc<AtomicU64>,
}

impl ActorHandle {
    /// A fresh connection id, never reused within the process.
    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a request and waits for its answer. `Unavailable` when the master is stopping.
    pub async fn call<R>(
        &self,
        make_request: impl FnOnce(oneshot::Sender<R>) -> Request,
    ) -> Result<R, Status> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make_request(reply))
            .await
            .map_err(|_| crate::error::master_unavailable())?;
        answer.await.map_err(|_| crate::error::master_unavailable())
    }

    /// Sends a request that has no answer; dropped silently when the master is stopping.
    pub async fn notify(&self, request: Request) {
        let _ = self.requests.send(request).await;
    }

    /// [`ActorHandle::notify`] from synchronous code (a `Drop`): queues the request without
    /// waiting, spawning a sender task when the channel is momentarily full.
    pub fn notify_detached(&self, request: Request) {
        match self.requests.try_send(request) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(request)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let requests = self.requests.clone();
                    runtime.spawn(async move {
                        let _ = requests.send(request).await;
                    });
                }
            }
        }
    }
}

/// An open outgoing stream, by kind.
enum Connection {
    Agent(ConnLink<v1::MasterMessage>),
    Framework(ConnLink<v1::Event>),
}

impl Connection {
    /// Ends the stream, with `status` as its final word when there is room for it.
    fn close(self, status: Status) {
        match self {
            Connection::Agent(link) => {
                let _ = link.sender.try_send(Err(status));
                link.closed.cancel();
            }
            Connection::Framework(link) => {
                let _ = link.sender.try_send(Err(status));
                link.closed.cancel();
            }
        }
    }
}

/// The state task's own data.
pub(crate) struct Actor {
    master: Master,
    store: Arc<dyn RegistryStore>,
    metrics: Arc<ShellMetrics>,
    connections: HashMap<ConnId, Connection>,
    requests: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
    /// This master's address, reported as `leader` when the core leaves it empty.
    leader: String,
    /// Where the core's time comes from.
    clock: Arc<dyn Clock>,
}

impl Actor {
    /// A state task for `master` (reachable at `leader`), and the handle to reach it.
    pub fn new(
        master: Master,
        store: Arc<dyn RegistryStore>,
        metrics: Arc<ShellMetrics>,
        shutdown: CancellationToken,
        leader: String,
        clock: Arc<dyn Clock>,
    ) -> (Self, ActorHandle) {
        let (sender, requests) = mpsc::channel(REQUEST_BUFFER);
        let actor = Self {
            master,
            store,
            metrics,
            connections: HashMap::new(),
            requests,
            shutdown,
            leader,
            clock,
        };
        let handle = ActorHandle {
            requests: sender,
            next_conn: Arc::new(AtomicU64::new(1)),
        };
        (actor, handle)
    }

    /// Runs until `shutdown` is cancelled, or a registry write fails (which cancels it).
    pub async fn run(mut self) -> Result<(), StoreError> {
        let result = self.run_loop().await;
        if let Err(error) = &result {
            tracing::error!(%error, "registry write failed; stopping the master");
            self.shutdown.cancel();
        }
        for (_, connection) in self.connections.drain() {
            connection.close(Status::unavailable("master is shutting down"));
        }
        result
    }

    async fn run_loop(&mut self) -> Result<(), StoreError> {
        loop {
            let deadline = self.master.next_deadline();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(()),
                request = self.requests.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    self.handle(request);
                    let mut handled = 1;
                    while handled < MAX_BATCH {
                        let Ok(request) = self.requests.try_recv() else { break };
                        self.handle(request);
                        handled += 1;
                    }
                    // Under steady load the request branch always wins; run due timers anyway.
                    if deadline.is_some_and(|due| due <= self.clock.now().instant) {
                        self.tick();
                    }
                }
                () = sleep_until_deadline(deadline) => self.tick(),
            }
            self.carry_out_commands().await?;
        }
    }

    fn tick(&mut self) {
        let started = std::time::Instant::now();
        let report = self.master.tick(self.clock.now());
        if report.allocation_ran {
            self.metrics.observe_allocation(started.elapsed());
            tracing::trace!(offers_made = report.offers_made, "allocation ran");
        }
    }

    fn handle(&mut self, request: Request) {
        let now = self.clock.now();
        match request {
            Request::AgentAttach {
                conn,
                attach,
                link,
                reply,
            } => {
                self.connections.insert(conn, Connection::Agent(link));
                let result = match attach {
                    AgentAttach::Register(agent) => self.master.agent_register(now, conn, agent),
                    AgentAttach::Reregister(reregister) => {
                        self.master.agent_reregister(now, conn, reregister)
                    }
                };
                if result.is_err() {
                    // The handler answers the error on the stream itself.
                    self.connections.remove(&conn);
                }
                let _ = reply.send(result);
            }
            Request::AgentMessage { conn, message } => self.agent_message(now, conn, message),
            Request::AgentDisconnected { conn } => {
                if let Some(connection) = self.connections.remove(&conn) {
                    connection.close(Status::cancelled("agent stream ended"));
                }
                self.master.agent_disconnected(now, conn);
            }
            Request::Subscribe {
                conn,
                framework,
                suppressed,
                link,
                reply,
            } => {
                self.connections.insert(conn, Connection::Framework(link));
                let result = self.master.subscribe(now, conn, framework, suppressed);
                if result.is_err() {
                    self.connections.remove(&conn);
                }
                let _ = reply.send(result);
            }
            Request::FrameworkDisconnected { conn } => {
                self.connections.remove(&conn);
                self.master.framework_disconnected(now, conn);
            }
            Request::Scheduler(call) => self.scheduler_call(now, call),
            Request::DrainAgent { agent_id, reply } => {
                let _ = reply.send(self.master.drain_agent(now, &agent_id));
            }
            Request::GetState { reply } => {
                let mut state = self.master.state();
                if state.leader.is_empty() {
                    state.leader = self.leader.clone();
                }
                let _ = reply.send(state);
            }
            Request::Metrics { reply } => {
                let _ = reply.send(self.master.metrics());
            }
        }
    }

    fn agent_message(&mut self, now: Now, conn: ConnId, message: v1::agent_message::Message) {
        use v1::agent_message::Message;
        let result = match message {
            Message::Heartbeat(_) => {
                self.master.agent_heartbeat(now, conn);
                Ok(())
            }
            Message::StatusUpdate(update) => self.master.agent_status_update(now, conn, update),
            Message::ResourceUpdate(update) => self.master.agent_resource_update(now, conn, update),
            Message::Register(_) | Message::Reregister(_) => Err(MasterError::InvalidField {
                field: "message".to_owned(),
                reason: "the agent is already registered on this stream".to_owned(),
            }),
        };
        if let Err(error) = result {
            tracing::warn!(conn = conn.0, %error, "agent message refused");
        }
    }

    fn scheduler_call(&mut self, now: Now, call: SchedulerCall) {
        let master = &mut self.master;
        match call {
            SchedulerCall::Accept(request, reply) => {
                let _ = reply.send(master.accept(now, request));
            }
            SchedulerCall::Decline(request, reply) => {
                let _ = reply.send(master.decline(now, request));
            }
            SchedulerCall::Revive(request, reply) => {
                let _ = reply.send(master.revive(now, request));
            }
            SchedulerCall::Suppress(request, reply) => {
                let _ = reply.send(master.suppress(now, request));
            }
            SchedulerCall::Kill(request, reply) => {
                let _ = reply.send(master.kill(now, request));
            }
            SchedulerCall::Acknowledge(request, reply) => {
                let _ = reply.send(master.acknowledge(now, request));
            }
            SchedulerCall::Reconcile(request, reply) => {
                let _ = reply.send(master.reconcile(now, request));
            }
            SchedulerCall::Teardown(request, reply) => {
                let _ = reply.send(master.teardown(now, request));
            }
        }
    }

    /// Persists, then sends, everything the core asked for; repeats while dropping slow
    /// connections makes the core ask for more.
    async fn carry_out_commands(&mut self) -> Result<(), StoreError> {
        loop {
            let commands = self.master.take_commands();
            if commands.is_empty() {
                return Ok(());
            }
            let (updates, deliveries): (Vec<Command>, Vec<Command>) = commands
                .into_iter()
                .partition(|command| matches!(command, Command::Persist(_)));
            let updates: Vec<RegistryUpdate> = updates
                .into_iter()
                .filter_map(|command| match command {
                    Command::Persist(update) => Some(update),
                    _ => None,
                })
                .collect();
            if !updates.is_empty() {
                self.persist(updates).await?;
            }
            for command in deliveries {
                self.deliver(command);
            }
        }
    }

    async fn persist(&self, updates: Vec<RegistryUpdate>) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let started = std::time::Instant::now();
        let count = updates.len();
        let result = tokio::task::spawn_blocking(move || store.apply(&updates))
            .await
            .map_err(|error| StoreError::Backend {
                operation: "apply",
                reason: format!("store task failed: {error}"),
            })?;
        self.metrics.observe_store_write(started.elapsed());
        tracing::debug!(updates = count, "registry updates persisted");
        result
    }

    fn deliver(&mut self, command: Command) {
        match command {
            Command::Persist(_) => {}
            Command::SendToAgent { conn, message } => {
                let Some(Connection::Agent(link)) = self.connections.get(&conn) else {
                    tracing::debug!(conn = conn.0, "message for a closed agent stream dropped");
                    return;
                };
                let message = v1::MasterMessage {
                    message: Some(message),
                };
                if link.sender.try_send(Ok(message)).is_err() {
                    self.drop_slow_connection(conn);
                }
            }
            Command::SendToFramework { conn, event } => {
                let Some(Connection::Framework(link)) = self.connections.get(&conn) else {
                    tracing::debug!(conn = conn.0, "event for a closed framework stream dropped");
                    return;
                };
                let event = v1::Event { event: Some(event) };
                if link.sender.try_send(Ok(event)).is_err() {
                    self.drop_slow_connection(conn);
                }
            }
            Command::CloseFramework { conn, reason } => {
                tracing::info!(conn = conn.0, %reason, "closing framework stream");
                if let Some(connection) = self.connections.remove(&conn) {
                    connection.close(Status::aborted(reason));
                }
            }
            Command::CloseAgent { conn, reason } => {
                tracing::info!(conn = conn.0, %reason, "closing agent stream");
                if let Some(connection) = self.connections.remove(&conn) {
                    connection.close(Status::aborted(reason));
                }
            }
        }
    }

    /// Drops a connection whose peer does not keep up (or is gone) and tells the core.
    fn drop_slow_connection(&mut self, conn: ConnId) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        self.metrics.count_connection_dropped();
        let now = self.clock.now();
        match connection {
            Connection::Agent(link) => {
                tracing::warn!(conn = conn.0, "agent stream not keeping up; dropping it");
                link.closed.cancel();
                self.master.agent_disconnected(now, conn);
            }
            Connection::Framework(link) => {
                tracing::warn!(
                    conn = conn.0,
                    "framework stream not keeping up; dropping it"
                );
                link.closed.cancel();
                self.master.framework_disconnected(now, conn);
            }
        }
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::core::{MasterConfig, Registry};

    fn agent_info() -> v1::AgentInfo {
        v1::AgentInfo {
            hostname: "node-1".to_owned(),
            resources: agora_proto::Resources::cpus_mem(2.0, 1024.0).to_proto(),
            ..Default::default()
        }
    }

    /// Records each transaction and how many messages the watched stream held at that moment.
    struct RecordingStore {
        watched: mpsc::Sender<Result<v1::MasterMessage, Status>>,
        queued_at_apply: Mutex<Vec<usize>>,
        applied: Mutex<Vec<RegistryUpdate>>,
    }

    impl RegistryStore for RecordingStore {
        fn load(&self) -> Result<core::Registry, StoreError> {
            Ok(Registry::default())
        }

        fn apply(&self, updates: &[RegistryUpdate]) -> Result<(), StoreError> {
            let queued = self.watched.max_capacity() - self.watched.capacity();
            self.queued_at_apply.lock().unwrap().push(queued);
            self.applied.lock().unwrap().extend_from_slice(updates);
            Ok(())
        }
    }

    struct FailingStore;

    impl RegistryStore for FailingStore {
        fn load(&self) -> Result<core::Registry, StoreError> {
            Ok(Registry::default())
        }

        fn apply(&self, _updates: &[RegistryUpdate]) -> Result<(), StoreError> {
            Err(StoreError::Backend {
                operation: "apply",
                reason: "disk full".to_owned(),
            })
        }
    }

    fn start(
        store: Arc<dyn RegistryStore>,
    ) -> (
        ActorHandle,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), StoreError>>,
    ) {
        let shutdown = CancellationToken::new();
        let clock = Arc::new(agora_proto::SystemClock);
        let master = Master::new(MasterConfig::default(), clock.now(), Registry::default());
        let (actor, handle) = Actor::new(
            master,
            store,
            Arc::new(ShellMetrics::default()),
            shutdown.clone(),
            "127.0.0.1:5050".to_owned(),
            clock,
        );
        (handle, shutdown, tokio::spawn(actor.run()))
    }

    async fn register(
        handle: &ActorHandle,
        sender: mpsc::Sender<Result<v1::MasterMessage, Status>>,
    ) -> Result<AgentId, MasterError> {
        let conn = handle.next_conn_id();
        handle
            .call(|reply| Request::AgentAttach {
                conn,
                attach: AgentAttach::Register(agent_info()),
                link: ConnLink {
                    sender,
                    closed: CancellationToken::new(),
                },
                reply,
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn agent_id_is_persisted_before_the_agent_hears_it() {
        let (sender, mut messages) = mpsc::channel(16);
        let store = Arc::new(RecordingStore {
            watched: sender.clone(),
            queued_at_apply: Mutex::new(Vec::new()),
            applied: Mutex::new(Vec::new()),
        });
        let (handle, shutdown, task) = start(store.clone());
        let agent_id = register(&handle, sender).await.unwrap();

        let first = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Some(v1::master_message::Message::Registered(registered)) = first.message else {
            panic!("expected Registered, got {first:?}");
        };
        assert_eq!(registered.agent_id, agent_id.as_str());
        assert_eq!(store.queued_at_apply.lock().unwrap().first(), Some(&0));
        let applied = store.applied.lock().unwrap().clone();
        assert!(
            applied.iter().any(|update| matches!(
                update,
                RegistryUpdate::UpsertAgent(agent) if agent.id == agent_id.as_str()
            )),
            "{applied:?}"
        );

        shutdown.cancel();
        task.await.unwrap().unwrap();
        // Shutting down ends the stream with a status, not silently.
        let last = messages.recv().await.unwrap().unwrap_err();
        assert_eq!(last.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn failed_registry_write_stops_the_master_before_sending() {
        let (handle, shutdown, task) = start(Arc::new(FailingStore));
        let (sender, mut messages) = mpsc::channel(16);
        register(&handle, sender).await.unwrap();

        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(StoreError::Backend { .. })),
            "{result:?}"
        );
        assert!(shutdown.is_cancelled());
        // The agent never heard an id that is not durable.
        let only = messages.recv().await.unwrap().unwrap_err();
        assert_eq!(only.code(), tonic::Code::Unavailable);
        assert!(messages.recv().await.is_none());
    }
}
