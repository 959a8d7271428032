//! Which records a `/flows` request (or `tlsgate observe`) wants: the query string
//! `verdict=DROPPED&host=www.example.com&http_method=GET&http_status=4+&http_path=^/api/&
//! since=2026-11-22T18:00:00Z&last=20&follow=1`.
//!
//! Every filter is applied here, on the server, so `last=N` counts matching records and a
//! follower is only sent what it asked for.

use std::time::SystemTime;

use regex::{Regex, RegexBuilder};

use super::{FlowRecord, Verdict};

/// The longest `http_path` pattern accepted, in bytes.
pub const MAX_PATH_REGEX_LEN: usize = 1024;
/// The largest compiled `http_path` program (and lazy DFA), in bytes: a pattern like `a{1000}{1000}`
/// is refused instead of taking the admin server's memory.
pub const PATH_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Records matching every given condition pass; no condition passes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub verdict: Option<Verdict>,
    /// A name (`www.example.com`, any case) or a wildcard (`*.example.com`: subdomains only),
    /// matched against the SNI / CONNECT host / Host of the record.
    pub host: Option<String>,
    /// `GET`, any case; only HTTP exchanges match.
    pub http_method: Option<String>,
    pub http_status: Option<StatusMatch>,
    /// A regular expression searched in the URL's path (no query); only HTTP exchanges match.
    pub http_path: Option<PathRegex>,
    /// Records that ended at or after this time.
    pub since: Option<SystemTime>,
}

/// A size-limited regular expression over URL paths (`^/api/`, `\.php$`).
#[derive(Debug, Clone)]
pub struct PathRegex(Regex);

impl PathRegex {
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.len() > MAX_PATH_REGEX_LEN {
            return Err(format!(
                "http_path: the pattern is longer than {MAX_PATH_REGEX_LEN} bytes"
            ));
        }
        RegexBuilder::new(pattern)
            .size_limit(PATH_REGEX_SIZE_LIMIT)
            .dfa_size_limit(PATH_REGEX_SIZE_LIMIT)
            .build()
            .map(Self)
            .map_err(|e| format!("http_path {pattern:?}: {e}"))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn matches(&self, url: &str) -> bool {
        self.0.is_match(url_path(url))
    }
}

/// Two patterns are the same filter when they are the same text.
impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PathRegex {}

/// `/a/b` of `https://host/a/b?q` (also of an origin-form `/a/b?q`); `/` when there is none.
fn url_path(url: &str) -> &str {
    let after_scheme = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    };
    let path = after_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or(after_scheme);
    if path.is_empty() { "/" } else { path }
}

/// `2026-11-22T18:00:00Z` (fractional seconds allowed, UTC only) as a time.
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("since {text:?}: {e}; expected an RFC 3339 time in UTC"))
}

/// `403` (exactly) or `4+` (any 4xx); only HTTP exchanges with a status match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Exact(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("http_status {text:?}: expected a status (403) or a class (4+)");
        match text.strip_suffix('+') {
            Some(class) => match class.parse::<u16>() {
                Ok(c) if (1..=5).contains(&c) => Ok(Self::Class(c)),
                _ => Err(bad()),
            },
            None => match text.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => Ok(Self::Exact(code)),
                _ => Err(bad()),
            },
        }
    }

    fn matches(self, code: u16) -> bool {
        match self {
            Self::Exact(c) => code == c,
            Self::Class(c) => code / 100 == c,
        }
    }
}

/// A parsed `/flows` query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowQuery {
    pub filter: FlowFilter,
    /// Keep streaming records as they come.
    pub follow: bool,
    /// Only the newest N matching records of the ring (all of them when absent).
    pub last: Option<usize>,
}

impl FlowQuery {
    /// Parses a query string; every bad or unknown parameter is an error (never silently ignored).
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut q = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "verdict" => {
                    q.filter.verdict = Some(Verdict::parse(&value).ok_or_else(|| {
                        format!("verdict {value:?}: FORWARDED, DROPPED, ERROR or AUDIT")
                    })?)
                }
                "host" => q.filter.host = Some(value.to_ascii_lowercase()),
                "http_method" => q.filter.http_method = Some(value.to_ascii_uppercase()),
                "http_status" => q.filter.http_status = Some(StatusMatch::parse(&value)?),
                "http_path" => q.filter.http_path = Some(PathRegex::new(&value)?),
                "since" => q.filter.since = Some(parse_since(&value)?),
                "follow" => q.follow = matches!(value.as_str(), "" | "1" | "true"),
                "last" => {
                    q.last = Some(
                        value
                            .parse()
                            .map_err(|_| format!("last {value:?}: expected a count"))?,
                    )
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(q)
    }
}

