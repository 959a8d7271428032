//! Serving HTTP on an accepted stream, the same way for every role: bounded heads, timeouts,
//! large HTTP/2 windows, reset-flood protection, and graceful shutdown (GOAWAY / close idle).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::context::{ConnCtx, Shared};
use crate::error::ConnError;
use crate::http_util::{host_of, local_response};
use crate::io::Moved;
use crate::transport::Body;
use crate::transport::h2::{H2_CONN_WINDOW, H2_MAX_FRAME, H2_STREAM_WINDOW};

/// Streams the server itself may reset for a client's protocol errors before the connection gets
/// GOAWAY ENHANCE_YOUR_CALM (hyper's default, set explicitly: the other half of rapid-reset
/// protection, against clients that provoke resets instead of sending them).
pub(crate) const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Ping interval that finds dead peers on idle HTTP/2 connections.
pub(crate) const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub(crate) const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/2 on `io` until the peer is done or shutdown drains it. Each request must have its
/// response head within `timeouts.http_request`; a connection ended by the client's abuse (reset or
/// CONTINUATION flood, far oversized headers: `h2_flood`; protocol errors) gets one flow record.
pub async fn serve_h2<S, Svc>(io: S, service: Svc, shared: &Arc<Shared>, conn: ConnCtx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    if let Err(error) = serve_h2_conn(io, service, shared, conn.clone()).await {
        conn.finish(shared, Moved::default(), &Err(error));
    }
}

