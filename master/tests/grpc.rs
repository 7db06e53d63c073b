//! gRPC smoke tests against a real master on a loopback port.

mod common;

use std::time::Duration;

use agora_proto::v1;
use agora_proto::v1::agent_service_client::AgentServiceClient;
use agora_proto::v1::operator_service_client::OperatorServiceClient;
use agora_proto::v1::scheduler_service_client::SchedulerServiceClient;
use agora_proto::{RangeSet, Resources};
use common::{channel, http_get, start_master};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

fn agent_info(hostname: &str) -> v1::AgentInfo {
    v1::AgentInfo {
        hostname: hostname.to_owned(),
        address: format!("{hostname}:5051"),
        resources: Resources::cpus_mem(4.0, 8192.0)
            .with_ranges("ports", RangeSet::from_range(31000, 32000))
            .to_proto(),
        labels: [("disk".to_owned(), "ssd".to_owned())].into(),
        runtimes: vec!["sim".to_owned()],
        version: agora_proto::VERSION.to_owned(),
        ..Default::default()
    }
}

/// An open agent stream: what the agent sends and what the master answers.
struct AgentStream {
    outbound: mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::MasterMessage>,
}

impl AgentStream {
    async fn open(channel: tonic::transport::Channel, first: v1::agent_message::Message) -> Self {
        let (outbound, receiver) = mpsc::channel(16);
        outbound
            .send(v1::AgentMessage {
                message: Some(first),
            })
            .await
            .unwrap();
        let inbound = AgentServiceClient::new(channel)
            .connect(ReceiverStream::new(receiver))
            .await
            .expect("connect answers")
            .into_inner();
        Self { outbound, inbound }
    }

    async fn next(&mut self) -> Result<Option<v1::MasterMessage>, tonic::Status> {
        tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("master answers in time")
    }

    /// Waits for `Registered`, skipping heartbeats.
    async fn registered(&mut self) -> v1::Registered {
        loop {
            let message = self.next().await.expect("stream open").expect("not ended");
            match message.message {
                Some(v1::master_message::Message::Registered(registered)) => return registered,
                Some(v1::master_message::Message::Heartbeat(_)) => continue,
                other => panic!("expected Registered, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn agent_registers_and_appears_in_state() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let mut agent = AgentStream::open(
        channel(&master).await,
        v1::agent_message::Message::Register(v1::Register {
            agent: Some(agent_info("node-1")),
        }),
    )
    .await;
    let registered = agent.registered().await;
    assert!(!registered.agent_id.is_empty());
    assert!(registered.heartbeat_interval_seconds > 0.0);

    // The same port answers HTTP/1.1 with the agent in readable form.
    let state: serde_json::Value =
        serde_json::from_str(&http_get(&master, "/state/agents").await.body).unwrap();
    let agents = state.as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["id"], registered.agent_id.as_str());
    assert_eq!(agents[0]["hostname"], "node-1");
    assert_eq!(agents[0]["labels"]["disk"], "ssd");
    assert_eq!(
        agents[0]["resources"]["total"],
        serde_json::json!({"cpus": 4, "mem": 8192, "ports": "[31000-32000]"})
    );

    // And gRPC operators see it too.
    let cluster = OperatorServiceClient::new(channel(&master).await)
        .get_state(v1::GetStateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.agents.len(), 1);
    drop(agent.outbound);
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn first_agent_message_must_register() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let mut agent = AgentStream::open(
        channel(&master).await,
        v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {}),
    )
    .await;
    let status = agent.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("register"), "{status}");
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn agent_id_survives_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let mut agent = AgentStream::open(
        channel(&master).await,
        v1::agent_message::Message::Register(v1::Register {
            agent: Some(agent_info("node-1")),
        }),
    )
    .await;
    let agent_id = agent.registered().await.agent_id;
    master.shutdown().await.unwrap();
    // Shutdown ends the open stream with a status the agent can act on.
    let ended = loop {
        match agent.next().await {
            Ok(Some(_heartbeat_or_other)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended}");

    let restarted = start_master(dir.path()).await;
    let mut info = agent_info("node-1");
    info.id = agent_id.clone();
    let mut agent = AgentStream::open(
        channel(&restarted).await,
        v1::agent_message::Message::Reregister(v1::Reregister {
            agent: Some(info),
            tasks: vec![],
            framework_ids: vec![],
        }),
    )
    .await;
    assert_eq!(agent.registered().await.agent_id, agent_id);
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn framework_subscribes_and_gets_offers() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let mut agent = AgentStream::open(
        channel(&master).await,
        v1::agent_message::Message::Register(v1::Register {
            agent: Some(agent_info("node-1")),
        }),
    )
    .await;
    let agent_id = agent.registered().await.agent_id;

    let mut events = SchedulerServiceClient::new(channel(&master).await)
        .subscribe(v1::SubscribeRequest {
            suppressed: false,
            framework: Some(v1::FrameworkInfo {
                name: "smoke".to_owned(),
                role: "*".to_owned(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            }),
        })
        .await
        .expect("subscribe answers")
        .into_inner();
    let first = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(v1::event::Event::Subscribed(subscribed)) = first.event else {
        panic!("first event must be Subscribed, got {first:?}");
    };
    assert!(!subscribed.framework_id.is_empty());

    let offers = tokio::time::timeout(WAIT, async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if let Some(v1::event::Event::Offers(offers)) = event.event {
                return offers;
            }
        }
    })
    .await
    .expect("an offer arrives");
    assert_eq!(offers.offers[0].agent_id, agent_id);
    drop(agent.outbound);
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_with_unknown_framework_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let status = SchedulerServiceClient::new(channel(&master).await)
        .revive(v1::ReviveRequest {
            header: Some(v1::CallHeader {
                framework_id: "fw-nobody".to_owned(),
                stream_id: "stream-none".to_owned(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    master.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_event_stream_disconnects_the_framework() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_master(dir.path()).await;
    let mut events = SchedulerServiceClient::new(channel(&master).await)
        .subscribe(v1::SubscribeRequest {
            suppressed: false,
            framework: Some(v1::FrameworkInfo {
                name: "leaver".to_owned(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let _subscribed = tokio::time::timeout(WAIT, events.next()).await.unwrap();
    let connected = |body: &str| -> Option<bool> {
        let frameworks: serde_json::Value = serde_json::from_str(body).unwrap();
        frameworks.as_array()?.first()?["connected"].as_bool()
    };
    assert_eq!(
        connected(&http_get(&master, "/state/frameworks").await.body),
        Some(true)
    );

    drop(events);
    tokio::time::timeout(WAIT, async {
        loop {
            let body = http_get(&master, "/state/frameworks").await.body;
            if connected(&body) == Some(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the master notices the framework left");
    master.shutdown().await.unwrap();
}
