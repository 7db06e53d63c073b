//! The sans-IO core of batchframework: jobs, runs and attempts as state machines. Inputs are
//! API commands, offers, status updates and clock ticks (time is always passed in); outputs
//! are [`Command`]s for the shell, taken with [`BatchCore::take_commands`].

mod model;
mod offers;
mod run;
mod schedule;
mod updates;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use agora_proto::{AgentId, TaskId};
use jiff::Timestamp;
use serde::Serialize;

pub use model::{Command, CoreConfig, CoreMetrics, JobRecord, Meta, Snapshot, StoreOp};
pub use run::{
    Attempt, AttemptOutcome, AttemptState, IllegalRunTransition, IllegalTransition, Run, RunId,
    RunPhase, Trigger, parse_task_id, task_id_for,
};

use crate::job::{FieldError, JobId, JobSpec, JobSpecError};

/// Why an API command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The job or run does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The job definition is invalid.
    #[error(transparent)]
    Invalid(#[from] JobSpecError),
}

/// A job with what is known about its runs, for the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// The definition in force.
    pub spec: JobSpec,
    /// When it was first submitted.
    pub created_at: Timestamp,
    /// When its definition last changed.
    pub updated_at: Timestamp,
    /// The schedule time the schedule last fired for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,
    /// When the schedule fires next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Timestamp>,
    /// Runs not finished yet.
    pub active_runs: Vec<RunId>,
    /// The latest run's number and phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<RunSummary>,
}

/// A run in one line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run.
    pub id: RunId,
    /// Its phase.
    pub phase: RunPhase,
}

/// A run for the API: the stored run plus why it is waiting, when it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The run.
    #[serde(flatten)]
    pub run: Run,
    /// Attempts running or being launched.
    pub active: usize,
    /// Why no (more) attempts are placed right now, when that is so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
}

/// The core. See the module docs.
#[derive(Debug)]
pub struct BatchCore {
    config: CoreConfig,
    meta: Meta,
    jobs: BTreeMap<JobId, JobRecord>,
    runs: BTreeMap<RunId, Run>,
    /// Why active runs have attempts left unplaced (from the planner); not persisted.
    placement_notes: HashMap<RunId, String>,
    /// Revive (true) or Suppress (false) last sent on this subscription.
    offers_wanted: Option<bool>,
    subscribed: bool,
    last_stale_reconcile: Option<Timestamp>,
    outbox: Vec<Command>,
    metrics: CoreMetrics,
}

impl BatchCore {
    /// A core holding what the store held.
    pub fn new(config: CoreConfig, snapshot: Snapshot) -> Self {
        let mut meta = snapshot.meta;
        let runs: BTreeMap<RunId, Run> = snapshot
            .runs
            .into_iter()
            .map(|mut run| {
                run.recount();
                (run.id, run)
            })
            .collect();
        if let Some(highest) = runs.keys().next_back() {
            meta.next_run_id = meta.next_run_id.max(highest.0 + 1);
        }
        Self {
            config,
            meta,
            jobs: snapshot
                .jobs
                .into_iter()
                .map(|job| (job.spec.id.clone(), job))
                .collect(),
            runs,
            placement_notes: HashMap::new(),
            offers_wanted: None,
            subscribed: false,
            last_stale_reconcile: None,
            outbox: Vec::new(),
            metrics: CoreMetrics::default(),
        }
    }

    /// Commands produced since the last call, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }

    /// The framework id to subscribe with, if one was stored.
    pub fn framework_id(&self) -> Option<&str> {
        self.meta.framework_id.as_deref()
    }

    /// The counters.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// True while subscribed to the master.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    // ----- driver events -------------------------------------------------------------------

    /// The driver subscribed (first time or again): store the id, reconcile every attempt not
    /// known to be finished, and tell the master whether offers are wanted.
    pub fn subscribed(&mut self, framework_id: &str, now: Timestamp) {
        self.subscribed = true;
        if self.meta.framework_id.as_deref() != Some(framework_id) {
            self.meta.framework_id = Some(framework_id.to_owned());
            self.persist(StoreOp::PutMeta(self.meta.clone()));
        }
        let unfinished = self.unfinished_attempts();
        if !unfinished.is_empty() {
            tracing::info!(tasks = unfinished.len(), "reconciling attempts");
            self.outbox.push(Command::Reconcile(unfinished));
        }
        self.last_stale_reconcile = Some(now);
        self.offers_wanted = None;
        self.evaluate(now);
    }

