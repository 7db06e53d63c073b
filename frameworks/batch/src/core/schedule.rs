//! Clock ticks: cron fires (with the missed-run and concurrency policies), deadlines, retry
//! backoffs ending, history clean-up and reconciliation of attempts that went quiet.

use std::collections::BTreeMap;

use agora_proto::{AgentId, TaskId};
use jiff::{SignedDuration, Timestamp};

use super::run::{RunId, RunPhase, Trigger};
use super::{BatchCore, Command, StoreOp};
use crate::job::{ConcurrencyPolicy, JobId};

impl BatchCore {
    /// Time passed: act on everything that is due at `now`.
    pub fn tick(&mut self, now: Timestamp) {
        self.fire_schedules(now);
        self.enforce_deadlines(now);
        self.collect_history(now);
        self.reconcile_quiet_attempts(now);
        self.give_up_unreachable_attempts(now);
        self.evaluate(now);
    }

    /// Attempts unreachable for longer than the grace are lost: replaced, without counting
    /// a retry. If their agent still comes back, what they did is counted once or they are
    /// killed (see `AttemptState`).
    fn give_up_unreachable_attempts(&mut self, now: Timestamp) {
        let Ok(cutoff) = now.checked_sub(self.config.unreachable_grace) else {
            return;
        };
        let mut stored = Vec::new();
        for run in self.runs.values_mut() {
            if run.phase != RunPhase::Active {
                continue;
            }
            for index in run.give_up_unreachable_since(cutoff, now) {
                stored.push((run.id, Box::new(run.attempts[index].clone())));
            }
        }
        for (run_id, attempt) in stored {
            tracing::info!(task_id = %attempt.task_id, agent_id = %attempt.agent_id, "attempt unreachable past the grace: replacing it");
            self.metrics.attempts_lost += 1;
            self.persist(StoreOp::PutAttempt(run_id, attempt));
        }
    }

