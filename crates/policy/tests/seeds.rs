//! The users' own policies (crates/policy/testdata/README.md says where each comes from) load
//! unchanged and decide as the blog and Cilium's docs describe.

use std::path::{Path, PathBuf};

use http::HeaderMap;
use tlsgate_policy::{
    DenyReason, Notice, Policy, RequestFacts, RequestVerdict, TlsAction, load_file,
};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn load(name: &str) -> (Policy, Vec<Notice>) {
    match load_file(&testdata(name)) {
        Ok(loaded) => loaded,
        Err(errors) => panic!(
            "{name} must load unchanged:\n{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, value.parse().unwrap());
    }
    map
}

/// What curl sends for `curl https://{host}{path} -H ...`.
fn request<'p>(
    policy: &'p Policy,
    host: &str,
    path: &str,
    extra: &[(&'static str, &'static str)],
) -> RequestVerdict<'p> {
    let mut all = vec![("user-agent", "curl/7.64.0"), ("accept", "*/*")];
    all.extend_from_slice(extra);
    let headers = headers(&all);
    let facts = RequestFacts {
        method: "GET",
        path,
        host,
        headers: &headers,
    };
    policy.decide_request(host, 443, &facts)
}

fn notice_paths(notices: &[Notice]) -> Vec<&str> {
    notices.iter().map(|n| n.path.as_str()).collect()
}

#[test]
fn blog_policy_bumps_facebook_and_allows_get() {
    let (policy, notices) = load("blog-facebook-tls.yaml");
    let conn = policy.decide_connection("www.facebook.com", 443);
    assert_eq!(conn.action, TlsAction::Bump);
    assert!(conn.inspect_http);
    let rule = policy.rule(conn.rule.unwrap()).unwrap();
    assert_eq!(rule.name(), "facebook-tls: spec.egress[0].toPorts[0]");
    assert_eq!(
        rule.terminating_tls()
            .map(|s| (s.namespace.as_str(), s.name.as_str())),
        Some(("kube-system", "facebook-tls-data"))
    );
    assert!(request(&policy, "www.facebook.com", "/", &[]).is_allow());
    assert!(request(&policy, "www.facebook.com", "/cucumber", &[]).is_allow());
    let paths = notice_paths(&notices);
    assert!(paths.contains(&"spec.endpointSelector"), "{paths:?}");
    assert!(
        paths.contains(&"spec.egress[1].toPorts[0].rules.dns"),
        "{paths:?}"
    );
}

#[test]
fn blog_cucumber_policy_allows_dada_and_denies_dado_with_the_rule_set_named() {
    let (policy, _) = load("blog-facebook-tls-cucumber.yaml");
    // curl https://www.facebook.com/cucumber -H dada:dada → through to the origin (its 404).
    let allowed = request(
        &policy,
        "www.facebook.com",
        "/cucumber",
        &[("dada", "dada")],
    );
    let RequestVerdict::Allow {
        rule: Some(rule),
        edits,
    } = allowed
    else {
        panic!("dada:dada must be allowed, got {allowed:?}");
    };
    assert!(edits.is_empty());
    assert_eq!(
        policy.rule(rule).unwrap().name(),
        "facebook-tls: spec.egress[0].toPorts[0]"
    );
    // -H dada:dado → 403 from the proxy, naming the rule set.
    let denied = request(
        &policy,
        "www.facebook.com",
        "/cucumber",
        &[("dada", "dado")],
    );
    let RequestVerdict::Deny {
        reason: DenyReason::PolicyDenied,
        rule_set: Some(rule_set),
    } = denied
    else {
        panic!("dada:dado must be denied by policy, got {denied:?}");
    };
    assert_eq!(
        policy.rule(rule_set).unwrap().name(),
        "facebook-tls: spec.egress[0].toPorts[0]"
    );
    // No header, other path, a longer path: denied.
    for (path, extra) in [
        ("/cucumber", &[][..]),
        ("/", &[("dada", "dada")][..]),
        ("/cucumberX", &[("dada", "dada")][..]),
        ("/cucumber/", &[("dada", "dada")][..]),
    ] {
        assert!(
            !request(&policy, "www.facebook.com", path, extra).is_allow(),
            "{path} {extra:?} must be denied"
        );
    }
}

#[test]
fn blog_policy_refuses_other_hosts_and_ports_at_the_connection() {
    let (policy, _) = load("blog-facebook-tls-cucumber.yaml");
    for (host, port) in [
        ("www.example.com", 443),
        ("facebook.com", 443),
        ("m.facebook.com", 443),
        ("www.facebook.com", 80),
        ("www.facebook.com", 8443),
        // The DNS port rule is not applied (tlsgate is not a DNS proxy): port 53 stays closed.
        ("www.facebook.com", 53),
        ("dns.google", 53),
    ] {
        let conn = policy.decide_connection(host, port);
        assert_eq!(conn.action, TlsAction::Deny, "{host}:{port}");
        assert_eq!(
            conn.deny_reason(),
            Some(DenyReason::NoRule),
            "{host}:{port}"
        );
    }
    assert_eq!(
        policy.decide_connection("WWW.Facebook.COM.", 443).action,
        TlsAction::Bump
    );
}

#[test]
fn blog_policy_denies_a_request_fronted_to_another_host() {
    let (policy, _) = load("blog-facebook-tls-cucumber.yaml");
    let headers = headers(&[("dada", "dada")]);
    let facts = RequestFacts {
        method: "GET",
        path: "/cucumber",
        host: "www.instagram.com",
        headers: &headers,
    };
    assert_eq!(
        policy.decide_request("www.facebook.com", 443, &facts),
        RequestVerdict::Deny {
            reason: DenyReason::HostSniMismatch,
            rule_set: None
        }
    );
}

#[test]
fn cilium_docs_example_loads_unchanged_in_both_shapes_and_allows_every_request() {
    for file in [
        "cilium-l7-visibility-tls.yaml",
        "cilium-l7-visibility-tls.spec-description.yaml",
    ] {
        let (policy, notices) = load(file);
        let conn = policy.decide_connection("artii.herokuapp.com", 443);
        assert_eq!(conn.action, TlsAction::Bump, "{file}");
        assert!(conn.inspect_http, "{file}: `http: [{{}}]` is an HTTP rule");
        let rule = policy.rule(conn.rule.unwrap()).unwrap();
        assert_eq!(rule.name(), "l7-visibility-tls: spec.egress[0].toPorts[0]");
        for path in ["/fonts_list", "/make?text=cilium&font=univers"] {
            assert!(
                request(&policy, "artii.herokuapp.com", path, &[]).is_allow(),
                "{file} {path}"
            );
        }
        assert_eq!(
            policy.decide_connection("api.github.com", 443).action,
            TlsAction::Deny
        );
        let paths = notice_paths(&notices);
        assert!(
            paths.contains(&"spec.endpointSelector"),
            "{file}: {paths:?}"
        );
        assert!(
            paths.contains(&"spec.egress[1].toPorts[0].rules.dns"),
            "{file}: {paths:?}"
        );
        assert!(
            paths.contains(&"spec.egress[0].toPorts[0].terminatingTLS.secret"),
            "unmapped secrets say what tlsgate does instead: {paths:?}"
        );
    }
}
