//! Edge ↔ relay on loopback with real rustls/hyper clients and origins: both transports, routing by
//! inner SNI, refusals, mTLS, relay restarts, concurrency.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tlsgate_proxy::config::{Timeouts, Transport};
use tlsgate_proxy::flow::{FlowRecord, Role};
use tlsgate_testkit::{TcpHop, http_get, https_get, sha256};

async fn assert_routes_by_inner_sni(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, false, any_port()).await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), transport, false),
        None,
    )
    .await;
    for (name, leaf, body) in [
        (PRIVATE, &services.private_leaf, "origin=private"),
        (OTHER, &services.other_leaf, "origin=other"),
    ] {
        let reply = https_get(edge.addr("tls"), name, services.client_config(), "/")
            .await
            .unwrap_or_else(|e| panic!("{transport:?} {name}: {e}"));
        assert_eq!(reply.status, 200);
        let text = String::from_utf8_lossy(&reply.body);
        assert!(text.starts_with(body), "{name} answered {text:?}");
        assert!(text.contains(&format!("host={name}")), "{text:?}");
        // The client saw the service's own certificate: nobody re-encrypted.
        assert_eq!(sha256(&reply.peer_leaf_der), leaf.sha256_fingerprint());
        assert_relay_carried(&mut relay, name).await;
    }
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn h2_transport_routes_by_inner_sni_and_keeps_origin_certificate() {
    assert_routes_by_inner_sni(Transport::H2).await;
}

#[tokio::test]
async fn tls_transport_routes_by_inner_sni_and_keeps_origin_certificate() {
    assert_routes_by_inner_sni(Transport::Tls).await;
}

/// Waits for the relay's record of a tunnel to `name` and checks that it ended without an error.
async fn assert_relay_carried(relay: &mut Running, name: &str) {
    let what = format!("the relay's record of a tunnel to {name}");
    let flow = relay
        .flow(&what, |f| {
            f.role == Role::Relay && f.name.as_deref() == Some(name)
        })
        .await;
    assert_eq!(flow.reason, None, "{flow:?}");
}

async fn assert_unknown_sni_refused(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, false, any_port()).await;
    let mut edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), transport, false),
        None,
    )
    .await;
    let result = https_get(
        edge.addr("tls"),
        "unknown.example.com",
        services.client_config(),
        "/",
    )
    .await;
    // The client is told why: a TLS alert it reads as the server's answer to its ClientHello.
    let refused = result.expect_err("unknown SNI must not be served");
    assert!(
        refused.contains("received fatal alert: AccessDenied"),
        "{refused}"
    );
    let flow = relay
        .flow("relay refusal", |f| {
            f.name.as_deref() == Some("unknown.example.com")
        })
        .await;
    assert_eq!(flow.reason, Some("no_route"));
    assert!(flow.upstream.is_none(), "nothing was connected: {flow:?}");
    // What reached the client is the alert's record, and the edge's flow counts it.
    let at_edge = edge
        .flow("the edge's record of the refusal", |f| {
            f.role == Role::Edge && f.name.as_deref() == Some("unknown.example.com")
        })
        .await;
    assert_eq!(at_edge.bytes_to_client, 7, "{at_edge:?}");
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn h2_transport_refuses_unknown_sni_at_the_relay() {
    assert_unknown_sni_refused(Transport::H2).await;
}

#[tokio::test]
async fn tls_transport_refuses_unknown_sni_at_the_relay() {
    assert_unknown_sni_refused(Transport::Tls).await;
}

