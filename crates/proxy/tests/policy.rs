//! L7 policy through the interceptor with real curl: the blog's www.facebook.com sequence and
//! Cilium's l7-visibility-tls.yaml loaded unchanged, header rewriting seen by the origin, Host/SNI
//! consistency over HTTP/1.1 and HTTP/2, and hot reload under load.
//!
//! The policies name port 443, so origins listen on 127.0.0.N:443 (one address per test): binding
//! it needs root, like the end-to-end tests (CI runs as root; `TLSGATE_SKIP_E2E=1` skips loudly).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tlsgate_proxy::config::{CertStrategy, Listener, ListenerKind};
use tlsgate_proxy::policy::PolicySlot;
use tlsgate_testkit::{Origin, TestCa, spawn_https_origin_at};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/testdata");

fn should_run() -> bool {
    tlsgate_testkit::e2e_preflight().unwrap_or_else(|message| panic!("{message}"))
}

/// An origin for `names` on `ip:443`, its CA, and an explicit interceptor enforcing `policy_file`
/// whose DNS answers `ip` for every name.
struct Setup {
    _origin: Origin,
    public_pem: PathBuf,
    ca_pem: PathBuf,
    proxy: Running,
    dir: tempfile::TempDir,
}

async fn setup(ip: [u8; 4], names: &[&str], policy_file: &Path) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let public = TestCa::new("public test CA");
    let public_pem = public.write_cert_pem(&dir.path().join("public.pem"));
    let origin =
        spawn_https_origin_at(SocketAddr::from((ip, 443)), "origin", &public.issue(names)).await;
    let (ca, ca_pem) = interception_ca(dir.path());
    let (slot, _notices) = PolicySlot::load(policy_file.to_owned(), Default::default()).unwrap();
    let listener = explicit_interceptor(
        ca,
        public.cert_der(),
        CertStrategy::DownstreamFirst,
        Vec::new(),
        Some(Arc::new(slot)),
    );
    let mut config = config(vec![Listener {
        name: "proxy".into(),
        listen: any_port(),
        kind: ListenerKind::Intercept(listener),
    }]);
    config.dns_server = Some(spawn_dns_answering(ip).await);
    let proxy = start(config).await;
    Setup {
        _origin: origin,
        public_pem,
        ca_pem,
        proxy,
        dir,
    }
}

