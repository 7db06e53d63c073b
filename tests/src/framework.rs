//! A framework started with the SDK, with helpers to wait for its events.

use std::time::Duration;

use agora_proto::v1;
use agora_proto::{FrameworkId, TaskId};
use agora_sdk::{DriverConfig, DriverEvent, EventStream, SchedulerDriver};
use anyhow::Context;
use tokio::sync::mpsc;

use crate::wait::{DEFAULT_TIMEOUT, Inbox};

/// A framework subscribed through [`SchedulerDriver`]. Events not consumed by one wait stay
/// available to the next.
#[derive(Debug)]
pub struct TestFramework {
    /// The driver, for calls.
    pub driver: SchedulerDriver,
    /// The id the master assigned.
    pub framework_id: FrameworkId,
    inbox: Inbox<DriverEvent>,
}

impl TestFramework {
    /// The configuration the harness uses: fast reconnects, auto-acknowledgement on.
    pub fn config(master_url: &str, framework: v1::FrameworkInfo) -> DriverConfig {
        let mut config = DriverConfig::new(master_url, framework);
        config.reconnect_backoff_min = Duration::from_millis(50);
        config.reconnect_backoff_max = Duration::from_millis(500);
        config
    }

    /// A framework named `name` with a 60 s failover timeout and `capabilities`.
    pub fn info(name: &str, capabilities: &[v1::FrameworkCapability]) -> v1::FrameworkInfo {
        v1::FrameworkInfo {
            name: name.into(),
            user: "test".into(),
            role: "*".into(),
            failover_timeout_seconds: 60.0,
            capabilities: capabilities
                .iter()
                .map(|&capability| capability as i32)
                .collect(),
            ..Default::default()
        }
    }

    /// Starts a driver with `config` and waits for its first `Subscribed`.
    pub async fn start(config: DriverConfig) -> anyhow::Result<TestFramework> {
        let (driver, events) = SchedulerDriver::start(config).context("starting the driver")?;
        let mut inbox = Inbox::new(forward(events));
        let framework_id = inbox
            .expect("Subscribed", DEFAULT_TIMEOUT, |event| match event {
                DriverEvent::Subscribed { framework_id, .. } => Some(framework_id.clone()),
                _ => None,
            })
            .await?;
        Ok(TestFramework {
            driver,
            framework_id,
            inbox,
        })
    }

    /// The first event (received or to come) that `select` accepts, within `timeout`.
    pub async fn expect_event<R>(
        &mut self,
        select: impl FnMut(&DriverEvent) -> Option<R>,
        timeout: Duration,
    ) -> anyhow::Result<R> {
        self.inbox.expect("framework event", timeout, select).await
    }

    /// Fails if an event `select` accepts arrives within `window`.
    pub async fn expect_no_event(
        &mut self,
        what: &str,
        select: impl FnMut(&DriverEvent) -> bool,
        window: Duration,
    ) -> anyhow::Result<()> {
        self.inbox.expect_none(what, window, select).await
    }

    /// Waits for offers and returns them.
    pub async fn expect_offers(&mut self, timeout: Duration) -> anyhow::Result<Vec<v1::Offer>> {
        self.expect_event(
            |event| match event {
                DriverEvent::Offers(offers) if !offers.is_empty() => Some(offers.clone()),
                _ => None,
            },
            timeout,
        )
        .await
    }

    /// Waits for an update of `task_id` in `state`.
    pub async fn expect_update(
        &mut self,
        task_id: &TaskId,
        state: v1::TaskState,
        timeout: Duration,
    ) -> anyhow::Result<v1::TaskStatus> {
        let wanted = task_id.to_string();
        self.inbox
            .expect(
                &format!("{wanted} {state:?}"),
                timeout,
                |event| match event {
                    DriverEvent::Update(status)
                        if status.task_id == wanted && status.state() == state =>
                    {
                        Some(status.clone())
                    }
                    _ => None,
                },
            )
            .await
    }

    /// Drops every offer received so far (they stay outstanding at the master).
    pub fn forget_offers(&mut self) {
        self.inbox
            .discard(|event| matches!(event, DriverEvent::Offers(_)));
    }

    /// True once the driver's event stream ended and every event was consumed.
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }
}

/// Moves the driver's events into a channel the harness inbox reads.
fn forward(mut events: EventStream) -> mpsc::Receiver<DriverEvent> {
    let (sender, receiver) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if sender.send(event).await.is_err() {
                break;
            }
        }
    });
    receiver
}
