//! Join tokens (`AGORA-1-<role>-<CA fingerprint>-<secret>`, as swarm's `SWMTKN-1-…`) and
//! operator tokens (`AGORA-1-operator-<secret>`), and the hashes the master keeps of them.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ca::fill_random;
use crate::error::{PkiError, TokenPart};
use crate::fingerprint::{Fingerprint, from_hex, to_hex};

/// The first part of every token.
const PREFIX: &str = "AGORA";
/// The token format version.
const VERSION: &str = "1";
/// Bytes of randomness in a token's secret: 160 bits, from the operating system's CSPRNG.
pub const SECRET_BYTES: usize = 20;

/// Which kind of joiner a join token admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinRole {
    /// An agent (`agent --join-token`).
    Agent,
    /// A framework (`--join-token` with `--principal`).
    Framework,
}

impl JoinRole {
    /// The role as written in a token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Framework => "framework",
        }
    }
}

impl fmt::Display for JoinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token's secret. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
struct Secret([u8; SECRET_BYTES]);

impl Secret {
    fn generate() -> Result<Self, PkiError> {
        let mut bytes = [0_u8; SECRET_BYTES];
        fill_random(&mut bytes)?;
        Ok(Self(bytes))
    }

    fn parse(text: &str) -> Result<Self, PkiError> {
        let invalid = |reason| PkiError::InvalidToken {
            part: TokenPart::Secret,
            reason,
        };
        if text.len() != SECRET_BYTES * 2 {
            return Err(invalid("it must be 40 hex digits"));
        }
        let bytes = from_hex(text).ok_or_else(|| invalid("it must be 40 hex digits"))?;
        let bytes: [u8; SECRET_BYTES] = bytes
            .try_into()
            .map_err(|_| invalid("it must be 40 hex digits"))?;
        Ok(Self(bytes))
    }

    fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0).into())
    }
}

/// The SHA-256 of a token's secret: all the master keeps of a token. Compared in constant
/// time.
#[derive(Clone, Copy, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Whether two hashes are equal, in time independent of where they differ.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl PartialEq for SecretHash {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({})", to_hex(&self.0))
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl FromStr for SecretHash {
    type Err = PkiError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = from_hex(text)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or(PkiError::InvalidToken {
                part: TokenPart::Secret,
                reason: "a stored secret hash must be 64 hex digits",
            })?;
        Ok(Self(bytes))
    }
}

impl serde::Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Splits a token into its `-`-separated parts and checks the prefix and version.
fn split_checked(token: &str) -> Result<Vec<&str>, PkiError> {
    let parts: Vec<&str> = token.trim().split('-').collect();
    if parts.len() < 4 || parts.len() > 5 {
        return Err(PkiError::InvalidToken {
            part: TokenPart::Shape,
            reason: "expected AGORA-1-<role>-<CA fingerprint>-<secret> or AGORA-1-operator-<secret>",
        });
    }
    if parts[0] != PREFIX {
        return Err(PkiError::InvalidToken {
            part: TokenPart::Prefix,
            reason: "a token starts with AGORA",
        });
    }
    if parts[1] != VERSION {
        return Err(PkiError::InvalidToken {
            part: TokenPart::Version,
            reason: "this version of Agora reads version 1 tokens only",
        });
    }
    Ok(parts)
}

/// A join token: admits an agent or a framework to the cluster and pins the cluster CA, so the
/// joiner authenticates the master on first contact. Its text is shown once, by
/// [`JoinToken::reveal`]; the master keeps only [`JoinToken::secret_hash`].
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    role: JoinRole,
    ca_fingerprint: Fingerprint,
    secret: Secret,
}

impl JoinToken {
    /// A new token for `role`, pinning `ca_fingerprint`, with a fresh random secret.
    pub fn generate(role: JoinRole, ca_fingerprint: Fingerprint) -> Result<Self, PkiError> {
        Ok(Self {
            role,
            ca_fingerprint,
            secret: Secret::generate()?,
        })
    }