    /// The subscription ended; the driver re-subscribes by itself.
    pub fn disconnected(&mut self) {
        self.subscribed = false;
    }

    /// Accepting offers for these tasks failed. `refused`: the master answered and refused
    /// (the tasks were not launched); otherwise the outcome is unknown and they are reconciled.
    pub fn launch_failed(&mut self, task_ids: &[TaskId], refused: bool, now: Timestamp) {
        if !refused {
            let listed: Vec<(TaskId, AgentId)> = task_ids
                .iter()
                .filter_map(|task_id| self.find_attempt(task_id.as_str()))
                .filter_map(|(run_id, index)| {
                    let attempt = &self.runs.get(&run_id)?.attempts[index];
                    (!attempt.state.is_finished()).then(|| {
                        (
                            TaskId::new(attempt.task_id.clone()),
                            AgentId::new(attempt.agent_id.clone()),
                        )
                    })
                })
                .collect();
            self.outbox.push(Command::Reconcile(listed));
            return;
        }
        for task_id in task_ids {
            let status = agora_proto::v1::TaskStatus {
                task_id: task_id.as_str().to_owned(),
                state: agora_proto::v1::TaskState::TaskDropped as i32,
                message: "the master refused the launch".to_owned(),
                ..Default::default()
            };
            self.status_update(status, now);
        }
    }

    /// The master cannot reach an agent: its unfinished attempts are unreachable. They keep
    /// their place for the unreachable grace and are replaced, without counting a retry, only
    /// if the agent does not come back in time.
    pub fn agent_lost(&mut self, agent_id: &AgentId, now: Timestamp) {
        let lost: Vec<String> = self
            .runs
            .values()
            .filter(|run| run.active_attempts() > 0)
            .flat_map(|run| run.attempts.iter())
            .filter(|attempt| !attempt.state.is_finished() && attempt.agent_id == agent_id.as_str())
            .map(|attempt| attempt.task_id.clone())
            .collect();
        for task_id in lost {
            let status = agora_proto::v1::TaskStatus {
                task_id,
                agent_id: agent_id.as_str().to_owned(),
                // Unreachable, not lost: the attempt keeps its place for the unreachable
                // grace, and is replaced only if its agent does not come back in time.
                state: agora_proto::v1::TaskState::TaskUnreachable as i32,
                message: format!("agent {agent_id} is unreachable"),
                ..Default::default()
            };
            self.status_update(status, now);
        }
    }

    // ----- API ------------------------------------------------------------------------------

    /// Adds a job. A job without a schedule gets its first run at once (waiting for its
    /// dependencies when it has any); returns that run's id.
    pub fn create_job(&mut self, spec: JobSpec, now: Timestamp) -> Result<Option<RunId>, ApiError> {
        if self.jobs.contains_key(&spec.id) {
            return Err(ApiError::Conflict(format!(
                "job {} already exists; PUT /v1/jobs/{} to change it",
                spec.id, spec.id
            )));
        }
        self.check_dependencies(&spec)?;
        let record = JobRecord {
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
            last_schedule_time: None,
        };
        self.jobs.insert(spec.id.clone(), record.clone());
        self.persist(StoreOp::PutJob(Box::new(record)));
        tracing::info!(job_id = %spec.id, "job created");
        let run = if spec.schedule.is_none() {
            Some(self.create_run(&spec.id, Trigger::Submit, None, now))
        } else {
            None
        };
        self.evaluate(now);
        Ok(run)
    }

    /// Replaces a job's definition; runs already created keep the definition they started
    /// with.
    pub fn update_job(&mut self, spec: JobSpec, now: Timestamp) -> Result<(), ApiError> {
        self.check_dependencies(&spec)?;
        let record = self
            .jobs
            .get_mut(&spec.id)
            .ok_or_else(|| ApiError::NotFound(format!("job {}", spec.id)))?;
        record.spec = spec;
        record.updated_at = now;
        let record = record.clone();
        self.persist(StoreOp::PutJob(Box::new(record)));
        self.evaluate(now);
        Ok(())
    }

