//! The framework runtime: one loop that runs a sans-IO [`FrameworkCore`] against the
//! [`SchedulerDriver`](crate::SchedulerDriver) and a [`FrameworkStore`].
//!
//! What every framework's shell needs and must get right once:
//! - driver events that are already waiting are handled as one batch (their store writes
//!   go in one transaction, and a core can plan once for many updates);
//! - every [`Command::Persist`] is durable before any later command is sent (a launch is
//!   stored before it is sent), and a store failure stops the runtime;
//! - status updates are acknowledged only once what they changed is stored, a bounded
//!   number at once in their own task, so slow acknowledgements never stall the event loop;
//! - a run of launches is sent concurrently (bounded), and launches that fail are fed back
//!   to the core ([`FrameworkCore::on_launch_failed`]);
//! - explicit reconciliation is sent in chunks, one per tick, after every (re-)subscription;
//! - lost agents are fed back to the core ([`FrameworkCore::on_agent_failure`]);
//! - API calls run on the loop, and their answer is sent only after the commands they
//!   produced are carried out (a change the API confirms is stored).

mod calls;
mod command;
mod framework;
mod reconcile;
mod run;

#[cfg(test)]
mod tests;

pub use calls::{CallReceiver, CoreCalls, core_calls};
pub use command::{Command, LaunchFailure};
pub use framework::{FrameworkCore, FrameworkStore, NoStore};
pub use run::{Runtime, RuntimeConfig, RuntimeError};
