//! The Rust tutorial framework (`frameworks/examples/everywhere`, bin `everywhere`) against a
//! real master and two in-process agents with the process runtime: one copy runs on the agent
//! whose labels match and none on the other; on SIGTERM it tears down and the copy is killed.

mod newcomer_support;

use std::process::Command;

use agora_tests::TestCluster;
use newcomer_support::{
    CLUSTER_PACKAGES, ChildProcess, build_binaries, check_one_copy_on_zone_a, start_process_agent,
    wait_agents,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everywhere_example_keeps_one_copy_on_each_matching_agent() -> anyhow::Result<()> {
    // The bin belongs to another package, so env!("CARGO_BIN_EXE_everywhere") is not
    // available here: build it (a no-op when up to date) before the cluster starts.
    let bin_dir = build_binaries(CLUSTER_PACKAGES)?;
    let cluster = TestCluster::start_default().await?;
    let master_url = cluster.master_url();
    let work = tempfile::tempdir()?;
    let agent_a = start_process_agent(
        &master_url,
        "agent-a",
        &[("zone", "a")],
        &work.path().join("a"),
    )
    .await?;
    let agent_b = start_process_agent(
        &master_url,
        "agent-b",
        &[("zone", "b")],
        &work.path().join("b"),
    )
    .await?;
    wait_agents(&master_url, 2).await?;

    let mut command = Command::new(bin_dir.join("everywhere"));
    command
        .args(["--master", &master_url])
        .args(["--name", "everywhere-rust"])
        .args(["--cmd", "sleep 300"])
        .args(["--label", "zone=a"])
        .args(["--mem", "16"])
        .arg("--teardown-on-exit")
        .env("RUST_LOG", "info");
    let mut framework =
        ChildProcess::start("everywhere", command, work.path().join("everywhere.log"))?;
    check_one_copy_on_zone_a(&master_url, "everywhere-rust", &mut framework).await?;

    agent_a.shutdown().await?;
    agent_b.shutdown().await?;
    Ok(())
}
