//! Host-name patterns: exact names and wildcards, with Cilium's `matchName` / `matchPattern`
//! semantics.
//!
//! - Names compare case-insensitively and a trailing dot is ignored, on both sides.
//! - `*.example.com` matches exactly one extra label: `a.example.com`, never `example.com` nor
//!   `a.b.example.com`. `*` alone matches every name (a catch-all, written on purpose).
//!   [`FqdnPattern::parse`] (the runtime config's routes and intercept rules) accepts only these.
//! - [`FqdnPattern::parse_pattern`] (Cilium's `matchPattern`, the policy's `pattern`) also
//!   accepts `*` inside a label, matching zero or more label characters and never crossing a
//!   dot (Cilium: `[-a-zA-Z0-9_]*`): `api-*.example.com` matches `api-1.example.com`, never
//!   `api.example.com`; and `**.example.com` (only as the whole first label), matching one or
//!   more labels: `a.example.com`, `a.b.example.com`, never `example.com` itself.
//!
//! What a wildcard matches in a client's name is restricted to DNS label characters
//! (letters, digits, `-`, `_`), so a name with spaces or other bytes never matches a wildcard.

use std::fmt;

/// A compiled host-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FqdnPattern {
    /// An exact name, stored lower-case without a trailing dot.
    Exact(String),
    /// `*.suffix`: one label followed by `.suffix` (stored lower-case, without the `*.`).
    OneLabel(String),
    /// `**.suffix`: one or more labels followed by `.suffix` (stored without the `**.`).
    AnyDepth(String),
    /// Labels with `*` inside them (`api-*.example.com`, `*.*.example.com`): the name has as many
    /// labels as the pattern and each label matches its glob. Stored lower-case.
    Glob(String),
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
    #[error("`**` is only allowed as the whole first label (`**.example.com`)")]
    MisplacedDoubleStar,
    #[error("`*` is not allowed in an exact name (use a pattern)")]
    WildcardInName,
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
    /// Parses `name`, `*.suffix` or `*`: the runtime config's patterns (routes, intercept
    /// rules), where a wildcard is only ever a whole first label.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = text.strip_prefix("*.")
            && !suffix.contains('*')
        {
            return Ok(Self::OneLabel(normalize_name(suffix)?));
        }
        if text.contains('*') {
            return Err(PatternError::MisplacedWildcard);
        }
        Ok(Self::Exact(normalize_name(text)?))
    }

    /// Parses a Cilium `matchPattern`: everything [`parse`](Self::parse) accepts, plus `*`
    /// anywhere inside a label (`api-*.example.com`, `*.*.example.com`) and `**.suffix`.
    pub fn parse_pattern(text: &str) -> Result<Self, PatternError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = text.strip_prefix("**.") {
            return Ok(Self::AnyDepth(check_labels(suffix, false)?));
        }
        if let Some(suffix) = text.strip_prefix("*.")
            && !suffix.contains('*')
        {
            return Ok(Self::OneLabel(normalize_name(suffix)?));
        }
        if text.contains('*') {
            return Ok(Self::Glob(check_labels(text, true)?));
        }
        Ok(Self::Exact(normalize_name(text)?))
    }

    /// Parses an exact name only (Cilium's `matchName`): `*` is refused.
    pub fn parse_name(text: &str) -> Result<Self, PatternError> {
        Ok(Self::Exact(check_labels(text, false)?))
    }

    /// Whether `name` (as sent by a client: any case, maybe a trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            Self::Any => !name.is_empty(),
            Self::Exact(exact) => name.eq_ignore_ascii_case(exact),
            Self::OneLabel(suffix) => match split_suffix(name, suffix) {
                Some(label) => is_wild_text(label) && !label.contains('.'),
                None => false,
            },
            Self::AnyDepth(suffix) => match split_suffix(name, suffix) {
                Some(labels) => labels.split('.').all(is_wild_text),
                None => false,
            },
            Self::Glob(pattern) => {
                let mut names = name.split('.');
                let mut globs = pattern.split('.');
                loop {
                    match (globs.next(), names.next()) {
                        (None, None) => return true,
                        (Some(glob), Some(label)) if label_matches(glob, label) => {}
                        _ => return false,
                    }
                }
            }
        }
    }
}

