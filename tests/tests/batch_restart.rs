//! batchframework stopped in the middle of runs and started again on the same work dir: the
//! runs resume and complete once, no attempt is launched twice, no cron time fires twice —
//! in-process, and with the real binary killed by SIGKILL.

mod batch_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_agent::RuntimeKind;
use agora_tests::eventually;
use anyhow::Context;
use batch_support::{BatchCluster, batch_binary, request};
use serde_json::{Value, json};

const RESOURCES: &str = "cpus:4;mem:4096;disk:1024;ports:[31000-31010]";

fn job_with_log(id: &str, log: &Path) -> Value {
    json!({
        "id": id,
        "run": {"cmd": "echo s >> \"$LOG\"; sleep 1; echo e >> \"$LOG\"", "cpus": 0.1, "mem": 16,
                "env": {"LOG": log.display().to_string()}},
        "completions": 4,
        "parallelism": 2
    })
}

fn scheduled_times(runs: &Value) -> Vec<String> {
    runs.as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| run["scheduledFor"].as_str().map(str::to_owned))
        .collect()
}

fn assert_once(run: &Value, log: &Path) {
    assert_eq!(run["phase"], "SUCCEEDED", "{run:#}");
    assert_eq!(run["succeeded"], 4, "{run:#}");
    let attempts = run["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 4, "no attempt launched twice: {run:#}");
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(
        text.lines().filter(|line| *line == "s").count(),
        4,
        "each attempt ran exactly once: {text}"
    );
}

#[tokio::test]
async fn a_restarted_daemon_completes_its_runs_once() -> anyhow::Result<()> {
    let mut cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    let log = cluster.scratch_file("restart.log");
    let created = cluster.submit(&job_with_log("resume", &log)).await?;
    let run_id = created["run"].as_u64().expect("a run");
    cluster
        .submit(
            &json!({"id": "every-second", "run": {"cmd": "true", "cpus": 0.1, "mem": 16},
                        "schedule": {"cron": "* * * * * *", "concurrencyPolicy": "ALLOW"}}),
        )
        .await?;
    cluster
        .wait_run("resume", run_id, Duration::from_secs(10), |run| {
            run["attempts"]
                .as_array()
                .is_some_and(|attempts| attempts.iter().any(|a| a["state"] == "RUNNING"))
        })
        .await?;
    let before = cluster.get("/v1/jobs/every-second/runs").await?;

    // Away for longer than one attempt and several schedule times.
    cluster.restart_batch(Duration::from_millis(2500)).await?;

    let run = cluster
        .wait_finished("resume", run_id, Duration::from_secs(30))
        .await?;
    assert_once(&run, &log);
    let runs = cluster.get("/v1/jobs/resume/runs").await?;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs:#}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = cluster.get("/v1/jobs/every-second/runs").await?;
    let times = scheduled_times(&after);
    let mut unique = times.clone();
    unique.sort();
    unique.dedup();
    let mut times = times;
    times.sort();
    assert_eq!(times, unique, "a schedule time fired twice: {times:?}");
    assert!(
        times.len() > scheduled_times(&before).len(),
        "the schedule goes on after the restart"
    );
    cluster.stop().await
}

struct Daemon(Child);

impl Daemon {
    fn start(master: &str, listen: &str, work_dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(batch_binary()?)
            .arg("serve")
            .env("AGORA_MASTER", master)
            .env("AGORA_BATCH_LISTEN", listen)
            .env("AGORA_BATCH_WORK_DIR", work_dir)
            .env("AGORA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("spawning batchframework")?;
        Ok(Self(child))
    }

    fn kill_9(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_killed_with_sigkill_resumes_its_runs_once() -> anyhow::Result<()> {
    let mut cluster = BatchCluster::start(1, RuntimeKind::Process, RESOURCES).await?;
    // Only the binary's daemon here.
    if let Some(batch) = cluster.batch.take() {
        batch.shutdown().await?;
    }
    let work_dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let address: std::net::SocketAddr = listen.parse()?;
    let daemon_log = cluster.scratch_file("daemon.log");
    let log = cluster.scratch_file("sigkill.log");
    let mut daemon = Daemon::start(
        &cluster.cluster.master_url(),
        &listen,
        work_dir.path(),
        &daemon_log,
    )?;
    eventually("daemon answers", Duration::from_secs(20), || async {
        Ok(request(address, "GET", "/ping", None)
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    let (status, created) = request(
        address,
        "POST",
        "/v1/jobs",
        Some(&job_with_log("killed", &log)),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let run_id = created["run"].as_u64().expect("a run");
    let path = format!("/v1/jobs/killed/runs/{run_id}");
    eventually("an attempt runs", Duration::from_secs(10), || async {
        let (_, run) = request(address, "GET", &path, None).await?;
        Ok(run["attempts"]
            .as_array()
            .is_some_and(|attempts| attempts.iter().any(|a| a["state"] == "RUNNING"))
            .then_some(()))
    })
    .await?;
    daemon.kill_9()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _daemon = Daemon::start(
        &cluster.cluster.master_url(),
        &listen,
        work_dir.path(),
        &daemon_log,
    )?;
    let run = eventually("the run finishes", Duration::from_secs(40), || async {
        let (status, run) = request(address, "GET", &path, None).await?;
        Ok((status == 200 && run["phase"] != "ACTIVE" && run["phase"] != "WAITING").then_some(run))
    })
    .await
    .with_context(|| std::fs::read_to_string(&daemon_log).unwrap_or_default())?;
    assert_once(&run, &log);
    cluster.stop().await
}
