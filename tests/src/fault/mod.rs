//! The fault suite's harness: the real daemons as child processes (`FaultCluster`), faults by
//! pid (SIGKILL, SIGSTOP/SIGCONT, restart, `docker rm -f` behind an agent's back) and exact
//! convergence checks across the master, the framework's API and the Docker Engine.
//!
//! The scenarios live in `tests/tests/fault_*.rs`; each test runs one scenario several times
//! with the fault at different moments, each run on a fresh cluster (master, agents `node-1..3`
//! with the Docker runtime, svcframework or batchframework; heartbeats every 500 ms, 3 missed
//! make an agent unreachable). Every run prints one line
//! `FAULT-SUITE scenario=… run=… moment="…" outcome=exact|FAILED seconds=…` (time from the
//! fault to the start of a stable exact stretch), and the test fails after all its runs when
//! any run failed, with the three sets and the daemons' log tails.
//!
//! Exact, for svcframework: the task ids RUNNING at the master, the ids svcframework's API shows
//! RUNNING (and not being killed), and the ids of running containers labelled with the
//! framework id are the same set, of the wanted size, nobody lists an id twice, no other live
//! task or instance exists, the expected number of agents is active, and this holds for 3 s.
//! For batchframework: the run SUCCEEDED with every completion counted once, the succeeded
//! attempts are exactly the containers of the run that exited 0, nothing of the run still runs
//! at the master or in Docker, and no more than `parallelism` containers ran at once.
//!
//! `AGORA_FAULT_LINGER_SECONDS=N` makes a failed svc run keep watching N more seconds and say
//! whether and when it became exact after all (e.g. a 30 s retry or a 10 min timeout).

mod cluster;
mod daemon;
mod exact;
mod report;

pub use cluster::{FaultCluster, FaultOptions, active_agents, daemon_binaries, fault_docker};
pub use daemon::{Daemon, DaemonError};
pub use exact::{BatchExpectation, BatchObserved, Observed};
pub use report::{FaultSuite, RunOutcome};
