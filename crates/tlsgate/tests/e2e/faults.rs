//! Process-level faults between edge and relay (issue 7, fault suite), on the e2e topology:
//! the relay PROCESS is SIGKILLed during load and restarted on the same address, and the
//! edge–relay link is cut in the firewall namespace (iptables DROP both ways) and restored.
//!
//! Load is three bounded curl loops through the edge: the passthrough listeners over the h2
//! and the tls transport, and the plain-HTTP listener. During each fault every attempt must
//! end with a clear error well inside curl's bound (a closed TLS tunnel on passthrough; a
//! 502/503/504 carrying `x-tlsgate-reason` on HTTP), never a hang; after the restart/restore
//! each loop must succeed again (the time is measured and printed), the edge keeps running,
//! its fds return to their warmed-up baseline (its h2 connections to the relay to the pool's
//! bound: see [`EdgeFds`]) and its RSS stays within a slack of its baseline.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tlsgate_testkit::{NetNs, TestCa, fd_targets, net_sockets, socket_inode, thread_names};

use crate::gateway::{self, EDGE_H2_PORT, EDGE_HTTP_PORT, EDGE_TLS_PORT, RELAY_NAME, RELAY_PORT};
use crate::nginx::{OTHER_NAME, PRIVATE_NAME};
use crate::topology::{EDGE_IP, ORIGIN_IP, RELAY_IP};
use crate::{Curl, World, curl, preflight};

/// Edge timeouts of this suite: short so a fault costs seconds, not the defaults' minutes.
const EDGE_CONNECT: &str = "1s";
const EDGE_HANDSHAKE: &str = "1s";
const EDGE_RELAY_WAIT: &str = "1s";
const EDGE_HTTP_REQUEST: &str = "4s";
const BACKOFF_MIN: &str = "100ms";
const BACKOFF_MAX: &str = "500ms";
/// curl's bound for one attempt during the load. An attempt that reaches it (exit 28) is a
/// hang: with the timeouts above every failure must be reported in a few seconds.
const LOAD_MAX_TIME: &str = "9";
/// A failed attempt must end within this (connect + handshake + one hedge, with margin).
const CLEAR_ERROR_WITHIN: Duration = Duration::from_secs(6);
/// Bounds of one load loop.
const LOAD_MAX_ATTEMPTS: usize = 2000;
const LOAD_MAX_DURATION: Duration = Duration::from_secs(90);
/// Pause between two attempts of one loop.
const LOAD_PAUSE: Duration = Duration::from_millis(50);
/// How long the relay stays dead and the link stays cut: longer than every edge timeout
/// above, so that requests waiting through the fault must fail rather than just wait.
const OUTAGE: Duration = Duration::from_secs(6);
/// Every transport must have succeeded again within this after the restart/restore.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);
/// Successes each loop needs after recovery before the loops stop.
const SUCCESSES_AFTER_RECOVERY: usize = 3;
/// Deadline for the edge's fd count to come back to its baseline.
const FD_SETTLE: Duration = Duration::from_secs(20);
/// `pool_size` of the edge's h2 relay: connections per worker thread.
const H2_POOL_SIZE: usize = 1;
/// Allowed RSS growth of the edge over its warmed-up baseline after both faults (measured
/// in the first runs: +452..+480 KiB, from allocator arenas and the h2 pool's reconnections).
/// A leak of 16 KiB (one tunnel's buffers) per failed attempt, over the ~100 failed attempts
/// of a run (1.6 MiB), on top of that growth would exceed it.
const RSS_SLACK_KIB: u64 = 2048;

/// The three ways the load reaches the edge.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lane {
    H2,
    Tls,
    Http,
}

const LANES: [Lane; 3] = [Lane::H2, Lane::Tls, Lane::Http];

/// One attempt of a load loop.
#[derive(Debug)]
struct Attempt {
    started: Instant,
    curl: Curl,
    /// HTTP status (0 when there was none) and `x-tlsgate-reason` (empty when absent).
    status: u16,
    reason: String,
}

