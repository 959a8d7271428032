//! Transparent mode: connections redirected by iptables (REDIRECT) arrive here; the original
//! destination comes from SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST (IPv6) and the host name
//! from the SNI. A connection that was not redirected (its destination is this listener) is refused:
//! forwarding it would loop.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::SockRef;
use tokio::net::TcpStream;

use super::{InterceptState, Target, handle_stream, new_ctx};
use crate::context::Shared;
use crate::error::ConnError;
use crate::io::Moved;

pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) {
    let ctx = new_ctx(listener, client);
    let original = match original_destination(&tcp) {
        Ok(addr) => addr,
        Err(e) => {
            return ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::LocalNoOriginalDst(e)),
            );
        }
    };
    if tcp.local_addr().is_ok_and(|local| local == original) {
        let e = std::io::Error::other(
            "connection was not redirected (destination is the proxy itself)",
        );
        return ctx.finish(
            &shared,
            Moved::default(),
            &Err(ConnError::LocalNoOriginalDst(e)),
        );
    }
    // Every path from here connects to the original destination: refuse a forbidden one before
    // any handshake (the connect would refuse it too, later).
    if !shared.guard.permits(original.ip()) {
        let refusal = ConnError::PolicyDestinationForbidden(original.ip());
        return ctx.finish(&shared, Moved::default(), &Err(refusal));
    }
    let target = Target {
        host: None,
        ip: Some(original.ip()),
        port: original.port(),
        decided: None,
        vetted: Vec::new(),
    };
    handle_stream(tcp, target, ctx, state, shared).await;
}

fn original_destination(tcp: &TcpStream) -> std::io::Result<SocketAddr> {
    let socket = SockRef::from(tcp);
    let local = tcp.local_addr()?;
    let addr = if local.is_ipv6() && !local.ip().to_canonical().is_ipv4() {
        socket.original_dst_ipv6()?
    } else {
        socket.original_dst()?
    };
    addr.as_socket()
        .ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
}
