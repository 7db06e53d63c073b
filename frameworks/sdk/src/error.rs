//! Errors returned by the driver's calls.

use tonic::Code;

/// Why a driver call failed. Variants built from a gRPC status carry the master's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdkError {
    /// `DriverConfig.master_url` is not a usable URL.
    #[error("master_url {url:?}: {reason}")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A `DriverConfig` field is out of range.
    #[error("{field}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The driver has no current subscription (not yet subscribed, or reconnecting).
    #[error("the driver is not subscribed to the master (not yet, or reconnecting)")]
    NotSubscribed,
    /// The master rejected the request's content (`INVALID_ARGUMENT`).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Something the request names does not exist (`NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request does not fit the current state (`FAILED_PRECONDITION`), e.g. a stale stream.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The framework may not do this any more, e.g. it was removed (`PERMISSION_DENIED`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request asks for more than is available (`RESOURCE_EXHAUSTED`).
    #[error("resources exhausted: {0}")]
    ResourceExhausted(String),
    /// The master could not be reached (`UNAVAILABLE`).
    #[error("master unavailable: {0}")]
    Unavailable(String),
    /// Any other gRPC failure.
    #[error("master call failed ({code:?}): {message}")]
    Rpc {
        /// The gRPC status code.
        code: Code,
        /// The master's message.
        message: String,
    },
}

impl SdkError {
    /// The gRPC code this error came from, when it came from the master.
    pub fn code(&self) -> Option<Code> {
        match self {
            SdkError::InvalidArgument(_) => Some(Code::InvalidArgument),
            SdkError::NotFound(_) => Some(Code::NotFound),
            SdkError::FailedPrecondition(_) => Some(Code::FailedPrecondition),
            SdkError::PermissionDenied(_) => Some(Code::PermissionDenied),
            SdkError::ResourceExhausted(_) => Some(Code::ResourceExhausted),
            SdkError::Unavailable(_) => Some(Code::Unavailable),
            SdkError::Rpc { code, .. } => Some(*code),
            SdkError::InvalidUrl { .. }
            | SdkError::InvalidConfig { .. }
            | SdkError::NotSubscribed => None,
        }
    }
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => SdkError::InvalidArgument(message),
            Code::NotFound => SdkError::NotFound(message),
            Code::FailedPrecondition => SdkError::FailedPrecondition(message),
            Code::PermissionDenied | Code::Unauthenticated => SdkError::PermissionDenied(message),
            Code::ResourceExhausted => SdkError::ResourceExhausted(message),
            Code::Unavailable => SdkError::Unavailable(message),
            code => SdkError::Rpc { code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_variants_keeping_the_message() {
        let error = SdkError::from(tonic::Status::invalid_argument(
            "tasks[0].resources: cpus < 0",
        ));
        assert_eq!(
            error,
            SdkError::InvalidArgument("tasks[0].resources: cpus < 0".into())
        );
        assert!(error.to_string().contains("cpus < 0"));
        assert_eq!(error.code(), Some(Code::InvalidArgument));
        let error = SdkError::from(tonic::Status::new(Code::Internal, "boom"));
        assert_eq!(
            error,
            SdkError::Rpc {
                code: Code::Internal,
                message: "boom".into()
            }
        );
        assert_eq!(SdkError::NotSubscribed.code(), None);
    }
}
