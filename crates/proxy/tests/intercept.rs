//! The interceptor with real curl and in-process origins: minted certificates, verified origins
//! with explained failures, upstream-first mimicry, splice, concurrency, hostile input.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{CertificateParams, DnType, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tlsgate_ca::CertAuthority;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::config::{CertStrategy, InterceptAction, InterceptRule, Listener, ListenerKind};
use tlsgate_proxy::intercept::InterceptState;
use tlsgate_testkit::{Leaf, TestCa, sha256, spawn_https_origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running interceptor and what tests need to check it.
struct Interceptor {
    running: Running,
    state: Arc<InterceptState>,
    dir: tempfile::TempDir,
    ca_pem: std::path::PathBuf,
}

impl Interceptor {
    fn proxy(&self) -> String {
        format!("http://{}", self.running.addr("proxy"))
    }
}

struct Options {
    rules: Vec<InterceptRule>,
    policy: Option<Arc<tlsgate_proxy::policy::PolicySlot>>,
    strategy: CertStrategy,
    danger: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            policy: None,
            strategy: CertStrategy::DownstreamFirst,
            danger: Vec::new(),
        }
    }
}

/// An explicit interceptor that verifies origins against `origin_root` only.
async fn start_interceptor(origin_root: CertificateDer<'static>, options: Options) -> Interceptor {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_pem) = interception_ca(dir.path());
    let mut listener = explicit_interceptor(
        ca,
        origin_root,
        options.strategy,
        options.rules,
        options.policy,
    );
    listener.danger_accept_invalid_upstream_certs = options
        .danger
        .iter()
        .map(|p| FqdnPattern::parse(p).unwrap())
        .collect();
    let (running, state) = start_intercept_listener(listener).await;
    Interceptor {
        running,
        state,
        dir,
        ca_pem,
    }
}

struct Curl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn curl(args: Vec<String>) -> Curl {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(&args)
            .output()
    })
    .await
    .unwrap()
    .expect("curl runs");
    Curl {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// (issuer CN, DNS SANs, IP SANs) of a certificate.
fn names_of(der: &[u8]) -> (String, Vec<String>, Vec<String>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => ips.push(format!("{ip:?}")),
                _ => {}
            }
        }
    }
    (issuer, dns, ips)
}

