//! Unit and property tests of the core on an injected clock and an in-memory store.

use std::collections::BTreeMap;

use agora_proto::v1::{self, TaskState};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::job::parse_job;

/// Applies the core's store writes, like the redb store does: runs without their attempts,
/// attempts one by one.
#[derive(Default)]
struct MemoryStore {
    meta: Meta,
    jobs: BTreeMap<JobId, JobRecord>,
    runs: BTreeMap<RunId, Run>,
    attempts: BTreeMap<(RunId, u32), Attempt>,
}

impl MemoryStore {
    fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::PutMeta(meta) => self.meta = meta.clone(),
            StoreOp::PutJob(job) => {
                self.jobs.insert(job.spec.id.clone(), (**job).clone());
            }
            StoreOp::DeleteJob(id) => {
                self.jobs.remove(id);
            }
            StoreOp::PutRun(run) => {
                assert!(run.attempts.is_empty(), "attempts are stored one by one");
                self.runs.insert(run.id, (**run).clone());
            }
            StoreOp::PutAttempt(run_id, attempt) => {
                self.attempts
                    .insert((*run_id, attempt.number), (**attempt).clone());
            }
            StoreOp::DeleteRun(id) => {
                self.runs.remove(id);
                self.attempts.retain(|(run_id, _), _| run_id != id);
            }
        }
    }

    /// A run with its attempts, as loading reassembles it.
    fn run(&self, id: RunId) -> Option<Run> {
        let mut run = self.runs.get(&id)?.clone();
        run.attempts = self
            .attempts
            .range((id, 0)..=(id, u32::MAX))
            .map(|(_, attempt)| attempt.clone())
            .collect();
        run.recount();
        Some(run)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            meta: self.meta.clone(),
            jobs: self.jobs.values().cloned().collect(),
            runs: self.runs.keys().filter_map(|id| self.run(*id)).collect(),
        }
    }
}

/// A core with its store; commands are applied to the store and the rest returned.
struct Harness {
    core: BatchCore,
    store: MemoryStore,
    now: Timestamp,
    offer_counter: u64,
}

impl Harness {
    fn new(now: &str) -> Self {
        let mut harness = Self {
            core: BatchCore::new(CoreConfig::default(), Snapshot::default()),
            store: MemoryStore::default(),
            now: now.parse().expect("timestamp"),
            offer_counter: 0,
        };
        harness.core.subscribed("fw-1", harness.now);
        harness.drain();
        harness
    }

    /// A fresh core from the store, as after a restart.
    fn restart(&mut self) -> Vec<Command> {
        self.core = BatchCore::new(CoreConfig::default(), self.store.snapshot());
        self.core.subscribed("fw-1", self.now);
        self.drain()
    }

    /// Applies persisted writes; checks every launch was persisted before being sent.
    fn drain(&mut self) -> Vec<Command> {
        let mut others = Vec::new();
        for command in self.core.take_commands() {
            match command {
                Command::Persist(ops) => ops.iter().for_each(|op| self.store.apply(op)),
                Command::Launch { offer_id, tasks } => {
                    for task in &tasks {
                        let (run_id, number) = parse_task_id(&task.task_id).expect("our task id");
                        assert!(self.store.runs.contains_key(&run_id), "run stored");
                        assert!(
                            self.store.attempts.contains_key(&(run_id, number)),
                            "launch of {} sent before it was stored",
                            task.task_id
                        );
                    }
                    others.push(Command::Launch { offer_id, tasks });
                }
                other => others.push(other),
            }
        }
        others
    }

    fn advance(&mut self, seconds: f64) {
        self.now = self
            .now
            .checked_add(SignedDuration::from_secs_f64(seconds))
            .expect("in range");
    }

    fn submit(&mut self, json: &str) -> Option<RunId> {
        let parsed = parse_job(json.as_bytes()).expect("valid job");
        let run = self
            .core
            .create_job(parsed.spec, self.now)
            .expect("created");
        self.drain();
        run
    }

    fn offer(&mut self, cpus: f64, mem: f64) -> Vec<v1::TaskInfo> {
        self.offer_counter += 1;
        let offer = v1::Offer {
            id: format!("offer-{}", self.offer_counter),
            agent_id: "agent-1".into(),
            hostname: "host-1".into(),
            resources: agora_proto::Resources::cpus_mem(cpus, mem).to_proto(),
            ..Default::default()
        };
        self.core.offers(vec![offer], self.now);
        self.drain()
            .into_iter()
            .flat_map(|command| match command {
                Command::Launch { tasks, .. } => tasks,
                _ => Vec::new(),
            })
            .collect()
    }

