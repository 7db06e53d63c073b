//! Agora's end-to-end test harness: an in-process master on 127.0.0.1, scripted agents over
//! real gRPC, SDK frameworks, and helpers to wait for events with deadlines.

mod agent;
mod binary;
mod cluster;
mod framework;
mod http;
mod wait;

pub mod docker_image;
pub mod fault;

pub use agent::{AgentSpec, TestAgent};
pub use binary::workspace_binary;
pub use cluster::{ClusterOptions, TestCluster, fast_master_config};
pub use framework::TestFramework;
pub use http::{HttpResponse, http_get};
pub use wait::{DEFAULT_TIMEOUT, Probe, eventually, poll_until};

/// Installs a test log subscriber once (`RUST_LOG` selects what is shown).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
