//! The relay resolves upstream names with a configured DNS server instead of the system resolver.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::config::{
    Listener, ListenerKind, RelayListener, Route, Routes, TargetHost, Transport, UpstreamTarget,
};
use tlsgate_proxy::tls::relay_server_config;
use tlsgate_testkit::{https_get, sha256};
use tokio::net::UdpSocket;

/// Answers A queries for `name` with 127.0.0.1 and everything else with no answer; counts queries.
async fn spawn_dns(name: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let query = &buf[..n];
            if n < 12 {
                continue;
            }
            // Question: labels until a zero byte, then QTYPE and QCLASS.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && query[i] != 0 {
                let len = query[i] as usize;
                labels.push(
                    String::from_utf8_lossy(&query[i + 1..(i + 1 + len).min(n)]).to_lowercase(),
                );
                i += 1 + len;
            }
            let question_end = i + 5;
            if question_end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[i + 1], query[i + 2]]);
            let matches = labels.join(".") == name && qtype == 1;
            if labels.join(".") == name {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let mut reply = Vec::with_capacity(64);
            reply.extend_from_slice(&query[..2]); // id
            reply.extend_from_slice(&[0x81, 0x80]); // response, recursion available, no error
            reply.extend_from_slice(&[0, 1, 0, u8::from(matches), 0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..question_end]);
            if matches {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    (addr, asked)
}

#[tokio::test]
async fn relay_resolves_upstream_names_with_the_configured_dns_server() {
    const INTERNAL: &str = "private-origin.internal.example";
    let services = Services::start().await;
    let pki = RelayPki::new();
    let (dns, asked) = spawn_dns(INTERNAL).await;
    let routes = Routes {
        routes: vec![Route {
            pattern: FqdnPattern::parse(PRIVATE).unwrap(),
            tls: Some(UpstreamTarget {
                host: TargetHost::Fixed(INTERNAL.into()),
                port: services.private.addr.port(),
            }),
            http: None,
        }],
    };
    let tls = relay_server_config(pki.leaf.chain.clone(), pki.leaf.key.clone_key(), None).unwrap();
    let mut config = config(vec![Listener {
        name: "relay".into(),
        listen: any_port(),
        kind: ListenerKind::Relay(RelayListener {
            tls,
            routes: Arc::new(routes),
        }),
    }]);
    config.dns_server = Some(dns);
    let relay = start(config).await;
    let edge = start_edge(
        relay_upstream(&pki, relay.addr("relay"), Transport::H2, false),
        None,
    )
    .await;
    let reply = https_get(edge.addr("tls"), PRIVATE, services.client_config(), "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        sha256(&reply.peer_leaf_der),
        services.private_leaf.sha256_fingerprint()
    );
    assert!(
        asked.load(Ordering::Relaxed) >= 1,
        "the configured DNS server was asked"
    );
    edge.stop().await;
    relay.stop().await;
}