    fn update(&mut self, task_id: &str, state: TaskState, exit_code: Option<i32>) -> Vec<Command> {
        let status = v1::TaskStatus {
            task_id: task_id.to_owned(),
            agent_id: "agent-1".into(),
            state: state as i32,
            exit_code,
            uuid: "u".into(),
            ..Default::default()
        };
        self.core.status_update(status, self.now);
        self.drain()
    }

    fn run(&self, run: RunId) -> Run {
        self.store.run(run).expect("run stored")
    }
}

#[test]
fn one_offer_takes_as_many_attempts_as_fit() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"wide","run":{"cmd":"true","cpus":0.5,"mem":32},"completions":50,"parallelism":20}"#)
        .expect("run");
    let tasks = harness.offer(4.0, 4096.0);
    assert_eq!(tasks.len(), 8, "4 cpus hold 8 attempts of 0.5");
    assert_eq!(harness.run(run).attempts.len(), 8);
    let more = harness.offer(16.0, 4096.0);
    assert_eq!(more.len(), 12, "the rest of parallelism 20");
    assert!(
        harness.offer(16.0, 4096.0).is_empty(),
        "parallelism reached"
    );
}

#[test]
fn a_run_too_big_for_any_offer_explains_why() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"big","run":{"cmd":"true","cpus":64,"mem":32}}"#)
        .expect("run");
    assert!(harness.offer(2.0, 4096.0).is_empty());
    let view = harness.core.run(&JobId::new("big"), run).expect("run");
    let reason = view.waiting_reason.expect("a reason");
    assert!(
        reason.contains("cpus") && reason.contains("64") && reason.contains('2'),
        "{reason}"
    );
}

#[test]
fn retries_back_off_with_growing_delays_then_fail_with_the_exit_code() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"flaky","run":{"cmd":"exit 1"},"retries":2,"backoffSeconds":2,"maxBackoffSeconds":100}"#)
        .expect("run");
    let mut delays = Vec::new();
    for attempt in 0..3 {
        let tasks = harness.offer(4.0, 4096.0);
        assert_eq!(tasks.len(), 1, "attempt {attempt}");
        harness.update(&tasks[0].task_id, TaskState::TaskRunning, None);
        harness.update(&tasks[0].task_id, TaskState::TaskFailed, Some(1));
        let stored = harness.run(run);
        if let Some(not_before) = stored.retry_not_before {
            let delay = not_before.duration_since(harness.now).as_secs_f64();
            assert!(
                harness.offer(4.0, 4096.0).is_empty(),
                "no launch during backoff"
            );
            delays.push(delay);
            harness.advance(delay);
            harness.core.tick(harness.now);
            harness.drain();
        }
    }
    let stored = harness.run(run);
    assert_eq!(stored.phase, RunPhase::Failed);
    assert_eq!(stored.exit_code, Some(1));
    assert_eq!(stored.failures, 3);
    assert_eq!(stored.attempts.len(), 3);
    assert_eq!(delays.len(), 2);
    assert!((1.0..=2.0).contains(&delays[0]), "{delays:?}");
    assert!((2.0..=4.0).contains(&delays[1]), "{delays:?}");
    assert!(delays[1] > delays[0], "{delays:?}");
}

#[test]
fn the_deadline_fails_the_run_and_kills_its_attempts() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"slow","run":{"cmd":"sleep 99"},"activeDeadlineSeconds":5,"parallelism":2,"completions":2}"#)
        .expect("run");
    let tasks = harness.offer(4.0, 4096.0);
    assert_eq!(tasks.len(), 2);
    harness.advance(6.0);
    harness.core.tick(harness.now);
    let commands = harness.drain();
    let kills = commands
        .iter()
        .filter(|command| matches!(command, Command::Kill { .. }))
        .count();
    assert_eq!(kills, 2);
    assert_eq!(harness.run(run).phase, RunPhase::Failed);
    // Our own kills do not count as failures.
    harness.update(&tasks[0].task_id, TaskState::TaskKilled, None);
    assert_eq!(harness.run(run).attempts[0].state, AttemptState::Killed);
}

