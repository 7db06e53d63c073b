//! `ClusterCa`: the cluster's certificate authority, created by the master in its work dir, and
//! the leaf certificates it issues.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::TryRngCore;
use rand::rngs::OsRng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::error::PkiError;
use crate::files;
use crate::fingerprint::Fingerprint;
use crate::identity::Identity;

/// File name of the CA certificate in the master's work dir (mode 0644: anyone may read it).
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in the master's work dir (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long the CA certificate is valid: ten years, as swarm's root CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far `not_before` is set back, so a peer whose clock is a little behind accepts a
/// certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);
/// Default lifetime of a leaf certificate: short, renewed by its holder well before it ends.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Shortest lifetime a leaf certificate may be issued with.
pub const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(60);
/// Longest lifetime a leaf certificate may be issued with.
pub const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The cluster CA's certificate alone: what every daemon trusts, what a join token pins.
#[derive(Debug, Clone)]
pub struct CaCertificate {
    der: CertificateDer<'static>,
    pem: String,
}

impl CaCertificate {
    /// Reads the first certificate of a PEM text and checks that it is a CA certificate.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|error| PkiError::Pem {
                what: "CA certificate".to_owned(),
                reason: format!("no PEM certificate: {error}"),
            })?;
        Self::from_der(der)
    }

    /// Takes a DER certificate and checks that it is a CA certificate.
    pub fn from_der(der: CertificateDer<'static>) -> Result<Self, PkiError> {
        let (_, parsed) =
            X509Certificate::from_der(&der).map_err(|error| PkiError::Certificate {
                reason: format!("not a DER X.509 certificate: {error}"),
            })?;
        if !parsed.is_ca() {
            return Err(PkiError::Certificate {
                reason: "it is not a CA certificate (no CA basic constraint)".to_owned(),
            });
        }
        let pem = pem_encode("CERTIFICATE", &der);
        Ok(Self { der, pem })
    }

    /// Reads a CA certificate file (`ca.pem`).
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        let bytes = files::read(path)?;
        let text = String::from_utf8(bytes).map_err(|_| PkiError::Pem {
            what: path.display().to_string(),
            reason: "not UTF-8 text".to_owned(),
        })?;
        Self::from_pem(&text).map_err(|error| match error {
            PkiError::Pem { reason, .. } => PkiError::Pem {
                what: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// The certificate, DER-encoded.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The certificate, PEM-encoded.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// SHA-256 of the DER: what a join token pins.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.der)
    }
}

/// What a leaf certificate may be used for (its extended key usages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS client authentication only (agents, frameworks, operators).
    Client,
    /// TLS server authentication only.
    Server,
    /// Both: a daemon that serves an API and calls the master.
    ClientAndServer,
}

/// The key a leaf certificate certifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKey {
    /// The CA generates an ECDSA P-256 key pair and returns its private key with the
    /// certificate.
    Generate,
    /// The holder kept its private key and sent its public key (a DER SubjectPublicKeyInfo).
    PublicKey(Vec<u8>),
}

/// What to put in a leaf certificate. [`LeafRequest::new`] gives the defaults: a generated
/// key, [`DEFAULT_LEAF_LIFETIME`], client usage except for daemons (client and server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Who the certificate speaks for.
    pub identity: Identity,
    /// What it may be used for.
    pub usage: Usage,
    /// DNS names a server certificate answers to.
    pub dns_names: Vec<String>,
    /// IP addresses a server certificate answers to.
    pub ip_addresses: Vec<IpAddr>,
    /// How long it is valid from the time of issue.
    pub lifetime: Duration,
    /// The key it certifies.
    pub subject_key: SubjectKey,
}

impl LeafRequest {
    /// A request with the defaults for this identity.
    pub fn new(identity: Identity) -> Self {
        let usage = match identity {
            Identity::Daemon(_) => Usage::ClientAndServer,
            Identity::Agent(_) | Identity::Framework(_) | Identity::Operator(_) => Usage::Client,
        };
        Self {
            identity,
            usage,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            lifetime: DEFAULT_LEAF_LIFETIME,
            subject_key: SubjectKey::Generate,
        }
    }

