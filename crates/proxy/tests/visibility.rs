//! Visibility through the admin API, in process: an explicit interceptor with an admin listener,
//! real curl requests, then `/flows` (Hubble-shaped NDJSON, filters), `/metrics`, `/ready`,
//! `/config`, `/certs` read over HTTP; and a follower that stops reading while 10,000 requests pass.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::config::{
    AdminSettings, CertStrategy, FlowSettings, InterceptAction, InterceptRule, Listener,
    ListenerKind,
};
use tlsgate_testkit::{TestCa, spawn_https_origin};
use tokio::io::AsyncWriteExt;

const DENIED: &str = "deny.example.test";
const SPLICED: &str = "splice.example.test";

struct Proxy {
    running: Running,
    admin: SocketAddr,
    ca_pem: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// An explicit interceptor bumping everything but [`DENIED`] and [`SPLICED`], verifying origins with
/// `origin_root`, with the admin API on an ephemeral loopback port.
async fn start_proxy(origin_root: CertificateDer<'static>, ring_size: usize) -> Proxy {
    start_proxy_with(origin_root, ring_size, None, [127, 0, 0, 1]).await
}

/// Like [`start_proxy`], enforcing `policy` when given, with every name resolving to `ip`.
async fn start_proxy_with(
    origin_root: CertificateDer<'static>,
    ring_size: usize,
    policy: Option<Arc<tlsgate_proxy::policy::PolicySlot>>,
    ip: [u8; 4],
) -> Proxy {
    let flows = FlowSettings {
        ring_size,
        ..FlowSettings::default()
    };
    start_proxy_tuned(origin_root, flows, policy, false, ip).await
}

/// Like [`start_proxy_with`], with the given flow settings and audit mode.
async fn start_proxy_tuned(
    origin_root: CertificateDer<'static>,
    flows: FlowSettings,
    policy: Option<Arc<tlsgate_proxy::policy::PolicySlot>>,
    policy_audit: bool,
    ip: [u8; 4],
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_pem) = interception_ca(dir.path());
    let rules = vec![
        InterceptRule {
            pattern: FqdnPattern::parse(DENIED).unwrap(),
            ports: Vec::new(),
            action: InterceptAction::Deny,
        },
        InterceptRule {
            pattern: FqdnPattern::parse(SPLICED).unwrap(),
            ports: Vec::new(),
            action: InterceptAction::Splice,
        },
    ];
    let mut listener = explicit_interceptor(
        ca,
        origin_root,
        CertStrategy::DownstreamFirst,
        rules,
        policy,
    );
    listener.policy_audit = policy_audit;
    let mut config = config(vec![Listener {
        name: "proxy".into(),
        listen: any_port(),
        kind: ListenerKind::Intercept(listener),
    }]);
    config.dns_server = Some(spawn_dns_answering(ip).await);
    config.visibility.admin = Some(AdminSettings {
        listen: any_port(),
        bearer_token: None,
    });
    config.visibility.flows = flows;
    let running = start(config).await;
    let admin = running.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);
    Proxy {
        running,
        admin,
        ca_pem,
        _dir: dir,
    }
}

async fn curl(args: Vec<String>) -> (Option<i32>, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(&args)
            .output()
    })
    .await
    .unwrap()
    .expect("curl runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `GET path` on the admin API: (status, body).
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    admin_get_with(admin, path, None).await
}

/// `GET path` on the admin API with a bearer token, on a connection of its own: (status, body).
async fn admin_get_with(admin: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", admin.to_string());
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Empty::<bytes::Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("admin answers in time")
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| v["flow"].clone())
        .collect()
}