impl Attempt {
    fn ok(&self) -> bool {
        self.curl.code == 0 && self.status == 200
    }
}

fn attempt(world: &World, lane: Lane) -> Attempt {
    let started = Instant::now();
    let write_out = "%{http_code} %header{x-tlsgate-reason}";
    let curl = match lane {
        Lane::H2 | Lane::Tls => {
            let port = if lane == Lane::H2 {
                EDGE_H2_PORT
            } else {
                EDGE_TLS_PORT
            };
            let connect_to = format!("{PRIVATE_NAME}:443:{EDGE_IP}:{port}");
            let url = format!("https://{PRIVATE_NAME}/");
            curl(
                &world.topo.client,
                LOAD_MAX_TIME,
                &[
                    "--cacert",
                    &world.origin_ca_pem,
                    "--connect-to",
                    &connect_to,
                    "-o",
                    "/dev/null",
                    "-w",
                    write_out,
                    &url,
                ],
            )
        }
        Lane::Http => {
            let resolve = format!("{PRIVATE_NAME}:{EDGE_HTTP_PORT}:{EDGE_IP}");
            let url = format!("http://{PRIVATE_NAME}/");
            curl(
                &world.topo.client,
                LOAD_MAX_TIME,
                &[
                    "--resolve",
                    &resolve,
                    "-o",
                    "/dev/null",
                    "-w",
                    write_out,
                    &url,
                ],
            )
        }
    };
    let mut words = curl.stdout.split_whitespace();
    let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let reason = words.next().unwrap_or_default().to_owned();
    Attempt {
        started,
        curl,
        status,
        reason,
    }
}

/// Runs one bounded curl loop per lane while `fault` runs on this thread; `fault` returns
/// the instant the fault ended (relay restarted / link restored). The loops stop once each
/// has `SUCCESSES_AFTER_RECOVERY` successes that started after that instant, or after
/// `RECOVERY_DEADLINE`, or at their own bounds.
fn under_load(world: &World, fault: impl FnOnce() -> Instant) -> (Instant, Vec<Vec<Attempt>>) {
    let stop = AtomicBool::new(false);
    let ended: OnceLock<Instant> = OnceLock::new();
    let recovered: [AtomicUsize; 3] = Default::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = LANES
            .iter()
            .zip(&recovered)
            .map(|(&lane, recovered)| {
                let (stop, ended) = (&stop, &ended);
                s.spawn(move || {
                    let began = Instant::now();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed)
                        && seen.len() < LOAD_MAX_ATTEMPTS
                        && began.elapsed() < LOAD_MAX_DURATION
                    {
                        let a = attempt(world, lane);
                        if a.ok() && ended.get().is_some_and(|end| a.started >= *end) {
                            recovered.fetch_add(1, Ordering::Relaxed);
                        }
                        seen.push(a);
                        std::thread::sleep(LOAD_PAUSE);
                    }
                    seen
                })
            })
            .collect();
        let end = fault();
        ended.set(end).expect("the fault ends once");
        let deadline = end + RECOVERY_DEADLINE;
        while Instant::now() < deadline
            && recovered
                .iter()
                .any(|n| n.load(Ordering::Relaxed) < SUCCESSES_AFTER_RECOVERY)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let lanes = handles
            .into_iter()
            .map(|h| h.join().expect("load loop"))
            .collect();
        (end, lanes)
    })
}

/// One attempt per lane, all at once, started now (during a fault). The load loops alone may
/// not start any attempt during the fault: a tunnel already open when the link is cut stalls
/// and resumes after the restore (TCP retransmits; nothing times out within `idle`), holding
/// its loop for the whole cut.
fn probe_all(world: &World) -> Vec<Attempt> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LANES
            .iter()
            .map(|&lane| s.spawn(move || attempt(world, lane)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe"))
            .collect()
    })
}

