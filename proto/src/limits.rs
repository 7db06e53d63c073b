//! The documented limits of the protocol: how long ids and names may be, which characters
//! they may hold, how large a duration or a task's resources may be. Defined once here so
//! the master, svcframework and batchframework enforce exactly the same numbers (agora.proto
//! and the README document them).

use std::fmt;

/// Longest task, framework, agent or offer id, in bytes. Task ids become container names,
/// checkpoint directory names and URL path segments: 255 is the longest file name Linux
/// allows, and far below the 8 KiB request-line limit of common HTTP servers.
pub const MAX_ID_LEN: usize = 255;

/// Longest id a framework derives task ids from (a svcframework app id, a batchframework
/// job id). The derived task id adds at most [`MAX_DERIVED_SUFFIX_LEN`] bytes, so every
/// task id a framework builds stays within [`MAX_ID_LEN`].
pub const MAX_DERIVING_ID_LEN: usize = MAX_ID_LEN - MAX_DERIVED_SUFFIX_LEN;

/// Room kept for what frameworks append to an app or job id to make a task id:
/// svcframework's `.<32 hex uuid>` (33 bytes), batchframework's `.r<run>.a<attempt>`
/// (at most 2 + 20 + 2 + 10 = 34 bytes). 55 leaves slack for custom frameworks' schemes.
pub const MAX_DERIVED_SUFFIX_LEN: usize = 55;

/// Longest framework name, user, principal, hostname, task name or role, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 255;

/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 4096;

/// Most labels on one agent, task or framework.
pub const MAX_LABELS: usize = 256;

/// Longest duration any `*_seconds` field may carry: one year. Enough for every kill grace
/// period, health check timing, decline filter and failover timeout anyone configures, and
/// small enough that `now + duration` never overflows a clock.
pub const MAX_DURATION_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Smallest `cpus` a task may ask for: Mesos's MIN_CPUS. Zero cpus would start a container
/// without any CPU limit.
pub const MIN_TASK_CPUS: f64 = 0.01;

/// Smallest `mem` (MiB) a task may ask for: Docker refuses memory limits under 6 MiB, and
/// zero would start a container without any memory limit.
pub const MIN_TASK_MEM_MIB: f64 = 6.0;

/// Why an id or a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than allowed.
    #[error("must be at most {max} bytes, got {len}")]
    TooLong {
        /// Length of the id in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a character outside printable ASCII, a space or a '/'.
    #[error("must be printable ASCII without spaces or '/', found {found:?} at byte {index}")]
    BadCharacter {
        /// The offending character.
        found: char,
        /// Its byte offset.
        index: usize,
    },
    /// The id is `.` or `..`, which would name a directory other than its own.
    #[error("must not be \".\" or \"..\"")]
    DotPath,
}

/// Checks an id as Mesos does (`common/validation.cpp`): not empty, at most
/// [`MAX_ID_LEN`] bytes, printable ASCII (`!`..=`~`) without `/`, and not `.` or `..`, so
/// that it is safe as a file name, a container name part and a URL path segment.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            len: id.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some((index, found)) = id
        .char_indices()
        .find(|&(_, character)| !character.is_ascii_graphic() || character == '/')
    {
        return Err(IdError::BadCharacter { found, index });
    }
    if id == "." || id == ".." {
        return Err(IdError::DotPath);
    }
    Ok(())
}

/// Checks a free-form name (framework name, user, principal, hostname, task name): at most
/// `max` bytes and no control characters, which would garble logs and JSON.
pub fn check_name(name: &str, max: usize) -> Result<(), IdError> {
    if name.len() > max {
        return Err(IdError::TooLong {
            len: name.len(),
            max,
        });
    }
    if let Some((index, found)) = name
        .char_indices()
        .find(|&(_, character)| character.is_control())
    {
        return Err(IdError::BadCharacter { found, index });
    }
    Ok(())
}

/// A number as an error message shows it: plainly when short, in scientific notation when
/// `{}` would print hundreds of digits (1e308 prints as `1e308`, not 309 characters).
pub fn display_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e15).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// NaN or infinite.
    #[error("must be a finite number of seconds, got {0}")]
    NotFinite(f64),
    /// Below zero.
    #[error("must not be negative, got {}", display_number(*.0))]
    Negative(f64),
    /// Above [`MAX_DURATION_SECONDS`].
    #[error("must be at most {max} seconds (one year), got {}", display_number(*.value))]
    TooLong {
        /// The value given.
        value: f64,
        /// The limit.
        max: f64,
    },
}

