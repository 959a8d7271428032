//! Reading both formats: every error at once with its key path; every Cilium field tlsgate
//! does not apply reported as a notice with file, document and key path; secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderValue};
use tlsgate_policy::{
    EditOutcome, Format, LoadOptions, MismatchAction, Notice, Policy, PolicyError, RequestFacts,
    RequestVerdict, TlsAction, detect_format, load_file_with, load_str,
};

fn load(yaml: &str) -> Result<(Policy, Vec<Notice>), Vec<PolicyError>> {
    load_str(yaml, "p.yaml", Path::new("."), &LoadOptions::default())
}

fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("must be refused:\n{yaml}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn notices(yaml: &str) -> Vec<Notice> {
    match load(yaml) {
        Ok((_, notices)) => notices,
        Err(errors) => panic!("{errors:#?}"),
    }
}

fn has(notices: &[Notice], document: usize, path: &str, words: &str) -> bool {
    notices
        .iter()
        .any(|n| n.document == document && n.path == path && n.reason.contains(words))
}

#[test]
fn tlsgate_format_reports_every_error_at_once_with_its_key_path() {
    let got = errors(
        r#"
default: maybe
rules:
  - match: "*.example.com"
    ports: [0, "9-1", 443]
    tls: bumpp
    colour: red
  - pattern: "a.**.com"
    http:
      - {method: "GET(", path: /ok, hedaers: [x]}
  - ports: [443]
  - {match: ok.example.com, tls: splice, http: [{method: GET}]}
  - {match: ok.example.com, http: []}
  - {match: ok.example.com, http: [{headers: ["bad name: x"]}]}
extra: 1
"#,
    );
    let expected = [
        "p.yaml (document 1): default: \"maybe\" is not one of: deny, allow",
        "p.yaml (document 1): rules[0].match: invalid name \"*.example.com\": `*` is not allowed in an exact name (use a pattern)",
        "p.yaml (document 1): rules[0].ports[0]: invalid port \"0\"",
        "p.yaml (document 1): rules[0].ports[1]: invalid port \"9-1\"",
        "p.yaml (document 1): rules[0].tls: \"bumpp\" is not one of: bump, splice, deny",
        "p.yaml (document 1): rules[0].colour: unknown key `colour`",
        "p.yaml (document 1): rules[1].pattern: invalid name \"a.**.com\"",
        "p.yaml (document 1): rules[1].http[0].method: invalid regular expression",
        "p.yaml (document 1): rules[1].http[0].hedaers: unknown key `hedaers`",
        "p.yaml (document 1): rules[2]: missing key `match` or `pattern`",
        "p.yaml (document 1): rules[3].tls: http rules need `tls: bump` (a spliced connection",
        "p.yaml (document 1): rules[4].http: an empty `http` list",
        "p.yaml (document 1): rules[5].http[0].headers[0]: invalid header name \"bad name\"",
        "p.yaml (document 1): extra: unknown key `extra`",
    ];
    for want in expected {
        assert!(
            got.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), expected.len(), "{}", got.join("\n"));
}

#[test]
fn yaml_and_shape_errors_are_reported_not_panicked() {
    assert!(errors("rules: [")[0].contains("not valid YAML"));
    assert!(errors("")[0].contains("no policy document"));
    assert!(errors("- a\n- b\n")[0].contains("expected a mapping, found a list"));
    assert!(errors("rules: {}\n")[0].contains("rules: expected a list, found a mapping"));
    assert!(errors("default: deny\n")[0].contains("missing key `rules`"));
    assert!(errors("rules: []\n---\nrules: []\n")[0].contains("document 2"));
}

#[test]
fn format_is_detected_by_kind() {
    assert_eq!(
        detect_format("kind: CiliumNetworkPolicy\n"),
        Some(Format::Cilium)
    );
    assert_eq!(detect_format("---\n---\nkind: X\n"), Some(Format::Cilium));
    assert_eq!(detect_format("rules: []\n"), Some(Format::Tlsgate));
    assert_eq!(detect_format(""), None);
    let got = errors("apiVersion: v1\nkind: ConfigMap\ndata: {}\n");
    assert!(
        got[0].contains("kind: kind \"ConfigMap\" is not a policy"),
        "{got:?}"
    );
}

