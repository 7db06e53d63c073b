//! Bad input gets a clear gRPC error naming the problem, and changes nothing.

use agora_proto::v1::scheduler_service_client::SchedulerServiceClient;
use agora_proto::v1::{self, TaskState};
use agora_proto::{OfferId, Resources, TaskId};
use agora_sdk::{SdkError, TaskBuilder};
use agora_tests::{AgentSpec, DEFAULT_TIMEOUT, TestCluster, TestFramework};

/// The parts of the state a refused call must not change.
fn snapshot(state: &v1::ClusterState) -> (Vec<v1::TaskEntry>, Vec<String>, Vec<Vec<v1::Resource>>) {
    let mut offers: Vec<String> = state.offers.iter().map(|offer| offer.id.clone()).collect();
    offers.sort();
    let used = state
        .agents
        .iter()
        .map(|agent| agent.used.clone())
        .collect();
    (state.tasks.clone(), offers, used)
}

async fn cluster_with_offer() -> anyhow::Result<(
    TestCluster,
    agora_tests::TestAgent,
    TestFramework,
    v1::Offer,
)> {
    let cluster = TestCluster::start_default().await?;
    let agent = cluster
        .add_agent(AgentSpec::new(
            "host-a",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;
    let mut framework = cluster.start_framework("strict", &[]).await?;
    let offers = framework.expect_offers(DEFAULT_TIMEOUT).await?;
    let offer = offers[0].clone();
    Ok((cluster, agent, framework, offer))
}

#[tokio::test]
async fn accept_asking_for_more_than_the_offer_is_refused() -> anyhow::Result<()> {
    let (cluster, _agent, framework, offer) = cluster_with_offer().await?;
    let before = snapshot(&cluster.state().await?);
    let mut task = TaskBuilder::new("greedy")
        .cpus(1.0)
        .mem(64.0)
        .build(&offer)?;
    task.resources = Resources::cpus_mem(64.0, 64.0).to_proto();
    let error = framework
        .driver
        .launch(OfferId::new(offer.id.clone()), vec![task])
        .await
        .expect_err("an accept beyond the offer must fail");
    assert!(matches!(error, SdkError::InvalidArgument(_)), "{error}");
    assert!(
        error.to_string().contains("cpus"),
        "error names the resource: {error}"
    );
    assert_eq!(snapshot(&cluster.state().await?), before);

    // The offer is still good: a task that fits is launched from it.
    let fitting = TaskBuilder::new("fits").cpus(1.0).mem(64.0).build(&offer)?;
    let launched = framework
        .driver
        .launch(OfferId::new(offer.id.clone()), vec![fitting.clone()])
        .await?;
    assert_eq!(launched, vec![TaskId::new(fitting.task_id)]);
    Ok(())
}

#[tokio::test]
async fn unknown_framework_id_is_refused() -> anyhow::Result<()> {
    let (cluster, _agent, framework, offer) = cluster_with_offer().await?;
    let before = snapshot(&cluster.state().await?);
    let channel = tonic::transport::Endpoint::from_shared(cluster.master_url())?
        .connect()
        .await?;
    let mut client = SchedulerServiceClient::new(channel);
    let header = v1::CallHeader {
        framework_id: "fw-does-not-exist".into(),
        stream_id: framework
            .driver
            .stream_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
    };
    let error = client
        .decline(v1::DeclineRequest {
            header: Some(header),
            offer_ids: vec![offer.id.clone()],
            filters: None,
        })
        .await
        .expect_err("a call for an unknown framework must fail");
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
    assert!(error.message().contains("fw-does-not-exist"), "{error:?}");
    assert_eq!(snapshot(&cluster.state().await?), before);
    Ok(())
}

#[tokio::test]
async fn unknown_offer_id_is_refused_and_tasks_are_dropped() -> anyhow::Result<()> {
    let (cluster, _agent, mut framework, offer) = cluster_with_offer().await?;
    let before = snapshot(&cluster.state().await?);
    let task = TaskBuilder::new("orphan")
        .cpus(0.5)
        .mem(32.0)
        .build(&offer)?;
    let task_id = TaskId::new(task.task_id.clone());
    let result = framework
        .driver
        .launch(OfferId::new("offer-does-not-exist"), vec![task])
        .await;
    let error = result.expect_err("an accept naming an unknown offer must fail");
    assert!(matches!(error, SdkError::NotFound(_)), "{error}");
    assert!(
        error.to_string().contains("offer-does-not-exist"),
        "{error}"
    );
    let dropped = framework
        .expect_update(&task_id, TaskState::TaskDropped, DEFAULT_TIMEOUT)
        .await?;
    assert!(
        dropped.uuid.is_empty(),
        "master-generated updates carry no uuid"
    );
    assert_eq!(snapshot(&cluster.state().await?), before);
    Ok(())
}

#[tokio::test]
async fn malformed_task_resources_are_refused() -> anyhow::Result<()> {
    let (cluster, _agent, framework, offer) = cluster_with_offer().await?;
    let before = snapshot(&cluster.state().await?);
    let mut task = TaskBuilder::new("negative")
        .cpus(0.5)
        .mem(32.0)
        .build(&offer)?;
    task.resources = vec![
        v1::Resource {
            name: "cpus".into(),
            value: Some(v1::resource::Value::Scalar(-1.0)),
        },
        v1::Resource {
            name: "mem".into(),
            value: Some(v1::resource::Value::Scalar(32.0)),
        },
    ];
    let error = framework
        .driver
        .launch(OfferId::new(offer.id.clone()), vec![task])
        .await
        .expect_err("negative cpus must be refused");
    assert!(matches!(error, SdkError::InvalidArgument(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("cpus") && message.contains("resources"),
        "{message}"
    );
    assert_eq!(snapshot(&cluster.state().await?), before);
    Ok(())
}

#[test]
fn malformed_resource_string_names_the_fragment() {
    let error = Resources::parse("cpus:2;mem:lots;ports:[31000-31010]").unwrap_err();
    assert!(error.to_string().contains("mem:lots"), "{error}");
    let error = Resources::parse("cpus:2;ports:[31010-31000]").unwrap_err();
    assert!(error.to_string().contains("31010"), "{error}");
}

/// A raw scheduler client and the framework's call header, for requests the SDK would not
/// build.
async fn raw_client(
    cluster: &TestCluster,
    framework: &TestFramework,
) -> anyhow::Result<(
    SchedulerServiceClient<tonic::transport::Channel>,
    v1::CallHeader,
)> {
    let channel = tonic::transport::Endpoint::from_shared(cluster.master_url())?
        .connect()
        .await?;
    let header = v1::CallHeader {
        framework_id: framework
            .driver
            .framework_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        stream_id: framework
            .driver
            .stream_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
    };
    Ok((SchedulerServiceClient::new(channel), header))
}

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        value: Some(v1::resource::Value::Scalar(value)),
    }
}

#[tokio::test]
async fn out_of_range_numbers_ids_and_minimums_are_refused_over_grpc() -> anyhow::Result<()> {
    let (cluster, _agent, framework, offer) = cluster_with_offer().await?;
    let (mut client, header) = raw_client(&cluster, &framework).await?;
    let before = snapshot(&cluster.state().await?);
    let base = TaskBuilder::new("numbers")
        .cpus(0.5)
        .mem(32.0)
        .build(&offer)?;

    let mut absurd_grace = base.clone();
    absurd_grace.kill_grace_period_seconds = 1e308;
    let mut absurd_health = base.clone();
    absurd_health.health_check = Some(v1::HealthCheck {
        protocol: v1::HealthCheckProtocol::Command as i32,
        command: "true".into(),
        interval_seconds: 1e308,
        ..Default::default()
    });
    let mut overflowing = base.clone();
    overflowing.resources = vec![
        scalar("cpus", 1e18),
        scalar("cpus", 1e18),
        scalar("mem", 32.0),
    ];
    let mut summing = base.clone();
    summing.resources = vec![
        scalar("cpus", 6e11),
        scalar("cpus", 6e11),
        scalar("mem", 32.0),
    ];
    let mut long_id = base.clone();
    long_id.task_id = "t".repeat(70_000);
    let mut no_mem = base.clone();
    no_mem.resources = vec![scalar("cpus", 0.5), scalar("mem", 0.0)];
    let mut no_cpus = base.clone();
    no_cpus.resources = vec![scalar("cpus", 0.0), scalar("mem", 32.0)];
    for (task, field, reason) in [
        (
            absurd_grace,
            "kill_grace_period_seconds",
            "at most 31536000",
        ),
        (
            absurd_health,
            "health_check.interval_seconds",
            "at most 31536000",
        ),
        (overflowing, "resources", "exceeds the maximum"),
        (
            summing,
            "resources",
            "cpus total 1.2e12 exceeds the maximum 1e12",
        ),
        (long_id, "task_id", "at most 255 bytes, got 70000"),
        (no_mem, "resources", "mem must be at least 6 MiB"),
        (no_cpus, "resources", "cpus must be at least 0.01"),
    ] {
        let error = client
            .accept(v1::AcceptRequest {
                header: Some(header.clone()),
                offer_ids: vec![offer.id.clone()],
                operations: vec![v1::Operation {
                    operation: Some(v1::operation::Operation::Launch(v1::Launch {
                        tasks: vec![task],
                    })),
                }],
                filters: None,
            })
            .await
            .expect_err("must be refused");
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
        let message = error.message();
        assert!(
            message.contains(&format!("operations[0].launch.tasks[0].{field}"))
                && message.contains(reason),
            "{field}/{reason}: {message}"
        );
        assert!(message.len() < 400, "the message stays short: {message}");
        assert_eq!(snapshot(&cluster.state().await?), before);
    }

    // Kill with a grace period of 1e308 seconds.
    let error = client
        .kill(v1::KillRequest {
            header: Some(header.clone()),
            task_id: "anything".into(),
            agent_id: String::new(),
            grace_period_seconds: Some(1e308),
        })
        .await
        .expect_err("an absurd grace period must be refused");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("grace_period_seconds"),
        "{error:?}"
    );

    // Decline with refuse_seconds 1e308.
    let error = client
        .decline(v1::DeclineRequest {
            header: Some(header.clone()),
            offer_ids: vec![offer.id.clone()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(1e308),
            }),
        })
        .await
        .expect_err("an absurd refuse_seconds must be refused");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("filters.refuse_seconds"),
        "{error:?}"
    );

    // Subscribe with an absurd failover timeout, or a 70,000-byte name.
    for (info, field) in [
        (
            v1::FrameworkInfo {
                name: "absurd".into(),
                failover_timeout_seconds: 1e308,
                ..Default::default()
            },
            "framework.failover_timeout_seconds",
        ),
        (
            v1::FrameworkInfo {
                name: "n".repeat(70_000),
                ..Default::default()
            },
            "framework.name",
        ),
    ] {
        let error = client
            .subscribe(v1::SubscribeRequest {
                framework: Some(info),
                suppressed: false,
            })
            .await
            .expect_err("must be refused");
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
        assert!(error.message().contains(field), "{error:?}");
    }
    assert_eq!(snapshot(&cluster.state().await?), before);
    assert_eq!(cluster.state().await?.frameworks.len(), 1);
    Ok(())
}
