//! Serving HTTP on an accepted stream, the same way for every role: bounded heads, timeouts,
//! large HTTP/2 windows, reset-flood protection, and graceful shutdown (GOAWAY / close idle).

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::context::Shared;
use crate::transport::Body;
use crate::transport::h2::{H2_CONN_WINDOW, H2_MAX_FRAME, H2_STREAM_WINDOW};

/// Streams reset by a client before we could accept them, tolerated per connection (rapid reset).
const MAX_PENDING_RESETS: usize = 32;
/// Bound on one HTTP/2 header block.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// Ping interval that finds dead peers on idle HTTP/2 connections.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/2 on `io` until the peer is done or shutdown drains it.
pub async fn serve_h2<S, Svc>(io: S, service: Svc, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .max_concurrent_streams(shared.limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
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
        tracing::debug!("h2 connection ended: {e}");
    }
}

/// Serves HTTP/1.1 (with upgrades: CONNECT, WebSocket) on `io`.
pub async fn serve_http1<S, Svc>(io: S, service: Svc, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    Svc::Future: Send + 'static,
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
        tracing::debug!("http/1.1 connection ended: {e}");
    }
}
