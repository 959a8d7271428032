use std::time::Duration;

use rustls::RootCertStore;
use tlsgate_testkit::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::io::End;
use crate::io::tests::assert_splices_exactly;

use super::*;

const NAME: &str = "relay.test";

struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    ca: TestCa,
}

/// The relay's configs, as the gateway builds them (secret extraction on, TLS 1.3 only).
fn configs() -> Configs {
    let ca = TestCa::new("outer test CA");
    let leaf = ca.issue(&[NAME]);
    let (_, client) = crate::tls::relay_client_configs(&[ca.cert_der()], None).unwrap();
    let server = crate::tls::relay_server_config(leaf.chain, leaf.key, None).unwrap();
    Configs { client, server, ca }
}

fn name() -> ServerName<'static> {
    ServerName::try_from(NAME).unwrap()
}

/// Bytes that differ at every position, so a lost, repeated or reordered chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Writes `send` and closes, while reading everything the peer sends until its close.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: S, send: Vec<u8>) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = async move {
        // Uneven chunks: records of every size, not only full ones.
        for chunk in send.chunks(5_000) {
            write.write_all(chunk).await.unwrap();
        }
        write.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut got = Vec::new();
        read.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    got
}

async fn ours_pair(pipe: usize) -> (Outer<DuplexStream>, Outer<DuplexStream>) {
    let c = configs();
    let (a, b) = duplex(pipe);
    let (client, server) = tokio::join!(
        connect(c.client.clone(), name(), a),
        accept(c.server.clone(), b)
    );
    (client.unwrap(), server.unwrap())
}

#[tokio::test]
async fn carries_bytes_both_ways_to_a_rustls_server() {
    let c = configs();
    let (a, b) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(c.server.clone());
    let server = tokio::spawn(async move {
        let tls = acceptor.accept(b).await.unwrap();
        exchange(tls, pattern(300_000, 2)).await
    });
    let client = connect(c.client.clone(), name(), a).await.unwrap();
    let got = exchange(client, pattern(1 << 20, 1)).await;
    assert_eq!(got, pattern(300_000, 2));
    assert_eq!(server.await.unwrap(), pattern(1 << 20, 1));
}

#[tokio::test]
async fn carries_bytes_both_ways_from_a_rustls_client_with_its_certificate_and_alpn() {
    let c = configs();
    let client_leaf = c.ca.issue_client("edge-1");
    let leaf = c.ca.issue(&[NAME]);
    let server =
        crate::tls::relay_server_config(leaf.chain, leaf.key, Some(&[c.ca.cert_der()])).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(c.ca.cert_der()).unwrap();
    let mut client_config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(client_leaf.chain.clone(), client_leaf.key.clone_key())
        .unwrap();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let (a, b) = duplex(64 * 1024);
    let client = tokio::spawn(async move {
        let mut tls = TlsConnector::from(Arc::new(client_config))
            .connect(name(), a)
            .await
            .unwrap();
        // The first bytes leave right behind the client's Finished.
        tls.write_all(b"first").await.unwrap();
        exchange(tls, pattern(700_000, 3)).await
    });
    let server = accept(server, b).await.unwrap();
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(server.peer_certificate(), client_leaf.chain.first());
    let got = exchange(server, pattern(200_000, 4)).await;
    assert_eq!(&got[..5], b"first");
    assert_eq!(&got[5..], pattern(700_000, 3));
    assert_eq!(client.await.unwrap(), pattern(200_000, 4));
}

/// A stream that reads and writes one byte per call: every record and handshake message arrives
/// in pieces.
struct Trickle(DuplexStream);

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut one = [0u8; 1];
        let mut small = ReadBuf::new(&mut one);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut small))?;
        buf.put_slice(small.filled());
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        Pin::new(&mut self.0).poll_write(cx, one)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn survives_every_byte_arriving_alone() {
    let c = configs();
    let (a, b) = duplex(64 * 1024);
    let (client, server) = tokio::join!(
        connect(c.client.clone(), name(), Trickle(a)),
        accept(c.server.clone(), Trickle(b))
    );
    let (got_by_server, got_by_client) = tokio::join!(
        exchange(server.unwrap(), pattern(40_000, 6)),
        exchange(client.unwrap(), pattern(70_000, 5))
    );
    assert_eq!(got_by_server, pattern(70_000, 5));
    assert_eq!(got_by_client, pattern(40_000, 6));
}