#[tokio::test]
async fn plain_http_is_forwarded_over_h2_with_its_host() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, false, any_port()).await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::Tls, false),
        None,
    )
    .await;
    let reply = http_get(edge.addr("http"), PRIVATE, "/some/path?q=1")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.starts_with("origin=private-http"), "{text:?}");
    assert!(text.contains(&format!("host={PRIVATE}")), "{text:?}");
    assert!(text.contains("path=/some/path?q=1"), "{text:?}");
    let flow = relay.flow("relay http", |f| f.status.is_some()).await;
    assert_eq!(flow.status, Some(200));
    // A name with an HTTPS route but no HTTP route is refused by the relay with 403.
    let refused = http_get(edge.addr("http"), OTHER, "/").await.unwrap();
    assert_eq!(refused.status, 403);
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn relay_refuses_connect_whose_inner_sni_differs_from_authority() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, false, any_port()).await;
    let upstream = relay_upstream(&pki, relay.addr("relay"), Transport::H2, false);
    let client = tlsgate_proxy::transport::RelayClient::new(
        upstream,
        tlsgate_proxy::upstream::Resolver::System,
        test_timeouts(),
        tokio_util::sync::CancellationToken::new(),
        Default::default(),
    );
    // CONNECT names the private service, the inner ClientHello names the other one.
    let stream = client.open_h2(&format!("{PRIVATE}:443")).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(services.client_config());
    let inner = rustls_pki_types::ServerName::try_from(OTHER).unwrap();
    let handshake =
        tokio::time::timeout(Duration::from_secs(10), connector.connect(inner, stream)).await;
    match handshake {
        Ok(Err(e)) => assert!(
            e.to_string().contains("received fatal alert: AccessDenied"),
            "the refusal names itself: {e}"
        ),
        Ok(Ok(_)) => panic!("the mismatched stream must be refused"),
        Err(_) => panic!("the mismatched stream must be refused, not left waiting"),
    }
    let flow = relay.flow("mismatch", |f| f.reason.is_some()).await;
    assert_eq!(flow.reason, Some("inner_sni_mismatch"));
    assert_eq!(flow.name.as_deref(), Some(PRIVATE));
    // The same connection still carries a matching stream.
    let stream = client.open_h2(&format!("{PRIVATE}:443")).await.unwrap();
    let inner = rustls_pki_types::ServerName::try_from(PRIVATE).unwrap();
    let tls = connector
        .connect(inner, stream)
        .await
        .expect("matching SNI is tunnelled");
    let (_, conn) = tls.get_ref();
    assert_eq!(
        sha256(conn.peer_certificates().unwrap()[0].as_ref()),
        services.private_leaf.sha256_fingerprint()
    );
    relay.stop().await;
}

#[tokio::test]
async fn relay_refuses_connect_to_unrouted_port() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, false, any_port()).await;
    let upstream = relay_upstream(&pki, relay.addr("relay"), Transport::H2, false);
    let client = tlsgate_proxy::transport::RelayClient::new(
        upstream,
        tlsgate_proxy::upstream::Resolver::System,
        test_timeouts(),
        tokio_util::sync::CancellationToken::new(),
        Default::default(),
    );
    let result = client.open_h2(&format!("{PRIVATE}:22")).await;
    assert!(
        matches!(
            result,
            Err(tlsgate_proxy::error::ConnError::RelayRefused(403))
        ),
        "{:?}",
        result.err()
    );
    let flow = relay.flow("port refusal", |f| f.reason.is_some()).await;
    assert_eq!(flow.reason, Some("port_not_routed"));
    relay.stop().await;
}

async fn assert_mtls(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay(&services, &pki, true, any_port()).await;
    // Without a client certificate the edge gets nothing.
    let anonymous = start_edge(
        relay_upstream(&pki, relay.addr("relay"), transport, false),
        None,
    )
    .await;
    let result = https_get(
        anonymous.addr("tls"),
        PRIVATE,
        services.client_config(),
        "/",
    )
    .await;
    assert!(
        result.is_err(),
        "{transport:?}: an edge without a client cert must be refused"
    );
    let flow = relay
        .flow("handshake refusal", |f| f.reason.is_some())
        .await;
    assert_eq!(flow.reason, Some("client_handshake_failed"));
    anonymous.stop().await;
    // With one, the tunnel works.
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), transport, true),
        None,
    )
    .await;
    let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .unwrap();
    assert_eq!(
        sha256(&reply.peer_leaf_der),
        services.private_leaf.sha256_fingerprint()
    );
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn mtls_relay_serves_only_edges_with_client_certificates_h2() {
    assert_mtls(Transport::H2).await;
}

#[tokio::test]
async fn mtls_relay_serves_only_edges_with_client_certificates_tls() {
    assert_mtls(Transport::Tls).await;
}