    /// Deletes a job with its runs; active attempts are killed. Refused while other jobs
    /// depend on it.
    pub fn delete_job(&mut self, job_id: &JobId, now: Timestamp) -> Result<(), ApiError> {
        if !self.jobs.contains_key(job_id) {
            return Err(ApiError::NotFound(format!("job {job_id}")));
        }
        let dependents: Vec<String> = self
            .jobs
            .values()
            .filter(|job| job.spec.dependencies.contains(job_id))
            .map(|job| job.spec.id.to_string())
            .collect();
        if !dependents.is_empty() {
            return Err(ApiError::Conflict(format!(
                "jobs {} depend on {job_id}; delete or change them first",
                dependents.join(", ")
            )));
        }
        let run_ids: Vec<RunId> = self.runs_of(job_id).map(|run| run.id).collect();
        for run_id in run_ids {
            if let Some(mut run) = self.runs.remove(&run_id) {
                for index in run.kill_active_attempts() {
                    let attempt = &run.attempts[index];
                    self.kill(attempt.task_id.clone(), attempt.agent_id.clone());
                }
                self.placement_notes.remove(&run_id);
                self.persist(StoreOp::DeleteRun(run_id));
            }
        }
        self.jobs.remove(job_id);
        self.persist(StoreOp::DeleteJob(job_id.clone()));
        tracing::info!(job_id = %job_id, "job deleted");
        self.evaluate(now);
        Ok(())
    }

    /// Starts a run of the job now (after its dependencies, when it has any).
    pub fn run_now(&mut self, job_id: &JobId, now: Timestamp) -> Result<RunId, ApiError> {
        if !self.jobs.contains_key(job_id) {
            return Err(ApiError::NotFound(format!("job {job_id}")));
        }
        let run = self.create_run(job_id, Trigger::Manual, None, now);
        self.evaluate(now);
        Ok(run)
    }

    /// Cancels a run that has not finished; its attempts are killed.
    pub fn cancel_run(
        &mut self,
        job_id: &JobId,
        run_id: RunId,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let run = self
            .runs
            .get(&run_id)
            .filter(|run| &run.job_id == job_id)
            .ok_or_else(|| ApiError::NotFound(format!("run {run_id} of job {job_id}")))?;
        if run.phase.is_finished() {
            return Err(ApiError::Conflict(format!(
                "run {run_id} of job {job_id} already finished ({})",
                run.phase
            )));
        }
        self.finish_run(
            run_id,
            RunPhase::Cancelled,
            "cancelled by request".into(),
            now,
        );
        self.evaluate(now);
        Ok(())
    }

    /// Every job, by id.
    pub fn jobs(&self, now: Timestamp) -> Vec<JobView> {
        self.jobs
            .keys()
            .filter_map(|job_id| self.job(job_id, now))
            .collect()
    }

    /// One job.
    pub fn job(&self, job_id: &JobId, now: Timestamp) -> Option<JobView> {
        let record = self.jobs.get(job_id)?;
        let runs: Vec<&Run> = self.runs_of(job_id).collect();
        let next_schedule_time = record.spec.cron_schedule().and_then(|schedule| {
            let baseline = record
                .last_schedule_time
                .unwrap_or(record.created_at)
                .max(now);
            schedule.next_after(baseline)
        });
        Some(JobView {
            spec: record.spec.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            last_schedule_time: record.last_schedule_time,
            next_schedule_time,
            active_runs: runs
                .iter()
                .filter(|run| !run.phase.is_finished())
                .map(|run| run.id)
                .collect(),
            latest_run: runs.last().map(|run| RunSummary {
                id: run.id,
                phase: run.phase,
            }),
        })
    }

    /// A job's runs, oldest first.
    pub fn runs(&self, job_id: &JobId) -> Option<Vec<RunView>> {
        self.jobs.get(job_id)?;
        Some(self.runs_of(job_id).map(|run| self.run_view(run)).collect())
    }

    /// One run.
    pub fn run(&self, job_id: &JobId, run_id: RunId) -> Option<RunView> {
        self.runs
            .get(&run_id)
            .filter(|run| &run.job_id == job_id)
            .map(|run| self.run_view(run))
    }

