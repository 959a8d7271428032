//! The built `tlsgate-load` binary against in-process origins (and a minimal CONNECT proxy): the
//! counts, bytes, protocols and failures it reports are the ones that happened.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tlsgate_testkit::{Origin, spawn_http_origin, spawn_https_origin};
use tlsgate_testkit::{TcpHop, TestCa};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const NAME: &str = "origin.loadgen.test";

struct Setup {
    dir: tempfile::TempDir,
    ca_pem: PathBuf,
    origin: Origin,
}

async fn https_origin() -> Setup {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = TestCa::new("loadgen test CA");
    let ca_pem = ca.write_cert_pem(&dir.path().join("ca.pem"));
    let origin = spawn_https_origin(NAME, &ca.issue(&[NAME])).await;
    Setup {
        dir,
        ca_pem,
        origin,
    }
}

/// Runs the binary, returns (exit success, the JSON report of its last stdout line).
async fn load(args: &[String]) -> (bool, Value) {
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsgate-load"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("tlsgate-load finished in time")
    .expect("tlsgate-load ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report = serde_json::from_str(line).expect("the report is JSON");
    (out.status.success(), report)
}

fn args(url: String, ca: &Path, connect: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        url,
        "--cacert".into(),
        ca.display().to_string(),
        "--connect".into(),
        connect.to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_requests_and_bytes_over_http1_and_http2() {
    let s = https_origin().await;
    let url = format!("https://{NAME}:{}/bytes/1000", s.origin.addr.port());
    for (version, mode, h2_conns) in [
        ("1", "keepalive", 0),
        ("2", "keepalive", 2),
        ("2", "new", 20),
    ] {
        let a = args(
            url.clone(),
            &s.ca_pem,
            s.origin.addr,
            &["-n", "20", "-c", "2", "--http", version, "--mode", mode],
        );
        let (ok, r) = load(&a).await;
        assert!(ok, "{version} {mode}: {r}");
        assert_eq!(r["requests_ok"], 20, "{version} {mode}: {r}");
        assert_eq!(r["bytes"], 20_000, "{version} {mode}: {r}");
        assert_eq!(r["errors"], serde_json::json!({}), "{version} {mode}: {r}");
        assert_eq!(r["h2_connections"], h2_conns, "{version} {mode}: {r}");
        assert!(r["latency_us"]["p50"].as_u64().expect("p50") > 0, "{r}");
        assert!(
            r["latency_us"]["p99"].as_u64() >= r["latency_us"]["p50"].as_u64(),
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_the_deadline() {
    let origin = spawn_http_origin("plain").await;
    let url = format!("http://{NAME}:{}/small", origin.addr.port());
    let a = vec![
        url,
        "--connect".into(),
        origin.addr.to_string(),
        "-d".into(),
        "1".into(),
        "-c".into(),
        "4".into(),
    ];
    let started = std::time::Instant::now();
    let (ok, r) = load(&a).await;
    assert!(ok, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline ends the run"
    );
    assert!(r["requests_ok"].as_u64().expect("count") > 10, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_origin_signed_by_another_ca() {
    let s = https_origin().await;
    let other = TestCa::new("someone else");
    let other_pem = other.write_cert_pem(&s.dir.path().join("other.pem"));
    let url = format!("https://{NAME}:{}/small", s.origin.addr.port());
    let (ok, r) = load(&args(url, &other_pem, s.origin.addr, &["-n", "3"])).await;
    assert!(
        !ok,
        "no request succeeded, so the exit code says failure: {r}"
    );
    assert_eq!(r["requests_ok"], 0, "{r}");
    assert_eq!(r["errors"]["tls"], 3, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goes_through_a_connect_proxy_with_one_name_per_connection() {
    let s = https_origin().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let proxy = spawn_connect_proxy(s.origin.addr, seen.clone()).await;
    let port = s.origin.addr.port();
    // The origin's certificate names only NAME, so the TLS name stays fixed with --sni while the
    // CONNECT host and Host header follow --names.
    let a = vec![
        format!("https://x.loadgen.test:{port}/small"),
        "--cacert".into(),
        s.ca_pem.display().to_string(),
        "--proxy".into(),
        proxy.to_string(),
        "--sni".into(),
        NAME.into(),
        "--names".into(),
        "n{}.loadgen.test".into(),
        "--name-count".into(),
        "3".into(),
        "--mode".into(),
        "new".into(),
        "-n".into(),
        "6".into(),
    ];
    let (ok, r) = load(&a).await;
    assert!(ok, "{r}");
    assert_eq!(r["requests_ok"], 6, "{r}");
    let mut seen = seen.lock().expect("not poisoned").clone();
    seen.sort();
    let want: Vec<String> = [0, 0, 1, 1, 2, 2]
        .iter()
        .map(|i| format!("CONNECT n{i}.loadgen.test:{port} HTTP/1.1"))
        .collect();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_reports_once_every_connection_is_open_and_keeps_them() {
    let s = https_origin().await;
    // Count connections at a forwarding hop in front of the origin.
    let hop = TcpHop::start(s.origin.addr).await;
    let url = format!("https://{NAME}:{}/small", s.origin.addr.port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tlsgate-load"))
        .args(args(
            url,
            &s.ca_pem,
            hop.addr,
            &["--hold", "7", "-c", "3", "-d", "20"],
        ))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tlsgate-load starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(RUN_TIMEOUT, lines.next_line())
        .await
        .expect("a report in time")
        .expect("reading stdout")
        .expect("a report line");
    let r: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(r["held"], 7, "{r}");
    assert_eq!(r["mode"], "hold", "{r}");
    assert_eq!(hop.accepted(), 7);
    // Still running (holding) after the report.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still holding"
    );
    child.kill().await.expect("kill the child we started");
}

/// A CONNECT proxy that records each request line and sends every tunnel to `origin`.
async fn spawn_connect_proxy(
    origin: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head);
                let first = text.lines().next().unwrap_or_default().to_owned();
                seen.lock().expect("not poisoned").push(first);
                let Ok(mut upstream) = TcpStream::connect(origin).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    addr
}
