//! `tlsgate policy test|check` through the built binary, on the blog's facebook policy kept
//! verbatim in crates/policy/testdata: the dry run users put in their CI, judged by exit code
//! (0 allow, 1 deny, 2 error) and by what it prints.

use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/testdata")
        .join(name)
        .display()
        .to_string()
}

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn policy_test(file: &str, request: &str, extra: &[&str]) -> Output {
    let policy = testdata(file);
    let mut args = vec!["policy", "test", "--policy", &policy, "--request", request];
    args.extend_from_slice(extra);
    tlsgate(&args)
}

const BLOG: &str = "blog-facebook-tls-cucumber.yaml";
const RULE: &str = "\"facebook-tls: spec.egress[0].toPorts[0]\"";

#[test]
fn blog_request_with_dada_dada_is_allowed_with_exit_0() {
    let out = policy_test(
        BLOG,
        "GET https://www.facebook.com/cucumber",
        &["-H", "dada: dada"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!(
            "connection www.facebook.com:443: bump by rule {RULE}, HTTP rules apply"
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("allow by rule {RULE}")),
        "{printed}"
    );
    assert!(printed.trim_end().ends_with("verdict: allow"), "{printed}");
    assert!(
        printed.contains("spec.endpointSelector: ignored: tlsgate has no endpoints"),
        "notices are shown: {printed}"
    );
}

#[test]
fn blog_request_with_dada_dado_is_denied_with_exit_1_naming_the_rule_set() {
    let out = policy_test(
        BLOG,
        "GET https://www.facebook.com/cucumber",
        &["-H", "dada:dado"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!(
            "deny policy_denied by rule set {RULE}; the proxy answers 403"
        )),
        "{printed}"
    );
    assert!(printed.trim_end().ends_with("verdict: deny"), "{printed}");
}

#[test]
fn blog_paths_are_full_matches() {
    let out = policy_test(
        BLOG,
        "GET https://www.facebook.com/cucumberX",
        &["-H", "dada: dada"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn blog_other_host_is_refused_at_the_connection_with_exit_1() {
    let out = policy_test(BLOG, "GET https://www.example.com/", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains("connection www.example.com:443: deny by default: deny (no_rule)"),
        "{printed}"
    );
    assert!(printed.contains("answered 403 before any TLS"), "{printed}");
}

#[test]
fn blog_fronted_host_is_denied_as_host_sni_mismatch() {
    let out = policy_test(
        BLOG,
        "GET https://www.facebook.com/cucumber",
        &["-H", "dada: dada", "-H", "Host: www.instagram.com"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("deny host_sni_mismatch"),
        "{}",
        text(&out)
    );
    // --sni sets the connection's name; the URL's host stays the Host header.
    let out = policy_test(
        BLOG,
        "GET https://www.facebook.com/cucumber",
        &["-H", "dada: dada", "--sni", "www.instagram.com"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("connection www.instagram.com:443: deny"),
        "{}",
        text(&out)
    );
}

#[test]
fn explicit_port_in_the_url_is_the_connection_port() {
    let out = policy_test(
        BLOG,
        "GET https://www.facebook.com:8443/cucumber",
        &["-H", "dada: dada"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("connection www.facebook.com:8443: deny"),
        "{}",
        text(&out)
    );
}

#[test]
fn usage_and_policy_errors_exit_2() {
    for (request, words) in [
        ("GET", "expected 'METHOD URL'"),
        (
            "GET www.facebook.com/",
            "needs an http:// or https:// scheme",
        ),
    ] {
        let out = policy_test(BLOG, request, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(words), "{}", text(&out));
    }
    let out = policy_test(BLOG, "GET https://www.facebook.com/", &["-H", "no colon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = tlsgate(&[
        "policy",
        "test",
        "--policy",
        "/nonexistent/p.yaml",
        "--request",
        "GET https://a/",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot read the policy file"),
        "{}",
        text(&out)
    );
    let out = tlsgate(&["policy", "test", "--policy", &testdata(BLOG)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --request is a usage error: {}",
        text(&out)
    );
}

#[test]
fn invalid_policies_print_every_error_with_its_key_path_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("tlsgate-policy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "rules:\n  - match: a.example.com\n    tls: bumpp\n  - pattern: 'a.**.com'\n    http: [{path: '('}]\n",
    )
    .unwrap();
    let out = tlsgate(&["policy", "check", "--policy", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    for words in [
        "rules[0].tls: \"bumpp\"",
        "rules[1].pattern: invalid name",
        "rules[1].http[0].path: invalid regular expression",
        "3 error(s)",
    ] {
        assert!(all.contains(words), "missing {words:?}: {all}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_prints_rules_and_notices_of_the_cilium_docs_example() {
    let out = tlsgate(&[
        "policy",
        "check",
        "--policy",
        &testdata("cilium-l7-visibility-tls.yaml"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = stdout(&out);
    for words in [
        "Cilium format, 1 rule(s), default deny",
        "rule \"l7-visibility-tls: spec.egress[0].toPorts[0]\"",
        "names: artii.herokuapp.com",
        "ports: 443",
        "tls: bump",
        "terminatingTLS: kube-system/artii-tls-data (unmapped)",
        "http spec.egress[0].toPorts[0].rules.http[0]: every request",
        "spec.egress[1].toPorts[0].rules.dns: ignored: tlsgate is not a DNS proxy",
    ] {
        assert!(printed.contains(words), "missing {words:?}: {printed}");
    }
    let out = tlsgate(&[
        "policy",
        "check",
        "--policy",
        &testdata("cilium-l7-visibility-tls.yaml"),
        "--secret",
        "kube-system/artii-tls-data=/etc/tlsgate/artii",
    ]);
    assert!(
        stdout(&out).contains("terminatingTLS: kube-system/artii-tls-data -> /etc/tlsgate/artii"),
        "{}",
        text(&out)
    );
}