    /// Parses `AGORA-1-<agent|framework>-<64 hex CA fingerprint>-<40 hex secret>`. The error
    /// names the part that is wrong and never quotes the token.
    pub fn parse(token: &str) -> Result<Self, PkiError> {
        let parts = split_checked(token)?;
        let role = match parts[2] {
            "agent" => JoinRole::Agent,
            "framework" => JoinRole::Framework,
            "operator" => {
                return Err(PkiError::InvalidToken {
                    part: TokenPart::Role,
                    reason: "this is an operator token, not a join token",
                });
            }
            _ => {
                return Err(PkiError::InvalidToken {
                    part: TokenPart::Role,
                    reason: "a join token's role is agent or framework",
                });
            }
        };
        let [_, _, _, fingerprint, secret] = parts.as_slice() else {
            return Err(PkiError::InvalidToken {
                part: TokenPart::Shape,
                reason: "expected AGORA-1-<role>-<CA fingerprint>-<secret>",
            });
        };
        let ca_fingerprint =
            fingerprint
                .parse::<Fingerprint>()
                .map_err(|_| PkiError::InvalidToken {
                    part: TokenPart::Fingerprint,
                    reason: "it must be 64 hex digits (the SHA-256 of the CA certificate)",
                })?;
        Ok(Self {
            role,
            ca_fingerprint,
            secret: Secret::parse(secret)?,
        })
    }

    /// The role it admits.
    pub fn role(&self) -> JoinRole {
        self.role
    }

