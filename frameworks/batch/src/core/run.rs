//! Runs and attempts: the two lifecycles the core drives, as enums with checked transitions.

use std::fmt;

use agora_proto::TaskPhase;
use agora_proto::v1::TaskState;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobSpec};

/// A run's number, unique across all jobs of this daemon (so task ids never repeat, even
/// when a job is deleted and submitted again).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The task id of attempt `attempt` of run `run` of `job`: `<job>.r<run>.a<attempt>`.
/// Deterministic, so a restarted daemon recognises its tasks and never launches one twice.
pub fn task_id_for(job: &JobId, run: RunId, attempt: u32) -> String {
    format!("{job}.r{run}.a{attempt}")
}

/// The run and attempt numbers in a task id made by [`task_id_for`].
pub fn parse_task_id(task_id: &str) -> Option<(RunId, u32)> {
    let (rest, attempt) = task_id.rsplit_once(".a")?;
    let (_, run) = rest.rsplit_once(".r")?;
    Some((RunId(run.parse().ok()?), attempt.parse().ok()?))
}

/// Why a run was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The job was submitted (jobs without a schedule run once when submitted).
    Submit,
    /// Someone asked for a run now.
    Manual,
    /// The cron schedule fired.
    Schedule,
    /// All of the job's dependencies succeeded.
    Dependency,
}

/// Where a run is in its life.
///
/// `Waiting` -> `Active` -> one of the final phases; `Waiting` may also end `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunPhase {
    /// Not started: a dependency's latest run has not succeeded yet.
    Waiting,
    /// Started: attempts are launched until enough succeed or too many fail.
    Active,
    /// `completions` attempts succeeded.
    Succeeded,
    /// Retries or the deadline ran out.
    Failed,
    /// Cancelled by a user, replaced by a newer run, or its job was deleted.
    Cancelled,
}

impl RunPhase {
    /// True for the final phases.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled
        )
    }
}

impl fmt::Display for RunPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            RunPhase::Waiting => "WAITING",
            RunPhase::Active => "ACTIVE",
            RunPhase::Succeeded => "SUCCEEDED",
            RunPhase::Failed => "FAILED",
            RunPhase::Cancelled => "CANCELLED",
        };
        f.write_str(text)
    }
}

/// Where one attempt (one task) is in its life.
///
/// `Launching` (persisted, accept sent or about to be) -> `Staging` -> `Running` -> a final
/// state. `NotStarted` is final for attempts the master never ran (dropped offer, lost during
/// a failover before launch): they do not count against `retries`.
///
/// `Lost` is the one final state that can still change: the attempt's agent was cut off
/// and the attempt replaced (without counting a retry, as Nomad replaces lost allocations),
/// but the agent may come back. What it then reports is news: `TASK_FINISHED` makes the
/// attempt `Succeeded` and counts it (once: `Succeeded` is final), `TASK_FAILED` makes it
/// `Failed` and counts that, and a copy still running is killed, since its replacement took
/// its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptState {
    /// Persisted before the launch is sent; no status seen yet.
    Launching,
    /// The agent is preparing it.
    Staging,
    /// Running.
    Running,
    /// Its agent cannot be reached: it may still be running. It keeps its place until the
    /// agent comes back or the unreachable grace runs out (then `Lost`).
    Unreachable,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or the task was invalid.
    Failed,
    /// Killed (by us when the run ended, or by someone else: that counts as a failure).
    Killed,
    /// Lost with its agent after it had started; replaced. Its agent may still report it.
    Lost,
    /// Never ran; launched again without counting a retry.
    NotStarted,
}

impl AttemptState {
    /// True for the final states.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            AttemptState::Launching
                | AttemptState::Staging
                | AttemptState::Running
                | AttemptState::Unreachable
        )
    }
}

/// A status update that does not fit an attempt's state (e.g. a duplicate after the end).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempt {task_id} is {from:?}; ignoring {to:?}")]
pub struct IllegalTransition {
    /// The attempt's task id.
    pub task_id: String,
    /// Its state.
    pub from: AttemptState,
    /// The task state that arrived.
    pub to: TaskState,
}

