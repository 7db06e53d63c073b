//! `TokenFile`: the hashes of the current join and operator tokens, kept as JSON in the
//! master's work dir (mode 0600). A token's text is never stored.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::PkiError;
use crate::files;
use crate::fingerprint::Fingerprint;
use crate::token::{JoinRole, JoinToken, OperatorToken, SecretHash};

/// File name of the token file in the master's work dir.
pub const TOKEN_FILE: &str = "tokens.json";
/// The token file's format version.
const FORMAT_VERSION: u32 = 1;

/// The current token of one role: the hash of its secret and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// SHA-256 of the secret, 64 hex digits.
    pub secret_sha256: SecretHash,
    /// When it was issued, in seconds since the Unix epoch.
    pub issued_unix_seconds: u64,
}

/// The master's token file: the current token of each role, by hash. Rotating a role
/// replaces its hash, so the previous token stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    /// Format version (1).
    #[serde(default = "format_version")]
    pub version: u32,
    /// The current agent join token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<StoredToken>,
    /// The current framework join token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<StoredToken>,
    /// The current operator token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<StoredToken>,
}

fn format_version() -> u32 {
    FORMAT_VERSION
}

impl Default for TokenFile {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            agent: None,
            framework: None,
            operator: None,
        }
    }
}

impl TokenFile {
    /// An empty token file of the current format.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the token file lives in `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(TOKEN_FILE)
    }

    /// Reads a token file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        if !path.exists() {
            return Ok(Self::new());
        }
        let bytes = files::read_private(path)?;
        let file: Self = serde_json::from_slice(&bytes).map_err(|error| PkiError::TokenFile {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        if file.version != FORMAT_VERSION {
            return Err(PkiError::TokenFile {
                path: path.to_owned(),
                reason: format!(
                    "format version {} is not supported (expected {FORMAT_VERSION})",
                    file.version
                ),
            });
        }
        Ok(file)
    }

    /// Writes the token file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|error| PkiError::TokenFile {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        bytes.push(b'\n');
        files::write_atomically(path, &bytes, files::PRIVATE_MODE)
    }

    /// Makes a new join token for `role`, pinning `ca_fingerprint`, and keeps its hash in
    /// place of the previous one (which stops verifying). Returns the token to show once;
    /// the caller saves the file.
    pub fn rotate_join(
        &mut self,
        role: JoinRole,
        ca_fingerprint: Fingerprint,
        now: SystemTime,
    ) -> Result<JoinToken, PkiError> {
        let token = JoinToken::generate(role, ca_fingerprint)?;
        let stored = Some(StoredToken {
            secret_sha256: token.secret_hash(),
            issued_unix_seconds: unix_seconds(now),
        });
        match role {
            JoinRole::Agent => self.agent = stored,
            JoinRole::Framework => self.framework = stored,
        }
        Ok(token)
    }

    /// Makes a new operator token and keeps its hash in place of the previous one.
    pub fn rotate_operator(&mut self, now: SystemTime) -> Result<OperatorToken, PkiError> {
        let token = OperatorToken::generate()?;
        self.operator = Some(StoredToken {
            secret_sha256: token.secret_hash(),
            issued_unix_seconds: unix_seconds(now),
        });
        Ok(token)
    }

    /// Checks a join token a joiner presented: the role it needs, this cluster's CA, and the
    /// current secret of that role (compared in constant time).
    pub fn verify_join(
        &self,
        token: &JoinToken,
        expected_role: JoinRole,
        ca_fingerprint: Fingerprint,
    ) -> Result<(), PkiError> {
        if token.role() != expected_role {
            return Err(PkiError::TokenRoleMismatch {
                expected: expected_role.as_str(),
                found: token.role().as_str(),
            });
        }
        if token.ca_fingerprint() != ca_fingerprint {
            return Err(PkiError::TokenForAnotherCluster {
                expected: ca_fingerprint.to_string(),
                found: token.ca_fingerprint().to_string(),
            });
        }
        let stored = match expected_role {
            JoinRole::Agent => &self.agent,
            JoinRole::Framework => &self.framework,
        };
        let stored = stored.as_ref().ok_or(PkiError::NoTokenIssued {
            role: expected_role.as_str(),
        })?;
        if !stored.secret_sha256.matches(&token.secret_hash()) {
            return Err(PkiError::TokenNotCurrent {
                role: expected_role.as_str(),
            });
        }
        Ok(())
    }

    /// Checks an operator token presented as a bearer credential.
    pub fn verify_operator(&self, presented: &str) -> Result<(), PkiError> {
        let token = OperatorToken::parse(presented)?;
        let stored = self
            .operator
            .as_ref()
            .ok_or(PkiError::NoTokenIssued { role: "operator" })?;
        if !stored.secret_sha256.matches(&token.secret_hash()) {
            return Err(PkiError::TokenNotCurrent { role: "operator" });
        }
        Ok(())
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn cluster() -> Fingerprint {
        Fingerprint::of(b"this cluster's CA")
    }

    #[test]
    fn the_current_token_verifies_and_a_rotated_one_does_not() {
        let mut file = TokenFile::new();
        let now = SystemTime::now();
        let first = file.rotate_join(JoinRole::Agent, cluster(), now).unwrap();
        file.verify_join(&first, JoinRole::Agent, cluster())
            .unwrap();

        let second = file.rotate_join(JoinRole::Agent, cluster(), now).unwrap();
        file.verify_join(&second, JoinRole::Agent, cluster())
            .unwrap();
        let error = file
            .verify_join(&first, JoinRole::Agent, cluster())
            .unwrap_err();
        assert!(
            matches!(error, PkiError::TokenNotCurrent { role: "agent" }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "token: the agent token is not the current one (wrong, or rotated)"
        );
    }

    #[test]
    fn a_token_of_another_role_or_cluster_is_refused() {
        let mut file = TokenFile::new();
        let now = SystemTime::now();
        let agent = file.rotate_join(JoinRole::Agent, cluster(), now).unwrap();
        let error = file
            .verify_join(&agent, JoinRole::Framework, cluster())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "token: it is the agent join token, the framework join token is needed"
        );
        let elsewhere = Fingerprint::of(b"another cluster's CA");
        let error = file
            .verify_join(&agent, JoinRole::Agent, elsewhere)
            .unwrap_err();
        assert!(
            matches!(error, PkiError::TokenForAnotherCluster { .. }),
            "{error}"
        );

        let framework = JoinToken::generate(JoinRole::Framework, cluster()).unwrap();
        let error = file
            .verify_join(&framework, JoinRole::Framework, cluster())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "token: no framework token has been issued"
        );
    }

    #[test]
    fn operator_tokens_verify_until_rotated() {
        let mut file = TokenFile::new();
        assert!(matches!(
            file.verify_operator("AGORA-1-operator-0000000000000000000000000000000000000000"),
            Err(PkiError::NoTokenIssued { role: "operator" })
        ));
        let first = file.rotate_operator(SystemTime::now()).unwrap();
        file.verify_operator(&first.reveal()).unwrap();
        let second = file.rotate_operator(SystemTime::now()).unwrap();
        file.verify_operator(&second.reveal()).unwrap();
        assert!(matches!(
            file.verify_operator(&first.reveal()),
            Err(PkiError::TokenNotCurrent { role: "operator" })
        ));
        assert!(matches!(
            file.verify_operator("Bearer nonsense"),
            Err(PkiError::InvalidToken { .. })
        ));
    }

    #[test]
    fn the_file_round_trips_private_and_holds_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = TokenFile::path_in(dir.path());
        assert_eq!(TokenFile::load(&path).unwrap(), TokenFile::new());

        let mut file = TokenFile::new();
        let agent = file
            .rotate_join(JoinRole::Agent, cluster(), SystemTime::now())
            .unwrap();
        let operator = file.rotate_operator(SystemTime::now()).unwrap();
        file.save(&path).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let agent_secret = agent.reveal().rsplit('-').next().unwrap().to_owned();
        let operator_secret = operator.reveal().rsplit('-').next().unwrap().to_owned();
        assert!(!text.contains(&agent_secret), "{text}");
        assert!(!text.contains(&operator_secret), "{text}");
        assert!(text.contains(&agent.secret_hash().to_string()), "{text}");

        let loaded = TokenFile::load(&path).unwrap();
        assert_eq!(loaded, file);
        loaded
            .verify_join(&agent, JoinRole::Agent, cluster())
            .unwrap();
        loaded.verify_operator(&operator.reveal()).unwrap();
    }

    #[test]
    fn a_broken_or_newer_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = TokenFile::path_in(dir.path());
        let write = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write("{not json");
        let error = TokenFile::load(&path).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("token file {}", path.display())),
            "{error}"
        );
        write(r#"{"version": 2}"#);
        let error = TokenFile::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("format version 2 is not supported"),
            "{error}"
        );
        write(r#"{"version": 1, "agent": {"secret_sha256": "zz", "issued_unix_seconds": 1}}"#);
        assert!(TokenFile::load(&path).is_err());
    }
}
