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