/// The value of the sample `series` (name and labels exactly as written) in a metrics page.
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` (Debian's prometheus package) finds nothing wrong with `metrics`.
fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!("promtool is needed to check /metrics (apt-get install prometheus): {e}")
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `/flows?{query}` returns at least `n` lines.
async fn flows_at_least(admin: SocketAddr, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = admin_get(admin, &format!("/flows?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let flows = lines(&body);
        if flows.len() >= n || Instant::now() > deadline {
            return flows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_and_metrics_describe_bumped_and_refused_requests() {
    let public = TestCa::new("public test CA");
    let origin = spawn_https_origin("www", &public.issue(&["www.example.test", SPLICED])).await;
    let proxy = start_proxy(public.cert_der(), 1000).await;
    let public_pem = public.write_cert_pem(&proxy._dir.path().join("public.pem"));
    let proxy_url = format!("http://{}", proxy.running.addr("proxy"));
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let url = format!("https://www.example.test:{}/page?q=1", origin.addr.port());

    assert_eq!(
        admin_get(proxy.admin, "/ready").await,
        (200, "ready\n".into())
    );
    let (code, out, err) = curl(
        [
            "-x",
            &proxy_url,
            "--cacert",
            &ca,
            "-H",
            "Authorization: Bearer s3cret",
            &url,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0), "{out} {err}");
    let denied_url = format!("http://{DENIED}/cucumber");
    let (code, out, _) = curl(
        ["-x", &proxy_url, "-w", "\n%{http_code}", &denied_url]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(out.ends_with("\n403"), "{out}");
    let spliced_url = format!("https://{SPLICED}:{}/", origin.addr.port());
    let public_pem = public_pem.to_str().unwrap().to_owned();
    let (code, out, err) = curl(
        ["-x", &proxy_url, "--cacert", &public_pem, &spliced_url]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0), "{out} {err}");

    // Bumped request: REQUEST + RESPONSE; the bumped connection: one L3_L4 flow; denied: 2 more;
    // the spliced connection: one, written when the proxy sees it end, which may be after curl
    // has exited: wait for all six.
    let flows = flows_at_least(proxy.admin, "", 6).await;
    let bumped: Vec<&Value> = flows
        .iter()
        .filter(|f| f["l7"]["http"]["url"] == url.as_str())
        .collect();
    assert_eq!(bumped.len(), 2, "{flows:#?}");
    assert_eq!(bumped[0]["l7"]["type"], "REQUEST");
    assert_eq!(bumped[1]["l7"]["type"], "RESPONSE");
    let response = bumped[1];
    assert_eq!(response["Type"], "L7");
    assert_eq!(response["verdict"], "FORWARDED");
    assert_eq!(response["l7"]["http"]["code"], 200);
    assert_eq!(response["l7"]["http"]["method"], "GET");
    // curl negotiates HTTP/2 with the bumping proxy.
    assert_eq!(response["l7"]["http"]["protocol"], "HTTP/2");
    assert!(response["l7"]["latency_ns"].as_u64().unwrap() > 0);
    assert_eq!(response["destination_names"][0], "www.example.test");
    assert_eq!(response["IP"]["source"], "127.0.0.1");
    assert_eq!(response["tlsgate"]["mode"], "bump");
    let headers = response["l7"]["http"]["headers"].as_array().unwrap();
    let auth = headers
        .iter()
        .find(|h| h["key"] == "authorization")
        .unwrap();
    assert_eq!(auth["value"], "[REDACTED]");
    assert!(!response.to_string().contains("s3cret"));
    // The spliced connection: one L3_L4 flow with the name, the upstream port and the bytes.
    let connection = flows
        .iter()
        .find(|f| f["Type"] == "L3_L4" && f["tlsgate"]["mode"] == "splice")
        .unwrap_or_else(|| panic!("the spliced connection's flow: {flows:#?}"));
    assert_eq!(connection["verdict"], "FORWARDED");
    assert_eq!(connection["tlsgate"]["mode"], "splice");
    assert_eq!(connection["tlsgate"]["sni"], SPLICED);
    assert_eq!(connection["destination_names"][0], SPLICED);
    assert_eq!(
        connection["l4"]["TCP"]["destination_port"],
        origin.addr.port()
    );
    assert!(connection.get("l7").is_none());
    assert!(connection["tlsgate"]["bytes_in"].as_u64().unwrap() > 0);
    assert!(connection["tlsgate"]["bytes_out"].as_u64().unwrap() > 0);
    // What curl offered in its ClientHello, read while passing it through untouched.
    assert_eq!(
        connection["tlsgate"]["alpn"],
        serde_json::json!(["h2", "http/1.1"])
    );
    assert_eq!(connection["tlsgate"]["tls_version"], "TLSv1.3");
    assert!(connection["tlsgate"]["upstream_cert"].is_null());

    // Filters: only the refused exchange is 4xx / DROPPED / for the denied host.
    for query in [
        "http_status=4%2B",
        "http_status=403",
        "verdict=DROPPED",
        "host=deny.example.test",
    ] {
        let only = flows_at_least(proxy.admin, query, 2).await;
        assert_eq!(only.len(), 2, "{query}: {only:#?}");
        for f in &only {
            assert_eq!(f["verdict"], "DROPPED", "{query}");
            assert_eq!(f["drop_reason_desc"], "DENIED");
            assert_eq!(f["tlsgate"]["reason"], "denied");
            assert_eq!(f["l7"]["http"]["url"], denied_url.as_str());
        }
        assert_eq!(only[1]["l7"]["http"]["code"], 403);
    }
    let last = flows_at_least(proxy.admin, "last=1", 1).await;
    assert_eq!(last.len(), 1, "the newest record is the spliced connection");
    assert_eq!(last[0]["Type"], "L3_L4");
    let last_denied = flows_at_least(proxy.admin, "last=1&verdict=DROPPED", 2).await;
    assert_eq!(
        last_denied.len(),
        2,
        "one exchange is two flows: {last_denied:#?}"
    );
    assert_eq!(admin_get(proxy.admin, "/flows?bogus=1").await.0, 400);

    let (status, metrics) = admin_get(proxy.admin, "/metrics").await;
    assert_eq!(status, 200);
    let forwarded_2xx = "tlsgate_http_requests_total{role=\"intercept\",verdict=\"FORWARDED\",status_class=\"2xx\"}";
    let dropped_4xx =
        "tlsgate_http_requests_total{role=\"intercept\",verdict=\"DROPPED\",status_class=\"4xx\"}";
    assert_eq!(sample(&metrics, forwarded_2xx), Some(1), "{metrics}");
    assert_eq!(sample(&metrics, dropped_4xx), Some(1), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "tlsgate_flows_total{role=\"intercept\",mode=\"deny\",verdict=\"DROPPED\",reason=\"denied\"}"
        ),
        Some(1)
    );
    let accepted = "tlsgate_connections_accepted_total{listener=\"proxy\",role=\"intercept\"}";
    assert_eq!(sample(&metrics, accepted), Some(3), "{metrics}");
    assert!(sample(&metrics, "tlsgate_cert_mints_total{listener=\"proxy\"}").unwrap() >= 1);
    assert!(sample(&metrics, "tlsgate_bytes_total{direction=\"from_client\"}").unwrap() > 0);
    // Every sample belongs to a family announced with HELP and TYPE (a histogram's samples are
    // its `_bucket`, `_sum` and `_count` series).
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .any(|base| metrics.contains(&format!("# TYPE {base} histogram")));
        assert!(
            histogram || metrics.contains(&format!("# TYPE {name} ")),
            "{line}"
        );
    }

    promtool_accepts(&metrics);

    // Counters move with traffic.
    curl(["-x", &proxy_url, &denied_url].map(String::from).to_vec()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = admin_get(proxy.admin, "/metrics").await.1;
        if sample(&metrics, dropped_4xx) == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (_, config) = admin_get(proxy.admin, "/config").await;
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["listeners"][0]["name"], "proxy");
    assert_eq!(config["listeners"][0]["kind"], "intercept");
    assert_eq!(config["flows"]["ring_size"], 1000);
    let (_, certs) = admin_get(proxy.admin, "/certs").await;
    let certs: Value = serde_json::from_str(&certs).unwrap();
    assert_eq!(certs["listeners"][0]["listener"], "proxy");
    assert!(certs["listeners"][0]["minted"].as_u64().unwrap() >= 1);
    proxy.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_new_flows_and_a_stuck_one_does_not_stall_traffic() {
    const REQUESTS: usize = 10_000;
    const RING: usize = 500;
    let public = TestCa::new("public test CA");
    let proxy = start_proxy(public.cert_der(), RING).await;

    // A live follower sees a new request.
    let tcp = tokio::net::TcpStream::connect(proxy.admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/flows?follow=1&last=0&verdict=DROPPED")
        .header("host", "admin")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut live = sender.send_request(req).await.unwrap().into_body();

    // A stuck follower: asks to follow, then never reads (with a tiny receive buffer).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(proxy.admin).await.unwrap();
    stuck
        .write_all(b"GET /flows?follow=1 HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();

    let proxy_addr = proxy.running.addr("proxy");
    let connect = || async move {
        let tcp = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
        let (client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    };
    let mut client = connect().await;
    let started = Instant::now();
    let mut seen_live = false;
    for i in 0..REQUESTS {
        // The proxy may close a connection after a refusal: then open another.
        if client.ready().await.is_err() {
            client = connect().await;
        }
        let req = http::Request::get(format!("http://{DENIED}/{i}"))
            .header("host", DENIED)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), client.send_request(req))
            .await
            .unwrap_or_else(|_| panic!("request {i} stalled"))
            .unwrap();
        assert_eq!(resp.status(), 403);
        resp.into_body().collect().await.unwrap();
        if i == 0 {
            let frame = tokio::time::timeout(Duration::from_secs(1), live.frame())
                .await
                .expect("the follower sees the first request within 1 s")
                .unwrap()
                .unwrap();
            let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
            assert!(text.contains(&format!("http://{DENIED}/0")), "{text}");
            seen_live = true;
            // From here on the live follower stops reading too.
        }
    }
    assert!(seen_live);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(120),
        "{REQUESTS} requests took {elapsed:?}"
    );

    // The ring stayed bounded.
    let flows = flows_at_least(proxy.admin, "", 2 * RING).await;
    assert_eq!(flows.len(), 2 * RING, "each record is two flows");
    // The live follower, reading again, is told how many records it missed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lost_line = loop {
        let frame = tokio::time::timeout_at(deadline.into(), live.frame())
            .await
            .expect("a lost notice within 20 s")
            .expect("the stream stays open")
            .unwrap();
        let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        if let Some(line) = text.lines().find(|l| l.starts_with("{\"lost\":")) {
            break line.to_owned();
        }
    };
    let told: Value = serde_json::from_str(&lost_line).unwrap();
    assert!(told["lost"].as_u64().unwrap() > 0, "{lost_line}");
    let metrics = admin_get(proxy.admin, "/metrics").await.1;
    let lost = sample(&metrics, "tlsgate_flow_records_lost_total").unwrap();
    assert!(lost > 0, "stuck followers must lose records: {metrics}");
    let dropped_4xx =
        "tlsgate_http_requests_total{role=\"intercept\",verdict=\"DROPPED\",status_class=\"4xx\"}";
    assert_eq!(sample(&metrics, dropped_4xx), Some(REQUESTS as u64));
    drop(stuck);
    proxy.running.stop().await;
}

/// A relay (with the admin API) in front of the test services, and an edge tunnelling to it.
async fn relay_and_edge(services: &Services, pki: &RelayPki) -> (Running, SocketAddr, Running) {
    let tls = tlsgate_proxy::tls::relay_server_config(
        pki.leaf.chain.clone(),
        pki.leaf.key.clone_key(),
        None,
    )
    .unwrap();
    let mut relay_config = config(vec![Listener {
        name: "relay".into(),
        listen: any_port(),
        kind: ListenerKind::Relay(tlsgate_proxy::config::RelayListener {
            tls,
            routes: Arc::new(services.routes()),
        }),
    }]);
    relay_config.visibility.admin = Some(AdminSettings {
        listen: any_port(),
        bearer_token: None,
    });
    let relay = start(relay_config).await;
    let admin = relay.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);
    let upstream = relay_upstream(
        pki,
        relay.addr("relay"),
        tlsgate_proxy::config::Transport::H2,
        false,
    );
    let edge = start_edge(upstream, None).await;
    (relay, admin, edge)
}

/// Opens a TLS connection for `sni` through the edge's passthrough listener, trusting the
/// services' CA; sends one request when the handshake succeeds.
async fn tls_through_edge(edge: SocketAddr, services: &Services, sni: &str) -> bool {
    use tokio::io::AsyncReadExt;
    let connector = tokio_rustls::TlsConnector::from(services.client_config());
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    let request = format!("GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut body = Vec::new();
    let _ = tls.read_to_end(&mut body).await;
    !body.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnelled_connections_and_relay_refusals_are_l3_l4_flows() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, admin, mut edge) = relay_and_edge(&services, &pki).await;
    let edge_tls = edge.addr("tls");
    assert!(tls_through_edge(edge_tls, &services, PRIVATE).await);
    assert!(!tls_through_edge(edge_tls, &services, "unknown.example.com").await);

    // The served tunnel: a FORWARDED splice on the relay, with the SNI and the bytes both ways.
    let served = flows_at_least(
        admin,
        "verdict=FORWARDED&host=private.service.example.com",
        1,
    )
    .await;
    assert_eq!(served.len(), 1, "{served:#?}");
    let f = &served[0];
    assert_eq!(f["Type"], "L3_L4");
    assert_eq!(f["tlsgate"]["role"], "relay");
    assert_eq!(f["tlsgate"]["sni"], PRIVATE);
    assert_eq!(
        f["l4"]["TCP"]["destination_port"],
        services.private.addr.port()
    );
    assert_eq!(f["IP"]["destination"], "127.0.0.1");
    assert!(f["tlsgate"]["bytes_in"].as_u64().unwrap() > 0);
    assert!(f["tlsgate"]["bytes_out"].as_u64().unwrap() > 0);
    // The inner ClientHello's offer, seen by the relay and (below) by the edge.
    assert_eq!(f["tlsgate"]["alpn"], serde_json::json!(["http/1.1"]));
    assert_eq!(f["tlsgate"]["tls_version"], "TLSv1.3");
    let tunnelled = edge
        .flow("the edge's tunnel", |r| {
            r.name.as_deref() == Some(PRIVATE) && r.reason.is_none()
        })
        .await;
    let tls = tunnelled
        .tls
        .as_ref()
        .expect("TLS facts on the edge's flow");
    assert_eq!(*tls.alpn, ["http/1.1"]);
    assert_eq!(tls.version, Some("TLSv1.3"));
    let edge_json = tlsgate_proxy::flow::hubble::flows(&tunnelled);
    assert_eq!(edge_json[0]["flow"]["tlsgate"]["mode"], "tunnel");
    assert_eq!(edge_json[0]["flow"]["tlsgate"]["tls_version"], "TLSv1.3");

    // The refusal: DROPPED with the reason, upper-cased as Hubble's drop reasons are.
    let refused = flows_at_least(admin, "verdict=DROPPED", 1).await;
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let f = &refused[0];
    assert_eq!(f["Type"], "L3_L4");
    assert_eq!(f["tlsgate"]["role"], "relay");
    assert_eq!(f["tlsgate"]["reason"], "no_route");
    assert_eq!(f["drop_reason_desc"], "NO_ROUTE");
    assert_eq!(f["destination_names"][0], "unknown.example.com");
    let metrics = admin_get(admin, "/metrics").await.1;
    let series = metrics
        .lines()
        .find(|l| {
            l.starts_with("tlsgate_flows_total{role=\"relay\"") && l.contains("reason=\"no_route\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(series.ends_with(" 1"), "{series}");
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_with_a_token_refuses_requests_without_it() {
    let mut config = config(Vec::new());
    config.visibility.admin = Some(AdminSettings {
        listen: any_port(),
        bearer_token: Some(Arc::from("t0ken")),
    });
    let running = start(config).await;
    let admin = running.addr(tlsgate_proxy::gateway::ADMIN_ADDR_NAME);
    assert_eq!(admin_get(admin, "/metrics").await.0, 401);
    assert_eq!(admin_get(admin, "/flows").await.0, 401);
    assert_eq!(admin_get_with(admin, "/ready", Some("wrong")).await.0, 401);
    assert_eq!(
        admin_get_with(admin, "/ready", Some("t0ken")).await,
        (200, "ready\n".to_owned())
    );
    running.stop().await;
}

/// The blog's second policy (GET /cucumber with `dada: dada` only) on www.facebook.com:443: the 404
/// from the origin and the 403 from the proxy are each a REQUEST and a RESPONSE flow with method,
/// URL, protocol, headers (credentials redacted), code and latency. Port 443 needs root, like the
/// policy tests (`TLSGATE_SKIP_E2E=1` skips loudly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blogs_403_and_404_are_request_and_response_flows() {
    if !tlsgate_testkit::e2e_preflight().unwrap_or_else(|message| panic!("{message}")) {
        return;
    }
    let ip = [127, 0, 0, 41];
    let public = TestCa::new("public test CA");
    let _origin = tlsgate_testkit::spawn_https_origin_at(
        SocketAddr::from((ip, 443)),
        "origin",
        &public.issue(&["www.facebook.com"]),
    )
    .await;
    let policy_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policy/testdata/blog-facebook-tls-cucumber.yaml"
    );
    let (slot, _notices) =
        tlsgate_proxy::policy::PolicySlot::load(policy_file.into(), Default::default()).unwrap();
    let proxy = start_proxy_with(public.cert_der(), 100, Some(Arc::new(slot)), ip).await;
    let proxy_url = format!("http://{}", proxy.running.addr("proxy"));
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let url = "https://www.facebook.com/cucumber";
    for (dada, code) in [("dada", "404"), ("dado", "403")] {
        let header = format!("dada: {dada}");
        let (_, out, err) = curl(
            [
                "-x",
                &proxy_url,
                "--cacert",
                &ca,
                "--http1.1",
                "-u",
                "user:pass",
                "-H",
                &header,
                "-w",
                "\n%{http_code}",
                url,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert!(out.ends_with(&format!("\n{code}")), "{out} {err}");
    }
    let flows = flows_at_least(proxy.admin, "http_status=4%2B", 4).await;
    assert_eq!(flows.len(), 4, "{flows:#?}");
    let types: Vec<&str> = flows
        .iter()
        .map(|f| f["l7"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["REQUEST", "RESPONSE", "REQUEST", "RESPONSE"]);
    let expected = [("FORWARDED", 404, "dada"), ("DROPPED", 403, "dado")];
    for (pair, (verdict, code, dada)) in flows.chunks(2).zip(expected) {
        for f in pair {
            assert_eq!(f["Type"], "L7");
            assert_eq!(f["verdict"], verdict);
            let http = &f["l7"]["http"];
            assert_eq!(http["method"], "GET");
            assert_eq!(http["url"], url);
            assert_eq!(http["protocol"], "HTTP/1.1");
            let header = |key: &str| {
                http["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|h| h["key"] == key)
                    .map(|h| h["value"].clone())
            };
            assert_eq!(header("dada"), Some(Value::from(dada)));
            assert_eq!(header("authorization"), Some(Value::from("[REDACTED]")));
            assert!(
                !f.to_string().contains("dXNlcjpwYXNz"),
                "credentials leaked"
            );
        }
        assert_eq!(pair[1]["l7"]["http"]["code"], code);
        assert!(pair[1]["l7"]["latency_ns"].as_u64().unwrap() > 0);
    }
    assert_eq!(flows[3]["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(flows[3]["tlsgate"]["reason"], "policy_denied");
    assert!(flows[3]["tlsgate"]["rule"].is_string(), "{:#}", flows[3]);
    proxy.running.stop().await;
}

/// The blog's second policy in audit mode (`policy_audit: true`): the request the policy would
/// refuse with 403 reaches the origin (its own 404 comes back) and both its flows say `AUDIT` with
/// the would-be reason; the allowed request stays `FORWARDED`. `?verdict=AUDIT` selects exactly
/// those flows. Port 443 needs root, like the blog test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_forwards_the_blogs_403_and_records_it_as_audit() {
    if !tlsgate_testkit::e2e_preflight().unwrap_or_else(|message| panic!("{message}")) {
        return;
    }
    let ip = [127, 0, 0, 42];
    let public = TestCa::new("public test CA");
    let _origin = tlsgate_testkit::spawn_https_origin_at(
        SocketAddr::from((ip, 443)),
        "origin",
        &public.issue(&["www.facebook.com"]),
    )
    .await;
    let policy_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policy/testdata/blog-facebook-tls-cucumber.yaml"
    );
    let (slot, _notices) =
        tlsgate_proxy::policy::PolicySlot::load(policy_file.into(), Default::default()).unwrap();
    let flows = FlowSettings {
        ring_size: 100,
        ..FlowSettings::default()
    };
    let proxy = start_proxy_tuned(public.cert_der(), flows, Some(Arc::new(slot)), true, ip).await;
    let proxy_url = format!("http://{}", proxy.running.addr("proxy"));
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let url = "https://www.facebook.com/cucumber";
    for dada in ["dada", "dado"] {
        let header = format!("dada: {dada}");
        let (code, out, err) = curl(
            [
                "-x",
                &proxy_url,
                "--cacert",
                &ca,
                "--http1.1",
                "-H",
                &header,
                "-w",
                "\n%{http_code}",
                url,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(code, Some(0), "{out} {err}");
        // The origin's own answer: the request was not refused.
        assert!(out.starts_with("origin=origin: no such page"), "{out}");
        assert!(out.ends_with("\n404"), "{out} {err}");
    }
    let audited = flows_at_least(proxy.admin, "verdict=AUDIT", 2).await;
    assert_eq!(audited.len(), 2, "{audited:#?}");
    for f in &audited {
        assert_eq!(f["verdict"], "AUDIT");
        assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
        assert_eq!(f["tlsgate"]["reason"], "policy_denied");
        assert!(f["tlsgate"]["rule"].is_string(), "{f:#}");
        assert!(
            f["tlsgate"]["error"]
                .as_str()
                .unwrap()
                .starts_with("audit mode"),
            "{f:#}"
        );
        assert_eq!(f["tlsgate"]["mode"], "bump");
        let dada = f["l7"]["http"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"] == "dada")
            .map(|h| h["value"].clone());
        assert_eq!(dada, Some(Value::from("dado")));
    }
    assert_eq!(audited[0]["l7"]["type"], "REQUEST");
    assert_eq!(audited[1]["l7"]["http"]["code"], 404);
    let forwarded = flows_at_least(proxy.admin, "verdict=FORWARDED&http_status=404", 2).await;
    assert_eq!(forwarded.len(), 2, "the allowed request: {forwarded:#?}");
    assert!(forwarded.iter().all(|f| f["tlsgate"]["reason"].is_null()));
    let (_, metrics) = admin_get(proxy.admin, "/metrics").await;
    let audit_4xx =
        "tlsgate_http_requests_total{role=\"intercept\",verdict=\"AUDIT\",status_class=\"4xx\"}";
    assert_eq!(sample(&metrics, audit_4xx), Some(1), "{metrics}");
    proxy.running.stop().await;
}

/// Bumped HTTPS: every flow carries what curl offered (ALPN, highest TLS version) and the origin's
/// certificate as verified; the connection itself is one more L3_L4 flow (mode bump, bytes both
/// ways). An origin whose certificate no trusted CA issued gets a 502, and its flows say
/// `verified: false` with `error: unknown_issuer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bumped_flows_carry_tls_facts_and_the_origins_certificate() {
    let public = TestCa::new("public test CA");
    let rogue = TestCa::new("rogue test CA");
    let good = spawn_https_origin("good", &public.issue(&["www.example.test"])).await;
    let bad = spawn_https_origin("bad", &rogue.issue(&["bad.example.test"])).await;
    let proxy = start_proxy(public.cert_der(), 1000).await;
    let proxy_url = format!("http://{}", proxy.running.addr("proxy"));
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let good_url = format!("https://www.example.test:{}/page", good.addr.port());
    let bad_url = format!("https://bad.example.test:{}/page", bad.addr.port());
    for (url, code) in [(&good_url, "200"), (&bad_url, "502")] {
        let (exit, out, err) = curl(
            [
                "-x",
                &proxy_url,
                "--cacert",
                &ca,
                "-w",
                "\n%{http_code}",
                url,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(exit, Some(0), "{out} {err}");
        assert!(out.ends_with(&format!("\n{code}")), "{url}: {out} {err}");
    }

    // Per host: REQUEST + RESPONSE, then the connection's own record when curl closed it.
    for (host, verified, error, issuer) in [
        ("www.example.test", true, None, "CN=public test CA"),
        (
            "bad.example.test",
            false,
            Some("unknown_issuer"),
            "CN=rogue test CA",
        ),
    ] {
        let flows = flows_at_least(proxy.admin, &format!("host={host}"), 3).await;
        assert_eq!(flows.len(), 3, "{host}: {flows:#?}");
        let kinds: Vec<&str> = flows.iter().map(|f| f["Type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["L7", "L7", "L3_L4"], "{host}");
        for f in &flows {
            let t = &f["tlsgate"];
            assert_eq!(t["mode"], "bump", "{host}");
            assert_eq!(t["sni"], host);
            assert_eq!(t["alpn"], serde_json::json!(["h2", "http/1.1"]), "{host}");
            assert_eq!(t["tls_version"], "TLSv1.3", "{host}");
            let cert = &t["upstream_cert"];
            assert_eq!(cert["verified"], verified, "{host}: {f:#}");
            assert_eq!(cert["error"].as_str(), error, "{host}: {f:#}");
            assert!(cert["subject"].as_str().unwrap().contains(host), "{cert}");
            assert!(cert["issuer"].as_str().unwrap().contains(issuer), "{cert}");
        }
        let connection = &flows[2];
        assert_eq!(connection["verdict"], "FORWARDED");
        assert!(connection.get("l7").is_none());
        // Bytes on the client's side of the bump: TLS records both ways.
        assert!(connection["tlsgate"]["bytes_in"].as_u64().unwrap() > 500);
        assert!(connection["tlsgate"]["bytes_out"].as_u64().unwrap() > 500);
        let response = &flows[1];
        if verified {
            assert_eq!(response["verdict"], "FORWARDED");
            assert_eq!(response["l7"]["http"]["code"], 200);
        } else {
            assert_eq!(response["verdict"], "ERROR");
            assert_eq!(response["tlsgate"]["reason"], "upstream_cert_invalid");
            assert_eq!(response["l7"]["http"]["code"], 502);
        }
    }
    proxy.running.stop().await;
}

/// `flows.redact_headers` and `flows.redact_url_query`: configured headers (any case) show as
/// `[REDACTED]` next to the built-in ones, URLs lose their query, and neither value appears in
/// any flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_headers_and_url_queries_are_redacted() {
    let public = TestCa::new("public test CA");
    let origin = spawn_https_origin("www", &public.issue(&["www.example.test"])).await;
    let flows = FlowSettings {
        ring_size: 100,
        redact_headers: vec![http::HeaderName::from_static("x-api-key")],
        redact_url_query: true,
    };
    let proxy = start_proxy_tuned(public.cert_der(), flows, None, false, [127, 0, 0, 1]).await;
    let proxy_url = format!("http://{}", proxy.running.addr("proxy"));
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let port = origin.addr.port();
    let url = format!("https://www.example.test:{port}/page?token=q-s3cret&x=1");
    let (code, out, err) = curl(
        [
            "-x",
            &proxy_url,
            "--cacert",
            &ca,
            "-H",
            "X-Api-Key: k3y-s3cret",
            "-H",
            "X-Visible: shown",
            "-H",
            "Cookie: c00kie-s3cret",
            &url,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(code, Some(0), "{out} {err}");
    let (_, body) = admin_get(proxy.admin, "/flows").await;
    let exchange: Vec<Value> = flows_at_least(proxy.admin, "http_status=200", 2).await;
    assert_eq!(exchange.len(), 2, "{exchange:#?}");
    for f in &exchange {
        let http = &f["l7"]["http"];
        assert_eq!(
            http["url"],
            format!("https://www.example.test:{port}/page"),
            "the query is dropped"
        );
        let header = |key: &str| {
            http["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["key"] == key)
                .map(|h| h["value"].clone())
        };
        assert_eq!(header("x-api-key"), Some(Value::from("[REDACTED]")));
        assert_eq!(header("cookie"), Some(Value::from("[REDACTED]")));
        assert_eq!(header("x-visible"), Some(Value::from("shown")));
    }
    let (_, body_after) = admin_get(proxy.admin, "/flows").await;
    for text in [body, body_after] {
        assert!(!text.contains("s3cret"), "a redacted value leaked: {text}");
    }
    proxy.running.stop().await;
}
