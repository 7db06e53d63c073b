//! batchframework with the Docker runtime: a parallel job of containers from the locally built
//! busybox image completes with parallelism respected. Fails (not skips) without an engine
//! when AGORA_REQUIRE_DOCKER=1.

mod batch_support;

use std::time::Duration;

use agora_agent::RuntimeKind;
use agora_tests::docker_image::{docker_or_skip, ensure_test_image};
use batch_support::{BatchCluster, max_overlap};
use serde_json::json;

#[tokio::test]
async fn a_parallel_job_of_containers_completes_within_its_parallelism() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("batch_docker_parallel").await else {
        return Ok(());
    };
    let image = ensure_test_image(&docker).await?;
    let cluster = BatchCluster::start(
        1,
        RuntimeKind::Docker,
        "cpus:4;mem:4096;disk:1024;ports:[31000-31010]",
    )
    .await?;
    let created = cluster
        .submit(&json!({
            "id": "containers",
            "run": {"cmd": "echo attempt $AGORA_ATTEMPT; sleep 0.5", "image": image, "cpus": 0.2, "mem": 32},
            "completions": 4,
            "parallelism": 2,
            "retries": 1
        }))
        .await?;
    let run_id = created["run"].as_u64().expect("a run");
    let run = cluster
        .wait_finished("containers", run_id, Duration::from_secs(60))
        .await?;
    assert_eq!(run["phase"], "SUCCEEDED", "{run:#}");
    assert_eq!(run["succeeded"], 4);
    assert_eq!(run["failures"], 0, "{run:#}");
    assert!(max_overlap(&run) <= 2, "{run:#}");
    for attempt in run["attempts"].as_array().into_iter().flatten() {
        assert_eq!(attempt["exitCode"], 0, "{attempt:#}");
    }
    cluster.stop().await
}
