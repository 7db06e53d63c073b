//! Exact convergence: the same task ids at the master, in the framework's API and in the
//! Docker Engine, none twice, none orphaned, as many as wanted; and for batch runs, every
//! completion done exactly once by a container that exited 0.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use agora_proto::v1;
use tokio::time::Instant;

use super::cluster::{FaultCluster, active_agents};
use crate::wait::{Probe, poll_until};

/// How often the three views are compared.
const POLL: Duration = Duration::from_millis(250);

/// What one comparison saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Task ids RUNNING at the master for the framework (duplicates kept).
    pub master_running: Vec<String>,
    /// Live tasks at the master in another state: `id (state on agent)`.
    pub master_other_live: Vec<String>,
    /// Task ids the framework's API shows as RUNNING (duplicates kept).
    pub framework_running: Vec<String>,
    /// Instances the framework lists in another state or being killed: `id (state)`.
    pub framework_other: Vec<String>,
    /// Task ids of running containers labelled with the framework id (duplicates kept).
    pub docker_running: Vec<String>,
    /// Agents active at the master.
    pub agents_active: usize,
    /// A view that could not be read (daemon down), if any.
    pub unreadable: Vec<String>,
    /// Tasks the master or the framework lists as unreachable, unknown, lost or gone: not
    /// claimed to run, so outside the exact sets, but printed.
    pub unreachable: Vec<String>,
}

impl Observed {
    /// Why this observation is not exact for `wanted` tasks and `agents` active agents, or
    /// `None` when it is.
    pub fn inexact(&self, wanted: usize, agents: usize) -> Option<String> {
        let mut reasons = Vec::new();
        if !self.unreadable.is_empty() {
            reasons.push(format!("unreadable: {}", self.unreadable.join("; ")));
        }
        let master: BTreeSet<&String> = self.master_running.iter().collect();
        let framework: BTreeSet<&String> = self.framework_running.iter().collect();
        let docker: BTreeSet<&String> = self.docker_running.iter().collect();
        for (view, ids, set) in [
            ("master", &self.master_running, &master),
            ("framework", &self.framework_running, &framework),
            ("docker", &self.docker_running, &docker),
        ] {
            if ids.len() != set.len() {
                reasons.push(format!("{view} lists a task twice"));
            }
            if set.len() != wanted {
                reasons.push(format!("{view} has {} running, {wanted} wanted", set.len()));
            }
        }
        if master != framework {
            reasons.push("master != framework".to_owned());
        }
        if framework != docker {
            reasons.push("framework != docker".to_owned());
        }
        if !self.master_other_live.is_empty() {
            reasons.push("master has live tasks that are not RUNNING".to_owned());
        }
        if !self.framework_other.is_empty() {
            reasons.push("framework has instances that are not RUNNING".to_owned());
        }
        if self.agents_active != agents {
            reasons.push(format!(
                "{} agents active at the master, {agents} expected",
                self.agents_active
            ));
        }
        (!reasons.is_empty()).then(|| reasons.join(", "))
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted = |ids: &[String]| {
            let mut ids = ids.to_vec();
            ids.sort();
            ids
        };
        let master = sorted(&self.master_running);
        let framework = sorted(&self.framework_running);
        let docker = sorted(&self.docker_running);
        let master_set: BTreeSet<&String> = master.iter().collect();
        let framework_set: BTreeSet<&String> = framework.iter().collect();
        let docker_set: BTreeSet<&String> = docker.iter().collect();
        writeln!(f, "  master RUNNING ({}): {master:?}", master.len())?;
        writeln!(f, "  master other live: {:?}", self.master_other_live)?;
        writeln!(
            f,
            "  framework RUNNING ({}): {framework:?}",
            framework.len()
        )?;
        writeln!(f, "  framework other: {:?}", self.framework_other)?;
        writeln!(f, "  docker running ({}): {docker:?}", docker.len())?;
        writeln!(
            f,
            "  running in docker, not RUNNING in the framework (orphans or unkilled): {:?}",
            docker_set.difference(&framework_set).collect::<Vec<_>>()
        )?;
        writeln!(
            f,
            "  RUNNING in the framework, not in docker (ghosts): {:?}",
            framework_set.difference(&docker_set).collect::<Vec<_>>()
        )?;
        writeln!(
            f,
            "  RUNNING at the master, not RUNNING in the framework: {:?}",
            master_set.difference(&framework_set).collect::<Vec<_>>()
        )?;
        writeln!(
            f,
            "  unreachable/unknown (not counted): {:?}",
            self.unreachable
        )?;
        writeln!(f, "  agents active at the master: {}", self.agents_active)?;
        if !self.unreadable.is_empty() {
            writeln!(f, "  unreadable: {:?}", self.unreadable)?;
        }
        Ok(())
    }
}

