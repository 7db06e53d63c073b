//! The SDK's framework runtime against a scripted fake master, with a small framework core
//! written in a page: writes are stored before the launch that depends on them is sent and
//! before the update that caused them is acknowledged, reconciliation goes out in chunks
//! (first chunk at once, the rest on ticks), refused launches and lost agents come back to
//! the core, and an API call is answered only after its writes are stored.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_proto::v1::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use agora_proto::v1::{self, event::Event};
use agora_proto::{AgentId, FrameworkId, OfferId, TaskId};
use agora_sdk::runtime::core_calls;
use agora_sdk::{
    Command, DriverConfig, FrameworkCore, FrameworkStore, LaunchFailure, Runtime, RuntimeConfig,
    SchedulerDriver,
};
use agora_tests::DEFAULT_TIMEOUT;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// One line per thing that happened, from the master, the store and the core, in order.
type Log = mpsc::UnboundedSender<String>;
type EventSender = mpsc::Sender<Result<v1::Event, Status>>;

/// A master that logs the calls it gets; it refuses launches of tasks named `refused-*`.
struct FakeMaster {
    log: Log,
    /// Reconcile calls, apart: they go out on ticks, between the other lines.
    reconciles: Log,
    subscriptions: mpsc::Sender<EventSender>,
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = ReceiverStream<Result<v1::Event, Status>>;