    /// How many runs are in each phase, and jobs in total (for `/metrics`).
    pub fn gauges(&self) -> (usize, BTreeMap<RunPhase, usize>, usize) {
        let mut phases = BTreeMap::new();
        let mut active_attempts = 0;
        for run in self.runs.values() {
            *phases.entry(run.phase).or_insert(0) += 1;
            active_attempts += run.active_attempts();
        }
        (self.jobs.len(), phases, active_attempts)
    }

    // ----- helpers --------------------------------------------------------------------------

    fn run_view(&self, run: &Run) -> RunView {
        let waiting_reason = match run.phase {
            RunPhase::Waiting => self.dependency_blocker(&run.spec).err(),
            RunPhase::Active => self.placement_notes.get(&run.id).cloned(),
            _ => None,
        };
        RunView {
            active: run.active_attempts(),
            run: run.clone(),
            waiting_reason,
        }
    }

    fn runs_of<'a>(&'a self, job_id: &'a JobId) -> impl Iterator<Item = &'a Run> + 'a {
        self.runs.values().filter(move |run| &run.job_id == job_id)
    }

    fn latest_run(&self, job_id: &JobId) -> Option<&Run> {
        self.runs.values().rev().find(|run| &run.job_id == job_id)
    }

    /// `Ok` when every dependency's latest run succeeded, else why not.
    fn dependency_blocker(&self, spec: &JobSpec) -> Result<(), String> {
        for dependency in &spec.dependencies {
            match self.latest_run(dependency) {
                Some(run) if run.phase == RunPhase::Succeeded => {}
                Some(run) => {
                    return Err(format!(
                        "waiting for dependency {dependency}: its latest run {} is {}",
                        run.id, run.phase
                    ));
                }
                None if self.jobs.contains_key(dependency) => {
                    return Err(format!(
                        "waiting for dependency {dependency}: it has not run yet"
                    ));
                }
                None => {
                    return Err(format!("waiting for dependency {dependency}: no such job"));
                }
            }
        }
        Ok(())
    }

    /// Dependencies must exist and must not form a cycle.
    fn check_dependencies(&self, spec: &JobSpec) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        for (index, dependency) in spec.dependencies.iter().enumerate() {
            if !self.jobs.contains_key(dependency) {
                errors.push(FieldError::new(
                    format!("/dependencies/{index}"),
                    format!("no job {dependency}"),
                ));
            } else if self.reaches(dependency, &spec.id) {
                errors.push(FieldError::new(
                    format!("/dependencies/{index}"),
                    format!("{dependency} depends on {} already: a cycle", spec.id),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid(JobSpecError { errors }))
        }
    }

    /// True when `from` depends on `target`, directly or through other jobs.
    fn reaches(&self, from: &JobId, target: &JobId) -> bool {
        let mut stack = vec![from.clone()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(current) = stack.pop() {
            if &current == target {
                return true;
            }
            if !seen.insert(current.clone()) {
                continue;
            }
            if let Some(job) = self.jobs.get(&current) {
                stack.extend(job.spec.dependencies.iter().cloned());
            }
        }
        false
    }

    fn create_run(
        &mut self,
        job_id: &JobId,
        trigger: Trigger,
        scheduled_for: Option<Timestamp>,
        now: Timestamp,
    ) -> RunId {
        let spec = match self.jobs.get(job_id) {
            Some(job) => job.spec.clone(),
            None => return RunId(0),
        };
        let run_id = RunId(self.meta.next_run_id.max(1));
        self.meta.next_run_id = run_id.0 + 1;
        let run = Run::new(run_id, spec, trigger, scheduled_for, now);
        tracing::info!(job_id = %job_id, run_id = %run_id, ?trigger, "run created");
        self.persist(StoreOp::PutMeta(self.meta.clone()));
        self.persist(StoreOp::PutRun(Box::new(run.header())));
        self.runs.insert(run_id, run);
        run_id
    }

    /// Ends a run, kills its attempts, and triggers dependents of a success.
    fn finish_run(&mut self, run_id: RunId, phase: RunPhase, message: String, now: Timestamp) {
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        let to_kill = match run.finish(phase, message, now) {
            Ok(to_kill) => to_kill,
            Err(error) => {
                tracing::debug!(%error, "run not finished");
                return;
            }
        };
        let job_id = run.job_id.clone();
        tracing::info!(job_id = %job_id, run_id = %run_id, %phase, run_message = %run.message, "run finished");
        let stored = Box::new(run.header());
        let killed: Vec<Attempt> = to_kill
            .into_iter()
            .map(|index| run.attempts[index].clone())
            .collect();
        match phase {
            RunPhase::Succeeded => self.metrics.runs_succeeded += 1,
            RunPhase::Failed => self.metrics.runs_failed += 1,
            _ => self.metrics.runs_cancelled += 1,
        }
        self.placement_notes.remove(&run_id);
        self.persist(StoreOp::PutRun(stored));
        for attempt in killed {
            self.kill(attempt.task_id.clone(), attempt.agent_id.clone());
            self.persist(StoreOp::PutAttempt(run_id, Box::new(attempt)));
        }
        if phase == RunPhase::Succeeded {
            self.trigger_dependents(&job_id, now);
        }
    }

    /// After a run of `job_id` succeeded: jobs without a schedule that depend on it get a
    /// run, unless one is already waiting (it starts once all dependencies succeeded).
    fn trigger_dependents(&mut self, job_id: &JobId, now: Timestamp) {
        let dependents: Vec<JobId> = self
            .jobs
            .values()
            .filter(|job| job.spec.schedule.is_none() && job.spec.dependencies.contains(job_id))
            .map(|job| job.spec.id.clone())
            .collect();
        for dependent in dependents {
            let waiting = self
                .runs_of(&dependent)
                .any(|run| run.phase == RunPhase::Waiting);
            let ready = self
                .jobs
                .get(&dependent)
                .is_some_and(|job| self.dependency_blocker(&job.spec).is_ok());
            if !waiting && ready {
                self.create_run(&dependent, Trigger::Dependency, None, now);
            }
        }
    }

    fn kill(&mut self, task_id: String, agent_id: String) {
        self.outbox.push(Command::Kill {
            task_id: TaskId::new(task_id),
            agent_id: AgentId::new(agent_id),
        });
    }

    fn persist(&mut self, op: StoreOp) {
        self.outbox.push(Command::Persist(vec![op]));
    }

    fn unfinished_attempts(&self) -> Vec<(TaskId, AgentId)> {
        self.runs
            .values()
            .filter(|run| run.active_attempts() > 0)
            .flat_map(|run| run.attempts.iter())
            .filter(|attempt| !attempt.state.is_finished())
            .map(|attempt| {
                (
                    TaskId::new(attempt.task_id.clone()),
                    AgentId::new(attempt.agent_id.clone()),
                )
            })
            .collect()
    }

    /// The run and index of the attempt with this task id.
    fn find_attempt(&self, task_id: &str) -> Option<(RunId, usize)> {
        let (run_id, number) = parse_task_id(task_id)?;
        let index = self.runs.get(&run_id)?.attempt_index(number, task_id)?;
        Some((run_id, index))
    }

    /// Starts waiting runs whose dependencies succeeded, then revives or suppresses offers.
    fn evaluate(&mut self, now: Timestamp) {
        let ready: Vec<RunId> = self
            .runs
            .values()
            .filter(|run| run.phase == RunPhase::Waiting)
            .filter(|run| self.dependency_blocker(&run.spec).is_ok())
            .map(|run| run.id)
            .collect();
        for run_id in ready {
            if let Some(run) = self.runs.get_mut(&run_id)
                && run.start(now).is_ok()
            {
                tracing::info!(job_id = %run.job_id, run_id = %run_id, "run started");
                let stored = Box::new(run.header());
                self.persist(StoreOp::PutRun(stored));
            }
        }
        self.update_offer_interest(now);
    }

    fn wants_offers(&self, now: Timestamp) -> bool {
        self.runs.values().any(|run| run.launchable(now) > 0)
    }

    fn update_offer_interest(&mut self, now: Timestamp) {
        if !self.subscribed {
            return;
        }
        let wanted = self.wants_offers(now);
        if self.offers_wanted != Some(wanted) {
            self.offers_wanted = Some(wanted);
            self.outbox.push(if wanted {
                Command::Revive
            } else {
                Command::Suppress
            });
        }
    }
}
