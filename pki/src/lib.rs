//! Agora's public-key infrastructure: the cluster CA and the certificates it issues, the
//! identity a certificate names, join and operator tokens, and the rustls configurations for
//! mutual TLS between daemons.

mod ca;
mod error;
mod files;
mod fingerprint;
mod identity;
mod renewal;
mod tls;
mod token;
mod token_file;

pub use ca::{
    CA_CERT_FILE, CA_KEY_FILE, CA_LIFETIME, CLOCK_SKEW_ALLOWANCE, CaCertificate, ClusterCa,
    DEFAULT_LEAF_LIFETIME, IssuedCertificate, LeafRequest, MAX_LEAF_LIFETIME, MIN_LEAF_LIFETIME,
    SubjectKey, Usage,
};
pub use error::{PkiError, TokenPart};
pub use fingerprint::{Fingerprint, FingerprintParseError};
pub use identity::{Identity, MAX_IDENTITY_NAME_LEN, identity_of, peer_identity};
pub use renewal::CertRenewal;
pub use tls::{
    ClientAuth, Credentials, PinnedCa, client_config, client_config_pinned, server_config,
};
pub use token::{JoinRole, JoinToken, OperatorToken, SECRET_BYTES, SecretHash};
pub use token_file::{StoredToken, TOKEN_FILE, TokenFile};
