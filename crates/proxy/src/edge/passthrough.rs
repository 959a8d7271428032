//! `tls-passthrough` listener: read the ClientHello without consuming it, pick the name (SNI or the
//! configured default), and carry the client's exact bytes to the relay.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::config::{EdgeTls, Transport};
use crate::context::{ConnCtx, Shared};
use crate::detect;
use crate::error::ConnError;
use crate::flow::{Mode, Role, TlsFacts};
use crate::io::{End, Moved, refuse_tls, splice_ends};
use crate::transport::{Opened, RelayClient, Tunnel};

/// Serves one client connection to completion and records its flow.
pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    edge: &EdgeTls,
    relay: &RelayClient,
    shared: &Shared,
) {
    let mut ctx = ConnCtx::new(listener, Role::Edge, Mode::Tunnel, client);
    let (moved, result) = tunnel(tcp, &mut ctx, edge, relay, shared).await;
    ctx.finish(shared, moved, &result);
}

async fn tunnel(
    mut tcp: TcpStream,
    ctx: &mut ConnCtx,
    edge: &EdgeTls,
    relay: &RelayClient,
    shared: &Shared,
) -> (Moved, Result<(), ConnError>) {
    let mut prefix = BytesMut::with_capacity(2048);
    let hello = match detect::client_hello(&mut tcp, &mut prefix, shared, Role::Edge).await {
        Ok(hello) => hello,
        Err(e) => return (read_only(prefix.len()), Err(e)),
    };
    ctx.tls = Some(TlsFacts::offered(&hello));
    let (name, has_sni) = match (hello.sni, &edge.default_sni) {
        (Some(sni), _) => (sni, true),
        (None, Some(default)) => (default.clone(), false),
        (None, None) => return (read_only(prefix.len()), Err(ConnError::ClientNoSni)),
    };
    let authority = format!("{name}:{}", edge.inner_port);
    ctx.name = Some(name);
    ctx.upstream = Some(relay.upstream.name.clone());
    let hello_len = prefix.len();
    // Without an SNI the relay cannot route a raw `tls` tunnel; a CONNECT stream names the target.
    let transport = if has_sni {
        relay.upstream.transport
    } else {
        Transport::H2
    };
    let opened = relay.open(transport, &authority, prefix.freeze()).await;
    let _open = (shared.flows.metrics()).count_tunnel(transport, opened.as_ref().map(|_| ()));
    let Opened {
        endpoint,
        tunnel,
        unsent,
    } = match opened {
        Ok(opened) => opened,
        Err(e) => return (refuse_tls(&mut tcp, &e, hello_len as u64).await, Err(e)),
    };
    // The flow names the relay endpoint that carries the tunnel.
    ctx.upstream = Some(endpoint.to_string());
    let sent_early = (hello_len - unsent.len()) as u64;
    let idle = shared.timeouts.idle;
    let (mut moved, result) = match tunnel {
        Tunnel::H2(stream) => {
            let relay: End<'_, TcpStream> = End::H2(stream);
            splice_ends(End::Stream(tcp), relay, unsent, Bytes::new(), idle).await
        }
        Tunnel::Tls(mut stream) => {
            // The relay's bytes come out of the records they arrived in, uncopied.
            let relay: End<'_, TcpStream> = End::Chunked(&mut *stream);
            let spliced = splice_ends(End::Stream(tcp), relay, unsent, Bytes::new(), idle).await;
            // A tunnel on a spare that died unseen was carried by a new connection.
            ctx.upstream = Some(stream.endpoint().to_string());
            spliced
        }
    };
    moved.from_client += sent_early;
    (moved, result)
}

fn read_only(prefix: usize) -> Moved {
    Moved {
        from_client: prefix as u64,
        to_client: 0,
    }
}
