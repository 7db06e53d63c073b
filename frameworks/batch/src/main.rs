//! `batchframework`: the batch daemon (`serve`) and its CLI.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_batch::{BatchSettings, spawn};
use clap::{Parser, Subcommand, ValueEnum};

use crate::cli::{Client, Output};

/// Jobs, retries, cron schedules and dependencies on Agora.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    /// The daemon's API, for the client subcommands.
    #[arg(
        long,
        global = true,
        env = "AGORA_BATCH_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    url: String,
    /// Output of the client subcommands.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "AGORA_BATCH_OUTPUT",
        default_value = "table"
    )]
    output: Output,
    #[command(subcommand)]
    command: Subcommands,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Subcommands {
    /// Run the daemon.
    Serve {
        /// The master's URL.
        #[arg(long, env = "AGORA_MASTER", default_value = "http://127.0.0.1:5050")]
        master: String,
        /// Address of the HTTP API.
        #[arg(long, env = "AGORA_BATCH_LISTEN", default_value = "0.0.0.0:8090")]
        listen: SocketAddr,
        /// Directory of the store (batch.redb); keep it across restarts.
        #[arg(
            long,
            env = "AGORA_BATCH_WORK_DIR",
            default_value = "/var/lib/agora/batch"
        )]
        work_dir: PathBuf,
        /// Framework name shown by the master.
        #[arg(long, env = "AGORA_BATCH_NAME", default_value = "batchframework")]
        name: String,
        /// Seconds the master keeps our tasks while the daemon is away.
        #[arg(long, env = "AGORA_BATCH_FAILOVER_TIMEOUT", default_value_t = 604_800)]
        failover_timeout: u64,
        /// Seconds an attempt on an unreachable agent keeps its place before it is replaced.
        #[arg(long, env = "AGORA_BATCH_UNREACHABLE_GRACE", default_value_t = 60)]
        unreachable_grace: u32,
        /// Log format.
        #[arg(long, env = "AGORA_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// Log filter (tracing env-filter syntax).
        #[arg(long, env = "AGORA_LOG", default_value = "info")]
        log_filter: String,
    },
    /// Submit a job (create, or update and run now); `--wait` follows the run to its end.
    Submit {
        /// The job JSON file.
        file: PathBuf,
        /// Follow the run until it ends; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// List jobs.
    List,
    /// Show one job.
    Status {
        /// Job id.
        id: String,
    },
    /// List a job's runs.
    Runs {
        /// Job id.
        id: String,
    },
    /// Cancel a run (or every unfinished run) of a job.
    Cancel {
        /// Job id.
        id: String,
        /// Run number; all unfinished runs when omitted.
        run: Option<u64>,
    },
}

fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|error| anyhow::anyhow!("--log-filter {filter:?}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn serve(settings: BatchSettings) -> ExitCode {
    let handle = match spawn(settings).await {
        Ok(handle) => handle,
        Err(error) => {
            tracing::error!(%error, "batchframework failed to start");
            return ExitCode::from(3);
        }
    };
    match handle.serve_until_signal().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "batchframework stopped on an error");
            ExitCode::from(4)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let client = || Client::new(&flags.url, flags.output);
    let result = match &flags.command {
        Subcommands::Serve {
            master,
            listen,
            work_dir,
            name,
            failover_timeout,
            unreachable_grace,
            log_format,
            log_filter,
        } => {
            if let Err(error) = init_tracing(*log_format, log_filter) {
                eprintln!("{error}");
                return ExitCode::from(2);
            }
            let mut settings = BatchSettings::new(master.clone(), *listen, work_dir.clone());
            settings.framework_name = name.clone();
            settings.failover_timeout = Duration::from_secs(*failover_timeout);
            settings.core.unreachable_grace =
                jiff::SignedDuration::from_secs(i64::from(*unreachable_grace));
            return serve(settings).await;
        }
        Subcommands::Submit { file, wait } => match client() {
            Ok(client) => client.submit(file, *wait).await,
            Err(error) => Err(error),
        },
        Subcommands::List => match client() {
            Ok(client) => client.list().await,
            Err(error) => Err(error),
        },
        Subcommands::Status { id } => match client() {
            Ok(client) => client.status(id).await,
            Err(error) => Err(error),
        },
        Subcommands::Runs { id } => match client() {
            Ok(client) => client.runs(id).await,
            Err(error) => Err(error),
        },
        Subcommands::Cancel { id, run } => match client() {
            Ok(client) => client.cancel(id, *run).await,
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
