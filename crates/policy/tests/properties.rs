//! Random policies and random requests: loading and deciding never panic, decisions are
//! deterministic, and the outcome does not depend on the order of the rules (allow rules
//! are ORed and actions combine by precedence, both order-free).

use std::path::Path;

use http::HeaderMap;
use proptest::prelude::*;
use tlsgate_policy::{LoadOptions, Policy, RequestFacts, RequestVerdict, load_str};

const NAMES: &[&str] = &[
    "www.facebook.com",
    "facebook.com",
    "a.example.com",
    "b.a.example.com",
    "example.com",
    "API.Example.com.",
    "x-1.svc.test",
];
const PATTERNS: &[&str] = &[
    "*.example.com",
    "**.example.com",
    "x-*.svc.test",
    "*",
    "*.*.example.com",
];
const METHODS: &[&str] = &["GET", "POST", "GET|HEAD", "P.*", "[A-Z]+"];
const PATHS: &[&str] = &[
    "/",
    "/cucumber",
    "/cucumber.*",
    "/items/[0-9]+",
    "/(a|b)/.*",
];
const HEADERS: &[&str] = &["dada", "dada: dada", "x-mode: strict", "X-Token"];

#[derive(Debug, Clone)]
struct RuleSpec {
    select: (bool, usize),
    ports: Vec<u16>,
    tls: Option<usize>,
    http: Vec<(Option<usize>, Option<usize>, Vec<usize>)>,
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        (any::<bool>(), 0..7usize),
        prop::collection::vec(prop::sample::select(vec![80u16, 443, 8443]), 0..3),
        prop::option::of(0..3usize),
        prop::collection::vec(
            (
                prop::option::of(0..METHODS.len()),
                prop::option::of(0..PATHS.len()),
                prop::collection::vec(0..HEADERS.len(), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(select, ports, tls, http)| RuleSpec {
            select,
            ports,
            tls,
            http,
        })
}

fn yaml(default_allow: bool, rules: &[RuleSpec]) -> String {
    let mut out = format!(
        "default: {}\nrules:\n",
        if default_allow { "allow" } else { "deny" }
    );
    if rules.is_empty() {
        out = out.replace("rules:\n", "rules: []\n");
    }
    for rule in rules {
        let (exact, i) = rule.select;
        if exact {
            out.push_str(&format!("  - match: {:?}\n", NAMES[i % NAMES.len()]));
        } else {
            out.push_str(&format!(
                "  - pattern: {:?}\n",
                PATTERNS[i % PATTERNS.len()]
            ));
        }
        if !rule.ports.is_empty() {
            out.push_str(&format!("    ports: {:?}\n", rule.ports));
        }
        // With HTTP rules only bump is valid; without, any action.
        let tls = if rule.http.is_empty() {
            rule.tls.map(|t| ["bump", "splice", "deny"][t])
        } else {
            rule.tls.map(|_| "bump")
        };
        if let Some(tls) = tls {
            out.push_str(&format!("    tls: {tls}\n"));
        }
        if !rule.http.is_empty() {
            out.push_str("    http:\n");
            for (method, path, headers) in &rule.http {
                out.push_str("      - {");
                let mut fields = Vec::new();
                if let Some(m) = method {
                    fields.push(format!("method: {:?}", METHODS[*m]));
                }
                if let Some(p) = path {
                    fields.push(format!("path: {:?}", PATHS[*p]));
                }
                if !headers.is_empty() {
                    let list: Vec<_> = headers
                        .iter()
                        .map(|h| format!("{:?}", HEADERS[*h]))
                        .collect();
                    fields.push(format!("headers: [{}]", list.join(", ")));
                }
                out.push_str(&fields.join(", "));
                out.push_str("}\n");
            }
        }
    }
    out
}

fn compile(text: &str) -> Policy {
    match load_str(text, "random.yaml", Path::new("."), &LoadOptions::default()) {
        Ok((policy, _)) => policy,
        Err(errors) => panic!("generated policy refused:\n{text}\n{errors:#?}"),
    }
}

#[derive(Debug, Clone)]
struct Req {
    host: String,
    sni: String,
    port: u16,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
}

fn request() -> impl Strategy<Value = Req> {
    let host = prop_oneof![
        prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
        "[a-zA-Z0-9.:\\-\\[\\]]{0,24}",
    ];
    (
        host,
        prop::option::of(prop::sample::select(NAMES.to_vec())),
        prop::sample::select(vec![80u16, 443, 8443, 0, 65535]),
        prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "get", ""]),
        prop_oneof![
            "/[a-z0-9/]{0,12}",
            Just("/cucumber".to_owned()),
            Just("/items/42".to_owned())
        ],
        prop::collection::vec(
            prop::sample::select(vec![
                ("dada", "dada"),
                ("dada", "dado"),
                ("x-mode", "strict"),
                ("x-token", ""),
            ]),
            0..4,
        ),
    )
        .prop_map(|(host, sni, port, method, path, headers)| Req {
            sni: sni.map_or_else(|| host.clone(), str::to_owned),
            host,
            port,
            method,
            path,
            headers,
        })
}

