//! `/metrics` moves as real traffic passes, in process: an edge with one `tls-passthrough` listener
//! per tunnel transport in front of a relay (tunnels, refusals, garbage ClientHellos, an HTTP/2
//! stream the client resets), and an explicit interceptor driven by curl (bumped, refused and
//! untrusted-origin requests, a garbage ClientHello after CONNECT). Each new counter and histogram
//! is checked for the exact amount it moves, and `promtool check metrics` must accept the output.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::config::{
    AdminSettings, CertStrategy, EdgeTls, InterceptAction, InterceptRule, Listener, ListenerKind,
    RelayListener, Route, TargetHost, Transport, UpstreamTarget,
};
use tlsgate_proxy::tls::relay_server_config;
use tlsgate_testkit::{TestCa, https_get, spawn_https_origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A name the relay forwards plain HTTP for, to an upstream that accepts and never answers.
const SLOW: &str = "slow.service.example.com";
const DENIED: &str = "deny.example.test";
const BUMPED: &str = "www.example.test";
const UNTRUSTED: &str = "untrusted.example.test";

/// How long a test waits for a counter to reach its value.
const SETTLE: Duration = Duration::from_secs(10);

fn admin() -> AdminSettings {
    AdminSettings {
        listen: any_port(),
        bearer_token: None,
    }
}

/// `GET /metrics` on the admin API.
async fn scrape(admin: SocketAddr) -> String {
    let tcp = TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", admin.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("/metrics answers within 10 s")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until every `(series, value)` holds, or fails after [`SETTLE`] showing what differs.
async fn settle(admin: SocketAddr, expected: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let metrics = scrape(admin).await;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(series, value)| sample(&metrics, series) != Some(*value))
            .map(|(series, value)| {
                format!(
                    "{series}: want {value}, have {:?}",
                    sample(&metrics, series)
                )
            })
            .collect();
        if wrong.is_empty() {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "after {SETTLE:?}:\n{}\n\n{metrics}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `promtool check metrics` (Debian's prometheus package) finds nothing wrong with `metrics`.
fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed to check /metrics (apt-get install prometheus): {e}")
        });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(metrics.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `bytes` to `addr` as a client's first bytes and waits (bounded) for the close.
async fn send_garbage(addr: SocketAddr, bytes: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    read_to_close(&mut tcp).await;
}

async fn read_to_close(tcp: &mut TcpStream) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the connection was not closed within 10 s");
}

/// A TLS record header announcing an empty handshake record: a malformed ClientHello.
const EMPTY_HANDSHAKE_RECORD: [u8; 5] = [0x16, 0x03, 0x01, 0x00, 0x00];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_relay_metrics_move_with_tunnels_over_both_transports() {
    let services = Services::start().await;
    let pki = RelayPki::new();

    // An upstream that accepts and never answers: a stream to it waits until the client resets it.
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = slow.accept().await {
            held.push(tcp);
        }
    });
    let mut routes = services.routes();
    routes.routes.push(Route {
        pattern: FqdnPattern::parse(SLOW).unwrap(),
        tls: None,
        http: Some(UpstreamTarget {
            host: TargetHost::Fixed(slow_addr.ip().to_string()),
            port: slow_addr.port(),
        }),
    });
    let tls = relay_server_config(pki.leaf.chain.clone(), pki.leaf.key.clone_key(), None).unwrap();
    let mut relay_config = config(vec![Listener {
        name: "relay".into(),
        listen: any_port(),
        kind: ListenerKind::Relay(RelayListener {
            tls,
            routes: Arc::new(routes),
        }),
    }]);
    relay_config.visibility.admin = Some(admin());
    let relay = start(relay_config).await;
    let relay_admin = relay.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);

    let passthrough = |name: &str, transport| Listener {
        name: name.into(),
        listen: any_port(),
        kind: ListenerKind::TlsPassthrough(EdgeTls {
            relay: relay_upstream(&pki, relay.addr("relay"), transport, false),
            inner_port: 443,
            default_sni: None,
        }),
    };
    let mut edge_config = config(vec![
        passthrough("tls-h2", Transport::H2),
        passthrough("tls-raw", Transport::Tls),
    ]);
    edge_config.visibility.admin = Some(admin());
    let edge = start(edge_config).await;
    let edge_admin = edge.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);

    // One tunnel per transport, served; one refused by the relay (no route), over h2.
    let mut moved = 0;
    for listener in ["tls-h2", "tls-raw"] {
        let reply = https_get(edge.addr(listener), PRIVATE, services.client_config(), "/")
            .await
            .unwrap_or_else(|e| panic!("{listener}: {e}"));
        assert_eq!(reply.status, 200);
        moved += reply.body.len();
    }
    let refused = https_get(
        edge.addr("tls-h2"),
        "unrouted.example.com",
        services.client_config(),
        "/",
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    // Garbage ClientHellos: not TLS at all, and a malformed handshake record.
    send_garbage(edge.addr("tls-h2"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    send_garbage(edge.addr("tls-raw"), &EMPTY_HANDSHAKE_RECORD).await;

    let metrics = settle(
        edge_admin,
        &[
            ("tlsgate_client_hello_peeks_total{role=\"edge\",outcome=\"complete\"}", 3.0),
            ("tlsgate_client_hello_peeks_total{role=\"edge\",outcome=\"not_tls\"}", 1.0),
            ("tlsgate_client_hello_peeks_total{role=\"edge\",outcome=\"invalid\"}", 1.0),
            ("tlsgate_client_hello_peeks_total{role=\"edge\",outcome=\"too_large\"}", 0.0),
            ("tlsgate_tunnels_total{transport=\"h2\",outcome=\"opened\"}", 1.0),
            ("tlsgate_tunnels_total{transport=\"h2\",outcome=\"relay_refused\"}", 1.0),
            ("tlsgate_tunnels_total{transport=\"tls\",outcome=\"opened\"}", 1.0),
            ("tlsgate_tunnels_total{transport=\"tls\",outcome=\"relay_unavailable\"}", 0.0),
            ("tlsgate_tunnels_active{transport=\"h2\"}", 0.0),
            ("tlsgate_tunnels_active{transport=\"tls\"}", 0.0),
            (
                "tlsgate_flows_total{role=\"edge\",mode=\"tunnel\",verdict=\"FORWARDED\",reason=\"\"}",
                2.0,
            ),
        ],
    )
    .await;
    // Tunnelled bytes are counted once each tunnel ends: at least the two bodies went back.
    let to_client = sample(&metrics, "tlsgate_bytes_total{direction=\"to_client\"}").unwrap();
    assert!(
        to_client >= moved as f64,
        "{to_client} < {moved}\n{metrics}"
    );
    promtool_accepts(&metrics);

    // The relay saw: one h2 connection (the edge's pool, still up), two CONNECT streams answered
    // (the served one and the 403 for the unrouted name), one raw tunnel; the inner ClientHellos
    // of the two served tunnels (the unrouted one was refused before reading it).
    settle(
        relay_admin,
        &[
            (
                "tlsgate_client_hello_peeks_total{role=\"relay\",outcome=\"complete\"}",
                2.0,
            ),
            ("tlsgate_relay_h2_connections_accepted_total", 1.0),
            ("tlsgate_relay_h2_connections_active", 1.0),
            ("tlsgate_relay_h2_streams_total", 2.0),
            ("tlsgate_relay_h2_streams_active", 0.0),
            ("tlsgate_relay_h2_streams_reset_total", 0.0),
        ],
    )
    .await;

    // A tunnel held open is active on both sides until the client closes it.
    let tcp = TcpStream::connect(edge.addr("tls-h2")).await.unwrap();
    let inner = tokio_rustls::TlsConnector::from(services.client_config())
        .connect(ServerName::try_from(PRIVATE).unwrap(), tcp)
        .await
        .unwrap();
    settle(
        edge_admin,
        &[("tlsgate_tunnels_active{transport=\"h2\"}", 1.0)],
    )
    .await;
    settle(relay_admin, &[("tlsgate_relay_h2_streams_active", 1.0)]).await;
    drop(inner);
    settle(
        edge_admin,
        &[("tlsgate_tunnels_active{transport=\"h2\"}", 0.0)],
    )
    .await;
    settle(
        relay_admin,
        &[
            ("tlsgate_relay_h2_streams_total", 3.0),
            ("tlsgate_relay_h2_streams_active", 0.0),
        ],
    )
    .await;

    // A client of its own that resets a stream the relay has not answered yet.
    let (tls_h2, _) = tlsgate_proxy::tls::relay_client_configs(&[pki.ca.cert_der()], None).unwrap();
    let tcp = TcpStream::connect(relay.addr("relay")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls_h2)
        .connect(ServerName::try_from(RELAY_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{SLOW}/never"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), sender.send_request(req)).await;
    assert!(waited.is_err(), "the slow upstream answered: {waited:?}");
    // The response future is gone: hyper resets the stream (RST_STREAM CANCEL).
    settle(
        relay_admin,
        &[
            ("tlsgate_relay_h2_connections_accepted_total", 2.0),
            ("tlsgate_relay_h2_connections_active", 2.0),
            ("tlsgate_relay_h2_streams_total", 4.0),
            ("tlsgate_relay_h2_streams_active", 0.0),
            ("tlsgate_relay_h2_streams_reset_total", 1.0),
        ],
    )
    .await;
    drop(sender);
    conn.abort();
    let metrics = settle(relay_admin, &[("tlsgate_relay_h2_connections_active", 1.0)]).await;
    promtool_accepts(&metrics);

    edge.stop().await;
    relay.stop().await;
    held.abort();
}

/// An explicit interceptor (bump by default, [`DENIED`] denied) trusting only `origin_root`, with
/// every name resolving to 127.0.0.1 and the admin API on.
async fn start_interceptor(
    origin_root: rustls_pki_types::CertificateDer<'static>,
    dir: &std::path::Path,
) -> (Running, std::path::PathBuf) {
    let (ca, ca_pem) = interception_ca(dir);
    let deny = InterceptRule {
        pattern: FqdnPattern::parse(DENIED).unwrap(),
        ports: Vec::new(),
        action: InterceptAction::Deny,
    };
    let listener = explicit_interceptor(
        ca,
        origin_root,
        CertStrategy::DownstreamFirst,
        vec![deny],
        None,
    );
    let mut config = config(vec![Listener {
        name: "proxy".into(),
        listen: any_port(),
        kind: ListenerKind::Intercept(listener),
    }]);
    config.dns_server = Some(spawn_dns_loopback().await);
    config.visibility.admin = Some(admin());
    (start(config).await, ca_pem)
}

/// curl through `proxy` trusting `ca`: (exit code, HTTP status or 0).
async fn curl(proxy: SocketAddr, ca: &std::path::Path, url: String) -> (Option<i32>, u16) {
    let (exit, code, _) = curl_sized(proxy, ca, url).await;
    (exit, code)
}

/// Like [`curl`], with the size of the body downloaded.
async fn curl_sized(
    proxy: SocketAddr,
    ca: &std::path::Path,
    url: String,
) -> (Option<i32>, u16, u64) {
    let args = vec![
        "-sS".to_owned(),
        "--max-time".into(),
        "20".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code} %{size_download}".into(),
        "-x".into(),
        format!("http://{proxy}"),
        "--cacert".into(),
        ca.to_str().unwrap().to_owned(),
        url,
    ];
    let out = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output())
        .await
        .unwrap()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut fields = stdout.split_whitespace().map(|f| f.parse().unwrap_or(0));
    let (code, size) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
    (out.status.code(), u16::try_from(code).unwrap_or(0), size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptor_metrics_move_with_bumps_refusals_and_untrusted_origins() {
    let public = TestCa::new("public test CA");
    let rogue = TestCa::new("a CA the interceptor does not trust");
    let origin = spawn_https_origin("www", &public.issue(&[BUMPED, DENIED])).await;
    let untrusted = spawn_https_origin("untrusted", &rogue.issue(&[UNTRUSTED])).await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, ca) = start_interceptor(public.cert_der(), dir.path()).await;
    let admin = proxy.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);
    let addr = proxy.addr("proxy");
    let port = origin.addr.port();

    // Two bumped requests for one name: one mint, then a cache hit.
    let mut downloaded = 0;
    for _ in 0..2 {
        let url = format!("https://{BUMPED}:{port}/page");
        let (exit, code, size) = curl_sized(addr, &ca, url).await;
        assert_eq!((exit, code), (Some(0), 200));
        downloaded += size;
    }
    assert!(downloaded > 0);
    // Refused by the rules at CONNECT (403), before any ClientHello or certificate.
    let (exit, _) = curl(addr, &ca, format!("https://{DENIED}:{port}/")).await;
    assert_ne!(exit, Some(0));
    // The origin's certificate is from an untrusted CA: a 502 after a mint for the name.
    let url = format!("https://{UNTRUSTED}:{}/", untrusted.addr.port());
    assert_eq!(curl(addr, &ca, url).await, (Some(0), 502));
    // A garbage ClientHello inside an accepted CONNECT.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let connect = format!("CONNECT {BUMPED}:{port} HTTP/1.1\r\nHost: {BUMPED}:{port}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("CONNECT answered within 10 s")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    tcp.write_all(&EMPTY_HANDSHAKE_RECORD).await.unwrap();
    read_to_close(&mut tcp).await;

    let intercept = |outcome: &str| {
        format!("tlsgate_client_hello_peeks_total{{role=\"intercept\",outcome=\"{outcome}\"}}")
    };
    let complete = intercept("complete");
    let invalid = intercept("invalid");
    let mint = "tlsgate_cert_mint_duration_seconds";
    let mint_count = format!("{mint}_count{{listener=\"proxy\"}}");
    let mint_inf = format!("{mint}_bucket{{listener=\"proxy\",le=\"+Inf\"}}");
    let latency = "tlsgate_http_request_duration_seconds";
    let latency_count = format!("{latency}_count{{role=\"intercept\"}}");
    let latency_inf = format!("{latency}_bucket{{role=\"intercept\",le=\"+Inf\"}}");
    let metrics = settle(
        admin,
        &[
            (&complete, 3.0),
            (&invalid, 1.0),
            ("tlsgate_cert_mints_total{listener=\"proxy\"}", 2.0),
            ("tlsgate_cert_cache_lookups_total{listener=\"proxy\",result=\"hit\"}", 1.0),
            (&mint_count, 2.0),
            (&mint_inf, 2.0),
            ("tlsgate_upstream_cert_verify_failures_total{reason=\"unknown_issuer\"}", 1.0),
            // The two bumped exchanges and the 502: every HTTP record of the role is observed.
            (&latency_count, 3.0),
            (&latency_inf, 3.0),
            (
                "tlsgate_http_requests_total{role=\"intercept\",verdict=\"FORWARDED\",status_class=\"2xx\"}",
                2.0,
            ),
        ],
    )
    .await;
    // Signing a P-256 leaf on the blocking pool takes well under a second.
    let under_1s = format!("{mint}_bucket{{listener=\"proxy\",le=\"1\"}}");
    assert_eq!(sample(&metrics, &under_1s), Some(2.0), "{metrics}");
    let sum = sample(&metrics, &format!("{mint}_sum{{listener=\"proxy\"}}")).unwrap();
    assert!(sum > 0.0 && sum < 2.0, "{sum}");
    let latency_sum = sample(&metrics, &format!("{latency}_sum{{role=\"intercept\"}}")).unwrap();
    assert!(latency_sum > 0.0 && latency_sum < 60.0, "{latency_sum}");
    promtool_accepts(&metrics);

    // Bumped connections count their client-side bytes (TLS records, so more than the bodies)
    // when they end, like tunnels and splices.
    let deadline = Instant::now() + SETTLE;
    loop {
        let metrics = scrape(admin).await;
        let to_client = sample(&metrics, "tlsgate_bytes_total{direction=\"to_client\"}").unwrap();
        if to_client > downloaded as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bumped bytes not counted: {to_client} <= {downloaded}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn relay_endpoint_failures_are_counted_by_endpoint_and_reason() {
    let pki = RelayPki::new();
    // A port nobody listens on: every connection attempt is refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut edge_config = config(vec![Listener {
        name: "tls-raw".into(),
        listen: any_port(),
        kind: ListenerKind::TlsPassthrough(EdgeTls {
            relay: relay_upstream(&pki, closed, Transport::Tls, false),
            inner_port: 443,
            default_sni: None,
        }),
    }]);
    edge_config.visibility.admin = Some(admin());
    let edge = start(edge_config).await;
    let edge_admin = edge.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);
    let services = Services::start().await;
    let reply = https_get(edge.addr("tls-raw"), PRIVATE, services.client_config(), "/").await;
    assert!(reply.is_err(), "{reply:?}");
    let series = format!(
        "tlsgate_relay_endpoint_failures_total{{relay=\"provider-b\",endpoint=\"{closed}\",reason=\"connect_refused\"}}"
    );
    let deadline = Instant::now() + SETTLE;
    let metrics = loop {
        let metrics = scrape(edge_admin).await;
        if sample(&metrics, &series).is_some_and(|n| n >= 1.0) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    promtool_accepts(&metrics);
    edge.stop().await;
}