/// Checks that every probe made during a fault failed (clearly: `judge` checks how), then
/// files each with its lane's attempts.
fn add_probes(fault: &str, lanes: &mut [Vec<Attempt>], probes: Vec<Attempt>, logs: &str) {
    for ((lane, attempts), probe) in LANES.iter().zip(lanes.iter_mut()).zip(probes) {
        assert!(
            !probe.ok(),
            "{fault}, {lane:?}: a connection made during the fault succeeded: {}\n{logs}",
            probe.curl.describe()
        );
        eprintln!(
            "{fault}: {lane:?} probe during the fault: {} ({:?})",
            probe.curl.describe(),
            probe.reason
        );
        attempts.push(probe);
    }
}

/// Figures of one lane during one fault.
struct LaneFigures {
    errors: usize,
    /// Successes that began during the fault and ended before the test marked it over: the
    /// restarted relay listens a little before `wait_listening`'s poll sees it, and h2
    /// attempts wait up to `timeouts.relay_wait` for it.
    ok_during: usize,
    slowest_error: Duration,
    recovered_after: Option<Duration>,
    /// Distinct error outcomes (curl exit, HTTP status, reason).
    kinds: Vec<String>,
}

/// Checks and summarises one lane: every failure is a clear, prompt error, and the lane
/// succeeds again after `ended`, `SUCCESSES_AFTER_RECOVERY` times.
fn judge(
    fault: &str,
    lane: Lane,
    attempts: &[Attempt],
    began: Instant,
    ended: Instant,
    logs: &str,
) -> LaneFigures {
    let mut figures = LaneFigures {
        errors: 0,
        ok_during: 0,
        slowest_error: Duration::ZERO,
        recovered_after: None,
        kinds: Vec::new(),
    };
    let mut successes_after = 0;
    for a in attempts {
        if a.ok() {
            if a.started >= ended {
                successes_after += 1;
                let at = a.started + a.curl.elapsed - ended;
                figures.recovered_after.get_or_insert(at);
            } else if a.started >= began && a.started + a.curl.elapsed < ended {
                figures.ok_during += 1;
            }
            continue;
        }
        figures.errors += 1;
        let kind = format!(
            "exit {} status {} reason {:?}",
            a.curl.code, a.status, a.reason
        );
        if !figures.kinds.contains(&kind) {
            figures.kinds.push(kind);
        }
        figures.slowest_error = figures.slowest_error.max(a.curl.elapsed);
        assert!(
            a.curl.elapsed < CLEAR_ERROR_WITHIN,
            "{fault}, {lane:?}: an attempt took {:?} to fail (hang): {}\n{logs}",
            a.curl.elapsed,
            a.curl.describe()
        );
        match lane {
            // The edge closes the client's TLS connection: a TLS/receive error from curl,
            // never its own timeout.
            Lane::H2 | Lane::Tls => assert!(
                a.curl.code != 0 && a.curl.code != crate::CURL_TIMED_OUT,
                "{fault}, {lane:?}: {}",
                a.curl.describe()
            ),
            Lane::Http => {
                assert!(
                    matches!(a.status, 502..=504) && !a.reason.is_empty(),
                    "{fault}, {lane:?}: expected 502/503/504 with x-tlsgate-reason: {}\n{logs}",
                    a.curl.describe()
                );
            }
        }
    }
    assert!(
        figures.errors >= 1,
        "{fault}, {lane:?}: the fault was invisible ({} attempts)\n{logs}",
        attempts.len()
    );
    assert!(
        successes_after >= SUCCESSES_AFTER_RECOVERY,
        "{fault}, {lane:?}: {successes_after} successes after the fault ended ({} attempts)\n{logs}",
        attempts.len()
    );
    figures
}

/// The edge's open file descriptors, and how many of them are its TCP connections to the relay.
///
/// The h2 pool opens its connections per worker thread, when a worker first carries a tunnel
/// (`tlsgate_proxy::workers`): which workers the warm-up reached is up to the kernel, so a worker
/// first reached during the faults adds a connection that is no leak. The check therefore holds
/// every other descriptor to its baseline and the relay connections to the pool's own bound.
#[derive(Clone, Copy, Debug, PartialEq)]
struct EdgeFds {
    total: usize,
    to_relay: usize,
}

