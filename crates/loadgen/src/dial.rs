//! Opening one connection: TCP, an optional CONNECT through a proxy, an optional TLS handshake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::HttpVersion;
use crate::report::Failure;

/// Bound on a proxy's CONNECT reply head.
const MAX_CONNECT_REPLY: usize = 8 * 1024;

/// Any byte stream a connection runs over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// The protocol spoken on an opened connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// Everything needed to open connections to one target.
pub struct Dialer {
    /// Where TCP goes: the proxy, the `--connect` address or the resolved URL host.
    pub addr: SocketAddr,
    /// Whether `addr` is a CONNECT proxy.
    pub via_proxy: bool,
    /// The URL's port (named in CONNECT).
    pub port: u16,
    /// TLS client config; `None` for plain http.
    pub tls: Option<TlsConnector>,
    /// Fixed TLS server name (`--sni`); otherwise the per-connection host.
    pub sni: Option<String>,
    /// The version asked for: what plain TCP speaks, and what TLS must negotiate.
    pub plain_proto: Proto,
}

impl Dialer {
    /// Open one connection to `host` (the CONNECT host and default TLS name).
    pub async fn open(&self, host: &str) -> Result<(BoxIo, Proto), Failure> {
        let mut tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Latency matters more than packet count for request/response traffic.
        tcp.set_nodelay(true).map_err(|_| Failure::Connect)?;
        if self.via_proxy {
            connect_through_proxy(&mut tcp, host, self.port).await?;
        }
        let Some(tls) = &self.tls else {
            return Ok((Box::new(tcp), self.plain_proto));
        };
        let name = self.sni.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| Failure::Tls)?;
        let stream = tls
            .connect(server_name, tcp)
            .await
            .map_err(|_| Failure::Tls)?;
        // Only one protocol is offered, so a server that ignores ALPN speaks HTTP/1.1 (fine when
        // that is what was asked for, a mismatch when h2 was).
        let proto = match (stream.get_ref().1.alpn_protocol(), self.plain_proto) {
            (Some(b"h2"), _) => Proto::H2,
            (Some(b"http/1.1"), _) | (None, Proto::H1) => Proto::H1,
            _ => return Err(Failure::Alpn),
        };
        Ok((Box::new(stream), proto))
    }
}

/// `CONNECT host:port`, then read the reply head (bounded) and require a 2xx status.
async fn connect_through_proxy(tcp: &mut TcpStream, host: &str, port: u16) -> Result<(), Failure> {
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|_| Failure::Proxy)?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = tcp.read(&mut chunk).await.map_err(|_| Failure::Proxy)?;
        if n == 0 {
            return Err(Failure::Proxy);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            // The proxy sends nothing after its reply until our ClientHello, so bytes after the
            // head would mean a confused proxy.
            if end + 4 != head.len() {
                return Err(Failure::Proxy);
            }
            break;
        }
        if head.len() > MAX_CONNECT_REPLY {
            return Err(Failure::Proxy);
        }
    }
    let status_ok = head
        .split(|&b| b == b' ')
        .nth(1)
        .is_some_and(|code| code.len() == 3 && code[0] == b'2');
    if status_ok {
        Ok(())
    } else {
        Err(Failure::ProxyStatus)
    }
}

/// A TLS connector trusting only `cacerts`, offering only the ALPN of `version`.
pub fn tls_connector(
    cacerts: &[PathBuf],
    version: HttpVersion,
    resume: bool,
) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for path in cacerts {
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {}", path.display()))?;
        for cert in certs {
            let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("trusting a certificate from {}", path.display()))?;
        }
    }
    if roots.is_empty() {
        anyhow::bail!("https needs --cacert with at least one CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match version {
        HttpVersion::H1 => vec![b"http/1.1".to_vec()],
        HttpVersion::H2 => vec![b"h2".to_vec()],
    };
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}
