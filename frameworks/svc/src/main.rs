//! The `svcframework` binary: `serve` runs the daemon until SIGTERM or Ctrl-C; every other
//! subcommand is a client of a daemon's REST API.

use std::process::ExitCode;

use agora_svc::cli::{Cli, CliCommand, LogFormat, ServeArgs, run_client};
use agora_svc::{SvcSettings, core::CoreConfig, spawn};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Exit code when the daemon cannot start (store, bind, flags).
const EXIT_STARTUP: u8 = 3;
/// Exit code when the daemon stopped on an error while running.
const EXIT_RUNTIME: u8 = 4;

async fn serve(args: ServeArgs) -> ExitCode {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let mut settings = SvcSettings::new(args.master, args.listen, args.work_dir);
    settings.framework_name = args.name;
    settings.failover_timeout_seconds = args.failover_timeout;
    settings.core = CoreConfig {
        deployment_timeout: args.deployment_timeout,
        launch_timeout: args.launch_timeout,
        ..CoreConfig::default()
    };
    let handle = match spawn(settings).await {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("svcframework: {error}");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    match handle.serve_until_signal().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("svcframework: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let CliCommand::Serve(args) = cli.command {
        return serve(args).await;
    }
    match run_client(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("svcframework: {}", error.message);
            ExitCode::from(error.code)
        }
    }
}