#[tokio::test]
async fn missing_sni_uses_default_or_is_refused() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let relay = start_relay(&services, &pki, false, any_port()).await;
    // An IP literal as server name: rustls sends no SNI.
    let ip_name = "127.0.0.1";
    let mut refusing = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::Tls, false),
        None,
    )
    .await;
    let result = https_get(refusing.addr("tls"), ip_name, services.client_config(), "/").await;
    assert!(result.is_err());
    let flow = refusing.flow("no sni", |f| f.reason.is_some()).await;
    assert_eq!(flow.reason, Some("client_no_sni"));
    refusing.stop().await;

    // With a default name, the hello reaches that service (which presents its own certificate; the
    // client, asking for an IP, rejects it — proving the bytes went to the default's origin).
    let mut defaulting = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::Tls, false),
        Some(PRIVATE),
    )
    .await;
    let _ = https_get(
        defaulting.addr("tls"),
        ip_name,
        services.client_config(),
        "/",
    )
    .await;
    let flow = defaulting
        .flow("default sni", |f| f.role == Role::Edge)
        .await;
    assert_eq!(flow.name.as_deref(), Some(PRIVATE));
    assert_ne!(flow.reason, Some("client_no_sni"));
    assert!(
        flow.bytes_to_client > 0,
        "the origin answered through the tunnel: {flow:?}"
    );
    defaulting.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn new_tunnels_work_again_after_the_relay_restarts() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let relay = start_relay(&services, &pki, false, any_port()).await;
    let relay_addr = relay.addr("relay");
    let edge = start_edge(relay_upstream(&pki, relay_addr, Transport::H2, false), None).await;
    https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .unwrap();
    relay.stop().await;
    // While the relay is down, a tunnel fails (after waiting briefly), it does not hang.
    let down = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .expect_err("no relay, no tunnel");
    assert!(
        down.contains("received fatal alert: InternalError"),
        "{down}"
    );
    let relay = start_relay(&services, &pki, false, relay_addr).await;
    let restarted = Instant::now();
    let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .expect("a new tunnel works once the relay is back");
    let recovered = restarted.elapsed();
    assert_eq!(reply.status, 200);
    assert!(recovered < Duration::from_secs(5), "took {recovered:?}");
    eprintln!("new tunnel through the restarted relay after {recovered:?}");
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_tunnels_share_one_h2_connection() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut relay, edge) = start_relay_and_h2_edge(&services, &pki).await;
    // Warm up the pool so every tunnel finds the one connection up.
    https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .unwrap();
    let first = relay
        .flow("warm-up", |f| f.role == Role::Relay)
        .await
        .client;
    let edge_addr = edge.addr("tls");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let config = services.client_config();
            let name = if i % 2 == 0 { PRIVATE } else { OTHER };
            tokio::spawn(async move { https_get(edge_addr, name, config, "/bytes/100000").await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap().expect("every tunnel succeeds");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, tlsgate_testkit::pattern(0, 100_000));
    }
    for _ in 0..100 {
        let flow = relay.flow("tunnel", |f| f.role == Role::Relay).await;
        assert_eq!(flow.reason, None);
        assert_eq!(
            flow.client, first,
            "every stream came over the same outer connection"
        );
    }
    edge.stop().await;
    relay.stop().await;
}

/// A TLS session with `name` through the edge, handshake done and then held open (an idle tunnel).
async fn held_tunnel(
    edge: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(edge).await?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake through the edge timed out"))?
}

/// `limits.max_tunnels_per_client` at the relay: with 2 tunnels of one edge open, a third is refused
/// with `client_tunnel_limit` (the client's handshake fails, no hang); closing one frees its slot.
async fn assert_tunnels_per_client_limited(transport: Transport) {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let mut relay = start_relay_edited(&services, &pki, false, any_port(), |config| {
        config.limits.max_tunnels_per_client = 2;
    })
    .await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), transport, false),
        None,
    )
    .await;
    let edge_addr = edge.addr("tls");
    let first = held_tunnel(edge_addr, PRIVATE, services.client_config())
        .await
        .expect("first tunnel");
    let second = held_tunnel(edge_addr, OTHER, services.client_config())
        .await
        .expect("second tunnel");
    let third = held_tunnel(edge_addr, PRIVATE, services.client_config()).await;
    assert!(third.is_err(), "{transport:?}: a third tunnel got through");
    let refused = relay
        .flow("refused tunnel", |f| {
            f.role == Role::Relay && f.reason.is_some()
        })
        .await;
    assert_eq!(refused.reason, Some("client_tunnel_limit"), "{refused:?}");
    // The held tunnels still work, and closing one lets a new one in.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        match https_get(edge_addr, PRIVATE, services.client_config(), "/").await {
            Ok(reply) => break reply,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{transport:?}: slot not free yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{transport:?}: no tunnel after one was closed: {e}"),
        }
    };
    assert_eq!(reply.status, 200);
    drop(second);
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn h2_transport_tunnels_per_client_are_limited_at_the_relay() {
    assert_tunnels_per_client_limited(Transport::H2).await;
}

