//! A scripted agent speaking `AgentService.Connect` over real gRPC, for driving the master
//! step by step from a test.

use std::collections::HashMap;
use std::time::Duration;

use agora_proto::v1::agent_service_client::AgentServiceClient;
use agora_proto::v1::{self, agent_message, master_message};
use agora_proto::{AgentId, FrameworkId, Resources, TaskId};
use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::wait::{DEFAULT_TIMEOUT, Inbox};

/// What a [`TestAgent`] registers as.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Hostname reported to the master.
    pub hostname: String,
    /// Total resources, in the text form (`cpus:4;mem:4096;ports:[31000-31100]`).
    pub resources: String,
    /// Agent labels.
    pub labels: HashMap<String, String>,
    /// Send a heartbeat at the interval the master asks for, from registration on.
    pub auto_heartbeat: bool,
}

impl AgentSpec {
    /// An agent on `hostname` with `resources`, no labels, heartbeating automatically.
    pub fn new(hostname: impl Into<String>, resources: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            resources: resources.into(),
            labels: HashMap::new(),
            auto_heartbeat: true,
        }
    }

    /// Adds a label.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// Turns automatic heartbeats off: the test sends them with [`TestAgent::heartbeat`].
    pub fn manual_heartbeats(mut self) -> Self {
        self.auto_heartbeat = false;
        self
    }
}

/// One agent connection to the master, scripted by the test.
///
/// Every message from the master (except master heartbeats) is kept until a test consumes it
/// with one of the `expect_*` methods, so the order in which a test waits does not matter.
#[derive(Debug)]
pub struct TestAgent {
    master_url: String,
    spec: AgentSpec,
    info: v1::AgentInfo,
    agent_id: Option<AgentId>,
    heartbeat_interval: Duration,
    outbound: Option<mpsc::Sender<v1::AgentMessage>>,
    inbox: Inbox<master_message::Message>,
    heartbeats: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop_heartbeats();
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
    }
}

impl TestAgent {
    /// Connects to the master and registers as a new agent; waits for `Registered`.
    pub async fn register(master_url: &str, spec: AgentSpec) -> anyhow::Result<TestAgent> {
        let resources = Resources::parse(&spec.resources).context("AgentSpec.resources")?;
        let info = v1::AgentInfo {
            id: String::new(),
            hostname: spec.hostname.clone(),
            address: format!("{}:5051", spec.hostname),
            resources: resources.to_proto(),
            labels: spec.labels.clone(),
            runtimes: vec!["sim".into()],
            version: agora_proto::VERSION.into(),
        };
        let (_unused_sender, unused_receiver) = mpsc::channel(1);
        let mut agent = TestAgent {
            master_url: master_url.to_owned(),
            spec,
            info,
            agent_id: None,
            heartbeat_interval: Duration::from_secs(1),
            outbound: None,
            inbox: Inbox::new(unused_receiver),
            heartbeats: None,
            pump: None,
        };
        let register = agent_message::Message::Register(v1::Register {
            agent: Some(agent.info.clone()),
        });
        agent.open_and_wait_registered(register).await?;
        Ok(agent)
    }

    /// The id the master assigned.
    pub fn agent_id(&self) -> AgentId {
        self.agent_id.clone().unwrap_or_default()
    }

    /// The heartbeat interval the master asked for in `Registered`.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The agent's info as registered (with its id).
    pub fn info(&self) -> &v1::AgentInfo {
        &self.info
    }

