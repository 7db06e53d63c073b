//! `/health`, `/metrics` and `/state` over HTTP on the master's port.

use agora_tests::{AgentSpec, TestCluster};

#[tokio::test]
async fn health_metrics_and_state_answer_over_http() -> anyhow::Result<()> {
    let cluster = TestCluster::start_default().await?;
    let agent = cluster
        .add_agent(AgentSpec::new("host-http", "cpus:2;mem:1024").label("disk", "ssd"))
        .await?;
    let framework = cluster.start_framework("http-check", &[]).await?;

    let health = cluster.http_get("/health").await?;
    assert_eq!(health.status, 200, "{health:?}");

    let metrics = cluster.http_get("/metrics").await?;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    assert!(
        metrics.body.contains("# TYPE agora_master_agents gauge"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("agora_master_agents{status=\"active\"} 1"),
        "{}",
        metrics.body
    );

    let state = cluster.http_get("/state").await?;
    assert_eq!(state.status, 200, "{state:?}");
    let json = state.json()?;
    let agents = json["agents"].as_array().expect("agents array");
    assert_eq!(agents.len(), 1, "{json}");
    assert_eq!(agents[0]["id"], agent.agent_id().as_str());
    assert_eq!(agents[0]["hostname"], "host-http");
    assert_eq!(agents[0]["status"], "active");
    assert_eq!(agents[0]["labels"]["disk"], "ssd");
    assert_eq!(agents[0]["resources"]["total"]["cpus"], 2.0);
    let frameworks = json["frameworks"].as_array().expect("frameworks array");
    assert!(
        frameworks
            .iter()
            .any(|entry| entry["id"] == framework.framework_id.as_str()
                && entry["name"] == "http-check"),
        "{json}"
    );

    let missing = cluster.http_get("/no-such-page").await?;
    assert_eq!(missing.status, 404, "{missing:?}");
    Ok(())
}
