//! The compiled policy and its two decisions: one per connection, one per HTTP request.
//!
//! The semantics (docs/policy.md has them as a truth table):
//! - a rule *selects* `host:port` when one of its FQDN patterns matches the host, one of its
//!   port ranges holds the port (no ports: every port) and, if it has server names, one of them
//!   matches the host too;
//! - only the rules that select a connection's `host:port` are ever evaluated for it, so rules
//!   for other names on the same port cannot change its outcome;
//! - nothing selects: `default` decides (deny unless the policy says `default: allow`, which
//!   splices);
//! - the selecting rules' TLS actions combine by precedence `deny > bump > splice`;
//! - the selecting rules are allow-lists whose HTTP rules are ORed; a selecting rule without
//!   HTTP rules allows every request (as an L4-only rule does in Cilium).

use std::fmt;
use std::path::PathBuf;

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;

use crate::fqdn::FqdnPattern;

/// What happens to a connection. Ordered by precedence: when several rules select a
/// connection, the greatest action wins (`Deny > Bump > Splice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsAction {
    /// Pass the bytes through untouched (the SNI is still logged).
    Splice,
    /// Terminate the client's TLS with a minted (or mapped) certificate, inspect HTTP, and
    /// re-encrypt to the verified origin.
    Bump,
    /// Close the connection (an explicit CONNECT gets 403 before any TLS).
    Deny,
}

impl TlsAction {
    /// `splice`, `bump` or `deny`: the word used in policy files.
    pub fn label(self) -> &'static str {
        match self {
            Self::Splice => "splice",
            Self::Bump => "bump",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for TlsAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What happens to traffic that no rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// Cilium's egress model: what is not allowed is denied.
    #[default]
    Deny,
    /// Unselected connections are spliced (passed through without inspection).
    Allow,
}

impl DefaultAction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// A rule of a [`Policy`], by position. Only meaningful with the policy that produced it (the
/// runtime keeps the `Arc<Policy>` a connection was decided with next to its verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef(u32);

impl RuleRef {
    /// The rule's position in [`Policy::rules`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why a connection or a request was denied. [`DenyReason::label`] is stable snake_case, for
/// flows, metrics and the 403 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No rule selects the host:port and the default is deny.
    NoRule,
    /// A selecting rule says `tls: deny`.
    DenyRule,
    /// Rules select the host:port but none of their HTTP rules matches the request.
    PolicyDenied,
    /// The request's Host / :authority is not the name the connection was allowed for.
    HostSniMismatch,
    /// The request names no host at all (HTTP/1.0 without Host).
    MissingHost,
}

impl DenyReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::NoRule => "no_rule",
            Self::DenyRule => "deny_rule",
            Self::PolicyDenied => "policy_denied",
            Self::HostSniMismatch => "host_sni_mismatch",
            Self::MissingHost => "missing_host",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The decision for a connection to `host:port` (host: the SNI, else the CONNECT host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionVerdict {
    pub action: TlsAction,
    /// The first rule (in file order) whose action is `action`; `None` when `default` decided.
    pub rule: Option<RuleRef>,
    /// Whether HTTP rules can deny requests on this connection (`action` is `Bump` and every
    /// selecting rule has HTTP rules). The runtime calls [`Policy::decide_request`] for every
    /// request of a bumped connection regardless, for the Host/SNI check.
    pub inspect_http: bool,
}

impl ConnectionVerdict {
    /// Why the connection is denied, if it is.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match (self.action, self.rule) {
            (TlsAction::Deny, None) => Some(DenyReason::NoRule),
            (TlsAction::Deny, Some(_)) => Some(DenyReason::DenyRule),
            _ => None,
        }
    }
}

/// The decision for one HTTP request on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict<'p> {
    /// Forward the request after applying `edits` (from the matching HTTP rule's
    /// `headerMatches` with a `mismatch` action) in order.
    Allow {
        /// The rule that allowed it; `None` when `default: allow` did.
        rule: Option<RuleRef>,
        edits: &'p [HeaderEdit],
    },
    /// Answer 403 naming `reason` and, when rules selected the host:port, the rule set
    /// (its first rule in file order) that denied it.
    Deny {
        reason: DenyReason,
        rule_set: Option<RuleRef>,
    },
}

impl RequestVerdict<'_> {
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// What the runtime knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The path and query as sent (origin-form, like HTTP/2's `:path`).
    pub path: &'a str,
    /// Host header or `:authority`, maybe with a port.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

/// An inclusive port range; `first == last` for one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn one(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Where a rule came from: file, YAML document (0-based) and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    pub path: String,
}

/// A Cilium `terminatingTLS` / `originatingTLS` secret reference and, when the load options
/// map it, the local path standing for it. Unmapped, the runtime mints certificates
/// (terminating) or uses its configured origin trust (originating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSecretRef {
    pub namespace: String,
    pub name: String,
    pub local: Option<PathBuf>,
}

