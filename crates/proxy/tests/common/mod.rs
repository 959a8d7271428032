//! A loopback topology for in-process tests: two HTTPS origins and one HTTP origin behind a relay,
//! edges in front of it, all on ephemeral ports, with every certificate from test CAs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::Gateway;
use tlsgate_proxy::config::{
    Config, EdgeHttp, EdgeTls, Limits, Listener, ListenerKind, RelayListener, RelayUpstream, Route,
    Routes, TargetHost, Timeouts, Transport, UpstreamTarget,
};
use tlsgate_proxy::flow::FlowRecord;
use tlsgate_proxy::tls::{Identity, relay_client_configs, relay_server_config};
use tlsgate_testkit::{Leaf, Origin, TestCa, spawn_http_origin, spawn_https_origin};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub const PRIVATE: &str = "private.service.example.com";
pub const OTHER: &str = "other.service.example.com";
pub const RELAY_NAME: &str = "envoy-b.example.com";

/// The services' side: origins and the CA only clients trust.
pub struct Services {
    pub ca: TestCa,
    pub private_leaf: Leaf,
    pub other_leaf: Leaf,
    pub private: Origin,
    pub other: Origin,
    pub http: Origin,
}

impl Services {
    pub async fn start() -> Self {
        let ca = TestCa::new("services CA (client-trusted only)");
        let private_leaf = ca.issue(&[PRIVATE]);
        let other_leaf = ca.issue(&[OTHER]);
        let private = spawn_https_origin("private", &private_leaf).await;
        let other = spawn_https_origin("other", &other_leaf).await;
        let http = spawn_http_origin("private-http").await;
        Self {
            ca,
            private_leaf,
            other_leaf,
            private,
            other,
            http,
        }
    }

    pub fn routes(&self) -> Routes {
        let fixed = |addr: SocketAddr| UpstreamTarget {
            host: TargetHost::Fixed(addr.ip().to_string()),
            port: addr.port(),
        };
        Routes {
            routes: vec![
                Route {
                    pattern: FqdnPattern::parse(PRIVATE).unwrap(),
                    tls: Some(fixed(self.private.addr)),
                    http: Some(fixed(self.http.addr)),
                },
                Route {
                    pattern: FqdnPattern::parse(OTHER).unwrap(),
                    tls: Some(fixed(self.other.addr)),
                    http: None,
                },
            ],
        }
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        tlsgate_testkit::client_config(&self.ca, &[b"http/1.1"])
    }
}

/// A running gateway in this process.
pub struct Running {
    pub addrs: Vec<(String, SocketAddr)>,
    pub flows: tlsgate_proxy::flow::FlowSubscriber,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Waits (bounded) for a flow record matching `pred`.
    pub async fn flow(
        &mut self,
        what: &str,
        pred: impl Fn(&FlowRecord) -> bool,
    ) -> Arc<FlowRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let next = tokio::time::timeout_at(deadline, self.flows.recv()).await;
            match next {
                Ok(Ok(record)) if pred(&record) => return record,
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(e)) => panic!("flow bus closed while waiting for {what}: {e}"),
                Err(_) => panic!("no flow record for {what} within 15 s"),
            }
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

pub async fn start(config: Config) -> Running {
    let gateway = Gateway::bind(config).await.expect("bind");
    let addrs = gateway.local_addrs();
    let flows = gateway.subscribe();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gateway.run(stop.clone()));
    Running {
        addrs,
        flows,
        stop,
        task,
    }
}

pub fn test_timeouts() -> Timeouts {
    Timeouts {
        detect: Duration::from_secs(2),
        handshake: Duration::from_secs(2),
        shutdown_grace: Duration::from_millis(200),
        ..Timeouts::default()
    }
}

pub fn config(listeners: Vec<Listener>) -> Config {
    Config {
        listeners,
        timeouts: test_timeouts(),
        limits: Limits::default(),
        // The origins live on loopback; everything else stays refused.
        allow_destinations: vec!["127.0.0.0/8".parse().unwrap()],
        dns_server: None,
        visibility: Default::default(),
    }
}

/// The relay's outer identity and the CA edges trust it with.
pub struct RelayPki {
    pub ca: TestCa,
    pub leaf: Leaf,
    /// CA for edge client certificates (mTLS).
    pub client_ca: TestCa,
}

impl RelayPki {
    pub fn new() -> Self {
        let ca = TestCa::new("relay CA");
        let leaf = ca.issue(&[RELAY_NAME]);
        Self {
            ca,
            leaf,
            client_ca: TestCa::new("edge client CA"),
        }
    }
}