struct Curl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn curl(setup: &Setup, extra: &[&str]) -> Curl {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "-x".into(),
        format!("http://{}", setup.proxy.addr("proxy")),
        "--cacert".into(),
        setup.ca_pem.to_str().unwrap().into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let output = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output())
        .await
        .unwrap()
        .expect("curl runs");
    Curl {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Replaces the policy file's content in one rename, as editors and config managers do.
fn write_policy(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blog_sequence_with_its_own_cilium_policies() {
    if !should_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("facebook-tls.yaml");
    std::fs::copy(format!("{TESTDATA}/blog-facebook-tls.yaml"), &policy).unwrap();
    let mut s = setup([127, 0, 0, 31], &["www.facebook.com"], &policy).await;
    // Step 1: GET allowed to www.facebook.com:443 → the origin's page through a minted certificate.
    let page = curl(&s, &["https://www.facebook.com/"]).await;
    assert!(
        page.stdout.starts_with("origin=origin") && page.stdout.ends_with("\n200"),
        "{} {}",
        page.stdout,
        page.stderr
    );
    // Step 2: the blog's next policy: GET /cucumber with `dada: dada` only.
    write_policy(
        &policy,
        &std::fs::read_to_string(format!("{TESTDATA}/blog-facebook-tls-cucumber.yaml")).unwrap(),
    );
    let reloaded = Instant::now();
    loop {
        let probe = curl(&s, &["https://www.facebook.com/"]).await;
        if probe.stdout.ends_with("\n403") {
            break;
        }
        assert!(
            reloaded.elapsed() < Duration::from_secs(1),
            "the new policy took effect after 1 s: {}",
            probe.stdout
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let allowed = curl(
        &s,
        &["-H", "dada: dada", "https://www.facebook.com/cucumber"],
    )
    .await;
    assert!(
        allowed.stdout.ends_with("\n404"),
        "404 from the origin: {}",
        allowed.stdout
    );
    assert!(
        allowed.stdout.contains("origin=origin: no such page"),
        "{}",
        allowed.stdout
    );
    let denied = curl(
        &s,
        &["-H", "dada: dado", "https://www.facebook.com/cucumber"],
    )
    .await;
    assert!(
        denied.stdout.ends_with("\n403"),
        "403 from the proxy: {}",
        denied.stdout
    );
    assert!(
        denied.stdout.contains("access denied by policy") && denied.stdout.contains("facebook-tls"),
        "{}",
        denied.stdout
    );
    let cucumber = |f: &tlsgate_proxy::flow::FlowRecord| {
        f.http
            .as_ref()
            .is_some_and(|h| h.url == "https://www.facebook.com/cucumber")
    };
    let flow = s
        .proxy
        .flow("403 flow", |f| cucumber(f) && f.status == Some(403))
        .await;
    assert_eq!(flow.reason, Some("policy_denied"));
    assert_eq!(flow.http.as_ref().unwrap().method, "GET");
    // A host not in the policy: refused at CONNECT, before any TLS (curl: proxy CONNECT aborted).
    let other = curl(&s, &["https://www.example.test/"]).await;
    assert_ne!(other.code, Some(0), "{}", other.stdout);
    assert!(other.stderr.contains("403"), "{}", other.stderr);
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciliums_l7_visibility_tls_example_loads_unchanged_and_drives_the_same_behaviour() {
    if !should_run() {
        return;
    }
    let policy = PathBuf::from(format!("{TESTDATA}/cilium-l7-visibility-tls.yaml"));
    let s = setup([127, 0, 0, 32], &["artii.herokuapp.com"], &policy).await;
    let page = curl(&s, &["https://artii.herokuapp.com/some/art?text=hi"]).await;
    assert!(
        page.stdout.ends_with("\n200") && page.stdout.contains("path=/some/art?text=hi"),
        "{} {}",
        page.stdout,
        page.stderr
    );
    let post = curl(
        &s,
        &[
            "-X",
            "POST",
            "--data",
            "x",
            "https://artii.herokuapp.com/echo",
        ],
    )
    .await;
    assert!(
        post.stdout.ends_with("\n200"),
        "`http: - {{}}` allows every request: {}",
        post.stdout
    );
    let other = curl(&s, &["https://www.example.test/"]).await;
    assert_ne!(other.code, Some(0));
    let _ = &s.public_pem;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_matches_add_replace_and_delete_reach_the_origin_and_host_must_match_sni() {
    if !should_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "Bearer s3cret-from-file").unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            r#"default: deny
rules:
  - match: api.example.test
    ports: [443]
    tls: bump
    http:
      - method: GET
        path: /headers
        headerMatches:
          - {{name: X-Added, value: added, mismatch: ADD}}
          - {{name: Authorization, value_file: {}, mismatch: REPLACE}}
          - {{name: X-Debug, value: never-sent, mismatch: DELETE}}
"#,
            secret.display()
        ),
    )
    .unwrap();
    let mut s = setup([127, 0, 0, 33], &["api.example.test"], &policy).await;
    let seen = curl(
        &s,
        &[
            "-H",
            "Authorization: Bearer client-token",
            "-H",
            "X-Debug: yes",
            "https://api.example.test/headers",
        ],
    )
    .await;
    assert!(
        seen.stdout.ends_with("\n200"),
        "{} {}",
        seen.stdout,
        seen.stderr
    );
    let headers = seen.stdout.to_ascii_lowercase();
    assert!(headers.contains("x-added: added"), "ADD: {headers}");
    assert!(
        headers.contains("authorization: bearer s3cret-from-file"),
        "REPLACE: {headers}"
    );
    assert!(
        !headers.contains("client-token"),
        "REPLACE removed the client's value: {headers}"
    );
    assert!(!headers.contains("x-debug"), "DELETE: {headers}");
    // Domain fronting: the connection was allowed for api.example.test, the request names another.
    for http in ["--http1.1", "--http2"] {
        let fronted = curl(
            &s,
            &[
                http,
                "-H",
                "Host: other.example.test",
                "https://api.example.test/headers",
            ],
        )
        .await;
        assert!(
            fronted.stdout.ends_with("\n403"),
            "{http}: {}",
            fronted.stdout
        );
        let flow = s
            .proxy
            .flow("mismatch", |f| f.reason == Some("host_sni_mismatch"))
            .await;
        assert_eq!(flow.name.as_deref(), Some("api.example.test"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_request_both_policies_allow() {
    if !should_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let with = |extra: &str| {
        format!(
            "default: deny\nrules:\n  - match: load.example.test\n    ports: [443]\n    tls: bump\n    http:\n      - {{method: GET, path: /a}}\n      - {{method: GET, path: {extra}}}\n"
        )
    };
    std::fs::write(&policy, with("/b")).unwrap();
    let s = Arc::new(setup([127, 0, 0, 34], &["load.example.test"], &policy).await);
    // Four clients request /a (allowed by both policies) in a bounded loop while the policy changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (s, stop, ok, failed) = (s.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let reply = curl(&s, &["https://load.example.test/a"]).await;
                    let counter = if reply.stdout.ends_with("\n200") {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        curl(&s, &["https://load.example.test/c"])
            .await
            .stdout
            .ends_with("\n403")
    );
    write_policy(&policy, &with("/c"));
    let written = Instant::now();
    let took = loop {
        if curl(&s, &["https://load.example.test/c"])
            .await
            .stdout
            .ends_with("\n200")
        {
            break written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "the new policy never took effect"
        );
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "hot reload: /c allowed {took:?} after the write; {ok} requests to /a succeeded, {failed} failed"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(failed, 0);
    assert!(ok > 10, "the load ran ({ok} requests)");
    assert!(
        curl(&s, &["https://load.example.test/b"])
            .await
            .stdout
            .ends_with("\n403"),
        "the old rule is gone"
    );
}
