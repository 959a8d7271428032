//! The soak (issue 7, acceptance 5): two `tlsgate run` processes — a relay R and an edge +
//! interceptor G — under mixed traffic for several minutes with a fault injected at a fixed period,
//! then a verdict on errors, memory and file descriptors. Driven by `scripts/soak.sh`; not in CI.
//!
//! ```text
//! workers ── tunnel (TLS passthrough) ─┐
//!         ── plain HTTP ──────────────┤ G edge ══ h2 ══> R relay ──> origins (*.test via TestDns)
//!         ── bump  (CONNECT) ─────────┤ G intercept ─────────────────> origins
//!         ── splice (CONNECT) ────────┘
//! ```
//!
//! Faults in rotation: kill -9 R and restart it on the same port; a DNS outage (answers emptied);
//! a hostile burst (half ClientHellos and garbage held open against the edge and the
//! interceptor); SIGHUP reload of G; a burst of requests to misbehaving origins through the
//! interceptor (counted apart: each must end in a 502/504 or a visibly failed body, never hang).
//!
//! The warm-up is traffic alone for a quarter of the run (at most a minute), then one round of
//! every fault; then both processes go idle for the baseline. A first hostile burst or reload raises
//! the allocator's high-water mark once; the baseline includes that, so growth after it means memory
//! kept round after round (G's RSS before each later fault is printed to show the trend). The
//! processes run with one malloc arena, so there is one such mark ([`ONE_MALLOC_ARENA`]).
//!
//! An error of a healthy worker is explained only when the request overlapped the window of a
//! fault that affects its path; every other error is unexplained and printed (warm-up included).
//! Exit status 1 when there is an unexplained error, G's RSS grew by 5% or more from the baseline,
//! or a process ends with more file descriptors than at its idle baseline.
//!
//! Usage: `soak --tlsgate PATH [--minutes N] [--fault-every SECS]`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tlsgate_testkit::{
    ChildGuard, Misbehaviour, TestCa, TestDns, TlsgateRun, certs_from_pem, fd_targets, http_get,
    https_get, https_get_via_proxy, net_sockets, socket_inode, spawn_faulty_origin,
    spawn_http_origin, spawn_https_origin,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The relay's name in its certificate (the edge checks it).
const RELAY_NAME: &str = "relay.test";
/// Body size of each healthy HTTPS request (`/bytes/N` on the origin).
const BODY: usize = 16 * 1024;
/// Pause between two requests of one worker.
const WORKER_PAUSE: Duration = Duration::from_millis(25);
/// Warm-up before the baseline: this share of the run, at most [`MAX_WARM_UP`].
const MAX_WARM_UP: Duration = Duration::from_secs(60);
/// No fault starts in the last stretch of the run, so the last one's effects settle.
const QUIET_TAIL: Duration = Duration::from_secs(15);
/// How long R stays dead.
const RELAY_DOWN: Duration = Duration::from_secs(2);
/// How long DNS answers nothing.
const DNS_OUTAGE: Duration = Duration::from_secs(5);
/// After a relay restart or a DNS outage: reconnect backoff, resolver TTL and caches.
const FAULT_SLACK: Duration = Duration::from_secs(8);
/// Hostile connections per listener in a burst, and how long they are held.
const HOSTILE_PER_LISTENER: usize = 150;
const HOSTILE_HOLD: Duration = Duration::from_secs(3);
/// Requests per faulty origin in a burst.
const FAULTY_PER_ORIGIN: usize = 8;
/// G's `timeouts.http_request` / `timeouts.handshake`.
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A faulty request answered later than this counts as a hang.
const FAULTY_ANSWER_LIMIT: Duration = Duration::from_secs(10);
/// Waiting for processes to go idle (fds back) at the baseline and the end.
const IDLE_WAIT: Duration = Duration::from_secs(20);
/// G's RSS growth (percent) that fails the soak.
const MAX_RSS_GROWTH_PCT: f64 = 5.0;
/// Both processes run with one glibc malloc arena. By default every worker thread gets an arena of
/// its own, and each arena keeps the memory a burst leaves free at its top (up to twice
/// `heap::KEEP_BELOW`, crates/tlsgate/src/heap.rs) for the next burst. A fault's burst lands on the
/// worker that accepts it, so the warm-up round raises only that worker's arena; the first time a
/// later burst lands on another worker, G's RSS steps up once. Two soaks on 2026-11-24, one each of
/// d7bc6f7 and 73a83d7, failed so (+6.76 % and +6.00 %): the second faulty-origin burst stepped G's
/// RSS by 1,348 and 1,208 KiB within a second, while an `mprotect` trace showed the other worker's
/// arena growing for the first time (1,596 and 1,444 KiB), and nothing after. With one arena the
/// warm-up round raises the one high-water mark, and memory kept round after round still grows it:
/// the soak judges leaks, not where a burst landed.
const ONE_MALLOC_ARENA: (&str, &str) = ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Tunnel,
    Http,
    Bump,
    Splice,
}