/// What an accepted status update means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Still going.
    Progress,
    /// It succeeded.
    Succeeded,
    /// It failed; counts against `retries`.
    Failed,
    /// It never ran; does not count.
    NotStarted,
    /// It ended because we killed it.
    KilledByUs,
    /// Its agent is gone: replaced at once, without counting against `retries`.
    Lost,
    /// A lost attempt is running again (its agent came back): it must be killed, its
    /// replacement has taken its place.
    Returned,
}

/// One task of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 0-based, per run.
    pub number: u32,
    /// `<job>.r<run>.a<number>`.
    pub task_id: String,
    /// The agent it was launched on.
    pub agent_id: String,
    /// That agent's hostname.
    pub hostname: String,
    /// Where it is.
    pub state: AttemptState,
    /// When the launch was decided.
    pub launched_at: Timestamp,
    /// First RUNNING update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The final update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The latest status message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A kill was sent for it.
    #[serde(default)]
    pub kill_requested: bool,
    /// Since when its agent is unreachable (while `Unreachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
}

impl Attempt {
    /// A new attempt about to be launched.
    pub fn launching(
        number: u32,
        task_id: String,
        agent_id: String,
        hostname: String,
        now: Timestamp,
    ) -> Self {
        Self {
            number,
            task_id,
            agent_id,
            hostname,
            state: AttemptState::Launching,
            launched_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            message: String::new(),
            kill_requested: false,
            unreachable_since: None,
        }
    }

    /// The earliest phase of the cluster's task state machine this live attempt's task can
    /// be in (an attempt folds staging with starting, and running with killing); `None` once
    /// the attempt is finished. A report the task could not make from there is refused.
    fn task_phase(&self) -> Option<TaskPhase> {
        match self.state {
            AttemptState::Launching | AttemptState::Staging => Some(TaskPhase::Staging),
            AttemptState::Running => Some(TaskPhase::Running),
            AttemptState::Unreachable => Some(TaskPhase::Unreachable),
            _ => None,
        }
    }

    /// Applies a task state from a status update.
    pub fn observe(
        &mut self,
        state: TaskState,
        exit_code: Option<i32>,
        message: &str,
        now: Timestamp,
    ) -> Result<AttemptOutcome, IllegalTransition> {
        if self.state == AttemptState::Lost {
            return self.observe_after_lost(state, exit_code, message, now);
        }
        let goes_back = self.task_phase().is_some_and(|phase| {
            TaskPhase::of(state).is_some_and(|_| phase.receive(state).is_err())
        });
        if self.state.is_finished() || goes_back {
            return Err(IllegalTransition {
                task_id: self.task_id.clone(),
                from: self.state,
                to: state,
            });
        }
        if !message.is_empty() {
            self.message = message.to_owned();
        }
        let never_started = self.state == AttemptState::Launching;
        if state != TaskState::TaskUnreachable {
            self.unreachable_since = None;
        }
        let (next, outcome) = match state {
            TaskState::TaskStaging | TaskState::TaskStarting => {
                (AttemptState::Staging, AttemptOutcome::Progress)
            }
            TaskState::TaskRunning | TaskState::TaskKilling => {
                if self.started_at.is_none() {
                    self.started_at = Some(now);
                }
                (AttemptState::Running, AttemptOutcome::Progress)
            }
            // It may still run: it keeps its place until its agent returns or the
            // unreachable grace runs out.
            TaskState::TaskUnreachable if never_started => {
                (AttemptState::NotStarted, AttemptOutcome::NotStarted)
            }
            TaskState::TaskUnreachable => {
                if self.unreachable_since.is_none() {
                    self.unreachable_since = Some(now);
                }
                (AttemptState::Unreachable, AttemptOutcome::Progress)
            }
            TaskState::Unspecified => (self.state, AttemptOutcome::Progress),
            TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskError
            | TaskState::TaskKilled => self.ended(state),
            TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskUnknown => {
                if never_started || self.kill_requested {
                    (AttemptState::NotStarted, AttemptOutcome::NotStarted)
                } else {
                    (AttemptState::Lost, AttemptOutcome::Lost)
                }
            }
        };
        self.state = next;
        if next.is_finished() {
            self.finished_at = Some(now);
            self.exit_code = exit_code;
        }
        Ok(outcome)
    }

