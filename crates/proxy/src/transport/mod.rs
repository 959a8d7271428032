//! Tunnel transports from an edge to a relay: multiplexed HTTP/2 CONNECT streams, or one outer TLS
//! connection per inner connection.

pub mod h2;
pub mod tls;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::{RelayUpstream, Timeouts, Transport};
use crate::error::ConnError;
use crate::upstream::Resolver;

/// Request and response bodies on the h2 path: streamed, never buffered whole.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// An open tunnel to a relay: the inner bytes go in and out of it untouched.
pub enum Tunnel {
    /// An HTTP/2 CONNECT stream.
    H2(TokioIo<Upgraded>),
    /// A dedicated outer TLS connection.
    Tls(Box<TlsStream<TcpStream>>),
}

/// An edge's handle on one relay: opens tunnels with the configured transport, and sends forwarded
/// HTTP requests over the h2 pool (plain HTTP always travels as HTTP/2 over TLS 1.3).
pub struct RelayClient {
    pub upstream: Arc<RelayUpstream>,
    resolver: Resolver,
    timeouts: Timeouts,
    pool: h2::Pool,
}

impl RelayClient {
    /// Creates the client; its h2 pool connects lazily on first use and reconnects with backoff.
    pub fn new(
        upstream: Arc<RelayUpstream>,
        resolver: Resolver,
        timeouts: Timeouts,
        shutdown: CancellationToken,
    ) -> Self {
        let pool = h2::Pool::new(upstream.clone(), resolver.clone(), timeouts, shutdown);
        Self {
            upstream,
            resolver,
            timeouts,
            pool,
        }
    }

    /// Opens a tunnel for `authority` (`name:port`) with the relay's configured transport.
    pub async fn open(&self, authority: &str) -> Result<Tunnel, ConnError> {
        match self.upstream.transport {
            Transport::H2 => self.pool.connect_stream(authority).await.map(Tunnel::H2),
            Transport::Tls => tls::connect(&self.upstream, &self.resolver, &self.timeouts)
                .await
                .map(|s| Tunnel::Tls(Box::new(s))),
        }
    }

    /// Opens an HTTP/2 CONNECT stream regardless of the configured transport (used for HTTP upgrades).
    pub async fn open_h2(&self, authority: &str) -> Result<TokioIo<Upgraded>, ConnError> {
        self.pool.connect_stream(authority).await
    }

    /// Sends a forwarded HTTP request over the h2 pool.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, ConnError> {
        self.pool.send(request).await
    }
}
