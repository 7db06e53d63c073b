//! A small harness for driving the core in tests: an injected clock, connection numbering
//! and helpers that pick events out of the command stream.

use std::time::Duration;

use agora_proto::{AgentId, Clock, FrameworkId, ManualClock, OfferId, Resources, v1};

use super::{Command, ConnId, Master, MasterConfig, MasterError, Now, Registry};

/// A subscribed framework as a test sees it.
#[derive(Debug, Clone)]
pub(crate) struct TestFramework {
    pub(crate) id: FrameworkId,
    pub(crate) stream_id: String,
    pub(crate) conn: ConnId,
}

impl TestFramework {
    pub(crate) fn header(&self) -> Option<v1::CallHeader> {
        Some(v1::CallHeader {
            framework_id: self.id.to_string(),
            stream_id: self.stream_id.clone(),
        })
    }
}

/// A master plus clock and connection counter.
pub(crate) struct Harness {
    pub(crate) master: Master,
    pub(crate) clock: ManualClock,
    next_conn: u64,
    /// Agent connections that heartbeat on every step of [`Harness::run_for`].
    pub(crate) keep_alive: Vec<ConnId>,
}

pub(crate) fn config() -> MasterConfig {
    MasterConfig {
        offer_timeout: Some(Duration::from_secs(30)),
        ..MasterConfig::default()
    }
}

pub(crate) fn resources(text: &str) -> Vec<v1::Resource> {
    Resources::parse(text).unwrap_or_default().to_proto()
}

pub(crate) fn agent_info(hostname: &str, text: &str) -> v1::AgentInfo {
    v1::AgentInfo {
        hostname: hostname.to_owned(),
        resources: resources(text),
        ..Default::default()
    }
}

pub(crate) fn framework_info(name: &str, role: &str) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: name.to_owned(),
        role: role.to_owned(),
        failover_timeout_seconds: 60.0,
        ..Default::default()
    }
}

pub(crate) fn task(id: &str, text: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: id.to_owned(),
        name: id.to_owned(),
        resources: resources(text),
        ..Default::default()
    }
}

