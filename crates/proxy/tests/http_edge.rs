//! The edge's plain-HTTP listener (bodies streamed both ways, upgrades passed through) and the relay
//! as an HTTPS proxy for real curl (HTTP/1.1 CONNECT over TLS).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::config::{Route, TargetHost, Transport, UpstreamTarget};
use tlsgate_testkit::{pattern, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_upload_is_streamed_through_edge_and_relay() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, edge) = start_relay_and_h2_edge(&services, &pki).await;
    let tcp = TcpStream::connect(edge.addr("http")).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    // 32 MiB in 256 KiB chunks, sent chunked (no content-length).
    let chunks = (0..128u64)
        .map(|i| Ok::<_, std::io::Error>(Frame::data(Bytes::from(pattern(i * 262_144, 262_144)))));
    let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/echo")
        .header("host", PRIVATE)
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), 32 << 20);
    assert!(echoed == pattern(0, 32 << 20), "echoed body intact");
    // Keep-alive: a second request on the same client connection.
    let request = Request::builder()
        .uri("/bytes/1000")
        .header("host", PRIVATE)
        .body(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, pattern(0, 1000));
    edge.stop().await;
    relay.stop().await;
}

/// Many keep-alive requests from 16 clients with Content-Length answers, forwarded over the edge's
/// one h2 connection to the relay: every one succeeds, body complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_forwarded_requests_on_one_relay_connection_all_succeed() {
    const CLIENTS: usize = 16;
    const EACH: usize = 300;
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, edge) = start_relay_and_h2_edge(&services, &pki).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let addr = edge.addr("http");
        clients.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut failed = Vec::new();
            for _ in 0..EACH {
                let request = Request::builder()
                    .uri("/bytes/1000")
                    .header("host", PRIVATE)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                if status != StatusCode::OK || body.len() != 1000 {
                    failed.push(status);
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for client in clients {
        let client = tokio::time::timeout(Duration::from_secs(60), client).await;
        failed.extend(client.expect("clients finish within 60 s").unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        CLIENTS * EACH
    );
    edge.stop().await;
    relay.stop().await;
}

/// The relay puts END_STREAM on the last DATA frame of an answer whose length is known, so that an
/// edge which stops reading at the length never has to reset the stream (each such reset counts
/// towards h2's reset-flood guard, which closed the edge's connection under load when the relay
/// sent END_STREAM in an empty frame of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_ends_a_sized_answer_with_its_last_data_frame() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let relay = start_relay(&services, &pki, false, any_port()).await;
    let upstream = relay_upstream(&pki, relay.addr("relay"), Transport::H2, false);
    let tcp = TcpStream::connect(relay.addr("relay")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(upstream.tls_h2.clone())
        .connect(upstream.server_name.clone(), tcp)
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = Request::builder()
            .uri(format!("http://{PRIVATE}/bytes/1000"))
            .body(())
            .unwrap();
        let mut client = client.clone().ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut got = 0;
        while got < 1000 {
            got += body.data().await.unwrap().unwrap().len();
        }
        assert_eq!(got, 1000);
        assert!(
            body.is_end_stream(),
            "the stream ended with the last byte, not in a frame after it"
        );
    }
    relay.stop().await;
}

/// A raw origin that answers an `Upgrade` request with 101 and then echoes bytes upper-cased.
async fn spawn_upgrade_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                assert!(head.contains("upgrade: websocket"), "{head}");
                assert!(head.contains(&format!("host: {PRIVATE}")), "{head}");
                tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let upper: Vec<u8> = buf[..n].to_ascii_uppercase();
                    if tcp.write_all(&upper).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn upgrade_requests_pass_through_to_the_http_upstream() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let origin = spawn_upgrade_origin().await;
    let mut routes = services.routes();
    routes.routes.insert(
        0,
        Route {
            pattern: FqdnPattern::parse(PRIVATE).unwrap(),
            tls: None,
            http: Some(UpstreamTarget {
                host: TargetHost::Fixed("127.0.0.1".into()),
                port: origin.port(),
            }),
        },
    );
    let relay = start_relay_with_routes(routes, &pki, any_port()).await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::Tls, false),
        None,
    )
    .await;
    let mut tcp = TcpStream::connect(edge.addr("http")).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {PRIVATE}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "edge closed before the 101");
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    tcp.write_all(b"hello through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 24];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"HELLO THROUGH THE TUNNEL");
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn real_curl_uses_the_relay_as_an_https_proxy() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, false, any_port()).await;
    let dir = tempdir();
    let relay_ca = pki.ca.write_cert_pem(&dir.join("relay-ca.pem"));
    let services_ca = services.ca.write_cert_pem(&dir.join("services-ca.pem"));
    let port = relay.addr("relay").port();
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{certs}",
    ])
    .arg("--proxy")
    .arg(format!("https://{RELAY_NAME}:{port}"))
    .arg("--resolve")
    .arg(format!("{RELAY_NAME}:{port}:127.0.0.1"))
    .arg("--proxy-cacert")
    .arg(&relay_ca)
    .arg("--cacert")
    .arg(&services_ca)
    .arg(format!("https://{PRIVATE}/"));
    let output = tokio::task::spawn_blocking(move || curl.output())
        .await
        .unwrap()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("origin=private"), "{stdout}");
    assert!(stdout.contains("\n200 "), "{stdout}");
    let flow = relay
        .flow("curl tunnel", |f| f.name.as_deref() == Some(PRIVATE))
        .await;
    assert_eq!(flow.reason, None);
    // The certificate curl verified is the origin's own.
    let der = first_cert_der(&stdout);
    assert_eq!(sha256(&der), services.private_leaf.sha256_fingerprint());
    relay.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tlsgate-http-edge-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The edge's record of a plain-HTTP request names the relay endpoint that carried it, and the
/// relay (by its configured name) for a request that never reached one.
#[tokio::test]
async fn an_edge_request_record_names_the_endpoint_or_else_the_relay() {
    use tlsgate_proxy::flow::{Mode, Role};
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, mut edge) = start_relay_and_h2_edge(&services, &pki).await;
    let mut tcp = TcpStream::connect(edge.addr("http")).await.unwrap();
    let head = format!("GET /bytes/10 HTTP/1.1\r\nHost: {PRIVATE}\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let edge_http =
        |r: &tlsgate_proxy::flow::FlowRecord| r.role == Role::Edge && r.mode == Mode::Http;
    let carried = edge.flow("the forwarded request", |r| edge_http(r)).await;
    assert_eq!(carried.status, Some(200));
    assert_eq!(
        carried.upstream.as_deref(),
        Some(relay.addr("relay").to_string().as_str())
    );

    // HTTP/1.0 without Host: refused at the edge (400), before any relay is asked.
    let mut tcp = TcpStream::connect(edge.addr("http")).await.unwrap();
    tcp.write_all(b"GET /bytes/10 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.0 400") || answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let refused = edge.flow("the refused request", |r| edge_http(r)).await;
    assert_eq!(refused.status, Some(400));
    assert_eq!(refused.upstream.as_deref(), Some("provider-b"));
    edge.stop().await;
    relay.stop().await;
}
