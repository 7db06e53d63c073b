//! The embedded store: jobs, runs, their attempts and the framework id in a redb file,
//! `<work-dir>/batch.redb`. Values are JSON; each [`BatchStore::apply`] is one durable
//! transaction.
//!
//! A run's attempts are records of their own, keyed by (run, attempt number), so a status
//! update rewrites one attempt, not a run of thousands. Stores written before that kept the
//! attempts inside the run record; [`BatchStore::open_in`] moves them out, in one transaction.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use agora_sdk::FrameworkStore;
use agora_sdk::store::{OrStoreError, decode, encode, open_database};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::{Attempt, JobRecord, Run, RunId, Snapshot, StoreOp};

pub use agora_sdk::store::StoreError;

/// `"meta"` -> JSON [`Meta`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Job id -> JSON [`JobRecord`].
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Run number -> JSON [`Run`] without its attempts (older stores: with them).
const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");
/// (Run number, attempt number) -> JSON [`Attempt`].
const ATTEMPTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("attempts");

/// File name of the store inside the work dir.
pub const STORE_FILE_NAME: &str = "batch.redb";

/// The redb-backed store.
pub struct BatchStore {
    database: Database,
    path: PathBuf,
}

impl std::fmt::Debug for BatchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchStore")
            .field("path", &self.path)
            .finish()
    }
}

impl BatchStore {
    /// Opens (or creates) `<work_dir>/batch.redb`, creating `work_dir` when missing.
    pub fn open_in(work_dir: &Path) -> Result<Self, StoreError> {
        let (database, path) = open_database(work_dir, STORE_FILE_NAME)?;
        let store = Self { database, path };
        let transaction = store.database.begin_write().or_store("write")?;
        transaction.open_table(META).or_store("write")?;
        transaction.open_table(JOBS).or_store("write")?;
        transaction.open_table(RUNS).or_store("write")?;
        transaction.open_table(ATTEMPTS).or_store("write")?;
        transaction.commit().or_store("write")?;
        store.move_embedded_attempts()?;
        Ok(store)
    }

    /// Moves attempts stored inside run records (the older layout) to their own records, in
    /// one transaction: a crash leaves either layout whole.
    fn move_embedded_attempts(&self) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().or_store("write")?;
        let mut moved = 0usize;
        {
            let mut runs = transaction.open_table(RUNS).or_store("write")?;
            let mut attempts = transaction.open_table(ATTEMPTS).or_store("write")?;
            let mut embedding = Vec::new();
            for entry in runs.iter().or_store("load")? {
                let (key, value) = entry.or_store("load")?;
                let run: Run = decode("runs", &key.value().to_string(), value.value())?;
                if !run.attempts.is_empty() {
                    embedding.push(run);
                }
            }
            for run in embedding {
                for attempt in &run.attempts {
                    attempts
                        .insert((run.id.0, attempt.number), encode(attempt)?.as_slice())
                        .or_store("write")?;
                    moved += 1;
                }
                runs.insert(run.id.0, encode(&run.header())?.as_slice())
                    .or_store("write")?;
            }
        }
        if moved == 0 {
            transaction.abort().or_store("write")?;
            return Ok(());
        }
        transaction.commit().or_store("write")?;
        tracing::info!(attempts = moved, path = %self.path.display(), "moved attempts out of their run records");
        Ok(())
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads everything back.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let transaction = self.database.begin_read().or_store("load")?;
        let mut snapshot = Snapshot::default();
        let meta = transaction.open_table(META).or_store("load")?;
        if let Some(value) = meta.get("meta").or_store("load")? {
            snapshot.meta = decode("meta", "meta", value.value())?;
        }
        let jobs = transaction.open_table(JOBS).or_store("load")?;
        for entry in jobs.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            snapshot
                .jobs
                .push(decode::<JobRecord>("jobs", key.value(), value.value())?);
        }
        let runs = transaction.open_table(RUNS).or_store("load")?;
        for entry in runs.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            snapshot.runs.push(decode::<Run>(
                "runs",
                &key.value().to_string(),
                value.value(),
            )?);
        }
        // Both tables are in key order: each run's attempts follow one another, by number.
        let attempts = transaction.open_table(ATTEMPTS).or_store("load")?;
        let mut runs = snapshot.runs.iter_mut().peekable();
        for entry in attempts.iter().or_store("load")? {
            let (key, value) = entry.or_store("load")?;
            let (run_id, number) = key.value();
            let attempt: Attempt =
                decode("attempts", &format!("{run_id}/{number}"), value.value())?;
            while runs.peek().is_some_and(|run| run.id.0 < run_id) {
                runs.next();
            }
            match runs.peek_mut() {
                Some(run) if run.id.0 == run_id => run.attempts.push(attempt),
                // Never written so (a run's attempts go with it, in one transaction); an
                // attempt of no run has nothing left to act on.
                _ => tracing::warn!(
                    run = run_id,
                    attempt = number,
                    "ignoring an attempt of a run that is not stored"
                ),
            }
        }
        Ok(snapshot)
    }
}

impl FrameworkStore for BatchStore {
    type Write = StoreOp;
    type Error = StoreError;

