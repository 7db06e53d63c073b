//! Value patterns of constraints: exact text, globs (`us-*`, `node-?`) and full-match regexes.

use std::fmt;

use regex::Regex;

use super::constraint::ConstraintError;

/// Upper bound on a compiled pattern, so a hostile constraint cannot make the planner slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a [`ValuePattern`] was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// Compared byte for byte.
    Exact,
    /// `*` matches any run of characters, `?` exactly one.
    Glob,
    /// A regular expression that must match the whole value (`/us-(east|west)/`, or a LIKE value).
    Regex,
}

/// A value a constraint compares attributes against.
#[derive(Debug, Clone)]
pub struct ValuePattern {
    source: String,
    kind: PatternKind,
    /// Anchored regex for globs and regexes; `None` for exact values.
    compiled: Option<Regex>,
}

impl PartialEq for ValuePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.kind == other.kind
    }
}

impl ValuePattern {
    /// A value compared byte for byte.
    pub fn exact(value: impl Into<String>) -> Self {
        Self {
            source: value.into(),
            kind: PatternKind::Exact,
            compiled: None,
        }
    }

    /// A regex that must match the whole attribute value; fails when it does not compile.
    pub fn regex(source: impl Into<String>) -> Result<Self, ConstraintError> {
        let source = source.into();
        let compiled = compile_anchored(&source)?;
        Ok(Self {
            source,
            kind: PatternKind::Regex,
            compiled: Some(compiled),
        })
    }

    /// A glob (`*` any run, `?` one character); everything else is literal.
    pub fn glob(source: impl Into<String>) -> Result<Self, ConstraintError> {
        let source = source.into();
        let mut translated = String::with_capacity(source.len() * 2);
        for character in source.chars() {
            match character {
                '*' => translated.push_str(".*"),
                '?' => translated.push('.'),
                other => translated.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
            }
        }
        let compiled = compile_anchored(&translated)?;
        Ok(Self {
            source,
            kind: PatternKind::Glob,
            compiled: Some(compiled),
        })
    }

    /// Reads a Swarm-style value: `/re/` is a regex, text with `*` or `?` a glob, else exact.
    pub fn parse_expression_value(text: &str) -> Result<Self, ConstraintError> {
        if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
            return Self::regex(&text[1..text.len() - 1]);
        }
        if text.contains(['*', '?']) {
            return Self::glob(text);
        }
        Ok(Self::exact(text))
    }

    /// The text the pattern was written as (without `/` delimiters for regexes).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How the pattern was written.
    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// True when `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        match &self.compiled {
            Some(regex) => regex.is_match(value),
            None => self.source == value,
        }
    }
}

impl fmt::Display for ValuePattern {
    /// Swarm notation: regexes between slashes, globs and exact values as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PatternKind::Regex => write!(f, "/{}/", self.source),
            PatternKind::Exact | PatternKind::Glob => f.write_str(&self.source),
        }
    }
}

fn compile_anchored(source: &str) -> Result<Regex, ConstraintError> {
    regex::RegexBuilder::new(&format!("^(?:{source})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| ConstraintError::InvalidRegex {
            pattern: source.to_owned(),
            reason: error.to_string(),
        })
}