impl fmt::Display for TlsSecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        match &self.local {
            Some(path) => write!(f, " -> {}", path.display()),
            None => f.write_str(" (unmapped)"),
        }
    }
}

/// One compiled rule: what it selects and what it does.
#[derive(Debug)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) origin: Origin,
    pub(crate) fqdns: Vec<FqdnPattern>,
    pub(crate) server_names: Vec<FqdnPattern>,
    pub(crate) ports: Vec<PortRange>,
    pub(crate) tls: TlsAction,
    pub(crate) http: Vec<HttpRule>,
    pub(crate) terminating_tls: Option<TlsSecretRef>,
    pub(crate) originating_tls: Option<TlsSecretRef>,
}

impl Rule {
    /// `facebook-tls: spec.egress[0].toPorts[0]` or the tlsgate rule's `name` / `rules[2]`.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    pub fn fqdns(&self) -> &[FqdnPattern] {
        &self.fqdns
    }
    /// Cilium's `serverNames`: when not empty, the host must match one of them as well.
    pub fn server_names(&self) -> &[FqdnPattern] {
        &self.server_names
    }
    /// Empty: every port.
    pub fn ports(&self) -> &[PortRange] {
        &self.ports
    }
    pub fn tls(&self) -> TlsAction {
        self.tls
    }
    /// Empty: every request is allowed (no L7 rules).
    pub fn http(&self) -> &[HttpRule] {
        &self.http
    }
    pub fn terminating_tls(&self) -> Option<&TlsSecretRef> {
        self.terminating_tls.as_ref()
    }
    pub fn originating_tls(&self) -> Option<&TlsSecretRef> {
        self.originating_tls.as_ref()
    }

    /// Whether this rule selects `host:port`.
    pub fn selects(&self, host: &str, port: u16) -> bool {
        self.ports_hold(port)
            && self.fqdns.iter().any(|p| p.matches(host))
            && (self.server_names.is_empty() || self.server_names.iter().any(|p| p.matches(host)))
    }

    fn ports_hold(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|r| r.contains(port))
    }
}

/// A regular expression compiled for a full match (`^(?:source)$`), keeping the user's text.
#[derive(Debug, Clone)]
pub struct FullMatch {
    source: String,
    regex: Regex,
}

impl FullMatch {
    /// Compiles `source` anchored at both ends; `case_insensitive` for host names.
    pub fn new(source: &str, case_insensitive: bool) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .case_insensitive(case_insensitive)
            .build()?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    /// The regular expression as written in the policy.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// One HTTP rule; every given field must match (an empty rule matches every request).
#[derive(Debug)]
pub struct HttpRule {
    pub(crate) path_in_file: String,
    pub(crate) method: Option<FullMatch>,
    pub(crate) path: Option<FullMatch>,
    pub(crate) host: Option<FullMatch>,
    pub(crate) headers: Vec<HeaderCondition>,
    pub(crate) edits: Vec<HeaderEdit>,
}

impl HttpRule {
    /// The rule's key path in its file.
    pub fn key_path(&self) -> &str {
        &self.path_in_file
    }
    pub fn method(&self) -> Option<&FullMatch> {
        self.method.as_ref()
    }
    pub fn path(&self) -> Option<&FullMatch> {
        self.path.as_ref()
    }
    pub fn host(&self) -> Option<&FullMatch> {
        self.host.as_ref()
    }
    /// `headers` and `headerMatches` without a `mismatch` action: all must hold.
    pub fn headers(&self) -> &[HeaderCondition] {
        &self.headers
    }
    /// `headerMatches` with a `mismatch` action: applied to allowed requests.
    pub fn edits(&self) -> &[HeaderEdit] {
        &self.edits
    }

    /// Whether the request matches; `host` is already without its port.
    fn matches(&self, req: &RequestFacts<'_>, host: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m.is_match(req.method))
            && self.path.as_ref().is_none_or(|p| p.is_match(req.path))
            && self.host.as_ref().is_none_or(|h| h.is_match(host))
            && self.headers.iter().all(|c| c.holds(req.headers))
    }
}

/// A header value a rule expects: literal, or read from a secret file (never displayed).
#[derive(Clone, PartialEq, Eq)]
pub enum ExpectedValue {
    Literal(HeaderValue),
    /// Read at compile time from `file`; the value is marked sensitive and never printed.
    Secret {
        file: PathBuf,
        value: HeaderValue,
    },
}

impl ExpectedValue {
    fn value(&self) -> &HeaderValue {
        match self {
            Self::Literal(value) | Self::Secret { value, .. } => value,
        }
    }
}

impl fmt::Debug for ExpectedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ExpectedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(value) => write!(f, "{:?}", String::from_utf8_lossy(value.as_bytes())),
            Self::Secret { file, .. } => write!(f, "<secret from {}>", file.display()),
        }
    }
}

