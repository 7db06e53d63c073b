//! batchframework: jobs that end — one-off, parallel, cron and dependency chains — on Agora,
//! with every job, run and attempt persisted so a restarted daemon neither loses nor
//! duplicates a run.
//!
//! The logic is the sans-IO [`core`] (with [`cron`] and [`job`]); [`spawn`] runs it against a
//! master with its [`store`] and HTTP API. The `batchframework` binary adds the CLI.

pub mod core;
pub mod cron;
mod http;
pub mod job;
mod server;
pub mod store;

pub use http::render_metrics;
pub use server::{BatchHandle, BatchRunError, BatchSettings, BatchStartError, spawn};