    /// Where an attempt ends for a terminal state its task reported: FINISHED succeeds, FAILED
    /// and ERROR fail, KILLED fails unless we asked for it. Any other state is not an end the
    /// task reported and counts as progress.
    fn ended(&self, state: TaskState) -> (AttemptState, AttemptOutcome) {
        match state {
            TaskState::TaskFinished => (AttemptState::Succeeded, AttemptOutcome::Succeeded),
            TaskState::TaskFailed | TaskState::TaskError => {
                (AttemptState::Failed, AttemptOutcome::Failed)
            }
            TaskState::TaskKilled if self.kill_requested => {
                (AttemptState::Killed, AttemptOutcome::KilledByUs)
            }
            TaskState::TaskKilled => (AttemptState::Killed, AttemptOutcome::Failed),
            _ => (self.state, AttemptOutcome::Progress),
        }
    }

    /// The unreachable grace ran out: the attempt is given up as lost (and replaced).
    pub fn give_up_unreachable(&mut self, now: Timestamp) -> bool {
        if self.state != AttemptState::Unreachable {
            return false;
        }
        self.state = AttemptState::Lost;
        self.finished_at = Some(now);
        self.message = format!(
            "agent {} unreachable past the grace; replaced without counting a retry",
            self.agent_id
        );
        true
    }

    /// What a lost attempt's agent reports when it comes back (see [`AttemptState`]).
    fn observe_after_lost(
        &mut self,
        state: TaskState,
        exit_code: Option<i32>,
        message: &str,
        now: Timestamp,
    ) -> Result<AttemptOutcome, IllegalTransition> {
        let (next, outcome) = match state {
            TaskState::TaskStaging
            | TaskState::TaskStarting
            | TaskState::TaskRunning
            | TaskState::TaskKilling => {
                // Killed again on every report while it runs: a kill is idempotent, and
                // one that went nowhere is sent again this way.
                self.kill_requested = true;
                (AttemptState::Lost, AttemptOutcome::Returned)
            }
            TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskError
            | TaskState::TaskKilled => self.ended(state),
            TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskUnknown
            | TaskState::TaskUnreachable
            | TaskState::Unspecified => {
                return Err(IllegalTransition {
                    task_id: self.task_id.clone(),
                    from: self.state,
                    to: state,
                });
            }
        };
        if !message.is_empty() {
            self.message = message.to_owned();
        }
        if next != AttemptState::Lost {
            self.state = next;
            self.finished_at = Some(now);
            self.exit_code = exit_code;
        }
        Ok(outcome)
    }
}

/// One execution of a job: attempts until `completions` succeed or it fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The run's number.
    pub id: RunId,
    /// Its job.
    pub job_id: JobId,
    /// Why it was created.
    pub trigger: Trigger,
    /// The job as it was when the run was created (later edits apply to later runs).
    pub spec: JobSpec,
    /// Where it is.
    pub phase: RunPhase,
    /// For scheduled runs: the schedule time it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it became active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Attempts that succeeded.
    pub succeeded: u32,
    /// Attempts that failed (counted against `retries`).
    pub failures: u32,
    /// No new attempt before this time (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_before: Option<Timestamp>,
    /// Why it waits, or why it ended (planner explanation, dependency, failure).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For failed runs: the last failed attempt's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Every attempt, in launch order: `attempts[i].number == i`. The store keeps them as
    /// records of their own (see [`Run::header`]).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// How many of `attempts` are not finished, kept as they change so that checks run on
    /// every update do not scan the attempts. Recomputed by [`Run::recount`] after loading.
    #[serde(skip)]
    active: usize,
}

/// A run lifecycle step that its phase does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run {run} is {phase}; cannot {action}")]
pub struct IllegalRunTransition {
    /// The run.
    pub run: RunId,
    /// Its phase.
    pub phase: RunPhase,
    /// What was attempted.
    pub action: &'static str,
}

