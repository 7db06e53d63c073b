//! End-to-end scale benches: a real master (in its own process), thousands of simulated agents
//! (in this process) and a plain SDK framework (in its own process), all over real gRPC.
//!
//! ```text
//! agora-scale deploy   --agents 5000 --tasks 100000   # placements/s, time to RUNNING, memory
//! agora-scale failover --agents 5000 --tasks 50000    # master restart: re-registration + reconcile
//! agora-scale docker   --containers 50                # Agora vs a plain bollard loop
//! agora-scale svc-deploy --agents 5000 --apps 100 --instances-per-app 1000   # svcframework
//! agora-scale batch    --agents 5000 --tasks 100000   # batchframework, 1 s tasks
//! ```
//!
//! `master`, `framework`, `svc-daemon` and `batch-daemon` are the child processes' entry points, not for direct use.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agora_benches::limits::{peak_rss_mib, raise_open_file_limit};
use agora_benches::packer::{DeployReport, Packer, PackerConfig, ReconcileReport};
use agora_benches::probe::{MasterCounts, master_counts, master_healthy};
use agora_benches::sim::{FleetSpec, SimFleet, sim_machine};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

#[path = "agora-scale/frameworks.rs"]
mod frameworks;

#[path = "../../../tests/src/docker_image.rs"]
#[allow(dead_code)]
mod docker_image;

#[derive(Parser)]
#[command(name = "agora-scale", about = "End-to-end scale benches of Agora")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Deploy many simulated tasks across many simulated agents with a packing framework.
    Deploy(ClusterArgs),
    /// Deploy, then restart the master and time re-registration and reconciliation.
    Failover(ClusterArgs),
    /// Launch containers through Agora and through a plain bollard loop, same engine.
    Docker(DockerArgs),
    /// Deploy many instances through svcframework (apps posted to its REST API).
    SvcDeploy(SvcArgs),
    /// Run many short tasks as one batchframework job.
    Batch(BatchArgs),
    /// (child process) run svcframework; prints its URL as a JSON line.
    SvcDaemon {
        #[arg(long)]
        master: String,
        #[arg(long)]
        work_dir: PathBuf,
    },
    /// (child process) run batchframework; prints its URL as a JSON line.
    BatchDaemon {
        #[arg(long)]
        master: String,
        #[arg(long)]
        work_dir: PathBuf,
    },
    /// (child process) run a master.
    Master {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        work_dir: PathBuf,
    },
    /// (child process) run the packing framework; prints JSON lines.
    Framework {
        #[arg(long)]
        master: String,
        #[arg(long)]
        tasks: usize,
        #[arg(long)]
        task_cpus: f64,
        #[arg(long)]
        task_mem: f64,
        /// After the deploy, wait for a master failover and reconcile.
        #[arg(long)]
        await_failover: bool,
    },
}