    async fn subscribe(
        &self,
        _request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (sender, receiver) = mpsc::channel(64);
        self.subscriptions
            .send(sender)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptResponse>, Status> {
        let request = request.into_inner();
        let tasks: Vec<String> = request
            .operations
            .into_iter()
            .filter_map(|operation| match operation.operation {
                Some(v1::operation::Operation::Launch(launch)) => Some(launch.tasks),
                None => None,
            })
            .flatten()
            .map(|task| task.task_id)
            .collect();
        if tasks.iter().any(|task| task.starts_with("refused-")) {
            return Err(Status::invalid_argument("refused by the fake"));
        }
        let _ = self.log.send(format!("master: launch {}", tasks.join(",")));
        Ok(Response::new(v1::AcceptResponse {
            launched_task_ids: tasks,
        }))
    }

    async fn decline(
        &self,
        _request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn revive(
        &self,
        _request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn suppress(
        &self,
        _request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn kill(
        &self,
        _request: Request<v1::KillRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let _ = self
            .log
            .send(format!("master: ack {}", request.into_inner().task_id));
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let tasks = request.into_inner().tasks.len();
        let _ = self.reconciles.send(format!("master: reconcile {tasks}"));
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn teardown(
        &self,
        _request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }
}

/// The framework of the test: on subscription it reconciles seven known tasks; it launches
/// the task named in each offer's hostname (stored first); it stores every update it gets.
struct PageCore {
    log: Log,
    outbox: Vec<Command<String, Infallible>>,
}

impl FrameworkCore for PageCore {
    type Write = String;
    type Notice = Infallible;

    fn on_subscribed(&mut self, _framework_id: &FrameworkId, _now: SystemTime) {
        let known = (0..7)
            .map(|index| (TaskId::new(format!("known-{index}")), AgentId::new("a1")))
            .collect();
        self.outbox.push(Command::Reconcile(known));
    }

    fn on_disconnected(&mut self) {}

    fn on_offers(&mut self, offers: Vec<v1::Offer>, _now: SystemTime) {
        // Every launch stored first, then all sent (concurrently, by the runtime).
        let mut writes = Vec::new();
        let mut launches = Vec::new();
        for offer in offers {
            let task = v1::TaskInfo {
                task_id: offer.hostname.clone(),
                agent_id: offer.agent_id.clone(),
                ..Default::default()
            };
            writes.push(format!("launching {}", task.task_id));
            let offer_id = OfferId::new(offer.id);
            let tasks = vec![task];
            launches.push(Command::Launch { offer_id, tasks });
        }
        self.outbox.push(Command::Persist(writes));
        self.outbox.extend(launches);
    }

    fn on_rescind(&mut self, _offer_id: &OfferId, _now: SystemTime) {}

    fn on_updates(&mut self, statuses: &[v1::TaskStatus], _now: SystemTime) {
        let writes = statuses
            .iter()
            .map(|status| format!("update {}", status.task_id))
            .collect();
        self.outbox.push(Command::Persist(writes));
    }

    fn on_agent_failure(&mut self, agent_id: &AgentId, _now: SystemTime) {
        let _ = self.log.send(format!("core: agent {agent_id} lost"));
    }

    fn on_launch_failed(&mut self, task_ids: &[TaskId], failure: LaunchFailure, _now: SystemTime) {
        for task_id in task_ids {
            let _ = self
                .log
                .send(format!("core: launch of {task_id} {failure:?}"));
        }
    }

    fn tick(&mut self, _now: SystemTime) {}

    fn take_commands(&mut self) -> Vec<Command<String, Infallible>> {
        std::mem::take(&mut self.outbox)
    }
}

struct LogStore(Log);

impl FrameworkStore for LogStore {
    type Write = String;
    type Error = Infallible;

    fn apply(&self, writes: &[String]) -> Result<(), Infallible> {
        let _ = self.0.send(format!("store: {}", writes.join(",")));
        Ok(())
    }
}

fn event(event: Event) -> Result<v1::Event, Status> {
    Ok(v1::Event { event: Some(event) })
}

fn offer(id: &str, task: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        agent_id: "a1".into(),
        hostname: task.into(),
        ..Default::default()
    }
}

/// The next `count` log lines.
async fn next_lines(
    log: &mut mpsc::UnboundedReceiver<String>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::with_capacity(count);
    for _ in 0..count {
        let line = tokio::time::timeout(DEFAULT_TIMEOUT, log.recv())
            .await
            .with_context(|| format!("no log line in time after {lines:?}"))?
            .context("log closed")?;
        lines.push(line);
    }
    Ok(lines)
}

#[tokio::test]
async fn the_runtime_stores_before_it_sends_and_feeds_failures_back() -> anyhow::Result<()> {
    let (log, mut lines) = mpsc::unbounded_channel();
    let (reconcile_log, mut reconciles) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (subscription_sender, mut subscriptions) = mpsc::channel(4);
    let master = SchedulerServiceServer::new(FakeMaster {
        log: log.clone(),
        reconciles: reconcile_log,
        subscriptions: subscription_sender,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(master)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let framework = v1::FrameworkInfo {
        name: "runtime-test".into(),
        ..Default::default()
    };
    let mut driver_config = DriverConfig::new(format!("http://{address}"), framework);
    driver_config.auto_acknowledge = false;
    let (driver, events) = SchedulerDriver::start(driver_config)?;
    let core = PageCore {
        log: log.clone(),
        outbox: Vec::new(),
    };
    let config = RuntimeConfig {
        tick_interval: Duration::from_millis(100),
        reconcile_chunk: 3,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(core, Arc::new(LogStore(log.clone())), driver, config);
    let (calls, call_receiver) = core_calls::<PageCore>(4);
    let cancel = CancellationToken::new();
    let running = tokio::spawn(runtime.run(events, call_receiver, cancel.clone()));

    let stream = tokio::time::timeout(DEFAULT_TIMEOUT, subscriptions.recv())
        .await
        .context("no subscription")?
        .context("fake master gone")?;
    stream
        .send(event(Event::Subscribed(v1::Subscribed {
            framework_id: "fw-runtime".into(),
            stream_id: "stream-1".into(),
            heartbeat_interval_seconds: 3_600.0,
            master_version: "fake".into(),
        })))
        .await?;
    // Seven known tasks, in chunks of three: the first at once, the rest one per tick.
    assert_eq!(
        next_lines(&mut reconciles, 1).await?,
        ["master: reconcile 3"]
    );

    // A launch is stored before it is sent; a refused one comes back to the core.
    stream
        .send(event(Event::Offers(v1::Offers {
            offers: vec![offer("o1", "web-1"), offer("o2", "refused-1")],
        })))
        .await?;
    let mut launch = next_lines(&mut lines, 3).await?;
    assert_eq!(
        launch[0], "store: launching web-1,launching refused-1",
        "both writes in one transaction, before any launch: {launch:?}"
    );
    // The two launches go out concurrently: their lines come in either order.
    launch[1..].sort();
    assert_eq!(
        launch[1..],
        ["core: launch of refused-1 Refused", "master: launch web-1"]
    );

    // An update is acknowledged only after what it changed is stored.
    stream
        .send(event(Event::Update(v1::Update {
            status: Some(v1::TaskStatus {
                task_id: "web-1".into(),
                agent_id: "a1".into(),
                state: v1::TaskState::TaskRunning as i32,
                uuid: "uuid-1".into(),
                ..Default::default()
            }),
        })))
        .await?;
    assert_eq!(
        next_lines(&mut lines, 2).await?,
        ["store: update web-1", "master: ack web-1"]
    );

    // A lost agent comes back to the core.
    stream
        .send(event(Event::Failure(v1::Failure {
            agent_id: "a7".into(),
            message: "gone".into(),
        })))
        .await?;
    assert_eq!(next_lines(&mut lines, 1).await?, ["core: agent a7 lost"]);

    // An API call's answer comes after its writes are stored.
    let answered = calls.call(|core, _now| {
        core.outbox
            .push(Command::Persist(vec!["from the api".into()]));
        "done"
    });
    assert_eq!(answered.await, Some("done"));
    assert_eq!(
        lines.try_recv().ok().as_deref(),
        Some("store: from the api"),
        "stored before the answer"
    );

    // The rest of the reconciliation went out on the ticks since.
    assert_eq!(
        next_lines(&mut reconciles, 2).await?,
        ["master: reconcile 3", "master: reconcile 1"]
    );

    cancel.cancel();
    tokio::time::timeout(DEFAULT_TIMEOUT, running)
        .await
        .context("the runtime did not stop")???;
    Ok(())
}