/// The state name of a task entry at the master.
fn master_state(task: &v1::TaskEntry) -> v1::TaskState {
    task.latest_status
        .as_ref()
        .map_or(v1::TaskState::Unspecified, v1::TaskStatus::state)
}

fn task_id(task: &v1::TaskEntry) -> String {
    task.task
        .as_ref()
        .map(|info| info.task_id.clone())
        .unwrap_or_default()
}

impl FaultCluster {
    /// The three views of the svcframework's tasks (app `app_id`, the only app of the
    /// framework in a fault scenario, so framework-wide docker and master sets apply).
    pub async fn observe_svc(&self, app_id: &str) -> Observed {
        let mut observed = Observed::default();
        let framework_id = self.framework_id(&self.svc_name).unwrap_or("").to_owned();
        self.observe_master(&framework_id, |_| true, &mut observed)
            .await;
        match self.svc_tasks(app_id).await {
            Ok(tasks) => {
                for task in tasks {
                    let id = task["id"].as_str().unwrap_or("").to_owned();
                    let state = task["state"].as_str().unwrap_or("");
                    let killing = !task["killing"].is_null();
                    if state == "TASK_RUNNING" && !killing {
                        observed.framework_running.push(id);
                    } else if matches!(
                        state,
                        "TASK_UNREACHABLE" | "TASK_UNKNOWN" | "TASK_LOST" | "TASK_GONE"
                    ) {
                        observed
                            .unreachable
                            .push(format!("framework: {id} ({state})"));
                    } else {
                        observed.framework_other.push(format!(
                            "{id} ({state}{})",
                            if killing { ", killing" } else { "" }
                        ));
                    }
                }
            }
            Err(error) => observed.unreadable.push(format!("svcframework: {error:#}")),
        }
        self.observe_docker(&self.svc_name.clone(), |_| true, &mut observed)
            .await;
        observed
    }

    async fn observe_master(
        &self,
        framework_id: &str,
        mine: impl Fn(&str) -> bool,
        observed: &mut Observed,
    ) {
        match self.state().await {
            Ok(state) => {
                observed.agents_active = active_agents(&state);
                for task in &state.tasks {
                    let id = task_id(task);
                    if task.framework_id != framework_id || !mine(&id) {
                        continue;
                    }
                    let task_state = master_state(task);
                    if task_state == v1::TaskState::TaskRunning {
                        observed.master_running.push(id);
                    } else if matches!(
                        task_state,
                        v1::TaskState::TaskUnreachable
                            | v1::TaskState::TaskUnknown
                            | v1::TaskState::TaskLost
                            | v1::TaskState::TaskGone
                    ) {
                        // Not claimed to run: shown, but exactness is about what runs.
                        observed
                            .unreachable
                            .push(format!("master: {id} ({task_state:?})"));
                    } else if !agora_proto::is_terminal(task_state) {
                        let agent = task
                            .task
                            .as_ref()
                            .map(|info| info.agent_id.as_str())
                            .unwrap_or("");
                        let host = self.hostname_of(agent).unwrap_or(agent);
                        observed
                            .master_other_live
                            .push(format!("{id} ({task_state:?} on {host})"));
                    }
                }
            }
            Err(error) => observed.unreadable.push(format!("master: {error:#}")),
        }
    }