#[test]
fn a_restart_reconciles_and_relaunches_only_what_never_ran() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"resume","run":{"cmd":"true"},"completions":3,"parallelism":2}"#)
        .expect("run");
    let tasks = harness.offer(4.0, 4096.0);
    assert_eq!(tasks.len(), 2);
    harness.update(&tasks[0].task_id, TaskState::TaskRunning, None);
    // Crash: the second launch was stored but maybe never sent.
    let commands = harness.restart();
    let reconciled: Vec<String> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Reconcile(tasks) => {
                Some(tasks.iter().map(|(t, _)| t.to_string()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        reconciled,
        [tasks[0].task_id.clone(), tasks[1].task_id.clone()]
    );
    assert!(
        harness.offer(4.0, 4096.0).is_empty(),
        "both attempts may still be running"
    );
    // The master never saw the second one.
    harness.update(&tasks[1].task_id, TaskState::TaskLost, None);
    let stored = harness.run(run);
    assert_eq!(stored.attempts[1].state, AttemptState::NotStarted);
    assert_eq!(stored.failures, 0);
    let relaunched = harness.offer(4.0, 4096.0);
    assert_eq!(relaunched.len(), 1);
    assert_eq!(
        relaunched[0].task_id, "resume.r1.a2",
        "a new, deterministic task id"
    );
}

#[test]
fn cron_fires_on_time_skips_under_forbid_and_never_twice_across_restarts() {
    let mut harness = Harness::new("2026-01-01T00:00:00.500Z");
    harness.submit(
        r#"{"id":"tick","run":{"cmd":"sleep 3"},"schedule":{"cron":"*/2 * * * * *","concurrencyPolicy":"FORBID"}}"#,
    );
    let mut fired = Vec::new();
    for _ in 0..20 {
        harness.advance(0.25);
        harness.core.tick(harness.now);
        harness.drain();
        for task in harness.offer(4.0, 4096.0) {
            fired.push((harness.now, task.task_id.clone()));
        }
        if harness.store.runs.len() == 1 && fired.len() == 1 {
            // The only run lasts 3 s: finish it after the 4 s mark.
        }
    }
    // 5 s elapsed: the 02 s fire ran, the 04 s fire was skipped (run still active).
    let runs: Vec<Run> = harness.store.runs.values().cloned().collect();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(
        runs[0].scheduled_for,
        Some("2026-01-01T00:00:02Z".parse().expect("time"))
    );
    assert_eq!(harness.core.metrics().schedule_skips, 1);
    harness.update(&fired[0].1, TaskState::TaskFinished, Some(0));
    harness.restart();
    harness.advance(1.0);
    harness.core.tick(harness.now);
    harness.drain();
    let scheduled: Vec<Option<Timestamp>> = harness
        .store
        .runs
        .values()
        .map(|run| run.scheduled_for)
        .collect();
    assert_eq!(
        scheduled,
        [
            Some("2026-01-01T00:00:02Z".parse().expect("time")),
            Some("2026-01-01T00:00:06Z".parse().expect("time"))
        ]
    );
}

#[test]
fn a_late_fire_past_the_starting_deadline_is_skipped() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    harness.submit(
        r#"{"id":"hourly","run":{"cmd":"true"},"schedule":{"cron":"0 * * * *","startingDeadlineSeconds":60}}"#,
    );
    harness.advance(3.0 * 3600.0 + 300.0);
    harness.core.tick(harness.now);
    harness.drain();
    assert!(harness.store.runs.is_empty(), "03:00 is 5 minutes late");
    assert_eq!(harness.core.metrics().schedule_missed, 2);
    assert_eq!(
        harness.store.jobs[&JobId::new("hourly")].last_schedule_time,
        Some("2026-01-01T03:00:00Z".parse().expect("time"))
    );
    harness.advance(3600.0 - 300.0 + 10.0);
    harness.core.tick(harness.now);
    harness.drain();
    assert_eq!(harness.store.runs.len(), 1, "04:00 is 10 s late: runs");
}

#[test]
fn a_daily_berlin_job_across_both_daylight_saving_changes() {
    for (start, expected) in [
        (
            "2026-03-28T00:00:00Z",
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
            ],
        ),
        (
            "2026-10-24T00:00:00Z",
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ],
        ),
    ] {
        let mut harness = Harness::new(start);
        harness.submit(
            r#"{"id":"nightly","run":{"cmd":"true"},"schedule":{"cron":"30 2 * * *","timezone":"Europe/Berlin"}}"#,
        );
        // Tick every 10 minutes for three days.
        for _ in 0..(3 * 24 * 6) {
            harness.advance(600.0);
            harness.core.tick(harness.now);
            harness.drain();
        }
        let fired: Vec<String> = harness
            .store
            .runs
            .values()
            .filter_map(|run| run.scheduled_for.map(|t| t.to_string()))
            .collect();
        assert_eq!(fired, expected, "from {start}");
    }
}

