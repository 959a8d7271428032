//! Detect: read a connection's first bytes — bounded in size and time — until a whole ClientHello is
//! buffered. Nothing is consumed from the caller's point of view: the bytes stay in `buf` for replay.

use std::time::Duration;

use bytes::BytesMut;
use tlsgate_wire::{ClientHelloInfo, Peek, peek_client_hello};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::context::Shared;
use crate::error::ConnError;
use crate::flow::Role;

/// [`read_client_hello`] within the gateway's bounds (`limits.max_client_hello`,
/// `timeouts.detect`), counted in `tlsgate_client_hello_peeks_total` for `role` by outcome.
pub async fn client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    shared: &Shared,
    role: Role,
) -> Result<ClientHelloInfo, ConnError> {
    let max = shared.limits.max_client_hello;
    let result = read_client_hello(io, buf, max, shared.timeouts.detect).await;
    let outcome = result.as_ref().map(|_| ());
    shared.flows.metrics().count_hello(role, outcome);
    result
}

/// Reads from `io` into `buf` until `buf` holds a whole ClientHello of at most `max` bytes.
///
/// Fails with `ClientNotTls` on bytes that are not a TLS handshake (the bytes read so far stay in `buf`),
/// `ClientHelloInvalid` on a malformed or oversized hello, `ClientClosedEarly` on EOF and
/// `ClientHelloTimeout` when `timeout` passes first.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    max: usize,
    timeout: Duration,
) -> Result<ClientHelloInfo, ConnError> {
    match tokio::time::timeout(timeout, read_loop(io, buf, max)).await {
        Ok(result) => result,
        Err(_) => Err(ConnError::ClientHelloTimeout),
    }
}

async fn read_loop<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<ClientHelloInfo, ConnError> {
    loop {
        let need = match peek_client_hello(buf, max) {
            Peek::Complete(info) if sni_is_ip_literal(&info) => {
                return Err(ConnError::ClientSniIpLiteral);
            }
            Peek::Complete(info) => return Ok(info),
            Peek::NotTls => return Err(ConnError::ClientNotTls),
            Peek::Invalid(kind) => return Err(ConnError::ClientHelloInvalid(kind)),
            Peek::Incomplete { need } => need.max(1),
        };
        // The parser reports TooLarge as soon as a length exceeds `max`, so `buf` stays within
        // max + one record header + one read's slack; reserve no more than what is missing.
        buf.reserve(need.min(max.saturating_sub(buf.len()).max(1)).max(512));
        let n = io.read_buf(buf).await.map_err(ConnError::ClientIo)?;
        if n == 0 {
            return Err(ConnError::ClientClosedEarly);
        }
        if buf.len() > max + 5 + 16 * 1024 {
            return Err(ConnError::ClientHelloInvalid(
                tlsgate_wire::HelloError::TooLarge,
            ));
        }
    }
}

/// RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName". An IP in the SNI
/// would name a connection by an address instead of a name (routing, policy and minting all expect
/// names), so such a hello is refused. (The parser already refuses `:`, so only IPv4 gets here.)
fn sni_is_ip_literal(info: &ClientHelloInfo) -> bool {
    info.sni.as_deref().is_some_and(|sni| {
        sni.trim_end_matches('.')
            .parse::<std::net::IpAddr>()
            .is_ok()
    })
}

/// Reads at least one byte into `buf` within `timeout` (used to sniff non-TLS protocols).
pub async fn read_some<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<(), ConnError> {
    buf.reserve(4096);
    match tokio::time::timeout(timeout, io.read_buf(buf)).await {
        Err(_) => Err(ConnError::ClientHelloTimeout),
        Ok(Err(e)) => Err(ConnError::ClientIo(e)),
        Ok(Ok(0)) => Err(ConnError::ClientClosedEarly),
        Ok(Ok(_)) => Ok(()),
    }
}
