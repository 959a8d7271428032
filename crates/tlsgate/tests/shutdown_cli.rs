//! Graceful shutdown of the built binary (issue 7, acceptance 3): with 20 large downloads through the
//! intercepting proxy (bumped, 64 MiB each) and 20 tunnels through the edge → relay h2 transport
//! (16 MiB each) in flight, SIGTERM closes every listener at once (new connections are refused),
//! every transfer completes with the right byte count within the grace period, and the process
//! exits 0 right after the last one.

mod lifecycle;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lifecycle::{Lab, Version, curl_result, refused, signal, wait_for};

const DOWNLOADS: usize = 20;
const DOWNLOAD_BYTES: u64 = 64 * 1024 * 1024;
const TUNNELS: usize = 20;
const TUNNEL_BYTES: u64 = 16 * 1024 * 1024;
/// Per-transfer rate cap, so every transfer is still running when the signal comes (and the two
/// shared cores are not saturated): downloads ≥ 8 s, tunnels ≥ 6 s. A debug build on two busy
/// cores bumps more slowly than that (73 s for the whole drain measured), hence the long grace.
const DOWNLOAD_RATE: &str = "8M";
const TUNNEL_RATE: &str = "3M";
/// `timeouts.shutdown_grace` of the config; everything must finish inside it.
const GRACE: Duration = Duration::from_secs(240);

type Transfer = JoinHandle<(Result<(u16, u64), String>, Instant)>;

fn spawn_transfer(mut cmd: std::process::Command) -> Transfer {
    std::thread::spawn(move || {
        let out = cmd.output().expect("run curl");
        (curl_result(&out), Instant::now())
    })
}

#[test]
fn sigterm_drains_downloads_and_tunnels_refuses_new_connections_and_exits_0() {
    let (_runtime, lab) = Lab::on_runtime();
    lab.issue_relay_cert("relay-v1");
    lab.write_config(&Version {
        grace: &format!("{}s", GRACE.as_secs()),
        ..Version::default()
    });
    let (mut child, addrs) = lab.start();
    let lab = Arc::new(lab);
    let (relay, edge, proxy) = (addrs["relay"], addrs["edge"], addrs["proxy"]);

    let mut transfers = Vec::new();
    for _ in 0..DOWNLOADS {
        transfers.push((
            DOWNLOAD_BYTES,
            spawn_transfer(lab.curl_proxy(
                proxy,
                &format!("/bytes/{DOWNLOAD_BYTES}"),
                &["--limit-rate", DOWNLOAD_RATE],
            )),
        ));
    }
    for _ in 0..TUNNELS {
        transfers.push((
            TUNNEL_BYTES,
            spawn_transfer(lab.curl_edge(
                edge,
                &format!("/bytes/{TUNNEL_BYTES}"),
                &["--limit-rate", TUNNEL_RATE],
            )),
        ));
    }
    // Every transfer connected and is streaming: the listeners count them as active.
    let admin = addrs["admin"];
    let active = |listener: &str| {
        lifecycle::metric(
            admin,
            &format!(
                "tlsgate_connections_active{{listener=\"{listener}\",role=\"{}\"}}",
                if listener == "edge" {
                    "edge"
                } else {
                    "intercept"
                }
            ),
        )
    };
    // The downloads' response heads (one served flow each) and every edge connection open.
    let served =
        "tlsgate_flows_total{role=\"intercept\",mode=\"bump\",verdict=\"FORWARDED\",reason=\"\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while lifecycle::metric(admin, served) != Some(DOWNLOADS as f64)
        || active("edge") != Some(TUNNELS as f64)
    {
        assert!(
            Instant::now() < deadline,
            "40 transfers in flight: {:?} downloads started, {:?} tunnels",
            lifecycle::metric(admin, served),
            active("edge"),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    if transfers.iter().any(|(_, t)| t.is_finished()) {
        let done: Vec<_> = transfers
            .into_iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(want, t)| (want, t.join().map(|r| r.0)))
            .collect();
        panic!("every transfer is still in flight at the signal; done early: {done:?}");
    }

    let term = Instant::now();
    signal(&child, "TERM");
    // From the signal on, new connections are refused on every listener.
    wait_for("listeners to close", Duration::from_secs(2), || {
        [relay, edge, proxy].into_iter().all(refused)
    });
    let closed_after = term.elapsed();
    let late = lab.curl_edge(edge, "/bytes/1", &[]).output().expect("curl");
    assert!(
        curl_result(&late).is_err(),
        "a new request after the signal fails"
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the process waits for in-flight transfers"
    );

    let mut last_done = term;
    let mut failures = Vec::new();
    for (want, transfer) in transfers {
        let (result, done) = transfer.join().expect("transfer thread");
        last_done = last_done.max(done);
        match result {
            Ok((200, got)) if got == want => {}
            other => failures.push(format!("want 200 and {want} bytes, got {other:?}")),
        }
    }
    let drained = last_done.duration_since(term);
    assert!(
        failures.is_empty(),
        "{} transfers failed: {failures:?}\n{}",
        failures.len(),
        lab.log()
    );
    assert!(drained < GRACE, "drained in {drained:?}, within {GRACE:?}");

    let exit = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            term.elapsed() < GRACE + Duration::from_secs(10),
            "tlsgate did not exit after the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exited = term.elapsed();
    assert_eq!(exit.code(), Some(0), "{}", lab.log());
    assert!(
        exited < drained + Duration::from_secs(3),
        "exits promptly after the last transfer ({exited:?} vs {drained:?})"
    );
    eprintln!(
        "shutdown: {DOWNLOADS} downloads × {} MiB + {TUNNELS} tunnels × {} MiB in flight at SIGTERM; \
         listeners refused connections after {closed_after:?}; last transfer done {drained:?} after \
         the signal; exit 0 after {exited:?} (grace {GRACE:?})",
        DOWNLOAD_BYTES >> 20,
        TUNNEL_BYTES >> 20
    );
}
