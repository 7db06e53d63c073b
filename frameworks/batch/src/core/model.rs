//! What the core persists and what it asks its shell to do.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::run::{Attempt, Run, RunId};
use crate::job::{JobId, JobSpec};

/// Daemon-wide facts kept in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The framework id the master assigned; re-subscriptions reuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<String>,
    /// The next run number to hand out.
    pub next_run_id: u64,
}

/// A job as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The definition in force.
    pub spec: JobSpec,
    /// When it was first submitted.
    pub created_at: Timestamp,
    /// When its definition last changed.
    pub updated_at: Timestamp,
    /// The schedule time the cron schedule last fired for (or skipped): never fired twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,
}

/// One write to the store. Consecutive writes of one core step form one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Replace the daemon-wide facts.
    PutMeta(Meta),
    /// Insert or replace a job.
    PutJob(Box<JobRecord>),
    /// Remove a job.
    DeleteJob(JobId),
    /// Insert or replace a run's own record (its `attempts` left empty: they are stored one
    /// by one with [`StoreOp::PutAttempt`]).
    PutRun(Box<Run>),
    /// Insert or replace one attempt of a run.
    PutAttempt(RunId, Box<Attempt>),
    /// Remove a run with its attempts.
    DeleteRun(RunId),
}

/// What the core asks the runtime to do, in order: the SDK's command vocabulary with
/// batch's store writes (batch publishes nothing). The runtime makes every `Persist` durable
/// before it carries out any later command (a launch is stored before it is sent), and
/// acknowledges each update once what it changed is stored.
pub type Command = agora_sdk::Command<StoreOp, std::convert::Infallible>;

/// Tunables of the core.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Filter for offers declined while work waits that did not fit (short: retry soon).
    pub busy_refuse_seconds: f64,
    /// Filter for offers declined when nothing waits.
    pub idle_refuse_seconds: f64,
    /// Attempts without any status this long after launch are reconciled (and again each
    /// interval).
    pub reconcile_interval: SignedDuration,
    /// Finished runs kept per job beyond their TTL rules (oldest dropped first).
    pub max_finished_runs_per_job: usize,
    /// How far back a late schedule looks for the fire times it missed.
    pub missed_schedule_horizon: SignedDuration,
    /// How long an attempt whose agent is unreachable keeps its place (it still counts
    /// towards `parallelism`) before it is given up as lost and replaced: an agent back from a
    /// short partition reports what its attempts did, and no work runs twice.
    pub unreachable_grace: SignedDuration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            busy_refuse_seconds: 1.0,
            idle_refuse_seconds: 30.0,
            reconcile_interval: SignedDuration::from_secs(15),
            max_finished_runs_per_job: 100,
            unreachable_grace: SignedDuration::from_secs(60),
            missed_schedule_horizon: SignedDuration::from_hours(24),
        }
    }
}

/// Everything the store holds, read back at startup.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Daemon-wide facts.
    pub meta: Meta,
    /// Every job.
    pub jobs: Vec<JobRecord>,
    /// Every run kept, with its attempts.
    pub runs: Vec<Run>,
}

/// Counters the core keeps for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreMetrics {
    /// Offers received.
    pub offers_received: u64,
    /// Offers declined.
    pub offers_declined: u64,
    /// Tasks launched.
    pub tasks_launched: u64,
    /// Attempts that succeeded.
    pub attempts_succeeded: u64,
    /// Attempts that failed (counted against retries).
    pub attempts_failed: u64,
    /// Attempts that never ran.
    pub attempts_not_started: u64,
    /// Attempts lost with their agent (replaced without counting a retry).
    pub attempts_lost: u64,
    /// Runs created by the schedule.
    pub schedule_fires: u64,
    /// Schedule fires skipped: FORBID with a run active, or past startingDeadlineSeconds.
    pub schedule_skips: u64,
    /// Schedule times superseded by a later one while the daemon was away.
    pub schedule_missed: u64,
    /// Runs that succeeded.
    pub runs_succeeded: u64,
    /// Runs that failed.
    pub runs_failed: u64,
    /// Runs cancelled.
    pub runs_cancelled: u64,
}