#[tokio::test]
async fn tls_transport_tunnels_per_client_are_limited_at_the_relay() {
    assert_tunnels_per_client_limited(Transport::Tls).await;
}

/// A relay stand-in on the h2 crate that answers each CONNECT only after the stream's first bytes
/// arrived (within 5 s), then reads the stream to its end and answers `ok`. It reports the
/// authority, the bytes received before the answer and all bytes received.
async fn spawn_relay_waiting_for_first_bytes(
    pki: &RelayPki,
) -> (
    SocketAddr,
    tokio::sync::mpsc::Receiver<(String, Vec<u8>, usize)>,
) {
    let tls = tlsgate_proxy::tls::relay_server_config(
        pki.leaf.chain.clone(),
        pki.leaf.key.clone_key(),
        None,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reports) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, report) = (acceptor.clone(), report.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    tokio::spawn(answer_after_first_bytes(request, respond, report.clone()));
                }
            });
        }
    });
    (addr, reports)
}

async fn answer_after_first_bytes(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    report: tokio::sync::mpsc::Sender<(String, Vec<u8>, usize)>,
) {
    let authority = request.uri().authority().map(ToString::to_string);
    let mut body = request.into_body();
    let first = match tokio::time::timeout(Duration::from_secs(5), body.data()).await {
        Ok(Some(Ok(data))) => data.to_vec(),
        // Nothing before the answer: report that, and answer no further.
        _ => {
            let _ = report
                .send((authority.unwrap_or_default(), Vec::new(), 0))
                .await;
            return;
        }
    };
    let _ = body.flow_control().release_capacity(first.len());
    let mut send = respond
        .send_response(http::Response::new(()), false)
        .unwrap();
    let mut total = first.len();
    while let Some(Ok(data)) = body.data().await {
        total += data.len();
        let _ = body.flow_control().release_capacity(data.len());
    }
    send.send_data(bytes::Bytes::from_static(b"ok"), true)
        .unwrap();
    let _ = report
        .send((authority.unwrap_or_default(), first, total))
        .await;
}