    /// The CA it pins.
    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca_fingerprint
    }

    /// The hash of its secret, as the master stores it.
    pub fn secret_hash(&self) -> SecretHash {
        self.secret.hash()
    }

    /// The token's text, to show to the user once. Deliberately not `Display`, so a token is
    /// never formatted into a log line by accident.
    pub fn reveal(&self) -> String {
        format!(
            "{PREFIX}-{VERSION}-{}-{}-{}",
            self.role,
            self.ca_fingerprint,
            to_hex(&self.secret.0)
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("role", &self.role)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An operator token: a bearer secret for the operator API, `AGORA-1-operator-<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken {
    secret: Secret,
}

impl OperatorToken {
    /// A new token with a fresh random secret.
    pub fn generate() -> Result<Self, PkiError> {
        Ok(Self {
            secret: Secret::generate()?,
        })
    }

    /// Parses `AGORA-1-operator-<40 hex secret>`.
    pub fn parse(token: &str) -> Result<Self, PkiError> {
        let parts = split_checked(token)?;
        if parts[2] != "operator" {
            return Err(PkiError::InvalidToken {
                part: TokenPart::Role,
                reason: "an operator token's role is operator",
            });
        }
        let [_, _, _, secret] = parts.as_slice() else {
            return Err(PkiError::InvalidToken {
                part: TokenPart::Shape,
                reason: "expected AGORA-1-operator-<secret>",
            });
        };
        Ok(Self {
            secret: Secret::parse(secret)?,
        })
    }

    /// The hash of its secret, as the master stores it.
    pub fn secret_hash(&self) -> SecretHash {
        self.secret.hash()
    }

    /// The token's text, to show to the user once.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}-{VERSION}-operator-{}", to_hex(&self.secret.0))
    }
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fingerprint() -> Fingerprint {
        Fingerprint::of(b"a CA certificate")
    }

    #[test]
    fn join_token_round_trips_and_never_shows_its_secret_in_debug() {
        let token = JoinToken::generate(JoinRole::Agent, fingerprint()).unwrap();
        let text = token.reveal();
        assert!(
            text.starts_with(&format!("AGORA-1-agent-{}-", fingerprint())),
            "{text}"
        );
        assert_eq!(text.len(), "AGORA-1-agent-".len() + 64 + 1 + 40);
        let parsed = JoinToken::parse(&text).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.role(), JoinRole::Agent);
        assert_eq!(parsed.ca_fingerprint(), fingerprint());
        assert_eq!(parsed.secret_hash(), token.secret_hash());
        let secret = text.rsplit('-').next().unwrap();
        assert!(!format!("{token:?}").contains(secret));
    }

    #[test]
    fn two_tokens_have_different_secrets() {
        let first = JoinToken::generate(JoinRole::Framework, fingerprint()).unwrap();
        let second = JoinToken::generate(JoinRole::Framework, fingerprint()).unwrap();
        assert_ne!(first.secret_hash(), second.secret_hash());
        assert_ne!(first.reveal(), second.reveal());
    }

    #[test]
    fn parse_errors_name_the_wrong_part() {
        let good = JoinToken::generate(JoinRole::Framework, fingerprint())
            .unwrap()
            .reveal();
        let parts: Vec<&str> = good.split('-').collect();
        let with = |index: usize, value: &str| {
            let mut changed = parts.clone();
            changed[index] = value;
            changed.join("-")
        };
        let cases = [
            ("AGORA-1-agent".to_owned(), TokenPart::Shape),
            (format!("{good}-extra"), TokenPart::Shape),
            (with(0, "SWMTKN"), TokenPart::Prefix),
            (with(1, "2"), TokenPart::Version),
            (with(2, "master"), TokenPart::Role),
            (with(2, "operator"), TokenPart::Role),
            (with(3, "abc"), TokenPart::Fingerprint),
            (with(3, &"z".repeat(64)), TokenPart::Fingerprint),
            (with(4, "abc"), TokenPart::Secret),
            (with(4, &"g".repeat(40)), TokenPart::Secret),
        ];
        for (token, expected) in cases {
            match JoinToken::parse(&token) {
                Err(PkiError::InvalidToken { part, .. }) => assert_eq!(part, expected, "{token}"),
                other => panic!("{token}: {other:?}"),
            }
        }
        let message = JoinToken::parse(&with(4, "abc")).unwrap_err().to_string();
        assert_eq!(
            message,
            "token: the secret is wrong: it must be 40 hex digits"
        );
        let message = JoinToken::parse(&with(3, "abc")).unwrap_err().to_string();
        assert!(
            message.starts_with("token: the CA fingerprint is wrong"),
            "{message}"
        );
    }

    #[test]
    fn operator_token_round_trips_and_is_not_a_join_token() {
        let token = OperatorToken::generate().unwrap();
        let text = token.reveal();
        assert!(text.starts_with("AGORA-1-operator-"), "{text}");
        assert_eq!(OperatorToken::parse(&text).unwrap(), token);
        assert!(matches!(
            JoinToken::parse(&text),
            Err(PkiError::InvalidToken {
                part: TokenPart::Role,
                ..
            })
        ));
        let join = JoinToken::generate(JoinRole::Agent, fingerprint())
            .unwrap()
            .reveal();
        assert!(OperatorToken::parse(&join).is_err());
        assert!(!format!("{token:?}").contains(&text[17..]));
    }

    #[test]
    fn a_stored_hash_round_trips_through_its_text() {
        let hash = OperatorToken::generate().unwrap().secret_hash();
        assert_eq!(hash.to_string().parse::<SecretHash>().unwrap(), hash);
        assert!("00".parse::<SecretHash>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in any::<String>()) {
            let _ = JoinToken::parse(&text);
            let _ = OperatorToken::parse(&text);
        }

        #[test]
        fn parsing_token_like_text_never_panics(
            role in "(agent|framework|operator|[a-z]{0,9})",
            fingerprint in "[0-9a-fA-FxZ-]{0,70}",
            secret in "[0-9a-f\u{e9}-]{0,45}",
        ) {
            let text = format!("AGORA-1-{role}-{fingerprint}-{secret}");
            let _ = JoinToken::parse(&text);
            let _ = OperatorToken::parse(&text);
        }

        #[test]
        fn a_changed_character_never_parses_to_the_same_token(index in 0_usize..200, replacement in any::<char>()) {
            let token = JoinToken::generate(JoinRole::Agent, Fingerprint::of(b"ca")).unwrap();
            let text = token.reveal();
            let index = index % text.len();
            let original = text.as_bytes()[index] as char;
            prop_assume!(!original.eq_ignore_ascii_case(&replacement));
            let mut changed: String = text.chars().take(index).collect();
            changed.push(replacement);
            changed.extend(text.chars().skip(index + 1));
            if let Ok(parsed) = JoinToken::parse(&changed) {
                prop_assert_ne!(parsed, token);
            }
        }
    }
}