    async fn observe_docker(
        &self,
        framework_name: &str,
        mine: impl Fn(&str) -> bool,
        observed: &mut Observed,
    ) {
        match self.framework_containers(framework_name, false).await {
            Ok(containers) => {
                for container in containers {
                    let id = container
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get("agora.task_id"))
                        .cloned()
                        .unwrap_or_default();
                    if mine(&id) {
                        observed.docker_running.push(id);
                    }
                }
            }
            Err(error) => observed.unreadable.push(format!("docker: {error:#}")),
        }
    }

    /// Waits until svcframework's app `app_id` is exact: the same `wanted` task ids RUNNING at
    /// the master, in svcframework's API and in `docker ps`, with `agents` agents active, and
    /// stays exact for `settle`. Returns the time from the last [`FaultCluster::mark_fault`] to
    /// the start of that stable exact stretch. On timeout, fails with the three sets and the
    /// daemons' log tails.
    pub async fn assert_exact_svc(
        &self,
        app_id: &str,
        wanted: usize,
        agents: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let settle = Duration::from_secs(3);
        let start = Instant::now();
        let deadline = start + timeout;
        let mut exact_since: Option<Instant> = None;
        // An app that is exact at the deadline gets the time to prove it stays so.
        let exact = poll_until(timeout + settle, POLL, async || {
            let observed = self.observe_svc(app_id).await;
            let now = Instant::now();
            match observed.inexact(wanted, agents) {
                None => {
                    let since = *exact_since.get_or_insert(now);
                    if now.duration_since(since) >= settle {
                        return Probe::Met(since);
                    }
                    Probe::NotYet(format!(
                        "exact for less than {settle:?}; last seen:\n{observed}"
                    ))
                }
                Some(reason) => {
                    exact_since = None;
                    let seen = format!(
                        "{reason}; wanted {wanted} on {agents} agents; last seen:\n{observed}"
                    );
                    Probe::unmet(now >= deadline, seen)
                }
            }
        })
        .await;
        match exact {
            Ok(since) => Ok(self.since_fault(since, start)),
            Err(last) => {
                let failure = format!(
                    "{app_id}: not exact within {timeout:?}: {last}\n{}",
                    self.log_tails(25)
                );
                let late = self.linger_svc(app_id, wanted, agents).await;
                anyhow::bail!("{failure}\n{late}");
            }
        }
    }

    /// After a failed convergence, with `AGORA_FAULT_LINGER_SECONDS=N`, keeps watching up to N
    /// more seconds and says whether and when the app became exact after all (how late a
    /// retry or timeout repaired it), for the suite's closing note. Off by default: CI time.
    async fn linger_svc(&self, app_id: &str, wanted: usize, agents: usize) -> String {
        let linger = linger_seconds();
        if linger.is_zero() {
            return "(set AGORA_FAULT_LINGER_SECONDS to see whether it converges later)".to_owned();
        }
        let exact = poll_until(linger, POLL, async || {
            match self.observe_svc(app_id).await.inexact(wanted, agents) {
                None => Probe::Met(()),
                Some(reason) => Probe::NotYet(reason),
            }
        })
        .await;
        match exact {
            Ok(()) => {
                let since = self
                    .fault_at()
                    .map_or(Duration::ZERO, |fault| fault.elapsed());
                format!(
                    "LATE: exact only {:.1} s after the fault",
                    since.as_secs_f64()
                )
            }
            Err(_) => format!(
                "STILL NOT EXACT after lingering {} s more",
                linger.as_secs()
            ),
        }
    }

    /// Waits until run `run` of batch job `job_id` is exactly done: SUCCEEDED with
    /// `completions` succeeded attempts and `failures` failures, the succeeded attempts' task
    /// ids are exactly the containers of the run that exited 0 (no work done twice, none
    /// lost), no container of the run still runs, the master has no live task of it, and the
    /// containers never ran more than `parallelism` at once. Returns the time from the last
    /// fault to that moment.
    pub async fn assert_exact_batch(
        &self,
        job_id: &str,
        run: u64,
        expect: BatchExpectation,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let prefix = format!("{job_id}.r{run}.");
        let done = poll_until(timeout, POLL, async || {
            let (observed, reason) = self.observe_batch(job_id, run, &prefix, expect).await;
            let now = Instant::now();
            let Some(reason) = reason else {
                return Probe::Met(now);
            };
            let seen = format!("{reason}; last seen:\n{observed}");
            // A finished run that is wrong does not get right by waiting, unless work of it
            // is still in flight somewhere.
            let settled_wrong = observed.finished && observed.running_anywhere == 0;
            Probe::unmet(
                settled_wrong && now >= start + Duration::from_secs(10),
                seen,
            )
        })
        .await;
        match done {
            Ok(at) => Ok(self.since_fault(at, start)),
            Err(last) => anyhow::bail!(
                "job {job_id} run {run}: not exact: {last}\n{}",
                self.log_tails(25)
            ),
        }
    }

    /// How long after the last fault (or `start`, when there was none) `at` came.
    fn since_fault(&self, at: Instant, start: Instant) -> Duration {
        at.saturating_duration_since(self.fault_at().unwrap_or(start))
    }

    async fn observe_batch(
        &self,
        job_id: &str,
        run: u64,
        prefix: &str,
        expect: BatchExpectation,
    ) -> (BatchObserved, Option<String>) {
        let mut observed = BatchObserved::default();
        let mut reasons = Vec::new();
        match self.batch_run(job_id, run).await {
            Ok(body) => {
                observed.phase = body["phase"].as_str().unwrap_or("").to_owned();
                observed.succeeded = body["succeeded"].as_u64().unwrap_or(0);
                observed.failures = body["failures"].as_u64().unwrap_or(0);
                observed.finished = matches!(
                    observed.phase.as_str(),
                    "SUCCEEDED" | "FAILED" | "CANCELLED"
                );
                for attempt in body["attempts"].as_array().into_iter().flatten() {
                    let id = attempt["taskId"].as_str().unwrap_or("").to_owned();
                    let state = attempt["state"].as_str().unwrap_or("").to_owned();
                    if state == "SUCCEEDED" {
                        observed.attempts_succeeded.push(id.clone());
                    }
                    observed.attempts.push(format!(
                        "{id} {state} exit={} on {}",
                        attempt["exitCode"],
                        attempt["hostname"].as_str().unwrap_or("?")
                    ));
                }
            }
            Err(error) => reasons.push(format!("batchframework unreadable: {error:#}")),
        }
        let framework_id = self.framework_id(&self.batch_name).unwrap_or("").to_owned();
        let mut master = Observed::default();
        self.observe_master(&framework_id, |id| id.starts_with(prefix), &mut master)
            .await;
        observed.master_live = master
            .master_running
            .iter()
            .map(|id| format!("{id} (TaskRunning)"))
            .chain(master.master_other_live.iter().cloned())
            .collect();
        reasons.extend(master.unreadable);
        match self.framework_containers(&self.batch_name, true).await {
            Ok(containers) => {
                let mut intervals = Vec::new();
                for container in containers {
                    let id = container
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get("agora.task_id"))
                        .cloned()
                        .unwrap_or_default();
                    if !id.starts_with(prefix) {
                        continue;
                    }
                    let Some(container_id) = container.id else {
                        continue;
                    };
                    match self.docker.inspect_container(&container_id, None).await {
                        Ok(inspect) => {
                            let state = inspect.state.unwrap_or_default();
                            let running = state.running.unwrap_or(false);
                            let exit = state.exit_code.unwrap_or(-1);
                            if running {
                                observed.running_anywhere += 1;
                                observed.docker_running.push(id.clone());
                            } else if exit == 0 {
                                observed.docker_exited_0.push(id.clone());
                            } else {
                                observed.docker_other.push(format!("{id} exit={exit}"));
                            }
                            let started = state.started_at.as_deref().and_then(rfc3339_seconds);
                            let finished = if running {
                                Some(f64::INFINITY)
                            } else {
                                state.finished_at.as_deref().and_then(rfc3339_seconds)
                            };
                            if let (Some(started), Some(finished)) = (started, finished) {
                                intervals.push((started, finished));
                            }
                        }
                        Err(error) => reasons.push(format!("inspect {container_id}: {error}")),
                    }
                }
                observed.docker_max_parallel = max_overlap(&intervals);
            }
            Err(error) => reasons.push(format!("docker unreadable: {error:#}")),
        }
        observed.running_anywhere += observed.master_live.len();

        let completions = usize::try_from(expect.completions).unwrap_or(usize::MAX);
        if observed.phase != "SUCCEEDED" {
            reasons.push(format!("run is {}, not SUCCEEDED", observed.phase));
        }
        if observed.succeeded != u64::from(expect.completions) {
            reasons.push(format!(
                "run counts {} succeeded, {} wanted",
                observed.succeeded, expect.completions
            ));
        }
        if observed.failures != u64::from(expect.failures) {
            reasons.push(format!(
                "run counts {} failures, {} expected",
                observed.failures, expect.failures
            ));
        }
        let attempts: BTreeSet<&String> = observed.attempts_succeeded.iter().collect();
        let exited: BTreeSet<&String> = observed.docker_exited_0.iter().collect();
        if attempts != exited {
            reasons.push("succeeded attempts != containers that exited 0".to_owned());
        }
        if exited.len() != completions {
            reasons.push(format!(
                "{} containers exited 0 (work done), {completions} completions wanted",
                exited.len()
            ));
        }
        if !observed.docker_running.is_empty() {
            reasons.push("containers of the run still run".to_owned());
        }
        if !observed.master_live.is_empty() {
            reasons.push("the master has live tasks of the run".to_owned());
        }
        if observed.docker_max_parallel > usize::try_from(expect.parallelism).unwrap_or(0) {
            reasons.push(format!(
                "{} containers ran at once, parallelism {}",
                observed.docker_max_parallel, expect.parallelism
            ));
        }
        let reason = (!reasons.is_empty()).then(|| reasons.join(", "));
        (observed, reason)
    }
}

