//! The `tls` transport: one outer TLS 1.3 connection to the relay per inner connection; the inner
//! bytes are written raw inside it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::endpoints::{EjectReason, Endpoints, HEDGE_AFTER};
use crate::config::{RelayUpstream, Timeouts};
use crate::error::ConnError;
use crate::outer::{self, Outer};

/// Connects to the relay and completes the outer handshake (SNI = the relay's name, no ALPN),
/// trying its endpoints in turn: a failing endpoint is ejected and the next one is tried within the
/// same attempt, so a client sees an error only when no endpoint answers. An endpoint that has not
/// answered after [`HEDGE_AFTER`] gets company: the next endpoint is tried alongside, the first
/// handshake to finish wins, and an endpoint outpaced that way is ejected (`answer_slow`).
pub async fn connect(
    relay: &RelayUpstream,
    endpoints: &Arc<Endpoints>,
    timeouts: &Timeouts,
) -> Result<(SocketAddr, Outer<TcpStream>), ConnError> {
    endpoints
        .ensure_resolved()
        .await
        .map_err(|e| ConnError::RelayUnavailable(format!("resolving the relay: {e}")))?;
    let mut waiting = endpoints.candidates().into_iter();
    let mut last = ConnError::RelayUnavailable("the relay has no endpoint".into());
    let mut running = FuturesUnordered::new();
    let mut pending: Vec<SocketAddr> = Vec::new();
    let attempt = |addr: SocketAddr| async move {
        (
            addr,
            handshake(addr, relay, timeouts, relay.tls_raw.clone()).await,
        )
    };
    if let Some(addr) = waiting.next() {
        pending.push(addr);
        running.push(attempt(addr));
    }
    let hedge = tokio::time::sleep(HEDGE_AFTER);
    tokio::pin!(hedge);
    while !running.is_empty() {
        tokio::select! {
            Some((addr, result)) = running.next() => {
                pending.retain(|a| *a != addr);
                match result {
                    Ok(stream) => {
                        endpoints.succeeded(addr);
                        outpaced(endpoints, &pending, addr);
                        return Ok((addr, stream));
                    }
                    Err((reason, e)) => {
                        endpoints.failed(addr, reason, &e);
                        last = e;
                        if let Some(next) = waiting.next() {
                            pending.push(next);
                            running.push(attempt(next));
                            hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                        }
                    }
                }
            }
            () = hedge.as_mut(), if waiting.len() > 0 => {
                if let Some(next) = waiting.next() {
                    pending.push(next);
                    running.push(attempt(next));
                }
                hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
            }
        }
    }
    Err(last)
}

/// Ejects the endpoints still `pending` when `winner` served the tunnel.
pub(super) fn outpaced(endpoints: &Endpoints, pending: &[SocketAddr], winner: SocketAddr) {
    for slow in pending {
        let detail = ConnError::RelayUnavailable(format!(
            "{slow} had not answered after {HEDGE_AFTER:?}; {winner} served the tunnel"
        ));
        endpoints.failed(*slow, EjectReason::AnswerSlow, &detail);
    }
}

/// TCP connect + TLS handshake to one relay endpoint with `config`, both bounded by their timeouts.
/// The relay is named by the operator, so the destination guard does not apply to it.
pub async fn handshake(
    addr: SocketAddr,
    relay: &RelayUpstream,
    timeouts: &Timeouts,
    config: Arc<rustls::ClientConfig>,
) -> Result<Outer<TcpStream>, (EjectReason, ConnError)> {
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
    match tokio::time::timeout(
        timeouts.handshake,
        outer::connect(config, relay.server_name.clone(), tcp),
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
