//! rustls configurations for mutual TLS inside the cluster: servers that verify clients
//! against the cluster CA, clients that trust the cluster CA only (or, on first contact, the CA
//! a join token pins). Every configuration uses the ring provider explicitly, whatever the
//! process default is.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WantsClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::ca::{CaCertificate, IssuedCertificate};
use crate::error::PkiError;
use crate::files;
use crate::fingerprint::Fingerprint;
use crate::identity::{Identity, identity_of};

/// A holder's certificate and private key.
pub struct Credentials {
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &identity_of(&self.certificate).ok())
            .finish_non_exhaustive()
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            certificate: self.certificate.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Credentials {
    /// Reads the first certificate and the first private key of two PEM texts.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let certificate =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|error| PkiError::Pem {
                what: "certificate".to_owned(),
                reason: format!("no PEM certificate: {error}"),
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|error| PkiError::Pem {
                what: "private key".to_owned(),
                reason: format!("no PEM private key: {error}"),
            })?;
        Ok(Self { certificate, key })
    }

    /// A certificate the CA issued with a key it generated.
    pub fn from_issued(issued: &IssuedCertificate) -> Result<Self, PkiError> {
        let key_pem = issued.key_pem.as_deref().ok_or_else(|| PkiError::Pem {
            what: "private key".to_owned(),
            reason: "the certificate was issued for the holder's own key; pass that key".to_owned(),
        })?;
        Self::from_pem(&issued.cert_pem, key_pem)
    }

    /// Reads a certificate file and a private key file (which must be 0600).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let as_text = |path: &Path, bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| PkiError::Pem {
                what: path.display().to_string(),
                reason: "not UTF-8 text".to_owned(),
            })
        };
        let cert_pem = as_text(cert_path, files::read(cert_path)?)?;
        let key_pem = as_text(key_path, files::read_private(key_path)?)?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// The certificate, DER-encoded.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The identity the certificate names.
    pub fn identity(&self) -> Result<Identity, PkiError> {
        identity_of(&self.certificate)
    }
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate from the cluster CA (gRPC between daemons).
    Required,
    /// A client may present one; one without is let through the handshake and must
    /// authenticate otherwise (a bearer token on a REST API).
    Optional,
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(error: impl std::fmt::Display) -> PkiError {
    PkiError::Tls {
        reason: error.to_string(),
    }
}

fn trusting(ca: &CaCertificate) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).map_err(tls_error)?;
    Ok(Arc::new(roots))
}

/// A server configuration: presents `credentials` (with the CA certificate after it, so a
/// joiner pinning the CA by fingerprint finds it) and verifies client certificates against
/// the cluster CA. Offers ALPN `h2` and `http/1.1`.
pub fn server_config(
    ca: &CaCertificate,
    credentials: &Credentials,
    client_auth: ClientAuth,
) -> Result<ServerConfig, PkiError> {
    let provider = ring_provider();
    let verifier_builder =
        WebPkiClientVerifier::builder_with_provider(trusting(ca)?, provider.clone());
    let verifier_builder = match client_auth {
        ClientAuth::Required => verifier_builder,
        ClientAuth::Optional => verifier_builder.allow_unauthenticated(),
    };
    let verifier = verifier_builder.build().map_err(tls_error)?;
    let chain = vec![credentials.certificate.clone(), ca.der().clone()];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, credentials.key.clone_key())
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration that trusts the cluster CA only, presenting `credentials` when
/// given.
pub fn client_config(
    ca: &CaCertificate,
    credentials: Option<&Credentials>,
) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(trusting(ca)?);
    with_credentials(builder, credentials)
}

/// A client configuration for the first contact of a joiner that has a join token but not yet
/// the CA certificate: it trusts the server only if the server's chain holds a certificate
/// whose SHA-256 is `ca_fingerprint` and the server certificate verifies against it (names
/// included). The returned [`PinnedCa`] then holds that CA certificate, for the joiner to keep.
pub fn client_config_pinned(
    ca_fingerprint: Fingerprint,
    credentials: Option<&Credentials>,
) -> Result<(ClientConfig, PinnedCa), PkiError> {
    let provider = ring_provider();
    let pinned = PinnedCa::default();
    let verifier = PinnedCaVerifier {
        pin: ca_fingerprint,
        provider: provider.clone(),
        seen: pinned.clone(),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    Ok((with_credentials(builder, credentials)?, pinned))
}

fn with_credentials(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    credentials: Option<&Credentials>,
) -> Result<ClientConfig, PkiError> {
    match credentials {
        Some(credentials) => builder
            .with_client_auth_cert(
                vec![credentials.certificate.clone()],
                credentials.key.clone_key(),
            )
            .map_err(tls_error),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The CA certificate a pinned first contact found, once a handshake succeeded.
#[derive(Debug, Clone, Default)]
pub struct PinnedCa {
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

impl PinnedCa {
    /// The pinned CA certificate, after a successful handshake.
    pub fn certificate(&self) -> Option<CaCertificate> {
        let seen = self.seen.lock().unwrap_or_else(|error| error.into_inner());
        seen.clone()
            .and_then(|der| CaCertificate::from_der(der).ok())
    }

    fn record(&self, certificate: CertificateDer<'static>) {
        let mut seen = self.seen.lock().unwrap_or_else(|error| error.into_inner());
        *seen = Some(certificate);
    }
}

/// Trusts the CA certificate in the server's chain whose fingerprint is the pin, then verifies
/// the server certificate against it as webpki would against any root.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
    seen: PinnedCa,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|certificate| Fingerprint::of(certificate) == self.pin)
            .ok_or(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))?
            .clone()
            .into_owned();
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| rustls::Error::General(error.to_string()))?;
        let verified = verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.seen.record(ca);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
