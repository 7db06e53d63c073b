//! The `master` binary's flags. Every flag can also be set through an `AGORA_*` environment
//! variable; defaults are those of [`MasterConfig::default`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::core::MasterConfig;
use crate::server::{MasterSettings, StoreSpec};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why flags were read but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--role-weight` value is malformed.
    #[error("--role-weight {value:?}: {reason}")]
    RoleWeight {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The Agora master: offers agents' resources to frameworks and tracks their tasks.
///
/// Durations accept `500ms`, `30s`, `5m`, `1h` or plain seconds (`2.5`).
#[derive(Debug, Clone, Parser)]
#[command(name = "master", version = agora_proto::VERSION)]
pub struct MasterArgs {
    /// Address to serve gRPC and HTTP/JSON on (one port).
    #[arg(long, env = "AGORA_MASTER_LISTEN", default_value = "0.0.0.0:5050")]
    pub listen: SocketAddr,

    /// Directory for the master's state (the embedded registry store).
    #[arg(long, env = "AGORA_MASTER_WORK_DIR")]
    pub work_dir: PathBuf,

    /// Registry store: `redb` (embedded, under --work-dir) or `etcd://host:port[,…]`.
    #[arg(long, env = "AGORA_MASTER_STORE", default_value = "redb")]
    pub store: StoreSpec,

    /// Outstanding offers are rescinded after this long; `0` or `never` keeps them forever.
    #[arg(long, env = "AGORA_OFFER_TIMEOUT", default_value = "30s", value_parser = parse_optional_duration)]
    pub offer_timeout: OptionalDuration,

    /// How often agents must heartbeat.
    #[arg(long, env = "AGORA_AGENT_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub agent_heartbeat_interval: Duration,

    /// Missed agent heartbeats after which an agent is unreachable.
    #[arg(long, env = "AGORA_MAX_MISSED_HEARTBEATS", default_value_t = 5)]
    pub max_missed_heartbeats: u32,

    /// How often frameworks get a heartbeat event.
    #[arg(long, env = "AGORA_FRAMEWORK_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub framework_heartbeat_interval: Duration,

    /// Allocation waits this long after resources free up or demand appears, to batch events.
    #[arg(long, env = "AGORA_ALLOCATION_BATCH_WINDOW", default_value = "20ms", value_parser = parse_duration)]
    pub allocation_batch_window: Duration,

    /// Period of the allocation pass that runs even without events.
    #[arg(long, env = "AGORA_ALLOCATION_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub allocation_interval: Duration,

    /// How long declined resources are not re-offered when a decline names no duration.
    #[arg(long, env = "AGORA_DEFAULT_REFUSE", default_value = "5s", value_parser = parse_duration)]
    pub default_refuse: Duration,

    /// Upper bound on any framework's failover timeout.
    #[arg(long, env = "AGORA_MAX_FAILOVER_TIMEOUT", default_value = "7d", value_parser = parse_duration)]
    pub max_failover_timeout: Duration,

    /// After a master restart, agents that have not re-registered within this time become
    /// unreachable.
    #[arg(long, env = "AGORA_AGENT_REREGISTER_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub agent_reregister_timeout: Duration,

    /// Fair-share weight of a role, `ROLE=WEIGHT`; repeatable (comma-separated in the env var).
    /// Roles not listed weigh 1.
    #[arg(long = "role-weight", env = "AGORA_ROLE_WEIGHT", value_delimiter = ',')]
    pub role_weights: Vec<String>,

    /// Terminal tasks kept for `/state` and reconciliation.
    #[arg(long, env = "AGORA_MAX_COMPLETED_TASKS", default_value_t = 10_000)]
    pub max_completed_tasks: usize,

    /// Seed for the allocator's tie-breaking shuffle.
    #[arg(long, env = "AGORA_SEED", default_value_t = 0)]
    pub seed: u64,

    /// Log format.
    #[arg(long, env = "AGORA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `agora_master=debug,info`.
    #[arg(long, env = "AGORA_LOG", default_value = "info")]
    pub log_filter: String,

    /// Check the configuration, print the settings in force and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// A duration that may be switched off (`0` or `never`). An alias rather than a bare
/// `Option<Duration>`, so clap treats it as a value with a default, not as an optional flag.
pub type OptionalDuration = Option<Duration>;

/// Parses `500ms`, `30s`, `5m`, `2h`, `7d` or plain (fractional) seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split_at = trimmed
        .find(|character: char| character.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split_at);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 30s, 5m, 1h)"))?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("{text:?} is not a valid duration (negative or too large)"))
}

fn parse_optional_duration(text: &str) -> Result<OptionalDuration, String> {
    if matches!(text.trim(), "never" | "none" | "off") {
        return Ok(None);
    }
    let duration = parse_duration(text)?;
    Ok((!duration.is_zero()).then_some(duration))
}

/// Parses `ROLE=WEIGHT` entries into a weight map.
pub fn parse_role_weights(entries: &[String]) -> Result<BTreeMap<String, f64>, ConfigError> {
    let mut weights = BTreeMap::new();
    for entry in entries.iter().filter(|entry| !entry.trim().is_empty()) {
        let error = |reason: &str| ConfigError::RoleWeight {
            value: entry.clone(),
            reason: reason.to_owned(),
        };
        let Some((role, weight)) = entry.split_once('=') else {
            return Err(error("expected ROLE=WEIGHT"));
        };
        let role = role.trim();
        if role.is_empty() {
            return Err(error("the role is empty"));
        }
        let weight: f64 = weight
            .trim()
            .parse()
            .map_err(|_| error("the weight is not a number"))?;
        if !weight.is_finite() || weight <= 0.0 {
            return Err(error("the weight must be a positive number"));
        }
        weights.insert(role.to_owned(), weight);
    }
    Ok(weights)
}