    /// Applies `ops` in one durable transaction.
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        // A batch often rewrites the same run or attempt many times: only the last write of
        // a key is kept (deletes still run in order, so a put after a delete wins).
        let mut superseded = vec![false; ops.len()];
        let mut written: HashSet<(u64, Option<u32>)> = HashSet::new();
        for (index, op) in ops.iter().enumerate().rev() {
            let key = match op {
                StoreOp::PutRun(run) => (run.id.0, None),
                StoreOp::PutAttempt(RunId(run_id), attempt) => (*run_id, Some(attempt.number)),
                _ => continue,
            };
            superseded[index] = !written.insert(key);
        }
        let transaction = self.database.begin_write().or_store("write")?;
        {
            let mut meta = transaction.open_table(META).or_store("write")?;
            let mut jobs = transaction.open_table(JOBS).or_store("write")?;
            let mut runs = transaction.open_table(RUNS).or_store("write")?;
            let mut attempts = transaction.open_table(ATTEMPTS).or_store("write")?;
            for (op, superseded) in ops.iter().zip(superseded) {
                if superseded {
                    continue;
                }
                match op {
                    StoreOp::PutMeta(value) => {
                        meta.insert("meta", encode(value)?.as_slice())
                            .or_store("write")?;
                    }
                    StoreOp::PutJob(job) => {
                        jobs.insert(job.spec.id.as_str(), encode(job.as_ref())?.as_slice())
                            .or_store("write")?;
                    }
                    StoreOp::DeleteJob(job_id) => {
                        jobs.remove(job_id.as_str()).or_store("write")?;
                    }
                    StoreOp::PutRun(run) => {
                        // The attempts are records of their own.
                        let bytes = if run.attempts.is_empty() {
                            encode(run.as_ref())?
                        } else {
                            encode(&run.header())?
                        };
                        runs.insert(run.id.0, bytes.as_slice()).or_store("write")?;
                    }
                    StoreOp::PutAttempt(run_id, attempt) => {
                        attempts
                            .insert(
                                (run_id.0, attempt.number),
                                encode(attempt.as_ref())?.as_slice(),
                            )
                            .or_store("write")?;
                    }
                    StoreOp::DeleteRun(run_id) => {
                        runs.remove(run_id.0).or_store("write")?;
                        attempts
                            .retain_in((run_id.0, 0)..=(run_id.0, u32::MAX), |_, _| false)
                            .or_store("write")?;
                    }
                }
            }
        }
        transaction.commit().or_store("write")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::core::{AttemptState, Trigger};
    use crate::job::parse_job;

    fn run_with_attempts(id: u64, attempts: u32) -> Run {
        let now = Timestamp::UNIX_EPOCH;
        let spec = parse_job(br#"{"id":"j","run":{"cmd":"true"},"completions":5}"#)
            .expect("valid job")
            .spec;
        let mut run = Run::new(RunId(id), spec, Trigger::Submit, None, now);
        for number in 0..attempts {
            run.push_attempt(Attempt::launching(
                number,
                format!("j.r{id}.a{number}"),
                "agent".into(),
                "host".into(),
                now,
            ));
        }
        run
    }

    fn put(run: &Run) -> Vec<StoreOp> {
        let mut ops = vec![StoreOp::PutRun(Box::new(run.header()))];
        ops.extend(
            run.attempts
                .iter()
                .map(|attempt| StoreOp::PutAttempt(run.id, Box::new(attempt.clone()))),
        );
        ops
    }

    #[test]
    fn runs_are_reassembled_from_their_attempt_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = BatchStore::open_in(dir.path()).expect("open");
        let first = run_with_attempts(1, 3);
        let second = run_with_attempts(2, 2);
        let mut ops = put(&first);
        ops.extend(put(&second));
        store.apply(&ops).expect("stored");
        // One attempt changes twice in a batch: the last write counts.
        let mut running = first.attempts[1].clone();
        running.state = AttemptState::Running;
        let mut done = running.clone();
        done.state = AttemptState::Succeeded;
        store
            .apply(&[
                StoreOp::PutAttempt(RunId(1), Box::new(running)),
                StoreOp::PutAttempt(RunId(1), Box::new(done)),
            ])
            .expect("stored");
        drop(store);

        let store = BatchStore::open_in(dir.path()).expect("reopen");
        let runs = store.load().expect("load").runs;
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].attempts.len(), 3);
        assert_eq!(runs[0].attempts[1].state, AttemptState::Succeeded);
        assert_eq!(runs[1].attempts, second.attempts);

        // A deleted run takes its attempts along; a run stored again starts empty.
        store
            .apply(&[
                StoreOp::DeleteRun(RunId(1)),
                StoreOp::PutRun(Box::new(run_with_attempts(1, 0))),
            ])
            .expect("stored");
        let runs = store.load().expect("load").runs;
        assert_eq!(runs[0].attempts.len(), 0);
        assert_eq!(runs[1].attempts.len(), 2);
    }

    #[test]
    fn a_store_with_attempts_inside_runs_is_moved_to_attempt_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = run_with_attempts(7, 4);
        {
            // The older layout: the whole run, attempts included, in one record.
            let database = Database::create(dir.path().join(STORE_FILE_NAME)).expect("create");
            let transaction = database.begin_write().expect("write");
            {
                let mut runs = transaction.open_table(RUNS).expect("runs");
                runs.insert(7, encode(&old).expect("encode").as_slice())
                    .expect("insert");
            }
            transaction.commit().expect("commit");
        }
        let store = BatchStore::open_in(dir.path()).expect("open");
        let runs = store.load().expect("load").runs;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].attempts, old.attempts);
        // The run record no longer holds them: later updates rewrite attempts one by one.
        let transaction = store.database.begin_read().expect("read");
        let table = transaction.open_table(RUNS).expect("runs");
        let record: Run = decode(
            "runs",
            "7",
            table.get(7).expect("get").expect("run").value(),
        )
        .expect("decodes");
        assert!(record.attempts.is_empty());
        drop(table);
        drop(transaction);
        drop(store);
        let runs = BatchStore::open_in(dir.path())
            .expect("reopen")
            .load()
            .expect("load")
            .runs;
        assert_eq!(runs[0].attempts, old.attempts);
    }
}
