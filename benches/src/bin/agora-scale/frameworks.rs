//! The svcframework and batchframework benches: the same master process and simulated fleet
//! as `deploy`, with the framework daemon (in-process library) in its own child process so its
//! memory is measured alone, driven through its REST API.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agora_benches::daemons::{
    DaemonClient, SvcDeploySpec, batch_job, batch_outcome, post_apps, svc_instances,
};
use agora_benches::limits::peak_rss_mib;
use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{
    BatchArgs, ClusterArgs, SvcArgs, capacity_per_agent, machine, start_cluster, write_json,
};

/// The line a daemon child prints once it serves.
#[derive(serde::Serialize, serde::Deserialize)]
struct Serving {
    url: String,
}

async fn wait_for_stop() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            tokio::signal::ctrl_c().await.ok();
        }
    }
}

fn print_serving(url: String) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&Serving { url })?)?;
    stdout.flush()?;
    Ok(())
}

/// Child process: svcframework on `master`, REST API on a free local port.
pub(super) async fn run_svc(master: String, work_dir: PathBuf) -> anyhow::Result<()> {
    let settings = agora_svc::SvcSettings::new(master, "127.0.0.1:0".parse()?, work_dir);
    let svc = agora_svc::spawn(settings)
        .await
        .context("starting svcframework")?;
    print_serving(svc.url())?;
    wait_for_stop().await;
    svc.shutdown().await.context("stopping svcframework")?;
    Ok(())
}

/// Child process: batchframework on `master`, REST API on a free local port.
pub(super) async fn run_batch(master: String, work_dir: PathBuf) -> anyhow::Result<()> {
    let settings = agora_batch::BatchSettings::new(master, "127.0.0.1:0".parse()?, work_dir);
    let batch = agora_batch::spawn(settings)
        .await
        .context("starting batchframework")?;
    print_serving(batch.url())?;
    wait_for_stop().await;
    batch.shutdown().await.context("stopping batchframework")?;
    Ok(())
}

struct DaemonProcess {
    child: Child,
    url: String,
    _work_dir: tempfile::TempDir,
}

