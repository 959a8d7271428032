//! docs/policy.md's truth table, one test per row (the row number is in the test name), plus
//! the matcher laws of issue 4's acceptance 1.

use std::path::Path;

use http::HeaderMap;
use tlsgate_policy::{
    ConnectionVerdict, DenyReason, LoadOptions, Policy, RequestFacts, RequestVerdict, TlsAction,
    load_str,
};

fn policy(yaml: &str) -> Policy {
    match load_str(yaml, "test.yaml", Path::new("."), &LoadOptions::default()) {
        Ok((policy, notices)) => {
            assert!(
                notices.is_empty(),
                "tlsgate's format has no notices: {notices:?}"
            );
            policy
        }
        Err(errors) => panic!("{errors:#?}"),
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, value.parse().unwrap());
    }
    map
}

fn req<'p>(
    policy: &'p Policy,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    hdrs: &[(&'static str, &'static str)],
) -> RequestVerdict<'p> {
    let headers = headers(hdrs);
    let facts = RequestFacts {
        method,
        path,
        host,
        headers: &headers,
    };
    policy.decide_request(host, port, &facts)
}

fn rule_name(policy: &Policy, verdict: ConnectionVerdict) -> Option<&str> {
    verdict.rule.map(|r| policy.rule(r).unwrap().name())
}

const FACEBOOK: &str = r#"
rules:
  - name: facebook
    match: www.facebook.com
    ports: [443]
    tls: bump
    http:
      - method: GET
        path: /cucumber
        headers: ["dada: dada"]
"#;

#[test]
fn row1_nothing_selects_and_default_deny_denies_the_connection() {
    let p = policy(FACEBOOK);
    let v = p.decide_connection("www.example.com", 443);
    assert_eq!(v.action, TlsAction::Deny);
    assert_eq!(v.rule, None);
    assert_eq!(v.deny_reason(), Some(DenyReason::NoRule));
    assert_eq!(
        req(&p, "www.example.com", 443, "GET", "/", &[]),
        RequestVerdict::Deny {
            reason: DenyReason::NoRule,
            rule_set: None
        }
    );
    // A selected name on a port the rule does not list is not selected either.
    assert_eq!(
        p.decide_connection("www.facebook.com", 80).deny_reason(),
        Some(DenyReason::NoRule)
    );
}

#[test]
fn row2_nothing_selects_and_default_allow_splices() {
    let p = policy(&format!("default: allow\n{FACEBOOK}"));
    let v = p.decide_connection("www.example.com", 443);
    assert_eq!(
        v,
        ConnectionVerdict {
            action: TlsAction::Splice,
            rule: None,
            inspect_http: false
        }
    );
    assert_eq!(
        req(&p, "www.example.com", 443, "POST", "/x", &[]),
        RequestVerdict::Allow {
            rule: None,
            edits: &[]
        }
    );
    // The default never loosens a selected host's rules.
    assert!(!req(&p, "www.facebook.com", 443, "GET", "/", &[]).is_allow());
}

#[test]
fn row3_a_splice_rule_splices() {
    let p = policy("rules:\n  - match: pay.example.com\n    ports: [443]\n    tls: splice\n");
    let v = p.decide_connection("pay.example.com", 443);
    assert_eq!(v.action, TlsAction::Splice);
    assert!(!v.inspect_http);
    assert_eq!(rule_name(&p, v), Some("rules[0]"));
}

#[test]
fn row4_a_bump_rule_without_http_rules_allows_every_request() {
    let p = policy("rules:\n  - match: api.example.com\n    tls: bump\n");
    let v = p.decide_connection("api.example.com", 8443);
    assert_eq!(v.action, TlsAction::Bump);
    assert!(!v.inspect_http, "no HTTP rule can deny");
    assert!(req(&p, "api.example.com", 8443, "DELETE", "/anything", &[]).is_allow());
}

