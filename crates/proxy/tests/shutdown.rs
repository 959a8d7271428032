//! Graceful shutdown with bodies still streaming: the listener closes at once, in-flight tunnels
//! finish within the grace period, and whatever is left when it ends is closed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tlsgate_proxy::config::Transport;
use tlsgate_testkit::{https_get, pattern};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_tunnels_finish_and_new_connections_are_refused_during_drain() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let relay = start_relay(&services, &pki, false, any_port()).await;
    let mut config = config(Vec::new());
    config.timeouts.shutdown_grace = Duration::from_secs(20);
    let upstream = relay_upstream(&pki, relay.addr("relay"), Transport::H2, false);
    let edge = start_edge_with(upstream, config.timeouts).await;
    let edge_addr = edge.addr("tls");
    // A 64 MiB download is streaming when the edge is told to stop.
    let client = services.client_config();
    let download =
        tokio::spawn(async move { https_get(edge_addr, PRIVATE, client, "/bytes/67108864").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    edge.stop.cancel();
    // New connections are refused at once (the listening socket is closed).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(edge_addr).await.is_err(),
        "the listener must be closed during drain"
    );
    let reply = download
        .await
        .unwrap()
        .expect("the in-flight download completes during drain");
    assert_eq!(reply.body.len(), 64 << 20);
    assert!(reply.body == pattern(0, 64 << 20), "intact");
    // The gateway returns once the last tunnel has ended, well before the grace period.
    tokio::time::timeout(Duration::from_secs(20), edge.task)
        .await
        .expect("drained")
        .unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "took {:?}",
        stopping.elapsed()
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_still_open_when_the_grace_period_ends_are_closed() {
    let services = Services::start().await;
    let pki = RelayPki::new();
    let relay = start_relay(&services, &pki, false, any_port()).await;
    let mut timeouts = test_timeouts();
    timeouts.shutdown_grace = Duration::from_millis(500);
    let upstream = relay_upstream(&pki, relay.addr("relay"), Transport::Tls, false);
    let edge = start_edge_with(upstream, timeouts).await;
    // An idle tunnel: TLS through the edge, then nothing.
    let tcp = TcpStream::connect(edge.addr("tls")).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(PRIVATE).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(services.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    let stopping = Instant::now();
    edge.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), edge.task)
        .await
        .expect("gateway returned")
        .unwrap();
    let waited = stopping.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "returned after {waited:?}"
    );
    // The client sees its tunnel closed.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel must be closed: {read:?}"
    );
    relay.stop().await;
}