#[test]
fn dependencies_wait_for_success_and_chains_trigger() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let a = harness
        .submit(r#"{"id":"a","run":{"cmd":"exit 1"}}"#)
        .expect("run");
    let b = harness
        .submit(r#"{"id":"b","run":{"cmd":"true"},"dependencies":["a"]}"#)
        .expect("run");
    let tasks = harness.offer(4.0, 4096.0);
    assert_eq!(tasks.len(), 1, "only a runs");
    harness.update(&tasks[0].task_id, TaskState::TaskFailed, Some(1));
    assert_eq!(harness.run(a).phase, RunPhase::Failed);
    assert!(
        harness.offer(4.0, 4096.0).is_empty(),
        "b never runs after a failed"
    );
    assert_eq!(harness.run(b).phase, RunPhase::Waiting);
    let again = harness
        .core
        .run_now(&JobId::new("a"), harness.now)
        .expect("run");
    harness.drain();
    let tasks = harness.offer(4.0, 4096.0);
    harness.update(&tasks[0].task_id, TaskState::TaskFinished, Some(0));
    assert_eq!(harness.run(again).phase, RunPhase::Succeeded);
    assert_eq!(harness.run(b).phase, RunPhase::Active);
    let tasks = harness.offer(4.0, 4096.0);
    harness.update(&tasks[0].task_id, TaskState::TaskFinished, Some(0));
    assert_eq!(harness.run(b).phase, RunPhase::Succeeded);
    // The next success of a triggers b again (b has no schedule).
    harness
        .core
        .run_now(&JobId::new("a"), harness.now)
        .expect("run");
    harness.drain();
    let tasks = harness.offer(4.0, 4096.0);
    harness.update(&tasks[0].task_id, TaskState::TaskFinished, Some(0));
    assert_eq!(
        harness
            .store
            .runs
            .values()
            .filter(|run| run.job_id.as_str() == "b")
            .count(),
        2
    );
    let cycle =
        parse_job(br#"{"id":"a","run":{"cmd":"true"},"dependencies":["b"]}"#).expect("valid alone");
    assert!(matches!(
        harness.core.update_job(cycle.spec, harness.now),
        Err(ApiError::Invalid(_))
    ));
}

#[test]
fn offers_are_suppressed_when_nothing_waits_and_revived_when_work_appears() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    harness.core.tick(harness.now);
    assert!(!harness.drain().contains(&Command::Revive));
    harness.submit(r#"{"id":"one","run":{"cmd":"true"}}"#);
    harness.core.subscribed("fw-1", harness.now);
    let commands = harness.drain();
    assert!(commands.contains(&Command::Revive), "{commands:?}");
    let tasks = harness.offer(4.0, 4096.0);
    assert_eq!(tasks.len(), 1);
    let offered = v1::Offer {
        id: "spare".into(),
        agent_id: "agent-1".into(),
        hostname: "host-1".into(),
        resources: agora_proto::Resources::cpus_mem(1.0, 64.0).to_proto(),
        ..Default::default()
    };
    harness.core.offers(vec![offered], harness.now);
    let commands = harness.drain();
    assert!(
        commands.iter().any(
            |c| matches!(c, Command::Decline { refuse_seconds, .. } if *refuse_seconds >= 30.0)
        ),
        "{commands:?}"
    );
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Succeed,
    Fail,
    Lose,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Succeed),
        2 => Just(Outcome::Fail),
        1 => Just(Outcome::Lose),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the attempts do: never more than `parallelism` active, a success has exactly
    /// `completions` successes, a failure exactly `retries + 1` counted failures, and lost
    /// never-started attempts count for neither.
    #[test]
    fn parallelism_completions_and_retries_hold(
        completions in 1u32..8,
        parallelism in 1u32..5,
        retries in 0u32..4,
        outcomes in proptest::collection::vec(outcome(), 1..200),
        offer_cpus in 0.1f64..3.0,
    ) {
        let mut harness = Harness::new("2026-01-01T00:00:00Z");
        let run = harness
            .submit(&format!(
                r#"{{"id":"p","run":{{"cmd":"x","cpus":0.1,"mem":16}},"completions":{completions},"parallelism":{parallelism},"retries":{retries},"backoffSeconds":0.01,"maxBackoffSeconds":0.01}}"#
            ))
            .expect("run");
        // Attempts that are only ever dropped would keep the run active forever (until its
        // deadline): the cycle always holds one outcome that ends an attempt.
        let mut outcomes = outcomes;
        if outcomes.iter().all(|outcome| matches!(outcome, Outcome::Lose)) {
            outcomes.push(Outcome::Succeed);
        }
        let mut outcomes = outcomes.into_iter().cycle();
        let mut counted_failures = 0u32;
        let mut successes = 0u32;
        for _ in 0..500 {
            let stored = harness.run(run);
            if stored.phase.is_finished() {
                break;
            }
            let launched = harness.offer(offer_cpus, 4096.0);
            let stored = harness.run(run);
            prop_assert!(stored.active_attempts() <= parallelism as usize);
            prop_assert!(
                stored.active_attempts() + stored.succeeded as usize <= completions as usize
            );
            for task in launched {
                let next = outcomes.next().unwrap_or(Outcome::Succeed);
                match next {
                    Outcome::Succeed => {
                        harness.update(&task.task_id, TaskState::TaskRunning, None);
                        harness.update(&task.task_id, TaskState::TaskFinished, Some(0));
                        if !harness.run(run).phase.is_finished() || harness.run(run).phase == RunPhase::Succeeded {
                            successes += 1;
                        }
                    }
                    Outcome::Fail => {
                        harness.update(&task.task_id, TaskState::TaskRunning, None);
                        harness.update(&task.task_id, TaskState::TaskFailed, Some(2));
                        counted_failures += 1;
                    }
                    Outcome::Lose => {
                        harness.update(&task.task_id, TaskState::TaskDropped, None);
                    }
                }
                if harness.run(run).phase.is_finished() {
                    break;
                }
            }
            harness.advance(0.05);
            harness.core.tick(harness.now);
            harness.drain();
        }
        let stored = harness.run(run);
        match stored.phase {
            RunPhase::Succeeded => {
                prop_assert_eq!(stored.succeeded, completions);
                prop_assert!(stored.failures <= retries);
                prop_assert_eq!(successes, completions);
            }
            RunPhase::Failed => {
                prop_assert_eq!(stored.failures, retries + 1);
                prop_assert_eq!(counted_failures, retries + 1);
                prop_assert!(stored.succeeded < completions);
            }
            other => prop_assert!(false, "run still {other}"),
        }
        let not_started = stored
            .attempts
            .iter()
            .filter(|attempt| attempt.state == AttemptState::NotStarted)
            .count();
        let failed = stored
            .attempts
            .iter()
            .filter(|attempt| attempt.state == AttemptState::Failed)
            .count();
        prop_assert_eq!(failed as u32, stored.failures);
        prop_assert_eq!(
            stored.attempts.len(),
            not_started + failed + stored.succeeded as usize
                + stored.attempts.iter().filter(|a| !a.state.is_finished() || a.state == AttemptState::Killed).count()
        );
    }
}

fn kills_in(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Kill { task_id, .. } => Some(task_id.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn attempts_that_come_back_after_their_agent_was_lost_are_counted_once_or_killed() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"crunch","run":{"cmd":"true","cpus":1,"mem":64},"completions":3,"parallelism":3,"retries":0}"#)
        .expect("run");
    let first = harness.offer(4.0, 4096.0);
    assert_eq!(first.len(), 3);
    for task in &first {
        harness.update(&task.task_id, TaskState::TaskRunning, None);
    }
    // The agent is cut off past the timeout: the master reports every attempt lost. With
    // retries 0 the run does not fail: a lost attempt is replaced without counting a retry.
    for task in &first {
        harness.update(&task.task_id, TaskState::TaskLost, None);
    }
    assert_eq!(harness.run(run).phase, RunPhase::Active);
    assert_eq!(harness.run(run).failures, 0);
    let replacements = harness.offer(4.0, 4096.0);
    assert_eq!(replacements.len(), 3, "parallelism 3 again");
    for task in &replacements {
        harness.update(&task.task_id, TaskState::TaskRunning, None);
    }

    // The agent returns: two old attempts finished meanwhile, one still runs.
    harness.update(&first[0].task_id, TaskState::TaskFinished, Some(0));
    harness.update(&first[1].task_id, TaskState::TaskFinished, Some(0));
    // A duplicate of the same late update counts nothing more.
    harness.update(&first[1].task_id, TaskState::TaskFinished, Some(0));
    assert_eq!(harness.run(run).succeeded, 2);
    let commands = harness.update(&first[2].task_id, TaskState::TaskRunning, None);
    assert_eq!(kills_in(&commands), vec![first[2].task_id.clone()]);
    harness.update(&first[2].task_id, TaskState::TaskKilled, None);

    // One replacement completes the run; the other two are killed by us, nothing fails.
    let commands = harness.update(&replacements[0].task_id, TaskState::TaskFinished, Some(0));
    let mut killed = kills_in(&commands);
    killed.sort();
    let mut expected = vec![
        replacements[1].task_id.clone(),
        replacements[2].task_id.clone(),
    ];
    expected.sort();
    assert_eq!(killed, expected);
    let stored = harness.run(run);
    assert_eq!(stored.phase, RunPhase::Succeeded);
    assert_eq!(stored.succeeded, 3);
    assert_eq!(stored.failures, 0);
}

#[test]
fn unreachable_attempts_keep_their_place_for_the_grace_then_are_replaced() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(r#"{"id":"part","run":{"cmd":"true","cpus":1,"mem":64},"completions":2,"parallelism":2,"retries":0}"#)
        .expect("run");
    let first = harness.offer(4.0, 4096.0);
    assert_eq!(first.len(), 2);
    for task in &first {
        harness.update(&task.task_id, TaskState::TaskRunning, None);
        harness.update(&task.task_id, TaskState::TaskUnreachable, None);
    }
    // Within the grace nothing is launched: parallelism holds, no work runs twice.
    harness.advance(30.0);
    harness.core.tick(harness.now);
    harness.drain();
    assert!(harness.offer(4.0, 4096.0).is_empty());
    // One agent comes back in time: its attempt finished meanwhile and counts.
    harness.update(&first[0].task_id, TaskState::TaskFinished, Some(0));
    assert_eq!(harness.run(run).succeeded, 1);
    // The other never does: after the grace it is replaced, without counting a retry.
    harness.advance(31.0);
    harness.core.tick(harness.now);
    harness.drain();
    let stored = harness.run(run);
    assert_eq!(stored.attempts[1].state, AttemptState::Lost);
    assert_eq!(stored.failures, 0);
    let replacement = harness.offer(4.0, 4096.0);
    assert_eq!(replacement.len(), 1);
    harness.update(&replacement[0].task_id, TaskState::TaskRunning, None);
    harness.update(&replacement[0].task_id, TaskState::TaskFinished, Some(0));
    let stored = harness.run(run);
    assert_eq!(stored.phase, RunPhase::Succeeded);
    assert_eq!(stored.succeeded, 2);
}

#[test]
fn attempts_on_a_lost_agent_keep_their_place_for_the_grace_then_are_replaced() {
    let mut harness = Harness::new("2026-01-01T00:00:00Z");
    let run = harness
        .submit(
            r#"{"id":"lost","run":{"cmd":"sleep 99"},"completions":2,"parallelism":2,"retries":0}"#,
        )
        .expect("run");
    let tasks = harness.offer(4.0, 4096.0);
    assert_eq!(tasks.len(), 2);
    harness.update(&tasks[0].task_id, TaskState::TaskRunning, None);
    harness.update(&tasks[1].task_id, TaskState::TaskRunning, None);

    harness
        .core
        .agent_lost(&AgentId::new("agent-2"), harness.now);
    harness.drain();
    assert!(
        harness
            .run(run)
            .attempts
            .iter()
            .all(|attempt| attempt.state == AttemptState::Running),
        "another agent's loss changes nothing"
    );

    harness
        .core
        .agent_lost(&AgentId::new("agent-1"), harness.now);
    harness.drain();
    let stored = harness.run(run);
    assert!(
        stored
            .attempts
            .iter()
            .all(|attempt| attempt.state == AttemptState::Unreachable),
        "{:?}",
        stored.attempts
    );
    assert!(
        harness.offer(4.0, 4096.0).is_empty(),
        "within the grace they keep their place"
    );
    harness.advance(61.0);
    harness.core.tick(harness.now);
    harness.drain();
    let stored = harness.run(run);
    assert!(
        stored
            .attempts
            .iter()
            .all(|attempt| attempt.state == AttemptState::Lost),
        "{:?}",
        stored.attempts
    );
    assert_eq!(stored.phase, RunPhase::Active, "no retry counted");
    assert_eq!(stored.failures, 0);
    assert_eq!(harness.offer(4.0, 4096.0).len(), 2, "both replaced");
}
