//! Driving svcframework and batchframework through their REST APIs for the scale benches:
//! post apps or a job, wait on their `/metrics`, read back instances and attempts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::Percentiles;

/// Why a framework bench step failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP call failed or answered with an error status.
    #[error("{what}: {reason}")]
    Http {
        /// The call.
        what: String,
        /// Why.
        reason: String,
    },
    /// The framework did not get there in time.
    #[error("{what}: not reached within {timeout:?}; last: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last value seen.
        last: String,
    },
    /// The framework reported something impossible (a failed run, a bad timestamp).
    #[error("{0}")]
    Unexpected(String),
}

fn http_error(what: impl Into<String>, reason: impl ToString) -> DaemonError {
    DaemonError::Http {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// A minimal REST client for one daemon.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    base: String,
    client: reqwest::Client,
}

impl DaemonClient {
    /// A client for the daemon at `base` (`http://host:port`).
    pub fn new(base: impl Into<String>) -> Result<Self, DaemonError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|error| http_error("building the HTTP client", error))?;
        Ok(DaemonClient {
            base: base.into(),
            client,
        })
    }

    /// `POST path` with a JSON body; the answer's JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, DaemonError> {
        let what = format!("POST {path}");
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|error| http_error(&what, error))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| http_error(&what, error))?;
        if !status.is_success() {
            return Err(http_error(what, format!("{status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|error| http_error(what, error))
    }

    /// `GET path` as text.
    pub async fn get_text(&self, path: &str) -> Result<String, DaemonError> {
        let what = format!("GET {path}");
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|error| http_error(&what, error))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| http_error(&what, error))?;
        if !status.is_success() {
            return Err(http_error(what, format!("{status}: {text}")));
        }
        Ok(text)
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, DaemonError> {
        let text = self.get_text(path).await?;
        serde_json::from_str(&text).map_err(|error| http_error(format!("GET {path}"), error))
    }

    /// One series of the daemon's Prometheus `/metrics` (exact series text), 0 when absent.
    pub async fn metric(&self, series: &str) -> Result<f64, DaemonError> {
        let text = self.get_text("/metrics").await?;
        Ok(metric_value(&text, series))
    }

    /// Polls `series` every 50 ms until `done` holds for it.
    pub async fn wait_metric(
        &self,
        series: &str,
        timeout: Duration,
        mut done: impl FnMut(f64) -> bool,
    ) -> Result<f64, DaemonError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.metric(series).await {
                Ok(value) if done(value) => return Ok(value),
                Ok(value) => value.to_string(),
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(DaemonError::Timeout {
                    what: series.to_owned(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of `series` (e.g. `agora_svc_instances_running`) in Prometheus text; 0 if absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.trim().parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp such as
/// `2026-11-24T04:18:55.123Z` (the form both frameworks write).
pub fn parse_rfc3339_utc(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let mut time_parts = time.splitn(3, ':');
    let hour: f64 = time_parts.next()?.parse().ok()?;
    let minute: f64 = time_parts.next()?.parse().ok()?;
    let second: f64 = time_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days as f64 * 86_400.0 + hour * 3600.0 + minute * 60.0 + second)
}

/// What the svcframework bench deploys.
#[derive(Debug, Clone)]
pub struct SvcDeploySpec {
    /// Number of apps (`/bench/app-0000` ...).
    pub apps: usize,
    /// Instances per app.
    pub instances_per_app: usize,
    /// Cores per instance.
    pub cpus: f64,
    /// MiB per instance.
    pub mem: f64,
}

impl SvcDeploySpec {
    /// The id of app `index`.
    pub fn app_id(index: usize) -> String {
        format!("/bench/app-{index:04}")
    }

    /// Instances in total.
    pub fn total(&self) -> usize {
        self.apps * self.instances_per_app
    }
}

/// Posts every app of `spec` (all at once); returns the Unix time just before the first post.
pub async fn post_apps(client: &DaemonClient, spec: &SvcDeploySpec) -> Result<f64, DaemonError> {
    let posted_at = agora_proto::now_seconds();
    let posts = (0..spec.apps).map(|index| {
        let body = json!({
            "id": SvcDeploySpec::app_id(index),
            "cmd": "sleep 3600",
            "cpus": spec.cpus,
            "mem": spec.mem,
            "instances": spec.instances_per_app,
        });
        async move { client.post("/v2/apps", &body).await }
    });
    for result in futures::future::join_all(posts).await {
        result?;
    }
    Ok(posted_at)
}

/// What the svcframework says about the deployed instances.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SvcInstances {
    /// Instances in state `TASK_RUNNING`.
    pub running: usize,
    /// Instances in total.
    pub total: usize,
    /// Distinct task ids.
    pub distinct_ids: usize,
    /// Instances per agent id.
    pub per_agent: BTreeMap<String, usize>,
    /// Instances per app id.
    pub per_app: BTreeMap<String, usize>,
    /// From the posts to each instance's `startedAt`.
    pub deploy_to_running: Percentiles,
    /// Latest `startedAt`, Unix seconds.
    pub last_started_unix: f64,
}

/// Reads every app's instances (`GET /v2/apps/{id}/tasks`).
pub async fn svc_instances(
    client: &DaemonClient,
    spec: &SvcDeploySpec,
    posted_at_unix: f64,
) -> Result<SvcInstances, DaemonError> {
    let mut report = SvcInstances::default();
    let mut ids = std::collections::HashSet::new();
    let mut latencies = Vec::new();
    for index in 0..spec.apps {
        let app_id = SvcDeploySpec::app_id(index);
        let answer = client.get(&format!("/v2/apps{app_id}/tasks")).await?;
        let tasks = answer
            .get("tasks")
            .and_then(Value::as_array)
            .ok_or_else(|| DaemonError::Unexpected(format!("{app_id}/tasks: no tasks array")))?;
        for task in tasks {
            report.total += 1;
            *report.per_app.entry(app_id.clone()).or_insert(0) += 1;
            if let Some(id) = task.get("id").and_then(Value::as_str) {
                ids.insert(id.to_owned());
            }
            if let Some(agent) = task.get("agentId").and_then(Value::as_str) {
                *report.per_agent.entry(agent.to_owned()).or_insert(0) += 1;
            }
            if task.get("state").and_then(Value::as_str) == Some("TASK_RUNNING") {
                report.running += 1;
            }
            if let Some(started) = task
                .get("startedAt")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339_utc)
            {
                report.last_started_unix = report.last_started_unix.max(started);
                latencies.push(Duration::from_secs_f64((started - posted_at_unix).max(0.0)));
            }
        }
    }
    report.distinct_ids = ids.len();
    report.deploy_to_running = Percentiles::of(&mut latencies);
    Ok(report)
}

/// The batch job of the throughput bench: `completions` tasks of `duration_seconds` each on
/// the sim runtime, at most `parallelism` at once, no retries.
pub fn batch_job(
    job_id: &str,
    completions: usize,
    parallelism: usize,
    duration_seconds: f64,
    cpus: f64,
    mem: f64,
) -> Value {
    json!({
        "id": job_id,
        "run": {"cmd": "true", "cpus": cpus, "mem": mem},
        "completions": completions,
        "parallelism": parallelism,
        "retries": 0,
        "labels": {"agora.sim/duration_seconds": duration_seconds.to_string()},
    })
}

/// A finished batch run as the bench checks it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    /// The run's phase (`SUCCEEDED` ...).
    pub phase: String,
    /// Successful completions the run counted.
    pub succeeded: u64,
    /// Failures the run counted.
    pub failures: u64,
    /// Attempts recorded.
    pub attempts: usize,
    /// Distinct task ids among the attempts.
    pub distinct_tasks: usize,
    /// Attempts in state `SUCCEEDED`.
    pub attempts_succeeded: usize,
    /// Most attempts that ran at once on one agent (from their start and finish times).
    pub most_at_once_on_one_agent: usize,
    /// Run start to run finish, seconds (the framework's clock).
    pub run_seconds: f64,
}

/// Reads run `run_id` of `job_id` back and sums it up.
pub async fn batch_outcome(
    client: &DaemonClient,
    job_id: &str,
    run_id: u64,
) -> Result<BatchOutcome, DaemonError> {
    let run = client
        .get(&format!("/v1/jobs/{job_id}/runs/{run_id}"))
        .await?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or("").to_owned();
    let time = |value: Option<&Value>| value.and_then(Value::as_str).and_then(parse_rfc3339_utc);
    let mut outcome = BatchOutcome {
        phase: text(run.get("phase")),
        succeeded: run.get("succeeded").and_then(Value::as_u64).unwrap_or(0),
        failures: run.get("failures").and_then(Value::as_u64).unwrap_or(0),
        ..BatchOutcome::default()
    };
    if let (Some(started), Some(finished)) =
        (time(run.get("startedAt")), time(run.get("finishedAt")))
    {
        outcome.run_seconds = finished - started;
    }
    let attempts = run
        .get("attempts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    outcome.attempts = attempts.len();
    let mut ids = std::collections::HashSet::new();
    // Per agent: (time, +1 start / -1 finish) events.
    let mut events: BTreeMap<String, Vec<(f64, i64)>> = BTreeMap::new();
    for attempt in &attempts {
        ids.insert(text(attempt.get("taskId")));
        if text(attempt.get("state")) == "SUCCEEDED" {
            outcome.attempts_succeeded += 1;
        }
        let agent = text(attempt.get("agentId"));
        let launched = time(attempt.get("launchedAt"));
        let finished = time(attempt.get("finishedAt"));
        if let (Some(launched), Some(finished)) = (launched, finished) {
            let agent_events = events.entry(agent).or_default();
            agent_events.push((launched, 1));
            agent_events.push((finished, -1));
        }
    }
    outcome.distinct_tasks = ids.len();
    for mut agent_events in events.into_values() {
        // Finishes before starts at the same instant: back-to-back tasks do not overlap.
        agent_events.sort_by(|left, right| left.0.total_cmp(&right.0).then(left.1.cmp(&right.1)));
        let mut active: i64 = 0;
        for (_, delta) in agent_events {
            active += delta;
            outcome.most_at_once_on_one_agent = outcome
                .most_at_once_on_one_agent
                .max(active.max(0) as usize);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_series() {
        let text = "# HELP x\nagora_batch_runs{phase=\"SUCCEEDED\"} 3\nagora_svc_instances 12\n";
        assert_eq!(
            metric_value(text, "agora_batch_runs{phase=\"SUCCEEDED\"}"),
            3.0
        );
        assert_eq!(metric_value(text, "agora_svc_instances"), 12.0);
        assert_eq!(metric_value(text, "missing"), 0.0);
    }

    #[test]
    fn parses_utc_timestamps() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:01.5Z"),
            Some(951_868_801.5)
        );
        assert_eq!(parse_rfc3339_utc("2000-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("not a time"), None);
    }
}
