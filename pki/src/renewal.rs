//! `CertRenewal`: when a holder should ask for a new certificate.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::error::PkiError;

/// A certificate's validity window, read from the certificate, and when to renew it: past
/// two thirds of its lifetime, as swarm does, so a holder that misses one attempt still has
/// time for more before the certificate ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertRenewal {
    not_before_unix_seconds: i64,
    not_after_unix_seconds: i64,
}

impl CertRenewal {
    /// Reads the validity of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) =
            X509Certificate::from_der(cert_der).map_err(|error| PkiError::Certificate {
                reason: format!("not a DER X.509 certificate: {error}"),
            })?;
        let validity = cert.validity();
        Ok(Self {
            not_before_unix_seconds: validity.not_before.timestamp(),
            not_after_unix_seconds: validity.not_after.timestamp(),
        })
    }

    /// When the certificate becomes valid, in seconds since the Unix epoch.
    pub fn not_before_unix_seconds(&self) -> i64 {
        self.not_before_unix_seconds
    }

    /// When the certificate ends, in seconds since the Unix epoch.
    pub fn not_after_unix_seconds(&self) -> i64 {
        self.not_after_unix_seconds
    }

    /// When renewal is due: two thirds into the validity window.
    pub fn renew_at_unix_seconds(&self) -> i64 {
        let lifetime = self
            .not_after_unix_seconds
            .saturating_sub(self.not_before_unix_seconds)
            .max(0);
        self.not_before_unix_seconds
            .saturating_add(lifetime / 3 * 2 + lifetime % 3 * 2 / 3)
    }

    /// Whether the certificate has ended at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_seconds(now) >= self.not_after_unix_seconds
    }

    /// Whether the holder should renew at `now`: past two thirds of the lifetime, or ended.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        unix_seconds(now) >= self.renew_at_unix_seconds() || self.is_expired(now)
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs())
            .map(|seconds| -seconds)
            .unwrap_or(i64::MIN),
    }
}