impl MasterArgs {
    /// The core configuration these flags describe.
    pub fn master_config(&self) -> Result<MasterConfig, ConfigError> {
        Ok(MasterConfig {
            offer_timeout: self.offer_timeout,
            agent_heartbeat_interval: self.agent_heartbeat_interval,
            max_missed_heartbeats: self.max_missed_heartbeats,
            framework_heartbeat_interval: self.framework_heartbeat_interval,
            allocation_batch_window: self.allocation_batch_window,
            allocation_interval: self.allocation_interval,
            default_refuse: self.default_refuse,
            max_failover_timeout: self.max_failover_timeout,
            agent_reregister_timeout: self.agent_reregister_timeout,
            role_weights: parse_role_weights(&self.role_weights)?,
            seed: self.seed,
            max_completed_tasks: self.max_completed_tasks,
        })
    }

    /// The settings to [`crate::spawn`] a master with.
    pub fn settings(&self) -> Result<MasterSettings, ConfigError> {
        let mut settings = MasterSettings::new(self.listen, self.work_dir.clone());
        settings.core = self.master_config()?;
        settings.store = self.store.clone();
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> MasterArgs {
        let mut full = vec!["master", "--work-dir", "/tmp/agora"];
        full.extend_from_slice(arguments);
        MasterArgs::try_parse_from(full).unwrap()
    }

    #[test]
    fn defaults_match_the_core_defaults() {
        let args = parse(&[]);
        let config = args.master_config().unwrap();
        let expected = MasterConfig::default();
        assert_eq!(config.offer_timeout, expected.offer_timeout);
        assert_eq!(
            config.agent_heartbeat_interval,
            expected.agent_heartbeat_interval
        );
        assert_eq!(config.max_missed_heartbeats, expected.max_missed_heartbeats);
        assert_eq!(
            config.framework_heartbeat_interval,
            expected.framework_heartbeat_interval
        );
        assert_eq!(
            config.allocation_batch_window,
            expected.allocation_batch_window
        );
        assert_eq!(config.allocation_interval, expected.allocation_interval);
        assert_eq!(config.default_refuse, expected.default_refuse);
        assert_eq!(config.max_failover_timeout, expected.max_failover_timeout);
        assert_eq!(
            config.agent_reregister_timeout,
            expected.agent_reregister_timeout
        );
        assert_eq!(config.role_weights, expected.role_weights);
        assert_eq!(config.seed, expected.seed);
        assert_eq!(config.max_completed_tasks, expected.max_completed_tasks);
        assert_eq!(args.listen, "0.0.0.0:5050".parse().unwrap());
        assert_eq!(args.store, StoreSpec::Redb);
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn flags_override_every_setting() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--offer-timeout",
            "never",
            "--agent-heartbeat-interval",
            "250ms",
            "--max-missed-heartbeats",
            "3",
            "--framework-heartbeat-interval",
            "2",
            "--allocation-batch-window",
            "5ms",
            "--allocation-interval",
            "0.5s",
            "--default-refuse",
            "1m",
            "--max-failover-timeout",
            "1h",
            "--agent-reregister-timeout",
            "90s",
            "--role-weight",
            "prod=3",
            "--role-weight",
            "dev=0.5",
            "--log-format",
            "json",
            "--store",
            "etcd://10.0.0.1:2379",
        ]);
        let settings = args.settings().unwrap();
        let config = &settings.core;
        assert_eq!(settings.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.offer_timeout, None);
        assert_eq!(config.agent_heartbeat_interval, Duration::from_millis(250));
        assert_eq!(config.max_missed_heartbeats, 3);
        assert_eq!(config.framework_heartbeat_interval, Duration::from_secs(2));
        assert_eq!(config.allocation_batch_window, Duration::from_millis(5));
        assert_eq!(config.allocation_interval, Duration::from_millis(500));
        assert_eq!(config.default_refuse, Duration::from_secs(60));
        assert_eq!(config.max_failover_timeout, Duration::from_secs(3600));
        assert_eq!(config.agent_reregister_timeout, Duration::from_secs(90));
        assert_eq!(
            config.role_weights,
            BTreeMap::from([("dev".to_owned(), 0.5), ("prod".to_owned(), 3.0)])
        );
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(
            settings.store,
            StoreSpec::Etcd {
                url: "etcd://10.0.0.1:2379".to_owned()
            }
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let bad_duration = MasterArgs::try_parse_from([
            "master",
            "--work-dir",
            "/tmp/a",
            "--offer-timeout",
            "soon",
        ])
        .unwrap_err()
        .to_string();
        assert!(bad_duration.contains("--offer-timeout"), "{bad_duration}");

        let bad_store =
            MasterArgs::try_parse_from(["master", "--work-dir", "/tmp/a", "--store", "zookeeper"])
                .unwrap_err()
                .to_string();
        assert!(bad_store.contains("--store"), "{bad_store}");

        let missing_work_dir = MasterArgs::try_parse_from(["master"]);
        assert!(missing_work_dir.is_err());

        let bad_weight = parse(&["--role-weight", "prod"])
            .master_config()
            .unwrap_err();
        assert!(
            bad_weight.to_string().contains("ROLE=WEIGHT"),
            "{bad_weight}"
        );
        let negative = parse(&["--role-weight", "prod=-1"])
            .master_config()
            .unwrap_err();
        assert!(negative.to_string().contains("positive"), "{negative}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_optional_duration("0").unwrap(), None);
    }
}
