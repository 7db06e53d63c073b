//! The gRPC services: each call becomes a request to the state task; nothing is decided here.

mod agent;
mod operator;
mod scheduler;

pub(crate) use agent::AgentGrpc;
pub(crate) use operator::OperatorGrpc;
pub(crate) use scheduler::SchedulerGrpc;

use crate::core::MasterError;
use crate::error::status_from_master_error;

/// Turns a core answer into a gRPC answer.
fn respond<T>(result: Result<T, MasterError>) -> Result<tonic::Response<T>, tonic::Status> {
    result
        .map(tonic::Response::new)
        .map_err(|error| status_from_master_error(&error))
}
