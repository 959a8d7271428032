//! Keep-alive HTTP/1.1 connections to upstreams for forwarded plain HTTP: hyper-util's pooled
//! client with a connector that resolves through our [`Resolver`] and checks every address with
//! the [`DestinationGuard`] before connecting, exactly like [`crate::upstream::connect`] (it is
//! that function). One pool per config generation: it lives in the generation's [`Shared`], so a
//! reload starts a new one and the old one's idle connections close when the generation is gone.
//!
//! What the pool changes and what it does not:
//! - routing and policy are still decided per request by the caller before the pool is asked;
//!   the pool only picks a connection to the `host:port` the caller chose (keyed by scheme, host
//!   and port). A new connection is resolved and guarded like any other; a pooled one was guarded
//!   when it was opened, by the same guard (the guard is the generation's too).
//! - an idle connection the upstream closed is dropped when its close is seen; a request that was
//!   handed to such a connection but not yet written is retried on another one (hyper's
//!   "canceled, not started" retry). A request already written when the close arrives, before any
//!   complete response, is sent once more on a new connection only when its method is idempotent
//!   and it has no body ([`Replay`]); any other is answered 502 (`upstream_http_error`).
//! - idle connections are bounded per upstream ([`UpstreamPool::DEFAULT_MAX_IDLE_PER_HOST`]) and
//!   in time ([`UpstreamPool::DEFAULT_IDLE_TIMEOUT`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::error::ConnError;
use crate::transport::Body;
use crate::upstream::{DestinationGuard, Resolver};

/// The generation's pool of upstream HTTP/1.1 connections, built on first use.
///
/// One for all worker threads ([`crate::workers`]), unlike the interceptor's origin pool: a
/// connection's task runs on the worker that opened it, and a request from another worker crosses
/// threads to use it. Per worker, the idle connections a relay keeps would depend on which workers
/// its h2 connections from edges landed on, so its idle footprint would not be the same from one
/// idle moment to the next.
#[derive(Default)]
pub struct UpstreamPool {
    client: OnceLock<Client<GuardedConnector, Body>>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("started", &self.client.get().is_some())
            .finish()
    }
}

impl UpstreamPool {
    /// Idle connections kept per upstream `host:port`: the 16–32 concurrent requests an edge
    /// typically multiplexes to one origin find a warm connection each; beyond that, connections
    /// close after their request instead of piling up idle.
    pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 32;
    /// How long an idle upstream connection is kept: long enough for a steady client's next
    /// request, short enough that a burst's connections do not hold sockets (and origins' slots)
    /// for minutes. Apache closes idle keep-alive connections after 5 s, nginx after 75 s; a
    /// close from the origin is seen at once and drops the connection anyway.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Sends `request` (absolute URI `http://host:port/...`, Host already set) on a pooled or new
    /// connection to its `host:port`. The response head must arrive within `shared`'s idle
    /// timeout, which also bounds waiting for a connection.
    pub(crate) async fn send(
        &self,
        shared: &Shared,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ConnError> {
        let client = self.client.get_or_init(|| build(shared));
        let deadline = tokio::time::Instant::now() + shared.timeouts.idle;
        let replay = Replay::of(&request);
        let first = tokio::time::timeout_at(deadline, client.request(request))
            .await
            .map_err(|_| ConnError::UpstreamConnectTimeout)?;
        let again = match (first, replay) {
            (Ok(response), _) => return Ok(response),
            (Err(error), Some(replay)) if closed_before_response(&error) => {
                tracing::debug!("upstream closed the connection before answering; sent again");
                replay.request()
            }
            (Err(error), _) => return Err(conn_error(error)),
        };
        tokio::time::timeout_at(deadline, client.request(again))
            .await
            .map_err(|_| ConnError::UpstreamConnectTimeout)?
            .map_err(conn_error)
    }
}

/// What it takes to send a request again: only for an idempotent method without a body (RFC 9110
/// §9.2.2 lets a client repeat those automatically), the way browsers and Go's `http.Transport`
/// retry a request an origin's keep-alive close raced with.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<Body>) -> Option<Self> {
        let idempotent = matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        if !idempotent || !request.body().is_end_stream() {
            return None;
        }
        Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        })
    }

    fn request(self) -> Request<Body> {
        let mut request = Request::new(Empty::new().map_err(|never| match never {}).boxed());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Whether the upstream closed the connection before a complete response: the keep-alive race
/// (the origin closed an idle connection as the request was being written on it), seen as an end
/// of stream before the response or as a reset (the request reached a socket already closed).
fn closed_before_response(error: &hyper_util::client::legacy::Error) -> bool {
    let Some(hyper_error) =
        std::error::Error::source(error).and_then(|source| source.downcast_ref::<hyper::Error>())
    else {
        return false;
    };
    let reset = std::error::Error::source(hyper_error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            )
        });
    hyper_error.is_incomplete_message() || reset
}

