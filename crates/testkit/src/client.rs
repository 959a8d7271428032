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
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.cert_der())
        .expect("a test CA certificate is a valid trust anchor");
    let mut config = ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
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

async fn https_get_inner(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<HttpsReply, String> {
    let server_name =
        ServerName::try_from(sni.to_owned()).map_err(|e| format!("invalid SNI {sni:?}: {e}"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
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
