//! Marathon path ids such as `/prod/web`: absolute, normalised, validated segment by segment.

use std::fmt;

/// Why a string is not a valid Marathon path id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathIdError {
    /// The id was the empty string.
    #[error("path id must not be empty")]
    Empty,
    /// Two slashes in a row (`/a//b`).
    #[error("path id {id:?} has an empty segment")]
    EmptySegment {
        /// The offending id.
        id: String,
    },
    /// A segment breaks Marathon's naming rule.
    #[error(
        "path id segment {segment:?} is invalid: use lowercase letters, digits, '-' and '.', \
         each dot-separated part starting and ending with a letter or digit"
    )]
    InvalidSegment {
        /// The offending segment.
        segment: String,
    },
    /// `..` climbed above the root group.
    #[error("path id {id:?} climbs above the root group")]
    AboveRoot {
        /// The offending id.
        id: String,
    },
}

/// An absolute, normalised Marathon path id (`/`, `/web`, `/prod/web`); never ends with `/`
/// except for the root group itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(String);

impl PathId {
    /// The root group `/`.
    pub fn root() -> Self {
        PathId("/".to_owned())
    }

    /// Parses an id; a relative id (`web`, `prod/web`) is taken relative to the root group.
    pub fn parse(text: &str) -> Result<Self, PathIdError> {
        PathId::root().resolve(text)
    }

    /// Resolves `text` against `self` taken as a group: absolute ids are kept, relative ids
    /// (`db`, `../db`, `./db`) are joined to `self`.
    pub fn resolve(&self, text: &str) -> Result<Self, PathIdError> {
        if text.is_empty() {
            return Err(PathIdError::Empty);
        }
        let mut segments: Vec<&str> = if text.starts_with('/') {
            Vec::new()
        } else {
            self.segments().collect()
        };
        let relative_part = text.strip_prefix('/').unwrap_or(text);
        let trimmed = relative_part.strip_suffix('/').unwrap_or(relative_part);
        if trimmed.is_empty() {
            return Ok(PathId::from_segments(&segments));
        }
        for segment in trimmed.split('/') {
            match segment {
                "" => {
                    return Err(PathIdError::EmptySegment {
                        id: text.to_owned(),
                    });
                }
                "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(PathIdError::AboveRoot {
                            id: text.to_owned(),
                        });
                    }
                }
                name if is_valid_segment(name) => segments.push(name),
                name => {
                    return Err(PathIdError::InvalidSegment {
                        segment: name.to_owned(),
                    });
                }
            }
        }
        Ok(PathId::from_segments(&segments))
    }

    fn from_segments(segments: &[&str]) -> Self {
        PathId(format!("/{}", segments.join("/")))
    }

    /// The id as text, e.g. `/prod/web`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the root group `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The segments, outermost first (`/prod/web` gives `prod`, `web`); none for the root.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }

    /// The enclosing group (`/prod/web` gives `/prod`, `/web` gives `/`, `/` gives `/`).
    pub fn parent(&self) -> PathId {
        let segments: Vec<&str> = self.segments().collect();
        let parent_len = segments.len().saturating_sub(1);
        PathId::from_segments(&segments[..parent_len])
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Marathon's rule: dot-separated labels of `[a-z0-9-]`, each starting and ending with `[a-z0-9]`.
fn is_valid_segment(segment: &str) -> bool {
    segment.split('.').all(|label| {
        let bytes = label.as_bytes();
        let alnum = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_ids_become_absolute() {
        assert_eq!(PathId::parse("web").unwrap().as_str(), "/web");
        assert_eq!(PathId::parse("prod/web/").unwrap().as_str(), "/prod/web");
        assert_eq!(PathId::parse("/prod/./web").unwrap().as_str(), "/prod/web");
    }

    #[test]
    fn resolve_against_group() {
        let group = PathId::parse("/prod").unwrap();
        assert_eq!(group.resolve("db").unwrap().as_str(), "/prod/db");
        assert_eq!(group.resolve("../db").unwrap().as_str(), "/db");
        assert_eq!(group.resolve("/other/db").unwrap().as_str(), "/other/db");
        assert!(matches!(
            group.resolve("../../db"),
            Err(PathIdError::AboveRoot { .. })
        ));
    }

    #[test]
    fn segment_rules() {
        assert!(PathId::parse("/a-b.c1/x9").is_ok());
        for bad in ["/Web", "/web_1", "/-web", "/web-", "/a..b", "/a b", "/.web"] {
            assert!(PathId::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            PathId::parse("/a//b"),
            Err(PathIdError::EmptySegment { .. })
        ));
        assert_eq!(PathId::parse(""), Err(PathIdError::Empty));
    }

    #[test]
    fn parent_and_root() {
        let id = PathId::parse("/prod/web").unwrap();
        assert_eq!(id.parent().as_str(), "/prod");
        assert_eq!(id.parent().parent(), PathId::root());
        assert!(PathId::root().parent().is_root());
        assert_eq!(PathId::parse("/").unwrap(), PathId::root());
    }
}