const PATHS: [Lane; 4] = [Lane::Tunnel, Lane::Http, Lane::Bump, Lane::Splice];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    RelayKill,
    DnsOutage,
    HostileBurst,
    Reload,
    FaultyOrigins,
}

const ROTATION: [Fault; 5] = [
    Fault::RelayKill,
    Fault::DnsOutage,
    Fault::HostileBurst,
    Fault::Reload,
    Fault::FaultyOrigins,
];

impl Fault {
    /// Whether this fault may make a healthy request on `path` fail.
    fn affects(self, path: Lane) -> bool {
        match self {
            Fault::RelayKill => matches!(path, Lane::Tunnel | Lane::Http),
            Fault::DnsOutage => true,
            Fault::HostileBurst | Fault::Reload | Fault::FaultyOrigins => false,
        }
    }
}

/// One fault's window: errors of affected paths in `[from, until]` are explained by it.
#[derive(Debug, Clone, Copy)]
struct Window {
    fault: Fault,
    from: Instant,
    until: Instant,
}

#[derive(Debug)]
struct Failure {
    path: Lane,
    started: Instant,
    ended: Instant,
    error: String,
}

#[derive(Default)]
struct Tally {
    ok: BTreeMap<Lane, u64>,
    failures: Vec<Failure>,
}

struct Args {
    tlsgate: PathBuf,
    run_for: Duration,
    fault_every: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut tlsgate = None;
    let mut minutes = 10.0_f64;
    let mut fault_every = 30_u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--tlsgate" => tlsgate = Some(PathBuf::from(value()?)),
            "--minutes" => minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?,
            "--fault-every" => {
                let v = value()?;
                fault_every = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|e| format!("--fault-every: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if minutes <= 0.0 || fault_every == 0 {
        return Err("--minutes and --fault-every must be positive".to_owned());
    }
    Ok(Args {
        tlsgate: tlsgate.ok_or("--tlsgate PATH is required")?,
        run_for: Duration::from_secs_f64(minutes * 60.0),
        fault_every: Duration::from_secs(fault_every),
    })
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}\nusage: soak --tlsgate PATH [--minutes N] [--fault-every SECS]");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let passed = runtime.block_on(soak(args));
    std::process::exit(if passed { 0 } else { 1 });
}

/// A started `tlsgate run` and the addresses it printed.
struct Process {
    child: ChildGuard,
    addrs: BTreeMap<String, SocketAddr>,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn start(tlsgate: &Path, config: &Path, log: &Path, expect: usize) -> Result<Process, String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("log {}: {e}", log.display()))?;
    let run = TlsgateRun::start_with_env(
        tlsgate,
        config,
        "warn",
        log_file.into(),
        expect,
        &[ONE_MALLOC_ARENA],
    )?;
    Ok(Process {
        child: run.child,
        addrs: run.addrs,
    })
}

fn fd_count(pid: u32) -> usize {
    fd_targets(pid).map_or(0, |fds| fds.len())
}

