//! The job definition as users write it (JSON, camelCase) and as the store keeps it.

use std::collections::BTreeMap;
use std::fmt;

use agora_sdk::scheduling::Constraint;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cron::{CronExpression, CronSchedule};

/// A job's id: lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Wraps `id` without checking it (the parser checks ids from users).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why `text` is not a valid job id, or `None` when it is.
    pub fn problem(text: &str) -> Option<String> {
        if text.is_empty() {
            return Some("must not be empty".to_owned());
        }
        // The protocol's shared limit for ids that task ids are derived from: the task id
        // `<job>.r<run>.a<attempt>` then stays within the master's task id limit.
        let max = agora_proto::limits::MAX_DERIVING_ID_LEN;
        if text.len() > max {
            return Some(format!(
                "must be at most {max} characters, got {}",
                text.len()
            ));
        }
        let starts_well = text
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit());
        let allowed = text.chars().all(|character| {
            character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || matches!(character, '-' | '_' | '.')
        });
        if !starts_well || !allowed {
            return Some(format!(
                "{text:?} must be lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
            ));
        }
        None
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one attempt runs and needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// A shell command (`/bin/sh -c`); exclusive with `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Arguments to exec (after the image's entrypoint); exclusive with `cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A Docker image; without it the command runs as a plain process (process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Cores per attempt (default 0.1).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory per attempt in MiB (default 128).
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Disk per attempt in MiB (default 0).
    #[serde(default)]
    pub disk: f64,
    /// Fields this model does not know (reported, then dropped).
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, Value>,
}

fn default_cpus() -> f64 {
    0.1
}

fn default_mem() -> f64 {
    128.0
}

/// What happens when a schedule fires while an earlier run of the job is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConcurrencyPolicy {
    /// Start another run next to it.
    #[default]
    Allow,
    /// Skip this fire.
    Forbid,
    /// Cancel the active runs and start a new one.
    Replace,
}

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Cron expression: 5 fields, or 6 with seconds first, or `@daily`-style macros.
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What to do when a fire finds a run still active (default `ALLOW`).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A fire that could not start within this many seconds of its time (the daemon was down)
    /// is skipped instead of run late. Without it a late fire always runs (once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
    /// Fields this model does not know (reported, then dropped).
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, Value>,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// A job definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// The job's id.
    pub id: JobId,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What each attempt runs.
    pub run: RunSpec,
    /// Successful attempts a run needs (default 1).
    #[serde(default = "one")]
    pub completions: u32,
    /// Attempts of one run that may be active at once (default 1).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Failed attempts a run tolerates; one more fails the run (default 0).
    #[serde(default)]
    pub retries: u32,
    /// First delay before a retry, seconds (default 1); it doubles per failure, with jitter.
    #[serde(default = "default_backoff")]
    pub backoff_seconds: f64,
    /// Longest delay before a retry, seconds (default 60).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: f64,
    /// A run still active this many seconds after it started fails and its attempts are
    /// killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    /// Cron schedule; without it the job runs once when submitted and when asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Jobs whose latest run must have succeeded before a run of this one starts. A job
    /// without a schedule also runs each time all of them have succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<JobId>,
    /// Placement constraints: Marathon arrays (`["hostname", "UNIQUE"]`) or Swarm-style
    /// strings (`"disk==ssd"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Value>,
    /// Finished runs are forgotten this long after they finished (the latest run of a job
    /// is always kept, for dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,
    /// Labels copied onto every task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Fields this model does not know (reported, then dropped).
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, Value>,
}

fn one() -> u32 {
    1
}

fn default_backoff() -> f64 {
    1.0
}

fn default_max_backoff() -> f64 {
    60.0
}

impl JobSpec {
    /// The constraints, parsed (a validated spec has only valid ones).
    pub fn parsed_constraints(&self) -> Vec<Constraint> {
        self.constraints
            .iter()
            .filter_map(|value| parse_constraint(value).ok())
            .collect()
    }

    /// The schedule bound to its time zone (a validated spec always has a valid one).
    pub fn cron_schedule(&self) -> Option<CronSchedule> {
        let schedule = self.schedule.as_ref()?;
        let expression = CronExpression::parse(&schedule.cron).ok()?;
        let time_zone = TimeZone::get(&schedule.timezone).ok()?;
        Some(CronSchedule::new(expression, time_zone))
    }
}

/// Parses one constraint: a Marathon array of strings or a Swarm-style expression string.
pub fn parse_constraint(value: &Value) -> Result<Constraint, String> {
    match value {
        Value::String(expression) => {
            Constraint::from_expression(expression).map_err(|error| error.to_string())
        }
        Value::Array(items) => {
            let mut fields = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(text) => fields.push(text.clone()),
                    other => {
                        return Err(format!("array elements must be strings, got {other}"));
                    }
                }
            }
            Constraint::from_marathon(&fields).map_err(|error| error.to_string())
        }
        other => Err(format!(
            "must be an array like [\"hostname\", \"UNIQUE\"] or a string like \"disk==ssd\", got {other}"
        )),
    }
}
