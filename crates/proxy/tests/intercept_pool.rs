//! The interceptor's shared origin pool: bumped client connections to the same origin name share
//! one HTTP/2 origin connection (opened one after another and at once), reuse released HTTP/1.1
//! ones, and a different SNI on the same address gets its own connection and certificate record,
//! unless the first connection's certificate covers it too (coalescing: same address and port,
//! 421 honoured, and off when the listener says so).
//! Real rustls clients through CONNECT, and an in-process origin that numbers its connections.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tlsgate_proxy::config::CertStrategy;
use tlsgate_proxy::flow::FlowRecord;
use tlsgate_proxy::intercept::InterceptState;
use tlsgate_testkit::{Leaf, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every wait on the proxy or the origin in these tests.
const WAIT: Duration = Duration::from_secs(15);

/// An HTTPS origin answering every request with `conn=<n> sni=<name> proto=<version>`, `n`
/// numbering its accepted TLS connections from 1; it presents the leaf registered for the SNI.
struct CountingOrigin {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How a [`CountingOrigin`] departs from a plain one.
#[derive(Clone, Copy, Default)]
struct Quirks {
    /// Each h2 connection says GOAWAY (graceful shutdown) once it has answered its first request,
    /// as nginx does after `keepalive_requests`.
    goaway: bool,
    /// 421 (Misdirected Request) for a request whose host is not the connection's SNI, as an
    /// origin that routes by SNI answers.
    misdirect: bool,
    /// Also listen on this address, same port and same connection numbering.
    also_on: Option<IpAddr>,
}

impl CountingOrigin {
    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

async fn spawn_counting_origin(leaves: &[(&str, &Leaf)], alpn: &[&[u8]]) -> CountingOrigin {
    spawn_counting_origin_with(leaves, alpn, Quirks::default()).await
}

/// [`spawn_counting_origin`] with `quirks`.
async fn spawn_counting_origin_with(
    leaves: &[(&str, &Leaf)],
    alpn: &[&[u8]],
    quirks: Quirks,
) -> CountingOrigin {
    let provider = tlsgate_testkit::crypto_provider();
    let mut by_sni = rustls::server::ResolvesServerCertUsingSni::new();
    for (name, leaf) in leaves {
        let key = rustls::sign::CertifiedKey::from_der(
            leaf.chain.clone(),
            leaf.key.clone_key(),
            &provider,
        )
        .unwrap();
        by_sni.add(name, key).unwrap();
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(by_sni));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut listeners = vec![listener];
    if let Some(ip) = quirks.also_on {
        listeners.push(TcpListener::bind((ip, addr.port())).await.unwrap());
    }
    let handshakes = Arc::new(AtomicUsize::new(0));
    let tasks = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(serve_counting(
                listener,
                acceptor.clone(),
                handshakes.clone(),
                quirks,
            ))
        })
        .collect();
    CountingOrigin {
        addr,
        handshakes,
        tasks,
    }
}

/// The accept loop of a [`CountingOrigin`] listener.
async fn serve_counting(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    counter: Arc<AtomicUsize>,
    quirks: Quirks,
) {
    {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            conns.spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(WAIT, acceptor.accept(tcp)).await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let answered = Arc::new(tokio::sync::Notify::new());
                let answering = answered.clone();
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let body = format!("conn={n} sni={sni} proto={:?}\n", req.version());
                    let host = req
                        .uri()
                        .host()
                        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
                        .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned());
                    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                    if quirks.misdirect && host.as_deref() != Some(sni.as_str()) {
                        *response.status_mut() = http::StatusCode::MISDIRECTED_REQUEST;
                    }
                    answering.notify_one();
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service);
                    tokio::pin!(conn);
                    if quirks.goaway {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            () = answered.notified() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = tokio::time::timeout(WAIT, conn).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    }
}