impl FlowFilter {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        if self.verdict.is_some_and(|v| v != r.verdict) {
            return false;
        }
        if let Some(host) = &self.host {
            let Some(name) = r.name.as_deref() else {
                return false;
            };
            if !host_matches(host, &name.to_ascii_lowercase()) {
                return false;
            }
        }
        let method_differs = |method: &String| {
            r.http
                .as_ref()
                .is_none_or(|h| !h.method.eq_ignore_ascii_case(method))
        };
        if self.http_method.as_ref().is_some_and(method_differs) {
            return false;
        }
        let status_differs =
            |status: &StatusMatch| r.http.is_none() || !r.status.is_some_and(|c| status.matches(c));
        if self.http_status.as_ref().is_some_and(status_differs) {
            return false;
        }
        let path_differs = |path: &PathRegex| r.http.as_ref().is_none_or(|h| !path.matches(&h.url));
        if self.http_path.as_ref().is_some_and(path_differs) {
            return false;
        }
        if self.since.is_some_and(|since| r.time < since) {
            return false;
        }
        true
    }
}

fn host_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .strip_suffix(parent)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => pattern == name,
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

/// `value` percent-encoded for a query string (everything but unreserved characters).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter_and_refuses_unknown_ones() {
        let q = FlowQuery::parse(
            "verdict=dropped&host=WWW.x.com&http_method=get&http_status=4%2B&last=5&follow=1",
        )
        .unwrap();
        assert_eq!(q.filter.verdict, Some(Verdict::Dropped));
        assert_eq!(q.filter.host.as_deref(), Some("www.x.com"));
        assert_eq!(q.filter.http_method.as_deref(), Some("GET"));
        assert_eq!(q.filter.http_status, Some(StatusMatch::Class(4)));
        assert_eq!(q.last, Some(5));
        assert!(q.follow);
        assert!(FlowQuery::parse("colour=red").is_err());
        assert!(FlowQuery::parse("http_status=7+").is_err());
        assert!(FlowQuery::parse("http_status=abc").is_err());
        assert!(FlowQuery::parse("verdict=MAYBE").is_err());
        assert_eq!(StatusMatch::parse("403"), Ok(StatusMatch::Exact(403)));
    }

    #[test]
    fn path_regex_searches_the_path_only_and_refuses_bad_or_huge_patterns() {
        let q = FlowQuery::parse("http_path=%5E%2Fapi%2F&since=2026-11-22T18%3A00%3A00Z").unwrap();
        let path = q.filter.http_path.expect("a path filter");
        assert_eq!(path.as_str(), "^/api/");
        assert!(path.matches("https://x.example/api/v1?next=/api/"));
        assert!(!path.matches("https://x.example/web/api/"));
        assert!(!path.matches("https://x.example/?q=/api/"));
        assert!(path.matches("/api/v1"));
        assert_eq!(url_path("https://x.example"), "/");
        assert_eq!(url_path("http://x.example/a#f"), "/a");
        let since = q.filter.since.expect("a time");
        assert_eq!(
            since
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_795_370_400
        );
        let bad = FlowQuery::parse("http_path=%28").unwrap_err();
        assert!(bad.starts_with("http_path \"(\""), "{bad}");
        assert!(PathRegex::new(&"a".repeat(MAX_PATH_REGEX_LEN + 1)).is_err());
        assert!(
            PathRegex::new("(a{1000}){1000}").is_err(),
            "over the size limit"
        );
        assert!(FlowQuery::parse("since=5m").is_err());
    }

    #[test]
    fn wildcard_host_matches_subdomains_only() {
        assert!(host_matches("*.example.com", "www.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(host_matches("example.com", "example.com"));
    }

    #[test]
    fn encodes_what_decoding_reads_back() {
        let text = "4+ a/b?c";
        assert_eq!(percent_decode(&percent_encode(text)).unwrap(), text);
    }
}
