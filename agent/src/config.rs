//! The agent's configuration, as built by the `agent` binary or by tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::{Clock, Resources, SystemClock};

use crate::error::AgentError;

/// Which runtime launches tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Containers through the Docker Engine.
    Docker,
    /// Plain child processes.
    Process,
    /// Launches nothing; reports RUNNING (scale tests).
    Sim,
}

impl RuntimeKind {
    /// The name used on the command line and in `AgentInfo.runtimes`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
            RuntimeKind::Sim => "sim",
        }
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "docker" => Ok(RuntimeKind::Docker),
            "process" => Ok(RuntimeKind::Process),
            "sim" => Ok(RuntimeKind::Sim),
            other => Err(format!(
                "unknown runtime {other:?}: expected docker, process or sim"
            )),
        }
    }
}

/// Everything the agent needs to run; [`AgentConfig::new`] gives sensible defaults.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Master URL, e.g. `http://127.0.0.1:5050`.
    pub master_url: String,
    /// Where the agent's HTTP endpoint (`/health`, `/metrics`, `/state`) listens; `None`: no HTTP.
    pub listen: Option<SocketAddr>,
    /// Checkpoint and sandbox directory. `None`: nothing is written to disk (sim scale tests);
    /// the agent then cannot recover its tasks after a restart.
    pub work_dir: Option<PathBuf>,
    /// Runtime; `None`: Docker when an engine answers, else the process runtime (with a warning).
    pub runtime: Option<RuntimeKind>,
    /// Labels reported to the master (attributes in Mesos terms).
    pub labels: BTreeMap<String, String>,
    /// Resources that replace the detected ones, name by name.
    pub resource_overrides: Resources,
    /// Hostname reported to the master and given to tasks as `HOST`.
    pub hostname: String,
    /// Docker Engine address (`unix:///…`, `tcp://…`, `http://…`); `None`: the local default.
    pub docker_host: Option<String>,
    /// Whether tasks may ask for privileged containers.
    pub allow_privileged: bool,
    /// Host directories under which task volumes may mount host paths; empty: none at all.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Exited containers are removed this long after their task ended.
    pub remove_exited_after: Duration,
    /// Unacknowledged status updates are resent this often.
    pub status_resend_interval: Duration,
    /// Grace period between SIGTERM and SIGKILL when the task names none.
    pub default_kill_grace: Duration,
    /// Smallest reconnection delay; doubled (with jitter) up to `reconnect_backoff_max`.
    pub reconnect_backoff_min: Duration,
    /// Largest reconnection delay.
    pub reconnect_backoff_max: Duration,
    /// Kill every task when the agent shuts down (in-process tests); by default tasks keep running.
    pub kill_tasks_on_shutdown: bool,
    /// Where the agent reads the time (the system clock; tests inject their own).
    pub clock: Arc<dyn Clock>,
}

impl AgentConfig {
    /// A configuration with defaults: no HTTP, no work dir, automatic runtime, host's name.
    pub fn new(master_url: impl Into<String>) -> Self {
        Self {
            master_url: master_url.into(),
            listen: None,
            work_dir: None,
            runtime: None,
            labels: BTreeMap::new(),
            resource_overrides: Resources::new(),
            hostname: default_hostname(),
            docker_host: None,
            allow_privileged: false,
            allowed_host_paths: Vec::new(),
            remove_exited_after: Duration::from_secs(60),
            status_resend_interval: Duration::from_secs(5),
            default_kill_grace: Duration::from_secs(DEFAULT_KILL_GRACE_SECONDS),
            reconnect_backoff_min: Duration::from_millis(200),
            reconnect_backoff_max: Duration::from_secs(10),
            kill_tasks_on_shutdown: false,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Grace period between SIGTERM and SIGKILL when neither the task nor the kill names one
/// (the same as `docker stop`'s default would be too long for tests and too short for nobody).
pub const DEFAULT_KILL_GRACE_SECONDS: u64 = 5;

/// Parses a `KEY=VALUE` label.
pub fn parse_label(text: &str) -> Result<(String, String), AgentError> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(AgentError::Label {
            input: text.to_owned(),
        }),
    }
}

/// Parses `--resources`, e.g. `cpus:4;mem:8192;ports:[31000-32000]`.
pub fn parse_resource_overrides(text: &str) -> Result<Resources, AgentError> {
    Resources::parse(text).map_err(|source| AgentError::Resources {
        input: text.to_owned(),
        source,
    })
}

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_need_a_key_and_an_equals_sign() {
        assert_eq!(
            parse_label("zone=a").unwrap(),
            ("zone".to_owned(), "a".to_owned())
        );
        assert_eq!(
            parse_label("empty=").unwrap(),
            ("empty".to_owned(), String::new())
        );
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn resource_overrides_report_the_bad_fragment() {
        let parsed = parse_resource_overrides("cpus:4;mem:8192;ports:[31000-32000]").unwrap();
        assert_eq!(parsed.cpus(), 4.0);
        assert_eq!(parsed.ports().count(), 1001);
        let error = parse_resource_overrides("cpus:four").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("cpus:four"), "{text}");
        assert!(parse_resource_overrides("ports:[32000-31000]").is_err());
        assert!(parse_resource_overrides("mem:-5").is_err());
        assert!(parse_resource_overrides("cpus").is_err());
    }

    #[test]
    fn runtime_names_round_trip() {
        for kind in [RuntimeKind::Docker, RuntimeKind::Process, RuntimeKind::Sim] {
            assert_eq!(kind.as_str().parse::<RuntimeKind>().unwrap(), kind);
        }
        assert!("podman".parse::<RuntimeKind>().is_err());
    }
}
