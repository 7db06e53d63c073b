//! The SDK driver against a scripted fake master: heartbeat watchdog, re-subscription with
//! the same framework id, refusal, automatic acknowledgement, calls while not subscribed.

use std::time::Duration;

use agora_proto::v1::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use agora_proto::v1::{self, event::Event};
use agora_proto::{FrameworkId, OfferId};
use agora_sdk::{DriverConfig, DriverEvent, EventStream, SchedulerDriver, SdkError};
use agora_tests::DEFAULT_TIMEOUT;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

type EventSender = mpsc::Sender<Result<v1::Event, Status>>;

/// A scheduler service whose subscriptions the test scripts by hand.
struct FakeMaster {
    subscriptions: mpsc::Sender<(v1::SubscribeRequest, EventSender)>,
    acknowledgements: mpsc::Sender<v1::AcknowledgeRequest>,
    declines: mpsc::Sender<v1::DeclineRequest>,
}

#[tonic::async_trait]
impl SchedulerService for FakeMaster {
    type SubscribeStream = ReceiverStream<Result<v1::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (sender, receiver) = mpsc::channel(64);
        self.subscriptions
            .send((request.into_inner(), sender))
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn accept(
        &self,
        _request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptResponse>, Status> {
        Ok(Response::new(v1::AcceptResponse::default()))
    }

    async fn decline(
        &self,
        request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let _ = self.declines.send(request.into_inner()).await;
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn revive(
        &self,
        _request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Err(Status::failed_precondition("revive refused by the fake"))
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
        let _ = self.acknowledgements.send(request.into_inner()).await;
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn reconcile(
        &self,
        _request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }

    async fn teardown(
        &self,
        _request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        Ok(Response::new(v1::CallResponse {}))
    }
}

struct Fake {
    url: String,
    subscriptions: mpsc::Receiver<(v1::SubscribeRequest, EventSender)>,
    acknowledgements: mpsc::Receiver<v1::AcknowledgeRequest>,
    declines: mpsc::Receiver<v1::DeclineRequest>,
}

impl Fake {
    async fn start() -> anyhow::Result<Fake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (subscription_sender, subscriptions) = mpsc::channel(16);
        let (ack_sender, acknowledgements) = mpsc::channel(16);
        let (decline_sender, declines) = mpsc::channel(16);
        let service = SchedulerServiceServer::new(FakeMaster {
            subscriptions: subscription_sender,
            acknowledgements: ack_sender,
            declines: decline_sender,
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Ok(Fake {
            url: format!("http://{address}"),
            subscriptions,
            acknowledgements,
            declines,
        })
    }

    async fn next_subscription(&mut self) -> anyhow::Result<(v1::SubscribeRequest, EventSender)> {
        tokio::time::timeout(DEFAULT_TIMEOUT, self.subscriptions.recv())
            .await
            .context("no subscription in time")?
            .context("fake master gone")
    }
}

fn event(event: Event) -> Result<v1::Event, Status> {
    Ok(v1::Event { event: Some(event) })
}

fn subscribed(
    framework_id: &str,
    stream_id: &str,
    heartbeat_seconds: f64,
) -> Result<v1::Event, Status> {
    event(Event::Subscribed(v1::Subscribed {
        framework_id: framework_id.into(),
        stream_id: stream_id.into(),
        heartbeat_interval_seconds: heartbeat_seconds,
        master_version: "fake".into(),
    }))
}

fn config(url: &str, auto_acknowledge: bool) -> DriverConfig {
    let framework = v1::FrameworkInfo {
        name: "sdk-test".into(),
        failover_timeout_seconds: 42.0,
        ..Default::default()
    };
    let mut config = DriverConfig::new(url, framework);
    config.auto_acknowledge = auto_acknowledge;
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(100);
    config.missed_heartbeats_before_reconnect = 2;
    config
}

async fn next_event(events: &mut EventStream) -> anyhow::Result<DriverEvent> {
    tokio::time::timeout(DEFAULT_TIMEOUT, events.next())
        .await
        .context("no driver event in time")?
        .context("driver event stream ended")
}

#[tokio::test]
async fn silent_master_triggers_resubscription_with_the_same_framework_id() -> anyhow::Result<()> {
    let mut fake = Fake::start().await?;
    let (driver, mut events) = SchedulerDriver::start(config(&fake.url, true))?;

    let (first_request, first_stream) = fake.next_subscription().await?;
    let first_info = first_request.framework.context("framework info")?;
    assert!(
        first_info.id.is_empty(),
        "first subscription asks for a new id"
    );
    assert_eq!(first_info.failover_timeout_seconds, 42.0);
    first_stream
        .send(subscribed("fw-fake", "stream-1", 0.1))
        .await?;
    assert_eq!(
        next_event(&mut events).await?,
        DriverEvent::Subscribed {
            framework_id: FrameworkId::new("fw-fake"),
            reconnected: false
        }
    );
    assert_eq!(driver.framework_id(), Some(FrameworkId::new("fw-fake")));
    assert_eq!(
        driver.stream_id().map(|id| id.to_string()).as_deref(),
        Some("stream-1")
    );

    // The fake now stays silent past 2 heartbeat intervals: the watchdog gives up on the stream.
    let disconnected = next_event(&mut events).await?;
    assert!(
        matches!(&disconnected, DriverEvent::Disconnected { reason } if reason.contains("no event")),
        "{disconnected:?}"
    );
    let (second_request, second_stream) = fake.next_subscription().await?;
    let second_info = second_request.framework.context("framework info")?;
    assert_eq!(
        second_info.id, "fw-fake",
        "re-subscription keeps the framework id"
    );
    assert_eq!(second_info.failover_timeout_seconds, 42.0);
    second_stream
        .send(subscribed("fw-fake", "stream-2", 0.1))
        .await?;
    assert_eq!(
        next_event(&mut events).await?,
        DriverEvent::Subscribed {
            framework_id: FrameworkId::new("fw-fake"),
            reconnected: true
        }
    );

    // Heartbeats keep the new stream alive, and calls carry its stream id.
    for _ in 0..5 {
        second_stream
            .send(event(Event::Heartbeat(v1::Heartbeat {})))
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
        .decline(vec![OfferId::new("offer-1")], Some(3.0))
        .await?;
    let decline = fake.declines.recv().await.context("decline")?;
    let header = decline.header.context("header")?;
    assert_eq!(header.framework_id, "fw-fake");
    assert_eq!(header.stream_id, "stream-2");
    assert_eq!(
        decline.filters.and_then(|filters| filters.refuse_seconds),
        Some(3.0)
    );
    assert!(
        fake.subscriptions.try_recv().is_err(),
        "no re-subscription while heartbeats arrive"
    );

    // Errors from the master keep their code and message.
    let error = driver.revive().await.expect_err("the fake refuses revive");
    assert_eq!(
        error,
        SdkError::FailedPrecondition("revive refused by the fake".into())
    );
    Ok(())
}

#[tokio::test]
async fn refusal_ends_the_driver_with_an_error_event() -> anyhow::Result<()> {
    let mut fake = Fake::start().await?;
    let (driver, mut events) = SchedulerDriver::start(config(&fake.url, true))?;
    let (_request, stream) = fake.next_subscription().await?;
    stream
        .send(Err(Status::permission_denied(
            "framework fw-x has been removed",
        )))
        .await?;
    let error = next_event(&mut events).await?;
    assert_eq!(
        error,
        DriverEvent::Error("framework fw-x has been removed".into())
    );
    let end = tokio::time::timeout(DEFAULT_TIMEOUT, events.next()).await?;
    assert_eq!(end, None, "the event stream ends after a refusal");
    assert!(!driver.is_running());
    assert_eq!(driver.suppress().await, Err(SdkError::NotSubscribed));
    Ok(())
}

#[tokio::test]
async fn updates_with_a_uuid_are_acknowledged_automatically() -> anyhow::Result<()> {
    let mut fake = Fake::start().await?;
    let (_driver, mut events) = SchedulerDriver::start(config(&fake.url, true))?;
    let (_request, stream) = fake.next_subscription().await?;
    stream.send(subscribed("fw-ack", "stream-a", 5.0)).await?;
    next_event(&mut events).await?;
    for (task, uuid) in [("t1", ""), ("t2", "uuid-2")] {
        let status = v1::TaskStatus {
            task_id: task.into(),
            agent_id: "agent-1".into(),
            state: v1::TaskState::TaskRunning as i32,
            uuid: uuid.into(),
            ..Default::default()
        };
        stream
            .send(event(Event::Update(v1::Update {
                status: Some(status.clone()),
            })))
            .await?;
        assert_eq!(next_event(&mut events).await?, DriverEvent::Update(status));
    }
    let ack = tokio::time::timeout(DEFAULT_TIMEOUT, fake.acknowledgements.recv())
        .await?
        .context("acknowledgement")?;
    assert_eq!(
        ack.task_id, "t2",
        "the update without uuid is not acknowledged"
    );
    assert_eq!(ack.uuid, "uuid-2");
    assert_eq!(ack.agent_id, "agent-1");
    assert_eq!(
        ack.header.map(|header| header.stream_id).as_deref(),
        Some("stream-a")
    );
    Ok(())
}

#[tokio::test]
async fn without_auto_acknowledge_nothing_is_acknowledged() -> anyhow::Result<()> {
    let mut fake = Fake::start().await?;
    let (driver, mut events) = SchedulerDriver::start(config(&fake.url, false))?;
    let (_request, stream) = fake.next_subscription().await?;
    stream
        .send(subscribed("fw-manual", "stream-m", 5.0))
        .await?;
    next_event(&mut events).await?;
    let status = v1::TaskStatus {
        task_id: "t1".into(),
        agent_id: "agent-1".into(),
        state: v1::TaskState::TaskFinished as i32,
        uuid: "uuid-1".into(),
        ..Default::default()
    };
    stream
        .send(event(Event::Update(v1::Update {
            status: Some(status.clone()),
        })))
        .await?;
    let DriverEvent::Update(received) = next_event(&mut events).await? else {
        anyhow::bail!("expected an update");
    };
    assert!(fake.acknowledgements.try_recv().is_err());
    driver.acknowledge(&received).await?;
    let ack = fake
        .acknowledgements
        .recv()
        .await
        .context("acknowledgement")?;
    assert_eq!(ack.uuid, "uuid-1");
    Ok(())
}

#[tokio::test]
async fn calls_without_a_subscription_fail_and_bad_urls_are_refused() -> anyhow::Result<()> {
    // Nothing listens on this port: the driver keeps retrying and reports the outage once.
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", unused.local_addr()?);
    drop(unused);
    let (driver, mut events) = SchedulerDriver::start(config(&url, true))?;
    assert!(matches!(
        next_event(&mut events).await?,
        DriverEvent::Disconnected { .. }
    ));
    assert_eq!(driver.revive().await, Err(SdkError::NotSubscribed));
    assert_eq!(driver.framework_id(), None);
    driver.stop();
    let end = tokio::time::timeout(DEFAULT_TIMEOUT, events.next()).await?;
    assert_eq!(end, None, "stop ends the event stream");

    let error = SchedulerDriver::start(config("not a url", true)).expect_err("bad url");
    assert!(matches!(error, SdkError::InvalidUrl { .. }), "{error}");
    Ok(())
}
