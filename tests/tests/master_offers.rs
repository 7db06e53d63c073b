//! Offer filters: decline with refuse_seconds, suppress and revive; offers are exclusive.

use std::time::Duration;

use agora_proto::v1;
use agora_proto::{OfferId, Resources};
use agora_sdk::{DriverEvent, TaskBuilder};
use agora_tests::{AgentSpec, DEFAULT_TIMEOUT, TestCluster, eventually};
use tokio::time::Instant;

fn offers_for_agent(event: &DriverEvent, agent_id: &str) -> Option<v1::Offer> {
    match event {
        DriverEvent::Offers(offers) => offers
            .iter()
            .find(|offer| offer.agent_id == agent_id)
            .cloned(),
        _ => None,
    }
}

#[tokio::test]
async fn declined_agent_is_not_reoffered_before_the_filter_ends() -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let agent = cluster
        .add_agent(AgentSpec::new("host-a", "cpus:2;mem:1024"))
        .await?;
    let agent_id = agent.agent_id().to_string();
    let mut framework = cluster.start_framework("picky", &[]).await?;
    let offer = framework
        .expect_event(|event| offers_for_agent(event, &agent_id), DEFAULT_TIMEOUT)
        .await?;

    let refuse = Duration::from_millis(1500);
    framework
        .driver
        .decline(
            vec![OfferId::new(offer.id.clone())],
            Some(refuse.as_secs_f64()),
        )
        .await?;
    let declined_at = Instant::now();

    // Many allocation passes run (every 100 ms) while the filter holds.
    framework
        .expect_no_event(
            "offer during the decline filter",
            |event| offers_for_agent(event, &agent_id).is_some(),
            refuse / 2,
        )
        .await?;
    let again = framework
        .expect_event(|event| offers_for_agent(event, &agent_id), DEFAULT_TIMEOUT)
        .await?;
    let waited = declined_at.elapsed();
    assert!(
        waited + Duration::from_millis(100) >= refuse,
        "re-offered after {waited:?}, before the {refuse:?} filter ended"
    );
    assert_ne!(again.id, offer.id, "a new offer, not the declined one");
    Ok(())
}

#[tokio::test]
async fn suppress_stops_offers_and_revive_brings_them_back() -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let agent = cluster
        .add_agent(AgentSpec::new("host-a", "cpus:2;mem:1024"))
        .await?;
    let agent_id = agent.agent_id().to_string();
    let mut framework = cluster.start_framework("quiet", &[]).await?;
    let offer = framework
        .expect_event(|event| offers_for_agent(event, &agent_id), DEFAULT_TIMEOUT)
        .await?;

    framework.driver.suppress().await?;
    // Declining without a filter would normally bring the resources straight back.
    framework
        .driver
        .decline(vec![OfferId::new(offer.id.clone())], Some(0.0))
        .await?;
    framework
        .expect_no_event(
            "offer while suppressed",
            |event| matches!(event, DriverEvent::Offers(_)),
            Duration::from_millis(800),
        )
        .await?;
    let state = cluster.state().await?;
    assert!(
        state.frameworks.iter().any(|entry| entry.suppressed),
        "GetState shows the framework suppressed: {:?}",
        state.frameworks
    );

    framework.driver.revive().await?;
    framework
        .expect_event(|event| offers_for_agent(event, &agent_id), DEFAULT_TIMEOUT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn two_frameworks_never_get_the_same_resources() -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    // Both frameworks wait before any resources exist, so the allocator must share.
    let mut first = cluster.start_framework("first", &[]).await?;
    let mut second = cluster.start_framework("second", &[]).await?;
    let agent_a = cluster
        .add_agent(AgentSpec::new(
            "host-a",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;
    let agent_b = cluster
        .add_agent(AgentSpec::new(
            "host-b",
            "cpus:2;mem:1024;ports:[31000-31010]",
        ))
        .await?;

    // Fair sharing gives each framework one agent's offer.
    let first_offer = first.expect_offers(DEFAULT_TIMEOUT).await?.remove(0);
    let second_offer = second.expect_offers(DEFAULT_TIMEOUT).await?.remove(0);
    assert_ne!(
        first_offer.agent_id, second_offer.agent_id,
        "both frameworks were offered the same agent"
    );
    assert!(
        [
            agent_a.agent_id().to_string(),
            agent_b.agent_id().to_string()
        ]
        .contains(&first_offer.agent_id)
    );

    // The first framework uses part of its offer and returns the rest at once.
    let task = TaskBuilder::new("part")
        .cpus(1.5)
        .mem(512.0)
        .ports(2)
        .shell("sleep 1000")
        .build(&first_offer)?;
    let task_resources = Resources::from_proto(&task.resources)?;
    first
        .driver
        .accept(
            vec![OfferId::new(first_offer.id.clone())],
            vec![task],
            v1::Filters {
                refuse_seconds: Some(0.0),
            },
        )
        .await?;

    // Whoever is offered the remainder, it must not include the task's resources.
    let agent_total = Resources::parse("cpus:2;mem:1024;ports:[31000-31010]")?;
    let remainder_bound = agent_total
        .checked_sub(&task_resources)
        .expect("task fits the agent");
    eventually("offers never overlap", DEFAULT_TIMEOUT, || async {
        let state = cluster.state().await?;
        let mut offered_on_first_agent = Resources::new();
        for offer in &state.offers {
            let resources = Resources::from_proto(&offer.resources)?;
            if offer.agent_id == first_offer.agent_id {
                offered_on_first_agent.add(&resources);
            }
        }
        assert!(
            remainder_bound.contains(&offered_on_first_agent),
            "offers on {} hold {offered_on_first_agent} beyond what the task left ({remainder_bound})",
            first_offer.agent_id
        );
        Ok((!offered_on_first_agent.is_empty()).then_some(()))
    })
    .await?;

    // And on the frameworks' side: every offer either saw for that agent is within bounds.
    for framework in [&mut first, &mut second] {
        while let Ok(offer) = framework
            .expect_event(
                |event| offers_for_agent(event, &first_offer.agent_id),
                Duration::from_millis(50),
            )
            .await
        {
            let resources = Resources::from_proto(&offer.resources)?;
            assert!(
                remainder_bound.contains(&resources),
                "offer {} holds {resources}, overlapping the running task",
                offer.id
            );
        }
    }
    Ok(())
}
