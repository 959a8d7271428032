//! `tlsgate demo tunnel`: the whole firewall-tunnel topology on loopback in one process — two HTTPS
//! origins and an HTTP origin, a relay routing by inner SNI, and an edge per transport — with
//! certificates generated on the spot. A client makes real requests through it and the demo prints
//! what happened, checking what matters: the client sees each service's own certificate.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tlsgate_policy::FqdnPattern;
use tlsgate_proxy::Gateway;
use tlsgate_proxy::config::{
    Config, EdgeHttp, EdgeTls, Limits, Listener, ListenerKind, RelayListener, RelayUpstream, Route,
    Routes, TargetHost, Timeouts, Transport, UpstreamTarget,
};
use tlsgate_proxy::flow::{FlowRecord, Role};
use tlsgate_proxy::tls::{relay_client_configs, relay_server_config};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::fail;

const PRIVATE: &str = "private.service.example.com";
const OTHER: &str = "other.service.example.com";
const UNKNOWN: &str = "unknown.example.com";
const RELAY: &str = "envoy-b.example.com";
/// Bound on each demo request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn tunnel() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime");
    match runtime.and_then(|rt| rt.block_on(run())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// A CA made for the demo, and leaves it signs.
struct DemoCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

struct DemoLeaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl DemoCa {
    fn new(name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    fn issue(&self, name: &str) -> anyhow::Result<DemoLeaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(DemoLeaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

fn sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn short(hex: &str) -> &str {
    &hex[..16.min(hex.len())]
}

async fn run() -> anyhow::Result<()> {
    println!("tlsgate demo tunnel: client → edge → (outer TLS 1.3, SNI {RELAY}) → relay → origins");
    println!("everything runs on 127.0.0.1 with certificates generated just now\n");

    // The services' CA is trusted by the client only; the relay never sees the services' keys.
    let services_ca = DemoCa::new("demo services CA")?;
    let relay_ca = DemoCa::new("demo relay CA")?;
    let mut origins = Vec::new();
    for name in [PRIVATE, OTHER] {
        let leaf = services_ca.issue(name)?;
        let fingerprint = sha256_hex(&leaf.chain[0]);
        let addr = spawn_https_origin(name, leaf).await?;
        println!(
            "origin  https://{name:<30} on {addr}  certificate sha256 {}…",
            short(&fingerprint)
        );
        origins.push((name, addr, fingerprint));
    }
    let http_origin = spawn_http_origin(PRIVATE).await?;
    println!("origin  http://{PRIVATE:<31} on {http_origin}");

    let routes = Routes {
        routes: vec![
            route(PRIVATE, Some(origins[0].1), Some(http_origin))?,
            route(OTHER, Some(origins[1].1), None)?,
        ],
    };
    let relay_leaf = relay_ca.issue(RELAY)?;
    let relay_tls = relay_server_config(relay_leaf.chain, relay_leaf.key, None)?;
    let relay = Gateway::bind(config(vec![Listener {
        name: "relay".into(),
        listen: loopback(),
        kind: ListenerKind::Relay(RelayListener {
            tls: relay_tls,
            routes: Arc::new(routes),
        }),
    }]))
    .await?;
    let relay_addr = relay.local_addrs()[0].1;
    let mut relay_flows = relay.subscribe();
    let stop = CancellationToken::new();
    tokio::spawn(relay.run(stop.clone()));
    println!("relay   {RELAY:<38} on {relay_addr}  routes: {PRIVATE}, {OTHER}");

    let mut edges = Vec::new();
    for transport in [Transport::H2, Transport::Tls] {
        let (tls_h2, tls_raw) = relay_client_configs(std::slice::from_ref(&relay_ca.cert), None)?;
        let upstream = Arc::new(RelayUpstream {
            name: RELAY.into(),
            host: relay_addr.ip().to_string(),
            port: relay_addr.port(),
            server_name: ServerName::try_from(RELAY)?,
            transport,
            tls_h2,
            tls_raw,
            pool_size: 1,
            preconnect: 0,
            endpoints: Default::default(),
        });
        let edge = Gateway::bind(config(vec![
            Listener {
                name: "https".into(),
                listen: loopback(),
                kind: ListenerKind::TlsPassthrough(EdgeTls {
                    relay: upstream.clone(),
                    inner_port: 443,
                    default_sni: None,
                }),
            },
            Listener {
                name: "http".into(),
                listen: loopback(),
                kind: ListenerKind::Http(EdgeHttp { relay: upstream }),
            },
        ]))
        .await?;
        let addrs = edge.local_addrs();
        println!(
            "edge    transport {:<4} tls-passthrough on {}, http on {}",
            transport_name(transport),
            addrs[0].1,
            addrs[1].1
        );
        tokio::spawn(edge.run(stop.clone()));
        edges.push((transport, addrs[0].1, addrs[1].1));
    }
    println!();

    let client = client_config(&services_ca.cert)?;
    let mut checks = 0;
    for (transport, https_addr, _) in &edges {
        for (name, _, fingerprint) in &origins {
            let (status, body, seen) = https_get(*https_addr, name, client.clone()).await?;
            let relay_flow = next_relay_flow(&mut relay_flows).await?;
            println!(
                "[{}] GET https://{name}/ → {status} {:?}",
                transport_name(*transport),
                body.trim_end()
            );
            println!(
                "      certificate seen by the client: sha256 {}… — {}",
                short(&seen),
                if &seen == fingerprint {
                    "the origin's own (never re-encrypted)"
                } else {
                    "NOT the origin's"
                }
            );
            println!(
                "      relay routed inner SNI {} → {}",
                relay_flow.name.as_deref().unwrap_or("-"),
                relay_flow.upstream.as_deref().unwrap_or("-")
            );
            if status != StatusCode::OK || &seen != fingerprint || !body.contains(name) {
                bail!(
                    "the request to {name} over the {} transport did not go as expected",
                    transport_name(*transport)
                );
            }
            checks += 1;
        }
    }

    let http_edge = edges[0].2;
    let (status, body) = http_get(http_edge, PRIVATE).await?;
    next_relay_flow(&mut relay_flows).await?;
    println!(
        "[http] GET http://{PRIVATE}/ via the edge's HTTP listener (HTTP/2 to the relay) → {status} {:?}",
        body.trim_end()
    );
    if status != StatusCode::OK || !body.contains(&format!("host={PRIVATE}")) {
        bail!("plain HTTP through the edge did not reach the HTTP origin with its Host");
    }
    checks += 1;

    let refused = https_get(edges[0].1, UNKNOWN, client.clone()).await;
    let relay_flow = next_relay_flow(&mut relay_flows).await?;
    println!(
        "[h2]  GET https://{UNKNOWN}/ → {} (relay: {})",
        match &refused {
            Ok((status, _, _)) => format!("unexpectedly answered {status}"),
            Err(_) => "refused".to_owned(),
        },
        relay_flow.reason.unwrap_or("served")
    );
    if refused.is_ok() || relay_flow.reason != Some("no_route") {
        bail!("a name without a route was not refused by the relay");
    }
    checks += 1;

    stop.cancel();
    println!(
        "\nall {checks} checks passed. Next: examples/firewall-tunnel/ and `tlsgate run --config FILE`."
    );
    Ok(())
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::H2 => "h2",
        Transport::Tls => "tls",
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(listeners: Vec<Listener>) -> Config {
    Config {
        listeners,
        timeouts: Timeouts::default(),
        limits: Limits::default(),
        // The demo's origins are on loopback, which the destination guard refuses by default.
        allow_destinations: vec![ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]))],
        dns_server: None,
        visibility: Default::default(),
    }
}

fn route(name: &str, tls: Option<SocketAddr>, http: Option<SocketAddr>) -> anyhow::Result<Route> {
    let target = |addr: SocketAddr| UpstreamTarget {
        host: TargetHost::Fixed(addr.ip().to_string()),
        port: addr.port(),
    };
    Ok(Route {
        pattern: FqdnPattern::parse(name)?,
        tls: tls.map(target),
        http: http.map(target),
    })
}

async fn next_relay_flow(
    flows: &mut tlsgate_proxy::flow::FlowSubscriber,
) -> anyhow::Result<Arc<FlowRecord>> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            match flows.recv().await {
                Ok(flow) if flow.role == Role::Relay => return Ok(flow),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(anyhow!("relay flow bus: {e}")),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("the relay recorded no flow within {REQUEST_TIMEOUT:?}"))?
}

fn client_config(ca: &CertificateDer<'static>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

type DemoBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn origin_response(name: &str, req: &Request<Incoming>) -> Response<DemoBody> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-");
    Response::new(Full::new(Bytes::from(format!("hello from {name} (host={host})\n"))).boxed())
}

async fn spawn_https_origin(name: &'static str, leaf: DemoLeaf) -> anyhow::Result<SocketAddr> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(leaf.chain, leaf.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = service_fn(move |req| async move {
                    Ok::<_, std::convert::Infallible>(origin_response(name, &req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn spawn_http_origin(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req| async move {
                    Ok::<_, std::convert::Infallible>(origin_response(name, &req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// GET / over TLS with SNI `name` through `addr`: (status, body, sha256 of the certificate seen).
async fn https_get(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<(StatusCode, String, String)> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from(name.to_owned())?, tcp)
            .await
            .with_context(|| format!("TLS with {name} through the tunnel"))?;
        let seen = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| sha256_hex(c.as_ref()))
            .ok_or_else(|| anyhow!("no certificate"))?;
        let (status, body) = get(TokioIo::new(tls), name).await?;
        Ok((status, body, seen))
    })
    .await
    .map_err(|_| anyhow!("request to {name} timed out"))?
}

async fn http_get(addr: SocketAddr, host: &str) -> anyhow::Result<(StatusCode, String)> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await?;
        get(TokioIo::new(tcp), host).await
    })
    .await
    .map_err(|_| anyhow!("request to {host} timed out"))?
}

async fn get<S>(io: TokioIo<S>, host: &str) -> anyhow::Result<(StatusCode, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let request = Request::builder()
        .uri("/")
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
