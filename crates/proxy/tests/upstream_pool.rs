//! The relay's keep-alive pool of upstream HTTP/1.1 connections for forwarded plain HTTP
//! (edge `http` listener → HTTP/2 → relay → origin): reuse, origins that close idle
//! connections, and the destination guard still deciding for every new connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::config::{
    Config, Listener, ListenerKind, RelayListener, Route, Routes, TargetHost, Transport,
    UpstreamTarget,
};
use tlsgate_proxy::flow::{FlowRecord, Mode, Role};
use tlsgate_proxy::tls::relay_server_config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on one request head read by the test origin.
const MAX_HEAD: usize = 16 * 1024;
/// Every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// How the test origin treats a connection after answering a request.
#[derive(Clone, Copy)]
enum AfterResponse {
    /// Waits for the next request (keep-alive) without limit.
    KeepAlive,
    /// Closes the connection at once, although the response announced keep-alive.
    Close,
    /// Closes the connection when no request came within this time.
    CloseWhenIdleFor(Duration),
}

/// A plain-HTTP origin on `ip`:0 counting the connections it accepts; it answers every GET with
/// `200` and the body `<path> #<connection> #<request on it>`, keep-alive by HTTP/1.1 default.
struct CountingOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections that ended (the peer closed, or the origin did).
    ended: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingOrigin {
    async fn start(ip: &str, after: AfterResponse) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (counter, end_counter) = (accepted.clone(), ended.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let end_counter = end_counter.clone();
                conns.spawn(async move {
                    serve_counted(tcp, number, after).await;
                    end_counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            ended,
            task,
        }
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_counted(mut tcp: TcpStream, number: usize, after: AfterResponse) {
    let mut served = 0usize;
    loop {
        let head = match after {
            AfterResponse::CloseWhenIdleFor(idle) if served > 0 => {
                match tokio::time::timeout(idle, read_head(&mut tcp)).await {
                    Ok(head) => head,
                    Err(_) => return,
                }
            }
            _ => read_head(&mut tcp).await,
        };
        let Some(head) = head else { return };
        served += 1;
        let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: {PRIVATE}")),
            "Host is the requested authority: {head}"
        );
        let body = format!("{path} #{number} #{served}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if tcp.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        if matches!(after, AfterResponse::Close) {
            return;
        }
    }
}

/// One request head (GETs only: no body), or `None` when the peer closed or sent too much.
async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn route_to(name: &str, origin: SocketAddr) -> Route {
    Route {
        pattern: FqdnPattern::parse(name).unwrap(),
        tls: None,
        http: Some(UpstreamTarget {
            host: TargetHost::Fixed(origin.ip().to_string()),
            port: origin.port(),
        }),
    }
}

/// A relay's config routing by name on `listen`, its destination guard allowing only `allow`.
fn relay_config(routes: Routes, pki: &RelayPki, allow: &str, listen: SocketAddr) -> Config {
    let tls = relay_server_config(pki.leaf.chain.clone(), pki.leaf.key.clone_key(), None).unwrap();
    let mut config = config(vec![Listener {
        name: "relay".into(),
        listen,
        kind: ListenerKind::Relay(RelayListener {
            tls,
            routes: Arc::new(routes),
        }),
    }]);
    config.allow_destinations = vec![allow.parse().unwrap()];
    config
}

/// A relay routing by name, its destination guard allowing only `allow`.
async fn start_relay_allowing(routes: Routes, pki: &RelayPki, allow: &str) -> Running {
    start(relay_config(routes, pki, allow, any_port())).await
}

/// An HTTP/1.1 client connection to the edge's `http` listener.
async fn client_to(edge: &Running) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(edge.addr("http")).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// `GET path` with Host `name`; the status and body.
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    name: &str,
    path: &str,
) -> (StatusCode, String) {
    let request = Request::get(path)
        .header("host", name)
        .body(Empty::new())
        .unwrap();
    tokio::time::timeout(WAIT, sender.ready())
        .await
        .expect("client connection ready within 10 s")
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("response within 10 s")
        .expect("a response, not a failed request");
    let status = response.status();
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("body within 10 s")
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn relay_request_flow(record: &FlowRecord) -> bool {
    record.role == Role::Relay && record.mode == Mode::Http
}

/// An edge (h2 transport) in front of a relay routing [`PRIVATE`] to `origin`.
async fn edge_and_relay(origin: SocketAddr) -> (Running, Running) {
    let pki = RelayPki::new();
    let routes = Routes {
        routes: vec![route_to(PRIVATE, origin)],
    };
    let relay = start_relay_allowing(routes, &pki, "127.0.0.0/8").await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::H2, false),
        None,
    )
    .await;
    (edge, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_through_edge_and_relay_reuse_one_upstream_connection() {
    const REQUESTS: usize = 20;
    let origin = CountingOrigin::start("127.0.0.1", AfterResponse::KeepAlive).await;
    let (edge, mut relay) = edge_and_relay(origin.addr).await;
    // Half on one client connection, half on a new client connection each: the pool is the
    // relay's, shared by every request it forwards, not tied to a client connection.
    let mut sender = client_to(&edge).await;
    for i in 0..REQUESTS {
        if i >= REQUESTS / 2 {
            sender = client_to(&edge).await;
        }
        let (status, body) = get(&mut sender, PRIVATE, &format!("/r{i}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("/r{i} #1 #{}", i + 1), "request {i}");
    }
    assert_eq!(origin.accepted(), 1, "one upstream connection for all");
    // Flows per request, as before the pool: one relay record each, with its status and upstream.
    for i in 0..REQUESTS {
        let record = relay
            .flow("relay request flow", |r| {
                relay_request_flow(r)
                    && r.http
                        .as_ref()
                        .is_some_and(|h| h.url.ends_with(&format!("/r{i}")))
            })
            .await;
        assert_eq!(record.status, Some(200));
        assert_eq!(record.reason, None, "{record:?}");
        assert_eq!(record.upstream, Some(origin.addr.to_string()));
    }
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_closing_each_connection_after_its_response_costs_no_failed_request() {
    const REQUESTS: usize = 30;
    let origin = CountingOrigin::start("127.0.0.1", AfterResponse::Close).await;
    let (edge, relay) = edge_and_relay(origin.addr).await;
    let mut sender = client_to(&edge).await;
    // Back to back: the next request reaches the relay while the origin's close of the pooled
    // connection is still in flight; it must go out on a new connection, not fail.
    for i in 0..REQUESTS {
        let (status, body) = get(&mut sender, PRIVATE, &format!("/c{i}")).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        assert_eq!(body, format!("/c{i} #{} #1", origin.accepted()));
    }
    assert_eq!(origin.accepted(), REQUESTS, "a new connection for each");
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_closing_idle_connections_costs_no_failed_request() {
    const ROUNDS: usize = 4;
    let origin = CountingOrigin::start(
        "127.0.0.1",
        AfterResponse::CloseWhenIdleFor(Duration::from_millis(100)),
    )
    .await;
    let (edge, relay) = edge_and_relay(origin.addr).await;
    let mut sender = client_to(&edge).await;
    for round in 0..ROUNDS {
        // Two quick requests (the second usually on the first's connection: the pool may also
        // open a second one when the first is not back yet); then the origin's idle timeout
        // closes every connection, and the next round must not fail on one of them.
        let (status, first) = get(&mut sender, PRIVATE, "/a").await;
        assert_eq!(status, StatusCode::OK, "round {round}: {first}");
        let (status, second) = get(&mut sender, PRIVATE, "/b").await;
        assert_eq!(status, StatusCode::OK, "round {round}: {second}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let accepted = origin.accepted();
    assert!(
        (ROUNDS..=2 * ROUNDS).contains(&accepted),
        "a new connection per round once the old one was closed: {accepted}"
    );
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_lets_no_request_past_the_destination_guard() {
    // Both origins on loopback; the relay's guard allows 127.0.0.1 only, so 127.0.0.2 is refused.
    let allowed = CountingOrigin::start("127.0.0.1", AfterResponse::KeepAlive).await;
    let forbidden = CountingOrigin::start("127.0.0.2", AfterResponse::KeepAlive).await;
    let pki = RelayPki::new();
    let routes = Routes {
        routes: vec![
            route_to(PRIVATE, allowed.addr),
            route_to(OTHER, forbidden.addr),
        ],
    };
    let mut relay = start_relay_allowing(routes, &pki, "127.0.0.1/32").await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::H2, false),
        None,
    )
    .await;
    let mut sender = client_to(&edge).await;
    for round in 0..3 {
        let (status, _) = get(&mut sender, PRIVATE, "/ok").await;
        assert_eq!(status, StatusCode::OK, "round {round}");
        let (status, body) = get(&mut sender, OTHER, "/refused").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "round {round}: {body}");
        assert!(body.contains("destination_forbidden"), "{body}");
        let record = relay
            .flow("refused relay request", |r| {
                relay_request_flow(r) && r.name.as_deref() == Some(OTHER)
            })
            .await;
        assert_eq!(record.reason, Some("destination_forbidden"));
        assert_eq!(record.status, Some(403));
    }
    assert_eq!(
        allowed.accepted(),
        1,
        "the allowed origin's connection is reused"
    );
    assert_eq!(
        forbidden.accepted(),
        0,
        "no connection to a forbidden address"
    );
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_starts_a_new_pool_and_the_old_generations_connections_close() {
    let origin = CountingOrigin::start("127.0.0.1", AfterResponse::KeepAlive).await;
    let pki = RelayPki::new();
    let routes = || Routes {
        routes: vec![route_to(PRIVATE, origin.addr)],
    };
    let gateway =
        tlsgate_proxy::Gateway::bind(relay_config(routes(), &pki, "127.0.0.0/8", any_port()))
            .await
            .unwrap();
    let relay_addr = gateway.local_addrs()[0].1;
    let reloader = gateway.reloader();
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(gateway.run(stop.clone()));
    let upstream = relay_upstream(&pki, relay_addr, Transport::H2, false);

    let edge = start_edge(upstream.clone(), None).await;
    let mut sender = client_to(&edge).await;
    for _ in 0..3 {
        assert_eq!(get(&mut sender, PRIVATE, "/old").await.0, StatusCode::OK);
    }
    assert_eq!(origin.accepted(), 1);
    // The same config again (a reload may not change `listen`: it stays 127.0.0.1:0).
    let same = relay_config(routes(), &pki, "127.0.0.0/8", any_port());
    reloader.apply(same, "test").await.unwrap();
    assert_eq!(
        origin.ended(),
        0,
        "the old generation still serves its edge connection"
    );

    // The old edge's outer connection held the old generation; once it is gone, so is its pool.
    edge.stop().await;
    let edge = start_edge(upstream, None).await;
    let mut sender = client_to(&edge).await;
    for _ in 0..3 {
        assert_eq!(get(&mut sender, PRIVATE, "/new").await.0, StatusCode::OK);
    }
    assert_eq!(
        origin.accepted(),
        2,
        "the new generation's pool opened its own connection"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while origin.ended() < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        origin.ended(),
        1,
        "the old pool's idle connection closed with its generation"
    );
    edge.stop().await;
    stop.cancel();
    let _ = tokio::time::timeout(WAIT, relay).await;
}