/// `AGORA_FAULT_LINGER_SECONDS` (0 when unset or malformed).
fn linger_seconds() -> Duration {
    std::env::var("AGORA_FAULT_LINGER_SECONDS")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// What an exactly-done batch run looks like.
#[derive(Debug, Clone, Copy)]
pub struct BatchExpectation {
    /// The job's `completions`.
    pub completions: u32,
    /// The job's `parallelism`.
    pub parallelism: u32,
    /// Failures the run should count (0 when every container exits 0).
    pub failures: u32,
}

/// What one comparison of a batch run saw.
#[derive(Debug, Clone, Default)]
pub struct BatchObserved {
    /// The run's phase.
    pub phase: String,
    /// The run's `succeeded` counter.
    pub succeeded: u64,
    /// The run's `failures` counter.
    pub failures: u64,
    /// The run is in a final phase.
    pub finished: bool,
    /// Every attempt: `task state exit host`.
    pub attempts: Vec<String>,
    /// Task ids of SUCCEEDED attempts.
    pub attempts_succeeded: Vec<String>,
    /// Live tasks of the run at the master.
    pub master_live: Vec<String>,
    /// Task ids of the run's containers still running.
    pub docker_running: Vec<String>,
    /// Task ids of the run's containers that exited 0.
    pub docker_exited_0: Vec<String>,
    /// The run's other containers: `task exit=code`.
    pub docker_other: Vec<String>,
    /// The most containers of the run that ran at once.
    pub docker_max_parallel: usize,
    /// Work still in flight (running containers plus live master tasks).
    pub running_anywhere: usize,
}

impl fmt::Display for BatchObserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  run: phase {} succeeded {} failures {}",
            self.phase, self.succeeded, self.failures
        )?;
        writeln!(f, "  attempts: {:?}", self.attempts)?;
        writeln!(f, "  master live: {:?}", self.master_live)?;
        writeln!(f, "  docker running: {:?}", self.docker_running)?;
        writeln!(f, "  docker exited 0: {:?}", self.docker_exited_0)?;
        writeln!(f, "  docker other: {:?}", self.docker_other)?;
        writeln!(f, "  docker max at once: {}", self.docker_max_parallel)
    }
}