impl EdgeFds {
    fn others(self) -> usize {
        self.total - self.to_relay
    }
}

fn fd_links(pid: u32) -> Vec<PathBuf> {
    fd_targets(pid).unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
}

fn edge_fds(pid: u32) -> EdgeFds {
    let links = fd_links(pid);
    let ours: std::collections::HashSet<u64> =
        links.iter().filter_map(|l| socket_inode(l)).collect();
    let relay: std::net::SocketAddrV4 = format!("{RELAY_IP}:{RELAY_PORT}")
        .parse()
        .expect("relay address");
    // The edge's own network namespace: its TCP sockets to the relay, in any state.
    let to_relay = net_sockets(pid)
        .iter()
        .filter(|s| s.proto == "tcp" && ours.contains(&s.inode) && s.remote_v4() == Some(relay))
        .count();
    EdgeFds {
        total: links.len(),
        to_relay,
    }
}

fn rss_kib(pid: u32) -> u64 {
    tlsgate_testkit::rss_kib(pid).expect("VmRSS in /proc/PID/status")
}

fn edge_config(relay_ca: &Path) -> String {
    let ca = relay_ca.display();
    let relay = |name: &str, transport: &str| {
        format!(
            "  - name: {name}
    address: {RELAY_NAME}:{RELAY_PORT}
    ca: {ca}
    transport: {transport}
    retry_backoff_min: {BACKOFF_MIN}
    retry_backoff_max: {BACKOFF_MAX}
"
        )
    };
    format!(
        "relays:
{}{}listeners:
  - name: https-h2
    kind: tls-passthrough
    listen: {EDGE_IP}:{EDGE_H2_PORT}
    relay: provider-b-h2
  - name: https-tls
    kind: tls-passthrough
    listen: {EDGE_IP}:{EDGE_TLS_PORT}
    relay: provider-b-tls
  - name: http
    kind: http
    listen: {EDGE_IP}:{EDGE_HTTP_PORT}
    relay: provider-b-h2
allow_destinations: [198.51.100.0/30]
timeouts:
  connect: {EDGE_CONNECT}
  handshake: {EDGE_HANDSHAKE}
  relay_wait: {EDGE_RELAY_WAIT}
  http_request: {EDGE_HTTP_REQUEST}
  shutdown_grace: 1s
",
        relay(
            "provider-b-h2",
            &format!("h2\n    pool_size: {H2_POOL_SIZE}")
        ),
        relay("provider-b-tls", "tls"),
    )
}

/// What restarting the relay needs.
struct Gates {
    relay_dir: PathBuf,
    relay_config: String,
}

/// Starts the relay and the edge with this suite's config (kept outside `World` so the relay
/// can be replaced while the load loops borrow the world).
fn start_gates(world: &World) -> (Gates, gateway::Tlsgate, gateway::Tlsgate) {
    let topo = &world.topo;
    topo.edge
        .set_hosts(&[(RELAY_IP, RELAY_NAME)])
        .expect("edge hosts");
    topo.relay
        .set_hosts(&[(ORIGIN_IP, PRIVATE_NAME), (ORIGIN_IP, OTHER_NAME)])
        .expect("relay hosts");
    let relay_ca = TestCa::new("e2e relay CA");
    let relay_dir = world.dir.path().join("relay");
    let edge_dir = world.dir.path().join("edge");
    std::fs::create_dir_all(&relay_dir).expect("relay dir");
    std::fs::create_dir_all(&edge_dir).expect("edge dir");
    let (cert, key) = relay_ca.issue(&[RELAY_NAME]).write_pem(&relay_dir, "relay");
    let relay_ca_pem = relay_ca.write_cert_pem(&edge_dir.join("relay-ca.pem"));
    let gates = Gates {
        relay_dir,
        relay_config: gateway::relay_config(&cert, &key),
    };
    let relay = start_relay(&topo.relay, &gates, "relay");
    let mut edge = gateway::start(&topo.edge, &edge_dir, "edge", &edge_config(&relay_ca_pem));
    let sockets: Vec<String> = [EDGE_H2_PORT, EDGE_TLS_PORT, EDGE_HTTP_PORT]
        .iter()
        .map(|port| format!("{EDGE_IP}:{port}"))
        .collect();
    topo.edge
        .wait_listening(&sockets, &mut edge.guard, &edge.log);
    (gates, relay, edge)
}

