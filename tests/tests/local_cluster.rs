//! The newcomer's path as CI walks it: the README's one-command local cluster starts master,
//! agent and both frameworks, deploys the sample app through svcframework, reaches a state
//! where the app answers over HTTP, and stops cleanly (no task left behind).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agora_tests::docker_image::docker_or_skip;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(39999)
}

/// Runs `deploy/local-cluster.sh` until the sample app answers, then lets it stop; returns
/// its output and the sample app's port.
async fn run_local_cluster(runtime: &str) -> anyhow::Result<(String, u16)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no workspace root"))?
        .to_path_buf();
    let state = tempfile::tempdir()?;
    let task_port = free_port();
    let mut command = Command::new("bash");
    command
        .arg(root.join("deploy/local-cluster.sh"))
        .env("AGORA_LOCAL_DIR", state.path())
        .env("AGORA_LOCAL_EXIT_WHEN_READY", "1")
        .env("AGORA_LOCAL_RUNTIME", runtime)
        .env("AGORA_LOCAL_MASTER_PORT", free_port().to_string())
        .env("AGORA_LOCAL_AGENT_PORT", free_port().to_string())
        .env("AGORA_LOCAL_SVC_PORT", free_port().to_string())
        .env("AGORA_LOCAL_BATCH_PORT", free_port().to_string())
        .env("AGORA_LOCAL_TASK_PORTS", format!("{task_port}-{task_port}"));
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(output.status.success(), "local cluster failed:\n{text}");
    Ok((text, task_port))
}

async fn answers(port: u16) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build();
    match client {
        Ok(client) => client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// Ids of the sample app's containers, any state.
async fn hello_containers(docker: &bollard::Docker) -> anyhow::Result<Vec<String>> {
    let containers = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(
                [(
                    "label".to_owned(),
                    vec!["svcframework.app-id=/hello".to_owned()],
                )]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        }))
        .await?;
    Ok(containers
        .into_iter()
        .filter_map(|container| container.id)
        .collect())
}

fn assert_walked_the_path(text: &str, runtime: &str, port: u16) {
    assert!(
        text.contains(&format!("Agora is running ({runtime} runtime)")),
        "{text}"
    );
    assert!(
        text.contains(&format!("sample app       http://127.0.0.1:{port}/")),
        "the sample app answered on its port before the summary was printed:\n{text}"
    );
    assert!(
        text.contains("deployment") && text.contains("succeeded"),
        "{text}"
    );
    assert!(text.contains("stopped; state kept in"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_serves_the_sample_app_with_docker_and_stops_cleanly()
-> anyhow::Result<()> {
    let Some(docker) = docker_or_skip("local cluster (docker)").await else {
        return Ok(());
    };
    let before = hello_containers(&docker).await?;
    let (text, port) = run_local_cluster("docker").await?;
    assert_walked_the_path(&text, "docker", port);
    assert!(
        !answers(port).await,
        "the sample app stopped with the cluster"
    );
    let left: Vec<String> = hello_containers(&docker)
        .await?
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert!(left.is_empty(), "containers left behind: {left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_serves_the_sample_app_with_the_process_runtime() -> anyhow::Result<()> {
    let (text, port) = run_local_cluster("process").await?;
    assert_walked_the_path(&text, "process", port);
    assert!(
        !answers(port).await,
        "the sample app stopped with the cluster"
    );
    Ok(())
}