/// The most intervals open at once (an end and a start at the same instant do not overlap).
fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut open = 0i32;
    let mut most = 0i32;
    for (_, delta) in events {
        open += delta;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Seconds since the epoch of Docker's RFC 3339 UTC times (`2026-12-01T03:10:11.123456789Z`);
/// `None` for Docker's zero time of a container that never started or finished.
fn rfc3339_seconds(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-').map(str::parse::<i64>);
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) =
        (date_parts.next(), date_parts.next(), date_parts.next())
    else {
        return None;
    };
    if year <= 1 {
        return None;
    }
    let mut clock = time.split(':');
    let hour: f64 = clock.next()?.parse().ok()?;
    let minute: f64 = clock.next()?.parse().ok()?;
    let second: f64 = clock.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    #[allow(clippy::cast_precision_loss)]
    let days_seconds = days as f64 * 86_400.0;
    Some(days_seconds + hour * 3600.0 + minute * 60.0 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_parse_and_zero_time_is_none() {
        assert_eq!(rfc3339_seconds("1970-01-02T00:00:01.5Z"), Some(86_401.5));
        assert_eq!(rfc3339_seconds("0001-01-01T00:00:00Z"), None);
        assert_eq!(rfc3339_seconds("garbage"), None);
    }

    #[test]
    fn overlap_counts_open_intervals() {
        assert_eq!(max_overlap(&[(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]), 2);
        assert_eq!(max_overlap(&[(0.0, 1.0), (1.0, 2.0)]), 1);
        assert_eq!(max_overlap(&[]), 0);
    }

    #[test]
    fn exactness_needs_equal_sets_of_the_wanted_size() {
        let ids = |list: &[&str]| list.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
        let exact = Observed {
            master_running: ids(&["a", "b"]),
            framework_running: ids(&["b", "a"]),
            docker_running: ids(&["a", "b"]),
            agents_active: 3,
            ..Observed::default()
        };
        assert_eq!(exact.inexact(2, 3), None);
        assert!(exact.inexact(3, 3).is_some());
        assert!(exact.inexact(2, 2).is_some());
        let orphan = Observed {
            docker_running: ids(&["a", "b", "c"]),
            ..exact.clone()
        };
        assert!(
            orphan
                .inexact(2, 3)
                .is_some_and(|why| why.contains("framework != docker"))
        );
        let twice = Observed {
            docker_running: ids(&["a", "b", "b"]),
            ..exact
        };
        assert!(twice.inexact(2, 3).is_some_and(|why| why.contains("twice")));
    }
}