fn build(shared: &Shared) -> Client<GuardedConnector, Body> {
    let connector = GuardedConnector(Arc::new(ConnectorInner {
        resolver: shared.resolver.clone(),
        guard: shared.guard.clone(),
        timeout: shared.timeouts.connect,
    }));
    Client::builder(PoolExecutor {
        force: shared.force.clone(),
    })
    .pool_timer(TokioTimer::new())
    .pool_idle_timeout(UpstreamPool::DEFAULT_IDLE_TIMEOUT)
    .pool_max_idle_per_host(UpstreamPool::DEFAULT_MAX_IDLE_PER_HOST)
    // The caller sets Host to the requested authority, which is not the URI's (the routed target).
    .set_host(false)
    .build(connector)
}

/// The request's failure as the connection error flows and metrics name: a connect failure keeps
/// the connector's own error (`destination_forbidden`, `upstream_connect_refused`, ...).
fn conn_error(error: hyper_util::client::legacy::Error) -> ConnError {
    let taken = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<ConnectFailed>())
        .and_then(ConnectFailed::take);
    taken.unwrap_or(ConnError::UpstreamExchange(error))
}

/// Resolves, guards and connects through [`crate::upstream::connect`]; cheap to clone (the client
/// clones it per connection attempt).
#[derive(Clone)]
pub(crate) struct GuardedConnector(Arc<ConnectorInner>);

struct ConnectorInner {
    resolver: Resolver,
    guard: DestinationGuard,
    timeout: Duration,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = Upstream;
    type Error = ConnectFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let host = dst.host().ok_or(ConnError::UpstreamNoAddress)?;
            let port = dst.port_u16().unwrap_or(80);
            let tcp = crate::upstream::connect(
                &inner.resolver,
                host,
                port,
                Some(&inner.guard),
                inner.timeout,
            )
            .await?;
            Ok(Upstream(TokioIo::new(tcp)))
        })
    }
}

/// A pooled upstream connection. hyper-util's own `TcpStream` connection reports its addresses
/// (`HttpInfo`), which its client then puts in every response's extensions: two allocations
/// per forwarded request, for a value nothing here reads. This one reports nothing.
pub(crate) struct Upstream(TokioIo<TcpStream>);

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connector's error: the [`ConnError`] it ended with, taken back out by [`conn_error`] (the
/// pooled client only hands its cause back by reference).
#[derive(Debug)]
pub(crate) struct ConnectFailed(Mutex<Option<ConnError>>);

impl ConnectFailed {
    fn take(&self) -> Option<ConnError> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl From<ConnError> for ConnectFailed {
    fn from(error: ConnError) -> Self {
        Self(Mutex::new(Some(error)))
    }
}

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(error) => write!(f, "{error}"),
            None => f.write_str("connecting to the upstream failed"),
        }
    }
}

impl std::error::Error for ConnectFailed {}

/// Runs the pool's connection tasks. Not on the gateway's task tracker: an idle upstream
/// connection must not hold up a graceful shutdown (a request in flight is held by its client
/// connection's task, which is tracked), and not under a client's admission either (a pooled
/// connection outlives the request that opened it). The grace period's end stops them all.
#[derive(Clone)]
struct PoolExecutor {
    force: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for PoolExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        crate::context::spawn_pooled(&self.force, task);
    }
}

/// `http://host:port` + `path` for the pool: IPv6 literals bracketed.
pub(crate) fn upstream_uri(host: &str, port: u16, path: &str) -> Result<Uri, ConnError> {
    let text = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => format!("http://{}{path}", SocketAddr::new(ip, port)),
        Err(_) => format!("http://{host}:{port}{path}"),
    };
    Uri::try_from(text).map_err(|_| ConnError::ClientNoHost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_brackets_ipv6_and_keeps_the_port() {
        let uri = upstream_uri("2001:db8::1", 8080, "/a?b=c").unwrap();
        assert_eq!(uri.to_string(), "http://[2001:db8::1]:8080/a?b=c");
        assert_eq!(uri.host(), Some("[2001:db8::1]"));
        let uri = upstream_uri("origin.example", 80, "/").unwrap();
        assert_eq!(uri.port_u16(), Some(80));
        assert_eq!(uri.host(), Some("origin.example"));
    }

    #[test]
    fn connect_failure_is_taken_back_with_its_reason() {
        let failed = ConnectFailed::from(ConnError::PolicyDestinationForbidden(
            "127.0.0.1".parse().unwrap(),
        ));
        assert_eq!(
            failed.to_string(),
            "destination 127.0.0.1 is forbidden by the destination guard"
        );
        let taken = failed.take().unwrap();
        assert_eq!(taken.reason(), "destination_forbidden");
        assert!(failed.take().is_none());
    }
}