impl Run {
    /// A new run in `Waiting`.
    pub fn new(
        id: RunId,
        spec: JobSpec,
        trigger: Trigger,
        scheduled_for: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            job_id: spec.id.clone(),
            trigger,
            spec,
            phase: RunPhase::Waiting,
            scheduled_for,
            created_at: now,
            started_at: None,
            finished_at: None,
            succeeded: 0,
            failures: 0,
            retry_not_before: None,
            message: String::new(),
            exit_code: None,
            attempts: Vec::new(),
            active: 0,
        }
    }

    /// The run as the store keeps it: every field but the attempts (stored one by one).
    pub fn header(&self) -> Run {
        Run {
            id: self.id,
            job_id: self.job_id.clone(),
            trigger: self.trigger,
            spec: self.spec.clone(),
            phase: self.phase,
            scheduled_for: self.scheduled_for,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            succeeded: self.succeeded,
            failures: self.failures,
            retry_not_before: self.retry_not_before,
            message: self.message.clone(),
            exit_code: self.exit_code,
            attempts: Vec::new(),
            active: 0,
        }
    }

    /// Recomputes what is derived from the attempts (after they were set from outside, e.g.
    /// read back from the store).
    pub fn recount(&mut self) {
        self.active = self
            .attempts
            .iter()
            .filter(|attempt| !attempt.state.is_finished())
            .count();
    }

    /// Attempts not finished yet.
    pub fn active_attempts(&self) -> usize {
        self.active
    }

    /// The index in `attempts` of attempt `number` with task id `task_id`.
    pub fn attempt_index(&self, number: u32, task_id: &str) -> Option<usize> {
        let matches = |attempt: &Attempt| attempt.number == number && attempt.task_id == task_id;
        match self.attempts.get(number as usize) {
            Some(attempt) if matches(attempt) => Some(number as usize),
            // Numbers are positions; a gap (never written so) falls back to a search.
            _ => self.attempts.iter().position(matches),
        }
    }

    /// Adds an attempt (the next number).
    pub fn push_attempt(&mut self, attempt: Attempt) {
        if !attempt.state.is_finished() {
            self.active += 1;
        }
        self.attempts.push(attempt);
    }

    /// Applies a status update to attempt `index` (see [`Attempt::observe`]).
    pub fn observe_attempt(
        &mut self,
        index: usize,
        state: TaskState,
        exit_code: Option<i32>,
        message: &str,
        now: Timestamp,
    ) -> Result<AttemptOutcome, IllegalTransition> {
        let attempt = &mut self.attempts[index];
        let was_active = !attempt.state.is_finished();
        let outcome = attempt.observe(state, exit_code, message, now)?;
        if was_active && attempt.state.is_finished() {
            self.active -= 1;
        }
        Ok(outcome)
    }

    /// Gives up attempts unreachable since before `cutoff`; returns their indexes.
    pub fn give_up_unreachable_since(&mut self, cutoff: Timestamp, now: Timestamp) -> Vec<usize> {
        let mut given_up = Vec::new();
        for (index, attempt) in self.attempts.iter_mut().enumerate() {
            let expired = attempt
                .unreachable_since
                .is_some_and(|since| since <= cutoff);
            if expired && attempt.give_up_unreachable(now) {
                given_up.push(index);
            }
        }
        self.active -= given_up.len();
        given_up
    }

    /// How many attempts may be launched now: active attempts stay within `parallelism`
    /// and within the completions still missing.
    pub fn launchable(&self, now: Timestamp) -> usize {
        if self.phase != RunPhase::Active || self.retry_not_before.is_some_and(|t| now < t) {
            return 0;
        }
        let missing = self.spec.completions.saturating_sub(self.succeeded) as usize;
        let limit = missing.min(self.spec.parallelism as usize);
        limit.saturating_sub(self.active_attempts())
    }

    /// `Waiting` -> `Active`.
    pub fn start(&mut self, now: Timestamp) -> Result<(), IllegalRunTransition> {
        if self.phase != RunPhase::Waiting {
            return Err(self.illegal("start"));
        }
        self.phase = RunPhase::Active;
        self.started_at = Some(now);
        self.message.clear();
        Ok(())
    }

    /// Ends the run (`Active` -> `Succeeded`/`Failed`/`Cancelled`, `Waiting` -> `Cancelled`
    /// or `Failed`); returns the indexes of the attempts to kill.
    pub fn finish(
        &mut self,
        phase: RunPhase,
        message: String,
        now: Timestamp,
    ) -> Result<Vec<usize>, IllegalRunTransition> {
        let allowed = match self.phase {
            RunPhase::Active => phase.is_finished(),
            RunPhase::Waiting => matches!(phase, RunPhase::Cancelled | RunPhase::Failed),
            _ => false,
        };
        if !allowed {
            return Err(self.illegal("finish"));
        }
        self.phase = phase;
        self.finished_at = Some(now);
        self.message = message;
        self.retry_not_before = None;
        Ok(self.kill_active_attempts())
    }

    /// Marks every unfinished attempt as being killed; returns their indexes in `attempts`.
    pub fn kill_active_attempts(&mut self) -> Vec<usize> {
        if self.active == 0 {
            return Vec::new();
        }
        self.attempts
            .iter_mut()
            .enumerate()
            .filter(|(_, attempt)| !attempt.state.is_finished())
            .map(|(index, attempt)| {
                attempt.kill_requested = true;
                index
            })
            .collect()
    }

    fn illegal(&self, action: &'static str) -> IllegalRunTransition {
        IllegalRunTransition {
            run: self.id,
            phase: self.phase,
            action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_even_with_dots_in_the_job_id() {
        let id = task_id_for(&JobId::new("etl.v2.r1"), RunId(42), 7);
        assert_eq!(id, "etl.v2.r1.r42.a7");
        assert_eq!(parse_task_id(&id), Some((RunId(42), 7)));
        assert_eq!(parse_task_id("other-framework-task"), None);
    }

    /// An attempt just launched, and the time it was launched at.
    fn launching() -> (Attempt, Timestamp) {
        let now = Timestamp::UNIX_EPOCH;
        let attempt = Attempt::launching(0, "a.r1.a0".into(), "ag".into(), "h".into(), now);
        (attempt, now)
    }

    #[test]
    fn attempts_refuse_updates_after_the_end() {
        let (mut attempt, now) = launching();
        assert_eq!(
            attempt.observe(TaskState::TaskRunning, None, "", now),
            Ok(AttemptOutcome::Progress)
        );
        assert_eq!(
            attempt.observe(TaskState::TaskFailed, Some(1), "exit 1", now),
            Ok(AttemptOutcome::Failed)
        );
        assert_eq!(attempt.exit_code, Some(1));
        assert!(
            attempt
                .observe(TaskState::TaskFinished, Some(0), "", now)
                .is_err()
        );
    }

    #[test]
    fn a_running_attempt_never_goes_back_to_starting() {
        let (mut attempt, now) = launching();
        assert_eq!(
            attempt.observe(TaskState::TaskStarting, None, "", now),
            Ok(AttemptOutcome::Progress)
        );
        assert_eq!(
            attempt.observe(TaskState::TaskRunning, None, "", now),
            Ok(AttemptOutcome::Progress)
        );
        for late in [TaskState::TaskStarting, TaskState::TaskStaging] {
            assert!(attempt.observe(late, None, "", now).is_err());
            assert_eq!(attempt.state, AttemptState::Running);
        }
        assert_eq!(
            attempt.observe(TaskState::TaskRunning, None, "", now),
            Ok(AttemptOutcome::Progress)
        );
    }

    #[test]
    fn an_attempt_lost_before_it_started_does_not_count() {
        let (mut attempt, now) = launching();
        assert_eq!(
            attempt.observe(TaskState::TaskLost, None, "unknown", now),
            Ok(AttemptOutcome::NotStarted)
        );
    }
}