impl fmt::Display for FqdnPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) | Self::Glob(name) => f.write_str(name),
            Self::OneLabel(suffix) => write!(f, "*.{suffix}"),
            Self::AnyDepth(suffix) => write!(f, "**.{suffix}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// `name` = `prefix "." suffix` (suffix compared case-insensitively): the non-empty prefix.
fn split_suffix<'n>(name: &'n str, suffix: &str) -> Option<&'n str> {
    let split = name.len().checked_sub(suffix.len() + 1)?;
    if !name.is_char_boundary(split) {
        return None;
    }
    let (prefix, rest) = name.split_at(split);
    let matches = !prefix.is_empty()
        && rest.as_bytes().first() == Some(&b'.')
        && rest[1..].eq_ignore_ascii_case(suffix);
    matches.then_some(prefix)
}

/// Non-empty and only DNS label characters: what a wildcard may stand for.
fn is_wild_text(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_label_byte)
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Glob match of one label: `*` stands for zero or more label characters; the rest compares
/// case-insensitively. The label must be non-empty. Iterative with one backtrack point, so it is
/// linear-ish and never recursive.
fn label_matches(glob: &str, label: &str) -> bool {
    if label.is_empty() {
        return false;
    }
    let (g, l) = (glob.as_bytes(), label.as_bytes());
    let (mut gi, mut li) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while li < l.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, li));
            gi += 1;
        } else if gi < g.len() && g[gi].eq_ignore_ascii_case(&l[li]) {
            gi += 1;
            li += 1;
        } else if let Some((star_gi, star_li)) = star {
            // The star absorbs one more byte, which must be a label character.
            if !is_label_byte(l[star_li]) {
                return false;
            }
            gi = star_gi + 1;
            li = star_li + 1;
            star = Some((star_gi, li));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&b| b == b'*')
}

/// Lower-cases and checks a DNS name (letters, digits, `-`, `_`, dots; no empty labels).
pub fn normalize_name(name: &str) -> Result<String, PatternError> {
    check_labels(name, false).map_err(|e| match e {
        PatternError::WildcardInName | PatternError::MisplacedDoubleStar => {
            PatternError::MisplacedWildcard
        }
        other => other,
    })
}