#[test]
fn row5_http_rules_allow_matching_requests_and_deny_others_naming_the_rule_set() {
    let p = policy(FACEBOOK);
    let v = p.decide_connection("www.facebook.com", 443);
    assert_eq!(v.action, TlsAction::Bump);
    assert!(v.inspect_http);
    assert_eq!(rule_name(&p, v), Some("facebook"));
    let ok = req(
        &p,
        "www.facebook.com",
        443,
        "GET",
        "/cucumber",
        &[("dada", "dada")],
    );
    assert!(
        matches!(ok, RequestVerdict::Allow { rule: Some(_), .. }),
        "{ok:?}"
    );
    let denied = req(
        &p,
        "www.facebook.com",
        443,
        "GET",
        "/cucumber",
        &[("dada", "dado")],
    );
    assert_eq!(
        denied,
        RequestVerdict::Deny {
            reason: DenyReason::PolicyDenied,
            rule_set: v.rule
        }
    );
}

#[test]
fn row6_a_deny_rule_wins_over_everything_in_any_order() {
    for rules in [
        "  - {match: x.example.com, tls: bump}\n  - {pattern: '*.example.com', tls: deny}\n",
        "  - {pattern: '*.example.com', tls: deny}\n  - {match: x.example.com, tls: bump}\n",
    ] {
        let p = policy(&format!("default: allow\nrules:\n{rules}"));
        let v = p.decide_connection("x.example.com", 443);
        assert_eq!(v.action, TlsAction::Deny, "{rules}");
        assert_eq!(v.deny_reason(), Some(DenyReason::DenyRule));
        assert_eq!(
            rule_name(&p, v),
            Some(if rules.starts_with("  - {match") {
                "rules[1]"
            } else {
                "rules[0]"
            })
        );
        let r = req(&p, "x.example.com", 443, "GET", "/", &[]);
        assert!(
            matches!(
                r,
                RequestVerdict::Deny {
                    reason: DenyReason::DenyRule,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}

#[test]
fn row7_http_rules_of_rules_selecting_the_same_host_port_are_ored() {
    let p = policy(
        r#"
rules:
  - name: reads
    match: api.example.com
    http: [{method: GET}]
  - name: uploads
    pattern: "*.example.com"
    http: [{method: POST, path: "/upload/.*"}]
"#,
    );
    let v = p.decide_connection("api.example.com", 443);
    assert_eq!((v.action, v.inspect_http), (TlsAction::Bump, true));
    let allow_by = |method, path| match req(&p, "api.example.com", 443, method, path, &[]) {
        RequestVerdict::Allow { rule: Some(r), .. } => Some(p.rule(r).unwrap().name().to_owned()),
        _ => None,
    };
    assert_eq!(allow_by("GET", "/x").as_deref(), Some("reads"));
    assert_eq!(allow_by("POST", "/upload/a").as_deref(), Some("uploads"));
    assert_eq!(allow_by("POST", "/other"), None);
    assert_eq!(allow_by("PUT", "/upload/a"), None);
    // Only the wildcard rule selects another name: its rules alone apply.
    assert!(!req(&p, "www.example.com", 443, "GET", "/x", &[]).is_allow());
}

#[test]
fn row8_a_selecting_rule_without_http_rules_allows_every_request_as_in_cilium() {
    let p = policy(
        r#"
rules:
  - {match: api.example.com, tls: bump, http: [{method: GET}]}
  - {match: api.example.com, tls: splice}
"#,
    );
    let v = p.decide_connection("api.example.com", 443);
    assert_eq!(v.action, TlsAction::Bump, "bump > splice");
    assert!(!v.inspect_http, "the L4-only rule allows every request");
    assert!(req(&p, "api.example.com", 443, "POST", "/", &[]).is_allow());
}

#[test]
fn row9_tls_actions_combine_deny_over_bump_over_splice() {
    let combos = [
        (["splice", "bump"], TlsAction::Bump),
        (["bump", "splice"], TlsAction::Bump),
        (["splice", "deny"], TlsAction::Deny),
        (["deny", "bump"], TlsAction::Deny),
        (["splice", "splice"], TlsAction::Splice),
    ];
    for ([a, b], expected) in combos {
        let p = policy(&format!(
            "rules:\n  - {{match: h.example.com, tls: {a}}}\n  - {{pattern: '*.example.com', tls: {b}}}\n"
        ));
        assert_eq!(
            p.decide_connection("h.example.com", 443).action,
            expected,
            "{a} + {b}"
        );
    }
}

#[test]
fn row10_host_differing_from_the_sni_is_denied_before_any_rule() {
    let p = policy(FACEBOOK);
    let headers = headers(&[("dada", "dada")]);
    let with_host = |host| RequestFacts {
        method: "GET",
        path: "/cucumber",
        host,
        headers: &headers,
    };
    for host in [
        "www.instagram.com",
        "facebook.com",
        "www.facebook.com.evil.net",
    ] {
        assert_eq!(
            p.decide_request("www.facebook.com", 443, &with_host(host)),
            RequestVerdict::Deny {
                reason: DenyReason::HostSniMismatch,
                rule_set: None
            },
            "{host}"
        );
    }
    assert_eq!(
        p.decide_request("www.facebook.com", 443, &with_host("")),
        RequestVerdict::Deny {
            reason: DenyReason::MissingHost,
            rule_set: None
        }
    );
    // Port, case and trailing dot do not make a mismatch.
    for host in [
        "www.facebook.com:443",
        "WWW.FACEBOOK.COM",
        "www.facebook.com.",
        "www.facebook.com.:8443",
    ] {
        assert!(
            p.decide_request("www.facebook.com", 443, &with_host(host))
                .is_allow(),
            "{host}"
        );
    }
    assert!(
        p.decide_request("www.facebook.com.", 443, &with_host("www.Facebook.com"))
            .is_allow()
    );
}

#[test]
fn row11_rules_for_other_names_on_the_same_port_never_interfere() {
    // Inspection with strict HTTP rules for one name; plain allow for another, same port.
    let p = policy(
        r#"
rules:
  - {match: inspected.example.com, ports: [443], tls: bump, http: [{method: GET, path: /only}]}
  - {match: other.example.com, ports: [443], tls: splice}
  - {match: bumped.example.com, ports: [443], tls: bump}
"#,
    );
    assert_eq!(
        p.decide_connection("other.example.com", 443).action,
        TlsAction::Splice
    );
    let bumped = p.decide_connection("bumped.example.com", 443);
    assert_eq!(
        (bumped.action, bumped.inspect_http),
        (TlsAction::Bump, false)
    );
    assert!(req(&p, "bumped.example.com", 443, "POST", "/anything", &[]).is_allow());
    assert!(!req(&p, "inspected.example.com", 443, "POST", "/anything", &[]).is_allow());
    assert!(req(&p, "inspected.example.com", 443, "GET", "/only", &[]).is_allow());
}

#[test]
fn matcher_wildcards_never_match_the_bare_parent() {
    let p = policy(
        "rules:\n  - {pattern: '*.example.com', ports: [443]}\n  - {pattern: '**.deep.test'}\n",
    );
    assert_eq!(
        p.decide_connection("example.com", 443).action,
        TlsAction::Deny
    );
    assert_eq!(
        p.decide_connection("a.example.com", 443).action,
        TlsAction::Splice
    );
    assert_eq!(
        p.decide_connection("a.b.example.com", 443).action,
        TlsAction::Deny
    );
    assert_eq!(
        p.decide_connection("deep.test", 443).action,
        TlsAction::Deny
    );
    assert_eq!(
        p.decide_connection("a.b.deep.test", 443).action,
        TlsAction::Splice
    );
}

#[test]
fn matcher_names_ignore_case_and_trailing_dot() {
    let p = policy("rules:\n  - {match: WWW.Example.COM., ports: [443]}\n");
    for host in ["www.example.com", "WWW.EXAMPLE.COM", "www.example.com."] {
        assert_eq!(
            p.decide_connection(host, 443).action,
            TlsAction::Splice,
            "{host}"
        );
    }
    assert_eq!(
        p.decide_connection("www.example.com..", 443).action,
        TlsAction::Deny
    );
}

#[test]
fn matcher_method_path_and_host_regexes_are_full_matches() {
    let p = policy(
        r#"
rules:
  - match: h.example.com
    http:
      - {method: GET, path: /cucumber, host: "h\\.example\\.com"}
      - {method: "PUT|PATCH", path: "/items/[0-9]+"}
"#,
    );
    let ok = |m, path| req(&p, "h.example.com", 443, m, path, &[]).is_allow();
    assert!(ok("GET", "/cucumber"));
    assert!(!ok("GET", "/cucumberX"));
    assert!(!ok("GET", "/x/cucumber"));
    assert!(
        !ok("GET", "/cucumber?a=b"),
        "the path is matched with its query, as Cilium does"
    );
    assert!(!ok("GETX", "/cucumber"));
    assert!(!ok("get", "/cucumber"), "methods are case-sensitive");
    assert!(ok("PUT", "/items/42"));
    assert!(ok("PATCH", "/items/7"));
    assert!(
        !ok("XPUT", "/items/7"),
        "alternation is anchored as a whole"
    );
    assert!(!ok("PUT", "/items/7/x"));
    // The host regex matches the host without its port, in any case.
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        method: "GET",
        path: "/cucumber",
        host: "H.Example.com:443",
        headers: &headers,
    };
    assert!(p.decide_request("h.example.com", 443, &facts).is_allow());
}

#[test]
fn matcher_header_presence_versus_exact_value() {
    let p = policy(
        r#"
rules:
  - match: h.example.com
    http:
      - {path: /present, headers: [X-Token]}
      - {path: /value, headers: ["X-Mode: strict"]}
"#,
    );
    let ok = |path, hdrs: &[(&'static str, &'static str)]| {
        req(&p, "h.example.com", 443, "GET", path, hdrs).is_allow()
    };
    assert!(ok("/present", &[("x-token", "")]));
    assert!(
        ok("/present", &[("X-TOKEN", "anything")]),
        "names are case-insensitive"
    );
    assert!(!ok("/present", &[]));
    assert!(ok("/value", &[("x-mode", "strict")]));
    assert!(
        ok("/value", &[("x-mode", "loose"), ("x-mode", "strict")]),
        "any one value"
    );
    assert!(!ok("/value", &[("x-mode", "Strict")]), "values are exact");
    assert!(!ok("/value", &[("x-mode", "strict ")]));
    assert!(!ok("/value", &[("x-mode", "")]));
}

#[test]
fn matcher_rule_order_does_not_matter_where_rules_do_not_overlap() {
    let rules = [
        "  - {match: a.example.com, ports: [443], tls: bump, http: [{method: GET}]}\n",
        "  - {pattern: '*.other.test', tls: splice}\n",
        "  - {match: c.example.com, ports: [8443], tls: deny}\n",
        "  - {match: d.example.com, tls: bump}\n",
    ];
    let forward = policy(&format!("rules:\n{}", rules.concat()));
    let reversed: Vec<_> = rules.iter().rev().copied().collect();
    let backward = policy(&format!("rules:\n{}", reversed.concat()));
    let cases = [
        ("a.example.com", 443, "GET"),
        ("a.example.com", 443, "POST"),
        ("x.other.test", 443, "GET"),
        ("c.example.com", 8443, "GET"),
        ("c.example.com", 443, "GET"),
        ("d.example.com", 1, "PUT"),
        ("e.example.com", 443, "GET"),
    ];
    for (host, port, method) in cases {
        let (f, b) = (
            forward.decide_connection(host, port),
            backward.decide_connection(host, port),
        );
        assert_eq!(
            (f.action, f.inspect_http),
            (b.action, b.inspect_http),
            "{host}:{port}"
        );
        let name =
            |p: &Policy, v: ConnectionVerdict| v.rule.map(|r| p.rule(r).unwrap().fqdns().to_vec());
        assert_eq!(
            name(&forward, f),
            name(&backward, b),
            "{host}:{port}: the same rule decides"
        );
        assert_eq!(
            req(&forward, host, port, method, "/", &[]).is_allow(),
            req(&backward, host, port, method, "/", &[]).is_allow(),
            "{host}:{port} {method}"
        );
    }
}
