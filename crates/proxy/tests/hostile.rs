//! Hostile input to the edge and the relay: each bad connection ends with a reason within the
//! configured timeouts, while a concurrent healthy tunnel is unaffected.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tlsgate_proxy::config::Transport;
use tlsgate_proxy::flow::Role;
use tlsgate_testkit::{https_get, pattern};
use tlsgate_wire::{Peek, peek_client_hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A real rustls ClientHello for `sni`, captured from a loopback socket.
async fn real_client_hello(sni: &str) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ca = tlsgate_testkit::TestCa::new("unused");
    let config = tlsgate_testkit::client_config(&ca, &[b"h2"]);
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await;
    });
    let (mut server, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = server.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before its hello was complete");
        buf.extend_from_slice(&chunk[..n]);
        if let Peek::Complete(info) = peek_client_hello(&buf, 16 * 1024) {
            buf.truncate(info.consumed);
            break;
        }
    }
    client.abort();
    buf
}

/// A record header + handshake header announcing a ~1 MB ClientHello, followed by 1 MB of filler.
fn one_megabyte_hello() -> Vec<u8> {
    let len: u32 = 1 << 20;
    let mut bytes = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01];
    bytes.extend_from_slice(&len.to_be_bytes()[1..]);
    bytes.resize(len as usize, 0x41);
    bytes
}

/// Sends `payload`, optionally stays silent, and returns how long the server took to close.
async fn closed_after(addr: SocketAddr, payload: &[u8]) -> Duration {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may close before taking the whole payload: that is the point.
    let _ = tcp.write_all(payload).await;
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection to {addr} still open after 10 s");
    started.elapsed()
}

/// Outer TLS to the relay without ALPN (the raw transport), then `payload` as the inner bytes.
async fn closed_after_inner(relay: SocketAddr, pki: &RelayPki, payload: &[u8]) -> Duration {
    let upstream = relay_upstream(pki, relay, Transport::Tls, false);
    let tcp = TcpStream::connect(relay).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(upstream.tls_raw.clone())
        .connect(upstream.server_name.clone(), tcp)
        .await
        .unwrap();
    let started = Instant::now();
    let _ = tls.write_all(payload).await;
    let _ = tls.flush().await;
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tls.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "inner connection still open after 10 s");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_end_with_a_reason_and_leave_healthy_tunnels_alone() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (mut relay, mut edge) = start_relay_and_h2_edge(&services, &pki).await;
    let detect = test_timeouts().detect;
    let handshake = test_timeouts().handshake;
    let slack = Duration::from_secs(2);

    // A healthy 64 MB download runs through the tunnel the whole time.
    let edge_tls = edge.addr("tls");
    let config = services.client_config();
    let healthy =
        tokio::spawn(async move { https_get(edge_tls, PRIVATE, config, "/bytes/67108864").await });

    let hello = real_client_hello(PRIVATE).await;
    let half = &hello[..hello.len() / 2];
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80)
        .collect();
    let huge = one_megabyte_hello();

    // --- the edge's passthrough listener ---
    let edge_addr = edge.addr("tls");
    let cases: [(&str, &[u8], &str, Duration); 3] = [
        ("garbage", &garbage, "client_not_tls", slack),
        ("half hello", half, "client_hello_timeout", detect + slack),
        ("1 MB hello", &huge, "client_hello_too_large", slack),
    ];
    for (what, payload, reason, bound) in cases {
        let took = closed_after(edge_addr, payload).await;
        assert!(
            took <= bound,
            "edge {what}: closed after {took:?} > {bound:?}"
        );
        let flow = edge
            .flow(what, |f| f.role == Role::Edge && f.reason.is_some())
            .await;
        assert_eq!(flow.reason, Some(reason), "edge {what}: {flow:?}");
        eprintln!("edge {what}: closed after {took:?}, reason {reason}");
    }

    // --- the relay, outer layer ---
    let relay_addr = relay.addr("relay");
    let cases: [(&str, &[u8], &str, Duration); 3] = [
        ("garbage", &garbage, "client_handshake_failed", slack),
        (
            "half hello",
            half,
            "client_handshake_timeout",
            handshake + slack,
        ),
        ("1 MB hello", &huge, "client_handshake_failed", slack),
    ];
    for (what, payload, reason, bound) in cases {
        let took = closed_after(relay_addr, payload).await;
        assert!(
            took <= bound,
            "relay outer {what}: closed after {took:?} > {bound:?}"
        );
        let flow = relay.flow(what, |f| f.reason.is_some()).await;
        assert_eq!(flow.reason, Some(reason), "relay outer {what}: {flow:?}");
        eprintln!("relay outer {what}: closed after {took:?}, reason {reason}");
    }

    // --- the relay, inner layer (raw transport) ---
    let cases: [(&str, &[u8], &str, Duration); 2] = [
        ("half hello", half, "client_hello_timeout", detect + slack),
        ("1 MB hello", &huge, "client_hello_too_large", slack),
    ];
    for (what, payload, reason, bound) in cases {
        let took = closed_after_inner(relay_addr, &pki, payload).await;
        assert!(
            took <= bound,
            "relay inner {what}: closed after {took:?} > {bound:?}"
        );
        let flow = relay.flow(what, |f| f.reason.is_some()).await;
        assert_eq!(flow.reason, Some(reason), "relay inner {what}: {flow:?}");
        eprintln!("relay inner {what}: closed after {took:?}, reason {reason}");
    }
    // Inner garbage is not TLS: the relay answers it as HTTP/1.1 (400) and closes.
    let took = closed_after_inner(relay_addr, &pki, b"\x00\x01garbage\r\n\r\n").await;
    assert!(took <= slack, "relay inner garbage: closed after {took:?}");

    let reply = healthy
        .await
        .unwrap()
        .expect("the healthy download completes");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 64 << 20);
    assert!(
        reply.body == pattern(0, 64 << 20),
        "the healthy download arrived intact"
    );
    edge.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn slow_hello_split_into_tiny_writes_is_still_tunnelled() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (relay, edge) = start_relay_and_h2_edge(&services, &pki).await;
    // A client that dribbles its hello in 7-byte segments: the edge coalesces them.
    let listener_addr = edge.addr("tls");
    let (client_side, proxy_side) = tokio::io::duplex(64 * 1024);
    let pump = tokio::spawn(async move {
        let tcp = TcpStream::connect(listener_addr).await.unwrap();
        let _ = tcp.set_nodelay(true);
        let (mut tcp_r, mut tcp_w) = tcp.into_split();
        let (mut dup_r, mut dup_w) = tokio::io::split(proxy_side);
        let up = async {
            let mut buf = [0u8; 7];
            loop {
                let n = dup_r.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                tcp_w.write_all(&buf[..n]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let down = async {
            let _ = tokio::io::copy(&mut tcp_r, &mut dup_w).await;
        };
        tokio::join!(up, down);
    });
    let name = rustls_pki_types::ServerName::try_from(PRIVATE).unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_rustls::TlsConnector::from(services.client_config()).connect(name, client_side),
    )
    .await
    .expect("handshake within 20 s")
    .expect("handshake through the tunnel");
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(
        tlsgate_testkit::sha256(certs[0].as_ref()),
        services.private_leaf.sha256_fingerprint()
    );
    drop(tls);
    pump.abort();
    edge.stop().await;
    relay.stop().await;
}
