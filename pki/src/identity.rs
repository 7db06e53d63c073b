//! `Identity`: who a certificate speaks for, carried as one `agora://<kind>/<name>` URI in its
//! subject alternative names.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{PkiError, truncated};

/// The scheme and authority every identity URI starts with.
const URI_PREFIX: &str = "agora://";

/// Longest name in an identity, in bytes: the protocol's longest id or name
/// (`agora_proto::limits::MAX_ID_LEN`).
pub const MAX_IDENTITY_NAME_LEN: usize = 255;

/// Who a certificate speaks for. Trust it only once the TLS layer verified the certificate
/// against the cluster CA: [`identity_of`] only reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An agent, by its agent id: `agora://agent/<id>`.
    Agent(String),
    /// A framework's principal: `agora://framework/<principal>`.
    Framework(String),
    /// An operator (a person or a tool using the operator API): `agora://operator/<name>`.
    Operator(String),
    /// A daemon serving an API: the master, svcframework, batchframework:
    /// `agora://daemon/<name>`.
    Daemon(String),
}

impl Identity {
    /// The kind as it appears in the URI (`agent`, `framework`, `operator`, `daemon`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Framework(_) => "framework",
            Self::Operator(_) => "operator",
            Self::Daemon(_) => "daemon",
        }
    }

    /// The name: the agent id, the principal, the operator's or the daemon's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Agent(name)
            | Self::Framework(name)
            | Self::Operator(name)
            | Self::Daemon(name) => name,
        }
    }

    /// The URI that carries this identity in a certificate.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.kind(), self.name())
    }

    /// Checks the name: not empty, at most [`MAX_IDENTITY_NAME_LEN`] bytes, printable ASCII
    /// (`!`..=`~`) without `/`, and not `.` or `..` — the protocol's rule for ids, so every
    /// agent id and principal the master accepts can be named.
    pub fn validate(&self) -> Result<(), PkiError> {
        check_name(self.kind(), self.name())
    }

    /// Parses `agora://<kind>/<name>`.
    pub fn from_uri(uri: &str) -> Result<Self, PkiError> {
        let invalid = |reason| PkiError::InvalidIdentity {
            uri: truncated(uri),
            reason,
        };
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or_else(|| invalid("it does not start with agora://"))?;
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| invalid("expected agora://<kind>/<name>"))?;
        let identity = match kind {
            "agent" => Self::Agent(name.to_owned()),
            "framework" => Self::Framework(name.to_owned()),
            "operator" => Self::Operator(name.to_owned()),
            "daemon" => Self::Daemon(name.to_owned()),
            _ => {
                return Err(invalid(
                    "the kind must be agent, framework, operator or daemon",
                ));
            }
        };
        identity.validate()?;
        Ok(identity)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

fn check_name(kind: &'static str, name: &str) -> Result<(), PkiError> {
    let invalid = |reason| PkiError::InvalidName {
        kind,
        name: truncated(name),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_IDENTITY_NAME_LEN {
        return Err(invalid("it is longer than 255 bytes"));
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_graphic() && byte != b'/')
    {
        return Err(invalid(
            "it may hold only printable ASCII characters other than space and '/'",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not names"));
    }
    Ok(())
}

/// Reads the identity a certificate (DER) names. Refuses a certificate with no `agora://` URI
/// or with several; other URIs are ignored. Does not verify the certificate: the TLS layer
/// does.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|error| PkiError::Certificate {
        reason: format!("not a DER X.509 certificate: {error}"),
    })?;
    identity_of_parsed(&cert)
}

/// The identity of the peer of a TLS connection, from the certificates it presented (the
/// end-entity certificate first, as rustls and tonic give them).
pub fn peer_identity(
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> Result<Identity, PkiError> {
    let end_entity = peer_certificates
        .and_then(|certificates| certificates.first())
        .ok_or(PkiError::NoPeerCertificate)?;
    identity_of(end_entity)
}

fn identity_of_parsed(cert: &X509Certificate<'_>) -> Result<Identity, PkiError> {
    let alternative_names =
        cert.subject_alternative_name()
            .map_err(|error| PkiError::Certificate {
                reason: format!("malformed subject alternative names: {error}"),
            })?;
    let Some(alternative_names) = alternative_names else {
        return Err(PkiError::NoIdentity);
    };
    let agora_uris: Vec<&str> = alternative_names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match agora_uris.as_slice() {
        [] => Err(PkiError::NoIdentity),
        [uri] => Identity::from_uri(uri),
        several => Err(PkiError::SeveralIdentities {
            count: several.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips_for_every_kind() {
        for identity in [
            Identity::Agent("agent-1".into()),
            Identity::Framework("svc".into()),
            Identity::Operator("alice@example".into()),
            Identity::Daemon("master".into()),
        ] {
            assert_eq!(Identity::from_uri(&identity.uri()).unwrap(), identity);
        }
    }

    #[test]
    fn malformed_uris_are_refused_with_the_reason() {
        let cases = [
            ("https://agent/a", "does not start with agora://"),
            ("agora://agent", "expected agora://<kind>/<name>"),
            ("agora://robot/a", "the kind must be"),
            ("agora://agent/", "it is empty"),
            ("agora://agent/a/b", "other than space and '/'"),
            ("agora://agent/a b", "other than space and '/'"),
            ("agora://agent/..", "are not names"),
        ];
        for (uri, reason) in cases {
            let message = Identity::from_uri(uri).unwrap_err().to_string();
            assert!(message.contains(reason), "{uri}: {message}");
        }
        let long = format!("agora://agent/{}", "a".repeat(256));
        let message = Identity::from_uri(&long).unwrap_err().to_string();
        assert!(message.contains("longer than 255 bytes"), "{message}");
    }

    proptest::proptest! {
        #[test]
        fn reading_any_uri_or_bytes_never_panics(text in ".*", bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(identity) = Identity::from_uri(&text) {
                proptest::prop_assert_eq!(identity.uri(), text);
            }
            let _ = identity_of(&bytes);
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let error = identity_of(b"not a certificate").unwrap_err();
        assert!(matches!(error, PkiError::Certificate { .. }), "{error}");
        assert!(matches!(
            peer_identity(None),
            Err(PkiError::NoPeerCertificate)
        ));
        assert!(matches!(
            peer_identity(Some(&[][..])),
            Err(PkiError::NoPeerCertificate)
        ));
    }
}