#[tokio::test]
async fn h2_edge_sends_the_client_hello_behind_the_connect_without_waiting_for_the_answer() {
    let pki = RelayPki::new();
    let (relay, mut reports) = spawn_relay_waiting_for_first_bytes(&pki).await;
    let mut edge = start_edge(relay_upstream(&pki, relay, Transport::H2, false), None).await;
    // A real ClientHello for the private service, then more bytes, then the client's end.
    let services = Services::start().await;
    let mut hello = Vec::new();
    rustls::ClientConnection::new(
        services.client_config(),
        rustls_pki_types::ServerName::try_from(PRIVATE).unwrap(),
    )
    .unwrap()
    .write_tls(&mut hello)
    .unwrap();
    let tail = vec![0x17u8; 3000];
    let mut client = tokio::net::TcpStream::connect(edge.addr("tls"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client.write_all(&hello).await.unwrap();
    client.write_all(&tail).await.unwrap();
    client.shutdown().await.unwrap();
    let (authority, first, total) = tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("the relay stand-in reports within 10 s")
        .unwrap();
    assert_eq!(authority, format!("{PRIVATE}:443"));
    // The relay had the ClientHello before it answered: one round trip saved per tunnel.
    assert!(
        first.starts_with(&hello),
        "bytes before the answer: {} (the ClientHello is {})",
        first.len(),
        hello.len()
    );
    assert_eq!(
        total,
        hello.len() + tail.len(),
        "every byte reached the relay once"
    );
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("the answer within 10 s")
        .unwrap();
    assert_eq!(answer, b"ok");
    // The flow counts the early bytes once, with the rest.
    let flow = edge
        .flow("the edge's tunnel", |f| f.role == Role::Edge)
        .await;
    assert_eq!(flow.reason, None, "{flow:?}");
    assert_eq!(flow.bytes_from_client, (hello.len() + tail.len()) as u64);
    assert_eq!(flow.bytes_to_client, 2);
    edge.stop().await;
}

/// Tunnels whose clients stop reading a download hold their streams' receive windows on the shared
/// h2 connection to the relay. Each holds at most one stream window; the connection's window must
/// leave the other tunnels theirs (a bad connection never disturbs the others), and a stalled
/// tunnel, read again, gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_that_stop_reading_do_not_stall_the_others_on_the_shared_h2_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // More stalled streams than a 16 MiB connection window has room for at 4 MiB each.
    const STALLED: usize = 6;
    const BIG: usize = 32 * 1024 * 1024;
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, edge) = start_relay_and_h2_edge(&services, &pki).await;
    let edge_addr = edge.addr("tls");
    https_get(edge_addr, PRIVATE, services.client_config(), "/")
        .await
        .expect("warm-up through the tunnel");
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let mut tls = held_tunnel(edge_addr, PRIVATE, services.client_config())
            .await
            .unwrap_or_else(|e| panic!("stalled tunnel {i}: {e}"));
        let request = format!("GET /bytes/{BIG} HTTP/1.1\r\nHost: {PRIVATE}\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        stalled.push(tls);
    }
    // Time for the downloads to fill every buffer on their way and stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_a_new_tunnel_is_answered(edge_addr, &services, "downloads").await;
    // A stalled tunnel lost nothing: read to the end of its body, every byte in order.
    let mut first = stalled.swap_remove(0);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        first.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let reading = async {
        let mut chunk = vec![0u8; 256 * 1024];
        let mut offset = 0u64;
        while (offset as usize) < BIG {
            let n = first.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stalled tunnel ended at {offset} of {BIG}");
            let wrong = chunk[..n]
                .iter()
                .enumerate()
                .position(|(i, b)| *b != tlsgate_testkit::pattern_byte(offset + i as u64));
            assert_eq!(wrong, None, "a byte differs after offset {offset}");
            offset += n as u64;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the stalled download finished within 60 s once read");
    drop(stalled);
    drop(first);
    edge.stop().await;
    relay.stop().await;
}

/// The other direction: tunnels whose origin stops reading an upload hold their streams' windows at
/// the relay, on the one h2 connection the edge shares. The relay's connection window must leave
/// the other tunnels theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_an_origin_stops_reading_do_not_stall_the_others_on_the_shared_h2_connection() {
    use tlsgate_proxy::config::{Route, TargetHost, UpstreamTarget};
    use tlsgate_testkit::{Misbehaviour, spawn_faulty_origin};
    use tokio::io::AsyncWriteExt;
    const STALLED: usize = 6;
    const STALL: &str = "stall.service.example.com";
    let services = Services::start().await;
    let stall_origin = spawn_faulty_origin(
        &services.ca.issue(&[STALL]),
        Misbehaviour::StallAfterRequest,
    )
    .await;
    let mut routes = services.routes();
    routes.routes.push(Route {
        pattern: tlsgate_policy::FqdnPattern::parse(STALL).unwrap(),
        tls: Some(UpstreamTarget {
            host: TargetHost::Fixed(stall_origin.addr.ip().to_string()),
            port: stall_origin.addr.port(),
        }),
        http: None,
    });
    let pki = RelayPki::new();
    let relay = start_relay_with_routes(routes, &pki, any_port()).await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::H2, false),
        None,
    )
    .await;
    let edge_addr = edge.addr("tls");
    https_get(edge_addr, PRIVATE, services.client_config(), "/")
        .await
        .expect("warm-up through the tunnel");
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..STALLED {
        let mut tls = held_tunnel(edge_addr, STALL, services.client_config())
            .await
            .unwrap_or_else(|e| panic!("stalled upload {i}: {e}"));
        uploads.spawn(async move {
            let body = 32usize * 1024 * 1024;
            let head =
                format!("POST /upload HTTP/1.1\r\nHost: {STALL}\r\nContent-Length: {body}\r\n\r\n");
            tls.write_all(head.as_bytes()).await?;
            let chunk = vec![0x55u8; 64 * 1024];
            for _ in 0..body / chunk.len() {
                tls.write_all(&chunk).await?;
            }
            std::io::Result::Ok(())
        });
    }
    // Time for the uploads to fill every buffer on their way and stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        uploads.try_join_next().is_none(),
        "an upload the origin does not read finished"
    );
    assert_a_new_tunnel_is_answered(edge_addr, &services, "uploads").await;
    uploads.abort_all();
    edge.stop().await;
    relay.stop().await;
}

