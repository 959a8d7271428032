//! The `tls` transport: one outer TLS 1.3 connection to the relay per inner connection; the inner
//! bytes are written raw inside it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::endpoints::{EjectReason, Endpoints};
use crate::config::{RelayUpstream, Timeouts};
use crate::error::ConnError;

/// Connects to the relay and completes the outer handshake (SNI = the relay's name, no ALPN),
/// trying its endpoints in turn: a failing endpoint is ejected and the next one is tried within the
/// same attempt, so a client sees an error only when no endpoint answers.
pub async fn connect(
    relay: &RelayUpstream,
    endpoints: &Arc<Endpoints>,
    timeouts: &Timeouts,
) -> Result<(SocketAddr, TlsStream<TcpStream>), ConnError> {
    endpoints
        .ensure_resolved()
        .await
        .map_err(|e| ConnError::RelayUnavailable(format!("resolving the relay: {e}")))?;
    let mut last = ConnError::RelayUnavailable("the relay has no endpoint".into());
    for addr in endpoints.candidates() {
        match handshake(addr, relay, timeouts, relay.tls_raw.clone()).await {
            Ok(stream) => {
                endpoints.succeeded(addr);
                return Ok((addr, stream));
            }
            Err((reason, e)) => {
                endpoints.failed(addr, reason, &e);
                last = e;
            }
        }
    }
    Err(last)
}

/// TCP connect + TLS handshake to one relay endpoint with `config`, both bounded by their timeouts.
/// The relay is named by the operator, so the destination guard does not apply to it.
pub async fn handshake(
    addr: SocketAddr,
    relay: &RelayUpstream,
    timeouts: &Timeouts,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, (EjectReason, ConnError)> {
    let tcp = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                EjectReason::ConnectRefused
            } else {
                EjectReason::ConnectFailed
            };
            let error = ConnError::RelayUnavailable(format!("connecting to {addr}: {e}"));
            return Err((reason, error));
        }
        Err(_) => {
            let error = ConnError::RelayUnavailable(format!("connecting to {addr} timed out"));
            return Err((EjectReason::ConnectTimeout, error));
        }
    };
    // Tunnels carry interactive TLS handshakes: do not wait to coalesce small writes.
    let _ = tcp.set_nodelay(true);
    let connector = TlsConnector::from(config);
    match tokio::time::timeout(
        timeouts.handshake,
        connector.connect(relay.server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err((
            EjectReason::HandshakeFailed,
            ConnError::RelayUnavailable(format!("TLS handshake with {addr}: {e}")),
        )),
        Err(_) => Err((
            EjectReason::HandshakeTimeout,
            ConnError::RelayUnavailable(format!("TLS handshake with {addr} timed out")),
        )),
    }
}
