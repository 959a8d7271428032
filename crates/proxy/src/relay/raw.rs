//! The raw `tls` transport on the relay: after the outer layer, the inner ClientHello follows;
//! route by its SNI and splice. Bytes that are not TLS are served as HTTP/1.1 (a proxy client that
//! offered no ALPN).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::{Admission, RelayService};
use crate::config::RelayListener;
use crate::context::{ConnCtx, Shared};
use crate::detect;
use crate::error::ConnError;
use crate::flow::{Mode, Role, TlsFacts};
use crate::io::{End, Moved, Prefixed, ReadChunks, refuse_tls, splice_ends};
use crate::route::Traffic;

pub async fn serve<S>(
    mut io: S,
    client: SocketAddr,
    listener: Arc<str>,
    relay: &RelayListener,
    service: RelayService,
    shared: Arc<Shared>,
    admission: &Admission,
) where
    S: ReadChunks + Send + 'static,
{
    let mut ctx = ConnCtx::new(listener, Role::Relay, Mode::Splice, client);
    let mut prefix = BytesMut::with_capacity(2048);
    let hello = detect::client_hello(&mut io, &mut prefix, &shared, Role::Relay).await;
    let hello = match hello {
        Ok(hello) => hello,
        Err(ConnError::ClientNotTls) => {
            let io = Prefixed::new(prefix.freeze(), io);
            // Boxed: a rare path, whose HTTP/1.1 server state every tunnel would otherwise carry.
            return Box::pin(crate::http_server::serve_http1(io, service, &shared, ctx)).await;
        }
        Err(e) => return ctx.finish(&shared, read_only(&prefix), &Err(e)),
    };
    ctx.tls = Some(TlsFacts::offered(&hello));
    let Some(sni) = hello.sni else {
        return refuse(io, ctx, &shared, &prefix, ConnError::ClientNoSni).await;
    };
    ctx.name = Some(sni.clone());
    // This connection is one tunnel of its client's.
    let _tunnel = match admission.admit_tunnel() {
        Ok(permit) => permit,
        Err(e) => return refuse(io, ctx, &shared, &prefix, e).await,
    };
    let Some((host, port)) = relay.routes.target(&sni, Traffic::Tls) else {
        return refuse(io, ctx, &shared, &prefix, ConnError::PolicyNoRoute).await;
    };
    ctx.upstream = Some(format!("{host}:{port}"));
    let upstream = match shared.connect(&host, port).await {
        Ok(stream) => stream,
        Err(e) => return refuse(io, ctx, &shared, &prefix, e).await,
    };
    // The client's bytes go to the origin out of the records they arrived in, uncopied.
    let client: End<'_, S> = End::Chunked(&mut io);
    let (moved, result) = splice_ends(
        client,
        End::Stream(upstream),
        prefix.freeze(),
        Bytes::new(),
        shared.timeouts.idle,
    )
    .await;
    ctx.finish(&shared, moved, &result);
}

/// A tunnel refused after its ClientHello: the client is told why ([`refuse_tls`]), then the flow is
/// recorded.
async fn refuse<S: AsyncWrite + Unpin>(
    mut io: S,
    ctx: ConnCtx,
    shared: &Shared,
    prefix: &BytesMut,
    error: ConnError,
) {
    let moved = refuse_tls(&mut io, &error, prefix.len() as u64).await;
    ctx.finish(shared, moved, &Err(error));
}

fn read_only(prefix: &BytesMut) -> Moved {
    Moved {
        from_client: prefix.len() as u64,
        to_client: 0,
    }
}
