//! The `agent` binary: parse flags (or `AGORA_*` variables), run the agent until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_agent::{
    AgentConfig, AgentError, DurationError, RuntimeKind, checked_seconds, parse_label,
    parse_resource_overrides,
};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The Agora agent: reports this machine to the master and runs its tasks.
#[derive(Debug, Parser)]
#[command(name = "agent", version)]
struct Flags {
    /// Master URL.
    #[arg(long, env = "AGORA_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    /// Address of the agent's HTTP endpoint (/health, /metrics, /state).
    #[arg(long, env = "AGORA_AGENT_LISTEN", default_value = "0.0.0.0:5051")]
    listen: SocketAddr,
    /// Checkpoint and sandbox directory; keep it across restarts so no task is lost.
    #[arg(
        long,
        env = "AGORA_AGENT_WORK_DIR",
        default_value = "/var/lib/agora/agent"
    )]
    work_dir: PathBuf,
    /// Runtime: docker, process or sim. Default: docker when an engine answers, else process.
    #[arg(long, env = "AGORA_RUNTIME")]
    runtime: Option<RuntimeKind>,
    /// Label KEY=VALUE reported to the master (repeatable; comma-separated in AGORA_LABEL).
    #[arg(long = "label", env = "AGORA_LABEL", value_delimiter = ',')]
    labels: Vec<String>,
    /// Resources overriding detection, e.g. 'cpus:4;mem:8192;ports:[31000-32000]'.
    #[arg(long, env = "AGORA_RESOURCES")]
    resources: Option<String>,
    /// Hostname reported to the master and given to tasks as HOST.
    #[arg(long, env = "AGORA_HOSTNAME")]
    hostname: Option<String>,
    /// Docker Engine address (unix:///var/run/docker.sock, tcp://host:2375).
    #[arg(long, env = "AGORA_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Allow tasks to ask for privileged containers.
    #[arg(long, env = "AGORA_ALLOW_PRIVILEGED")]
    allow_privileged: bool,
    /// Host directory under which task volumes may mount host paths (repeatable;
    /// comma-separated in AGORA_ALLOW_HOST_PATHS). Default: no host path may be mounted.
    #[arg(
        long = "allow-host-path",
        env = "AGORA_ALLOW_HOST_PATHS",
        value_delimiter = ','
    )]
    allow_host_paths: Vec<PathBuf>,
    /// Seconds after which exited containers are removed.
    #[arg(long, env = "AGORA_REMOVE_EXITED_AFTER", default_value_t = 60.0)]
    remove_exited_after: f64,
    /// Seconds between SIGTERM and SIGKILL when a task names no grace period.
    #[arg(long, env = "AGORA_KILL_GRACE", default_value_t = agora_agent::DEFAULT_KILL_GRACE_SECONDS as f64)]
    kill_grace: f64,
    /// Kill every task when the agent stops (for throw-away local clusters); by default tasks
    /// keep running and a restarted agent takes them over.
    #[arg(long, env = "AGORA_KILL_TASKS_ON_SHUTDOWN")]
    kill_tasks_on_shutdown: bool,
    /// Log format: text or json.
    #[arg(long, env = "AGORA_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn config_from(flags: Flags) -> Result<AgentConfig, FlagError> {
    let mut config = AgentConfig::new(flags.master);
    config.listen = Some(flags.listen);
    config.work_dir = Some(flags.work_dir);
    config.runtime = flags.runtime;
    let mut labels = BTreeMap::new();
    for label in &flags.labels {
        let (key, value) = parse_label(label)?;
        labels.insert(key, value);
    }
    config.labels = labels;
    if let Some(text) = &flags.resources {
        config.resource_overrides = parse_resource_overrides(text)?;
    }
    if let Some(hostname) = flags.hostname {
        config.hostname = hostname;
    }
    config.docker_host = flags.docker_host;
    config.allow_privileged = flags.allow_privileged;
    config.kill_tasks_on_shutdown = flags.kill_tasks_on_shutdown;
    if let Some(relative) = flags
        .allow_host_paths
        .iter()
        .find(|path| !path.is_absolute())
    {
        return Err(FlagError::HostPath {
            path: relative.clone(),
        });
    }
    config.allowed_host_paths = flags.allow_host_paths;
    config.remove_exited_after = seconds("remove-exited-after", flags.remove_exited_after)?;
    config.default_kill_grace = seconds("kill-grace", flags.kill_grace)?;
    Ok(config)
}

/// Seconds from a flag; a value that is no usable duration (NaN, negative, 1e308) is an error
/// naming the flag rather than a panic or a silent default.
fn seconds(flag: &'static str, value: f64) -> Result<Duration, FlagError> {
    checked_seconds(value, MAX_FLAG_SECONDS).map_err(|source| FlagError::Seconds { flag, source })
}

/// Longest duration a flag takes (a year).
const MAX_FLAG_SECONDS: f64 = 365.0 * 86_400.0;

/// A flag the agent cannot run with.
#[derive(Debug, thiserror::Error)]
enum FlagError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("invalid --allow-host-path {path:?}: must be an absolute path")]
    HostPath { path: PathBuf },
    #[error("invalid --{flag}: {source}")]
    Seconds {
        flag: &'static str,
        source: DurationError,
    },
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging(&flags.log_format);
    let config = match config_from(flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("agent: {error}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; tasks keep running");
        signal_shutdown.cancel();
    });
    match agora_agent::run_agent(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agent: {error}");
            ExitCode::from(1)
        }
    }
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
