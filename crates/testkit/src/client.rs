//! Minimal HTTPS / HTTP clients for tests: one request per connection, every wait bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::ca::TestCa;

/// Bound on one whole request: connect, handshake, request, and reading the full body.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What an HTTPS request saw.
#[derive(Debug, Clone)]
pub struct HttpsReply {
    pub status: u16,
    pub body: Vec<u8>,
    /// DER of the certificate the server presented first.
    pub peer_leaf_der: Vec<u8>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
}

/// What a plain HTTP request saw.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A client config trusting only `ca`, offering `alpn` (TLS 1.2 and 1.3).
pub fn client_config(ca: &TestCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_trusting([ca.cert_der()], alpn)
}

/// A client config trusting only `roots` (e.g. an interception CA read from PEM), offering `alpn`
/// (TLS 1.2 and 1.3).
pub fn client_config_trusting(
    roots: impl IntoIterator<Item = rustls_pki_types::CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .expect("a test CA certificate is a valid trust anchor");
    }
    let mut config = ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// `GET https://<sni><path>` against `addr`: TCP connect, TLS with SNI `sni`, then HTTP/2 or
/// HTTP/1.1 by the negotiated ALPN, with `Host` (or `:authority`) = `sni`.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<HttpsReply, String> {
    tokio::time::timeout(
        CLIENT_REQUEST_TIMEOUT,
        https_get_inner(addr, sni, config, path),
    )
    .await
    .map_err(|_| {
        format!("https_get {addr} sni={sni}: timed out after {CLIENT_REQUEST_TIMEOUT:?}")
    })?
}

/// `GET https://<sni>:<port><path>` through the HTTP proxy at `proxy`: `CONNECT sni:port`, then
/// TLS with SNI `sni` inside the tunnel and the request as in [`https_get`]. A refused CONNECT is
/// an error naming the proxy's status line.
pub async fn https_get_via_proxy(
    proxy: SocketAddr,
    sni: &str,
    port: u16,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<HttpsReply, String> {
    let run = async {
        let mut tcp = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect proxy {proxy}: {e}"))?;
        connect_tunnel(&mut tcp, sni, port).await?;
        tls_request(tcp, sni, config, path).await
    };
    tokio::time::timeout(CLIENT_REQUEST_TIMEOUT, run)
        .await
        .map_err(|_| format!("https_get_via_proxy {proxy} {sni}:{port}: timed out"))?
}

/// Sends `CONNECT host:port` and reads the proxy's answer head (bounded); Ok on a 2xx.
async fn connect_tunnel(tcp: &mut TcpStream, host: &str, port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    // Read byte by byte up to the blank line: nothing of the tunnel may be consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16 * 1024 {
            return Err("CONNECT answer head over 16 KiB".to_owned());
        }
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("proxy closed the connection during CONNECT".to_owned()),
            Err(e) => return Err(format!("reading the CONNECT answer: {e}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(format!("CONNECT refused: {status_line}")),
    }
}

async fn https_get_inner(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<HttpsReply, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tls_request(tcp, sni, config, path).await
}

async fn tls_request(
    tcp: TcpStream,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<HttpsReply, String> {
    let addr = tcp.peer_addr().map_err(|e| format!("peer address: {e}"))?;
    let server_name =
        ServerName::try_from(sni.to_owned()).map_err(|e| format!("invalid SNI {sni:?}: {e}"))?;
    let tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} sni={sni}: {e}"))?;
    let (_, session) = tls.get_ref();
    let peer_leaf_der = session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let (status, body) = if alpn.as_deref() == Some(b"h2") {
        let uri = format!("https://{sni}{path}");
        request_h2(tls, &uri).await?
    } else {
        request_h1(tls, sni, path).await?
    };
    Ok(HttpsReply {
        status,
        body,
        peer_leaf_der,
        alpn,
    })
}

/// `GET http://<host><path>` against `addr` over HTTP/1.1.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<HttpReply, String> {
    let run = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (status, body) = request_h1(tcp, host, path).await?;
        Ok(HttpReply { status, body })
    };
    tokio::time::timeout(CLIENT_REQUEST_TIMEOUT, run)
        .await
        .map_err(|_| format!("http_get {addr} host={host}: timed out"))?
}

async fn request_h1<S>(io: S, host: &str, path: &str) -> Result<(u16, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building request: {e}"))?;
    let result = read_response(sender.send_request(req).await).await;
    driver.abort();
    result
}

async fn request_h2<S>(io: S, uri: &str) -> Result<(u16, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = Request::get(uri)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building request: {e}"))?;
    let result = read_response(sender.send_request(req).await).await;
    driver.abort();
    result
}

async fn read_response(
    resp: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<(u16, Vec<u8>), String> {
    let resp = resp.map_err(|e| format!("sending request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}