/// Checks a `*_seconds` field: finite, `0 <= seconds <= MAX_DURATION_SECONDS`.
pub fn check_duration_seconds(seconds: f64) -> Result<(), DurationError> {
    if !seconds.is_finite() {
        return Err(DurationError::NotFinite(seconds));
    }
    if seconds < 0.0 {
        return Err(DurationError::Negative(seconds));
    }
    if seconds > MAX_DURATION_SECONDS {
        return Err(DurationError::TooLong {
            value: seconds,
            max: MAX_DURATION_SECONDS,
        });
    }
    Ok(())
}

/// A limit violation under the field it concerns, for callers that report many fields.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldProblem {
    /// Field path, e.g. `labels["a"]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Checks a label map: at most [`MAX_LABELS`] entries, keys non-empty and at most
/// [`MAX_LABEL_KEY_LEN`] bytes, values at most [`MAX_LABEL_VALUE_LEN`] bytes, no control
/// characters. `field` prefixes the reported field (e.g. `agent.labels`).
pub fn check_labels<'a>(
    field: &str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), FieldProblem> {
    let mut count = 0usize;
    for (key, value) in labels {
        count += 1;
        if count > MAX_LABELS {
            return Err(FieldProblem {
                field: field.to_owned(),
                reason: format!("must hold at most {MAX_LABELS} labels"),
            });
        }
        if key.is_empty() {
            return Err(FieldProblem {
                field: field.to_owned(),
                reason: "label keys must not be empty".to_owned(),
            });
        }
        let key_field = || format!("{field}[{:?}]", truncate_for_message(key));
        check_name(key, MAX_LABEL_KEY_LEN).map_err(|error| FieldProblem {
            field: key_field(),
            reason: format!("key {error}"),
        })?;
        check_name(value, MAX_LABEL_VALUE_LEN).map_err(|error| FieldProblem {
            field: key_field(),
            reason: format!("value {error}"),
        })?;
    }
    Ok(())
}

/// The first 64 characters of `text`, so that an error about a 70,000-byte id does not
/// echo all of it.
pub fn truncate_for_message(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_documented_rules() {
        assert_eq!(check_id("web.0123-abc_x:1"), Ok(()));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id(".."), Err(IdError::DotPath));
        assert_eq!(
            check_id("a/b"),
            Err(IdError::BadCharacter {
                found: '/',
                index: 1
            })
        );
        assert!(matches!(
            check_id("a b"),
            Err(IdError::BadCharacter { found: ' ', .. })
        ));
        assert!(matches!(
            check_id("tâche"),
            Err(IdError::BadCharacter { .. })
        ));
        assert_eq!(check_id(&"x".repeat(MAX_ID_LEN)), Ok(()));
        assert_eq!(
            check_id(&"x".repeat(70_000)),
            Err(IdError::TooLong {
                len: 70_000,
                max: MAX_ID_LEN
            })
        );
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(check_duration_seconds(0.0), Ok(()));
        assert_eq!(check_duration_seconds(MAX_DURATION_SECONDS), Ok(()));
        assert!(matches!(
            check_duration_seconds(1e308),
            Err(DurationError::TooLong { .. })
        ));
        assert_eq!(
            check_duration_seconds(1e308).unwrap_err().to_string(),
            "must be at most 31536000 seconds (one year), got 1e308"
        );
        assert!(matches!(
            check_duration_seconds(-1.0),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            check_duration_seconds(f64::NAN),
            Err(DurationError::NotFinite(_))
        ));
    }

    #[test]
    fn derived_task_ids_fit() {
        let longest_svc = format!("{}.{}", "a".repeat(MAX_DERIVING_ID_LEN), "f".repeat(32));
        assert!(check_id(&longest_svc).is_ok());
        let longest_batch = format!(
            "{}.r{}.a{}",
            "a".repeat(MAX_DERIVING_ID_LEN),
            u64::MAX,
            u32::MAX
        );
        assert!(check_id(&longest_batch).is_ok());
    }

    #[test]
    fn labels_are_bounded_and_errors_are_short() {
        let long_key = "k".repeat(MAX_LABEL_KEY_LEN + 1);
        let value = String::new();
        let problem = check_labels("labels", [(&long_key, &value)]).unwrap_err();
        assert!(problem.reason.contains("at most 255"), "{problem}");
        assert!(problem.field.len() < 100, "{problem}");
    }
}