/// A header that must be present (`value: None`) or have exactly `value` (any one of its
/// values, compared byte for byte). Names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub value: Option<ExpectedValue>,
}

impl HeaderCondition {
    pub fn holds(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        match &self.value {
            None => values.next().is_some(),
            Some(expected) => values.any(|v| v == expected.value()),
        }
    }
}

impl fmt::Display for HeaderCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None => write!(f, "{} present", self.name),
            Some(value) => write!(f, "{} = {value}", self.name),
        }
    }
}

/// Cilium's `mismatch`: what to do when a `headerMatches` header is absent or different.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchAction {
    /// Only report the mismatch (the runtime logs the header name, never the value).
    Log,
    /// Append the expected value (other values stay).
    Add,
    /// Remove the header.
    Delete,
    /// Replace every value with the expected one.
    Replace,
}

impl MismatchAction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Log => "LOG",
            Self::Add => "ADD",
            Self::Delete => "DELETE",
            Self::Replace => "REPLACE",
        }
    }
}

/// A header edit on the way to the origin: when `condition` does not hold, do `mismatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    pub condition: HeaderCondition,
    pub mismatch: MismatchAction,
}

/// What [`HeaderEdit::apply`] did, for flows and logs (never carries a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// The header already matched; nothing changed.
    Matched,
    /// Mismatch reported only.
    Logged,
    Added,
    Deleted,
    Replaced,
}

impl HeaderEdit {
    /// Applies the edit to a request's headers.
    pub fn apply(&self, headers: &mut HeaderMap) -> EditOutcome {
        if self.condition.holds(headers) {
            return EditOutcome::Matched;
        }
        let name = &self.condition.name;
        let value = self.condition.value.as_ref().map(|v| v.value().clone());
        match (self.mismatch, value) {
            (MismatchAction::Add, Some(value)) => {
                headers.append(name.clone(), value);
                EditOutcome::Added
            }
            (MismatchAction::Replace, Some(value)) => {
                headers.insert(name.clone(), value);
                EditOutcome::Replaced
            }
            (MismatchAction::Delete, _) => {
                headers.remove(name);
                EditOutcome::Deleted
            }
            // Add/Replace without a value are refused when compiling; reporting is the
            // harmless answer should one ever get here.
            (MismatchAction::Log | MismatchAction::Add | MismatchAction::Replace, _) => {
                EditOutcome::Logged
            }
        }
    }
}

impl fmt::Display for HeaderEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} else {}", self.condition, self.mismatch.label())
    }
}

/// A compiled policy: immutable, `Send + Sync`, shared behind an `Arc`.
#[derive(Debug)]
pub struct Policy {
    pub(crate) default: DefaultAction,
    pub(crate) rules: Vec<Rule>,
}

impl Policy {
    /// A policy from rules in file order (the loaders build these).
    pub(crate) fn new(default: DefaultAction, rules: Vec<Rule>) -> Self {
        Self { default, rules }
    }