pub(crate) fn launch(tasks: Vec<v1::TaskInfo>) -> Vec<v1::Operation> {
    vec![v1::Operation {
        operation: Some(v1::operation::Operation::Launch(v1::Launch { tasks })),
    }]
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with_config(config())
    }

    pub(crate) fn with_config(config: MasterConfig) -> Self {
        Self::recovering(config, Registry::default())
    }

    pub(crate) fn recovering(config: MasterConfig, registry: Registry) -> Self {
        let clock = ManualClock::new(1_700_000_000.0);
        let master = Master::new(config, clock.now(), registry);
        Self {
            master,
            clock,
            next_conn: 1,
            keep_alive: Vec::new(),
        }
    }

    pub(crate) fn now(&self) -> Now {
        self.clock.now()
    }

    pub(crate) fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub(crate) fn register_agent(&mut self, text: &str) -> (AgentId, ConnId) {
        let conn = self.conn();
        let now = self.now();
        let agent_id = self
            .master
            .agent_register(now, conn, agent_info("host", text))
            .expect("agent registers");
        self.keep_alive.push(conn);
        (agent_id, conn)
    }

    pub(crate) fn subscribe(&mut self, info: v1::FrameworkInfo) -> TestFramework {
        let conn = self.conn();
        let now = self.now();
        let subscribed = self
            .master
            .subscribe(now, conn, info, false)
            .expect("framework subscribes");
        TestFramework {
            id: FrameworkId::new(subscribed.framework_id),
            stream_id: subscribed.stream_id,
            conn,
        }
    }

    /// Advances past the batching window and ticks; returns the commands produced so far.
    pub(crate) fn allocate(&mut self) -> Vec<Command> {
        let window = self.master.config().allocation_batch_window;
        let now = self.clock.advance(window);
        self.master.tick(now);
        self.master.take_commands()
    }

    /// Advances by `by` in steps no larger than the next deadline, ticking at each, and
    /// returns every command produced.
    pub(crate) fn run_for(&mut self, by: Duration) -> Vec<Command> {
        let end = self.now().instant + by;
        let mut commands = self.master.take_commands();
        loop {
            let now = self.now();
            for conn in self.keep_alive.clone() {
                self.master.agent_heartbeat(now, conn);
            }
            let next = self
                .master
                .next_deadline()
                .filter(|deadline| *deadline <= end)
                .unwrap_or(end);
            let now = self.clock.set(next.max(self.now().instant));
            self.master.tick(now);
            commands.extend(self.master.take_commands());
            if next >= end {
                return commands;
            }
        }
    }

    /// Stops the automatic heartbeats of agent connection `conn`.
    pub(crate) fn silence(&mut self, conn: ConnId) {
        self.keep_alive.retain(|alive| *alive != conn);
    }

    pub(crate) fn accept(
        &mut self,
        framework: &TestFramework,
        offer_ids: &[OfferId],
        tasks: Vec<v1::TaskInfo>,
        refuse_seconds: Option<f64>,
    ) -> Result<v1::AcceptResponse, MasterError> {
        let now = self.now();
        self.master.accept(
            now,
            v1::AcceptRequest {
                header: framework.header(),
                offer_ids: offer_ids.iter().map(ToString::to_string).collect(),
                operations: launch(tasks),
                filters: Some(v1::Filters { refuse_seconds }),
            },
        )
    }

    pub(crate) fn decline(
        &mut self,
        framework: &TestFramework,
        offer_ids: &[OfferId],
        refuse_seconds: Option<f64>,
    ) -> Result<(), MasterError> {
        let now = self.now();
        self.master.decline(
            now,
            v1::DeclineRequest {
                header: framework.header(),
                offer_ids: offer_ids.iter().map(ToString::to_string).collect(),
                filters: Some(v1::Filters { refuse_seconds }),
            },
        )
    }

    pub(crate) fn status_update(
        &mut self,
        conn: ConnId,
        framework: &FrameworkId,
        task_id: &str,
        state: v1::TaskState,
        uuid: &str,
    ) -> Result<(), MasterError> {
        let now = self.now();
        self.master.agent_status_update(
            now,
            conn,
            v1::StatusUpdate {
                framework_id: framework.to_string(),
                status: Some(v1::TaskStatus {
                    task_id: task_id.to_owned(),
                    state: state as i32,
                    uuid: uuid.to_owned(),
                    source: v1::StatusSource::SourceAgent as i32,
                    ..Default::default()
                }),
            },
        )
    }
}

/// Events sent on `conn`.
pub(crate) fn events_for(commands: &[Command], conn: ConnId) -> Vec<v1::event::Event> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendToFramework { conn: to, event } if *to == conn => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// Messages sent on agent connection `conn`.
pub(crate) fn messages_for(commands: &[Command], conn: ConnId) -> Vec<v1::master_message::Message> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::SendToAgent { conn: to, message } if *to == conn => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Offers sent on `conn`.
pub(crate) fn offers_for(commands: &[Command], conn: ConnId) -> Vec<v1::Offer> {
    events_for(commands, conn)
        .into_iter()
        .filter_map(|event| match event {
            v1::event::Event::Offers(offers) => Some(offers.offers),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Task updates sent on `conn`.
pub(crate) fn updates_for(commands: &[Command], conn: ConnId) -> Vec<v1::TaskStatus> {
    events_for(commands, conn)
        .into_iter()
        .filter_map(|event| match event {
            v1::event::Event::Update(update) => update.status,
            _ => None,
        })
        .collect()
}

/// Rescinded offer ids sent on `conn`.
pub(crate) fn rescinds_for(commands: &[Command], conn: ConnId) -> Vec<String> {
    events_for(commands, conn)
        .into_iter()
        .filter_map(|event| match event {
            v1::event::Event::Rescind(rescind) => Some(rescind.offer_id),
            _ => None,
        })
        .collect()
}

pub(crate) fn offer_ids(offers: &[v1::Offer]) -> Vec<OfferId> {
    offers
        .iter()
        .map(|offer| OfferId::new(offer.id.clone()))
        .collect()
}