/// A new tunnel through `edge` to the other service gets its whole answer within 10 s beside the
/// stalled `what`.
async fn assert_a_new_tunnel_is_answered(edge: SocketAddr, services: &Services, what: &str) {
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        https_get(edge, OTHER, services.client_config(), "/bytes/100000"),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to a new tunnel within 10 s beside the stalled {what}"))
    .unwrap_or_else(|e| panic!("the new tunnel beside the stalled {what}: {e}"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, tlsgate_testkit::pattern(0, 100_000));
    eprintln!(
        "a new tunnel beside the stalled {what}: answered in {:?}",
        started.elapsed()
    );
}

/// Forwarded plain HTTP shares the edge's h2 connection to the relay with the tunnels: responses
/// whose clients stop reading hold their streams' windows there too, and must not stall the other
/// requests on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_responses_nobody_reads_do_not_stall_the_other_requests() {
    use tokio::io::AsyncWriteExt;
    const STALLED: usize = 6;
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, edge) = start_relay_and_h2_edge(&services, &pki).await;
    let http = edge.addr("http");
    let warm = http_get(http, PRIVATE, "/").await.expect("warm-up request");
    assert_eq!(warm.status, 200);
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
        let request = format!(
            "GET /bytes/{} HTTP/1.1\r\nHost: {PRIVATE}\r\n\r\n",
            32 << 20
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        stalled.push(tcp);
    }
    // Time for the responses to fill every buffer on their way and stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        http_get(http, PRIVATE, "/bytes/100000"),
    )
    .await
    .expect("no answer to a forwarded request within 10 s beside the stalled responses")
    .expect("the forwarded request");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, tlsgate_testkit::pattern(0, 100_000));
    drop(stalled);
    edge.stop().await;
    relay.stop().await;
}

/// `services`, a relay for them (its config changed by `edit`), a [`TcpHop`] to it, and an edge
/// whose `tls`-transport relay is reached through the forwarder and keeps `preconnect` spares.
async fn spares_through_a_link(
    services: &Services,
    preconnect: usize,
    edit: impl FnOnce(&mut tlsgate_proxy::config::Config),
) -> (Running, TcpHop, Running) {
    let pki = RelayPki::new();
    let relay = start_relay_edited(services, &pki, false, any_port(), edit).await;
    let link = TcpHop::start(relay.addr("relay")).await;
    let mut upstream = Arc::try_unwrap(relay_upstream(&pki, link.addr, Transport::Tls, false))
        .expect("a fresh upstream has one owner");
    upstream.preconnect = preconnect;
    let edge = start_edge(Arc::new(upstream), None).await;
    (relay, link, edge)
}

