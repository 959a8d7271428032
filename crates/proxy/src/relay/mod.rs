//! The relay role (the provider side): accept the outer TLS → detect the inner connection → route by
//! the inner SNI / CONNECT authority / Host → splice or forward. The inner TLS is never terminated.
//!
//! One port serves every transport, told apart by the outer ALPN: `h2` (CONNECT streams and forwarded
//! requests, as tlsgate edges and Envoy's `tunneling_config` send them), `http/1.1` (HTTP/1.1 CONNECT,
//! e.g. `curl --proxy https://relay`), or none (the raw `tls` transport: the inner ClientHello follows).

mod raw;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::RelayListener;
use crate::context::{ConnCtx, Shared};
use crate::error::ConnError;
use crate::flow::{Mode, Role};
use crate::io::Moved;
use crate::transport::h2::{H2_CONN_WINDOW, H2_MAX_FRAME, H2_STREAM_WINDOW};

pub use service::RelayService;

/// Streams reset by a client before we could accept them, tolerated per connection (rapid reset).
const MAX_PENDING_RESETS: usize = 32;
/// Bound on one HTTP/2 header block.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Serves one outer connection to the relay.
pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    relay: &RelayListener,
    shared: Arc<Shared>,
) {
    let acceptor = TlsAcceptor::from(relay.tls.clone());
    let tls = match tokio::time::timeout(shared.timeouts.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let ctx = ConnCtx::new(listener, Role::Relay, Mode::Splice, client);
            ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::ClientHandshake(e)),
            );
            return;
        }
        Err(_) => {
            let ctx = ConnCtx::new(listener, Role::Relay, Mode::Splice, client);
            ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::ClientHandshakeTimeout),
            );
            return;
        }
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let service = RelayService::new(
        listener.clone(),
        client,
        relay.routes.clone(),
        shared.clone(),
    );
    match alpn.as_deref() {
        Some(crate::tls::ALPN_H2) => serve_h2(tls, service, &shared).await,
        Some(_) => serve_http1(tls, service, &shared).await,
        None => raw::serve(tls, client, listener, relay, service, shared.clone()).await,
    }
}

/// HTTP/2 on the outer connection: CONNECT streams and forwarded requests.
async fn serve_h2<S>(io: S, service: RelayService, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .max_concurrent_streams(shared.limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shared.shutdown.cancelled() => {
            // GOAWAY: no new streams; open ones finish within the gateway's grace period.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("relay h2 connection ended: {e}");
    }
}

/// HTTP/1.1 on the outer connection: CONNECT (then spliced) and forwarded requests.
pub(crate) async fn serve_http1<S>(io: S, service: RelayService, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.timeouts.http_header_read)
        .max_buf_size(shared.limits.http1_max_header_bytes.max(8192))
        .max_headers(shared.limits.http1_max_headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("relay http/1.1 connection ended: {e}");
    }
}