/// The order-free part of a request verdict.
fn outcome(verdict: &RequestVerdict<'_>) -> String {
    match verdict {
        RequestVerdict::Allow { .. } => "allow".to_owned(),
        RequestVerdict::Deny { reason, .. } => reason.label().to_owned(),
    }
}

fn decide(policy: &Policy, req: &Req) -> (String, String) {
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        headers.append(*name, value.parse().unwrap());
    }
    let facts = RequestFacts {
        method: req.method,
        path: &req.path,
        host: &req.host,
        headers: &headers,
    };
    let conn = policy.decide_connection(&req.sni, req.port);
    let first = policy.decide_request(&req.sni, req.port, &facts);
    // Deterministic: the same inputs give the same verdicts, rule references included.
    assert_eq!(conn, policy.decide_connection(&req.sni, req.port));
    assert_eq!(first, policy.decide_request(&req.sni, req.port, &facts));
    if let Some(rule) = conn.rule {
        assert!(policy.rule(rule).unwrap().selects(&req.sni, req.port));
    }
    (
        format!("{:?} inspect={}", conn.action, conn.inspect_http),
        outcome(&first),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decisions_never_panic_are_deterministic_and_order_free(
        default_allow in any::<bool>(),
        rules in prop::collection::vec(rule_spec(), 0..6),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let policy = compile(&yaml(default_allow, &rules));
        let reversed: Vec<_> = rules.iter().rev().cloned().collect();
        let reversed = compile(&yaml(default_allow, &reversed));
        for req in &requests {
            prop_assert_eq!(decide(&policy, req), decide(&reversed, req), "{:?}", req);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in "\\PC{0,200}") {
        let _ = load_str(&text, "any.yaml", Path::new("."), &LoadOptions::default());
    }

    #[test]
    fn arbitrary_cilium_shaped_documents_never_panic(
        name in prop::sample::select(vec!["matchName", "matchPattern", "bogus"]),
        value in "[a-z*.]{0,12}",
        port in "[0-9a-z]{0,6}",
        proto in prop::sample::select(vec!["TCP", "UDP", "ANY", "ICMP", ""]),
        extra in prop::sample::select(vec!["toEndpoints: [{}]", "toCIDR: [1.2.3.4/32]", "icmps: []", "x: 1", ""]),
        l7 in prop::sample::select(vec!["http: [{}]", "dns: [{}]", "kafka: []", "http: [{method: '('}]", "http: []"]),
    ) {
        let text = format!(
            "kind: CiliumNetworkPolicy\nspec:\n  egress:\n    - toFQDNs: [{{{name}: '{value}'}}]\n      {extra}\n      toPorts:\n        - ports: [{{port: '{port}', protocol: '{proto}'}}]\n          rules: {{{l7}}}\n"
        );
        if let Ok((policy, _)) = load_str(&text, "c.yaml", Path::new("."), &LoadOptions::default()) {
            let _ = policy.decide_connection("a.b", 443);
        }
    }
}