const NOTICED: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: first
  namespace: default
spec:
  endpointSelector:
    matchLabels: {app: web}
  ingress:
    - fromEndpoints: [{}]
  egress:
    - toEndpoints:
        - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system}
      toPorts:
        - ports: [{port: "53", protocol: UDP}]
          rules:
            dns: [{matchPattern: "*"}]
    - toFQDNs: [{matchPattern: "*.github.com"}]
      toEndpoints: [{matchLabels: {app: db}}]
      toPorts:
        - ports: [{port: "443"}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: second}
specs:
  - nodeSelector: {}
    egress:
      - toCIDR: [10.0.0.0/8]
      - toFQDNs: [{matchName: api.example.com}]
        toPorts:
          - ports: [{port: "443", protocol: TCP}, {port: "53", protocol: UDP}]
            rules:
              kafka: [{topic: x}]
          - ports: [{port: "8443"}]
            listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: x}, name: y}
          - ports: [{port: "9443", endPort: 9445}]
    egressDeny:
      - toCIDR: [10.1.0.0/16]
"#;

#[test]
fn cilium_fields_not_applied_are_notices_with_document_and_key_path() {
    let notices = notices(NOTICED);
    let expect = [
        (
            0,
            "spec.endpointSelector",
            "ignored: tlsgate has no endpoints; the policy applies to all traffic through this listener",
        ),
        (0, "spec.ingress", "egress only"),
        (
            0,
            "spec.egress[0].toEndpoints",
            "cannot evaluate this selector",
        ),
        (0, "spec.egress[0]", "this egress rule is not applied"),
        (
            0,
            "spec.egress[1].toEndpoints",
            "cannot evaluate this selector",
        ),
        (1, "specs[0].nodeSelector", "no endpoints"),
        (1, "specs[0].egress[0].toCIDR", "cannot evaluate"),
        (
            1,
            "specs[0].egress[1].toPorts[0].ports[1].protocol",
            "TCP only, not UDP",
        ),
        (
            1,
            "specs[0].egress[1].toPorts[0].rules.kafka",
            "whole port rule",
        ),
        (
            1,
            "specs[0].egress[1].toPorts[1].listener",
            "whole port rule",
        ),
        (1, "specs[0].egressDeny", "deny rules"),
    ];
    for (doc, path, words) in expect {
        assert!(
            has(&notices, doc, path, words),
            "missing ({doc}, {path}, {words}) in {notices:#?}"
        );
    }
    // The DNS port rule of document 1 is dropped with the rest of its egress rule (it has
    // only endpoint selectors), so no separate rules.dns notice there.
    assert!(notices.iter().all(|n| !n.file.is_empty()));
    let shown = notices[0].to_string();
    assert!(
        shown.starts_with("p.yaml (document 1): spec.endpointSelector: ignored"),
        "{shown}"
    );
}

#[test]
fn cilium_rules_not_applied_allow_less_never_more() {
    let (policy, _) = load(NOTICED).unwrap();
    let names: Vec<_> = policy.rules().iter().map(|r| r.name().to_owned()).collect();
    assert_eq!(
        names,
        [
            "first: spec.egress[1].toPorts[0]",
            "second: specs[0].egress[1].toPorts[2]"
        ]
    );
    assert_eq!(
        policy.decide_connection("x.github.com", 443).action,
        TlsAction::Splice
    );
    assert_eq!(
        policy.decide_connection("x.github.com", 80).action,
        TlsAction::Deny
    );
    // Kafka and listener port rules are not applied: their ports stay closed.
    for port in [443, 8443, 53] {
        assert_eq!(
            policy.decide_connection("api.example.com", port).action,
            TlsAction::Deny,
            "{port}"
        );
    }
    for port in [9443, 9444, 9445] {
        assert_eq!(
            policy.decide_connection("api.example.com", port).action,
            TlsAction::Splice,
            "{port}"
        );
    }
    assert_eq!(
        policy.decide_connection("api.example.com", 9446).action,
        TlsAction::Deny
    );
}

#[test]
fn cilium_http_without_terminating_tls_bumps_and_says_so() {
    let yaml = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: plain}
