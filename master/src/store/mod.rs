//! The registry store: where the master keeps what must survive a restart.

mod redb_store;

pub use redb_store::RedbStore;

use crate::core::{Registry, RegistryUpdate};

/// Why the store could not load or apply the registry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file could not be opened or created.
    #[error("cannot open store {path}: {reason}")]
    Open {
        /// The store file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A read or write transaction failed.
    #[error("store {operation} failed: {reason}")]
    Backend {
        /// What was being done (`load`, `apply`, ...).
        operation: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A stored record does not decode.
    #[error("stored {table} record {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// The record's key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// A durable home for the master's [`Registry`].
///
/// Calls block (disk IO); the shell runs them off the async runtime.
pub trait RegistryStore: Send + Sync {
    /// Reads the whole registry. An empty store gives an empty registry.
    fn load(&self) -> Result<Registry, StoreError>;

    /// Applies `updates` in order, atomically: after an error none of them is visible.
    fn apply(&self, updates: &[RegistryUpdate]) -> Result<(), StoreError>;
}
