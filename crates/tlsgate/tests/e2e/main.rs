//! End-to-end: tlsgate's edge and relay carry TLS and plain HTTP through a provider's SNI
//! firewall, in network namespaces, with nginx as the origin and real curl as the client.
//!
//! ```text
//! client ──▶ edge (tlsgate edge; router) ──▶ fw (iptables SNI firewall) ──▶ relay (tlsgate relay) ──▶ origin (nginx)
//! ```
//!
//! Needs root (namespaces, iptables) and Debian's nginx, iptables, iproute2, curl, procps:
//! `./scripts/test.sh` installs them. Without root the tests fail with a clear message unless
//! `TLSGATE_SKIP_E2E=1` is set; CI never sets it.

mod faults;
mod firewall;
mod gateway;
mod nginx;
mod topology;

use std::path::Path;
use std::time::{Duration, Instant};

use tlsgate_testkit::{ChildGuard, NetNs, TestCa, certs_from_pem, e2e_preflight, hex, sha256};

use crate::gateway::{
    EDGE_H2_PORT, EDGE_HTTP_PORT, EDGE_TLS_PORT, RELAY_NAME, RELAY_PORT, Tlsgate,
};
use crate::nginx::{OTHER_NAME, PRIVATE_NAME};
use crate::topology::{EDGE_IP, ORIGIN_IP, RELAY_IP, Topology};

/// Bound for requests that must succeed quickly or be refused quickly.
const CURL_MAX_TIME: &str = "10";
/// Bound for requests the firewall is expected to black-hole (curl exits 28 after it).
const CURL_BLOCKED_MAX_TIME: &str = "5";
/// Bound for the 200 MiB download.
const CURL_DOWNLOAD_MAX_TIME: &str = "180";
/// curl's exit code for "operation timed out".
const CURL_TIMED_OUT: i32 = 28;
/// Size of the download test file.
const BIG_FILE_LEN: u64 = 200 * 1024 * 1024;
const POLL: Duration = Duration::from_millis(100);

/// Runs the test body only where end-to-end tests can run; fails loudly otherwise.
fn preflight() -> bool {
    let run = e2e_preflight().unwrap_or_else(|message| panic!("{message}"));
    if run {
        for tool in ["nginx", "iptables", "ip6tables", "curl", "ss", "sysctl"] {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists());
            assert!(
                found,
                "e2e tests need `{tool}`; ./scripts/test.sh installs nginx, iptables, iproute2, \
                 curl, openssl and procps"
            );
        }
        tlsgate_testkit::init_tracing();
    }
    run
}