spec:
  egress:
    - toFQDNs: [{matchName: api.example.com}]
      toPorts:
        - ports: [{port: "443", protocol: TCP}]
          rules:
            http: [{method: GET, path: "/v1/.*"}]
    - toEntities: [world]
      toPorts:
        - ports: [{port: "80"}]
"#;
    let (policy, notices) = load(yaml).unwrap();
    assert!(has(
        &notices,
        0,
        "spec.egress[0].toPorts[0].rules.http",
        "bumps these connections"
    ));
    let v = policy.decide_connection("api.example.com", 443);
    assert_eq!((v.action, v.inspect_http), (TlsAction::Bump, true));
    assert_eq!(
        policy.decide_connection("anything.test", 80).action,
        TlsAction::Splice
    );
    assert_eq!(
        policy.decide_connection("anything.test", 443).action,
        TlsAction::Deny
    );
}

#[test]
fn cilium_server_names_narrow_the_rule() {
    let yaml = r#"
kind: CiliumNetworkPolicy
metadata: {name: sni}
spec:
  egress:
    - toPorts:
        - ports: [{port: "443"}]
          serverNames: [one.example.com, "*.two.example.com"]
"#;
    let (policy, _) = load(yaml).unwrap();
    assert_eq!(
        policy.decide_connection("one.example.com", 443).action,
        TlsAction::Splice
    );
    assert_eq!(
        policy.decide_connection("a.two.example.com", 443).action,
        TlsAction::Splice
    );
    assert_eq!(
        policy.decide_connection("three.example.com", 443).action,
        TlsAction::Deny
    );
}