#[tokio::test]
async fn tls_transport_preconnect_carries_the_next_tunnel_on_a_connection_opened_ahead() {
    let services = Services::start().await;
    let (mut relay, link, edge) = spares_through_a_link(&services, 1, |_| {}).await;
    // The first tunnel finds no spare: it connects, and a spare is opened behind it.
    let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .expect("the first tunnel");
    assert_eq!(reply.status, 200);
    link.wait("the tunnel's and the spare's outer connections", |l| {
        l.accepted() == 2
    })
    .await;
    // From now on the relay cannot be reached anew: only the spare can carry the next tunnel.
    link.stop_accepting().await;
    let reply = https_get(edge.addr("tls"), OTHER, services.client_config(), "/")
        .await
        .expect("the second tunnel rides the spare opened before it");
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).starts_with("origin=other"));
    assert_relay_carried(&mut relay, OTHER).await;
    // No spare is left (the one opened behind the second tunnel was refused): the next tunnel
    // needs a new connection, and fails.
    let third = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/").await;
    assert!(third.is_err(), "no outer connection could carry it");
    assert_eq!(link.accepted(), 2);
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn tls_transport_spares_close_when_unused_and_an_idle_edge_opens_none() {
    let services = Services::start().await;
    // The relay's default detect timeout (the suites' is shorter than a spare's life).
    let (mut relay, link, edge) = spares_through_a_link(&services, 2, |config| {
        config.timeouts.detect = Timeouts::default().detect;
    })
    .await;
    // Nothing is opened before the first tunnel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(link.accepted(), 0);
    https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .expect("the first tunnel");
    link.wait("two spares behind the tunnel", |l| l.accepted() == 3)
        .await;
    // Unused, the spares are closed by the edge at the end of their life, and not replaced.
    let started = Instant::now();
    link.wait("the spares closed", |l| l.open() == 0).await;
    let closed = started.elapsed();
    assert!(
        closed + Duration::from_millis(500) >= tlsgate_proxy::transport::tls::SPARE_LIFETIME,
        "closed after {closed:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(link.accepted(), 3, "an idle edge opens no spare");
    // The relay records each unused spare as a connection that ended before a ClientHello.
    let unused = relay
        .flow("an unused spare at the relay", |f| {
            f.role == Role::Relay && f.reason == Some("client_closed_early")
        })
        .await;
    assert_eq!(unused.bytes_from_client, 0, "{unused:?}");
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn tls_transport_skips_a_spare_whose_connection_was_closed_meanwhile() {
    let services = Services::start().await;
    let (relay, link, edge) = spares_through_a_link(&services, 1, |_| {}).await;
    https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .expect("the first tunnel");
    link.wait("the spare", |l| l.accepted() == 2 && l.open() == 1)
        .await;
    // The link is cut under the spare (as a relay restart or a firewall's reset does).
    link.cut();
    link.wait("the spare's connection closed", |l| l.open() == 0)
        .await;
    let reply = https_get(edge.addr("tls"), OTHER, services.client_config(), "/")
        .await
        .expect("a tunnel on a new connection, not on the dead spare");
    assert_eq!(reply.status, 200);
    assert!(link.accepted() >= 3, "{}", link.accepted());
    edge.stop().await;
    relay.stop().await;
}

/// An edge with `preconnect: 1` whose first tunnel has been served, with only the spare opened
/// behind it still open on the link.
async fn one_spare_left(services: &Services) -> (Running, TcpHop, Running) {
    let (relay, link, edge) = spares_through_a_link(services, 1, |_| {}).await;
    https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .expect("the first tunnel");
    link.wait("the spare alone", |l| l.accepted() == 2 && l.open() == 1)
        .await;
    (relay, link, edge)
}

#[tokio::test]
async fn tls_transport_writes_the_hello_again_when_a_spare_dies_as_it_is_used() {
    let services = Services::start().await;
    let (mut relay, link, edge) = one_spare_left(&services).await;
    // The spare dies as the next tunnel's ClientHello goes into it: the relay never gets it.
    link.cut_on_next_data();
    let reply = https_get(edge.addr("tls"), OTHER, services.client_config(), "/")
        .await
        .expect("the ClientHello is written again on a new connection");
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).starts_with("origin=other"));
    assert!(link.accepted() >= 3, "{}", link.accepted());
    assert_relay_carried(&mut relay, OTHER).await;
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn tls_transport_never_replays_a_refusal_made_on_a_spare() {
    let services = Services::start().await;
    let (mut relay, _link, edge) = one_spare_left(&services).await;
    let refused = https_get(
        edge.addr("tls"),
        "unknown.example.com",
        services.client_config(),
        "/",
    )
    .await
    .expect_err("no route for the name");
    assert!(
        refused.contains("received fatal alert: AccessDenied"),
        "{refused}"
    );
    let no_route = |f: &FlowRecord| f.role == Role::Relay && f.reason == Some("no_route");
    relay.flow("the refusal", no_route).await;
    let again = tokio::time::timeout(
        Duration::from_secs(1),
        relay.flow("the refusal made again", no_route),
    )
    .await;
    assert!(again.is_err(), "the relay refused the name once");
    edge.stop().await;
    relay.stop().await;
}
