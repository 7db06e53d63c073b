//! The scheduler driver: one background task holding the subscription, and a cheap handle
//! for the framework's calls.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agora_proto::v1::scheduler_service_client::SchedulerServiceClient;
use agora_proto::v1::{self, event::Event};
use agora_proto::{AgentId, Backoff, FrameworkId, OfferId, StreamId, TaskId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument as _, debug, info, warn};

use crate::spans::{FrameworkSpan, task_span};
use crate::{DriverConfig, DriverEvent, EventStream, SdkError};

/// How long to wait for the master to open the stream and send `Subscribed`, before the
/// heartbeat interval is known.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a TCP connection to the master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap, cloneable handle to a running scheduler driver.
///
/// Every call fills the [`v1::CallHeader`] with the framework id and the current stream id,
/// and fails with [`SdkError::NotSubscribed`] while the driver has no subscription.
#[derive(Debug, Clone)]
pub struct SchedulerDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: SchedulerServiceClient<Channel>,
    /// The framework's name, as subscribed.
    name: String,
    session: Mutex<Session>,
    stop: CancellationToken,
}

/// What the current subscription established.
#[derive(Debug, Default)]
struct Session {
    framework_id: Option<FrameworkId>,
    stream_id: Option<StreamId>,
}

/// How one subscription attempt ended.
enum SessionEnd {
    /// The framework stopped listening, or the driver was stopped.
    Stopped,
    /// The master refuses this framework for good (removed, torn down, or superseded by
    /// another subscription with the same id).
    Refused(String),
    /// The connection failed or went silent; the driver re-subscribes.
    Lost {
        reason: String,
        /// Whether `Subscribed` had been received on this attempt.
        was_subscribed: bool,
    },
}

impl SchedulerDriver {
    /// Starts the driver: validates `config`, then spawns the task that subscribes and keeps
    /// the subscription alive. Must be called from within a tokio runtime.
    ///
    /// The driver stops when [`SchedulerDriver::stop`] or [`SchedulerDriver::teardown`] is
    /// called, when the [`EventStream`] is dropped, or when the master refuses the framework
    /// (a final [`DriverEvent::Error`]).
    pub fn start(config: DriverConfig) -> Result<(SchedulerDriver, EventStream), SdkError> {
        config.validate()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|error| SdkError::InvalidConfig {
                field: "runtime",
                reason: format!("SchedulerDriver::start must run inside a tokio runtime: {error}"),
            })?;
        let endpoint = Endpoint::from_shared(config.master_url.clone()).map_err(|error| {
            SdkError::InvalidUrl {
                url: config.master_url.clone(),
                reason: error.to_string(),
            }
        })?;
        let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).connect_lazy();
        let initial_framework_id =
            Some(FrameworkId::new(config.framework.id.clone())).filter(|id| !id.is_empty());
        let span = FrameworkSpan::new(&config.framework.name, initial_framework_id.clone());
        let inner = Arc::new(Inner {
            client: SchedulerServiceClient::new(channel),
            name: config.framework.name.clone(),
            session: Mutex::new(Session {
                framework_id: initial_framework_id,
                stream_id: None,
            }),
            stop: CancellationToken::new(),
        });
        let (sender, receiver) = mpsc::channel(config.event_buffer);
        let instrument = span.span().clone();
        runtime.spawn(run(Arc::clone(&inner), config, sender, span).instrument(instrument));
        Ok((SchedulerDriver { inner }, EventStream::new(receiver)))
    }

    /// The framework id, once the master assigned one (or the one configured for failover).
    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.inner.session().framework_id.clone()
    }

    /// The framework's name, as it subscribes.
    pub fn framework_name(&self) -> &str {
        &self.inner.name
    }

    /// The current subscription's stream id, `None` while not subscribed.
    pub fn stream_id(&self) -> Option<StreamId> {
        self.inner.session().stream_id.clone()
    }

    /// True while the driver's task runs (it may be reconnecting).
    pub fn is_running(&self) -> bool {
        !self.inner.stop.is_cancelled()
    }

    /// Stops the driver without tearing the framework down: the master keeps its tasks for
    /// the failover timeout, so another driver can take over with the same id.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// Launches `tasks` on the resources of `offer_ids` (all from one agent). Returns the ids
    /// of the tasks the master sent to the agent; the others get a status update.
    pub async fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<v1::TaskInfo>,
        filters: v1::Filters,
    ) -> Result<Vec<TaskId>, SdkError> {
        let operations = if tasks.is_empty() {
            Vec::new()
        } else {
            vec![v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch { tasks })),
            }]
        };
        let request = v1::AcceptRequest {
            header: Some(self.inner.header()?),
            offer_ids: offer_ids.into_iter().map(OfferId::into_string).collect(),
            operations,
            filters: Some(filters),
        };
        let response = self
            .inner
            .client
            .clone()
            .accept(request)
            .await?
            .into_inner();
        Ok(response
            .launched_task_ids
            .into_iter()
            .map(TaskId::new)
            .collect())
    }

    /// Launches `tasks` on one offer with the master's default filters.
    pub async fn launch(
        &self,
        offer_id: OfferId,
        tasks: Vec<v1::TaskInfo>,
    ) -> Result<Vec<TaskId>, SdkError> {
        self.accept(vec![offer_id], tasks, v1::Filters::default())
            .await
    }

    /// Declines offers; their resources are not offered to this framework again for
    /// `refuse_seconds` (the master's default when `None`).
    pub async fn decline(
        &self,
        offer_ids: Vec<OfferId>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        let request = v1::DeclineRequest {
            header: Some(self.inner.header()?),
            offer_ids: offer_ids.into_iter().map(OfferId::into_string).collect(),
            filters: Some(v1::Filters { refuse_seconds }),
        };
        self.inner.client.clone().decline(request).await?;
        Ok(())
    }

    /// Clears this framework's filters and resumes offers after [`SchedulerDriver::suppress`].
    pub async fn revive(&self) -> Result<(), SdkError> {
        let request = v1::ReviveRequest {
            header: Some(self.inner.header()?),
        };
        self.inner.client.clone().revive(request).await?;
        Ok(())
    }

    /// Stops offers to this framework until it revives.
    pub async fn suppress(&self) -> Result<(), SdkError> {
        let request = v1::SuppressRequest {
            header: Some(self.inner.header()?),
        };
        self.inner.client.clone().suppress(request).await?;
        Ok(())
    }

    /// Kills a task with its own kill grace period.
    pub async fn kill(&self, task_id: &TaskId, agent_id: &AgentId) -> Result<(), SdkError> {
        let request = v1::KillRequest {
            header: Some(self.inner.header()?),
            task_id: task_id.to_string(),
            agent_id: agent_id.to_string(),
            grace_period_seconds: None,
        };
        self.inner.client.clone().kill(request).await?;
        Ok(())
    }

    /// Acknowledges a status update. Updates without a uuid need no acknowledgement and
    /// return `Ok` without calling the master.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        self.inner.acknowledge(status).await
    }

    /// Asks for the latest state of the listed tasks (task id, agent id), or of all of this
    /// framework's tasks when `tasks` is empty. Answers arrive as [`DriverEvent::Update`]s.
    pub async fn reconcile(&self, tasks: Vec<(TaskId, AgentId)>) -> Result<(), SdkError> {
        let request = v1::ReconcileRequest {
            header: Some(self.inner.header()?),
            tasks: tasks
                .into_iter()
                .map(|(task_id, agent_id)| v1::ReconcileTask {
                    task_id: task_id.into_string(),
                    agent_id: agent_id.into_string(),
                })
                .collect(),
        };
        self.inner.client.clone().reconcile(request).await?;
        Ok(())
    }

    /// Removes the framework from the master (its tasks are killed) and stops the driver.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        let request = v1::TeardownRequest {
            header: Some(self.inner.header()?),
        };
        // The subscription must stay open until the master has processed the call: a stream
        // dropped first would make the call's stream id stale. The master then closes the
        // stream as final (ABORTED), so the driver does not re-subscribe.
        let result = self.inner.client.clone().teardown(request).await;
        self.inner.stop.cancel();
        result?;
        Ok(())
    }
}

