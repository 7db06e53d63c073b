//! The `batchframework` CLI against a running daemon: submit with --wait (exit status follows
//! the run), list, status, runs and cancel, as tables and as JSON.

mod batch_support;

use std::process::Output;
use std::time::Duration;

use agora_agent::RuntimeKind;
use batch_support::{BatchCluster, batch_binary};

async fn cli(url: &str, args: &[&str]) -> anyhow::Result<Output> {
    let binary = batch_binary()?;
    let mut command = tokio::process::Command::new(binary);
    command.args(args).env("AGORA_BATCH_URL", url);
    Ok(tokio::time::timeout(Duration::from_secs(60), command.output()).await??)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn submit_wait_list_status_runs_and_cancel() -> anyhow::Result<()> {
    let cluster = BatchCluster::start(
        1,
        RuntimeKind::Process,
        "cpus:4;mem:4096;disk:1024;ports:[31000-31010]",
    )
    .await?;
    let url = format!("http://{}", cluster.api());
    let good = cluster.scratch_file("good.json");
    std::fs::write(
        &good,
        r#"{"id":"cli-ok","run":{"cmd":"true","cpus":0.1,"mem":16},"completions":2,"parallelism":2}"#,
    )?;
    let output = cli(
        &url,
        &["submit", good.to_str().unwrap_or_default(), "--wait"],
    )
    .await?;
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("SUCCEEDED"), "{}", text(&output));

    let bad = cluster.scratch_file("bad.json");
    std::fs::write(
        &bad,
        r#"{"id":"cli-bad","run":{"cmd":"exit 4","cpus":0.1,"mem":16}}"#,
    )?;
    let output = cli(
        &url,
        &["submit", bad.to_str().unwrap_or_default(), "--wait"],
    )
    .await?;
    assert!(!output.status.success(), "a failed run exits non-zero");
    assert!(
        text(&output).contains("exited with code 4"),
        "{}",
        text(&output)
    );

    let invalid = cluster.scratch_file("invalid.json");
    std::fs::write(
        &invalid,
        r#"{"id":"x","run":{"cmd":"true"},"parallelism":0}"#,
    )?;
    let output = cli(&url, &["submit", invalid.to_str().unwrap_or_default()]).await?;
    assert!(!output.status.success());
    assert!(text(&output).contains("/parallelism"), "{}", text(&output));

    let output = cli(&url, &["list"]).await?;
    assert!(output.status.success());
    let listing = text(&output);
    assert!(
        listing.contains("cli-ok") && listing.contains("SUCCEEDED"),
        "{listing}"
    );
    assert!(
        listing.contains("cli-bad") && listing.contains("FAILED"),
        "{listing}"
    );

    let output = cli(&url, &["-o", "json", "status", "cli-ok"]).await?;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(status["latestRun"]["phase"], "SUCCEEDED");

    let output = cli(&url, &["runs", "cli-bad"]).await?;
    assert!(text(&output).contains("FAILED"), "{}", text(&output));

    let slow = cluster.scratch_file("slow.json");
    std::fs::write(
        &slow,
        r#"{"id":"cli-slow","run":{"cmd":"sleep 60","cpus":0.1,"mem":16}}"#,
    )?;
    let output = cli(&url, &["submit", slow.to_str().unwrap_or_default()]).await?;
    assert!(output.status.success(), "{}", text(&output));
    let output = cli(&url, &["cancel", "cli-slow"]).await?;
    assert!(output.status.success(), "{}", text(&output));
    let runs = cluster.get("/v1/jobs/cli-slow/runs").await?;
    assert_eq!(runs[0]["phase"], "CANCELLED", "{runs:#}");
    cluster.stop().await
}
