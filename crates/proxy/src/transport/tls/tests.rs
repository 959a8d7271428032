use std::time::Duration;

use rustls_pki_types::ServerName;
use tlsgate_testkit::TestCa;
use tokio::net::TcpListener;

use super::*;

const NAME: &str = "relay.test";

/// An outer connection over real loopback TCP, as a spare is: the edge's end and the relay's.
async fn outer_pair() -> (Outer<TcpStream>, Outer<TcpStream>) {
    let ca = TestCa::new("spare test CA");
    let leaf = ca.issue(&[NAME]);
    let (_, client) = crate::tls::relay_client_configs(&[ca.cert_der()], None).unwrap();
    let server = crate::tls::relay_server_config(leaf.chain, leaf.key, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (edge, relay) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let name = ServerName::try_from(NAME).unwrap();
    let (edge, relay) = tokio::join!(
        outer::connect(client, name, edge.unwrap()),
        outer::accept(server, relay.unwrap().0)
    );
    (edge.unwrap(), relay.unwrap())
}

#[tokio::test]
async fn an_open_spare_is_live() {
    let (mut edge, _relay) = outer_pair().await;
    // Session tickets arrive and are taken in by the outer layer: they do not count.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(is_live(&mut edge));
    assert!(is_live(&mut edge));
}

#[tokio::test]
async fn a_spare_closed_since_the_reactor_last_turned_is_found_dead() {
    let (mut edge, relay) = outer_pair().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // This look reads until the socket would block, so the runtime now holds it as not readable.
    assert!(is_live(&mut edge));
    drop(relay);
    // The close reaches the edge's socket, but this task does not yield, so the runtime's reactor
    // (this thread's) has not seen it: only the kernel knows.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!is_live(&mut edge), "the relay closed this connection");
}

#[tokio::test]
async fn a_spare_with_bytes_the_outer_layer_has_not_seen_is_not_used() {
    let (mut edge, mut relay) = outer_pair().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(is_live(&mut edge));
    // A relay sends nothing before the inner ClientHello: data here means a confused peer.
    relay.write_all(b"unexpected").await.unwrap();
    relay.flush().await.unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!is_live(&mut edge));
}