    /// Adds the DNS names and IP addresses a server answers to, and server usage.
    pub fn serving(mut self, dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Self {
        self.dns_names = dns_names;
        self.ip_addresses = ip_addresses;
        self.usage = match self.usage {
            Usage::Client | Usage::ClientAndServer => Usage::ClientAndServer,
            Usage::Server => Usage::Server,
        };
        self
    }

    /// Sets the lifetime.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Certifies the holder's own public key (a DER SubjectPublicKeyInfo) instead of a
    /// generated one.
    pub fn public_key(mut self, subject_public_key_info: Vec<u8>) -> Self {
        self.subject_key = SubjectKey::PublicKey(subject_public_key_info);
        self
    }
}

/// A leaf certificate the CA issued.
#[derive(Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM-encoded.
    pub cert_pem: String,
    /// The certificate, DER-encoded.
    pub cert_der: CertificateDer<'static>,
    /// The private key (PKCS#8 PEM) when the CA generated it; `None` for a holder's own key.
    pub key_pem: Option<String>,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The cluster CA: its certificate and the key that signs every leaf certificate.
pub struct ClusterCa {
    certificate: CaCertificate,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.certificate.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Creates a new CA in `dir`: `ca-key.pem` (0600) then `ca.pem` (0644), each written
    /// atomically. Refuses to replace an existing CA.
    pub fn create(dir: &Path) -> Result<Self, PkiError> {
        Self::create_at(dir, SystemTime::now())
    }