/// A relay with the given routes and no client verification.
pub async fn start_relay_with_routes(
    routes: Routes,
    pki: &RelayPki,
    listen: SocketAddr,
) -> Running {
    let tls = relay_server_config(pki.leaf.chain.clone(), pki.leaf.key.clone_key(), None).unwrap();
    start(config(vec![Listener {
        name: "relay".into(),
        listen,
        kind: ListenerKind::Relay(RelayListener {
            tls,
            routes: Arc::new(routes),
        }),
    }]))
    .await
}

/// A relay on 127.0.0.1 (`listen` may name a fixed port to restart on).
pub async fn start_relay(
    services: &Services,
    pki: &RelayPki,
    mtls: bool,
    listen: SocketAddr,
) -> Running {
    start_relay_edited(services, pki, mtls, listen, |_| {}).await
}

/// A relay like [`start_relay`] whose config `edit` may change first (limits, timeouts, ...).
pub async fn start_relay_edited(
    services: &Services,
    pki: &RelayPki,
    mtls: bool,
    listen: SocketAddr,
    edit: impl FnOnce(&mut Config),
) -> Running {
    let client_cas = [pki.client_ca.cert_der()];
    let tls = relay_server_config(
        pki.leaf.chain.clone(),
        pki.leaf.key.clone_key(),
        mtls.then_some(&client_cas[..]),
    )
    .unwrap();
    let mut config = config(vec![Listener {
        name: "relay".into(),
        listen,
        kind: ListenerKind::Relay(RelayListener {
            tls,
            routes: Arc::new(services.routes()),
        }),
    }]);
    edit(&mut config);
    start(config).await
}

/// A relay on 127.0.0.1 with `services`' routes, and an edge sending to it over the h2 transport
/// (no client certificate): the pair most suites start from.
pub async fn start_relay_and_h2_edge(services: &Services, pki: &RelayPki) -> (Running, Running) {
    let relay = start_relay(services, pki, false, any_port()).await;
    let edge = start_edge(
        relay_upstream(pki, relay.addr("relay"), Transport::H2, false),
        None,
    )
    .await;
    (relay, edge)
}

pub fn relay_upstream(
    pki: &RelayPki,
    relay: SocketAddr,
    transport: Transport,
    client_cert: bool,
) -> Arc<RelayUpstream> {
    let identity = client_cert.then(|| {
        let leaf = pki.client_ca.issue_client("edge-a");
        Identity {
            chain: leaf.chain.clone(),
            key: leaf.key.clone_key(),
        }
    });
    let (tls_h2, tls_raw) = relay_client_configs(&[pki.ca.cert_der()], identity).unwrap();
    Arc::new(RelayUpstream {
        name: "provider-b".into(),
        host: relay.ip().to_string(),
        port: relay.port(),
        server_name: ServerName::try_from(RELAY_NAME).unwrap(),
        transport,
        tls_h2,
        tls_raw,
        pool_size: 1,
        preconnect: 0,
        endpoints: Default::default(),
    })
}

/// An edge like [`start_edge`] with the given timeouts.
pub async fn start_edge_with(upstream: Arc<RelayUpstream>, timeouts: Timeouts) -> Running {
    let mut config = edge_config(upstream, None);
    config.timeouts = timeouts;
    start(config).await
}

/// An edge like [`start_edge`] whose config `edit` may change first (DNS server, timeouts, ...).
pub async fn start_edge_edited(
    upstream: Arc<RelayUpstream>,
    edit: impl FnOnce(&mut Config),
) -> Running {
    let mut config = edge_config(upstream, None);
    edit(&mut config);
    start(config).await
}

/// An edge with a `tls` passthrough listener and an `http` listener.
pub async fn start_edge(upstream: Arc<RelayUpstream>, default_sni: Option<&str>) -> Running {
    start(edge_config(upstream, default_sni)).await
}

fn edge_config(upstream: Arc<RelayUpstream>, default_sni: Option<&str>) -> Config {
    config(vec![
        Listener {
            name: "tls".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            kind: ListenerKind::TlsPassthrough(EdgeTls {
                relay: upstream.clone(),
                inner_port: 443,
                default_sni: default_sni.map(str::to_owned),
            }),
        },
        Listener {
            name: "http".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            kind: ListenerKind::Http(EdgeHttp { relay: upstream }),
        },
    ])
}

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A DNS server on loopback answering every A query with 127.0.0.1 (and AAAA with nothing), so
/// tests can use real names (`CONNECT www.example.test:443`) that all lead to loopback origins.
pub async fn spawn_dns_loopback() -> SocketAddr {
    spawn_dns_answering([127, 0, 0, 1]).await
}