impl DaemonProcess {
    async fn start(mode: &str, master_url: &str) -> anyhow::Result<DaemonProcess> {
        let work_dir = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(mode)
            .arg("--master")
            .arg(master_url)
            .arg("--work-dir")
            .arg(work_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {mode} process"))?;
        let stdout = child.stdout.take().context("the daemon has no stdout")?;
        let line = tokio::time::timeout(Duration::from_secs(60), async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await
        .context("the daemon did not start within 60 s")??
        .context("the daemon ended before serving")?;
        let serving: Serving = serde_json::from_str(&line)
            .with_context(|| format!("daemon output is not its URL: {line}"))?;
        Ok(DaemonProcess {
            child,
            url: serving.url,
            _work_dir: work_dir,
        })
    }

    fn peak_rss_mib(&self) -> f64 {
        self.child
            .id()
            .and_then(|pid| peak_rss_mib(Some(pid)))
            .unwrap_or(0.0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

fn cluster_args(agents: usize, tasks: usize, cpus: (f64, f64), mem: (f64, f64)) -> ClusterArgs {
    ClusterArgs {
        agents,
        tasks,
        agent_cpus: cpus.0,
        agent_mem: mem.0,
        task_cpus: cpus.1,
        task_mem: mem.1,
        json: None,
    }
}

pub(super) async fn svc_deploy(args: SvcArgs) -> anyhow::Result<()> {
    let spec = SvcDeploySpec {
        apps: args.apps,
        instances_per_app: args.instances_per_app,
        cpus: args.task_cpus,
        mem: args.task_mem,
    };
    let total = spec.total();
    let cluster_args = cluster_args(
        args.agents,
        total,
        (args.agent_cpus, args.task_cpus),
        (args.agent_mem, args.task_mem),
    );
    let capacity = capacity_per_agent(&cluster_args);
    if capacity * args.agents < total {
        bail!(
            "{total} instances do not fit on {} agents of {capacity} each",
            args.agents
        );
    }
    let cluster = start_cluster(&cluster_args).await?;
    let daemon = DaemonProcess::start("svc-daemon", &cluster.master.url()).await?;
    let client = DaemonClient::new(daemon.url.clone())?;
    let timeout = Duration::from_secs(args.timeout);
    // Wait until the framework is subscribed (it answers /v2/info with a framework id).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = client.get("/v2/info").await.ok();
        let id = info
            .as_ref()
            .and_then(|info| info.get("frameworkId"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        if !id.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("svcframework did not subscribe within 60 s: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "svcframework at {}; posting {} apps x {}",
        daemon.url, spec.apps, spec.instances_per_app
    );
    let started = Instant::now();
    let posted_at = post_apps(&client, &spec).await?;
    let posted_seconds = started.elapsed().as_secs_f64();
    let goal = total as f64;
    let mut placed_seconds = None;
    let mut last_report = Instant::now();
    let deadline = started + timeout;
    loop {
        let text = client.get_text("/metrics").await.unwrap_or_default();
        let launched =
            agora_benches::daemons::metric_value(&text, "agora_svc_instances_launched_total");
        let running = agora_benches::daemons::metric_value(&text, "agora_svc_instances_running");
        if placed_seconds.is_none() && launched >= goal {
            placed_seconds = Some(started.elapsed().as_secs_f64());
        }
        if running >= goal {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:.0} s: {launched} launched, {running} running",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("not all RUNNING within {timeout:?}: {launched} launched, {running} running");
        }
        // Not faster: svcframework's /metrics plans every app, which is not free at 100,000.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_running_seconds = started.elapsed().as_secs_f64();
    let placed_seconds = placed_seconds.unwrap_or(all_running_seconds);
    let framework_rss = daemon.peak_rss_mib();
    let master_rss = cluster.master.peak_rss_mib();
    let instances = svc_instances(&client, &spec, posted_at).await?;
    let most_on_one_agent = instances.per_agent.values().copied().max().unwrap_or(0);
    let placements_per_second = goal / placed_seconds;
    println!();
    println!(
        "svcframework deploy of {} apps x {} instances across {} sim agents ({})",
        spec.apps,
        spec.instances_per_app,
        args.agents,
        machine()
    );
    println!(
        "  agents registered in          {:>10.2} s",
        cluster.registration_seconds
    );
    println!("  apps posted in                {:>10.2} s", posted_seconds);
    println!(
        "  placements/s                  {:>10.0}   (goal >= 20000)",
        placements_per_second
    );
    println!("  all placed after              {:>10.2} s", placed_seconds);
    println!(
        "  all RUNNING after             {:>10.2} s",
        all_running_seconds
    );
    println!(
        "  post->RUNNING p50 / p99       {:>10.0} / {:.0} ms",
        instances.deploy_to_running.p50_ms, instances.deploy_to_running.p99_ms
    );
    println!("  master peak RSS               {:>10.0} MiB", master_rss);
    println!(
        "  svcframework peak RSS         {:>10.0} MiB",
        framework_rss
    );
    println!(
        "  most instances on one agent   {:>10}   (capacity {capacity})",
        most_on_one_agent
    );
    let value = serde_json::json!({
        "bench": "svc-deploy",
        "machine": machine(),
        "agents": args.agents,
        "apps": spec.apps,
        "instances_per_app": spec.instances_per_app,
        "registration_seconds": cluster.registration_seconds,
        "posted_seconds": posted_seconds,
        "placements_per_second": placements_per_second,
        "placement_seconds": placed_seconds,
        "all_running_seconds": all_running_seconds,
        "deploy_to_running": instances.deploy_to_running,
        "master_peak_rss_mib": master_rss,
        "framework_peak_rss_mib": framework_rss,
        "instances_running": instances.running,
        "instances_total": instances.total,
    });
    write_json(args.json.as_deref(), &value)?;
    daemon.stop().await;
    cluster.fleet.shutdown().await;
    cluster.master.stop().await?;
    if most_on_one_agent > capacity
        || instances.running != total
        || instances.total != total
        || instances.distinct_ids != total
    {
        bail!(
            "over-commit or wrong counts: {most_on_one_agent} on one agent (capacity {capacity}), {} of {} running, {total} wanted",
            instances.running,
            instances.total
        );
    }
    Ok(())
}

pub(super) async fn batch(args: BatchArgs) -> anyhow::Result<()> {
    let cluster_args = cluster_args(
        args.agents,
        args.tasks,
        (args.agent_cpus, args.task_cpus),
        (args.agent_mem, args.task_mem),
    );
    let capacity = capacity_per_agent(&cluster_args);
    let parallelism = if args.parallelism == 0 {
        (capacity * args.agents)
            .min(args.tasks)
            .min(agora_batch::job::MAX_PARALLELISM as usize)
    } else {
        args.parallelism
    };
    let cluster = start_cluster(&cluster_args).await?;
    let daemon = DaemonProcess::start("batch-daemon", &cluster.master.url()).await?;
    let client = DaemonClient::new(daemon.url.clone())?;
    client
        .wait_metric("agora_batch_subscribed", Duration::from_secs(60), |value| {
            value >= 1.0
        })
        .await?;
    eprintln!(
        "batchframework at {}; submitting {} tasks of {} s, parallelism {parallelism}",
        daemon.url, args.tasks, args.duration
    );
    let job = batch_job(
        "bench",
        args.tasks,
        parallelism,
        args.duration,
        args.task_cpus,
        args.task_mem,
    );
    let started = Instant::now();
    let created = client.post("/v1/jobs", &job).await?;
    let run_id = created
        .get("run")
        .and_then(serde_json::Value::as_u64)
        .context("the job's creation named no run")?;
    let timeout = Duration::from_secs(args.timeout);
    let deadline = started + timeout;
    let mut last_report = Instant::now();
    loop {
        let text = client.get_text("/metrics").await.unwrap_or_default();
        let value = |series: &str| agora_benches::daemons::metric_value(&text, series);
        let done = value("agora_batch_runs{phase=\"SUCCEEDED\"}")
            + value("agora_batch_runs{phase=\"FAILED\"}")
            + value("agora_batch_runs{phase=\"CANCELLED\"}");
        if done >= 1.0 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:.0} s: {} attempts active",
                started.elapsed().as_secs_f64(),
                value("agora_batch_attempts_active")
            );
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("the run did not finish within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished_seconds = started.elapsed().as_secs_f64();
    let framework_rss = daemon.peak_rss_mib();
    let master_rss = cluster.master.peak_rss_mib();
    let outcome = batch_outcome(&client, "bench", run_id).await?;
    let tasks_per_second = args.tasks as f64 / finished_seconds;
    // With `parallelism` slots and tasks of `duration`, no scheduler finishes faster than this.
    let waves = (args.tasks as f64 / parallelism as f64).ceil();
    let ideal = args.tasks as f64 / (waves * args.duration);
    println!();
    println!(
        "batchframework: {} tasks of {} s on {} sim agents, parallelism {parallelism} ({})",
        args.tasks,
        args.duration,
        args.agents,
        machine()
    );
    println!(
        "  agents registered in          {:>10.2} s",
        cluster.registration_seconds
    );
    println!(
        "  submit -> run finished        {:>10.2} s",
        finished_seconds
    );
    println!(
        "  tasks/s                       {:>10.0}   (ideal {ideal:.0})",
        tasks_per_second
    );
    println!("  run phase                     {:>10}", outcome.phase);
    println!(
        "  succeeded / attempts          {:>10} / {}",
        outcome.succeeded, outcome.attempts
    );
    println!("  master peak RSS               {:>10.0} MiB", master_rss);
    println!(
        "  batchframework peak RSS       {:>10.0} MiB",
        framework_rss
    );
    println!(
        "  most at once on one agent     {:>10}   (capacity {capacity})",
        outcome.most_at_once_on_one_agent
    );
    let value = serde_json::json!({
        "bench": "batch",
        "machine": machine(),
        "agents": args.agents,
        "tasks": args.tasks,
        "parallelism": parallelism,
        "duration_seconds": args.duration,
        "registration_seconds": cluster.registration_seconds,
        "finished_seconds": finished_seconds,
        "tasks_per_second": tasks_per_second,
        "ideal_tasks_per_second": ideal,
        "master_peak_rss_mib": master_rss,
        "framework_peak_rss_mib": framework_rss,
        "outcome": outcome,
    });
    write_json(args.json.as_deref(), &value)?;
    daemon.stop().await;
    cluster.fleet.shutdown().await;
    cluster.master.stop().await?;
    if outcome.phase != "SUCCEEDED"
        || outcome.succeeded != args.tasks as u64
        || outcome.attempts_succeeded != args.tasks
        || outcome.distinct_tasks != outcome.attempts
    {
        bail!("the run did not complete every task exactly once: {outcome:?}");
    }
    Ok(())
}
