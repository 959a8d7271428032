//! Upstream faults against a running `tlsgate run` interceptor (issue 7, fault suite): an origin
//! that refuses connections, one that resets the connection in the middle of a body, one that
//! stalls after reading the request, one that never answers its TLS handshake, and a name whose
//! DNS answer holds no address. For each: the client gets a clear error (a 502/504 from the proxy
//! naming the reason in `x-tlsgate-reason`, or a body that visibly fails instead of ending as if
//! complete), the process keeps serving healthy requests in between, and after all faults its file
//! descriptors are back to the baseline and its memory has not grown beyond a small bound.
//!
//! Every fault is repeated several times so a per-fault leak would show in the figures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_testkit::{
    ChildGuard, Misbehaviour, RESET_CHUNK, TestCa, TestDns, TlsgateRun, fd_targets,
    spawn_faulty_origin, thread_names,
};
use tokio::task::JoinSet;

/// Rounds of the whole fault sequence; each round runs every fault `PER_FAULT` times at once.
const ROUNDS: usize = 8;
const PER_FAULT: usize = 5;
/// `timeouts.http_request` and `timeouts.handshake` of the proxy under test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Allowed RSS growth after all faults over the warmed-up baseline (measured: 0.8–1.4 MiB, reached
/// within four rounds and flat after — allocator arenas and the resolver's caches filling).
const RSS_SLACK_KIB: u64 = 2048;
/// Allowed RSS growth of one round in the second half, once the first half has warmed up. A leak
/// grows memory in every round: one connection's buffers per fault (≥ 16 KiB × 25 faults a round)
/// would exceed it three times over. An allocator arena reaching a new high-water mark grows it in
/// one round now and then (one arena per worker thread, filled by the connections that worker
/// accepted; measured in 18 runs with two workers: above this in 2 of 72 rounds, 172 and 292 KiB,
/// never twice in one run), so the check fails when more than half of those rounds grew by more.
const RSS_ROUND_SLACK_KIB: u64 = 128;
/// Most batches of side-by-side requests the warm-up sends before the baseline is taken.
const WARM_UP_BATCHES: usize = 10;

fn tlsgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

struct Proxy {
    child: ChildGuard,
    addr: SocketAddr,
    ca_pem: PathBuf,
}

fn start_proxy(dir: &Path, origin_ca: &Path, dns: SocketAddr) -> Proxy {
    let ca_dir = dir.join("ca");
    let init = tlsgate(&["ca", "init", "--dir", ca_dir.to_str().unwrap()]);
    assert!(init.status.success(), "{init:?}");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:
  - name: proxy
    kind: intercept
    listen: 127.0.0.1:0
    ca: {{dir: {ca}}}
    upstream_ca: {origin_ca}
    rules: [{{match: \"*.test\", action: bump}}]
    default_action: deny
allow_destinations: [127.0.0.0/8]
dns:
  server: {dns}
timeouts:
  connect: 2s
  handshake: {handshake}s
  http_request: {request}s
flows:
  ring_size: 16
",
            ca = ca_dir.display(),
            origin_ca = origin_ca.display(),
            handshake = HANDSHAKE_TIMEOUT.as_secs(),
            request = REQUEST_TIMEOUT.as_secs(),
        ),
    )
    .unwrap();
    let run = TlsgateRun::quiet(Path::new(env!("CARGO_BIN_EXE_tlsgate")), &config, 1);
    let (child, addr) = (run.child, run.addrs["proxy"]);
    Proxy {
        child,
        addr,
        ca_pem: ca_dir.join("ca.pem"),
    }
}

/// What curl saw of one request through the proxy.
#[derive(Debug)]
struct Seen {
    exit: i32,
    /// The status the client got: of its request, or of the CONNECT when that was refused.
    status: u16,
    reason: Option<String>,
    body_len: usize,
    elapsed: Duration,
}

async fn curl(proxy: &Proxy, url: String) -> Seen {
    let started = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "15", "-D", "/dev/stderr", "-o", "-"])
        .args(["-x", &format!("http://{}", proxy.addr)])
        .args(["--cacert", proxy.ca_pem.to_str().unwrap()])
        .args(["-w", "\n%{http_code} %{http_connect}"])
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    let elapsed = started.elapsed();
    let stdout = out.stdout;
    let split = stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    // `http_code` is the request's status; when the proxy refused the CONNECT itself there is no
    // request, and the CONNECT's status (`http_connect`) is the answer the client got.
    let codes: Vec<u16> = String::from_utf8_lossy(&stdout[split..])
        .split_whitespace()
        .map(|c| c.parse().unwrap_or(0))
        .collect();
    let status = match codes.as_slice() {
        [0, connect] => *connect,
        [code, ..] => *code,
        [] => 0,
    };
    let headers = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let reason = headers
        .lines()
        .filter_map(|l| l.strip_prefix("x-tlsgate-reason:"))
        .map(|v| v.trim().to_owned())
        .next_back();
    Seen {
        exit: out.status.code().unwrap_or(-1),
        status,
        reason,
        body_len: split,
        elapsed,
    }
}