/// What one curl run did.
#[derive(Debug)]
struct Curl {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Curl {
    fn describe(&self) -> String {
        format!(
            "curl exit {} after {:?}; stdout: {:?}; stderr: {:?}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `curl -sS --max-time <max_time> <args>` in `ns`.
fn curl(ns: &NetNs, max_time: &str, args: &[&str]) -> Curl {
    let start = Instant::now();
    let out = ns
        .exec(&[&["curl", "-sS", "--max-time", max_time][..], args].concat())
        .expect("running curl");
    Curl {
        // A curl killed by a signal has no code; -1 keeps it distinct from every curl code.
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Everything one test runs on. Field order is drop order: processes stop first, then the
/// namespaces go (killing anything left inside), then the temp dir.
struct World {
    relay_gate: Option<Tlsgate>,
    edge_gate: Option<Tlsgate>,
    _nginx: ChildGuard,
    topo: Topology,
    origin_ca_pem: String,
    private_sha256: [u8; 32],
    other_sha256: [u8; 32],
    big_sha256: [u8; 32],
    dir: tlsgate_testkit::TempDir,
}

impl World {
    /// Namespaces, firewall and nginx; with `with_tlsgate`, the relay and the edge too.
    fn start(big_len: u64, with_tlsgate: bool) -> World {
        let topo = Topology::build();
        firewall::install(
            &topo.fw,
            &topo.fw_customer_if,
            &topo.fw_provider_if,
            RELAY_NAME,
        );
        let dir = tlsgate_testkit::temp_dir("tlsgate-e2e-");
        let origin_dir = dir.path().join("origin");
        std::fs::create_dir_all(&origin_dir).expect("origin dir");

        // Origin certificates come from a CA only the client trusts.
        let origin_ca = TestCa::new("e2e origin CA");
        let origin_ca_pem = origin_ca
            .write_cert_pem(&dir.path().join("origin-ca.pem"))
            .display()
            .to_string();
        let private = origin_ca.issue(&[PRIVATE_NAME]);
        let other = origin_ca.issue(&[OTHER_NAME]);
        let big = origin_dir.join("big.bin");
        let big_sha256 = tlsgate_testkit::write_pseudorandom_file(&big, big_len, 0x7153_6a7e)
            .expect("writing the download file");
        let mut nginx = nginx::start(&topo.origin, &origin_dir, &private, &other, &big);
        topo.origin.wait_listening(
            &[format!("{ORIGIN_IP}:80"), format!("{ORIGIN_IP}:443")],
            &mut nginx,
            &nginx::error_log(&origin_dir),
        );

        let mut world = World {
            relay_gate: None,
            edge_gate: None,
            _nginx: nginx,
            topo,
            origin_ca_pem,
            private_sha256: private.sha256_fingerprint(),
            other_sha256: other.sha256_fingerprint(),
            big_sha256,
            dir,
        };
        if with_tlsgate {
            world.start_tlsgate();
        }
        world
    }

    fn start_tlsgate(&mut self) {
        let topo = &self.topo;
        topo.edge
            .set_hosts(&[(RELAY_IP, RELAY_NAME)])
            .expect("edge hosts");
        topo.relay
            .set_hosts(&[(ORIGIN_IP, PRIVATE_NAME), (ORIGIN_IP, OTHER_NAME)])
            .expect("relay hosts");

        // The relay's outer certificate comes from its own CA, which only the edge trusts.
        let relay_ca = TestCa::new("e2e relay CA");
        let relay_dir = self.dir.path().join("relay");
        let edge_dir = self.dir.path().join("edge");
        std::fs::create_dir_all(&relay_dir).expect("relay dir");
        std::fs::create_dir_all(&edge_dir).expect("edge dir");
        let (relay_cert, relay_key) = relay_ca.issue(&[RELAY_NAME]).write_pem(&relay_dir, "relay");
        let relay_ca_pem = relay_ca.write_cert_pem(&edge_dir.join("relay-ca.pem"));

        let mut relay = gateway::start(
            &topo.relay,
            &relay_dir,
            "relay",
            &gateway::relay_config(&relay_cert, &relay_key),
        );
        topo.relay.wait_listening(
            &[format!("{RELAY_IP}:{RELAY_PORT}")],
            &mut relay.guard,
            &relay.log,
        );
        let mut edge = gateway::start(
            &topo.edge,
            &edge_dir,
            "edge",
            &gateway::edge_config(&relay_ca_pem),
        );
        let edge_sockets: Vec<String> = [EDGE_H2_PORT, EDGE_TLS_PORT, EDGE_HTTP_PORT]
            .iter()
            .map(|port| format!("{EDGE_IP}:{port}"))
            .collect();
        topo.edge
            .wait_listening(&edge_sockets, &mut edge.guard, &edge.log);
        self.relay_gate = Some(relay);
        self.edge_gate = Some(edge);
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, gate) in [("relay", &self.relay_gate), ("edge", &self.edge_gate)] {
            if let Some(gate) = gate {
                out.push_str(&format!("--- {name} log ---\n{}\n", gate.log_text()));
            }
        }
        out
    }
}

/// curl from the client namespace straight at nginx (not through the edge): the route
/// crosses the firewall. Returns the outcome for `https://<sni>/`, trusting anything.
fn direct_https(world: &World, sni: &str) -> Curl {
    let resolve = format!("{sni}:443:{ORIGIN_IP}");
    curl(
        &world.topo.client,
        CURL_BLOCKED_MAX_TIME,
        &[
            "--insecure",
            "--resolve",
            &resolve,
            &format!("https://{sni}/"),
        ],
    )
}

#[test]
fn firewall_passes_only_hellos_naming_the_relay() {
    if !preflight() {
        return;
    }
    let world = World::start(1024, false);
    let fw = &world.topo.fw;
    let before = firewall::counters(fw);

    // The relay's name passes: nginx answers on its default server (this proves the path
    // through the firewall works, so the failures below are the firewall's doing).
    let allowed = direct_https(&world, RELAY_NAME);
    assert_eq!(allowed.code, 0, "{}", allowed.describe());
    assert_eq!(allowed.stdout, format!("private-https host={RELAY_NAME}\n"));
    let after_allowed = firewall::counters(fw);
    assert_eq!(
        after_allowed.dropped, before.dropped,
        "the allowed hello was dropped somewhere:\n{}",
        after_allowed.listing
    );
    assert!(after_allowed.hellos_allowed > before.hellos_allowed);

    // Everything else is black-holed: other names (including look-alikes that contain the
    // relay's name) and plain HTTP. Run in parallel: each waits out its curl bound.
    let look_alike_1 = format!("x{RELAY_NAME}");
    let look_alike_2 = format!("{RELAY_NAME}.evil.net");
    let results: Vec<(String, Curl)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for sni in [PRIVATE_NAME, look_alike_1.as_str(), look_alike_2.as_str()] {
            let world = &world;
            handles.push(s.spawn(move || (sni.to_owned(), direct_https(world, sni))));
        }
        handles.push(s.spawn(|| {
            let url = format!("http://{ORIGIN_IP}/");
            let host = format!("Host: {PRIVATE_NAME}");
            let plain = curl(
                &world.topo.client,
                CURL_BLOCKED_MAX_TIME,
                &["-H", &host, &url],
            );
            ("plain http".to_owned(), plain)
        }));
        handles
            .into_iter()
            .map(|h| h.join().expect("curl thread"))
            .collect()
    });
    for (what, outcome) in &results {
        assert_eq!(
            outcome.code,
            CURL_TIMED_OUT,
            "{what} through the firewall: {}",
            outcome.describe()
        );
        eprintln!("blocked as expected: {what}: {}", outcome.describe());
    }
    let after = firewall::counters(fw);
    assert!(
        after.dropped >= after_allowed.dropped + results.len() as u64,
        "each blocked connection must show in the drop counters:\n{}",
        after.listing
    );
    eprintln!(
        "firewall drops: {} before the blocked attempts, {} after",
        after_allowed.dropped, after.dropped
    );
}

#[test]
fn tunnel_carries_tls_and_http_through_the_sni_firewall() {
    if !preflight() {
        return;
    }
    let started = Instant::now();
    let world = World::start(BIG_FILE_LEN, true);
    eprintln!(
        "topology, nginx, relay and edge up in {:?}",
        started.elapsed()
    );
    let client = &world.topo.client;
    let fw = &world.topo.fw;
    let ca = world.origin_ca_pem.as_str();
    let before = firewall::counters(fw);

    // (b) TLS through the edge over both transports: the right server answers and the
    // certificate curl verified is the origin's own (the tunnel never terminates TLS).
    for (transport, port) in [("h2", EDGE_H2_PORT), ("tls", EDGE_TLS_PORT)] {
        for (name, body, fingerprint) in [
            (PRIVATE_NAME, "private-https", world.private_sha256),
            (OTHER_NAME, "other-https", world.other_sha256),
        ] {
            let connect_to = format!("{name}:443:{EDGE_IP}:{port}");
            let body_path = world.dir.path().join(format!("body-{transport}-{name}"));
            let body_arg = body_path.display().to_string();
            let url = format!("https://{name}/");
            let outcome = curl(
                client,
                CURL_MAX_TIME,
                &[
                    "--cacert",
                    ca,
                    "--connect-to",
                    &connect_to,
                    "-o",
                    &body_arg,
                    "-w",
                    "%{http_version}\n%{certs}",
                    &url,
                ],
            );
            assert_eq!(
                outcome.code,
                0,
                "{name} over {transport}: {}\n{}",
                outcome.describe(),
                world.logs()
            );
            let got = std::fs::read_to_string(&body_path).expect("response body");
            assert_eq!(
                got,
                format!("{body} host={name}\n"),
                "{name} over {transport}"
            );
            let certs = certs_from_pem(&outcome.stdout);
            let seen = certs
                .first()
                .map(|der| sha256(der))
                .unwrap_or_else(|| panic!("curl printed no certificate: {}", outcome.stdout));
            assert_eq!(
                hex(&seen),
                hex(&fingerprint),
                "{name} over {transport}: certificate differs from the origin's"
            );
            let http_version = outcome.stdout.lines().next().unwrap_or_default();
            eprintln!(
                "(b) {name} via edge:{port} ({transport} transport): exit 0, HTTP/{http_version}, \
                 body {got:?}, leaf sha256 {} = origin's",
                hex(&seen)
            );
        }
    }

    // (c) Plain HTTP through the edge's :80 reaches nginx's HTTP server with the Host intact.
    let resolve = format!("{PRIVATE_NAME}:{EDGE_HTTP_PORT}:{EDGE_IP}");
    let url = format!("http://{PRIVATE_NAME}/some/path?q=1");
    let plain = curl(client, CURL_MAX_TIME, &["--resolve", &resolve, &url]);
    assert_eq!(plain.code, 0, "{}\n{}", plain.describe(), world.logs());
    assert_eq!(
        plain.stdout,
        format!("private-http host={PRIVATE_NAME} uri=/some/path?q=1\n")
    );
    eprintln!(
        "(c) plain HTTP via edge:80: exit 0, body {:?}",
        plain.stdout
    );

    // (d) An SNI the relay has no route for is refused (quickly, not black-holed) and the
    // relay says so in its log.
    let unknown = "unknown.example.com";
    for (transport, port) in [("h2", EDGE_H2_PORT), ("tls", EDGE_TLS_PORT)] {
        let connect_to = format!("{unknown}:443:{EDGE_IP}:{port}");
        let url = format!("https://{unknown}/");
        let refused = curl(
            client,
            CURL_MAX_TIME,
            &["--cacert", ca, "--connect-to", &connect_to, &url],
        );
        assert!(
            refused.code != 0 && refused.code != CURL_TIMED_OUT,
            "unknown SNI over {transport} must be refused: {}",
            refused.describe()
        );
        // ... with the reason, as the TLS alert curl reports for the handshake (exit 35).
        assert!(
            refused.code == 35 && refused.stderr.contains("alert access denied"),
            "the refusal over {transport} names itself: {}",
            refused.describe()
        );
        eprintln!("(d) {unknown} over {transport}: {}", refused.describe());
    }
    // One no_route refusal per attempt, naming the requested SNI.
    let refusals = wait_for_log_lines(
        world.relay_gate.as_ref().expect("relay"),
        |line| line.contains(unknown) && line.contains("no_route"),
        2,
    );
    eprintln!("(d) relay log: {refusals:#?}");

    // (e) 200 MiB through the tunnel (h2 transport, then tls transport) arrive intact.
    for (transport, port) in [("h2", EDGE_H2_PORT), ("tls", EDGE_TLS_PORT)] {
        let connect_to = format!("{PRIVATE_NAME}:443:{EDGE_IP}:{port}");
        let out_path = world.dir.path().join(format!("big-{transport}.bin"));
        let out_arg = out_path.display().to_string();
        let url = format!("https://{PRIVATE_NAME}/big");
        let download = curl(
            client,
            CURL_DOWNLOAD_MAX_TIME,
            &[
                "--cacert",
                ca,
                "--connect-to",
                &connect_to,
                "-o",
                &out_arg,
                "-w",
                "%{size_download} %{speed_download}",
                &url,
            ],
        );
        assert_eq!(
            download.code,
            0,
            "{}\n{}",
            download.describe(),
            world.logs()
        );
        let len = std::fs::metadata(&out_path).expect("downloaded file").len();
        assert_eq!(len, BIG_FILE_LEN, "download over {transport} truncated");
        let digest = tlsgate_testkit::sha256_file(&out_path).expect("digest of the download");
        assert_eq!(
            hex(&digest),
            hex(&world.big_sha256),
            "download over {transport} corrupted"
        );
        std::fs::remove_file(&out_path).expect("removing the download");
        eprintln!(
            "(e) 200 MiB over {transport}: exit 0 in {:?}, sha256 {} = origin file's \
             (size_download speed_download: {})",
            download.elapsed,
            hex(&digest),
            download.stdout
        );
    }

    // (f) None of the tunnelled flows lost a packet at the firewall.
    let after = firewall::counters(fw);
    assert_eq!(
        after.dropped, before.dropped,
        "the firewall dropped tunnelled packets:\n{}",
        after.listing
    );
    assert!(after.hellos_allowed > before.hellos_allowed);
    eprintln!(
        "(f) firewall drops across the tunnelled flows: {} before, {} after; first hellos \
         allowed: {} -> {}",
        before.dropped, after.dropped, before.hellos_allowed, after.hellos_allowed
    );

    // (a) Last, so that retransmissions of the black-holed attempts cannot touch (f): the
    // client going straight to the origin (through the firewall) gets nowhere.
    let direct_url = format!("https://{PRIVATE_NAME}/");
    let direct_resolve = format!("{PRIVATE_NAME}:443:{ORIGIN_IP}");
    let direct = curl(
        client,
        CURL_BLOCKED_MAX_TIME,
        &["--cacert", ca, "--resolve", &direct_resolve, &direct_url],
    );
    assert_eq!(direct.code, CURL_TIMED_OUT, "{}", direct.describe());
    let blocked = firewall::counters(fw);
    assert!(
        blocked.dropped > after.dropped,
        "the direct attempt must show as drops:\n{}",
        blocked.listing
    );
    eprintln!(
        "(a) direct HTTPS to {ORIGIN_IP}:443: {}; firewall drops {} -> {}",
        direct.describe(),
        after.dropped,
        blocked.dropped
    );
    eprintln!("whole test took {:?}", started.elapsed());
}

/// Polls a tlsgate log (bounded) until `count` lines satisfy `wanted`; panics with the log
/// otherwise.
fn wait_for_log_lines(gate: &Tlsgate, wanted: impl Fn(&str) -> bool, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = gate.log_text();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| wanted(l))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {count} expected lines:\n{text}",
            gate.log.display(),
            lines.len()
        );
        std::thread::sleep(POLL);
    }
}
