//! The fault suite's harness: the real daemons as child processes (`FaultCluster`), faults by
//! pid (SIGKILL, SIGSTOP/SIGCONT, restart, `docker rm -f` behind an agent's back) and exact
//! convergence checks across the master, the framework's API and the Docker Engine.

mod cluster;
mod daemon;
mod exact;
mod report;

pub use cluster::{FaultCluster, FaultOptions, active_agents, daemon_binaries, fault_docker};
pub use daemon::{Daemon, DaemonError};
pub use exact::{BatchExpectation, BatchObserved, Observed};
pub use report::{FaultSuite, RunOutcome};
