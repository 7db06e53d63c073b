//! The master's shell errors, and the one place that maps core errors to gRPC statuses.

use std::net::SocketAddr;

use crate::core::MasterError;
use crate::store::StoreError;

/// Why [`crate::spawn`] could not start a master.
#[derive(Debug, thiserror::Error)]
pub enum MasterStartError {
    /// The `--store` value names a backend this build does not have.
    #[error("store {spec:?}: {reason}")]
    UnsupportedStore {
        /// The store as given.
        spec: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The registry store could not be opened or read.
    #[error("cannot recover the registry: {0}")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Why a running master stopped on its own, reported by [`crate::MasterHandle::shutdown`].
#[derive(Debug, thiserror::Error)]
pub enum MasterRunError {
    /// A registry write failed; the master stopped rather than run on unpersisted state.
    #[error("registry write failed, master stopped: {0}")]
    Store(#[from] StoreError),
    /// The HTTP/gRPC server failed.
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    /// The master's state task ended unexpectedly (a bug: it panicked).
    #[error("master state task ended unexpectedly: {0}")]
    ActorFailed(String),
}

/// Maps a core error to the gRPC status a caller sees, keeping the error's message.
pub fn status_from_master_error(error: &MasterError) -> tonic::Status {
    let message = error.to_string();
    match error {
        MasterError::UnknownFramework(_)
        | MasterError::UnknownOffer(_)
        | MasterError::UnknownAgent(_)
        | MasterError::UnknownTask(_)
        | MasterError::UnknownUpdate { .. } => tonic::Status::not_found(message),
        MasterError::InvalidField { .. } | MasterError::InsufficientResources { .. } => {
            tonic::Status::invalid_argument(message)
        }
        MasterError::StaleStream { .. } => tonic::Status::failed_precondition(message),
        MasterError::FrameworkRemoved(_) => tonic::Status::permission_denied(message),
    }
}

/// The status handlers answer when the master's state task is gone (shutting down or failed).
pub(crate) fn master_unavailable() -> tonic::Status {
    tonic::Status::unavailable("master is shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::{FrameworkId, OfferId};
    use tonic::Code;

    #[test]
    fn core_errors_map_to_codes_with_their_message() {
        let unknown_offer =
            status_from_master_error(&MasterError::UnknownOffer(OfferId::new("o1")));
        assert_eq!(unknown_offer.code(), Code::NotFound);
        assert!(unknown_offer.message().contains("o1"));

        let invalid = status_from_master_error(&MasterError::InvalidField {
            field: "framework.role".to_owned(),
            reason: "must not contain '/'".to_owned(),
        });
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "framework.role: must not contain '/'");

        let stale = status_from_master_error(&MasterError::StaleStream {
            framework_id: FrameworkId::new("fw-1"),
            stream_id: "s0".to_owned(),
        });
        assert_eq!(stale.code(), Code::FailedPrecondition);

        let removed =
            status_from_master_error(&MasterError::FrameworkRemoved(FrameworkId::new("fw-2")));
        assert_eq!(removed.code(), Code::PermissionDenied);
    }
}