/// What each of `pid`'s fds is: a file path, an anonymous inode, or for a socket its protocol,
/// addresses and TCP state from /proc/net (so a leftover fd names the connection it holds).
fn fd_descriptions(pid: u32) -> Vec<String> {
    let sockets: std::collections::HashMap<u64, String> = net_sockets(pid)
        .iter()
        .map(|socket| (socket.inode, socket.describe()))
        .collect();
    let mut out: Vec<String> = fd_targets(pid)
        .unwrap_or_default()
        .iter()
        .map(
            |target| match socket_inode(target).and_then(|i| sockets.get(&i)) {
                Some(what) => what.clone(),
                None => target.display().to_string(),
            },
        )
        .collect();
    out.sort();
    out
}

/// The fds of `now` that `before` did not have (as descriptions; a multiset difference).
fn new_fds(before: &[String], now: &[String]) -> Vec<String> {
    let mut left = before.to_vec();
    let mut extra = Vec::new();
    for fd in now {
        match left.iter().position(|b| b == fd) {
            Some(i) => {
                left.remove(i);
            }
            None => extra.push(fd.clone()),
        }
    }
    extra
}

fn rss_kib(pid: u32) -> u64 {
    tlsgate_testkit::rss_kib(pid).unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port on 127.0.0.1")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A client config trusting the certificates in the PEM file `ca_pem`.
fn trusting(ca_pem: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let pem = std::fs::read_to_string(ca_pem).expect("the interceptor's CA certificate");
    tlsgate_testkit::client_config_trusting(certs_from_pem(&pem), alpn)
}

struct Lab {
    dir: PathBuf,
    tlsgate: PathBuf,
    relay_port: u16,
}

impl Lab {
    fn relay_config(&self, https_port: u16, http_port: u16, dns: SocketAddr) -> PathBuf {
        let d = self.dir.display();
        let path = self.dir.join("relay.yaml");
        write(
            &path,
            &format!(
                "listeners:
  - name: relay
    kind: relay
    listen: 127.0.0.1:{relay}
    tls: {{cert: {d}/relay.pem, key: {d}/relay.key}}
    routes:
      - {{match: \"*.test\", tls: \"{{sni}}:{https_port}\", http: \"{{sni}}:{http_port}\"}}
allow_destinations: [127.0.0.0/8]
dns:
  server: {dns}
",
                relay = self.relay_port,
            ),
        );
        path
    }

    fn gateway_config(&self, dns: SocketAddr) -> PathBuf {
        let d = self.dir.display();
        let path = self.dir.join("gateway.yaml");
        write(
            &path,
            &format!(
                "relays:
  - name: r
    address: 127.0.0.1:{relay}
    server_name: {RELAY_NAME}
    ca: {d}/relay-ca.pem
    transport: h2
listeners:
  - name: edge
    kind: tls-passthrough
    listen: 127.0.0.1:0
    relay: r
  - name: edge-http
    kind: http
    listen: 127.0.0.1:0
    relay: r
  - name: proxy
    kind: intercept
    listen: 127.0.0.1:0
    ca: {{dir: {d}/ca}}
    upstream_ca: {d}/origin-ca.pem
    rules:
      - {{match: splice.test, action: splice}}
      - {{match: \"*.test\", action: bump}}
    default_action: deny
allow_destinations: [127.0.0.0/8]
dns:
  server: {dns}
timeouts:
  handshake: 2s
  http_request: {request}s
admin:
  listen: 127.0.0.1:0
# The /flows ring keeps up to ring_size records by design (10,000 by default, a few MiB): one that
# is still filling after the baseline is growth this soak would count. 256 fill in the warm-up.
flows:
  ring_size: 256
",
                relay = self.relay_port,
                request = HTTP_REQUEST_TIMEOUT.as_secs(),
            ),
        );
        path
    }

    fn start_relay(&self) -> Result<Process, String> {
        let config = self.dir.join("relay.yaml");
        let log = self.dir.join("relay.log");
        // The port may still be held for a moment after a kill: retry briefly.
        let mut last = String::new();
        for _ in 0..10 {
            match start(&self.tlsgate, &config, &log, 1) {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(last)
    }
}

/// Everything the workers share.
struct Traffic {
    stop: AtomicBool,
    paused: AtomicBool,
    in_flight: AtomicU64,
    tally: Mutex<Tally>,
}

async fn healthy_request(path: Lane, n: u64, g: &Targets) -> Result<(), String> {
    let url_path = format!("/bytes/{BODY}");
    let check = |status: u16, len: usize| {
        if status == 200 && len == BODY {
            Ok(())
        } else {
            Err(format!("status {status}, {len} bytes (want 200, {BODY})"))
        }
    };
    match path {
        Lane::Tunnel => {
            let r = https_get(g.edge, "tunnel.test", g.origin_trust.clone(), &url_path).await?;
            check(r.status, r.body.len())
        }
        Lane::Http => {
            let r = http_get(g.edge_http, "plain.test", &format!("/plain/{n}")).await?;
            if r.status == 200 && r.body.starts_with(b"origin=plain") {
                Ok(())
            } else {
                Err(format!(
                    "status {}, body {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(80)])
                ))
            }
        }
        Lane::Bump => {
            let r = https_get_via_proxy(
                g.proxy,
                "bump.test",
                g.https_port,
                g.bump_trust.clone(),
                &url_path,
            )
            .await?;
            check(r.status, r.body.len())
        }
        Lane::Splice => {
            let r = https_get_via_proxy(
                g.proxy,
                "splice.test",
                g.https_port,
                g.origin_trust.clone(),
                &url_path,
            )
            .await?;
            check(r.status, r.body.len())
        }
    }
}

/// What workers and faults need to reach G and the origins.
struct Targets {
    edge: SocketAddr,
    edge_http: SocketAddr,
    proxy: SocketAddr,
    admin: SocketAddr,
    https_port: u16,
    reset_port: u16,
    stall_port: u16,
    origin_trust: Arc<ClientConfig>,
    bump_trust: Arc<ClientConfig>,
}

async fn worker(path: Lane, targets: Arc<Targets>, traffic: Arc<Traffic>) {
    let mut n = 0u64;
    while !traffic.stop.load(Ordering::SeqCst) {
        if traffic.paused.load(Ordering::SeqCst) {
            tokio::time::sleep(WORKER_PAUSE).await;
            continue;
        }
        n += 1;
        traffic.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let result = healthy_request(path, n, &targets).await;
        let ended = Instant::now();
        traffic.in_flight.fetch_sub(1, Ordering::SeqCst);
        {
            let mut tally = traffic.tally.lock().expect("tally lock");
            match result {
                Ok(()) => *tally.ok.entry(path).or_default() += 1,
                Err(error) => tally.failures.push(Failure {
                    path,
                    started,
                    ended,
                    error,
                }),
            }
        }
        tokio::time::sleep(WORKER_PAUSE).await;
    }
}

/// Half a ClientHello: a record header announcing 512 bytes and the first 40 of them.
fn half_client_hello() -> Vec<u8> {
    let mut bytes = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    bytes.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    bytes
}

/// Opens hostile connections to each address (alternating half ClientHellos and garbage), holds
/// them, then closes them all.
async fn hostile_burst(addrs: &[SocketAddr]) -> String {
    let mut held = Vec::new();
    let mut refused = 0usize;
    for (i, addr) in addrs
        .iter()
        .flat_map(|a| std::iter::repeat_n(*a, HOSTILE_PER_LISTENER))
        .enumerate()
    {
        let bytes = if i % 2 == 0 {
            half_client_hello()
        } else {
            (0..64u32)
                .map(|b| (b.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i as u8)
                .collect()
        };
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let mut tcp = TcpStream::connect(addr).await?;
            tcp.write_all(&bytes).await?;
            Ok::<_, std::io::Error>(tcp)
        })
        .await;
        match attempt {
            Ok(Ok(tcp)) => held.push(tcp),
            _ => refused += 1,
        }
    }
    let opened = held.len();
    tokio::time::sleep(HOSTILE_HOLD).await;
    drop(held);
    format!("{opened} hostile connections held {HOSTILE_HOLD:?} ({refused} failed to open)")
}

/// Outcome of the faulty-origin burst.
#[derive(Default)]
struct FaultyTally {
    clear: u64,
    unclear: Vec<String>,
}

async fn faulty_burst(targets: &Targets) -> FaultyTally {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..FAULTY_PER_ORIGIN {
        for (host, port) in [
            ("reset.test", targets.reset_port),
            ("stall.test", targets.stall_port),
        ] {
            let (proxy, trust) = (targets.proxy, targets.bump_trust.clone());
            set.spawn(async move {
                let started = Instant::now();
                let r =
                    https_get_via_proxy(proxy, host, port, trust, &format!("/faulty/{i}")).await;
                (host, started.elapsed(), r)
            });
        }
    }
    let mut tally = FaultyTally::default();
    for (host, took, r) in set.join_all().await {
        let clear = took < FAULTY_ANSWER_LIMIT
            && match &r {
                Ok(reply) => reply.status == 502 || reply.status == 504,
                Err(e) => e.starts_with("reading body"),
            };
        if clear {
            tally.clear += 1;
        } else {
            let seen = match &r {
                Ok(reply) => format!("status {}", reply.status),
                Err(e) => e.clone(),
            };
            tally.unclear.push(format!("{host} after {took:?}: {seen}"));
        }
    }
    tally
}

/// `tlsgate_config_reloads_total{result="applied"}` from G's admin API.
async fn reloads_applied(admin: SocketAddr) -> Option<f64> {
    let reply = http_get(admin, "127.0.0.1", "/metrics").await.ok()?;
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"tlsgate_config_reloads_total{result="applied"}"#)?
                .trim()
                .parse()
                .ok()
        })
}

/// Pauses the workers and waits until nothing is in flight and `pid`'s fds stop falling below
/// `target` (or, without a target, stay the same for a second). Returns the fd count.
async fn settle(traffic: &Traffic, pid: u32, target: Option<usize>) -> usize {
    traffic.paused.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + IDLE_WAIT;
    let mut last = fd_count(pid);
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fds = fd_count(pid);
        if fds != last {
            last = fds;
            stable_since = Instant::now();
        }
        let idle = traffic.in_flight.load(Ordering::SeqCst) == 0;
        let done = match target {
            Some(t) => fds <= t,
            None => stable_since.elapsed() >= Duration::from_secs(1),
        };
        if (idle && done) || Instant::now() > deadline {
            return last;
        }
    }
}

fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn secs(t: Instant, origin: Instant) -> f64 {
    t.saturating_duration_since(origin).as_secs_f64()
}

/// Both processes idle after the warm-up: what the end of the run is compared with.
struct Baseline {
    g_fds: usize,
    r_fds: usize,
    g_rss: u64,
    g_fd_list: Vec<String>,
    r_fd_list: Vec<String>,
}

impl Baseline {
    /// Pauses the workers until both processes are idle, measures, and lets the workers go on.
    async fn take(traffic: &Traffic, g_pid: u32, r_pid: u32) -> Self {
        let g_fds = settle(traffic, g_pid, None).await;
        let r_fds = settle(traffic, r_pid, None).await;
        let base = Self {
            g_fds,
            r_fds,
            g_rss: rss_kib(g_pid),
            g_fd_list: fd_descriptions(g_pid),
            r_fd_list: fd_descriptions(r_pid),
        };
        traffic.paused.store(false, Ordering::SeqCst);
        base
    }
}

async fn soak(args: Args) -> bool {
    let dir = std::env::temp_dir().join(format!("tlsgate-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("soak dir");
    let lab = Lab {
        dir: dir.clone(),
        tlsgate: args.tlsgate.clone(),
        relay_port: free_port(),
    };

    // Origins, their CA, the relay's CA and certificate, the interceptor's CA.
    let origin_ca = TestCa::new("soak origins CA");
    origin_ca.write_cert_pem(&dir.join("origin-ca.pem"));
    let leaf = origin_ca.issue(&[
        "tunnel.test",
        "bump.test",
        "splice.test",
        "reset.test",
        "stall.test",
    ]);
    let relay_ca = TestCa::new("soak relay CA");
    relay_ca.write_cert_pem(&dir.join("relay-ca.pem"));
    relay_ca.issue(&[RELAY_NAME]).write_pem(&dir, "relay");
    let init = Command::new(&args.tlsgate)
        .args(["ca", "init", "--dir"])
        .arg(dir.join("ca"))
        .stdout(Stdio::null())
        .status()
        .expect("tlsgate ca init");
    assert!(init.success(), "tlsgate ca init failed");

    let https_origin = spawn_https_origin("https", &leaf).await;
    let http_origin = spawn_http_origin("plain").await;
    let reset_origin = spawn_faulty_origin(&leaf, Misbehaviour::ResetMidBody).await;
    let stall_origin = spawn_faulty_origin(&leaf, Misbehaviour::StallAfterRequest).await;
    let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let dns = TestDns::start(&localhost).await;

    lab.relay_config(https_origin.addr.port(), http_origin.addr.port(), dns.addr);
    let gateway_config = lab.gateway_config(dns.addr);
    let mut relay = lab.start_relay().unwrap_or_else(|e| panic!("relay: {e}"));
    let mut gateway = start(&args.tlsgate, &gateway_config, &dir.join("gateway.log"), 4)
        .unwrap_or_else(|e| panic!("gateway: {e}"));
    let targets = Arc::new(Targets {
        edge: gateway.addrs["edge"],
        edge_http: gateway.addrs["edge-http"],
        proxy: gateway.addrs["proxy"],
        admin: gateway.addrs["admin"],
        https_port: https_origin.addr.port(),
        reset_port: reset_origin.addr.port(),
        stall_port: stall_origin.addr.port(),
        origin_trust: trusting(&dir.join("origin-ca.pem"), &[b"h2", b"http/1.1"]),
        bump_trust: trusting(&dir.join("ca/ca.pem"), &[b"h2", b"http/1.1"]),
    });
    let g_pid = gateway.pid();
    println!(
        "soak: {:?}, a fault every {:?}; G and R run with {}={}; G pid {g_pid} {:?}; R pid {} port {}; logs in {}",
        args.run_for,
        args.fault_every,
        ONE_MALLOC_ARENA.0,
        ONE_MALLOC_ARENA.1,
        gateway.addrs,
        relay.pid(),
        lab.relay_port,
        dir.display()
    );

    let traffic = Arc::new(Traffic {
        stop: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
    });
    let began = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for path in PATHS {
        workers.spawn(worker(path, targets.clone(), traffic.clone()));
    }

    // Warm-up: traffic alone, then one round of every fault (so the baseline includes what a
    // first hostile burst or reload leaves in the allocator), then the idle baseline.
    let warm_up = (args.run_for / 4).min(MAX_WARM_UP);
    let mut baseline: Option<Baseline> = None;
    // G's RSS just before each fault from the baseline on: a leak climbs round after round, an
    // allocator's high-water mark does not.
    let mut g_rss_timeline: Vec<(f64, u64)> = Vec::new();

    // Faults.
    let mut windows: Vec<Window> = Vec::new();
    let mut injected: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut faulty = FaultyTally::default();
    let mut notes: Vec<String> = Vec::new();
    let mut r_rss_after_restart: Option<(u64, Instant)> = None;
    let mut reloads_sent = 0u32;
    let mut next = began + warm_up;
    let last_start = began + args.run_for.saturating_sub(QUIET_TAIL);
    let mut k = 0usize;
    while next <= last_start {
        tokio::time::sleep_until(next.into()).await;
        if k == ROTATION.len() && baseline.is_none() {
            let base = Baseline::take(&traffic, g_pid, relay.pid()).await;
            println!(
                "soak: baseline after {:.0}s of traffic and a warm-up round of every fault: G {} fds {} KiB; R {} fds {} KiB",
                secs(Instant::now(), began),
                base.g_fds,
                base.g_rss,
                base.r_fds,
                rss_kib(relay.pid())
            );
            baseline = Some(base);
        }
        if baseline.is_some() {
            g_rss_timeline.push((secs(Instant::now(), began), rss_kib(g_pid)));
        }
        let fault = ROTATION[k % ROTATION.len()];
        k += 1;
        let from = Instant::now();
        *injected.entry(fault).or_default() += 1;
        let note = match fault {
            Fault::RelayKill => {
                let old = relay.pid();
                relay.child.stop();
                tokio::time::sleep(RELAY_DOWN).await;
                relay = tokio::task::block_in_place(|| lab.start_relay())
                    .unwrap_or_else(|e| panic!("restarting the relay: {e}"));
                windows.push(Window {
                    fault,
                    from,
                    until: Instant::now() + FAULT_SLACK,
                });
                format!("killed R pid {old}, restarted as pid {}", relay.pid())
            }
            Fault::DnsOutage => {
                dns.set_answers(&[]);
                tokio::time::sleep(DNS_OUTAGE).await;
                dns.set_answers(&localhost);
                windows.push(Window {
                    fault,
                    from,
                    until: Instant::now() + FAULT_SLACK,
                });
                format!("DNS answered nothing for {DNS_OUTAGE:?}")
            }
            Fault::HostileBurst => hostile_burst(&[targets.edge, targets.proxy]).await,
            Fault::Reload => {
                reloads_sent += 1;
                let sent = signal(g_pid, "HUP");
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut applied = reloads_applied(targets.admin).await;
                while applied < Some(f64::from(reloads_sent)) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    applied = reloads_applied(targets.admin).await;
                }
                if applied != Some(f64::from(reloads_sent)) {
                    notes.push(format!(
                        "reload {reloads_sent}: SIGHUP sent={sent}, applied reloads {applied:?}"
                    ));
                }
                format!("SIGHUP to G (applied reloads now {applied:?})")
            }
            Fault::FaultyOrigins => {
                let t = faulty_burst(&targets).await;
                let line = format!(
                    "{} requests to faulty origins: {} clear errors, {} unclear",
                    t.clear + t.unclear.len() as u64,
                    t.clear,
                    t.unclear.len()
                );
                faulty.clear += t.clear;
                faulty.unclear.extend(t.unclear);
                line
            }
        };
        println!(
            "soak: t={:.0}s fault {:?}: {note} (took {:.1}s)",
            secs(from, began),
            fault,
            from.elapsed().as_secs_f64()
        );
        // Take R's RSS reference a while after each restart, when traffic has warmed it again.
        if fault == Fault::RelayKill {
            let at = Instant::now() + args.fault_every / 2;
            r_rss_after_restart = Some((0, at));
        }
        next += args.fault_every;
        if let Some((0, at)) = r_rss_after_restart
            && at <= next
        {
            tokio::time::sleep_until(at.into()).await;
            r_rss_after_restart = Some((rss_kib(relay.pid()), at));
        }
    }
    let remaining = (began + args.run_for).saturating_duration_since(Instant::now());
    tokio::time::sleep(remaining).await;

    // Stop, go idle, measure.
    traffic.stop.store(true, Ordering::SeqCst);
    while workers.join_next().await.is_some() {}
    let Some(Baseline {
        g_fds: g_base_fds,
        r_fds: r_base_fds,
        g_rss: g_base_rss,
        g_fd_list: g_base_fd_list,
        r_fd_list: r_base_fd_list,
    }) = baseline
    else {
        println!(
            "soak: FAIL: the run ended before a warm-up round of every fault ({} faults of {}); run longer",
            k,
            ROTATION.len()
        );
        return false;
    };
    let g_end_fds = settle(&traffic, g_pid, Some(g_base_fds)).await;
    let r_end_fds = settle(&traffic, relay.pid(), Some(r_base_fds)).await;
    for (who, pid, base, end) in [
        ("G", g_pid, &g_base_fd_list, g_end_fds),
        ("R", relay.pid(), &r_base_fd_list, r_end_fds),
    ] {
        if end > base.len() {
            for fd in new_fds(base, &fd_descriptions(pid)) {
                println!("{who}: fd not open at the baseline: {fd}");
            }
        }
    }
    let g_end_rss = rss_kib(g_pid);
    let r_end_rss = rss_kib(relay.pid());
    let g_alive = matches!(gateway.child.try_wait(), Ok(None));
    let r_alive = matches!(relay.child.try_wait(), Ok(None));

    // Classify the healthy workers' errors.
    let tally = std::mem::take(&mut *traffic.tally.lock().expect("tally lock"));
    let mut explained: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for f in &tally.failures {
        let by = windows
            .iter()
            .find(|w| w.fault.affects(f.path) && f.started <= w.until && f.ended >= w.from);
        match by {
            Some(w) => *explained.entry(w.fault).or_default() += 1,
            None => unexplained.push(f),
        }
    }

    println!(
        "\n== soak report ({:.0}s run) ==",
        began.elapsed().as_secs_f64()
    );
    for path in PATHS {
        let failed = tally.failures.iter().filter(|f| f.path == path).count();
        println!(
            "requests {path:?}: {} ok, {failed} failed",
            tally.ok.get(&path).copied().unwrap_or(0)
        );
    }
    for fault in ROTATION {
        println!(
            "fault {fault:?}: injected {}, healthy-request errors explained by it {}",
            injected.get(&fault).copied().unwrap_or(0),
            explained.get(&fault).copied().unwrap_or(0)
        );
    }
    println!(
        "faulty-origin requests: {} clear errors (502/504 or failed body), {} unclear",
        faulty.clear,
        faulty.unclear.len()
    );
    for u in &faulty.unclear {
        println!("  unclear: {u}");
    }
    println!("unexplained errors: {}", unexplained.len());
    for f in &unexplained {
        println!(
            "  {:?} t={:.1}s..{:.1}s: {}",
            f.path,
            secs(f.started, began),
            secs(f.ended, began),
            f.error
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    let g_growth = (g_end_rss as f64 - g_base_rss as f64) * 100.0 / g_base_rss.max(1) as f64;
    let timeline: Vec<String> = g_rss_timeline
        .iter()
        .map(|(t, kib)| format!("t={t:.0}s {kib}"))
        .collect();
    println!(
        "G RSS before each fault after the baseline (KiB): {}",
        timeline.join(", ")
    );
    println!(
        "G (pid {g_pid}, alive {g_alive}): RSS after warm-up {g_base_rss} KiB, at the end {g_end_rss} KiB ({g_growth:+.2}%); fds baseline {g_base_fds}, end {g_end_fds}"
    );
    match r_rss_after_restart {
        Some((r_ref, at)) if r_ref > 0 => println!(
            "R (pid {}, alive {r_alive}): RSS {:.0}s after its last restart {r_ref} KiB, at the end {r_end_rss} KiB ({:+.2}%); fds baseline {r_base_fds} (R idle at the baseline), end {r_end_fds}",
            relay.pid(),
            secs(at, began),
            (r_end_rss as f64 - r_ref as f64) * 100.0 / r_ref as f64
        ),
        _ => println!(
            "R (pid {}, alive {r_alive}): RSS at the end {r_end_rss} KiB (no reference after a restart); fds baseline {r_base_fds} (R idle at the baseline), end {r_end_fds}",
            relay.pid()
        ),
    }

    let mut failed = Vec::new();
    if !unexplained.is_empty() {
        failed.push(format!("{} unexplained errors", unexplained.len()));
    }
    if !faulty.unclear.is_empty() {
        failed.push(format!(
            "{} faulty-origin requests without a clear error",
            faulty.unclear.len()
        ));
    }
    if g_growth >= MAX_RSS_GROWTH_PCT {
        failed.push(format!("G RSS grew {g_growth:.2}%"));
    }
    if g_end_fds > g_base_fds {
        failed.push(format!("G fds {g_base_fds} -> {g_end_fds}"));
    }
    if r_end_fds > r_base_fds {
        failed.push(format!("R fds {r_base_fds} -> {r_end_fds}"));
    }
    if !g_alive || !r_alive {
        failed.push(format!(
            "process died: G alive {g_alive}, R alive {r_alive}"
        ));
    }
    if !notes.is_empty() {
        failed.push(format!("{} reloads not applied", notes.len()));
    }
    drop(gateway);
    drop(relay);
    if failed.is_empty() {
        println!("soak: PASS");
        let _ = std::fs::remove_dir_all(&dir);
        true
    } else {
        println!(
            "soak: FAIL: {} (logs kept in {})",
            failed.join("; "),
            dir.display()
        );
        false
    }
}