/// [`serve_h2`] for a caller that writes the connection's record itself: a client's abuse comes
/// back as the error instead of becoming a flow of its own.
pub async fn serve_h2_conn<S, Svc>(
    io: S,
    service: Svc,
    shared: &Arc<Shared>,
    conn: ConnCtx,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let service = Timed::new(service, shared, conn.clone());
    // The relay serves edges with the same settings on the h2 crate (`relay::h2`): keep them in step
    // (but for its connection window, which an edge's many clients share).
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .max_concurrent_streams(shared.limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(shared.limits.h2_max_pending_resets)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .max_header_list_size(shared.limits.h2_max_header_list_size)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = crate::stop::stopped(&shared.shutdown) => {
            // GOAWAY: no new streams; open ones finish within the gateway's grace period.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("h2 connection ended: {e}");
        if let Some(error) = client_abuse(e) {
            return Err(error);
        }
    }
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades: CONNECT, WebSocket) on `io`, with the same request timeout
/// and abuse flow records as [`serve_h2`] (oversized heads, header-read timeout, bytes that are
/// not HTTP).
pub async fn serve_http1<S, Svc>(io: S, service: Svc, shared: &Arc<Shared>, conn: ConnCtx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    Svc::Future: Send + 'static,
{
    if let Err(error) = serve_http1_conn(io, service, shared, conn.clone()).await {
        conn.finish(shared, Moved::default(), &Err(error));
    }
}

/// [`serve_http1`] for a caller that writes the connection's record itself (see
/// [`serve_h2_conn`]).
pub async fn serve_http1_conn<S, Svc>(
    io: S,
    service: Svc,
    shared: &Arc<Shared>,
    conn: ConnCtx,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    Svc::Future: Send + 'static,
{
    let service = Timed::new(service, shared, conn.clone());
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.timeouts.http_header_read)
        .max_buf_size(shared.limits.http1_max_header_bytes.max(8192))
        .max_headers(shared.limits.http1_max_headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = crate::stop::stopped(&shared.shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("http/1.1 connection ended: {e}");
        if let Some(error) = client_abuse(e) {
            return Err(error);
        }
    }
    Ok(())
}

/// The client-caused ending a connection error names, if any. Ordinary endings (the peer closed or
/// reset the socket, a GOAWAY from the peer) are not flows of their own: their requests have them.
fn client_abuse(error: hyper::Error) -> Option<ConnError> {
    if error.is_parse_too_large() {
        // hyper maps both a head over max_buf_size and more than max_headers headers here.
        return Some(ConnError::ClientHeadersTooLarge);
    }
    if error.is_timeout() {
        return Some(ConnError::ClientHeaderTimeout);
    }
    if error.is_parse() || error.is_parse_version_h2() {
        return Some(ConnError::ClientHttpInvalid(error));
    }
    let h2 = std::error::Error::source(&error).and_then(|s| s.downcast_ref::<h2::Error>())?;
    h2_abuse(h2)
}

/// The client-caused ending an HTTP/2 connection error names, if any (see [`client_abuse`]).
pub(crate) fn h2_abuse(h2: &h2::Error) -> Option<ConnError> {
    if !(h2.is_go_away() && h2.is_library()) {
        return None;
    }
    // h2 gives every abuse limit the same reason (its GOAWAY debug data, which names the limit,
    // does not reach the error returned here), so they share one label.
    Some(if h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
        ConnError::ClientH2Flood
    } else {
        // h2's own description of what it detected (library errors only: never peer text).
        ConnError::ClientH2Protocol(h2.to_string())
    })
}

/// A service whose every response head must be ready within `timeouts.http_request`; past it, the
/// request gets 504 and a `request_timeout` flow, and its inner handling is dropped (no other
/// flow: the inner future never finished).
#[derive(Clone)]
pub(crate) struct Timed<Svc> {
    inner: Svc,
    shared: Arc<Shared>,
    /// The connection's facts, copied into a flow record only when a request times out.
    conn: Arc<ConnCtx>,
}

impl<Svc> Timed<Svc> {
    pub(crate) fn new(inner: Svc, shared: &Arc<Shared>, conn: ConnCtx) -> Self {
        Self {
            inner,
            shared: shared.clone(),
            conn: Arc::new(conn),
        }
    }
}

/// The authority a request names, as [`crate::http_util::request_authority`] picks it, without
/// copying it.
enum RequestAuthority {
    Uri(http::uri::Authority),
    Host(http::HeaderValue),
    Neither,
}

impl RequestAuthority {
    fn of<B>(req: &Request<B>) -> Self {
        if let Some(authority) = req.uri().authority() {
            Self::Uri(authority.clone())
        } else if let Some(host) = req.headers().get(http::header::HOST) {
            Self::Host(host.clone())
        } else {
            Self::Neither
        }
    }

    /// The host name, as [`host_of`] gives it.
    fn host(&self) -> Option<String> {
        match self {
            Self::Uri(authority) => Some(authority.as_str()),
            Self::Host(host) => host.to_str().ok(),
            Self::Neither => None,
        }
        .map(host_of)
    }
}

impl<Svc, B> Service<Request<B>> for Timed<Svc>
where
    Svc: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    Svc::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let started = std::time::Instant::now();
        // The name a timeout's record gives, kept as the request's own (reference-counted) bytes:
        // only a request that times out pays for `host_of`'s copy.
        let authority = RequestAuthority::of(&req);
        let (conn, shared) = (self.conn.clone(), self.shared.clone());
        let limit = shared.timeouts.http_request;
        // A combinator, not an `async` block: a block would keep the inner future twice, once as
        // what it captured and once as what it awaits, and this is allocated for every request.
        let handling = tokio::time::timeout(limit, self.inner.call(req));
        Box::pin(handling.map(move |answered| {
            if let Ok(response) = answered {
                return response;
            }
            let mut ctx = ConnCtx::clone(&conn);
            (ctx.started, ctx.name) = (started, authority.host());
            let error = ConnError::RequestTimeout;
            let response = local_response(StatusCode::GATEWAY_TIMEOUT, &error);
            ctx.status = Some(response.status().as_u16());
            ctx.finish(&shared, Moved::default(), &Err(error));
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timed-out request's record names what `request_authority` picks: the URI's authority,
    /// else the Host header, as `host_of` gives it.
    #[test]
    fn a_timeout_names_the_request_authority_as_host_of_gives_it() {
        let named = |req: Request<()>| RequestAuthority::of(&req).host();
        let absolute = Request::get("https://Example.COM:8443/x")
            .header(http::header::HOST, "other.test")
            .body(())
            .unwrap();
        assert_eq!(named(absolute).as_deref(), Some("example.com"));
        let origin_form = Request::get("/x")
            .header(http::header::HOST, "Foo.Test.:8080")
            .body(())
            .unwrap();
        assert_eq!(named(origin_form).as_deref(), Some("foo.test"));
        let binary_host = Request::get("/x")
            .header(
                http::header::HOST,
                http::HeaderValue::from_bytes(b"\xff").unwrap(),
            )
            .body(())
            .unwrap();
        assert_eq!(named(binary_host), None);
        assert_eq!(named(Request::get("/x").body(()).unwrap()), None);
    }
}
