//! Status updates in: attempts advance, runs count successes and failures, retries back off.

use std::time::Duration;

use agora_proto::v1;
use agora_proto::{Backoff, seeded_jitter};
use jiff::{SignedDuration, Timestamp};

use super::run::{AttemptOutcome, RunPhase};
use super::{BatchCore, StoreOp};

/// The delay before the next attempt after the `failures`-th failure: the cluster's one
/// backoff, doubling from `backoffSeconds` up to `maxBackoffSeconds`, with its jitter derived
/// from the run's `seed` so the same delay comes out when recomputed.
pub fn retry_delay(initial_seconds: f64, max_seconds: f64, failures: u32, seed: u64) -> Duration {
    let initial = Duration::try_from_secs_f64(initial_seconds).unwrap_or(Duration::from_secs(1));
    let max = Duration::try_from_secs_f64(max_seconds).unwrap_or(initial);
    let step = failures.clamp(1, 64) - 1;
    Backoff::new(initial, max.max(initial)).jittered(step, seeded_jitter(seed, step))
}

impl BatchCore {
    /// A status update from the master (or an answer to reconciliation).
    pub fn status_update(&mut self, status: v1::TaskStatus, now: Timestamp) {
        let state = status.state();
        let Some((run_id, index)) = self.find_attempt(&status.task_id) else {
            if !agora_proto::is_terminal(state) && !status.agent_id.is_empty() {
                tracing::info!(task_id = %status.task_id, ?state, "killing a task no run owns");
                self.kill(status.task_id.clone(), status.agent_id.clone());
            }
            return;
        };
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        let attempt = &mut run.attempts[index];
        if attempt.agent_id.is_empty() && !status.agent_id.is_empty() {
            attempt.agent_id = status.agent_id.clone();
        }
        let outcome =
            match run.observe_attempt(index, state, status.exit_code, &status.message, now) {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::debug!(%error, "duplicate or late update");
                    return;
                }
            };
        let attempt = &run.attempts[index];
        let still_unfinished = !attempt.state.is_finished();
        let must_die = outcome == AttemptOutcome::Returned
            || (still_unfinished && (attempt.kill_requested || run.phase.is_finished()));
        let kill_target = (attempt.task_id.clone(), attempt.agent_id.clone());
        let exit_code = attempt.exit_code;
        let message = attempt.message.clone();
        let stored_attempt = Box::new(attempt.clone());
        let mut finish = None;
        let mut run_changed = false;
        if run.phase == RunPhase::Active {
            match outcome {
                AttemptOutcome::Succeeded => {
                    self.metrics.attempts_succeeded += 1;
                    run.succeeded += 1;
                    run_changed = true;
                    if run.succeeded >= run.spec.completions {
                        finish = Some((
                            RunPhase::Succeeded,
                            format!("{} of {} completions", run.succeeded, run.spec.completions),
                        ));
                    }
                }
                AttemptOutcome::Failed => {
                    self.metrics.attempts_failed += 1;
                    run.failures += 1;
                    run_changed = true;
                    run.exit_code = exit_code;
                    let what = match exit_code {
                        Some(code) => format!("exited with code {code}"),
                        None => format!("ended {state:?}: {message}"),
                    };
                    if run.failures > run.spec.retries {
                        finish = Some((
                            RunPhase::Failed,
                            format!(
                                "attempt {} {what}; {} failures exceed retries ({})",
                                kill_target.0, run.failures, run.spec.retries
                            ),
                        ));
                    } else {
                        let delay = retry_delay(
                            run.spec.backoff_seconds,
                            run.spec.max_backoff_seconds,
                            run.failures,
                            run.id.0,
                        );
                        let delay = SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO);
                        run.retry_not_before = now.checked_add(delay).ok();
                        run.message = format!(
                            "attempt {} {what}; retry {} of {} after {:.1}s",
                            kill_target.0,
                            run.failures,
                            run.spec.retries,
                            delay.as_secs_f64()
                        );
                    }
                }
                AttemptOutcome::NotStarted => self.metrics.attempts_not_started += 1,
                AttemptOutcome::Lost => {
                    self.metrics.attempts_lost += 1;
                    run.message = format!(
                        "attempt {} lost with agent {}: replaced without counting a retry",
                        kill_target.0, kill_target.1
                    );
                }
                AttemptOutcome::Returned => {
                    tracing::info!(task_id = %kill_target.0, agent_id = %kill_target.1, "a lost attempt is running again: killing it, its replacement took its place");
                }
                AttemptOutcome::Progress | AttemptOutcome::KilledByUs => {}
            }
        }
        // Only what changed: the attempt, and the run's own record when its counts moved.
        let stored_run = run_changed.then(|| Box::new(run.header()));
        self.persist(StoreOp::PutAttempt(run_id, stored_attempt));
        if let Some(stored_run) = stored_run {
            self.persist(StoreOp::PutRun(stored_run));
        }
        if must_die {
            self.kill(kill_target.0, kill_target.1);
        }
        if let Some((phase, message)) = finish {
            self.finish_run(run_id, phase, message, now);
        }
        self.evaluate(now);
    }
}
