//! `tlsgate observe` against a running `tlsgate run` with an admin listener: `--last` with a filter
//! prints exactly the matching records as JSON, the compact line reads as documented, and
//! `--follow` shows a new request promptly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the child on drop so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

/// `tlsgate run` with an intercepting proxy that bumps `allowed.test` and denies everything
/// else, and the admin API on an ephemeral port: (guard, proxy address, admin address).
fn start(dir: &Path) -> (ChildGuard, SocketAddr, SocketAddr) {
    let ca_dir = dir.join("ca");
    let init = tlsgate(&["ca", "init", "--dir", ca_dir.to_str().unwrap()]);
    assert!(init.status.success(), "{init:?}");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: proxy\n    kind: intercept\n    listen: 127.0.0.1:0\n    ca: {{dir: {}}}\n    rules: [{{match: allowed.test, action: bump}}]\n    default_action: deny\nadmin:\n  listen: 127.0.0.1:0\nflows:\n  ring_size: 100\n",
            ca_dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tlsgate run");
    let mut child = ChildGuard(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut addr = |name: &str| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let prefix = format!("listening: {name} ");
        line.trim()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .parse::<SocketAddr>()
            .unwrap()
    };
    let proxy = addr("proxy");
    let admin = addr("admin");
    (child, proxy, admin)
}

fn curl_denied(proxy: SocketAddr, path: &str) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-x", &format!("http://{proxy}")])
        .arg(format!("http://denied.test{path}"))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
}

fn observe(admin: SocketAddr, extra: &[&str]) -> String {
    let server = admin.to_string();
    let mut args = vec!["observe", "--server", &server];
    args.extend_from_slice(extra);
    let out = tlsgate(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn observe_prints_filtered_records_and_follows_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, proxy, admin) = start(dir.path());
    curl_denied(proxy, "/cucumber");
    // A CONNECT to a denied host: a connection-level refusal, not an HTTP exchange with a status.
    let connect = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-x", &format!("http://{proxy}")])
        .arg("https://denied.test/")
        .output()
        .expect("curl runs");
    assert!(!connect.status.success(), "the CONNECT is refused");
    let deadline = Instant::now() + Duration::from_secs(10);
    while observe(admin, &["--last", "10", "-o", "json"])
        .lines()
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "records did not reach the ring");
        std::thread::sleep(Duration::from_millis(50));
    }

    // --http-status 4+: exactly the REQUEST and RESPONSE flows of the refused exchange.
    let json = observe(
        admin,
        &["--last", "10", "--http-status", "4+", "-o", "json"],
    );
    let flows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["flow"].clone())
        .collect();
    assert_eq!(flows.len(), 2, "{json}");
    assert_eq!(flows[0]["l7"]["type"], "REQUEST");
    assert_eq!(flows[1]["l7"]["type"], "RESPONSE");
    for f in &flows {
        assert_eq!(f["verdict"], "DROPPED");
        assert_eq!(f["l7"]["http"]["url"], "http://denied.test/cucumber");
        assert_eq!(f["l7"]["http"]["method"], "GET");
    }
    assert_eq!(flows[1]["l7"]["http"]["code"], 403);
    // A filter nothing matches prints nothing.
    assert_eq!(observe(admin, &["--http-method", "POST", "-o", "json"]), "");

    // Compact: one line per flow, as docs/flows.md shows (no colour: stdout is a pipe).
    let compact = observe(admin, &["--last", "2", "--verdict", "dropped"]);
    let lines: Vec<&str> = compact.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "an exchange (two flows) and a connection: {compact}"
    );
    // Past the time and the client's port, which vary.
    let after_client = |line: &str| {
        let (_, rest) = line
            .split_once(" 127.0.0.1:")
            .expect("time then the client");
        rest.split_once(' ').unwrap().1.to_owned()
    };
    assert_eq!(
        after_client(lines[0]),
        "-> denied.test http-request DROPPED (denied) GET http://denied.test/cucumber"
    );
    assert_eq!(
        after_client(lines[1]),
        "-> denied.test http-response DROPPED (denied) GET http://denied.test/cucumber => 403"
    );
    assert_eq!(
        after_client(lines[2]),
        "-> denied.test deny DROPPED (denied) bytes 0/0"
    );
    assert!(!compact.contains('\x1b'));

    // --follow prints a request made after it started, promptly.
    let follower = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args([
            "observe",
            "--server",
            &admin.to_string(),
            "-f",
            "--last",
            "1",
            "--http-status",
            "403",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut follower = ChildGuard(follower);
    let (tx, rx) = mpsc::channel();
    let out = follower.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // The newest matching record first (two flows): the follower is subscribed once they show.
    for _ in 0..2 {
        let old = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the last record");
        assert!(old.contains("http://denied.test/cucumber"), "{old}");
    }
    let sent = Instant::now();
    curl_denied(proxy, "/new");
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the follower prints the new request");
    assert!(line.contains("http://denied.test/new"), "{line}");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
}