#[derive(Args, Clone)]
struct ClusterArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 5_000)]
    agents: usize,
    /// Tasks to deploy.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Cores per agent.
    #[arg(long, default_value_t = 2.0)]
    agent_cpus: f64,
    /// MiB per agent.
    #[arg(long, default_value_t = 4_096.0)]
    agent_mem: f64,
    /// Cores per task.
    #[arg(long, default_value_t = 0.1)]
    task_cpus: f64,
    /// MiB per task.
    #[arg(long, default_value_t = 32.0)]
    task_mem: f64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct SvcArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 5_000)]
    agents: usize,
    /// Apps posted.
    #[arg(long, default_value_t = 100)]
    apps: usize,
    /// Instances of each app.
    #[arg(long, default_value_t = 1_000)]
    instances_per_app: usize,
    /// Cores per agent.
    #[arg(long, default_value_t = 2.0)]
    agent_cpus: f64,
    /// MiB per agent.
    #[arg(long, default_value_t = 4_096.0)]
    agent_mem: f64,
    /// Cores per instance.
    #[arg(long, default_value_t = 0.1)]
    task_cpus: f64,
    /// MiB per instance.
    #[arg(long, default_value_t = 32.0)]
    task_mem: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct BatchArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 5_000)]
    agents: usize,
    /// Completions of the job (tasks).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Attempts at once; 0 = as many as the fleet holds, within batchframework's limit on a
    /// job's parallelism (10,000).
    #[arg(long, default_value_t = 0)]
    parallelism: usize,
    /// How long each simulated task runs, seconds.
    #[arg(long, default_value_t = 1.0)]
    duration: f64,
    /// Cores per agent.
    #[arg(long, default_value_t = 2.0)]
    agent_cpus: f64,
    /// MiB per agent.
    #[arg(long, default_value_t = 4_096.0)]
    agent_mem: f64,
    /// Cores per task.
    #[arg(long, default_value_t = 0.1)]
    task_cpus: f64,
    /// MiB per task.
    #[arg(long, default_value_t = 32.0)]
    task_mem: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct DockerArgs {
    /// Containers launched by each side.
    #[arg(long, default_value_t = 50)]
    containers: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGORA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agora-scale: cannot start the runtime: {error}");
            return std::process::ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Mode::Deploy(args) => deploy(args).await,
            Mode::Failover(args) => failover(args).await,
            Mode::Docker(args) => docker(args).await,
            Mode::SvcDeploy(args) => frameworks::svc_deploy(args).await,
            Mode::Batch(args) => frameworks::batch(args).await,
            Mode::SvcDaemon { master, work_dir } => frameworks::run_svc(master, work_dir).await,
            Mode::BatchDaemon { master, work_dir } => frameworks::run_batch(master, work_dir).await,
            Mode::Master { listen, work_dir } => run_master(listen, work_dir).await,
            Mode::Framework {
                master,
                tasks,
                task_cpus,
                task_mem,
                await_failover,
            } => run_framework(master, tasks, task_cpus, task_mem, await_failover).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agora-scale: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ----- child processes -------------------------------------------------------------------

async fn run_master(listen: SocketAddr, work_dir: PathBuf) -> anyhow::Result<()> {
    raise_open_file_limit().context("raising the open file limit")?;
    let settings = agora_master::MasterSettings::new(listen, work_dir);
    let master = agora_master::spawn(settings)
        .await
        .context("starting the master")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    master.shutdown().await.context("stopping the master")?;
    Ok(())
}

/// One line of the framework child's output.
#[derive(serde::Serialize, serde::Deserialize)]
enum FrameworkLine {
    Deployed {
        report: DeployReport,
        peak_rss_mib: f64,
    },
    Reconciled {
        report: ReconcileReport,
    },
    Failed {
        error: String,
    },
}

fn print_line(line: &FrameworkLine) -> anyhow::Result<()> {
    let text = serde_json::to_string(line)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

async fn run_framework(
    master: String,
    tasks: usize,
    task_cpus: f64,
    task_mem: f64,
    await_failover: bool,
) -> anyhow::Result<()> {
    let mut config = PackerConfig::new(master, tasks);
    config.cpus = task_cpus;
    config.mem = task_mem;
    let mut packer = Packer::start(config)?;
    match packer.deploy().await {
        Ok(report) => print_line(&FrameworkLine::Deployed {
            report,
            peak_rss_mib: peak_rss_mib(None).unwrap_or(0.0),
        })?,
        Err(error) => {
            print_line(&FrameworkLine::Failed {
                error: error.to_string(),
            })?;
            return Err(error.into());
        }
    }
    if await_failover {
        match packer.reconcile_after_failover().await {
            Ok(report) => print_line(&FrameworkLine::Reconciled { report })?,
            Err(error) => {
                print_line(&FrameworkLine::Failed {
                    error: error.to_string(),
                })?;
                return Err(error.into());
            }
        }
    }
    // Stay subscribed until the orchestrator stops us.
    tokio::signal::ctrl_c().await.ok();
    packer.stop();
    Ok(())
}

// ----- orchestration -----------------------------------------------------------------------

struct MasterProcess {
    child: Child,
    address: SocketAddr,
}

impl MasterProcess {
    async fn start(address: SocketAddr, work_dir: &Path) -> anyhow::Result<MasterProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("master")
            .arg("--listen")
            .arg(address.to_string())
            .arg("--work-dir")
            .arg(work_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the master process")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !master_healthy(address).await {
            if let Some(status) = child.try_wait()? {
                bail!("the master process exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("the master did not answer /metrics within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(MasterProcess { child, address })
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn peak_rss_mib(&self) -> f64 {
        self.child
            .id()
            .and_then(|pid| peak_rss_mib(Some(pid)))
            .unwrap_or(0.0)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("the master did not stop within 30 s of SIGTERM")??;
        if !status.success() {
            bail!("the master stopped with {status}");
        }
        Ok(())
    }
}

struct FrameworkProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl FrameworkProcess {
    async fn start(
        master_url: &str,
        args: &ClusterArgs,
        await_failover: bool,
    ) -> anyhow::Result<FrameworkProcess> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("framework")
            .arg("--master")
            .arg(master_url)
            .arg("--tasks")
            .arg(args.tasks.to_string())
            .arg("--task-cpus")
            .arg(args.task_cpus.to_string())
            .arg("--task-mem")
            .arg(args.task_mem.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if await_failover {
            command.arg("--await-failover");
        }
        let mut child = command.spawn().context("starting the framework process")?;
        let stdout = child
            .stdout
            .take()
            .context("the framework process has no stdout")?;
        Ok(FrameworkProcess {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn next_line(&mut self) -> anyhow::Result<FrameworkLine> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("the framework process ended without a report")?;
        let parsed: FrameworkLine = serde_json::from_str(&line)
            .with_context(|| format!("framework output is not a report: {line}"))?;
        if let FrameworkLine::Failed { error } = &parsed {
            bail!("the framework failed: {error}");
        }
        Ok(parsed)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn free_local_address() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

async fn wait_for_counts(
    address: SocketAddr,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&MasterCounts) -> bool,
) -> anyhow::Result<MasterCounts> {
    let deadline = Instant::now() + timeout;
    let mut last = MasterCounts::default();
    loop {
        if let Ok(counts) = master_counts(address).await {
            if done(&counts) {
                return Ok(counts);
            }
            last = counts;
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached within {timeout:?}; last counts {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A started cluster: master process, simulated fleet.
struct Cluster {
    master: MasterProcess,
    fleet: SimFleet,
    work_dir: tempfile::TempDir,
    registration_seconds: f64,
}

async fn start_cluster(args: &ClusterArgs) -> anyhow::Result<Cluster> {
    let limit = raise_open_file_limit().context("raising the open file limit")?;
    if (limit as usize) < args.agents + 1_000 {
        bail!(
            "the open file limit is {limit}: too low for {} agents (ulimit -n)",
            args.agents
        );
    }
    let work_dir = tempfile::tempdir()?;
    let address = free_local_address()?;
    let master = MasterProcess::start(address, work_dir.path()).await?;
    eprintln!(
        "master up at {}; starting {} simulated agents",
        master.url(),
        args.agents
    );
    let started = Instant::now();
    let spec = FleetSpec::uniform(args.agents, sim_machine(args.agent_cpus, args.agent_mem));
    let fleet = SimFleet::start(&master.url(), &spec).await?;
    let agents = args.agents as u64;
    wait_for_counts(
        address,
        "agent registration",
        Duration::from_secs(300),
        |counts| counts.active_agents() >= agents,
    )
    .await?;
    let registration_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} agents registered in {registration_seconds:.2} s",
        args.agents
    );
    Ok(Cluster {
        master,
        fleet,
        work_dir,
        registration_seconds,
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".to_owned());
    format!("{cpus} cores, {model}")
}

/// Tasks an agent can hold at most (no over-commit check).
fn capacity_per_agent(args: &ClusterArgs) -> usize {
    let by_cpus = (args.agent_cpus * 1000.0).round() as usize
        / (args.task_cpus * 1000.0).round().max(1.0) as usize;
    let by_mem = (args.agent_mem * 1000.0).round() as usize
        / (args.task_mem * 1000.0).round().max(1.0) as usize;
    by_cpus.min(by_mem)
}

fn write_json(path: Option<&Path>, value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn deploy(args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = start_cluster(&args).await?;
    let mut framework = FrameworkProcess::start(&cluster.master.url(), &args, false).await?;
    let FrameworkLine::Deployed {
        report,
        peak_rss_mib: framework_rss,
    } = framework.next_line().await?
    else {
        bail!("expected the deploy report first");
    };
    let tasks = args.tasks as u64;
    let counts = wait_for_counts(
        cluster.master.address,
        "tasks RUNNING at the master",
        Duration::from_secs(60),
        |counts| counts.running_tasks() >= tasks,
    )
    .await?;
    let master_rss = cluster.master.peak_rss_mib();
    let most_on_one_agent = report
        .running_per_agent
        .values()
        .copied()
        .max()
        .unwrap_or(0);
    let capacity = capacity_per_agent(&args);
    println!();
    println!(
        "deploy of {} sim tasks across {} sim agents ({})",
        args.tasks,
        args.agents,
        machine()
    );
    println!(
        "  agents registered in          {:>10.2} s",
        cluster.registration_seconds
    );
    println!(
        "  placements/s                  {:>10.0}   (goal >= 20000)",
        report.placements_per_second
    );
    println!(
        "  all placed after              {:>10.2} s",
        report.placement_seconds
    );
    println!(
        "  all RUNNING after             {:>10.2} s",
        report.all_running_seconds
    );
    println!(
        "  deploy->RUNNING p50 / p99     {:>10.0} / {:.0} ms",
        report.deploy_to_running.p50_ms, report.deploy_to_running.p99_ms
    );
    println!("  master peak RSS               {:>10.0} MiB", master_rss);
    println!(
        "  framework peak RSS            {:>10.0} MiB",
        framework_rss
    );
    println!(
        "  agents / process peak RSS     {:>10.0} MiB",
        peak_rss_mib(None).unwrap_or(0.0)
    );
    println!(
        "  offers received / accepts     {:>10} / {}",
        report.offers_received, report.accept_calls
    );
    println!(
        "  most tasks on one agent       {:>10}   (capacity {capacity})",
        most_on_one_agent
    );
    let value = serde_json::json!({
        "bench": "deploy",
        "machine": machine(),
        "agents": args.agents,
        "tasks": args.tasks,
        "registration_seconds": cluster.registration_seconds,
        "placements_per_second": report.placements_per_second,
        "placement_seconds": report.placement_seconds,
        "all_running_seconds": report.all_running_seconds,
        "deploy_to_running": report.deploy_to_running,
        "master_peak_rss_mib": master_rss,
        "framework_peak_rss_mib": framework_rss,
        "master_running_tasks": counts.running_tasks(),
        "relaunched": report.relaunched,
    });
    write_json(args.json.as_deref(), &value)?;
    framework.stop().await;
    cluster.fleet.shutdown().await;
    cluster.master.stop().await?;
    drop(cluster.work_dir);
    if most_on_one_agent > capacity || report.running != args.tasks {
        bail!(
            "over-commit or missing tasks: {most_on_one_agent} on one agent (capacity {capacity}), {} running",
            report.running
        );
    }
    Ok(())
}

async fn failover(args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = start_cluster(&args).await?;
    let mut framework = FrameworkProcess::start(&cluster.master.url(), &args, true).await?;
    let FrameworkLine::Deployed { report, .. } = framework.next_line().await? else {
        bail!("expected the deploy report first");
    };
    eprintln!(
        "{} tasks RUNNING after {:.2} s; restarting the master",
        report.running, report.all_running_seconds
    );
    let address = cluster.master.address;
    let tasks = args.tasks as u64;
    wait_for_counts(
        address,
        "tasks RUNNING at the master",
        Duration::from_secs(60),
        |counts| counts.running_tasks() >= tasks,
    )
    .await?;
    let before_rss = cluster.master.peak_rss_mib();
    let stop_requested = agora_proto::now_seconds();
    let stop_started = Instant::now();
    cluster.master.stop().await?;
    let stop_seconds = stop_started.elapsed().as_secs_f64();
    let restart_started = Instant::now();
    let master = MasterProcess::start(address, cluster.work_dir.path()).await?;
    let master_up_seconds = restart_started.elapsed().as_secs_f64();
    let agents = args.agents as u64;
    let counts = wait_for_counts(
        address,
        "agents re-registered",
        Duration::from_secs(300),
        |counts| counts.active_agents() >= agents && counts.running_tasks() >= tasks,
    )
    .await?;
    let agents_back_unix = agora_proto::now_seconds();
    let FrameworkLine::Reconciled { report: reconciled } = framework.next_line().await? else {
        bail!("expected the reconciliation report");
    };
    let after_restart = |unix: f64| unix - stop_requested;
    let failover_seconds = after_restart(agents_back_unix.max(reconciled.reconciled_at_unix));
    println!();
    println!(
        "master failover with {} sim agents and {} tasks ({})",
        args.agents,
        args.tasks,
        machine()
    );
    println!(
        "  old master stopped in         {:>10.2} s (SIGTERM)",
        stop_seconds
    );
    println!(
        "  new master serving after      {:>10.2} s",
        master_up_seconds
    );
    println!(
        "  all agents re-registered at   {:>10.2} s after the stop",
        after_restart(agents_back_unix)
    );
    println!(
        "  framework re-subscribed at    {:>10.2} s",
        after_restart(reconciled.resubscribed_at_unix)
    );
    println!(
        "  reconcile answered at         {:>10.2} s ({} RUNNING, {} other, {} calls)",
        after_restart(reconciled.reconciled_at_unix),
        reconciled.running,
        reconciled.other,
        reconciled.reconcile_calls
    );
    println!(
        "  failover total                {:>10.2} s   (goal <= 5)",
        failover_seconds
    );
    println!(
        "  master peak RSS before/after  {:>10.0} / {:.0} MiB",
        before_rss,
        master.peak_rss_mib()
    );
    let value = serde_json::json!({
        "bench": "failover",
        "machine": machine(),
        "agents": args.agents,
        "tasks": args.tasks,
        "failover_seconds": failover_seconds,
        "master_stop_seconds": stop_seconds,
        "master_up_seconds": master_up_seconds,
        "agents_back_seconds": after_restart(agents_back_unix),
        "resubscribed_seconds": after_restart(reconciled.resubscribed_at_unix),
        "reconciled_seconds": after_restart(reconciled.reconciled_at_unix),
        "reconciled_running": reconciled.running,
        "reconciled_other": reconciled.other,
        "master_running_tasks": counts.running_tasks(),
    });
    write_json(args.json.as_deref(), &value)?;
    framework.stop().await;
    cluster.fleet.shutdown().await;
    master.stop().await?;
    if reconciled.running != args.tasks {
        bail!(
            "{} of {} tasks reconciled as RUNNING",
            reconciled.running,
            args.tasks
        );
    }
    Ok(())
}

/// Label on the containers of the plain loop, to clean them up.
const PLAIN_LABEL: &str = "agora.bench";

/// Creates and starts container `name` the way a plain client would.
async fn plain_launch(docker: &bollard::Docker, image: &str, name: String) -> anyhow::Result<()> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::CreateContainerOptions;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "sleep 3600".to_owned(),
        ]),
        labels: Some(
            [(PLAIN_LABEL.to_owned(), "plain".to_owned())]
                .into_iter()
                .collect(),
        ),
        host_config: Some(HostConfig {
            nano_cpus: Some(100_000_000),
            memory: Some(32 * 1024 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name),
        ..Default::default()
    };
    let created = docker.create_container(Some(options), body).await?;
    docker.start_container(&created.id, None).await?;
    Ok(())
}

/// A plain create-and-start loop, one container after the other.
async fn plain_loop(
    docker: &bollard::Docker,
    image: &str,
    containers: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for index in 0..containers {
        plain_launch(docker, image, format!("agora-bench-plain-{index}")).await?;
    }
    Ok(started.elapsed())
}

/// All create-and-start calls at once, as the agent issues them (one task per launch).
async fn plain_concurrent(
    docker: &bollard::Docker,
    image: &str,
    containers: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let launches = (0..containers)
        .map(|index| plain_launch(docker, image, format!("agora-bench-parallel-{index}")));
    for result in futures::future::join_all(launches).await {
        result?;
    }
    Ok(started.elapsed())
}

async fn remove_labelled(docker: &bollard::Docker, label: &str) -> anyhow::Result<usize> {
    use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
    let filters = [("label".to_owned(), vec![label.to_owned()])]
        .into_iter()
        .collect();
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut removed = 0;
    for container in listed {
        if let Some(id) = container.id {
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await?;
            removed += 1;
        }
    }
    Ok(removed)
}

async fn agora_launches(
    image: &str,
    containers: usize,
) -> anyhow::Result<(Duration, DeployReport)> {
    let master_dir = tempfile::tempdir()?;
    let agent_dir = tempfile::tempdir()?;
    let mut settings =
        agora_master::MasterSettings::new("127.0.0.1:0".parse()?, master_dir.path().to_path_buf());
    settings.core.allocation_batch_window = Duration::from_millis(5);
    let master = agora_master::spawn(settings).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = agora_agent::AgentConfig::new(master.url());
    config.runtime = Some(agora_agent::RuntimeKind::Docker);
    config.work_dir = Some(agent_dir.path().to_path_buf());
    config.resource_overrides = sim_machine(64.0, 65_536.0);
    config.kill_tasks_on_shutdown = true;
    config.default_kill_grace = Duration::from_millis(100);
    let agent = agora_agent::spawn(config, shutdown.clone()).await?;
    wait_for_counts(
        master.local_addr(),
        "docker agent registered",
        Duration::from_secs(30),
        |counts| counts.active_agents() == 1,
    )
    .await?;
    let mut packer_config = PackerConfig::new(master.url(), containers);
    packer_config.image = Some(image.to_owned());
    packer_config.shell = Some("sleep 3600".to_owned());
    packer_config.timeout = Duration::from_secs(300);
    let mut packer = Packer::start(packer_config)?;
    let report = packer.deploy().await?;
    // From the first offer (the accept goes out at once) to the last RUNNING update.
    let elapsed = Duration::from_secs_f64(report.all_running_seconds);
    packer.driver().teardown().await.ok();
    agent.shutdown().await?;
    master.shutdown().await?;
    Ok((elapsed, report))
}

async fn docker(args: DockerArgs) -> anyhow::Result<()> {
    let docker = agora_agent::connect_docker(None)
        .await
        .context("the docker bench needs a Docker Engine")?;
    let image = docker_image::ensure_test_image(&docker).await?;
    let label = format!("{PLAIN_LABEL}=plain");
    remove_labelled(&docker, &label).await?;
    // Warm the engine (first container start pays for cgroup and storage setup).
    plain_loop(&docker, &image, 2).await?;
    remove_labelled(&docker, &label).await?;

    let plain = plain_loop(&docker, &image, args.containers).await?;
    remove_labelled(&docker, &label).await?;
    let parallel = plain_concurrent(&docker, &image, args.containers).await?;
    remove_labelled(&docker, &label).await?;
    let (agora, report) = agora_launches(&image, args.containers).await?;
    remove_labelled(&docker, "agora.task_id").await?;

    let count = args.containers as f64;
    let rate = |elapsed: Duration| count / elapsed.as_secs_f64();
    // The agent launches every task of an accept at once, so the engine's throughput to
    // compare with is that of concurrent create-and-start calls.
    let ratio = rate(agora) / rate(parallel);
    let ratio_sequential = rate(agora) / rate(plain);
    let overhead_ms = (agora.as_secs_f64() - parallel.as_secs_f64()) * 1000.0 / count;
    println!();
    println!(
        "{} containers on the local Docker Engine ({})",
        args.containers,
        machine()
    );
    println!(
        "  plain bollard loop, sequential   {:>8.2} s   {:>6.1} containers/s",
        plain.as_secs_f64(),
        rate(plain)
    );
    println!(
        "  plain bollard, all at once       {:>8.2} s   {:>6.1} containers/s",
        parallel.as_secs_f64(),
        rate(parallel)
    );
    println!(
        "  through Agora (accept->RUNNING)  {:>8.2} s   {:>6.1} containers/s",
        agora.as_secs_f64(),
        rate(agora)
    );
    println!(
        "  ratio Agora / engine (at once)   {:>8.2}     (goal >= 0.9)",
        ratio
    );
    println!(
        "  ratio Agora / sequential loop    {:>8.2}",
        ratio_sequential
    );
    println!("  overhead per launch              {:>8.1} ms", overhead_ms);
    println!(
        "  deploy->RUNNING p50 / p99        {:>8.0} / {:.0} ms",
        report.deploy_to_running.p50_ms, report.deploy_to_running.p99_ms
    );
    let value = serde_json::json!({
        "bench": "docker",
        "machine": machine(),
        "containers": args.containers,
        "plain_sequential_seconds": plain.as_secs_f64(),
        "plain_concurrent_seconds": parallel.as_secs_f64(),
        "agora_seconds": agora.as_secs_f64(),
        "ratio": ratio,
        "ratio_sequential": ratio_sequential,
        "overhead_ms_per_launch": overhead_ms,
        "deploy_to_running": report.deploy_to_running,
    });
    write_json(args.json.as_deref(), &value)
}
