//! The `tls` transport: one outer TLS 1.3 connection to the relay per inner connection; the inner
//! bytes are written raw inside it.

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{RelayUpstream, Timeouts};
use crate::error::ConnError;
use crate::upstream::{self, Resolver};

/// Connects to the relay and completes the outer handshake (SNI = the relay's name, no ALPN).
pub async fn connect(
    relay: &RelayUpstream,
    resolver: &Resolver,
    timeouts: &Timeouts,
) -> Result<TlsStream<TcpStream>, ConnError> {
    handshake(relay, resolver, timeouts, relay.tls_raw.clone()).await
}

/// TCP connect + TLS handshake to the relay with `config`, both bounded by their timeouts.
pub async fn handshake(
    relay: &RelayUpstream,
    resolver: &Resolver,
    timeouts: &Timeouts,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, ConnError> {
    // The relay is named by the operator, so the destination guard does not apply to it.
    let tcp = upstream::connect(resolver, &relay.host, relay.port, None, timeouts.connect)
        .await
        .map_err(|e| ConnError::RelayUnavailable(e.to_string()))?;
    let connector = TlsConnector::from(config);
    match tokio::time::timeout(
        timeouts.handshake,
        connector.connect(relay.server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ConnError::RelayUnavailable(format!("TLS handshake: {e}"))),
        Err(_) => Err(ConnError::RelayUnavailable(
            "TLS handshake timed out".into(),
        )),
    }
}
