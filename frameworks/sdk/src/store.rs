//! Plumbing for a framework's embedded store: a redb file in the daemon's work dir holding
//! JSON records. The schema (tables, keys, what a write does) stays with each framework; this
//! module opens the file, maps redb and serde failures to one [`StoreError`], and runs blocking
//! store work off the async threads.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use redb::Database;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a framework's store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The work dir or the store file could not be opened or created.
    #[error("cannot open store {path}: {reason}")]
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
    /// A stored record does not decode.
    #[error("stored {table} entry {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The entry's key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// Maps the error of any store call (redb's, serde's, a failed blocking task) to
/// [`StoreError::Backend`] naming the operation.
pub trait OrStoreError<T> {
    /// This result, its error turned into [`StoreError::Backend`] for `operation`.
    fn or_store(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T, E: Display> OrStoreError<T> for Result<T, E> {
    fn or_store(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| StoreError::Backend {
            operation,
            reason: error.to_string(),
        })
    }
}

/// Opens (or creates) `<work_dir>/<file_name>`, creating `work_dir` when missing; returns
/// the database and the file's path. The caller creates its tables.
pub fn open_database(work_dir: &Path, file_name: &str) -> Result<(Database, PathBuf), StoreError> {
    std::fs::create_dir_all(work_dir).map_err(|error| StoreError::Open {
        path: work_dir.display().to_string(),
        reason: format!("cannot create work dir: {error}"),
    })?;
    let path = work_dir.join(file_name);
    let database = Database::create(&path).map_err(|error| StoreError::Open {
        path: path.display().to_string(),
        reason: error.to_string(),
    })?;
    Ok((database, path))
}

/// A record as stored: its JSON.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).or_store("encode")
}

/// A stored record read back; [`StoreError::Corrupt`] names `table` and `key` when it does
/// not decode.
pub fn decode<T: DeserializeOwned>(
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

/// Runs blocking store work (opening, loading) on the blocking pool and waits for it; a task
/// that could not finish is a [`StoreError::Backend`] for `operation`.
pub async fn blocking<T, F>(operation: &'static str, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .or_store(operation)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_bad_one_names_its_table_and_key() {
        let bytes = encode(&vec!["a", "b"]).expect("encodes");
        let back: Vec<String> = decode("letters", "k", &bytes).expect("decodes");
        assert_eq!(back, ["a", "b"]);
        let error = decode::<Vec<String>>("letters", "k1", b"{").expect_err("corrupt");
        assert!(matches!(
            &error,
            StoreError::Corrupt { table: "letters", key, .. } if key == "k1"
        ));
        assert!(
            error
                .to_string()
                .starts_with("stored letters entry \"k1\" is corrupt: ")
        );
    }

    #[test]
    fn open_creates_the_work_dir_and_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let work_dir = dir.path().join("nested").join("work");
        let (_database, path) = open_database(&work_dir, "test.redb").expect("opens");
        assert_eq!(path, work_dir.join("test.redb"));
        assert!(path.is_file());
    }

    #[test]
    fn an_unusable_work_dir_is_an_open_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"not a directory").expect("write");
        let error = open_database(&file, "test.redb").expect_err("a file is no work dir");
        let StoreError::Open { path, reason } = &error else {
            panic!("expected an open error, got {error:?}");
        };
        assert_eq!(path, &file.display().to_string());
        assert!(reason.starts_with("cannot create work dir: "), "{reason}");
    }

    #[tokio::test]
    async fn blocking_work_returns_its_result_or_a_backend_error() {
        assert_eq!(blocking("load", || Ok(7)).await.expect("runs"), 7);
        let failed = blocking::<(), _>("load", || -> Result<(), StoreError> {
            panic!("the task fails")
        })
        .await
        .expect_err("a panicking task is an error");
        assert!(matches!(
            failed,
            StoreError::Backend {
                operation: "load",
                ..
            }
        ));
    }
}