#[tokio::test]
async fn follows_a_rustls_peer_key_update_and_answers_it() {
    let c = configs();
    let (a, b) = duplex(64 * 1024);
    let connector = TlsConnector::from(c.client.clone());
    let peer = tokio::spawn(async move {
        let mut tls = connector.connect(name(), a).await.unwrap();
        tls.write_all(&pattern(50_000, 7)).await.unwrap();
        tls.flush().await.unwrap();
        tls.get_mut().1.refresh_traffic_keys().unwrap();
        tls.write_all(&pattern(50_000, 8)).await.unwrap();
        tls.flush().await.unwrap();
        let mut echo = vec![0; 100_000];
        tls.read_exact(&mut echo).await.unwrap();
        tls.shutdown().await.unwrap();
        echo
    });
    let mut server = accept(c.server.clone(), b).await.unwrap();
    let mut got = vec![0; 100_000];
    server.read_exact(&mut got).await.unwrap();
    let mut sent = pattern(50_000, 7);
    sent.extend(pattern(50_000, 8));
    assert_eq!(got, sent);
    // rustls asks for an update in return; the echo goes out under our new key.
    assert!(server.update_due, "rustls' key update asks for ours");
    server.write_all(&got).await.unwrap();
    server.flush().await.unwrap();
    assert!(!server.update_due);
    // Counted from the new key: the echo's seven records, none of the tickets sent before.
    assert_eq!(server.tx.seq, 7, "the new key starts a new sequence");
    assert_eq!(peer.await.unwrap(), sent);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn updates_its_keys_at_the_limit_and_a_rustls_peer_follows() {
    let c = configs();
    let (a, b) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(c.server.clone());
    let peer = tokio::spawn(async move {
        let tls = acceptor.accept(b).await.unwrap();
        exchange(tls, Vec::new()).await
    });
    let mut client = connect(c.client.clone(), name(), a).await.unwrap();
    // A key update every three records.
    client.set_tx_limit(3);
    let data = pattern(200_000, 9);
    for chunk in data.chunks(10_000) {
        client.write_all(chunk).await.unwrap();
        assert!(client.tx.seq <= 3);
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(peer.await.unwrap(), data);
}

#[tokio::test]
async fn rejects_a_forged_record() {
    let (mut client, mut server) = ours_pair(64 * 1024).await;
    // A record of the right shape whose tag was not made with the key.
    let mut forged = vec![APPLICATION_DATA, 3, 3, 0, 40];
    forged.extend([0x5a; 40]);
    client.io.write_all(&forged).await.unwrap();
    let err = server.read(&mut [0; 64]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("bad_record_mac"), "{err}");
}

#[tokio::test]
async fn rejects_an_oversized_or_unprotected_record() {
    for (header, expect) in [
        ([APPLICATION_DATA, 3, 3, 0x48, 0x01], "record_overflow"),
        ([HANDSHAKE, 3, 3, 0, 4], "type 22"),
        ([APPLICATION_DATA, 3, 1, 0, 40], "version"),
    ] {
        let (mut client, mut server) = ours_pair(64 * 1024).await;
        client.io.write_all(&header).await.unwrap();
        let err = server.read(&mut [0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(expect), "{err}");
    }
}

#[tokio::test]
async fn a_connection_cut_inside_a_record_is_an_unexpected_eof() {
    let (mut client, mut server) = ours_pair(64 * 1024).await;
    client
        .io
        .write_all(&[APPLICATION_DATA, 3, 3, 0, 40, 1, 2])
        .await
        .unwrap();
    drop(client);
    let err = server.read(&mut [0; 64]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("inside a TLS record"), "{err}");
}

#[tokio::test]
async fn a_peer_alert_ends_the_read_with_its_code() {
    let (mut client, mut server) = ours_pair(64 * 1024).await;
    // internal_error (80), sealed as the peer's stack would.
    let start = client.start_record(2);
    client.wbuf.extend_from_slice(&[2, 80]);
    client.finish_record(start, ALERT).unwrap();
    client.flush().await.unwrap();
    let err = server.read(&mut [0; 64]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(err.to_string().contains("alert 80"), "{err}");
}

#[tokio::test]
async fn one_read_takes_every_whole_record_already_received() {
    let (mut client, mut server) = ours_pair(1 << 20).await;
    // Four records: three full ones and a short one, all received before the read.
    let data = pattern(3 * MAX_PLAINTEXT + 100, 7);
    client.write_all(&data).await.unwrap();
    client.flush().await.unwrap();
    let mut buf = vec![0; 64 * 1024];
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(n, data.len());
    assert!(buf[..n] == data[..]);
}

#[tokio::test]
async fn data_before_a_failing_record_is_read_first_and_the_reason_kept() {
    let (mut client, mut server) = ours_pair(64 * 1024).await;
    client.write_all(b"before").await.unwrap();
    let start = client.start_record(2);
    client.wbuf.extend_from_slice(&[2, 80]);
    client.finish_record(start, ALERT).unwrap();
    client.flush().await.unwrap();
    let mut buf = [0; 64];
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"before");
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(err.to_string().contains("alert 80"), "{err}");
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffers() {
    let (mut client, mut server) = ours_pair(64 * 1024).await;
    crate::bufs::clear();
    let mut got = vec![0; 100_000];
    let send = async {
        client.write_all(&pattern(100_000, 10)).await.unwrap();
        client.flush().await.unwrap();
    };
    let ((), read) = tokio::join!(send, server.read_exact(&mut got));
    read.unwrap();
    assert_eq!(client.wbuf.capacity(), 0);
    assert_eq!(got, pattern(100_000, 10));
    // Nothing more to read: the read waits, with its buffer given back.
    let idle = tokio::time::timeout(Duration::from_millis(50), server.read(&mut [0; 64])).await;
    assert!(idle.is_err(), "nothing was sent");
    assert_eq!(server.rbuf.capacity(), 0);
    assert!(server.opened.is_none());
    assert!(
        crate::bufs::kept() >= 2,
        "the write and the read buffer went back to the thread, for the next bytes"
    );
}

#[tokio::test]
async fn a_handshake_with_a_closed_peer_fails_with_a_reason() {
    let c = configs();
    let (a, b) = duplex(1024);
    drop(b);
    let err = connect(c.client.clone(), name(), a).await.err().unwrap();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
        ),
        "{err}"
    );
    let (a, mut b) = duplex(1024);
    b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let err = accept(c.server.clone(), a).await.err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn a_rejected_certificate_is_told_to_the_peer() {
    let c = configs();
    let stranger = TestCa::new("another CA");
    let (_, client) = crate::tls::relay_client_configs(&[stranger.cert_der()], None).unwrap();
    let (a, b) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(c.server.clone());
    let server = tokio::spawn(async move { acceptor.accept(b).await.err().unwrap() });
    let err = connect(client, name(), a).await.err().unwrap();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let told = server.await.unwrap();
    assert!(told.to_string().contains("UnknownCA"), "{told}");
}

#[tokio::test]
async fn garbage_after_the_handshake_is_an_error_never_a_panic() {
    // xorshift: the same 200 inputs every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200 {
        let (mut client, mut server) = ours_pair(64 * 1024).await;
        let len = (next() % 600) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half the inputs start like a protected record, to reach past the header checks.
        if round % 2 == 0 && len >= 5 {
            garbage[..3].copy_from_slice(&[APPLICATION_DATA, 3, 3]);
        }
        client.io.write_all(&garbage).await.unwrap();
        client.io.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let read = server.read_to_end(&mut sink).await;
        assert!(
            read.is_err(),
            "round {round}: {len} bytes of garbage read as data"
        );
        assert!(sink.is_empty());
    }
}

#[tokio::test]
async fn the_edge_and_the_relay_agree_on_aes_128_gcm_and_still_speak_the_other_suites() {
    let c = configs();
    // The edge's client towards a relay: AES-128-GCM is what the two ends settle on.
    let (a, b) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(c.server.clone());
    let server = tokio::spawn(async move {
        let tls = acceptor.accept(b).await.unwrap();
        tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    });
    let client = connect(c.client.clone(), name(), a).await.unwrap();
    let suite = server.await.unwrap();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    drop(client);

    // A peer that offers only AES-256-GCM (another build, another TLS 1.3 stack) still gets in,
    // and the records carry bytes both ways under that suite.
    let mut only_256 = rustls::crypto::ring::default_provider();
    only_256
        .cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    let mut roots = RootCertStore::empty();
    roots.add(c.ca.cert_der()).unwrap();
    let peer = ClientConfig::builder_with_provider(Arc::new(only_256))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (a, b) = duplex(64 * 1024);
    let server = tokio::spawn(accept(c.server.clone(), b));
    let tls = TlsConnector::from(Arc::new(peer))
        .connect(name(), a)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.negotiated_cipher_suite().unwrap().suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    let server = server.await.unwrap().unwrap();
    let (got_by_server, got_by_client) = tokio::join!(
        exchange(server, pattern(50_000, 8)),
        exchange(tls, pattern(30_000, 7))
    );
    assert_eq!(got_by_server, pattern(30_000, 7));
    assert_eq!(got_by_client, pattern(50_000, 8));
}

/// Reads chunks from `outer` until `want` bytes came, returning them as handed over.
async fn read_chunks(outer: &mut Outer<DuplexStream>, want: usize) -> Vec<Bytes> {
    let mut got = Vec::new();
    let mut n = 0;
    while n < want {
        let mut chunks = crate::io::Chunks::default();
        let read = std::future::poll_fn(|cx| outer.poll_read_chunks(cx, &mut chunks))
            .await
            .unwrap();
        assert!(read > 0, "end of input after {n} of {want} bytes");
        assert_eq!(chunks.remaining(), read);
        n += read;
        while let Some(chunk) = chunks.pop() {
            got.push(chunk);
        }
    }
    got
}

#[tokio::test]
async fn records_are_handed_over_where_they_were_opened_and_their_buffer_is_kept_after() {
    let (mut client, mut server) = ours_pair(256 * 1024).await;
    // Three records: two full ones and a short one, all in the pipe before the server reads.
    let sent = pattern(40_000, 9);
    client.write_all(&sent).await.unwrap();
    client.flush().await.unwrap();
    let chunks = read_chunks(&mut server, sent.len()).await;
    assert_eq!(chunks.concat(), sent);
    assert_eq!(chunks.len(), 3);
    // Each chunk is its record's plaintext in the read buffer, right behind the record's header:
    // the buffer now starts after the three records (header, plaintext, content type, tag).
    let behind = server.rbuf.as_ptr() as usize;
    let mut at = behind - (40_000 + 3 * (HEADER + 1 + TAG));
    for chunk in &chunks {
        assert_eq!(chunk.as_ptr() as usize, at + HEADER);
        at += HEADER + chunk.len() + 1 + TAG;
    }
    assert_eq!(at, behind);

    // While the chunks are held, the buffer is theirs: going idle frees the connection's hold on
    // it without keeping it for the thread. Once they are dropped, it is kept for the next read.
    bufs::clear();
    let idle_read = |server: &mut Outer<DuplexStream>| {
        let mut chunks = crate::io::Chunks::default();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(server.poll_read_chunks(&mut cx, &mut chunks).is_pending());
    };
    idle_read(&mut server);
    assert_eq!(
        bufs::kept(),
        0,
        "a buffer still shared with chunks was kept"
    );
    drop(chunks);

    client.write_all(&sent).await.unwrap();
    client.flush().await.unwrap();
    let again = read_chunks(&mut server, sent.len()).await;
    assert_eq!(again.concat(), sent);
    drop(again);
    bufs::clear();
    idle_read(&mut server);
    assert_eq!(
        bufs::kept(),
        1,
        "the emptied read buffer went back to the thread"
    );
}

/// The relay's orientation (and the edge's, mirrored): records to a stream, written vectored.
#[tokio::test]
async fn a_splice_takes_the_records_uncopied_and_carries_exact_bytes_both_ways() {
    // Small pipes: records arrive in pieces, writes are partial.
    let (client, mut server) = ours_pair(1000).await;
    let (upstream, upstream_peer) = duplex(777);
    let records: End<'_, DuplexStream> = End::Chunked(&mut server);
    assert_splices_exactly(records, client, End::Stream(upstream), upstream_peer).await;
}

/// Records handed to an HTTP/2 stream, which takes each one as it is, and to another outer
/// connection, which seals them again.
#[tokio::test]
async fn records_pass_uncopied_to_an_h2_stream_and_to_another_outer_connection() {
    let (client, mut server) = ours_pair(1000).await;
    let (h2_end, h2_peer) = crate::io::tests::h2_stream_pair().await;
    let records: End<'_, DuplexStream> = End::Chunked(&mut server);
    let h2_end: End<'_, DuplexStream> = End::H2(h2_end);
    assert_splices_exactly(records, client, h2_end, h2_peer).await;

    let (client, mut server) = ours_pair(1000).await;
    let (other_client, mut other_server) = ours_pair(3000).await;
    let a: End<'_, DuplexStream> = End::Chunked(&mut server);
    let b: End<'_, DuplexStream> = End::Chunked(&mut other_server);
    assert_splices_exactly(a, client, b, other_client).await;
}
