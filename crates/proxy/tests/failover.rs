//! Relay endpoints (Envoy STRICT_DNS + ROUND_ROBIN): an edge whose relay name resolves (through a
//! test DNS server) to two relays, on 127.0.0.1 and 127.0.0.2 with the same port. One unreachable
//! from the start, one stopped under load and restarted, and the address set changed under the
//! edge's feet; both transports. Every load loop is bounded in count and time; figures are printed.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tlsgate_proxy::config::{EndpointSettings, RelayUpstream, Transport};
use tlsgate_proxy::flow::Role;
use tlsgate_proxy::transport::endpoints::HEDGE_AFTER;
use tlsgate_testkit::{TestDns, https_get};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The relay's host name; only the test DNS server knows it.
const RELAY_HOST: &str = "relays.provider-b.example";
/// Ejected endpoints are retried after 200 ms, at most 1 s: restarts are seen quickly.
const TEST_ENDPOINTS: EndpointSettings = EndpointSettings {
    resolve_interval: Duration::from_secs(5),
    retry_backoff_min: Duration::from_millis(200),
    retry_backoff_max: Duration::from_secs(1),
};
/// The acceptance bound: traffic continues via the other endpoint within this.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Two relay addresses with the same port: A is bound (and returned running), B's address is free.
async fn relay_a_and_address_of_b(services: &Services, pki: &RelayPki) -> (Running, SocketAddr) {
    for _ in 0..20 {
        let a = start_relay(services, pki, false, any_port()).await;
        let port = a.addr("relay").port();
        let b = SocketAddr::new(ip("127.0.0.2"), port);
        // The port is free on 127.0.0.1's neighbour almost always; else try another port.
        if std::net::TcpListener::bind(b).is_ok() {
            return (a, b);
        }
        a.stop().await;
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// The relay upstream named `RELAY_HOST:port`, with the test endpoint settings.
fn upstream(
    pki: &RelayPki,
    port: u16,
    transport: Transport,
    settings: EndpointSettings,
) -> Arc<RelayUpstream> {
    let base = relay_upstream(
        pki,
        SocketAddr::new(ip("127.0.0.1"), port),
        transport,
        false,
    );
    let mut upstream = Arc::into_inner(base).expect("a fresh upstream has one owner");
    upstream.host = RELAY_HOST.into();
    upstream.endpoints = settings;
    Arc::new(upstream)
}

async fn edge_via_dns(upstream: Arc<RelayUpstream>, dns: &TestDns) -> Running {
    let server = dns.addr;
    start_edge_edited(upstream, |config| config.dns_server = Some(server)).await
}

/// Relay-side flows of served tunnels recorded since the last call.
fn served(relay: &mut Running) -> usize {
    let mut count = 0;
    loop {
        match relay.flows.try_recv() {
            Ok(flow) if flow.role == Role::Relay && flow.reason.is_none() => count += 1,
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(_) => return count,
        }
    }
}

/// Edge-side flows recorded since the last call: `upstream` of each.
fn edge_upstreams(edge: &mut Running) -> Vec<Option<String>> {
    let mut out = Vec::new();
    loop {
        match edge.flows.try_recv() {
            Ok(flow) if flow.role == Role::Edge => out.push(flow.upstream.clone()),
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

/// One client request through the edge.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    ended: Instant,
    error: Option<String>,
}

/// A client gives up on one request after this (a tunnel caught on a cut link never ends).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// `workers` clients each fetching through the edge in a loop until `duration` has passed (and at
/// most `MAX_PER_WORKER` requests each).
async fn load(
    edge: SocketAddr,
    services: &Services,
    workers: usize,
    duration: Duration,
) -> Vec<Outcome> {
    const MAX_PER_WORKER: usize = 5_000;
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let config = services.client_config();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while Instant::now() < deadline && outcomes.len() < MAX_PER_WORKER {
                    let started = Instant::now();
                    let get = https_get(edge, PRIVATE, config.clone(), "/bytes/20000");
                    let error = match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
                        Ok(Ok(r)) if r.status == 200 && r.body.len() == 20_000 => None,
                        Ok(Ok(r)) => Some(format!("status {} body {}", r.status, r.body.len())),
                        Ok(Err(e)) => Some(e),
                        Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    };
                    outcomes.push(Outcome {
                        started,
                        ended: Instant::now(),
                        error,
                    });
                }
                outcomes
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

async fn assert_unreachable_endpoint_is_skipped(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut a, b_addr) = relay_a_and_address_of_b(&services, &pki).await;
    let a_addr = a.addr("relay");
    // B never runs: connecting to it is refused.
    let dns = TestDns::start(&[a_addr.ip(), b_addr.ip()]).await;
    let mut edge = edge_via_dns(
        upstream(&pki, a_addr.port(), transport, TEST_ENDPOINTS),
        &dns,
    )
    .await;
    let started = Instant::now();
    for i in 0..20 {
        let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
            .await
            .unwrap_or_else(|e| {
                panic!("{transport:?} request {i} failed with one endpoint up: {e}")
            });
        assert_eq!(reply.status, 200);
    }
    let took = started.elapsed();
    // Concurrently too: nobody waits on the dead endpoint.
    let edge_addr = edge.addr("tls");
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let config = services.client_config();
            tokio::spawn(async move { https_get(edge_addr, PRIVATE, config, "/").await })
        })
        .collect();
    for task in burst {
        assert_eq!(task.await.unwrap().expect("burst request").status, 200);
    }
    eprintln!(
        "{transport:?}: 20 sequential tunnels with one of two endpoints unreachable took {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(served(&mut a), 40, "every tunnel went through A");
    let upstreams = edge_upstreams(&mut edge);
    assert_eq!(upstreams.len(), 40);
    let a_name = a_addr.to_string();
    assert!(
        upstreams
            .iter()
            .all(|u| u.as_deref() == Some(a_name.as_str())),
        "edge flows name the endpoint that served: {upstreams:?}"
    );
    assert!(
        dns.queries() >= 1,
        "the relay name was resolved by the test DNS server"
    );
    edge.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn h2_skips_an_endpoint_unreachable_from_the_start() {
    assert_unreachable_endpoint_is_skipped(Transport::H2).await;
}

#[tokio::test]
async fn tls_skips_an_endpoint_unreachable_from_the_start() {
    assert_unreachable_endpoint_is_skipped(Transport::Tls).await;
}

async fn assert_round_robin(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut a, b_addr) = relay_a_and_address_of_b(&services, &pki).await;
    let mut b = start_relay(&services, &pki, false, b_addr).await;
    let a_addr = a.addr("relay");
    let dns = TestDns::start(&[a_addr.ip(), b_addr.ip()]).await;
    let edge = edge_via_dns(
        upstream(&pki, a_addr.port(), transport, TEST_ENDPOINTS),
        &dns,
    )
    .await;
    for _ in 0..20 {
        let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (on_a, on_b) = (served(&mut a), served(&mut b));
    eprintln!("{transport:?}: 20 tunnels spread as A={on_a} B={on_b}");
    assert_eq!(on_a + on_b, 20);
    assert!(
        on_a >= 8 && on_b >= 8,
        "round robin over both: A={on_a} B={on_b}"
    );
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn h2_spreads_tunnels_over_both_endpoints() {
    assert_round_robin(Transport::H2).await;
}

#[tokio::test]
async fn tls_spreads_tunnels_over_both_endpoints() {
    assert_round_robin(Transport::Tls).await;
}

async fn assert_failover_under_load_and_return(transport: Transport) {
    tlsgate_testkit::init_tracing();
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut a, b_addr) = relay_a_and_address_of_b(&services, &pki).await;
    let b = start_relay(&services, &pki, false, b_addr).await;
    let a_addr = a.addr("relay");
    let dns = TestDns::start(&[a_addr.ip(), b_addr.ip()]).await;
    let edge = edge_via_dns(
        upstream(&pki, a_addr.port(), transport, TEST_ENDPOINTS),
        &dns,
    )
    .await;

    // 4 clients for 6 s; B is stopped 2 s in (its listener closes at once, its connections after
    // the 200 ms grace).
    let edge_addr = edge.addr("tls");
    let load = load(edge_addr, &services, 4, Duration::from_secs(6));
    let kill = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at = Instant::now();
        b.stop().await;
        at
    };
    let (outcomes, killed_at) = tokio::join!(load, kill);

    let before: Vec<&Outcome> = outcomes.iter().filter(|o| o.ended < killed_at).collect();
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.ended >= killed_at).collect();
    let failed_before = before.iter().filter(|o| o.error.is_some()).count();
    let failed_after: Vec<&&Outcome> = after.iter().filter(|o| o.error.is_some()).collect();
    // Failover time: from the kill to the end of the last failed request (0 when none failed).
    let failover = failed_after
        .iter()
        .map(|o| o.ended - killed_at)
        .max()
        .unwrap_or_default();
    let ok_after_failover = after
        .iter()
        .filter(|o| o.error.is_none() && o.ended > killed_at + failover)
        .count();
    eprintln!(
        "{transport:?}: {} requests before the kill ({failed_before} failed), {} after ({} failed: {:?}); \
         failover time {failover:?}; {ok_after_failover} served after it",
        before.len(),
        after.len(),
        failed_after.len(),
        failed_after
            .iter()
            .map(|o| o.error.clone())
            .take(3)
            .collect::<Vec<_>>(),
    );
    assert_eq!(failed_before, 0, "no failure while both endpoints were up");
    assert!(
        failover < FAILOVER_BOUND,
        "traffic must continue via A within {FAILOVER_BOUND:?}, took {failover:?}"
    );
    assert!(
        ok_after_failover >= 20,
        "traffic continued via A after the kill: {ok_after_failover} requests"
    );
    served(&mut a);

    // B comes back on the same address: it is used again once its backoff (≤ 1 s) has passed.
    let mut b = start_relay(&services, &pki, false, b_addr).await;
    let restarted = Instant::now();
    let mut back_after = None;
    for _ in 0..200 {
        let reply = https_get(edge_addr, PRIVATE, services.client_config(), "/")
            .await
            .expect("requests keep working while B comes back");
        assert_eq!(reply.status, 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
        if served(&mut b) > 0 {
            back_after = Some(restarted.elapsed());
            break;
        }
        if restarted.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let back_after = back_after.expect("the restarted endpoint carries tunnels again within 10 s");
    eprintln!("{transport:?}: restarted endpoint used again after {back_after:?}");
    assert!(
        back_after < TEST_ENDPOINTS.retry_backoff_max + Duration::from_secs(2),
        "used again after its backoff, took {back_after:?}"
    );
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_fails_over_within_5s_when_an_endpoint_dies_under_load_and_uses_it_again() {
    assert_failover_under_load_and_return(Transport::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_fails_over_within_5s_when_an_endpoint_dies_under_load_and_uses_it_again() {
    assert_failover_under_load_and_return(Transport::Tls).await;
}

async fn assert_re_resolution(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut a, b_addr) = relay_a_and_address_of_b(&services, &pki).await;
    let mut b = start_relay(&services, &pki, false, b_addr).await;
    let a_addr = a.addr("relay");
    let dns = TestDns::start(&[a_addr.ip()]).await;
    let settings = EndpointSettings {
        resolve_interval: Duration::from_millis(300),
        ..TEST_ENDPOINTS
    };
    let edge = edge_via_dns(upstream(&pki, a_addr.port(), transport, settings), &dns).await;
    for _ in 0..5 {
        https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((served(&mut a), served(&mut b)), (5, 0), "only A is known");

    // The name now points at B only: new tunnels follow within a few resolve intervals.
    dns.set_answers(&[b_addr.ip()]);
    let changed = Instant::now();
    let mut moved_after = None;
    for _ in 0..200 {
        let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
            .await
            .expect("no request fails while the address set changes");
        assert_eq!(reply.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if served(&mut b) > 0 {
            moved_after = Some(changed.elapsed());
            break;
        }
        if changed.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let moved_after = moved_after.expect("B was used within 5 s of the DNS change");
    eprintln!(
        "{transport:?}: re-resolution moved tunnels to the new address after {moved_after:?}"
    );
    served(&mut a);
    for _ in 0..10 {
        https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        (served(&mut a), served(&mut b)),
        (0, 10),
        "the dropped address gets no new tunnels"
    );
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn h2_re_resolution_follows_a_changed_address_set() {
    assert_re_resolution(Transport::H2).await;
}

#[tokio::test]
async fn tls_re_resolution_follows_a_changed_address_set() {
    assert_re_resolution(Transport::Tls).await;
}

/// A TCP link from `addr` to a relay that can be cut: from `cut()` on it forwards nothing either
/// way and serves no new connection, yet closes nothing — what a link whose packets are dropped
/// looks like from both ends (no refusal, no reset). Dropping it closes everything.
struct Link {
    addr: SocketAddr,
    cut: CancellationToken,
    _tasks: JoinSet<()>,
}

impl Link {
    async fn start(addr: SocketAddr, to: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let cut = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let link_cut = cut.clone();
        tasks.spawn(async move {
            let mut held = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let cut = link_cut.clone();
                held.spawn(async move {
                    if cut.is_cancelled() {
                        // Accepted by the kernel, never answered.
                        let _hold = client;
                        return std::future::pending::<()>().await;
                    }
                    let Ok(relay) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (rr, rw) = relay.into_split();
                    let up = forward(cr, rw, cut.clone());
                    let down = forward(rr, cw, cut);
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            addr,
            cut,
            _tasks: tasks,
        }
    }

    fn cut(&self) {
        self.cut.cancel();
    }
}

/// Copies `from` to `to` until EOF; once `cut`, holds both ends open forever without a byte.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while !cut.is_cancelled() {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = cut.cancelled() => break,
        };
        if cut.is_cancelled() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _hold = (from, to);
    std::future::pending::<()>().await
}

/// Relay A, and relay B reached through a [`Link`] that can be cut, both behind the test DNS name.
async fn a_and_linked_b(services: &Services, pki: &RelayPki) -> (Running, Running, Link, TestDns) {
    let (a, b_addr) = relay_a_and_address_of_b(services, pki).await;
    // B itself listens on 127.0.0.3; the edge reaches it through the link on 127.0.0.2.
    let b = start_relay(services, pki, false, SocketAddr::new(ip("127.0.0.3"), 0)).await;
    let link = Link::start(b_addr, b.addr("relay")).await;
    let dns = TestDns::start(&[a.addr("relay").ip(), link.addr.ip()]).await;
    (a, b, link, dns)
}

async fn assert_failover_when_the_link_goes_silent(transport: Transport) {
    tlsgate_testkit::init_tracing();
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut a, mut b, link, dns) = a_and_linked_b(&services, &pki).await;
    let a_addr = a.addr("relay");
    let edge = edge_via_dns(
        upstream(&pki, a_addr.port(), transport, TEST_ENDPOINTS),
        &dns,
    )
    .await;
    // Warm up: both endpoints carry tunnels.
    for _ in 0..10 {
        https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        served(&mut a) > 0 && served(&mut b) > 0,
        "both endpoints in use"
    );

    let edge_addr = edge.addr("tls");
    let load = load(edge_addr, &services, 4, Duration::from_secs(8));
    let cut = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        link.cut();
        Instant::now()
    };
    let (outcomes, cut_at) = tokio::join!(load, cut);

    let failed_before = outcomes
        .iter()
        .filter(|o| o.ended < cut_at && o.error.is_some())
        .count();
    // Requests in flight on the cut link when it was cut cannot be saved (their bytes are lost
    // with it); requests started after the cut must be served via A.
    let in_flight_lost = outcomes
        .iter()
        .filter(|o| o.started < cut_at && o.ended >= cut_at && o.error.is_some())
        .count();
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.started >= cut_at).collect();
    let failed_after: Vec<&&Outcome> = after.iter().filter(|o| o.error.is_some()).collect();
    let slowest_after = after
        .iter()
        .map(|o| o.ended - o.started)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{transport:?} link cut: {failed_before} failed before; {in_flight_lost} in flight lost; {} started \
         after the cut, {} failed ({:?}), the slowest took {slowest_after:?}",
        after.len(),
        failed_after.len(),
        failed_after
            .iter()
            .map(|o| o.error.clone())
            .take(3)
            .collect::<Vec<_>>(),
    );
    assert_eq!(failed_before, 0);
    assert!(
        failed_after.is_empty(),
        "every tunnel started after the cut is served via A"
    );
    // Each new tunnel is served within the bound (a hedged one waits HEDGE_AFTER for B first).
    assert!(
        slowest_after < FAILOVER_BOUND,
        "a request after the cut took {slowest_after:?}"
    );
    assert!(
        after.len() >= 20,
        "traffic continued: {} requests",
        after.len()
    );
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_fails_over_within_5s_when_the_link_to_an_endpoint_goes_silent() {
    assert_failover_when_the_link_goes_silent(Transport::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_fails_over_within_5s_when_the_link_to_an_endpoint_goes_silent() {
    assert_failover_when_the_link_goes_silent(Transport::Tls).await;
}

/// Once an endpoint is ejected, new tunnels go to the healthy one first, even while the ejected
/// endpoint's connection still looks up (a silent link gives no sign until the h2 keep-alive
/// times out): none waits [`HEDGE_AFTER`] for it. The h2 transport picks its connection without a
/// lock while every endpoint is healthy (`transport::h2::Pool::sender_fast`); this is what it must
/// not pick once one is not.
async fn assert_an_ejected_endpoint_is_passed_over(transport: Transport) {
    tlsgate_testkit::init_tracing();
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut a, mut b, link, dns) = a_and_linked_b(&services, &pki).await;
    let a_addr = a.addr("relay");
    // Ejected for longer than the test lasts.
    let settings = EndpointSettings {
        retry_backoff_min: Duration::from_secs(30),
        retry_backoff_max: Duration::from_secs(30),
        ..TEST_ENDPOINTS
    };
    let edge = edge_via_dns(upstream(&pki, a_addr.port(), transport, settings), &dns).await;
    let get = || https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/");
    for _ in 0..4 {
        get().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(served(&mut b) > 0, "B in use before the cut");

    link.cut();
    // Tunnels go round: within two, one is asked of B, waits HEDGE_AFTER and is served by A,
    // which ejects B.
    let mut hedged = None;
    for _ in 0..2 {
        let started = Instant::now();
        get().await.unwrap();
        if started.elapsed() >= HEDGE_AFTER {
            hedged = Some(started.elapsed());
            break;
        }
    }
    assert!(
        hedged.is_some(),
        "one of two tunnels after the cut was asked of B first"
    );

    served(&mut a);
    let mut slowest = Duration::ZERO;
    for _ in 0..8 {
        let started = Instant::now();
        get().await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("{transport:?}: hedged {hedged:?}, then 8 tunnels, the slowest {slowest:?}");
    assert!(
        slowest < HEDGE_AFTER / 2,
        "a tunnel after B's ejection waited for B: {slowest:?}"
    );
    // A relay records a tunnel when both its sides have closed: wait for the last ones.
    let mut by_a = 0;
    for _ in 0..40 {
        by_a += served(&mut a);
        if by_a >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(by_a, 8, "A served every one");
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_passes_over_an_ejected_endpoint_whose_connection_looks_up() {
    assert_an_ejected_endpoint_is_passed_over(Transport::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passes_over_an_ejected_endpoint_whose_connection_looks_up() {
    assert_an_ejected_endpoint_is_passed_over(Transport::Tls).await;
}
