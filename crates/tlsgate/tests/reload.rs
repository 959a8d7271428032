//! Hot reload of the whole config (issue 7, acceptance 4) against the built binary: while curl keeps
//! requests going through the edge → relay tunnel and through the intercepting proxy, SIGHUP swaps in
//! a config with a new relay certificate and a different policy file. No request fails; a new
//! handshake with the relay shows the new certificate (SHA-256 from openssl s_client); new requests
//! follow the new policy; a download started before the reload completes on what it started with.
//! Then an invalid config and one that changes a listener's address are refused by `POST /reload`
//! with all their errors, and the config in force keeps serving.

mod lifecycle;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lifecycle::{
    Lab, RELAY_NAME, Version, admin_post, curl_result, metric, served_cert_sha256, signal, wait_for,
};

/// Requests per load worker at most, and the longest a worker runs: the load is bounded both ways.
const MAX_REQUESTS: usize = 2_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(120);
/// Body size of each load request through the edge.
const EDGE_BODY: u64 = 256 * 1024;
/// The download that spans the reload: 16 MiB at 4 MiB/s.
const LONG_BODY: u64 = 16 * 1024 * 1024;

fn policy(port: u16, version: &str) -> String {
    format!(
        "default: deny\nrules:\n  - name: {version}\n    match: localhost\n    ports: [{port}]\n    tls: bump\n    http:\n      - {{method: GET, path: /both/.*}}\n      - {{method: GET, path: /{version}/.*}}\n"
    )
}

/// One load worker's requests: `(started after the reload was applied, outcome)`.
type Outcomes = Vec<(bool, Result<(u16, u64), String>)>;

fn load_worker(
    make: impl Fn(usize) -> (std::process::Command, Option<u64>) + Send + 'static,
    stop: Arc<AtomicBool>,
    reloaded: Arc<AtomicBool>,
) -> JoinHandle<Outcomes> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + MAX_LOAD_TIME;
        let mut outcomes = Vec::new();
        for i in 0..MAX_REQUESTS {
            if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                break;
            }
            let after = reloaded.load(Ordering::SeqCst);
            let (mut cmd, expect_len) = make(i);
            let out = cmd.output().expect("run curl");
            let outcome = curl_result(&out).and_then(|(status, len)| {
                if status == 200 && len > 0 && expect_len.is_none_or(|want| len == want) {
                    Ok((status, len))
                } else {
                    Err(format!(
                        "status {status}, {len} bytes (want 200, {expect_len:?})"
                    ))
                }
            });
            outcomes.push((after, outcome));
        }
        outcomes
    })
}

/// Established TCP connections (from anyone in this network namespace) to local port `port`.
/// The local ends of the established connections to `port` (the edge's links to the relay).
fn links_to(port: u16) -> BTreeSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // fields: sl local remote state ...; state 01 is ESTABLISHED.
            let link = fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "01";
            link.then(|| fields[1].to_owned())
        })
        .collect()
}

