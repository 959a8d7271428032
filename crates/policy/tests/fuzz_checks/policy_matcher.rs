//! The checks of the `policy_matcher` fuzz target (`fuzz/fuzz_targets/policy_matcher.rs` includes
//! this file), replayed on the committed corpus by `tests/fuzz_corpus.rs` on the stable toolchain.
//!
//! One fixed policy (`fuzz/policy_matcher.yaml`, a rule of each kind) and arbitrary facts decoded
//! from the input: a connection name and port, and a request's method, path, Host and headers.
//! Checked: the laws of docs/policy.md — names compare in any case and with one trailing dot,
//! a verdict names a rule that selects the connection, a denied connection allows no request,
//! a request whose Host is not the connection's name is denied — and edits apply without panic.

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use tlsgate_policy::{
    DenyReason, EditOutcome, LoadOptions, Policy, RequestFacts, RequestVerdict, TlsAction, load_str,
};

const POLICY: &str = include_str!("../../../../fuzz/policy_matcher.yaml");

/// Headers decoded from one input, at most.
const MAX_HEADERS: usize = 32;

/// Names the policy selects, so short inputs reach its rules: the first byte picks one, or
/// (`0xff`) says the name is in the input.
const NAMES: [&str; 8] = [
    "www.facebook.com",
    "static.fbcdn.net",
    "a.b.example.com",
    "api.v1.example.com",
    "blocked.example.com",
    "plain.test",
    "example.com",
    "fbcdn.net",
];

pub fn policy() -> &'static Policy {
    static POLICY_CELL: OnceLock<Policy> = OnceLock::new();
    POLICY_CELL.get_or_init(|| {
        match load_str(
            POLICY,
            "policy_matcher.yaml",
            Path::new("."),
            &LoadOptions::default(),
        ) {
            Ok((policy, _)) => policy,
            Err(errors) => panic!("fuzz/policy_matcher.yaml must load: {errors:#?}"),
        }
    })
}

/// The facts in one input: `[name choice][port hi][port lo]` then newline-separated fields
/// `name` (when chosen), `method`, `path`, `host`, then `header: value` lines.
pub struct Facts {
    pub name: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: HeaderMap,
}

pub fn decode(data: &[u8]) -> Option<Facts> {
    let (&[choice, hi, lo], rest) = data.split_first_chunk::<3>()?;
    let mut fields = rest.split(|&b| b == b'\n');
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let name = match NAMES.get(usize::from(choice)) {
        Some(name) => (*name).to_owned(),
        None => next(),
    };
    let (method, path, host) = (next(), next(), next());
    let mut headers = HeaderMap::new();
    for line in fields.take(MAX_HEADERS) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    Some(Facts {
        name,
        port: u16::from_be_bytes([hi, lo]),
        method,
        path,
        host,
        headers,
    })
}

pub fn check(data: &[u8]) {
    let Some(facts) = decode(data) else {
        return;
    };
    let policy = policy();
    let (name, port) = (facts.name.as_str(), facts.port);
    let verdict = policy.decide_connection(name, port);
    assert_eq!(
        verdict,
        policy.decide_connection(&name.to_ascii_uppercase(), port)
    );
    if !name.is_empty() && !name.ends_with('.') {
        assert_eq!(verdict, policy.decide_connection(&format!("{name}."), port));
    }
    if let Some(rule) = verdict.rule {
        let rule = policy
            .rule(rule)
            .expect("a verdict names the policy's own rule");
        assert!(rule.selects(name, port));
        assert_eq!(rule.tls(), verdict.action);
    }
    assert!(!verdict.inspect_http || verdict.action == TlsAction::Bump);

    let request = RequestFacts {
        method: &facts.method,
        path: &facts.path,
        host: &facts.host,
        headers: &facts.headers,
    };
    let decided = policy.decide_request(name, port, &request);
    assert_eq!(decided, policy.decide_request(name, port, &request));
    if verdict.action == TlsAction::Deny {
        assert!(!decided.is_allow(), "a denied connection allows no request");
    }
    // The same request naming the connection in its Host reaches the rules; another name never.
    let own = RequestFacts {
        host: name,
        ..request
    };
    let own_decided = policy.decide_request(name, port, &own);
    if !name.is_empty() && !name.contains(':') && !name.starts_with('[') {
        assert!(!matches!(
            own_decided,
            RequestVerdict::Deny {
                reason: DenyReason::HostSniMismatch | DenyReason::MissingHost,
                ..
            }
        ));
    }
    let other = RequestFacts {
        host: "other.invalid",
        ..request
    };
    if !name.eq_ignore_ascii_case("other.invalid") && !name.eq_ignore_ascii_case("other.invalid.") {
        assert!(!policy.decide_request(name, port, &other).is_allow());
    }
    if let RequestVerdict::Allow { rule, edits } = decided {
        if let Some(rule) = rule {
            assert!(policy.rule(rule).is_some_and(|r| r.selects(name, port)));
        }
        let mut headers = facts.headers.clone();
        for edit in edits {
            // Right after an edit, its condition holds unless it only reported or deleted.
            let holds = match edit.apply(&mut headers) {
                EditOutcome::Matched | EditOutcome::Added | EditOutcome::Replaced => true,
                EditOutcome::Logged | EditOutcome::Deleted => false,
            };
            assert_eq!(edit.condition.holds(&headers), holds, "{edit}");
        }
    }
}