    async fn open_and_wait_registered(
        &mut self,
        first: agent_message::Message,
    ) -> anyhow::Result<AgentId> {
        self.stop_heartbeats();
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        let channel = tonic::transport::Endpoint::from_shared(self.master_url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.master_url))?;
        let mut client = AgentServiceClient::new(channel);
        let (outbound, outbound_receiver) = mpsc::channel(256);
        outbound
            .send(v1::AgentMessage {
                message: Some(first),
            })
            .await
            .context("queueing the registration")?;
        let response = client
            .connect(ReceiverStream::new(outbound_receiver))
            .await
            .context("AgentService.Connect")?;
        let mut stream = response.into_inner();
        let (inbound, inbound_receiver) = mpsc::channel(1024);
        self.pump = Some(tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                let Some(message) = message.message else {
                    continue;
                };
                if matches!(message, master_message::Message::Heartbeat(_)) {
                    continue;
                }
                if inbound.send(message).await.is_err() {
                    break;
                }
            }
        }));
        self.inbox.replace(inbound_receiver);
        self.outbound = Some(outbound);
        let registered = self
            .inbox
            .expect("Registered", DEFAULT_TIMEOUT, |message| match message {
                master_message::Message::Registered(registered) => Some(Ok(registered.clone())),
                master_message::Message::Refused(refused) => Some(Err(refused.message.clone())),
                _ => None,
            })
            .await?;
        let registered = match registered {
            Ok(registered) => registered,
            Err(message) => bail!("registration refused: {message}"),
        };
        let agent_id = AgentId::new(registered.agent_id);
        self.info.id = agent_id.to_string();
        self.agent_id = Some(agent_id.clone());
        let interval = registered.heartbeat_interval_seconds;
        if interval.is_finite() && interval > 0.0 {
            self.heartbeat_interval = Duration::from_secs_f64(interval);
        }
        if self.spec.auto_heartbeat {
            self.start_heartbeats();
        }
        Ok(agent_id)
    }

    async fn send(&self, message: agent_message::Message) -> anyhow::Result<()> {
        let Some(outbound) = &self.outbound else {
            bail!("the agent is disconnected");
        };
        outbound
            .send(v1::AgentMessage {
                message: Some(message),
            })
            .await
            .context("the agent stream is closed")
    }

    /// Sends one heartbeat now.
    pub async fn heartbeat(&self) -> anyhow::Result<()> {
        self.send(agent_message::Message::Heartbeat(v1::AgentHeartbeat {}))
            .await
    }

    /// Heartbeats at half the master's interval from now on.
    pub fn start_heartbeats(&mut self) {
        self.stop_heartbeats();
        let Some(outbound) = self.outbound.clone() else {
            return;
        };
        let period = (self.heartbeat_interval / 2).max(Duration::from_millis(10));
        self.heartbeats = Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let heartbeat = v1::AgentMessage {
                    message: Some(agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
                };
                if outbound.send(heartbeat).await.is_err() {
                    break;
                }
            }
        }));
    }

    /// Stops automatic heartbeats; the connection stays open.
    pub fn stop_heartbeats(&mut self) {
        if let Some(heartbeats) = self.heartbeats.take() {
            heartbeats.abort();
        }
    }

    /// Closes the connection (as a crashed agent would), without unregistering.
    pub fn disconnect(&mut self) {
        self.stop_heartbeats();
        self.outbound = None;
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
    }

    /// Reconnects to `master_url` (e.g. a restarted master) and re-registers with `tasks`;
    /// waits for `Registered`.
    pub async fn reregister(
        &mut self,
        master_url: &str,
        tasks: Vec<v1::AgentTask>,
    ) -> anyhow::Result<AgentId> {
        self.disconnect();
        self.master_url = master_url.to_owned();
        let mut framework_ids: Vec<String> =
            tasks.iter().map(|task| task.framework_id.clone()).collect();
        framework_ids.sort();
        framework_ids.dedup();
        let reregister = agent_message::Message::Reregister(v1::Reregister {
            agent: Some(self.info.clone()),
            tasks,
            framework_ids,
        });
        self.open_and_wait_registered(reregister).await
    }

    /// Sends a status update for `task_id` with a fresh uuid, which it returns.
    pub async fn send_status(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        state: v1::TaskState,
    ) -> anyhow::Result<String> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let status = self.status(task_id, state, &uuid);
        self.send(agent_message::Message::StatusUpdate(v1::StatusUpdate {
            framework_id: framework_id.to_string(),
            status: Some(status),
        }))
        .await?;
        Ok(uuid)
    }

    /// A status of one of this agent's tasks, as the agent would send it.
    pub fn status(&self, task_id: &TaskId, state: v1::TaskState, uuid: &str) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task_id.to_string(),
            agent_id: self.agent_id().to_string(),
            state: state as i32,
            uuid: uuid.to_owned(),
            timestamp: agora_proto::now_seconds(),
            source: v1::StatusSource::SourceAgent as i32,
            ..Default::default()
        }
    }

    /// A running task to report in [`TestAgent::reregister`].
    pub fn running_task(&self, framework_id: &FrameworkId, task: &v1::TaskInfo) -> v1::AgentTask {
        let task_id = TaskId::new(task.task_id.clone());
        v1::AgentTask {
            framework_id: framework_id.to_string(),
            task: Some(task.clone()),
            latest_status: Some(self.status(&task_id, v1::TaskState::TaskRunning, "")),
        }
    }

    /// The first message from the master (received or to come) that `select` accepts.
    pub async fn expect<R>(
        &mut self,
        what: &str,
        timeout: Duration,
        select: impl FnMut(&master_message::Message) -> Option<R>,
    ) -> anyhow::Result<R> {
        self.inbox.expect(what, timeout, select).await
    }

    /// Fails if a message `select` accepts arrives within `window`.
    pub async fn expect_none(
        &mut self,
        what: &str,
        window: Duration,
        select: impl FnMut(&master_message::Message) -> bool,
    ) -> anyhow::Result<()> {
        self.inbox.expect_none(what, window, select).await
    }

    /// Waits for a `LaunchTasks`.
    pub async fn expect_launch(&mut self, timeout: Duration) -> anyhow::Result<v1::LaunchTasks> {
        self.expect("LaunchTasks", timeout, |message| match message {
            master_message::Message::LaunchTasks(launch) => Some(launch.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for a `KillTask` for `task_id`.
    pub async fn expect_kill(
        &mut self,
        task_id: &TaskId,
        timeout: Duration,
    ) -> anyhow::Result<v1::KillTask> {
        let wanted = task_id.to_string();
        self.expect(
            &format!("KillTask {wanted}"),
            timeout,
            |message| match message {
                master_message::Message::KillTask(kill) if kill.task_id == wanted => {
                    Some(kill.clone())
                }
                _ => None,
            },
        )
        .await
    }

    /// Waits for the `AckStatus` of update `uuid`.
    pub async fn expect_ack(
        &mut self,
        uuid: &str,
        timeout: Duration,
    ) -> anyhow::Result<v1::AckStatus> {
        self.expect(
            &format!("AckStatus {uuid}"),
            timeout,
            |message| match message {
                master_message::Message::AckStatus(ack) if ack.uuid == uuid => Some(ack.clone()),
                _ => None,
            },
        )
        .await
    }

    /// Waits for a `KillTask` of `task_id` or a `ShutdownFramework` of `framework_id`.
    pub async fn expect_kill_or_shutdown(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        timeout: Duration,
    ) -> anyhow::Result<master_message::Message> {
        let framework = framework_id.to_string();
        let task = task_id.to_string();
        self.expect(
            "KillTask or ShutdownFramework",
            timeout,
            |message| match message {
                master_message::Message::KillTask(kill) if kill.task_id == task => {
                    Some(message.clone())
                }
                master_message::Message::ShutdownFramework(shutdown)
                    if shutdown.framework_id == framework =>
                {
                    Some(message.clone())
                }
                _ => None,
            },
        )
        .await
    }

    /// True once the master ended this agent's stream and every message was consumed.
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }
}
