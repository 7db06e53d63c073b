//! The `master` binary: parse flags, set up logging, run until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use agora_master::config::{LogFormat, MasterArgs};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that parses but cannot be used.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the master cannot start (store, bind).
const EXIT_STARTUP: u8 = 3;
/// Exit code when the master stopped on an error while running (e.g. a registry write).
const EXIT_RUNTIME: u8 = 4;

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = MasterArgs::parse();
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("master: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        println!("{settings:#?}");
        return ExitCode::SUCCESS;
    }
    init_tracing(args.log_format, &args.log_filter);

    let master = match agora_master::spawn(settings).await {
        Ok(master) => master,
        Err(error) => {
            tracing::error!(%error, "master failed to start");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutdown requested"),
        () = master.stopped() => {}
    }
    match master.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "master stopped on an error");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