    pub fn default_action(&self) -> DefaultAction {
        self.default
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule `rule` refers to, if it belongs to this policy.
    pub fn rule(&self, rule: RuleRef) -> Option<&Rule> {
        self.rules.get(rule.index())
    }

    /// The rules that select `host:port`, in file order.
    pub fn selecting<'p, 'h>(
        &'p self,
        host: &'h str,
        port: u16,
    ) -> impl Iterator<Item = (RuleRef, &'p Rule)> + use<'p, 'h> {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, rule)| rule.selects(host, port))
            .map(|(i, rule)| (rule_ref(i), rule))
    }

    /// The decision for a connection to `host:port`; `host` is the SNI, else the CONNECT host
    /// (any case, maybe with a trailing dot).
    pub fn decide_connection(&self, host: &str, port: u16) -> ConnectionVerdict {
        let mut best: Option<(RuleRef, TlsAction)> = None;
        let mut all_have_http = true;
        for (rule_ref, rule) in self.selecting(host, port) {
            if rule.tls != TlsAction::Deny && rule.http.is_empty() {
                all_have_http = false;
            }
            if best.is_none_or(|(_, action)| rule.tls > action) {
                best = Some((rule_ref, rule.tls));
            }
        }
        match best {
            None => ConnectionVerdict {
                action: match self.default {
                    DefaultAction::Deny => TlsAction::Deny,
                    DefaultAction::Allow => TlsAction::Splice,
                },
                rule: None,
                inspect_http: false,
            },
            Some((rule, action)) => ConnectionVerdict {
                action,
                rule: Some(rule),
                inspect_http: action == TlsAction::Bump && all_have_http,
            },
        }
    }

    /// The decision for one request on a connection allowed for `conn_host:port`.
    ///
    /// First the Host / :authority (port stripped, any case, trailing dot ignored) must equal
    /// `conn_host`; then only the rules selecting `conn_host:port` are consulted.
    pub fn decide_request(
        &self,
        conn_host: &str,
        port: u16,
        req: &RequestFacts<'_>,
    ) -> RequestVerdict<'_> {
        let host = strip_port(req.host);
        if host.is_empty() {
            return deny(DenyReason::MissingHost, None);
        }
        if !same_name(host, conn_host) {
            return deny(DenyReason::HostSniMismatch, None);
        }
        // Pass 1: a deny rule wins; a rule without HTTP rules allows everything.
        let mut first: Option<RuleRef> = None;
        let mut allow_all: Option<RuleRef> = None;
        for (rule_ref, rule) in self.selecting(conn_host, port) {
            if rule.tls == TlsAction::Deny {
                return deny(DenyReason::DenyRule, Some(rule_ref));
            }
            first.get_or_insert(rule_ref);
            if rule.http.is_empty() {
                allow_all.get_or_insert(rule_ref);
            }
        }
        let Some(rule_set) = first else {
            return match self.default {
                DefaultAction::Deny => deny(DenyReason::NoRule, None),
                DefaultAction::Allow => RequestVerdict::Allow {
                    rule: None,
                    edits: &[],
                },
            };
        };
        if let Some(rule) = allow_all {
            return RequestVerdict::Allow {
                rule: Some(rule),
                edits: &[],
            };
        }
        // Pass 2: the HTTP rules of every selecting rule, ORed; the first match (file order)
        // supplies the header edits.
        for (rule_ref, rule) in self.selecting(conn_host, port) {
            if let Some(http) = rule.http.iter().find(|h| h.matches(req, host)) {
                return RequestVerdict::Allow {
                    rule: Some(rule_ref),
                    edits: &http.edits,
                };
            }
        }
        deny(DenyReason::PolicyDenied, Some(rule_set))
    }
}

fn deny<'p>(reason: DenyReason, rule_set: Option<RuleRef>) -> RequestVerdict<'p> {
    RequestVerdict::Deny { reason, rule_set }
}

fn rule_ref(index: usize) -> RuleRef {
    // Loaders refuse more than u32::MAX rules long before this; saturating keeps it total.
    RuleRef(u32::try_from(index).unwrap_or(u32::MAX))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the host part (brackets kept for IPv6).
pub(crate) fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if !host.contains(':') => host,
        _ => authority,
    }
}

/// Case-insensitive name equality ignoring one trailing dot on either side.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    let a = a.strip_suffix('.').unwrap_or(a);
    let b = b.strip_suffix('.').unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports_from_every_authority_shape() {
        assert_eq!(strip_port("a.example.com"), "a.example.com");
        assert_eq!(strip_port("a.example.com:8443"), "a.example.com");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port(":443"), "");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn same_name_ignores_case_and_one_trailing_dot() {
        assert!(same_name("A.example.com.", "a.EXAMPLE.com"));
        assert!(!same_name("a.example.com..", "a.example.com"));
        assert!(!same_name("a.example.com", "b.example.com"));
    }

    #[test]
    fn full_match_anchors_alternations_as_a_whole() {
        let m = FullMatch::new("GET|HEAD", false).unwrap();
        assert!(m.is_match("GET") && m.is_match("HEAD"));
        assert!(!m.is_match("GETX") && !m.is_match("XHEAD") && !m.is_match("get"));
        assert_eq!(m.source(), "GET|HEAD");
        assert!(
            FullMatch::new("EXAMPLE\\.com", true)
                .unwrap()
                .is_match("example.COM")
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_or_display() {
        let mut value = HeaderValue::from_static("hunter2");
        value.set_sensitive(true);
        let secret = ExpectedValue::Secret {
            file: PathBuf::from("/run/token"),
            value,
        };
        let edit = HeaderEdit {
            condition: HeaderCondition {
                name: HeaderName::from_static("authorization"),
                value: Some(secret),
            },
            mismatch: MismatchAction::Replace,
        };
        for shown in [format!("{edit:?}"), edit.to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("/run/token"), "{shown}");
        }
    }

    #[test]
    fn delete_edit_on_an_absent_header_changes_nothing() {
        let edit = HeaderEdit {
            condition: HeaderCondition {
                name: HeaderName::from_static("x-a"),
                value: Some(ExpectedValue::Literal(HeaderValue::from_static("1"))),
            },
            mismatch: MismatchAction::Delete,
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-b", HeaderValue::from_static("2"));
        edit.apply(&mut headers);
        assert_eq!(headers.len(), 1);
    }
}