async fn curl_many(proxy: &Arc<Proxy>, urls: Vec<String>) -> Vec<Seen> {
    let mut set = JoinSet::new();
    for url in urls {
        let proxy = proxy.clone();
        set.spawn(async move { curl(&proxy, url).await });
    }
    set.join_all().await
}

fn fd_count(pid: u32) -> usize {
    fd_targets(pid).expect("the proxy's fds").len()
}

fn rss_kib(pid: u32) -> u64 {
    tlsgate_testkit::rss_kib(pid).expect("VmRSS in /proc/PID/status")
}

async fn healthy(proxy: &Proxy, good: SocketAddr, what: &str) {
    let seen = curl(
        proxy,
        format!(
            "https://good.test:{}/after-{}",
            good.port(),
            what.replace(' ', "-")
        ),
    )
    .await;
    assert_eq!(
        (seen.exit, seen.status),
        (0, 200),
        "a healthy request after {what}: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_get_clear_errors_and_leave_no_residue() {
    let dir = tlsgate_testkit::temp_dir("tlsgate-faults");
    let origin_ca = TestCa::new("fault origins CA");
    let origin_ca_pem = origin_ca.write_cert_pem(&dir.path().join("origin-ca.pem"));
    let leaf = origin_ca.issue(&[
        "good.test",
        "refuse.test",
        "reset.test",
        "stall.test",
        "mute.test",
    ]);
    // Held to the end: dropping an origin stops it.
    let good_origin = tlsgate_testkit::spawn_https_origin("good", &leaf).await;
    let good = good_origin.addr;
    let reset_origin = spawn_faulty_origin(&leaf, Misbehaviour::ResetMidBody).await;
    let stall_origin = spawn_faulty_origin(&leaf, Misbehaviour::StallAfterRequest).await;
    let mute_origin = spawn_faulty_origin(&leaf, Misbehaviour::StallHandshake).await;
    let (reset, stall, mute) = (reset_origin.addr, stall_origin.addr, mute_origin.addr);
    let refused = closed_port();
    let dns = TestDns::start(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]).await;
    let proxy = Arc::new(start_proxy(dir.path(), &origin_ca_pem, dns.addr));
    let pid = proxy.child.id();

    // Warm up (certificate cache, resolver, allocator arenas), then take the baseline. Each worker
    // thread keeps origin connections of its own (tlsgate_proxy::workers), so its idle footprint
    // depends on which workers have served: the warm-up sends requests side by side, which a busy
    // worker leaves to the others, until the descriptor count stops changing.
    let workers = thread_names(pid)
        .iter()
        .filter(|name| *name == tlsgate_proxy::workers::THREAD_NAME)
        .count();
    assert!(workers >= 1, "worker threads: {:?}", thread_names(pid));
    let mut settled = None;
    for batch in 0..WARM_UP_BATCHES {
        let urls = (0..4 * workers)
            .map(|i| format!("https://good.test:{}/warm-up-{batch}-{i}", good.port()))
            .collect();
        for seen in curl_many(&proxy, urls).await {
            assert_eq!((seen.exit, seen.status), (0, 200), "warm-up: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fds = fd_count(pid);
        if batch >= 2 && settled == Some(fds) {
            break;
        }
        settled = Some(fds);
    }
    let (base_fds, base_rss) = (fd_count(pid), rss_kib(pid));

    let mut worst_stall = Duration::ZERO;
    let mut round_rss = Vec::new();
    for round in 0..ROUNDS {
        let urls = |host: &str, port: u16| -> Vec<String> {
            (0..PER_FAULT)
                .map(|i| format!("https://{host}:{port}/r{round}/{i}"))
                .collect()
        };

        for seen in curl_many(&proxy, urls("refuse.test", refused)).await {
            assert_eq!(seen.status, 502, "refused origin: {seen:?}");
            assert_eq!(
                seen.reason.as_deref(),
                Some("upstream_connect_refused"),
                "{seen:?}"
            );
        }
        healthy(&proxy, good, "a refusing origin").await;

        for seen in curl_many(&proxy, urls("reset.test", reset.port())).await {
            // The head went out before the origin failed: the client must see the body fail
            // (curl: 18 partial file or 56 receive failure), never a clean end of a cut body.
            assert_eq!(seen.status, 200, "{seen:?}");
            assert!(
                seen.exit == 18 || seen.exit == 56 || seen.exit == 92,
                "a body cut by an origin reset must fail at the client: {seen:?}"
            );
            assert!(seen.body_len <= RESET_CHUNK, "{seen:?}");
        }
        healthy(&proxy, good, "an origin reset").await;

        for seen in curl_many(&proxy, urls("stall.test", stall.port())).await {
            assert_eq!(seen.status, 504, "stalled origin: {seen:?}");
            assert_eq!(seen.reason.as_deref(), Some("request_timeout"), "{seen:?}");
            assert!(
                seen.elapsed < REQUEST_TIMEOUT + Duration::from_secs(3),
                "{seen:?}"
            );
            worst_stall = worst_stall.max(seen.elapsed);
        }
        healthy(&proxy, good, "a stalled origin").await;

        for seen in curl_many(&proxy, urls("mute.test", mute.port())).await {
            assert!(
                seen.status == 502 || seen.status == 504,
                "origin mute in its handshake: {seen:?}"
            );
            assert!(
                seen.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("upstream_handshake")),
                "{seen:?}"
            );
            assert!(
                seen.elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(3),
                "{seen:?}"
            );
        }
        healthy(&proxy, good, "a mute origin").await;

        // DNS: the server answers with no address (names never asked before, so no cache hides it).
        dns.set_answers(&[]);
        let gone: Vec<String> = (0..PER_FAULT)
            .map(|i| format!("https://gone-{round}-{i}.test:{}/", good.port()))
            .collect();
        for seen in curl_many(&proxy, gone).await {
            assert_eq!(seen.status, 502, "name without address: {seen:?}");
            assert!(
                matches!(
                    seen.reason.as_deref(),
                    Some("upstream_no_address" | "upstream_resolve_failed")
                ),
                "{seen:?}"
            );
        }
        dns.set_answers(&[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        healthy(&proxy, good, "a DNS failure").await;
        round_rss.push(rss_kib(pid));
    }

    // Everything the faults opened must be closed again (poll: closes race the last response).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = fd_count(pid);
    while fds > base_fds && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds = fd_count(pid);
    }
    let rss = rss_kib(pid);
    eprintln!(
        "faults: {} per kind; fds {base_fds} -> {fds}; rss {base_rss} KiB -> {rss} KiB; worst stall answer {worst_stall:?}; rss after each round {round_rss:?} KiB",
        ROUNDS * PER_FAULT
    );
    assert!(
        fds <= base_fds,
        "file descriptors leaked: {base_fds} -> {fds}"
    );
    let steps: Vec<u64> = round_rss[ROUNDS / 2 - 1..]
        .windows(2)
        .map(|pair| pair[1].saturating_sub(pair[0]))
        .collect();
    let grew = steps
        .iter()
        .filter(|&&step| step > RSS_ROUND_SLACK_KIB)
        .count();
    assert!(
        grew * 2 <= steps.len(),
        "memory kept growing over the second half of the rounds: {steps:?} KiB a round, \
         {grew} of them more than {RSS_ROUND_SLACK_KIB} KiB"
    );
    assert!(
        rss <= base_rss + RSS_SLACK_KIB,
        "memory grew by {} KiB over the baseline {base_rss} KiB",
        rss - base_rss
    );
}
