//! `tlsgate policy test` (the dry run users put in their CI) agrees with the running proxy: a
//! sample of requests is decided by both real binaries — `policy test` by its exit code, `run` by
//! whether curl through it gets a 403 from the proxy — and every answer must match.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tlsgate_testkit::{ChildGuard, TestCa, spawn_https_origin};

const NAME: &str = "localhost";

fn policy(port: u16) -> String {
    format!(
        r#"default: deny
rules:
  - name: api
    match: {NAME}
    ports: [{port}]
    tls: bump
    http:
      - {{method: GET, path: /a}}
      - {{method: POST, path: /b, headers: ["x-key: ok"]}}
      - {{method: "GET|DELETE", path: "/items/[0-9]+"}}
      - {{path: /open/.*, headers: [x-trace]}}
"#
    )
}

/// Starts `tlsgate run` with an explicit intercept listener enforcing `policy.yaml` in `dir`; returns
/// the guard and the proxy address it printed.
fn start_proxy(dir: &Path, public_pem: &Path) -> (ChildGuard, SocketAddr) {
    let ca_dir = dir.join("ca");
    let status = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(["ca", "init", "--dir"])
        .arg(&ca_dir)
        .stdout(Stdio::null())
        .status()
        .expect("tlsgate ca init");
    assert!(status.success());
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "allow_destinations: [127.0.0.0/8]\nlisteners:\n  - name: proxy\n    kind: intercept\n    listen: 127.0.0.1:0\n    ca: {{dir: {}}}\n    upstream_ca: {}\n    policy: policy.yaml\n",
            ca_dir.display(),
            public_pem.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsgate"));
    child
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(&mut child).expect("tlsgate run");
    let stdout = guard.child_mut().stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = loop {
        assert!(Instant::now() < deadline, "tlsgate run printed no listener");
        let line = lines.next().expect("tlsgate run exited").expect("stdout");
        if let Some(addr) = line.strip_prefix("listening: proxy ") {
            break addr.trim().parse().expect("an address");
        }
    };
    (guard, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_test_agrees_with_the_running_proxy_on_a_sample_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let public = TestCa::new("public test CA");
    let public_pem = public.write_cert_pem(&dir.path().join("public.pem"));
    let origin = spawn_https_origin("api", &public.issue(&[NAME])).await;
    let port = origin.addr.port();
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy(port)).unwrap();
    let (_proxy, proxy_addr) = start_proxy(dir.path(), &public_pem);
    let ca_pem = dir.path().join("ca/ca.pem");

    let methods = ["GET", "POST", "DELETE"];
    let paths = ["/a", "/b", "/items/42", "/items/x", "/open/thing", "/c"];
    let headers: [&[&str]; 4] = [&[], &["x-key: ok"], &["x-key: bad"], &["x-trace: 1"]];
    let (mut allowed, mut denied) = (0, 0);
    for method in methods {
        for path in paths {
            for extra in headers {
                let url = format!("https://{NAME}:{port}{path}");
                let mut dry = Command::new(env!("CARGO_BIN_EXE_tlsgate"));
                dry.args(["policy", "test", "--policy"])
                    .arg(&policy_path)
                    .args(["--request", &format!("{method} {url}")]);
                for header in extra {
                    dry.args(["-H", header]);
                }
                let dry = tokio::task::spawn_blocking(move || dry.output())
                    .await
                    .unwrap()
                    .unwrap();
                let dry_allows = match dry.status.code() {
                    Some(0) => true,
                    Some(1) => false,
                    other => panic!(
                        "policy test failed ({other:?}): {}",
                        String::from_utf8_lossy(&dry.stderr)
                    ),
                };
                let mut curl = Command::new("curl");
                curl.args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %header{x-tlsgate-reason}",
                ])
                .args(["-x", &format!("http://{proxy_addr}"), "--cacert"])
                .arg(&ca_pem)
                .args(["-X", method, &url]);
                for header in extra {
                    curl.args(["-H", header]);
                }
                let live = tokio::task::spawn_blocking(move || curl.output())
                    .await
                    .unwrap()
                    .unwrap();
                let live_out = String::from_utf8_lossy(&live.stdout).into_owned();
                // A refusal by the proxy is a 403 carrying tlsgate's reason header; anything the origin
                // answers (200, 404, ...) was allowed through.
                let live_allows = !(live_out.starts_with("403 ") && live_out.trim_end().len() > 4);
                assert_eq!(
                    dry_allows,
                    live_allows,
                    "{method} {url} {extra:?}: policy test says {}, the proxy said {live_out:?}\n{}",
                    if dry_allows { "allow" } else { "deny" },
                    String::from_utf8_lossy(&dry.stdout)
                );
                if dry_allows {
                    allowed += 1
                } else {
                    denied += 1
                }
            }
        }
    }
    eprintln!(
        "policy test and the running proxy agreed on {} requests ({allowed} allowed, {denied} denied)",
        allowed + denied
    );
    assert!(
        allowed >= 5 && denied >= 5,
        "the sample covers both verdicts ({allowed}/{denied})"
    );
}