fn start_relay(ns: &NetNs, gates: &Gates, stem: &str) -> gateway::Tlsgate {
    let mut relay = gateway::start(ns, &gates.relay_dir, stem, &gates.relay_config);
    ns.wait_listening(
        &[format!("{RELAY_IP}:{RELAY_PORT}")],
        &mut relay.guard,
        &relay.log,
    );
    relay
}

/// The DROP rules that cut the edge–relay link in the firewall, both directions.
fn link_rules() -> [Vec<&'static str>; 2] {
    [
        vec![
            "FORWARD",
            "-d",
            RELAY_IP,
            "-m",
            "comment",
            "--comment",
            "tg fault cut to relay",
            "-j",
            "DROP",
        ],
        vec![
            "FORWARD",
            "-s",
            RELAY_IP,
            "-m",
            "comment",
            "--comment",
            "tg fault cut from relay",
            "-j",
            "DROP",
        ],
    ]
}

fn iptables(fw: &NetNs, op: &str, rule: &[&str]) {
    let pos: Vec<&str> = if op == "-I" {
        vec![rule[0], "1"]
    } else {
        vec![rule[0]]
    };
    let args = [&["iptables", "-w", "5", op][..], &pos, &rule[1..]].concat();
    fw.run(&args)
        .unwrap_or_else(|e| panic!("iptables {op} {rule:?}: {e}"));
}

fn report(fault: &str, began: Instant, ended: Instant, lanes: &[Vec<Attempt>], logs: &str) {
    for (lane, attempts) in LANES.iter().zip(lanes) {
        for a in attempts {
            // Offsets from the start of the fault; negative: started before it.
            let offset = a.started.duration_since(began.min(a.started)).as_secs_f64()
                - began.duration_since(a.started.min(began)).as_secs_f64();
            eprintln!(
                "  {fault} {lane:?} t={offset:+.2}s took {:.2}s: exit {} status {} {}",
                a.curl.elapsed.as_secs_f64(),
                a.curl.code,
                a.status,
                a.reason
            );
        }
        let f = judge(fault, *lane, attempts, began, ended, logs);
        eprintln!(
            "{fault}: {lane:?}: {} attempts, {} errors (slowest {:?}), {} ok during the fault, \
             first success {:?} after the fault ended; errors seen: {:?}",
            attempts.len(),
            f.errors,
            f.slowest_error,
            f.ok_during,
            f.recovered_after.unwrap_or_default(),
            f.kinds
        );
    }
}

fn logs(relay: &gateway::Tlsgate, edge: &gateway::Tlsgate) -> String {
    let tail = |text: String| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    format!(
        "--- relay log (tail) ---\n{}\n--- edge log (tail) ---\n{}",
        tail(relay.log_text()),
        tail(edge.log_text())
    )
}

