//! The checks of the `policy_reader` fuzz target (`fuzz/fuzz_targets/policy_reader.rs` includes
//! this file), replayed on the committed corpus by `tests/fuzz_corpus.rs` on the stable toolchain.
//!
//! Any text, in either format (a `kind:` key means Cilium): loading never panics, a refusal
//! names at least one error, and a loaded policy decides deterministically and names only its
//! own rules.

use std::path::Path;

use tlsgate_policy::{LoadOptions, Policy, TlsAction, load_str};

/// Relative secret files resolve here, where nothing exists: reads fail, nothing is written.
pub const BASE_DIR: &str = "/nonexistent/tlsgate-fuzz";

/// Names and ports the blog's and the docs' policies select, and a few that no policy does.
const PROBES: [(&str, u16); 6] = [
    ("www.facebook.com", 443),
    ("WWW.Facebook.com.", 443),
    ("a.b.example.com", 8443),
    ("api.github.com", 443),
    ("", 0),
    ("[::1]", 65535),
];

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = load_str(
        text,
        "fuzz.yaml",
        Path::new(BASE_DIR),
        &LoadOptions::default(),
    );
    match loaded {
        Err(errors) => assert!(!errors.is_empty(), "a refusal names its errors"),
        Ok((policy, _notices)) => decides_on_its_own_rules(&policy),
    }
}

fn decides_on_its_own_rules(policy: &Policy) {
    for (host, port) in PROBES {
        let verdict = policy.decide_connection(host, port);
        assert_eq!(verdict, policy.decide_connection(host, port));
        match verdict.rule {
            Some(rule) => {
                let rule = policy
                    .rule(rule)
                    .expect("the verdict names one of the policy's rules");
                assert!(
                    rule.selects(host, port),
                    "the named rule selects {host}:{port}"
                );
                assert_eq!(rule.tls(), verdict.action);
            }
            None => assert_ne!(verdict.action, TlsAction::Bump, "only a rule bumps"),
        }
    }
}
