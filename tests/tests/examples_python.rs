//! The Python example framework (`frameworks/examples/python/everywhere.py`, grpcio on the
//! .proto): its unit tests (`test_everywhere.py`), and the script against a real master and two
//! in-process agents with the process runtime: one copy runs on the agent whose labels match;
//! on SIGTERM it tears down and the copy is killed.
//!
//! Needs `python3` with the packages of `frameworks/examples/python/requirements.txt`
//! (`AGORA_PYTHON` names another interpreter, e.g. a virtualenv's). Without them the test
//! skips, unless `CI=true` or `AGORA_REQUIRE_PYTHON=1`: then it fails.

mod newcomer_support;

use std::path::PathBuf;
use std::process::Command;

use agora_tests::TestCluster;
use anyhow::Context;
use newcomer_support::{
    ChildProcess, check_one_copy_on_zone_a, repo_root, start_process_agent, wait_agents,
};

fn python_required() -> bool {
    let set = |name: &str, values: &[&str]| {
        std::env::var(name).is_ok_and(|value| values.contains(&value.as_str()))
    };
    set("CI", &["true", "1"]) || set("AGORA_REQUIRE_PYTHON", &["1"])
}

/// The interpreter to use, or `None` (after saying why) when it lacks grpcio and the test may
/// skip.
fn python_or_skip(test: &str) -> anyhow::Result<Option<PathBuf>> {
    let python = PathBuf::from(std::env::var("AGORA_PYTHON").unwrap_or_else(|_| "python3".into()));
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    let missing = match probe {
        Ok(output) if output.status.success() => return Ok(Some(python)),
        Ok(output) => String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("the import failed")
            .to_owned(),
        Err(error) => format!("{} cannot run: {error}", python.display()),
    };
    let hint = "pip install -r frameworks/examples/python/requirements.txt";
    if python_required() {
        anyhow::bail!(
            "{test}: Python with grpcio is required (CI) but missing: {missing} ({hint})"
        );
    }
    println!("skipping {test}: Python with grpcio is missing: {missing} ({hint})");
    Ok(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_everywhere_keeps_one_copy_on_each_matching_agent() -> anyhow::Result<()> {
    let Some(python) = python_or_skip("python_everywhere")? else {
        return Ok(());
    };
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

    let script = repo_root().join("frameworks/examples/python/everywhere.py");
    let mut command = Command::new(python);
    command
        .arg("-u")
        .arg(&script)
        .args(["--master", &master_url])
        .args(["--name", "everywhere-python"])
        .args(["--cmd", "sleep 300"])
        .args(["--label", "zone=a"])
        .args(["--mem", "16"])
        .arg("--teardown-on-exit");
    let mut framework = ChildProcess::start(
        "everywhere.py",
        command,
        work.path().join("everywhere-py.log"),
    )?;
    check_one_copy_on_zone_a(&master_url, "everywhere-python", &mut framework).await?;

    agent_a.shutdown().await?;
    agent_b.shutdown().await?;
    Ok(())
}

#[test]
fn python_everywhere_unit_tests_pass() -> anyhow::Result<()> {
    let Some(python) = python_or_skip("python_everywhere_unit_tests")? else {
        return Ok(());
    };
    let output = Command::new(python)
        .current_dir(repo_root().join("frameworks/examples/python"))
        .args(["-m", "unittest", "-v", "test_everywhere"])
        .output()
        .context("running python -m unittest")?;
    anyhow::ensure!(
        output.status.success(),
        "test_everywhere.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