#[test]
fn edge_survives_relay_kill_and_link_cut() {
    if !preflight() {
        return;
    }
    let started = Instant::now();
    let world = World::start(1024, false);
    let (gates, mut relay, mut edge) = start_gates(&world);
    let edge_pid = edge.guard.id();

    // Warm-up: every lane works and the h2 pool is up; then the baseline.
    for _ in 0..5 {
        for lane in LANES {
            let a = attempt(&world, lane);
            assert!(
                a.ok(),
                "warm-up {lane:?}: {}\n{}",
                a.curl.describe(),
                logs(&relay, &edge)
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = edge_fds(edge_pid);
    let rss_before = rss_kib(edge_pid);
    // Worker threads, each with its own pool (`tlsgate_proxy::workers`).
    let workers = thread_names(edge_pid)
        .iter()
        .filter(|name| *name == tlsgate_proxy::workers::THREAD_NAME)
        .count();
    assert!(workers >= 1, "worker threads: {:?}", thread_names(edge_pid));
    eprintln!(
        "edge pid {edge_pid}: baseline {fds_before:?}, {workers} workers, VmRSS {rss_before} KiB"
    );

    // (a) SIGKILL the relay process (its own PID) during load; restart it on the same address.
    let mut killed_at = Instant::now();
    let mut probes_a = Vec::new();
    let (restarted_at, mut lanes) = under_load(&world, || {
        std::thread::sleep(Duration::from_secs(1));
        let pid = relay.guard.id();
        let kill = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(kill.success(), "kill -KILL {pid}");
        let status = relay.guard.stop();
        // Reaped: from here the relay's sockets are gone.
        killed_at = Instant::now();
        eprintln!("(a) relay pid {pid} SIGKILLed: {status:?}");
        probes_a = probe_all(&world);
        std::thread::sleep(OUTAGE.saturating_sub(killed_at.elapsed()));
        relay = start_relay(&world.topo.relay, &gates, "relay-restarted");
        eprintln!(
            "(a) relay restarted as pid {} {:?} after the kill",
            relay.guard.id(),
            killed_at.elapsed()
        );
        Instant::now()
    });
    let text = logs(&relay, &edge);
    add_probes("(a) relay killed", &mut lanes, probes_a, &text);
    report("(a) relay killed", killed_at, restarted_at, &lanes, &text);
    assert_eq!(
        edge.guard.try_wait().expect("edge status"),
        None,
        "edge exited\n{text}"
    );

    // (b) Cut the edge-relay link in the firewall (DROP both ways), then restore it.
    let fw = &world.topo.fw;
    let mut cut_at = Instant::now();
    let mut probes_b = Vec::new();
    let (restored_at, mut lanes) = under_load(&world, || {
        std::thread::sleep(Duration::from_secs(1));
        for rule in link_rules() {
            iptables(fw, "-I", &rule);
        }
        cut_at = Instant::now();
        eprintln!("(b) link cut");
        probes_b = probe_all(&world);
        std::thread::sleep(OUTAGE.saturating_sub(cut_at.elapsed()));
        for rule in link_rules() {
            iptables(fw, "-D", &rule);
        }
        eprintln!("(b) link restored {:?} after the cut", cut_at.elapsed());
        Instant::now()
    });
    let text = logs(&relay, &edge);
    add_probes("(b) link cut", &mut lanes, probes_b, &text);
    report("(b) link cut", cut_at, restored_at, &lanes, &text);
    assert_eq!(
        edge.guard.try_wait().expect("edge status"),
        None,
        "edge exited\n{text}"
    );

    // The edge's fds come back to the baseline (poll with a deadline) and its RSS stays
    // within the slack.
    let settle = Instant::now();
    let pool_bound = workers * H2_POOL_SIZE;
    let settled = |fds: EdgeFds| fds.others() <= fds_before.others() && fds.to_relay <= pool_bound;
    let mut fds_after = edge_fds(edge_pid);
    while !settled(fds_after) && settle.elapsed() < FD_SETTLE {
        std::thread::sleep(Duration::from_millis(200));
        fds_after = edge_fds(edge_pid);
    }
    let rss_after = rss_kib(edge_pid);
    eprintln!(
        "edge fds {fds_before:?} -> {fds_after:?} (settled in {:?}; relay connections at most \
         {pool_bound}); VmRSS {rss_before} -> {rss_after} KiB (+{} KiB, slack {RSS_SLACK_KIB} \
         KiB); whole test {:?}",
        settle.elapsed(),
        rss_after.saturating_sub(rss_before),
        started.elapsed()
    );
    assert!(
        settled(fds_after),
        "edge fds {fds_before:?} -> {fds_after:?} after {FD_SETTLE:?} (other fds must return to \
         the baseline, relay connections stay within {workers} workers x pool_size \
         {H2_POOL_SIZE}): {:?}\n{}",
        fd_links(edge_pid),
        logs(&relay, &edge)
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "edge RSS grew {rss_before} -> {rss_after} KiB"
    );
}
