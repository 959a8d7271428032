//! `tlsgate observe` against a running `tlsgate run` with an admin listener: `--last` with a filter
//! prints exactly the matching records as JSON, the compact line reads as documented, and
//! `--follow` shows a new request promptly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tlsgate_testkit::{ChildGuard, TlsgateRun};

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

/// `tlsgate run` with an intercepting proxy that bumps `allowed.test` and denies everything
/// else, and the admin API on an ephemeral port: (guard, proxy address, admin address).
fn start(dir: &Path) -> (TlsgateRun, SocketAddr, SocketAddr) {
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
    let run = TlsgateRun::quiet(Path::new(env!("CARGO_BIN_EXE_tlsgate")), &config, 2);
    let (proxy, admin) = (run.addr("proxy"), run.addr("admin"));
    (run, proxy, admin)
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

/// A compact line with its time (`Nov 22 18:20:01.123`) and the client's port, which vary,
/// replaced by `TIME` and `PORT`; panics unless the line starts with such a time.
fn shape(line: &str) -> String {
    let (time, rest) = line.split_at(19);
    let b = time.as_bytes();
    assert!(
        b[0].is_ascii_uppercase()
            && b[3] == b' '
            && b[6] == b' '
            && b[9] == b':'
            && b[15] == b'.'
            && b[16..].iter().all(u8::is_ascii_digit),
        "a time first: {line:?}"
    );
    let (before, after) = rest
        .split_once("127.0.0.1:")
        .unwrap_or_else(|| panic!("a client in {line:?}"));
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    assert!(digits > 0, "{line:?}");
    format!("TIME{before}127.0.0.1:PORT{}", &after[digits..])
}

/// Waits until the ring holds at least `n` flows.
fn wait_for_flows(admin: SocketAddr, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while observe(admin, &["--last", "100", "-o", "json"])
        .lines()
        .count()
        < n
    {
        assert!(Instant::now() < deadline, "records did not reach the ring");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_urls(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["flow"]["l7"]["http"]["url"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn observe_filters_by_path_name_and_time_and_prints_table_and_jsonpb() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, proxy, admin) = start(dir.path());
    curl_denied(proxy, "/api/v1?x=/web/");
    wait_for_flows(admin, 2);
    std::thread::sleep(Duration::from_millis(20));
    let between = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    curl_denied(proxy, "/web/page");
    wait_for_flows(admin, 4);

    // --http-path: a regex over the path only (the first query mentions /web/ too).
    let api = observe(admin, &["--http-path", "^/api/", "-o", "json"]);
    assert_eq!(json_urls(&api), ["http://denied.test/api/v1?x=/web/"; 2]);
    let web = observe(
        admin,
        &[
            "--fqdn",
            "denied.test",
            "--http-path",
            "^/web/",
            "-o",
            "json",
        ],
    );
    assert_eq!(json_urls(&web), ["http://denied.test/web/page"; 2]);
    assert_eq!(observe(admin, &["--fqdn", "other.test"]), "");
    assert_eq!(
        observe(admin, &["--fqdn", "*.denied.test"]),
        "",
        "subdomains only"
    );

    // --since: a duration ago, or a time (only what ended after it).
    assert_eq!(
        json_urls(&observe(admin, &["--since", "1h", "-o", "json"])).len(),
        4
    );
    let since = humantime::format_rfc3339_nanos(between).to_string();
    let later = observe(admin, &["--since", &since, "-o", "json"]);
    assert_eq!(json_urls(&later), ["http://denied.test/web/page"; 2]);
    assert_eq!(observe(admin, &["--since", "2999-01-01T00:00:00Z"]), "");

    // -o table: a header, then columns at the same offsets on every line.
    let table = observe(admin, &["--last", "2", "-o", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    let header = lines[0];
    assert!(header.starts_with("TIMESTAMP"), "{table}");
    for (column, cell) in [
        ("SOURCE", "127.0.0.1:"),
        ("DESTINATION", "denied.test"),
        ("TYPE", "http-re"),
        ("VERDICT", "DROPPED"),
        ("SUMMARY", "HTTP/1.1 "),
    ] {
        let at = header.find(column).unwrap();
        for line in &lines[1..] {
            assert_eq!(
                line.get(at..at + cell.len()),
                Some(cell),
                "{column}: {table}"
            );
        }
    }
    assert!(
        lines[2].ends_with("(GET http://denied.test/api/v1?x=/web/) [denied]"),
        "{table}"
    );

    // -o jsonpb: Hubble's GetFlowsResponse shape.
    // --last counts records: the newest exchange, as its REQUEST and RESPONSE flows.
    let jsonpb = observe(admin, &["--last", "1", "-o", "jsonpb"]);
    let responses: Vec<serde_json::Value> = jsonpb
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(responses.len(), 2, "{jsonpb}");
    for r in &responses {
        assert_eq!(r["node_name"], admin.to_string());
        assert_eq!(r["time"], r["flow"]["time"]);
        assert_eq!(
            r["flow"]["l7"]["http"]["url"],
            "http://denied.test/web/page"
        );
    }
    assert!(
        responses[1]["flow"]["l7"]["latency_ns"].is_string(),
        "{jsonpb}"
    );

    // Colour: never on a pipe by default, always when asked.
    for output in ["compact", "table"] {
        let plain = observe(admin, &["--last", "2", "-o", output]);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = observe(admin, &["--last", "2", "-o", output, "--color", "always"]);
        assert!(coloured.contains("\x1b[31m"), "{coloured:?}");
        assert!(coloured.contains("\x1b[0m"), "{coloured:?}");
    }
    let never = observe(admin, &["--last", "2", "--color", "never"]);
    assert!(!never.contains('\x1b'));

    // A bad regex is a usage error before anything is sent.
    let bad = tlsgate(&[
        "observe",
        "--server",
        &admin.to_string(),
        "--http-path",
        "(unclosed",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--http-path") && stderr.contains("regex parse error"),
        "{stderr}"
    );
    let bad_since = tlsgate(&["observe", "--since", "yesterday"]);
    assert_eq!(bad_since.status.code(), Some(2), "{bad_since:?}");

    // --help teaches with examples.
    let help = tlsgate(&["observe", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "Examples:",
        "--http-path '^/api/'",
        "--since 5m",
        "-o jsonpb",
        "--color <WHEN>",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
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
    assert_eq!(
        lines.iter().map(|l| shape(l)).collect::<Vec<_>>(),
        [
            "TIME -> Request http from 127.0.0.1:PORT to denied.test, verdict Dropped (denied) \
             GET http://denied.test/cucumber",
            "TIME <- Response http to 127.0.0.1:PORT from denied.test, verdict Dropped (denied) \
             GET http://denied.test/cucumber => 403",
            "TIME -> Connection deny from 127.0.0.1:PORT to denied.test, verdict Dropped (denied), \
             bytes 0/0",
        ]
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
    let mut follower = ChildGuard::new(follower);
    let (tx, rx) = mpsc::channel();
    let out = follower.child_mut().stdout.take().unwrap();
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