    /// [`ClusterCa::create`] at a given time.
    pub fn create_at(dir: &Path, now: SystemTime) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(PkiError::AlreadyExists { path: path.clone() });
            }
        }
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Agora");
        // A name of its own, so a certificate from another cluster's CA is refused as from an
        // unknown issuer rather than matched by name and then failing its signature check.
        let mut cluster_id = [0_u8; 8];
        fill_random(&mut cluster_id)?;
        name.push(
            DnType::CommonName,
            format!(
                "Agora cluster CA {}",
                crate::fingerprint::to_hex(&cluster_id)
            ),
        );
        params.distinguished_name = name;
        // The CA signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset_date_time(backdated(now))?;
        params.not_after = to_offset_date_time(later(now, CA_LIFETIME)?)?;
        params.serial_number = Some(random_serial()?);
        let certificate = params.self_signed(&key).map_err(issue_error)?;

        files::write_atomically(
            &key_path,
            key.serialize_pem().as_bytes(),
            files::PRIVATE_MODE,
        )?;
        files::write_atomically(&cert_path, certificate.pem().as_bytes(), files::PUBLIC_MODE)?;
        Ok(Self {
            certificate: CaCertificate::from_der(certificate.der().clone())?,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir`. Refuses a key file others may read and a key that does not
    /// belong to the certificate.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let certificate = CaCertificate::load(&cert_path)?;
        let key_text =
            String::from_utf8(files::read_private(&key_path)?).map_err(|_| PkiError::Pem {
                what: key_path.display().to_string(),
                reason: "not UTF-8 text".to_owned(),
            })?;
        let key = KeyPair::from_pem(&key_text).map_err(|error| PkiError::Pem {
            what: key_path.display().to_string(),
            reason: format!("no usable private key: {error}"),
        })?;
        let (_, parsed) = X509Certificate::from_der(certificate.der()).map_err(|error| {
            PkiError::Certificate {
                reason: format!("{}: {error}", cert_path.display()),
            }
        })?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch { path: key_path });
        }
        let issuer = Issuer::from_ca_cert_der(certificate.der(), key).map_err(issue_error)?;
        Ok(Self {
            certificate,
            issuer,
        })
    }

    /// Loads the CA from `dir`, or creates it there when neither file exists yet. A lone
    /// `ca.pem` or `ca-key.pem` is an error, never overwritten.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let cert_exists = dir.join(CA_CERT_FILE).exists();
        let key_exists = dir.join(CA_KEY_FILE).exists();
        if !cert_exists && !key_exists {
            return Self::create(dir);
        }
        Self::load(dir)
    }

    /// Where [`ClusterCa::create`] puts the CA certificate in `dir`.
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join(CA_CERT_FILE)
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &CaCertificate {
        &self.certificate
    }

    /// SHA-256 of the CA certificate's DER.
    pub fn fingerprint(&self) -> Fingerprint {
        self.certificate.fingerprint()
    }

    /// Issues a leaf certificate at `now`: valid from [`CLOCK_SKEW_ALLOWANCE`] before `now`
    /// to `now + request.lifetime`, naming `request.identity` in a SAN URI, with the DNS and
    /// IP SANs asked for and the key usages of `request.usage`.
    pub fn issue(
        &self,
        request: &LeafRequest,
        now: SystemTime,
    ) -> Result<IssuedCertificate, PkiError> {
        request.identity.validate()?;
        check_lifetime(request.lifetime)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Agora");
        name.push(
            DnType::CommonName,
            request
                .identity
                .to_string()
                .chars()
                .take(64)
                .collect::<String>(),
        );
        params.distinguished_name = name;
        let uri = request.identity.uri().try_into().map_err(issue_error)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        for dns_name in &request.dns_names {
            let ia5 = dns_name
                .clone()
                .try_into()
                .map_err(|_| PkiError::InvalidName {
                    kind: "DNS",
                    name: crate::error::truncated(dns_name),
                    reason: "a DNS name is ASCII only",
                })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for address in &request.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*address));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match request.usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::ClientAndServer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.not_before = to_offset_date_time(backdated(now))?;
        params.not_after = to_offset_date_time(later(now, request.lifetime)?)?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;

        let (certificate, key_pem) = match &request.subject_key {
            SubjectKey::Generate => {
                let key = KeyPair::generate().map_err(issue_error)?;
                let certificate = params.signed_by(&key, &self.issuer).map_err(issue_error)?;
                (certificate, Some(key.serialize_pem()))
            }
            SubjectKey::PublicKey(spki_der) => {
                let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(
                    |error| PkiError::Certificate {
                        reason: format!(
                            "the subject public key is not a usable SubjectPublicKeyInfo: {error}"
                        ),
                    },
                )?;
                let certificate = params
                    .signed_by(&public_key, &self.issuer)
                    .map_err(issue_error)?;
                (certificate, None)
            }
        };
        Ok(IssuedCertificate {
            cert_pem: certificate.pem(),
            cert_der: certificate.der().clone(),
            key_pem,
        })
    }
}

fn check_lifetime(lifetime: Duration) -> Result<(), PkiError> {
    let invalid = |reason| PkiError::InvalidLifetime {
        seconds: lifetime.as_secs(),
        reason,
    };
    if lifetime < MIN_LEAF_LIFETIME {
        return Err(invalid("shorter than the minimum of 60 s"));
    }
    if lifetime > MAX_LEAF_LIFETIME {
        return Err(invalid("longer than the maximum of one year"));
    }
    Ok(())
}

fn backdated(now: SystemTime) -> SystemTime {
    now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(UNIX_EPOCH)
}

fn later(now: SystemTime, lifetime: Duration) -> Result<SystemTime, PkiError> {
    now.checked_add(lifetime).ok_or(PkiError::InvalidLifetime {
        seconds: lifetime.as_secs(),
        reason: "it ends beyond what the clock can represent",
    })
}

fn to_offset_date_time(time: SystemTime) -> Result<OffsetDateTime, PkiError> {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| PkiError::Issue {
            reason: "the time is before 1970".to_owned(),
        })?
        .as_secs();
    let seconds = i64::try_from(seconds).map_err(|_| PkiError::Issue {
        reason: "the time is out of range".to_owned(),
    })?;
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|error| PkiError::Issue {
        reason: format!("the time is out of range: {error}"),
    })
}

/// A random positive 127-bit serial number (RFC 5280 asks for unique, positive, at most 20
/// bytes; randomness makes a repeat after a CA reload practically impossible).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0_u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

/// Fills `bytes` from the operating system's CSPRNG.
pub(crate) fn fill_random(bytes: &mut [u8]) -> Result<(), PkiError> {
    OsRng
        .try_fill_bytes(bytes)
        .map_err(|error| PkiError::Random {
            reason: error.to_string(),
        })
}

fn issue_error(error: rcgen::Error) -> PkiError {
    PkiError::Issue {
        reason: error.to_string(),
    }
}

/// PEM-encodes DER bytes under `label`.
fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}