/// A leaf signed by `ca` with custom validity and names.
fn leaf_with(
    ca: &(CertificateDer<'static>, Issuer<'static, KeyPair>),
    sans: Vec<SanType>,
    expired: bool,
) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params
        .distinguished_name
        .push(DnType::CommonName, "test origin");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if expired {
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    }
    let cert = params.signed_by(&key, &ca.1).unwrap();
    Leaf {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A CA whose issuer we keep for custom leaves.
fn raw_ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), Issuer::new(params, key))
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_explicit_proxy_sees_a_minted_certificate_and_the_page() {
    let public = TestCa::new("public test CA");
    let origin = spawn_https_origin("www", &public.issue(&["www.example.test"])).await;
    let mut proxy = start_interceptor(public.cert_der(), Options::default()).await;
    let url = format!("https://www.example.test:{}/", origin.addr.port());
    // The client does not trust the interception CA yet: curl refuses (exit 60).
    let untrusted = curl(args(&["-x", &proxy.proxy(), &url])).await;
    assert_eq!(untrusted.code, Some(60), "{}", untrusted.stderr);
    // Trusting it, curl gets the origin's page through a certificate minted for the name.
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let trusted = curl(args(&[
        "-x",
        &proxy.proxy(),
        "--cacert",
        &ca,
        "-w",
        "\n%{http_version} %{certs}",
        &url,
    ]))
    .await;
    assert_eq!(trusted.code, Some(0), "{}", trusted.stderr);
    assert!(
        trusted.stdout.starts_with("origin=www"),
        "{}",
        trusted.stdout
    );
    let (issuer, dns, ips) = names_of(&first_cert_der(&trusted.stdout));
    assert_eq!(issuer, "tlsgate test interception CA");
    assert_eq!(dns, vec!["www.example.test".to_owned()]);
    assert!(ips.is_empty());
    // HTTP/2 end to end: curl negotiates h2 with the proxy, the proxy h2 with the origin.
    let h2 = curl(args(&[
        "-x",
        &proxy.proxy(),
        "--cacert",
        &ca,
        "--http2",
        "-w",
        "\n%{http_version}",
        &url,
    ]))
    .await;
    assert!(
        h2.stdout.ends_with("\n2"),
        "client side: {} {}",
        h2.stdout,
        h2.stderr
    );
    assert!(
        h2.stdout.contains("version=HTTP/2.0"),
        "origin side: {}",
        h2.stdout
    );
    assert!(proxy.state.certs.mint_count() >= 1);
    // Each bumped request is a flow with its method, URL and status.
    let flow = proxy
        .running
        .flow("request flow", |f| f.http.is_some())
        .await;
    let facts = flow.http.as_ref().unwrap();
    assert_eq!(
        (facts.method.as_str(), facts.url.as_str(), flow.status),
        ("GET", url.as_str(), Some(200))
    );
    assert_eq!(flow.mode, tlsgate_proxy::flow::Mode::Bump);
    drop(proxy.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_certificate_problems_are_explained_and_the_danger_flag_exempts_one_host() {
    let public_key = raw_ca("public test CA");
    let public_roots = public_key.0.clone();
    let expired = spawn_https_origin(
        "expired",
        &leaf_with(&public_key, vec![dns("expired.example.test")], true),
    )
    .await;
    let rogue = raw_ca("rogue self-made CA");
    let selfsigned = spawn_https_origin(
        "selfsigned",
        &leaf_with(&rogue, vec![dns("selfsigned.example.test")], false),
    )
    .await;
    let wrongname = spawn_https_origin(
        "wrongname",
        &leaf_with(&public_key, vec![dns("someone-else.example.test")], false),
    )
    .await;
    let cases = [
        ("expired.example.test", expired.addr, "expired"),
        (
            "selfsigned.example.test",
            selfsigned.addr,
            "not issued by a trusted CA",
        ),
        (
            "wrongname.example.test",
            wrongname.addr,
            "not valid for wrongname.example.test",
        ),
    ];
    for danger in [vec![], vec!["expired.example.test"]] {
        let proxy = start_interceptor(
            public_roots.clone(),
            Options {
                danger: danger.clone(),
                ..Options::default()
            },
        )
        .await;
        let ca = proxy.ca_pem.to_str().unwrap().to_owned();
        for (name, addr, reason) in cases {
            let url = format!("https://{name}:{}/", addr.port());
            let reply = curl(args(&[
                "-x",
                &proxy.proxy(),
                "--cacert",
                &ca,
                "-w",
                "\n%{http_code}",
                &url,
            ]))
            .await;
            if danger.contains(&name) {
                assert!(
                    reply.stdout.starts_with("origin=expired") && reply.stdout.ends_with("\n200"),
                    "{name}: {}",
                    reply.stdout
                );
            } else {
                assert!(reply.stdout.ends_with("\n502"), "{name}: {}", reply.stdout);
                assert!(
                    reply.stdout.contains(reason),
                    "{name}: body must say {reason:?}: {}",
                    reply.stdout
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_first_copies_the_origin_san_list() {
    let public = raw_ca("public test CA");
    let sans = vec![
        dns("a.multi.example.test"),
        dns("b.multi.example.test"),
        SanType::IpAddress("192.0.2.7".parse().unwrap()),
    ];
    let origin = spawn_https_origin("multi", &leaf_with(&public, sans, false)).await;
    let proxy = start_interceptor(
        public.0.clone(),
        Options {
            strategy: CertStrategy::UpstreamFirst,
            ..Options::default()
        },
    )
    .await;
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    // The request names the second SAN.
    let url = format!("https://b.multi.example.test:{}/", origin.addr.port());
    let reply = curl(args(&[
        "-x",
        &proxy.proxy(),
        "--cacert",
        &ca,
        "-w",
        "\n%{certs}",
        &url,
    ]))
    .await;
    assert_eq!(reply.code, Some(0), "{}", reply.stderr);
    assert!(reply.stdout.starts_with("origin=multi"), "{}", reply.stdout);
    let (issuer, dns, ips) = names_of(&first_cert_der(&reply.stdout));
    assert_eq!(issuer, "tlsgate test interception CA");
    assert_eq!(
        dns,
        vec![
            "a.multi.example.test".to_owned(),
            "b.multi.example.test".to_owned()
        ]
    );
    assert_eq!(ips.len(), 1, "{ips:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_host_shows_the_origin_certificate() {
    let public = TestCa::new("public test CA");
    let leaf = public.issue(&["bank.example.test"]);
    let origin = spawn_https_origin("bank", &leaf).await;
    let rules = vec![InterceptRule {
        pattern: FqdnPattern::parse("bank.example.test").unwrap(),
        ports: vec![],
        action: InterceptAction::Splice,
    }];
    let mut proxy = start_interceptor(
        public.cert_der(),
        Options {
            rules,
            ..Options::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let public_pem = public.write_cert_pem(&dir.path().join("public.pem"));
    let url = format!("https://bank.example.test:{}/", origin.addr.port());
    let reply = curl(args(&[
        "-x",
        &proxy.proxy(),
        "--cacert",
        public_pem.to_str().unwrap(),
        "-w",
        "\n%{certs}",
        &url,
    ]))
    .await;
    assert_eq!(reply.code, Some(0), "{}", reply.stderr);
    assert_eq!(
        sha256(&first_cert_der(&reply.stdout)),
        leaf.sha256_fingerprint()
    );
    let flow = proxy
        .running
        .flow("splice", |f| f.mode == tlsgate_proxy::flow::Mode::Splice)
        .await;
    assert_eq!(
        flow.name.as_deref(),
        Some("bank.example.test"),
        "the SNI is still logged"
    );
    assert_eq!(
        proxy.state.certs.mint_count(),
        0,
        "nothing minted for a spliced host"
    );
}

/// Reads an HTTP response head (up to the blank line) and checks it is a 200.
async fn read_head(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "closed before the end of the head"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// CONNECT through the proxy and complete TLS trusting only the interception CA; returns the leaf.
async fn connect_and_handshake(
    proxy: SocketAddr,
    name: &str,
    port: u16,
    ca: &CertAuthority,
) -> Vec<u8> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(
        format!("CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    read_head(&mut tcp).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_names_at_once_are_each_minted_once_and_correct() {
    let public = raw_ca("public test CA");
    let origin = spawn_https_origin(
        "many",
        &leaf_with(&public, vec![dns("*.many.example.test")], false),
    )
    .await;
    let proxy = start_interceptor(public.0.clone(), Options::default()).await;
    let ca = proxy.state.config.certs.ca.clone();
    let addr = proxy.running.addr("proxy");
    let port = origin.addr.port();
    // 200 names, each requested twice at the same moment: 400 handshakes, 200 mints.
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let ca = ca.clone();
            tokio::spawn(async move {
                let name = format!("host{}.many.example.test", i % 200);
                let leaf = connect_and_handshake(addr, &name, port, &ca).await;
                (name, leaf)
            })
        })
        .collect();
    for task in tasks {
        let (name, leaf) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
        let (issuer, dns, _) = names_of(&leaf);
        assert_eq!(issuer, "tlsgate test interception CA");
        assert_eq!(dns, vec![name]);
    }
    assert_eq!(
        proxy.state.certs.mint_count(),
        200,
        "each name minted exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_closed_with_a_reason_and_healthy_requests_continue() {
    let public = TestCa::new("public test CA");
    let origin = spawn_https_origin("www", &public.issue(&["www.example.test"])).await;
    let rules = vec![InterceptRule {
        pattern: FqdnPattern::parse("*").unwrap(),
        ports: vec![22],
        action: InterceptAction::Deny,
    }];
    let mut proxy = start_interceptor(
        public.cert_der(),
        Options {
            rules,
            ..Options::default()
        },
    )
    .await;
    let addr = proxy.running.addr("proxy");
    let ca = proxy.state.config.certs.ca.clone();
    let port = origin.addr.port();
    // A healthy download runs through the proxy the whole time.
    let healthy = {
        let ca = ca.clone();
        tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(format!("CONNECT www.example.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
            read_head(&mut tcp).await;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert_der().clone()).unwrap();
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("www.example.test").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(b"GET /bytes/33554432 HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut all = Vec::new();
            tls.read_to_end(&mut all).await.unwrap_or_default();
            all.len()
        })
    };
    // 1 MB CONNECT line: refused by the bounded head reader, connection closed.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let long = format!("CONNECT {}:443 HTTP/1.1\r\n\r\n", "a".repeat(1 << 20));
    let _ = tcp.write_all(long.as_bytes()).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply))
        .await
        .expect("closed within 5 s");
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    // CONNECT to a port a rule denies: 403 before any TLS.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"CONNECT www.example.test:22 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut reply = vec![0u8; 12];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HTTP/1.1 403");
    let flow = proxy
        .running
        .flow("deny", |f| f.reason == Some("denied"))
        .await;
    assert_eq!(flow.name.as_deref(), Some("www.example.test"));
    // Garbage after CONNECT: not TLS, not HTTP, not inspectable: closed with client_not_tls.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("CONNECT www.example.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(&mut tcp).await;
    tcp.write_all(&[0x00, 0xff, 0x13, 0x37, 0x42, 0x99, 0x01, 0x02])
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    let flow = proxy
        .running
        .flow("garbage", |f| f.reason == Some("client_not_tls"))
        .await;
    assert_eq!(flow.name.as_deref(), Some("www.example.test"));
    // A client that stops mid-handshake is closed after the handshake timeout.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("CONNECT www.example.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(&mut tcp).await;
    let hello = {
        // The first half of a real ClientHello.
        let (client, mut server) = tokio::io::duplex(65536);
        let config = tlsgate_testkit::client_config(&public, &[b"http/1.1"]);
        let connecting = tokio::spawn(async move {
            let _ = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("www.example.test").unwrap(), client)
                .await;
        });
        let mut buf = vec![0u8; 4096];
        let n = server.read(&mut buf).await.unwrap();
        connecting.abort();
        buf.truncate(n);
        buf
    };
    tcp.write_all(&hello).await.unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed after {:?}",
        started.elapsed()
    );
    let got = healthy.await.unwrap();
    assert!(
        got > 32 << 20,
        "the healthy download completed ({got} bytes)"
    );
}

/// A TLS origin that speaks only HTTP/1.1 (ALPN http/1.1): answers `GET` with the protocol it saw,
/// and an `Upgrade: websocket` request with 101, then echoes bytes upper-cased.
async fn spawn_http1_only_origin(leaf: &Leaf) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if head.contains("upgrade: websocket") {
                        let _ = tls
                            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                            .await;
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = tls.read(&mut buf).await.unwrap_or(0);
                            if n == 0
                                || tls.write_all(&buf[..n].to_ascii_uppercase()).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    let body = format!(
                        "http1-only origin, request line: {}\n",
                        head.lines().next().unwrap_or("")
                    );
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_works_with_an_http1_only_origin_and_tls12_clients_are_served() {
    let public = TestCa::new("public test CA");
    let origin = spawn_http1_only_origin(&public.issue(&["legacy.example.test"])).await;
    let proxy = start_interceptor(public.cert_der(), Options::default()).await;
    let ca = proxy.ca_pem.to_str().unwrap().to_owned();
    let url = format!("https://legacy.example.test:{}/path?q=1", origin.port());
    let reply = curl(args(&[
        "-x",
        &proxy.proxy(),
        "--cacert",
        &ca,
        "--http2",
        "-w",
        "\n%{http_version}",
        &url,
    ]))
    .await;
    assert_eq!(reply.code, Some(0), "{}", reply.stderr);
    assert!(
        reply
            .stdout
            .contains("request line: get /path?q=1 http/1.1"),
        "{}",
        reply.stdout
    );
    assert!(
        reply.stdout.ends_with("\n2"),
        "the client spoke h2 to the proxy: {}",
        reply.stdout
    );
    let tls12 = curl(args(&[
        "-x",
        &proxy.proxy(),
        "--cacert",
        &ca,
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "-w",
        "\n%{http_code}",
        &url,
    ]))
    .await;
    assert_eq!(tls12.code, Some(0), "{}", tls12.stderr);
    assert!(tls12.stdout.ends_with("\n200"), "{}", tls12.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_works_through_a_bumped_connection() {
    let public = TestCa::new("public test CA");
    let origin = spawn_http1_only_origin(&public.issue(&["ws.example.test"])).await;
    let proxy = start_interceptor(public.cert_der(), Options::default()).await;
    let ca = proxy.state.config.certs.ca.clone();
    let mut tcp = TcpStream::connect(proxy.running.addr("proxy"))
        .await
        .unwrap();
    let port = origin.port();
    tcp.write_all(format!("CONNECT ws.example.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_head(&mut tcp).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("ws.example.test").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed before the 101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tls.write_all(b"frames pass both ways").await.unwrap();
    let mut echoed = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"FRAMES PASS BOTH WAYS");
}

/// A client trusting only `ca` (the interception CA), offering HTTP/1.1.
fn trusting(ca: &CertAuthority) -> Arc<rustls::ClientConfig> {
    tlsgate_testkit::client_config_trusting([ca.cert_der().clone()], &[b"http/1.1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_minted_leaves_while_the_ca_is_unchanged() {
    let public = TestCa::new("public test CA");
    let origin = spawn_https_origin("www", &public.issue(&["www.example.test"])).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = interception_ca(dir.path());
    let dns = spawn_dns_loopback().await;
    let config_with = |ca: Arc<CertAuthority>, rules: Vec<InterceptRule>| {
        let listener = explicit_interceptor(
            ca,
            public.cert_der(),
            Options::default().strategy,
            rules,
            None,
        );
        let mut config = config(vec![Listener {
            name: "proxy".into(),
            listen: any_port(),
            kind: ListenerKind::Intercept(listener),
        }]);
        config.dns_server = Some(dns);
        config
    };
    let gateway = tlsgate_proxy::Gateway::bind(config_with(ca.clone(), Vec::new()))
        .await
        .unwrap();
    let reloader = gateway.reloader();
    let proxy = gateway.local_addrs()[0].1;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(gateway.run(stop.clone()));
    let leaf = |trust: Arc<rustls::ClientConfig>| async move {
        let reply = tlsgate_testkit::https_get_via_proxy(
            proxy,
            "www.example.test",
            origin.addr.port(),
            trust,
            "/",
        )
        .await
        .expect("bumped request");
        assert_eq!(reply.status, 200);
        reply.peer_leaf_der
    };
    let before = leaf(trusting(&ca)).await;
    // A reload that changes the rules but not the CA or the leaf settings keeps the minted leaf.
    let splice_other = vec![InterceptRule {
        pattern: FqdnPattern::parse("other.example.test").unwrap(),
        ports: Vec::new(),
        action: InterceptAction::Splice,
    }];
    reloader
        .apply(config_with(ca.clone(), splice_other), "test")
        .await
        .expect("reload applied");
    let after = leaf(trusting(&ca)).await;
    assert_eq!(
        sha256(&after),
        sha256(&before),
        "the same leaf after the reload"
    );
    // A new CA: leaves from it, minted afresh.
    let (new_ca, _) = interception_ca(dir.path());
    reloader
        .apply(config_with(new_ca.clone(), Vec::new()), "test")
        .await
        .expect("reload applied");
    let fresh = leaf(trusting(&new_ca)).await;
    assert_ne!(sha256(&fresh), sha256(&before), "a new CA mints new leaves");
    stop.cancel();
    let _ = task.await;
}
