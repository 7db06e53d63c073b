//! Agora's protocol: the generated `agora.v1` gRPC code, id newtypes and resource arithmetic —
//! the vocabulary the master, agents and frameworks share.

mod backoff;
pub mod clock;
mod codec;
mod ids;
pub mod limits;
mod resources;
mod serve;
mod states;

pub use backoff::{Backoff, seeded_jitter};
pub use clock::{Clock, ManualClock, Now, SystemClock};
pub use ids::{AgentId, FrameworkId, OfferId, StreamId, TaskId};
pub use resources::{CPUS, DISK, GPUS, MAX_SCALAR, MEM, PORTS, RangeSet, ResourceError, Resources};
pub use serve::{ServeLimits, is_json_content_type, serve};
pub use states::{IllegalTransition, TaskPhase, check_transition, is_terminal, now_seconds};

/// Generated code for package `agora.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("agora.v1");
}

/// Version of the Agora binaries, reported by every daemon.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