/// Checks labels (allowing `*` inside labels when `wildcards`) and lower-cases.
fn check_labels(name: &str, wildcards: bool) -> Result<String, PatternError> {
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
        if label.contains("**") {
            return Err(PatternError::MisplacedDoubleStar);
        }
        if label.contains('*') && !wildcards {
            return Err(PatternError::WildcardInName);
        }
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> FqdnPattern {
        FqdnPattern::parse_pattern(text).unwrap()
    }

    #[test]
    fn wildcard_never_matches_bare_parent() {
        let p = p("*.example.com");
        assert!(!p.matches("example.com"));
        assert!(!p.matches("example.com."));
        assert!(!p.matches(".example.com"));
        assert!(p.matches("a.example.com"));
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let p = p("*.svc.example.com");
        assert!(p.matches("api.svc.example.com"));
        assert!(!p.matches("a.b.svc.example.com"));
        assert!(!p.matches("xsvc.example.com"));
        assert!(!p.matches("api.svc.example.com.evil.net"));
    }

    #[test]
    fn double_star_matches_any_depth_but_not_the_parent() {
        let p = p("**.example.com");
        assert_eq!(p, FqdnPattern::AnyDepth("example.com".into()));
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.c.EXAMPLE.com."));
        assert!(!p.matches("example.com"));
        assert!(!p.matches(".example.com"));
        assert!(!p.matches("a..example.com"));
        assert!(!p.matches("xexample.com"));
        assert!(!p.matches("a.example.com.evil.net"));
    }

    #[test]
    fn star_inside_a_label_stays_inside_it() {
        let api = p("api-*.Example.com");
        assert_eq!(api, FqdnPattern::Glob("api-*.example.com".into()));
        assert!(api.matches("api-1.example.com"));
        assert!(api.matches("API-eu-west.example.com"));
        assert!(
            api.matches("api-.example.com"),
            "`*` may match nothing, as in Cilium"
        );
        assert!(!api.matches("api.example.com"));
        assert!(!api.matches("api-1.x.example.com"));
        assert!(!api.matches("x.api-1.example.com"));
        let two = p("*.*.example.com");
        assert!(two.matches("a.b.example.com"));
        assert!(!two.matches("a.example.com"));
        let mid = p("a*b*c.example.com");
        assert!(mid.matches("abc.example.com"));
        assert!(mid.matches("axxbyyc.example.com"));
        assert!(!mid.matches("axxbyy.example.com"));
    }

    #[test]
    fn wildcards_only_stand_for_label_characters() {
        assert!(!p("*.example.com").matches("a b.example.com"));
        assert!(!p("**.example.com").matches("a/b.example.com"));
        assert!(!p("x*.example.com").matches("x b.example.com"));
        assert!(p("x*.example.com").matches("x_b.example.com"));
    }

    #[test]
    fn names_ignore_case_and_trailing_dot() {
        let n = p("Private.Service.Example.COM.");
        assert_eq!(n, FqdnPattern::Exact("private.service.example.com".into()));
        assert!(n.matches("PRIVATE.service.example.com."));
        assert!(!n.matches("xprivate.service.example.com"));
        assert!(p("*.Example.com").matches("A.EXAMPLE.COM."));
    }

    #[test]
    fn catch_all_matches_every_non_empty_name() {
        assert!(p("*").matches("a"));
        assert!(p("*").matches("a.b.c."));
        assert!(!p("*").matches(""));
    }

    #[test]
    fn config_patterns_keep_wildcards_to_a_whole_first_label() {
        let err = |t: &str| FqdnPattern::parse(t).unwrap_err();
        assert_eq!(err("a.*.com"), PatternError::MisplacedWildcard);
        assert_eq!(err("*a.com"), PatternError::MisplacedWildcard);
        assert_eq!(err("**.com"), PatternError::MisplacedWildcard);
        assert_eq!(err("*.*.example"), PatternError::MisplacedWildcard);
        assert_eq!(
            FqdnPattern::parse("*.a.com"),
            Ok(FqdnPattern::OneLabel("a.com".into()))
        );
        assert_eq!(FqdnPattern::parse("*"), Ok(FqdnPattern::Any));
    }

    #[test]
    fn rejects_misplaced_wildcards_and_bad_names() {
        let err = |t: &str| FqdnPattern::parse_pattern(t).unwrap_err();
        assert_eq!(err("a.**.com"), PatternError::MisplacedDoubleStar);
        assert_eq!(err("**"), PatternError::MisplacedDoubleStar);
        assert_eq!(err("***.com"), PatternError::MisplacedDoubleStar);
        assert_eq!(err("**.*.com"), PatternError::WildcardInName);
        assert_eq!(err(""), PatternError::Empty);
        assert_eq!(err("."), PatternError::Empty);
        assert_eq!(err("a..com"), PatternError::EmptyLabel);
        assert_eq!(err("a b.com"), PatternError::InvalidChar(' '));
        assert_eq!(err(&"a".repeat(64)), PatternError::LabelTooLong);
        assert_eq!(
            FqdnPattern::parse_name("*.example.com"),
            Err(PatternError::WildcardInName)
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["a.com", "*.a.com", "**.a.com", "x-*.a.com", "*"] {
            assert_eq!(p(text).to_string(), text);
            assert_eq!(p(&p(text).to_string()), p(text));
        }
    }

    #[test]
    fn matches_never_panics_on_multibyte_names() {
        let p = p("*.example.com");
        assert!(!p.matches("é.example.co"));
        assert!(!p.matches("ééééééééééééé"));
        assert!(FqdnPattern::parse_pattern("é*.com").is_err());
        assert!(!FqdnPattern::Glob("a*.com".into()).matches("aé.com"));
    }
}
