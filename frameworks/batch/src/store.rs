//! The embedded store: jobs, runs, their attempts and the framework id in a redb file,
//! `<work-dir>/batch.redb`. Values are JSON; each [`BatchStore::apply`] is one durable
//! transaction.
//!
//! A run's attempts are records of their own, keyed by (run, attempt number), so a status
//! update rewrites one attempt, not a run of thousands. Stores written before that kept the
//! attempts inside the run record; [`BatchStore::open_in`] moves them out, in one transaction.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::{Attempt, JobRecord, Run, RunId, Snapshot, StoreOp};

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

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("opening {path}: {reason}")]
    Open {
        /// The store file or work dir.
        path: String,
        /// Why.
        reason: String,
    },
    /// A read or write failed.
    #[error("store {operation} failed: {reason}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored value does not decode.
    #[error("stored {table} entry {key} is corrupt: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The entry's key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

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

fn backend<E: std::fmt::Display>(operation: &'static str) -> impl Fn(E) -> StoreError {
    move |error| StoreError::Backend {
        operation,
        reason: error.to_string(),
    }
}

fn load_failed<E: std::fmt::Display>(error: E) -> StoreError {
    backend("load")(error)
}

fn write_failed<E: std::fmt::Display>(error: E) -> StoreError {
    backend("write")(error)
}

impl BatchStore {
    /// Opens (or creates) `<work_dir>/batch.redb`, creating `work_dir` when missing.
    pub fn open_in(work_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(work_dir).map_err(|error| StoreError::Open {
            path: work_dir.display().to_string(),
            reason: format!("cannot create work dir: {error}"),
        })?;
        let path = work_dir.join(STORE_FILE_NAME);
        let database = Database::create(&path).map_err(|error| StoreError::Open {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
        let store = Self { database, path };
        let transaction = store.database.begin_write().map_err(write_failed)?;
        transaction.open_table(META).map_err(write_failed)?;
        transaction.open_table(JOBS).map_err(write_failed)?;
        transaction.open_table(RUNS).map_err(write_failed)?;
        transaction.open_table(ATTEMPTS).map_err(write_failed)?;
        transaction.commit().map_err(write_failed)?;
        store.move_embedded_attempts()?;
        Ok(store)
    }

    /// Moves attempts stored inside run records (the older layout) to their own records, in
    /// one transaction: a crash leaves either layout whole.
    fn move_embedded_attempts(&self) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(write_failed)?;
        let mut moved = 0usize;
        {
            let mut runs = transaction.open_table(RUNS).map_err(write_failed)?;
            let mut attempts = transaction.open_table(ATTEMPTS).map_err(write_failed)?;
            let mut embedding = Vec::new();
            for entry in runs.iter().map_err(load_failed)? {
                let (key, value) = entry.map_err(load_failed)?;
                let run: Run = decode("runs", &key.value().to_string(), value.value())?;
                if !run.attempts.is_empty() {
                    embedding.push(run);
                }
            }
            for run in embedding {
                for attempt in &run.attempts {
                    attempts
                        .insert((run.id.0, attempt.number), encode(attempt)?.as_slice())
                        .map_err(write_failed)?;
                    moved += 1;
                }
                runs.insert(run.id.0, encode(&run.header())?.as_slice())
                    .map_err(write_failed)?;
            }
        }
        if moved == 0 {
            transaction.abort().map_err(write_failed)?;
            return Ok(());
        }
        transaction.commit().map_err(write_failed)?;
        tracing::info!(attempts = moved, path = %self.path.display(), "moved attempts out of their run records");
        Ok(())
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads everything back.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let transaction = self.database.begin_read().map_err(load_failed)?;
        let mut snapshot = Snapshot::default();
        let meta = transaction.open_table(META).map_err(load_failed)?;
        if let Some(value) = meta.get("meta").map_err(load_failed)? {
            snapshot.meta = decode("meta", "meta", value.value())?;
        }
        let jobs = transaction.open_table(JOBS).map_err(load_failed)?;
        for entry in jobs.iter().map_err(load_failed)? {
            let (key, value) = entry.map_err(load_failed)?;
            snapshot
                .jobs
                .push(decode::<JobRecord>("jobs", key.value(), value.value())?);
        }
        let runs = transaction.open_table(RUNS).map_err(load_failed)?;
        for entry in runs.iter().map_err(load_failed)? {
            let (key, value) = entry.map_err(load_failed)?;
            snapshot.runs.push(decode::<Run>(
                "runs",
                &key.value().to_string(),
                value.value(),
            )?);
        }
        // Both tables are in key order: each run's attempts follow one another, by number.
        let attempts = transaction.open_table(ATTEMPTS).map_err(load_failed)?;
        let mut runs = snapshot.runs.iter_mut().peekable();
        for entry in attempts.iter().map_err(load_failed)? {
            let (key, value) = entry.map_err(load_failed)?;
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

    /// Applies `ops` in one durable transaction.
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
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
        let transaction = self.database.begin_write().map_err(write_failed)?;
        {
            let mut meta = transaction.open_table(META).map_err(write_failed)?;
            let mut jobs = transaction.open_table(JOBS).map_err(write_failed)?;
            let mut runs = transaction.open_table(RUNS).map_err(write_failed)?;
            let mut attempts = transaction.open_table(ATTEMPTS).map_err(write_failed)?;
            for (op, superseded) in ops.iter().zip(superseded) {
                if superseded {
                    continue;
                }
                match op {
                    StoreOp::PutMeta(value) => {
                        meta.insert("meta", encode(value)?.as_slice())
                            .map_err(write_failed)?;
                    }
                    StoreOp::PutJob(job) => {
                        jobs.insert(job.spec.id.as_str(), encode(job.as_ref())?.as_slice())
                            .map_err(write_failed)?;
                    }
                    StoreOp::DeleteJob(job_id) => {
                        jobs.remove(job_id.as_str()).map_err(write_failed)?;
                    }
                    StoreOp::PutRun(run) => {
                        // The attempts are records of their own.
                        let bytes = if run.attempts.is_empty() {
                            encode(run.as_ref())?
                        } else {
                            encode(&run.header())?
                        };
                        runs.insert(run.id.0, bytes.as_slice())
                            .map_err(write_failed)?;
                    }
                    StoreOp::PutAttempt(run_id, attempt) => {
                        attempts
                            .insert(
                                (run_id.0, attempt.number),
                                encode(attempt.as_ref())?.as_slice(),
                            )
                            .map_err(write_failed)?;
                    }
                    StoreOp::DeleteRun(run_id) => {
                        runs.remove(run_id.0).map_err(write_failed)?;
                        attempts
                            .retain_in((run_id.0, 0)..=(run_id.0, u32::MAX), |_, _| false)
                            .map_err(write_failed)?;
                    }
                }
            }
        }
        transaction.commit().map_err(write_failed)?;
        Ok(())
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(backend("encode"))
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: error.to_string(),
    })
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
