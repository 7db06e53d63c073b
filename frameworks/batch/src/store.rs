//! The embedded store: jobs, runs (with their attempts) and the framework id in a redb file,
//! `<work-dir>/batch.redb`. Values are JSON; each [`BatchStore::apply`] is one durable
//! transaction.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::{JobRecord, Run, Snapshot, StoreOp};

/// `"meta"` -> JSON [`Meta`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Job id -> JSON [`JobRecord`].
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Run number -> JSON [`Run`].
const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");

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
        transaction.commit().map_err(write_failed)?;
        Ok(store)
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
        Ok(snapshot)
    }

    /// Applies `ops` in one durable transaction.
    pub fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let transaction = self.database.begin_write().map_err(write_failed)?;
        {
            let mut meta = transaction.open_table(META).map_err(write_failed)?;
            let mut jobs = transaction.open_table(JOBS).map_err(write_failed)?;
            let mut runs = transaction.open_table(RUNS).map_err(write_failed)?;
            for op in ops {
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
                        runs.insert(run.id.0, encode(run.as_ref())?.as_slice())
                            .map_err(write_failed)?;
                    }
                    StoreOp::DeleteRun(run_id) => {
                        runs.remove(run_id.0).map_err(write_failed)?;
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