    /// When the next thing is due by the clock alone (a schedule or a backoff), if anything.
    pub fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let schedules = self.jobs.values().filter_map(|job| {
            let schedule = job.spec.cron_schedule()?;
            schedule.next_after(job.last_schedule_time.unwrap_or(job.created_at).max(now))
        });
        let backoffs = self
            .runs
            .values()
            .filter(|run| run.phase == RunPhase::Active)
            .filter_map(|run| run.retry_not_before);
        let grace = self.config.unreachable_grace;
        let unreachable = self
            .runs
            .values()
            .filter(|run| run.phase == RunPhase::Active)
            .flat_map(|run| run.attempts.iter())
            .filter_map(|attempt| attempt.unreachable_since)
            .filter_map(move |since| since.checked_add(grace).ok());
        schedules.chain(backoffs).chain(unreachable).min()
    }

    fn fire_schedules(&mut self, now: Timestamp) {
        let job_ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| job.spec.schedule.is_some())
            .map(|job| job.spec.id.clone())
            .collect();
        for job_id in job_ids {
            self.fire_schedule(&job_id, now);
        }
    }

    fn fire_schedule(&mut self, job_id: &JobId, now: Timestamp) {
        let Some(job) = self.jobs.get(job_id) else {
            return;
        };
        let (Some(schedule), Some(schedule_spec)) =
            (job.spec.cron_schedule(), job.spec.schedule.clone())
        else {
            return;
        };
        let baseline = job.last_schedule_time.unwrap_or(job.created_at);
        let horizon = self
            .config
            .missed_schedule_horizon
            .max(SignedDuration::from_secs(
                schedule_spec
                    .starting_deadline_seconds
                    .map_or(0, |seconds| i64::try_from(seconds).unwrap_or(i64::MAX)),
            ));
        let Some((due, superseded)) = schedule.latest_between(baseline, now, horizon) else {
            return;
        };
        self.metrics.schedule_missed += superseded;
        if superseded > 0 {
            tracing::warn!(job_id = %job_id, superseded, %due, "schedule times missed; only the latest one counts");
        }
        if let Some(job) = self.jobs.get_mut(job_id) {
            job.last_schedule_time = Some(due);
            let stored = Box::new(job.clone());
            self.persist(StoreOp::PutJob(stored));
        }
        let late = now.duration_since(due);
        if let Some(deadline) = schedule_spec.starting_deadline_seconds
            && late > SignedDuration::from_secs(i64::try_from(deadline).unwrap_or(i64::MAX))
        {
            self.metrics.schedule_skips += 1;
            tracing::warn!(job_id = %job_id, %due, late_seconds = late.as_secs(), deadline, "schedule fire skipped: past startingDeadlineSeconds");
            return;
        }
        let active: Vec<RunId> = self
            .runs
            .values()
            .filter(|run| &run.job_id == job_id && !run.phase.is_finished())
            .map(|run| run.id)
            .collect();
        if !active.is_empty() {
            match schedule_spec.concurrency_policy {
                ConcurrencyPolicy::Allow => {}
                ConcurrencyPolicy::Forbid => {
                    self.metrics.schedule_skips += 1;
                    tracing::info!(job_id = %job_id, %due, ?active, "schedule fire skipped: FORBID and a run is active");
                    return;
                }
                ConcurrencyPolicy::Replace => {
                    for run_id in active {
                        self.finish_run(
                            run_id,
                            RunPhase::Cancelled,
                            format!("replaced by the run scheduled for {due}"),
                            now,
                        );
                    }
                }
            }
        }
        self.metrics.schedule_fires += 1;
        self.create_run(job_id, Trigger::Schedule, Some(due), now);
    }

    fn enforce_deadlines(&mut self, now: Timestamp) {
        let overdue: Vec<(RunId, u64)> = self
            .runs
            .values()
            .filter(|run| run.phase == RunPhase::Active)
            .filter_map(|run| {
                let deadline = run.spec.active_deadline_seconds?;
                let started = run.started_at?;
                let limit = SignedDuration::from_secs(i64::try_from(deadline).ok()?);
                (now.duration_since(started) > limit).then_some((run.id, deadline))
            })
            .collect();
        for (run_id, deadline) in overdue {
            self.finish_run(
                run_id,
                RunPhase::Failed,
                format!("deadline exceeded: still active after activeDeadlineSeconds ({deadline})"),
                now,
            );
        }
    }

    /// Drops finished runs past their job's TTL, and the oldest beyond the per-job cap; the
    /// latest run of each job always stays (dependencies look at it).
    fn collect_history(&mut self, now: Timestamp) {
        let mut per_job: BTreeMap<JobId, Vec<RunId>> = BTreeMap::new();
        for run in self.runs.values() {
            per_job.entry(run.job_id.clone()).or_default().push(run.id);
        }
        let mut doomed = Vec::new();
        for (job_id, run_ids) in per_job {
            let latest = run_ids.last().copied();
            let ttl = self
                .jobs
                .get(&job_id)
                .and_then(|job| job.spec.ttl_seconds_after_finished);
            let finished: Vec<RunId> = run_ids
                .iter()
                .copied()
                .filter(|run_id| Some(*run_id) != latest)
                .filter(|run_id| {
                    self.runs
                        .get(run_id)
                        .is_some_and(|run| run.phase.is_finished() && run.active_attempts() == 0)
                })
                .collect();
            let excess = finished
                .len()
                .saturating_sub(self.config.max_finished_runs_per_job);
            for (position, run_id) in finished.iter().enumerate() {
                let expired = ttl.is_some_and(|ttl| {
                    self.runs
                        .get(run_id)
                        .and_then(|run| run.finished_at)
                        .is_some_and(|finished_at| {
                            now.duration_since(finished_at)
                                >= SignedDuration::from_secs(i64::try_from(ttl).unwrap_or(i64::MAX))
                        })
                });
                if expired || position < excess {
                    doomed.push(*run_id);
                }
            }
        }
        for run_id in doomed {
            self.runs.remove(&run_id);
            self.placement_notes.remove(&run_id);
            self.persist(StoreOp::DeleteRun(run_id));
        }
    }

    fn reconcile_quiet_attempts(&mut self, now: Timestamp) {
        let interval = self.config.reconcile_interval;
        if !self.subscribed
            || self
                .last_stale_reconcile
                .is_some_and(|last| now.duration_since(last) < interval)
        {
            return;
        }
        let quiet: Vec<(TaskId, AgentId)> = self
            .runs
            .values()
            .filter(|run| run.active_attempts() > 0)
            .flat_map(|run| run.attempts.iter())
            .filter(|attempt| {
                !attempt.state.is_finished()
                    && (attempt.kill_requested
                        || (attempt.state == super::AttemptState::Launching
                            && now.duration_since(attempt.launched_at) >= interval))
            })
            .map(|attempt| {
                (
                    TaskId::new(attempt.task_id.clone()),
                    AgentId::new(attempt.agent_id.clone()),
                )
            })
            .collect();
        self.last_stale_reconcile = Some(now);
        if !quiet.is_empty() {
            self.outbox.push(Command::Reconcile(quiet));
        }
    }
}
