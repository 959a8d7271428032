//! Host-name patterns: exact names and single-label wildcards.
//!
//! Semantics (the same as Cilium's `matchName` / `matchPattern` with one `*`):
//! - names compare case-insensitively and a trailing dot is ignored;
//! - `*.example.com` matches exactly one extra label (`a.example.com`), never `example.com`
//!   itself and never `a.b.example.com`;
//! - `*` alone matches any single-label-or-more name (a catch-all, written on purpose).

use std::fmt;

/// A compiled host-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FqdnPattern {
    /// An exact name, stored lower-case without a trailing dot.
    Exact(String),
    /// `*.suffix`: one label followed by `.suffix` (stored lower-case, without the `*.`).
    OneLabel(String),
    /// `*`: every name.
    Any,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty name")]
    Empty,
    #[error("`*` is only allowed as the whole first label (`*.example.com`) or alone")]
    MisplacedWildcard,
    #[error("invalid character {0:?} in name")]
    InvalidChar(char),
    #[error("empty label in name")]
    EmptyLabel,
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    #[error("name longer than 253 bytes")]
    NameTooLong,
}

impl FqdnPattern {
    /// Parses `name`, `*.suffix` or `*`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.trim_end_matches('.');
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = text.strip_prefix("*.") {
            return Ok(Self::OneLabel(normalize_name(suffix)?));
        }
        Ok(Self::Exact(normalize_name(text)?))
    }

    /// Whether `name` (as sent by a client: any case, maybe a trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            Self::Any => !name.is_empty(),
            Self::Exact(exact) => name.eq_ignore_ascii_case(exact),
            Self::OneLabel(suffix) => {
                // name = label "." suffix, with a non-empty label free of dots.
                let Some(split) = name.len().checked_sub(suffix.len() + 1) else {
                    return false;
                };
                if !name.is_char_boundary(split) {
                    return false;
                }
                let (label, rest) = name.split_at(split);
                !label.is_empty()
                    && !label.contains('.')
                    && rest.as_bytes().first() == Some(&b'.')
                    && rest[1..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl fmt::Display for FqdnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::OneLabel(suffix) => write!(f, "*.{suffix}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// Lower-cases and checks a DNS name (letters, digits, `-`, `_`, dots; no empty labels).
pub fn normalize_name(name: &str) -> Result<String, PatternError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(PatternError::Empty);
    }
    if name.len() > 253 {
        return Err(PatternError::NameTooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(PatternError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(PatternError::LabelTooLong);
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '*'))
        {
            return Err(PatternError::InvalidChar(bad));
        }
        if label.contains('*') {
            return Err(PatternError::MisplacedWildcard);
        }
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_never_matches_bare_parent() {
        let p = FqdnPattern::parse("*.example.com").unwrap();
        assert!(!p.matches("example.com"));
        assert!(!p.matches(".example.com"));
        assert!(p.matches("a.example.com"));
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let p = FqdnPattern::parse("*.svc.example.com").unwrap();
        assert!(p.matches("api.svc.example.com"));
        assert!(!p.matches("a.b.svc.example.com"));
        assert!(!p.matches("xsvc.example.com"));
        assert!(!p.matches("api.svc.example.com.evil.net"));
    }

    #[test]
    fn names_ignore_case_and_trailing_dot() {
        let p = FqdnPattern::parse("Private.Service.Example.COM.").unwrap();
        assert_eq!(p, FqdnPattern::Exact("private.service.example.com".into()));
        assert!(p.matches("PRIVATE.service.example.com."));
        assert!(!p.matches("xprivate.service.example.com"));
        let w = FqdnPattern::parse("*.Example.com").unwrap();
        assert!(w.matches("A.EXAMPLE.COM."));
    }

    #[test]
    fn rejects_misplaced_wildcards_and_bad_names() {
        assert_eq!(
            FqdnPattern::parse("a.*.com"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(
            FqdnPattern::parse("*a.com"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(
            FqdnPattern::parse("**.com"),
            Err(PatternError::MisplacedWildcard)
        );
        assert_eq!(FqdnPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(FqdnPattern::parse("a..com"), Err(PatternError::EmptyLabel));
        assert_eq!(
            FqdnPattern::parse("a b.com"),
            Err(PatternError::InvalidChar(' '))
        );
        assert_eq!(
            FqdnPattern::parse(&"a".repeat(64)),
            Err(PatternError::LabelTooLong)
        );
    }

    #[test]
    fn matches_never_panics_on_multibyte_names() {
        let p = FqdnPattern::parse("*.example.com").unwrap();
        assert!(!p.matches("é.example.co"));
        assert!(!p.matches("ééééééééééééé"));
    }
}