fn status_of(cmd: &mut std::process::Command) -> u16 {
    let out = cmd.output().expect("run curl");
    curl_result(&out)
        .map(|(s, _)| s)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reload_under_load_swaps_relay_certificate_and_policy_without_a_failed_request() {
    let (_runtime, lab) = Lab::on_runtime();
    let v1 = lab.issue_relay_cert("relay-v1");
    let v2 = lab.issue_relay_cert("relay-v2");
    assert_ne!(v1, v2);
    let port = lab.origin.addr.port();
    std::fs::write(lab.path("policy-v1.yaml"), policy(port, "v1")).unwrap();
    std::fs::write(lab.path("policy-v2.yaml"), policy(port, "v2")).unwrap();
    let first = Version {
        policy: Some("policy-v1.yaml"),
        ..Version::default()
    };
    lab.write_config(&first);
    let (child, addrs) = lab.start();
    let lab = Arc::new(lab);
    let (relay, edge, proxy, admin) = (
        addrs["relay"],
        addrs["edge"],
        addrs["proxy"],
        addrs["admin"],
    );

    assert_eq!(
        served_cert_sha256(relay, RELAY_NAME),
        v1,
        "relay starts with v1"
    );
    assert_eq!(status_of(&mut lab.curl_proxy(proxy, "/v1/a", &[])), 200);
    assert_eq!(status_of(&mut lab.curl_proxy(proxy, "/v2/a", &[])), 403);

    let stop = Arc::new(AtomicBool::new(false));
    let reloaded = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let l = lab.clone();
        workers.push(load_worker(
            move |_| {
                (
                    l.curl_edge(edge, &format!("/bytes/{EDGE_BODY}"), &[]),
                    Some(EDGE_BODY),
                )
            },
            stop.clone(),
            reloaded.clone(),
        ));
    }
    let l = lab.clone();
    workers.push(load_worker(
        // Allowed by both policies; the origin echoes the path (its length varies with the version).
        move |i| (l.curl_proxy(proxy, &format!("/both/{i}"), &[]), None),
        stop.clone(),
        reloaded.clone(),
    ));
    let l = lab.clone();
    let long = std::thread::spawn(move || {
        let out = l
            .curl_edge(
                edge,
                &format!("/bytes/{LONG_BODY}"),
                &["--limit-rate", "4M"],
            )
            .output()
            .expect("run curl");
        (curl_result(&out), Instant::now())
    });
    std::thread::sleep(Duration::from_secs(1));

    // The reload: a new relay certificate and another policy file, by SIGHUP.
    lab.write_config(&Version {
        relay_cert: "relay-v2",
        policy: Some("policy-v2.yaml"),
        ..Version::default()
    });
    // The old generation's h2 connections to the relay (one per worker that carried tunnels).
    let old_links = links_to(relay.port());
    assert!(!old_links.is_empty(), "the edge is linked to the relay");
    let hup = Instant::now();
    signal(&child, "HUP");
    let applied = r#"tlsgate_config_reloads_total{result="applied"}"#;
    wait_for("the reload to apply", Duration::from_secs(15), || {
        metric(admin, applied) == Some(1.0)
    });
    let reload_latency = hup.elapsed();
    let applied_at = Instant::now();
    reloaded.store(true, Ordering::SeqCst);
    assert_eq!(
        served_cert_sha256(relay, RELAY_NAME),
        v2,
        "a new handshake shows the new relay certificate"
    );
    assert_eq!(status_of(&mut lab.curl_proxy(proxy, "/v1/a", &[])), 403);
    assert_eq!(status_of(&mut lab.curl_proxy(proxy, "/v2/a", &[])), 200);
    std::thread::sleep(Duration::from_secs(1));

    // An invalid config: every error comes back, nothing changes.
    lab.write_config(&Version {
        relay_cert: "relay-missing",
        policy: Some("policy-v2.yaml"),
        proxy_extra: "    colour: blue\n",
        ..Version::default()
    });
    let (code, body) = admin_post(admin, "/reload");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("relay-missing.pem"), "{body}");
    assert!(body.contains("colour"), "{body}");
    // A valid config that moves a listener needs a restart: refused too, naming the key.
    lab.write_config(&Version {
        relay_cert: "relay-v2",
        policy: Some("policy-v2.yaml"),
        edge_listen: "127.0.0.2:0",
        ..Version::default()
    });
    let (code, moved) = admin_post(admin, "/reload");
    assert_eq!(code, 409, "{moved}");
    assert!(moved.contains("listeners[1].listen"), "{moved}");
    assert_eq!(
        served_cert_sha256(relay, RELAY_NAME),
        v2,
        "v2 stays in force"
    );
    assert_eq!(status_of(&mut lab.curl_proxy(proxy, "/v1/a", &[])), 403);
    assert_eq!(status_of(&mut lab.curl_proxy(proxy, "/v2/a", &[])), 200);
    std::thread::sleep(Duration::from_secs(1));

    stop.store(true, Ordering::SeqCst);
    let mut totals = (0, 0);
    let mut failures = Vec::new();
    for worker in workers {
        let outcomes = worker.join().expect("load worker");
        let before = outcomes.iter().filter(|(after, _)| !after).count();
        let after = outcomes.len() - before;
        assert!(
            before > 0 && after > 0,
            "each worker ran before and after the reload ({before}/{after})"
        );
        totals = (totals.0 + before, totals.1 + after);
        failures.extend(outcomes.into_iter().filter_map(|(_, o)| o.err()));
    }
    let (long_result, long_done) = long.join().expect("long download");
    assert_eq!(
        long_result,
        Ok((200, LONG_BODY)),
        "the download spanning the reload"
    );
    assert!(
        long_done > applied_at,
        "the long download was still running when the reload applied"
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        lab.log()
    );
    assert_eq!(metric(admin, applied), Some(1.0));
    assert_eq!(
        metric(admin, r#"tlsgate_config_reloads_total{result="rejected"}"#),
        Some(2.0)
    );
    // The replaced generation retires: its pooled h2 connections to the relay close once their
    // last streams ended, leaving the new generation's: one per worker that carried tunnels since
    // (pool_size 1).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut links = links_to(relay.port());
    while !links.is_disjoint(&old_links) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        links = links_to(relay.port());
    }
    let workers = tlsgate_testkit::thread_names(child.id())
        .iter()
        .filter(|name| *name == "tlsgate-worker")
        .count();
    assert!(
        links.is_disjoint(&old_links) && (1..=workers).contains(&links.len()),
        "edge → relay connections after the reload settled: {links:?} (before it: {old_links:?}; \
         {workers} workers)\n{}",
        lab.log()
    );
    eprintln!(
        "reload under load: {} requests before, {} after, 0 failed; SIGHUP to applied in {reload_latency:?}; \
         relay certificate {}… → {}…; invalid reload refused with:\n{body}",
        totals.0,
        totals.1,
        &v1[..16],
        &v2[..16]
    );
    drop(child);
}
