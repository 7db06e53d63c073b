//! `PkiError`: everything that can go wrong with the CA, certificates, tokens and TLS settings.

use std::fmt;
use std::path::PathBuf;

/// Which part of a token was refused by [`JoinToken::parse`](crate::JoinToken::parse) or
/// [`OperatorToken::parse`](crate::OperatorToken::parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPart {
    /// The number of `-`-separated parts.
    Shape,
    /// The leading `AGORA`.
    Prefix,
    /// The format version after the prefix (`1`).
    Version,
    /// The role (`agent`, `framework` or `operator`).
    Role,
    /// The CA fingerprint (64 hex digits).
    Fingerprint,
    /// The secret (hex digits).
    Secret,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shape => "shape",
            Self::Prefix => "prefix",
            Self::Version => "version",
            Self::Role => "role",
            Self::Fingerprint => "CA fingerprint",
            Self::Secret => "secret",
        })
    }
}

/// Why a certificate, a key, a token or a TLS setting was refused. Messages name the file, the
/// field or the token part and the reason; they never quote a secret.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `ClusterCa::create` found a CA file already there and refuses to replace it.
    #[error("{} already exists: refusing to replace an existing cluster CA", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A private key file may be read by other users.
    #[error("{} may be read by group or others (mode {mode:o}); it must be 0600", path.display())]
    KeyFileTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A PEM file or string did not hold what it should.
    #[error("{what}: {reason}")]
    Pem {
        /// What was being read (a path or a description).
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A certificate could not be parsed or lacks what Agora needs.
    #[error("certificate: {reason}")]
    Certificate {
        /// What was wrong.
        reason: String,
    },
    /// The CA's private key does not belong to the CA certificate.
    #[error("{} does not hold the private key of the CA certificate beside it", path.display())]
    KeyMismatch {
        /// The key file.
        path: PathBuf,
    },
    /// rcgen refused to build a key or a certificate.
    #[error("issuing a certificate: {reason}")]
    Issue {
        /// rcgen's reason.
        reason: String,
    },
    /// The requested certificate lifetime is out of range.
    #[error("certificate lifetime of {seconds} s: {reason}")]
    InvalidLifetime {
        /// The requested lifetime, in seconds.
        seconds: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An identity's name (agent id, principal, operator or daemon name) is not allowed.
    #[error("{kind} name {name:?}: {reason}")]
    InvalidName {
        /// The identity kind (`agent`, `framework`, `operator`, `daemon`).
        kind: &'static str,
        /// The refused name (truncated to 64 characters).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A certificate or URI names no Agora identity, or a malformed one.
    #[error("identity {uri:?}: {reason}")]
    InvalidIdentity {
        /// The URI (truncated to 64 characters).
        uri: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A certificate carries no `agora://` identity.
    #[error("the certificate names no agora:// identity in its subject alternative names")]
    NoIdentity,
    /// A certificate carries more than one `agora://` identity.
    #[error("the certificate names {count} agora:// identities; exactly one is allowed")]
    SeveralIdentities {
        /// How many it names.
        count: usize,
    },
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// A token is malformed.
    #[error("token: the {part} is wrong: {reason}")]
    InvalidToken {
        /// The part that is wrong.
        part: TokenPart,
        /// Why.
        reason: &'static str,
    },
    /// A well-formed join token is for another role than the one asked for.
    #[error("token: it is the {found} join token, the {expected} join token is needed")]
    TokenRoleMismatch {
        /// The role the caller needs.
        expected: &'static str,
        /// The role the token carries.
        found: &'static str,
    },
    /// A join token pins another CA than this cluster's.
    #[error(
        "token: it pins CA {found}, but this cluster's CA is {expected}: it is another cluster's token"
    )]
    TokenForAnotherCluster {
        /// This cluster's CA fingerprint.
        expected: String,
        /// The fingerprint in the token.
        found: String,
    },
    /// The token's secret is not the current one (wrong, or rotated since).
    #[error("token: the {role} token is not the current one (wrong, or rotated)")]
    TokenNotCurrent {
        /// The role whose token was checked.
        role: &'static str,
    },
    /// No token of this role has been issued yet.
    #[error("token: no {role} token has been issued")]
    NoTokenIssued {
        /// The role.
        role: &'static str,
    },
    /// The token file could not be parsed or written.
    #[error("token file {}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {reason}")]
    Random {
        /// The reason given.
        reason: String,
    },
    /// rustls refused a configuration (a key, a certificate or a verifier).
    #[error("TLS configuration: {reason}")]
    Tls {
        /// rustls's reason.
        reason: String,
    },
}

/// Cuts what a peer sent to at most 64 characters before it is quoted in an error.
pub(crate) fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}