/// A DNS server on loopback answering every A query with `ip`.
pub async fn spawn_dns_answering(ip: [u8; 4]) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let query = &buf[..n];
            if n < 12 {
                continue;
            }
            let mut i = 12;
            while i < n && query[i] != 0 {
                i += 1 + query[i] as usize;
            }
            let question_end = i + 5;
            if question_end > n {
                continue;
            }
            let is_a = u16::from_be_bytes([query[i + 1], query[i + 2]]) == 1;
            let mut reply = Vec::with_capacity(64);
            reply.extend_from_slice(&query[..2]);
            reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..question_end]);
            if is_a {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                reply.extend_from_slice(&ip);
            }
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

/// A fresh interception CA (ECDSA P-256, 30 days), its certificate written to
/// `dir/interception-ca.pem` for clients to trust.
pub fn interception_ca(
    dir: &std::path::Path,
) -> (Arc<tlsgate_ca::CertAuthority>, std::path::PathBuf) {
    let ca = tlsgate_ca::CertAuthority::generate(&tlsgate_ca::CaParams {
        common_name: "tlsgate test interception CA".into(),
        algorithm: tlsgate_ca::Algorithm::EcdsaP256,
        days: 30,
    })
    .unwrap();
    let pem = dir.join("interception-ca.pem");
    std::fs::write(&pem, ca.cert_pem()).unwrap();
    (Arc::new(ca), pem)
}

/// An explicit intercept listener minting from `ca`, verifying origins against `origin_root`
/// only, deciding by `rules` (default bump) or by `policy` when given.
pub fn explicit_interceptor(
    ca: Arc<tlsgate_ca::CertAuthority>,
    origin_root: rustls_pki_types::CertificateDer<'static>,
    strategy: tlsgate_proxy::config::CertStrategy,
    rules: Vec<tlsgate_proxy::config::InterceptRule>,
    policy: Option<Arc<tlsgate_proxy::policy::PolicySlot>>,
) -> tlsgate_proxy::config::InterceptListener {
    use tlsgate_proxy::config::{CertSettings, InterceptAction, InterceptMode, InterceptRules};
    tlsgate_proxy::config::InterceptListener {
        mode: InterceptMode::Explicit,
        rules: Arc::new(InterceptRules {
            rules,
            default: InterceptAction::Bump,
        }),
        policy,
        policy_audit: false,
        certs: Arc::new(CertSettings {
            ca,
            strategy,
            leaf_lifetime: CertSettings::DEFAULT_LEAF_LIFETIME,
            cache_capacity: 1000,
            cache_ttl: Duration::from_secs(3600),
        }),
        upstream_roots: tlsgate_proxy::tls::upstream_roots(Some(&[origin_root])).unwrap(),
        danger_accept_invalid_upstream_certs: Vec::new(),
        coalesce_origin_connections:
            tlsgate_proxy::config::InterceptListener::DEFAULT_COALESCE_ORIGIN_CONNECTIONS,
    }
}

/// Runs `listener` as the gateway's only listener, named "proxy", with a DNS server answering
/// loopback; returns the running gateway and the listener's interception state.
pub async fn start_intercept_listener(
    listener: tlsgate_proxy::config::InterceptListener,
) -> (Running, Arc<tlsgate_proxy::intercept::InterceptState>) {
    let mut config = config(vec![Listener {
        name: "proxy".into(),
        listen: any_port(),
        kind: ListenerKind::Intercept(listener),
    }]);
    config.dns_server = Some(spawn_dns_loopback().await);
    let gateway = Gateway::bind(config).await.expect("bind");
    let state = gateway
        .intercept_state("proxy")
        .expect("the listener's state");
    let addrs = gateway.local_addrs();
    let flows = gateway.subscribe();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gateway.run(stop.clone()));
    let running = Running {
        addrs,
        flows,
        stop,
        task,
    };
    (running, state)
}

/// The first certificate in curl's `-w '%{certs}'` output, as DER.
pub fn first_cert_der(curl_stdout: &str) -> Vec<u8> {
    let pem = curl_stdout
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .expect("curl printed a certificate");
    let b64: String = pem
        .split("-----END")
        .next()
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64_decode(&b64)
}

/// Standard base64 (with or without padding) to bytes.
pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut out, mut acc, mut bits) = (Vec::with_capacity(text.len() * 3 / 4), 0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