#[test]
fn cilium_errors_name_document_and_path() {
    let got = errors(
        "kind: CiliumNetworkPolicy\nspec: {egress: [{toFQDNs: [{matchName: '*.x.com'}]}]}\n---\nkind: CiliumNetworkPolicy\nspec:\n  egress:\n    - toFQDNs: [{matchName: a.com}]\n      toPorts: [{ports: [{port: '70000'}], rules: {http: [{path: '('}]}}]\n---\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\n",
    );
    let expected = [
        "p.yaml (document 1): spec.egress[0].toFQDNs[0].matchName: invalid name \"*.x.com\"",
        "p.yaml (document 2): spec.egress[0].toPorts[0].ports[0].port: invalid port \"70000\"",
        "p.yaml (document 2): spec.egress[0].toPorts[0].rules.http[0].path: invalid regular expression",
        "p.yaml (document 3): the document has neither `spec` nor `specs`",
    ];
    for want in expected {
        assert!(
            got.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in\n{}",
            got.join("\n")
        );
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tlsgate-policy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn header_matches_edit_requests_and_secrets_never_show() {
    let dir = temp_dir("secrets");
    std::fs::write(dir.join("token"), "s3cr3t-value\n").unwrap();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(
        &policy_file,
        r#"
rules:
  - match: api.example.com
    http:
      - path: /edit
        headerMatches:
          - {name: Authorization, value_file: token, mismatch: REPLACE}
          - {name: X-Added, value: "yes", mismatch: ADD}
          - {name: X-Internal, value: "never", mismatch: DELETE}
          - {name: X-Watched, value: "v", mismatch: LOG}
      - path: /gate
        headerMatches:
          - {name: X-Key, value_file: token}
"#,
    )
    .unwrap();
    let (policy, notices) = load_file_with(&policy_file, &LoadOptions::default()).unwrap();
    assert!(notices.is_empty());
    let debug = format!("{policy:?}");
    assert!(
        !debug.contains("s3cr3t"),
        "the secret leaked into Debug: {debug}"
    );
    assert!(debug.contains("secret from"), "{debug}");

    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer client"));
    headers.insert("x-internal", HeaderValue::from_static("leak"));
    headers.insert("x-added", HeaderValue::from_static("first"));
    let facts = RequestFacts {
        method: "GET",
        path: "/edit",
        host: "api.example.com",
        headers: &headers,
    };
    let RequestVerdict::Allow { edits, .. } = policy.decide_request("api.example.com", 443, &facts)
    else {
        panic!("allowed");
    };
    let actions: Vec<_> = edits.iter().map(|e| e.mismatch).collect();
    assert_eq!(
        actions,
        [
            MismatchAction::Replace,
            MismatchAction::Add,
            MismatchAction::Delete,
            MismatchAction::Log
        ]
    );
    let outcomes: Vec<_> = edits.iter().map(|e| e.apply(&mut headers)).collect();
    assert_eq!(
        outcomes,
        [
            EditOutcome::Replaced,
            EditOutcome::Added,
            EditOutcome::Deleted,
            EditOutcome::Logged
        ]
    );
    assert_eq!(headers["authorization"], "s3cr3t-value");
    assert!(headers["authorization"].is_sensitive());
    assert_eq!(
        headers.get_all("x-added").iter().collect::<Vec<_>>(),
        ["first", "yes"]
    );
    assert!(!headers.contains_key("x-internal"));
    assert!(!headers.contains_key("x-watched"));
    // A second pass finds everything matching: edits are idempotent where they can be.
    assert_eq!(edits[0].apply(&mut headers), EditOutcome::Matched);
    assert_eq!(edits[1].apply(&mut headers), EditOutcome::Matched);

    // Without a mismatch action the secret header is a condition.
    let gate = |value: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-key", HeaderValue::from_static(value));
        let facts = RequestFacts {
            method: "GET",
            path: "/gate",
            host: "api.example.com",
            headers: &headers,
        };
        policy
            .decide_request("api.example.com", 443, &facts)
            .is_allow()
    };
    assert!(gate("s3cr3t-value"));
    assert!(!gate("wrong"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cilium_header_secrets_map_to_files_or_fall_back_to_value() {
    let dir = temp_dir("cilium-secrets");
    std::fs::write(dir.join("api-key"), "from-file").unwrap();
    let yaml = r#"
kind: CiliumNetworkPolicy
metadata: {name: keys}
spec:
  egress:
    - toFQDNs: [{matchName: api.example.com}]
      toPorts:
        - ports: [{port: "443"}]
          rules:
            http:
              - headerMatches:
                  - {name: X-Api-Key, secret: {namespace: ns, name: api-key}, mismatch: REPLACE}
                  - {name: X-Fallback, secret: {namespace: ns, name: missing}, value: fb, mismatch: ADD}
"#;
    let options = LoadOptions {
        secrets: BTreeMap::from([("ns/api-key".to_owned(), dir.join("api-key"))]),
    };
    let (policy, notices) = load_str(yaml, "k.yaml", &dir, &options).unwrap();
    assert!(has(
        &notices,
        0,
        "spec.egress[0].toPorts[0].rules.http[0].headerMatches[1].secret",
        "not mapped"
    ));
    let edits = policy.rules()[0].http()[0].edits();
    let mut headers = HeaderMap::new();
    for edit in edits {
        edit.apply(&mut headers);
    }
    assert_eq!(headers["x-api-key"], "from-file");
    assert_eq!(headers["x-fallback"], "fb");
    // Unmapped without a fallback value: an error naming how to map it, never a silent pass.
    let got = match load_str(
        yaml.replace("value: fb, ", "").as_str(),
        "k.yaml",
        &dir,
        &options,
    ) {
        Err(errors) => errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Ok(_) => panic!("must be refused"),
    };
    assert!(
        got[0].contains("secret ns/missing is not mapped"),
        "{got:?}"
    );
    // A missing secret file is an error naming the file, not its content.
    std::fs::remove_file(dir.join("api-key")).unwrap();
    let got = load_str(yaml, "k.yaml", &dir, &options).unwrap_err();
    assert!(
        got[0].to_string().contains("cannot read secret file"),
        "{}",
        got[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn edits_that_set_a_header_need_a_value() {
    let got = errors(
        "rules:\n  - match: a.com\n    http: [{headerMatches: [{name: X, mismatch: ADD}]}]\n",
    );
    assert!(got[0].contains("mismatch ADD needs a value"), "{got:?}");
    let got = errors(
        "rules:\n  - match: a.com\n    http: [{headerMatches: [{name: X, value: a, value_file: f}]}]\n",
    );
    assert!(
        got[0].contains("`value_file` cannot be combined with `value`"),
        "{got:?}"
    );
    let got = errors(
        "rules:\n  - match: a.com\n    http: [{headerMatches: [{name: X, value: a, mismatch: DROP}]}]\n",
    );
    assert!(
        got[0].contains("\"DROP\" is not one of: LOG, ADD, DELETE, REPLACE"),
        "{got:?}"
    );
}
