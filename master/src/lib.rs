//! The Agora master: turns agents' resources into offers for frameworks and tracks their tasks.
//!
//! The logic lives in the sans-IO [`core`]; the rest is a thin shell. Embed a master with
//! [`spawn`] and [`MasterSettings`]; the `master` binary does the same from flags.

mod actor;
pub mod config;
pub mod core;
mod error;
mod grpc;
mod http;
pub mod metrics;
mod server;
pub mod state_json;
pub mod store;

pub use error::{MasterRunError, MasterStartError, status_from_master_error};
pub use server::{MasterHandle, MasterSettings, StoreSpec, spawn};