/// A running explicit interceptor verifying origins against `origin_root`.
struct Proxy {
    running: Running,
    state: Arc<InterceptState>,
    ca: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

async fn start_proxy(origin_root: CertificateDer<'static>) -> Proxy {
    start_proxy_with(origin_root, true).await
}

/// [`start_proxy`], with origin connection coalescing on or off.
async fn start_proxy_with(origin_root: CertificateDer<'static>, coalesce: bool) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = interception_ca(dir.path());
    let ca_der = ca.cert_der().clone();
    let mut listener = explicit_interceptor(
        ca,
        origin_root,
        CertStrategy::DownstreamFirst,
        Vec::new(),
        None,
    );
    listener.coalesce_origin_connections = coalesce;
    let (running, state) = start_intercept_listener(listener).await;
    Proxy {
        running,
        state,
        ca: ca_der,
        _dir: dir,
    }
}

/// One bumped client connection: CONNECT `connect_host:port`, TLS with SNI `sni` trusting only the
/// interception CA, then HTTP/1.1 or HTTP/2 (by `h2`). Returns a request sender.
enum Client {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn client(
    proxy: &Proxy,
    connect_host: &str,
    port: u16,
    sni: &str,
    h2: bool,
) -> (Client, tokio::task::JoinHandle<()>) {
    let mut tcp = TcpStream::connect(proxy.running.addr("proxy"))
        .await
        .unwrap();
    let connect =
        format!("CONNECT {connect_host}:{port} HTTP/1.1\r\nHost: {connect_host}:{port}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "proxy closed during the CONNECT answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(proxy.ca.clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(tlsgate_testkit::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp),
    )
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("TLS with the proxy for {sni}: {e}"));
    let io = TokioIo::new(tls);
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        (
            Client::H2(sender),
            tokio::spawn(async move {
                let _ = conn.await;
            }),
        )
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        (
            Client::Http1(sender),
            tokio::spawn(async move {
                let _ = conn.await;
            }),
        )
    }
}

/// `GET /path` on `client` for `authority`; the response body.
async fn get(client: &mut Client, authority: &str, path: &str) -> String {
    let request = |uri: String| {
        hyper::Request::get(uri)
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let response = match client {
        Client::Http1(sender) => {
            // Ready again once the previous response has been read to its end.
            tokio::time::timeout(WAIT, sender.ready())
                .await
                .expect("the client connection ready within the bound")
                .expect("the client connection open");
            tokio::time::timeout(WAIT, sender.send_request(request(path.to_owned()))).await
        }
        Client::H2(sender) => {
            let uri = format!("https://{authority}{path}");
            let mut req = request(uri);
            req.headers_mut().remove(http::header::HOST);
            tokio::time::timeout(WAIT, sender.send_request(req)).await
        }
    };
    let response = response
        .expect("a response within the bound")
        .unwrap_or_else(|e| panic!("a response: {e:?}"));
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// One client connection, one request, then the connection closes; the response body.
async fn fetch_once(proxy: &Proxy, connect_host: &str, port: u16, sni: &str, h2: bool) -> String {
    let (mut c, conn) = client(proxy, connect_host, port, sni, h2).await;
    let body = get(&mut c, &format!("{sni}:{port}"), "/").await;
    drop(c);
    conn.abort();
    body
}

fn conn_of(body: &str) -> &str {
    body.split_whitespace().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_to_one_name_share_one_h2_origin_connection() {
    let public = TestCa::new("public test CA");
    let leaf = public.issue(&["shared.example.test"]);
    let origin =
        spawn_counting_origin(&[("shared.example.test", &leaf)], &[b"h2", b"http/1.1"]).await;
    let proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    let name = "shared.example.test";

    // Eight client connections at once against an empty pool: one origin connection is opened,
    // the others wait for it and share it (HTTP/1.1 and HTTP/2 clients alike).
    let mut at_once = tokio::task::JoinSet::new();
    let proxy = Arc::new(proxy);
    for i in 0..8 {
        let proxy = proxy.clone();
        at_once.spawn(async move { fetch_once(&proxy, name, port, name, i % 2 == 0).await });
    }
    let mut bodies = Vec::new();
    while let Some(body) = at_once.join_next().await {
        bodies.push(body.unwrap());
    }
    for body in &bodies {
        assert_eq!(conn_of(body), "conn=1", "{bodies:?}");
        assert!(body.contains("proto=HTTP/2.0"), "{body}");
    }
    // One after another, each client connection closed before the next opens: still that one.
    for h2 in [false, true, false] {
        let body = fetch_once(&proxy, name, port, name, h2).await;
        assert_eq!(conn_of(&body), "conn=1", "{body}");
    }
    // One client connection with several requests, and two client connections open side by side.
    let (mut a, _a) = client(&proxy, name, port, name, true).await;
    let (mut b, _b) = client(&proxy, name, port, name, false).await;
    for _ in 0..3 {
        assert_eq!(
            conn_of(&get(&mut a, &format!("{name}:{port}"), "/a").await),
            "conn=1"
        );
        assert_eq!(
            conn_of(&get(&mut b, &format!("{name}:{port}"), "/b").await),
            "conn=1"
        );
    }
    assert_eq!(
        origin.handshakes(),
        1,
        "one origin TLS handshake for 16 client connections"
    );
    assert_eq!(proxy.state.upstreams.keys(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_origin_connection_is_reused_once_released() {
    let public = TestCa::new("public test CA");
    let leaf = public.issue(&["legacy.example.test"]);
    let origin = spawn_counting_origin(&[("legacy.example.test", &leaf)], &[b"http/1.1"]).await;
    let proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    let name = "legacy.example.test";
    let first = fetch_once(&proxy, name, port, name, true).await;
    assert_eq!(conn_of(&first), "conn=1", "{first}");
    assert!(first.contains("proto=HTTP/1.1"), "{first}");
    // The released connection serves the next client connections (HTTP/1.1 and HTTP/2 clients).
    for h2 in [false, true, false] {
        let body = fetch_once(&proxy, name, port, name, h2).await;
        assert_eq!(conn_of(&body), "conn=1", "{body}");
    }
    assert_eq!(origin.handshakes(), 1);
    // Two requests in flight at once need two connections; both go back to the pool afterwards.
    let (mut a, _a) = client(&proxy, name, port, name, false).await;
    let (mut b, _b) = client(&proxy, name, port, name, false).await;
    let authority = format!("{name}:{port}");
    let (x, y) = tokio::join!(get(&mut a, &authority, "/x"), get(&mut b, &authority, "/y"));
    let mut seen = [conn_of(&x).to_owned(), conn_of(&y).to_owned()];
    seen.sort();
    assert!(origin.handshakes() <= 2, "{seen:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.state.upstreams.idle_http1() != origin.handshakes() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "released connections are kept idle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sni_on_the_same_address_gets_its_own_origin_connection_and_certificate() {
    let public = TestCa::new("public test CA");
    let (a_leaf, b_leaf) = (
        public.issue(&["a.example.test"]),
        public.issue(&["b.example.test"]),
    );
    let origin = spawn_counting_origin(
        &[("a.example.test", &a_leaf), ("b.example.test", &b_leaf)],
        &[b"h2", b"http/1.1"],
    )
    .await;
    let mut proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    // The same address (CONNECT 127.0.0.1), two names in the ClientHello.
    let a1 = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", true).await;
    let b1 = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", true).await;
    let a2 = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", false).await;
    let b2 = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", false).await;
    assert!(a1.starts_with("conn=1 sni=a.example.test"), "{a1}");
    assert!(b1.starts_with("conn=2 sni=b.example.test"), "{b1}");
    assert!(a2.starts_with("conn=1 sni=a.example.test"), "{a2}");
    assert!(b2.starts_with("conn=2 sni=b.example.test"), "{b2}");
    assert_eq!(origin.handshakes(), 2);
    assert_eq!(proxy.state.upstreams.keys(), 2);
    // Every request's flow names the certificate of the origin connection that carried it, and
    // so does each client connection's own record.
    let subject_of = |f: &FlowRecord| {
        f.tls
            .as_ref()
            .and_then(|t| t.upstream_cert.as_ref())
            .map(|c| (c.subject.to_string(), c.verified))
    };
    let mut requests = Vec::new();
    let mut connections = Vec::new();
    while requests.len() < 4 || connections.len() < 4 {
        let flow = proxy
            .running
            .flow("bumped flows", |f| {
                f.mode == tlsgate_proxy::flow::Mode::Bump
            })
            .await;
        let entry = (flow.name.clone().unwrap_or_default(), subject_of(&flow));
        if flow.http.is_some() {
            requests.push(entry);
        } else {
            connections.push(entry);
        }
    }
    for (name, cert) in requests.iter().chain(&connections) {
        let (subject, verified) = cert
            .clone()
            .unwrap_or_else(|| panic!("{name}: no upstream cert"));
        assert!(verified, "{name}");
        assert!(subject.contains(&format!("CN={name}")), "{name}: {subject}");
    }
    let names = |list: &[(String, Option<(String, bool)>)]| {
        let mut names: Vec<_> = list.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    };
    let expected = [
        "a.example.test",
        "a.example.test",
        "b.example.test",
        "b.example.test",
    ];
    assert_eq!(names(&requests), expected);
    assert_eq!(names(&connections), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_h2_origin_connection_going_away_is_replaced_without_failing_requests() {
    let public = TestCa::new("public test CA");
    let leaf = public.issue(&["away.example.test"]);
    let goaway = Quirks {
        goaway: true,
        ..Quirks::default()
    };
    let origin =
        spawn_counting_origin_with(&[("away.example.test", &leaf)], &[b"h2"], goaway).await;
    let proxy = start_proxy(public.cert_der()).await;
    let (port, name) = (origin.addr.port(), "away.example.test");
    // Each origin connection answers one request, then says GOAWAY: every next request, on the
    // same client connection or another one, gets a 200 from a new origin connection.
    let (mut kept, _kept) = client(&proxy, name, port, name, true).await;
    let authority = format!("{name}:{port}");
    let mut conns = Vec::new();
    for i in 0..6 {
        let body = if i % 2 == 0 {
            get(&mut kept, &authority, "/").await
        } else {
            fetch_once(&proxy, name, port, name, false).await
        };
        conns.push(conn_of(&body).to_owned());
        // The origin's GOAWAY reaches the proxy before the next request, or races with it.
        if i < 4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // After a pause the GOAWAY has arrived: a new connection. Without one it may race the next
    // request, which the origin then still answers on the old connection (hyper's graceful
    // shutdown accepts streams until its final GOAWAY) or refuses unprocessed (sent again).
    assert_eq!(
        conns[..4],
        ["conn=1", "conn=2", "conn=3", "conn=4"],
        "{conns:?}"
    );
    let numbers: Vec<usize> = conns.iter().map(|c| c[5..].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{conns:?}");
    assert_eq!(origin.handshakes(), numbers[5], "{conns:?}");
}

/// An origin whose one certificate names `a.example.test` and `b.example.test`, listening on
/// 127.0.0.1 (and with `quirks.also_on`, on that address too).
async fn two_name_origin(quirks: Quirks) -> (TestCa, CountingOrigin) {
    let public = TestCa::new("public test CA");
    let leaf = public.issue(&["a.example.test", "b.example.test"]);
    let origin = spawn_counting_origin_with(
        &[("a.example.test", &leaf), ("b.example.test", &leaf)],
        &[b"h2", b"http/1.1"],
        quirks,
    )
    .await;
    (public, origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_its_certificate_also_covers_shares_the_h2_origin_connection() {
    let (public, origin) = two_name_origin(Quirks::default()).await;
    let mut proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    // The same address, a second name the first connection's certificate is valid for: its
    // requests (from HTTP/2 and HTTP/1.1 clients) ride the first connection, as a browser's do.
    let a = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", true).await;
    let b1 = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", true).await;
    let b2 = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", false).await;
    for body in [&a, &b1, &b2] {
        assert!(body.starts_with("conn=1 sni=a.example.test"), "{body}");
    }
    assert_eq!(origin.handshakes(), 1);
    assert_eq!(proxy.state.upstreams.keys(), 2, "one key per name");
    // b's request flows name the certificate that was verified and carried them.
    let mut b_requests = 0;
    while b_requests < 2 {
        let flow = proxy
            .running
            .flow("b's request flows", |f| {
                f.http.is_some() && f.name.as_deref() == Some("b.example.test")
            })
            .await;
        let cert = flow
            .tls
            .as_ref()
            .and_then(|t| t.upstream_cert.clone())
            .expect("upstream cert");
        assert!(cert.verified);
        assert!(
            cert.subject.contains("CN=a.example.test"),
            "{}",
            cert.subject
        );
        b_requests += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_coalescing_off_each_name_gets_its_own_origin_connection() {
    let (public, origin) = two_name_origin(Quirks::default()).await;
    let proxy = start_proxy_with(public.cert_der(), false).await;
    let port = origin.addr.port();
    let a = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", true).await;
    let b = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", true).await;
    assert!(a.starts_with("conn=1 sni=a.example.test"), "{a}");
    assert!(b.starts_with("conn=2 sni=b.example.test"), "{b}");
    assert_eq!(origin.handshakes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_covered_name_at_another_address_gets_its_own_origin_connection() {
    let also = Quirks {
        also_on: Some(IpAddr::from([127, 0, 0, 2])),
        ..Quirks::default()
    };
    let (public, origin) = two_name_origin(also).await;
    let proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    // Same port, same certificate, but b is asked for at 127.0.0.2: a's connection to 127.0.0.1
    // is not an address b resolves to, so b gets its own.
    let a = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", true).await;
    let b = fetch_once(&proxy, "127.0.0.2", port, "b.example.test", true).await;
    assert!(a.starts_with("conn=1 sni=a.example.test"), "{a}");
    assert!(b.starts_with("conn=2 sni=b.example.test"), "{b}");
    assert_eq!(origin.handshakes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_on_a_coalesced_connection_sends_the_request_again_on_its_own() {
    let misdirect = Quirks {
        misdirect: true,
        ..Quirks::default()
    };
    let (public, origin) = two_name_origin(misdirect).await;
    let proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    let a = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", true).await;
    // b's first request rides a's connection, gets 421 there, and is sent again on a connection
    // of b's own: the client sees only the 200 (`get` asserts it). b's later requests and a's
    // stay on their own connections.
    let b1 = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", false).await;
    let b2 = fetch_once(&proxy, "127.0.0.1", port, "b.example.test", true).await;
    let a2 = fetch_once(&proxy, "127.0.0.1", port, "a.example.test", false).await;
    assert!(a.starts_with("conn=1 sni=a.example.test"), "{a}");
    assert!(b1.starts_with("conn=2 sni=b.example.test"), "{b1}");
    assert!(b2.starts_with("conn=2 sni=b.example.test"), "{b2}");
    assert!(a2.starts_with("conn=1 sni=a.example.test"), "{a2}");
    assert_eq!(origin.handshakes(), 2);
}

/// Clients that stop reading a download hold their streams' receive windows on the h2 origin
/// connection they share with every other client of the name. Each holds at most one stream window;
/// the connection's window must leave the others theirs, and a stalled download, read again, gets
/// every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_do_not_stall_the_others_on_a_shared_h2_origin_connection() {
    // More stalled streams than a 16 MiB connection window has room for at 4 MiB each.
    const STALLED: usize = 6;
    const BIG: usize = 32 * 1024 * 1024;
    let public = TestCa::new("public test CA");
    let name = "big.example.test";
    let origin = tlsgate_testkit::spawn_https_origin("big", &public.issue(&[name])).await;
    let proxy = start_proxy(public.cert_der()).await;
    let port = origin.addr.port();
    let authority = format!("{name}:{port}");
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let (c, conn) = client(&proxy, name, port, name, false).await;
        let Client::Http1(mut sender) = c else {
            unreachable!("an HTTP/1.1 client")
        };
        let request = hyper::Request::get(format!("/bytes/{BIG}"))
            .header(http::header::HOST, &authority)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("stalled download {i}: no answer within the bound"))
            .unwrap();
        assert_eq!(response.status(), 200);
        // The body is left unread.
        stalled.push((sender, response, conn));
    }
    // Time for the downloads to fill every buffer on their way and stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        fetch_once(&proxy, name, port, name, true),
    )
    .await
    .expect("another client answered within 10 s beside the stalled downloads");
    assert!(body.starts_with("origin=big"), "{body}");
    assert_eq!(
        proxy.state.upstreams.keys(),
        1,
        "every client used the name's one pooled origin connection"
    );
    // A stalled download lost nothing.
    let (_sender, response, _conn) = stalled.swap_remove(0);
    let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
        .await
        .expect("the stalled download finished within 60 s once read")
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), BIG);
    assert!(
        body[..] == tlsgate_testkit::pattern(0, BIG)[..],
        "the body differs"
    );
}