impl Inner {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn header(&self) -> Result<v1::CallHeader, SdkError> {
        let session = self.session();
        match (&session.framework_id, &session.stream_id) {
            (Some(framework_id), Some(stream_id)) => Ok(v1::CallHeader {
                framework_id: framework_id.to_string(),
                stream_id: stream_id.to_string(),
            }),
            _ => Err(SdkError::NotSubscribed),
        }
    }

    async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        let request = v1::AcknowledgeRequest {
            header: Some(self.header()?),
            agent_id: status.agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        };
        self.client.clone().acknowledge(request).await?;
        Ok(())
    }

    fn clear_stream(&self) {
        self.session().stream_id = None;
    }
}

/// The driver's task: subscribe, pump events, re-subscribe with backoff until stopped.
/// Runs in the framework's span, which learns the framework id at the first subscription.
async fn run(
    inner: Arc<Inner>,
    config: DriverConfig,
    events: mpsc::Sender<DriverEvent>,
    mut span: FrameworkSpan,
) {
    let mut backoff = Backoff::new(config.reconnect_backoff_min, config.reconnect_backoff_max);
    let mut subscribed_before = false;
    let mut outage_reported = false;
    loop {
        let attempt = subscribe_once(
            &inner,
            &config,
            &events,
            &mut subscribed_before,
            &mut backoff,
            &mut span,
        );
        let end = tokio::select! {
            () = inner.stop.cancelled() => SessionEnd::Stopped,
            () = events.closed() => SessionEnd::Stopped,
            end = attempt => end,
        };
        inner.clear_stream();
        match end {
            SessionEnd::Stopped => break,
            SessionEnd::Refused(message) => {
                warn!(%message, "master refused the framework, driver stops");
                let _ = events.send(DriverEvent::Error(message)).await;
                break;
            }
            SessionEnd::Lost {
                reason,
                was_subscribed,
            } => {
                if was_subscribed {
                    outage_reported = false;
                }
                // One Disconnected per outage, not one per failed attempt.
                if !outage_reported {
                    outage_reported = true;
                    info!(%reason, "scheduler subscription lost, re-subscribing");
                    let notice = DriverEvent::Disconnected {
                        reason: reason.clone(),
                    };
                    if events.send(notice).await.is_err() {
                        break;
                    }
                } else {
                    debug!(%reason, "re-subscription attempt failed");
                }
                let delay = backoff.next_delay(rand::random::<f64>());
                tokio::select! {
                    () = inner.stop.cancelled() => break,
                    () = events.closed() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    inner.clear_stream();
    inner.stop.cancel();
    debug!("scheduler driver stopped");
}

/// Classifies a gRPC failure of the subscription.
///
/// `PERMISSION_DENIED` (the framework was removed) and `ABORTED` (the master closed this
/// stream because a newer subscription took over, or the framework was torn down) are final,
/// as a failed-over Mesos scheduler driver aborts: re-subscribing would steal the framework
/// back from its successor.
fn status_end(status: &tonic::Status, was_subscribed: bool) -> SessionEnd {
    match status.code() {
        Code::PermissionDenied | Code::Aborted => SessionEnd::Refused(status.message().to_owned()),
        code => SessionEnd::Lost {
            reason: format!("{code:?}: {}", status.message()),
            was_subscribed,
        },
    }
}

/// One subscription: from the Subscribe call until the stream ends, fails or goes silent.
async fn subscribe_once(
    inner: &Inner,
    config: &DriverConfig,
    events: &mpsc::Sender<DriverEvent>,
    subscribed_before: &mut bool,
    backoff: &mut Backoff,
    span: &mut FrameworkSpan,
) -> SessionEnd {
    let mut framework = config.framework.clone();
    if let Some(framework_id) = inner.session().framework_id.clone() {
        framework.id = framework_id.into_string();
    }
    let request = v1::SubscribeRequest {
        framework: Some(framework),
        // Offers resume after every (re-)subscription; a framework that wants none
        // suppresses again (the driver does not remember suppression across subscriptions).
        suppressed: false,
    };
    let mut client = inner.client.clone();
    let response = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.subscribe(request)).await {
        Err(_) => {
            return SessionEnd::Lost {
                reason: format!("subscribe got no answer within {SUBSCRIBE_TIMEOUT:?}"),
                was_subscribed: false,
            };
        }
        Ok(Err(status)) => return status_end(&status, false),
        Ok(Ok(response)) => response,
    };
    let mut stream = response.into_inner();
    let mut silence_limit = SUBSCRIBE_TIMEOUT;
    let mut was_subscribed = false;
    loop {
        let message = match tokio::time::timeout(silence_limit, stream.message()).await {
            Err(_) => {
                return SessionEnd::Lost {
                    reason: format!("no event from the master for {silence_limit:?}"),
                    was_subscribed,
                };
            }
            Ok(Err(status)) => return status_end(&status, was_subscribed),
            Ok(Ok(None)) => {
                return SessionEnd::Lost {
                    reason: "the master closed the event stream".into(),
                    was_subscribed,
                };
            }
            Ok(Ok(Some(message))) => message,
        };
        let Some(event) = message.event else {
            continue;
        };
        let driver_event = match event {
            Event::Subscribed(subscribed) => {
                let framework_id = FrameworkId::new(subscribed.framework_id);
                {
                    let mut session = inner.session();
                    session.framework_id = Some(framework_id.clone());
                    session.stream_id = Some(StreamId::new(subscribed.stream_id));
                }
                let interval = subscribed.heartbeat_interval_seconds;
                if interval.is_finite() && interval > 0.0 {
                    silence_limit = Duration::from_secs_f64(interval)
                        .saturating_mul(config.missed_heartbeats_before_reconnect);
                }
                was_subscribed = true;
                backoff.reset();
                let reconnected = *subscribed_before;
                *subscribed_before = true;
                span.subscribed(&framework_id);
                info!(framework_id = %framework_id, reconnected, "framework subscribed");
                DriverEvent::Subscribed {
                    framework_id,
                    reconnected,
                }
            }
            Event::Offers(offers) => DriverEvent::Offers(offers.offers),
            Event::Rescind(rescind) => DriverEvent::Rescind(OfferId::new(rescind.offer_id)),
            Event::Update(update) => {
                let Some(status) = update.status else {
                    continue;
                };
                if events
                    .send(DriverEvent::Update(status.clone()))
                    .await
                    .is_err()
                {
                    return SessionEnd::Stopped;
                }
                if config.auto_acknowledge
                    && !status.uuid.is_empty()
                    && let Err(error) = inner.acknowledge(&status).await
                {
                    task_span(&status.task_id).in_scope(|| {
                        warn!(%error, "automatic acknowledgement failed");
                    });
                }
                continue;
            }
            Event::Failure(failure) => DriverEvent::Failure {
                agent_id: AgentId::new(failure.agent_id),
                message: failure.message,
            },
            Event::Error(error) => DriverEvent::Error(error.message),
            Event::Heartbeat(_) => continue,
        };
        if events.send(driver_event).await.is_err() {
            return SessionEnd::Stopped;
        }
    }
}
