//! Tunnel transports from an edge to a relay: multiplexed HTTP/2 CONNECT streams, or one outer TLS
//! connection per inner connection.

pub mod endpoints;
pub mod h2;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio_util::sync::CancellationToken;

use crate::config::{RelayUpstream, Timeouts, Transport};
use crate::error::ConnError;
use crate::h2io::H2Io;
use crate::metrics::Metrics;
use crate::upstream::Resolver;
use endpoints::Endpoints;

/// Request and response bodies: streamed, never buffered whole. The error is boxed because bodies
/// come from hyper and from h2 streams alike.
pub type Body = BoxBody<Bytes, BoxError>;
/// A body's error, whichever library raised it (hyper on one side, h2 streams on the other). A
/// named type rather than a bare `Box<dyn Error>`: the latter trips rustc's `Send` inference in the
/// servers' futures.
#[derive(Debug)]
pub struct BoxError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BoxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<hyper::Error> for BoxError {
    fn from(e: hyper::Error) -> Self {
        Self(Box::new(e))
    }
}

impl From<::h2::Error> for BoxError {
    fn from(e: ::h2::Error) -> Self {
        Self(Box::new(e))
    }
}

impl From<std::convert::Infallible> for BoxError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// `body` as a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_err(Into::into).boxed()
}

/// An open tunnel to a relay: the inner bytes go in and out of it untouched.
pub enum Tunnel {
    /// An HTTP/2 CONNECT stream.
    H2(H2Io),
    /// A dedicated outer TLS connection.
    Tls(Box<tls::TlsTunnel>),
}

/// A tunnel [`RelayClient::open`] opened.
pub struct Opened {
    /// The relay endpoint that carries it.
    pub endpoint: SocketAddr,
    pub tunnel: Tunnel,
    /// What of the bytes given to `open` is still to be written into the tunnel.
    pub unsent: Bytes,
}

/// An edge's handle on one relay: opens tunnels with the configured transport, and sends forwarded
/// HTTP requests over the h2 pool (plain HTTP always travels as HTTP/2 over TLS 1.3). Both
/// transports share one endpoint set (see [`endpoints`]).
pub struct RelayClient {
    pub upstream: Arc<RelayUpstream>,
    endpoints: Arc<Endpoints>,
    timeouts: Timeouts,
    pool: h2::Pool,
    /// Outer connections opened ahead of need for the `tls` transport (`preconnect`), if any.
    spares: Option<Arc<tls::Spares>>,
}

impl RelayClient {
    /// Creates the client; the relay's host is resolved and its h2 pool connects on first use.
    /// Failed endpoint attempts are counted in `metrics`.
    pub fn new(
        upstream: Arc<RelayUpstream>,
        resolver: Resolver,
        timeouts: Timeouts,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        let endpoints = Arc::new(Endpoints::new(
            upstream.clone(),
            &resolver,
            shutdown.clone(),
            metrics,
        ));
        let spares = tls::Spares::new(
            upstream.clone(),
            endpoints.clone(),
            timeouts,
            shutdown.clone(),
        );
        let pool = h2::Pool::new(upstream.clone(), endpoints.clone(), timeouts, shutdown);
        Self {
            upstream,
            endpoints,
            timeouts,
            pool,
            spares,
        }
    }

    /// The relay's endpoint set.
    pub fn endpoints(&self) -> &Arc<Endpoints> {
        &self.endpoints
    }

    /// Opens a tunnel for `authority` (`name:port`) with `transport` (the relay's configured one, or
    /// h2 where only a CONNECT can name the target). `first` is the client's first bytes (its
    /// ClientHello): a CONNECT stream sends them at once, behind its request
    /// ([`h2::Pool::connect_stream`]); a `tls` tunnel leaves them to its first write, on a spare
    /// outer connection when `preconnect` keeps some ([`tls::Spares`]).
    pub async fn open(
        &self,
        transport: Transport,
        authority: &str,
        first: Bytes,
    ) -> Result<Opened, ConnError> {
        match transport {
            Transport::H2 => {
                self.pool
                    .connect_stream(authority, first)
                    .await
                    .map(|(endpoint, stream)| Opened {
                        endpoint,
                        tunnel: Tunnel::H2(stream),
                        unsent: Bytes::new(),
                    })
            }
            Transport::Tls => {
                let spare = self.spares.as_ref().and_then(|spares| spares.take(&first));
                let tunnel = match spare {
                    Some(tunnel) => tunnel,
                    None => {
                        let (endpoint, outer) =
                            tls::connect(&self.upstream, &self.endpoints, &self.timeouts).await?;
                        tls::TlsTunnel::fresh(endpoint, outer)
                    }
                };
                Ok(Opened {
                    endpoint: tunnel.endpoint(),
                    tunnel: Tunnel::Tls(Box::new(tunnel)),
                    unsent: first,
                })
            }
        }
    }

    /// Opens an HTTP/2 CONNECT stream regardless of the configured transport and sends `early` on
    /// it; returns the endpoint that carries it. For HTTP upgrades, which read the answer from the
    /// stream itself (a hello without SNI goes through [`RelayClient::open`] with `Transport::H2`).
    pub async fn open_h2_via(
        &self,
        authority: &str,
        early: Bytes,
    ) -> Result<(SocketAddr, H2Io), ConnError> {
        self.pool.connect_stream(authority, early).await
    }

    /// [`RelayClient::open_h2_via`] without the endpoint.
    pub async fn open_h2(&self, authority: &str) -> Result<H2Io, ConnError> {
        self.open_h2_via(authority, Bytes::new())
            .await
            .map(|(_, stream)| stream)
    }

    /// Sends a forwarded HTTP request over the h2 pool; returns the endpoint that carried it.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<(SocketAddr, http::Response<Body>), ConnError> {
        self.pool.send(request).await
    }
}
