//! The relay's HTTP service, for HTTP/2 and HTTP/1.1 outer connections alike:
//! - `CONNECT name:443`: route by name, connect, answer 200, then peek the inner ClientHello and
//!   refuse the stream if its SNI differs from the authority; splice the exact bytes.
//! - `CONNECT name:80`: route to the name's HTTP upstream and splice (HTTP upgrades from edges).
//! - any other request: route by `:authority` / Host to the name's HTTP upstream and forward it as
//!   HTTP/1.1, bodies streamed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::Admission;
use super::h2::StreamUpgrade;
use crate::config::Routes;
use crate::context::{ConnCtx, HttpFacts, Shared};
use crate::detect;
use crate::error::ConnError;
use crate::flow::{Mode, Role, TlsFacts};
use crate::h2io::H2Io;
use crate::http_util::{host_of, host_port, local_response, request_authority, status_for};
use crate::io::{End, Moved, refuse_tls, splice_ends};
use crate::metrics::RelayH2Stream;
use crate::route::{Traffic, traffic_for_connect_port};
use crate::transport::{Body, boxed};

/// A CONNECT stream once answered: hyper's upgraded HTTP/1.1 connection, or an HTTP/2 stream.
type TunnelIo = Either<TokioIo<hyper::upgrade::Upgraded>, H2Io>;

/// Where an accepted CONNECT's stream will come from.
enum Upgrade {
    Http1(hyper::upgrade::OnUpgrade),
    H2(tokio::sync::oneshot::Receiver<H2Io>),
}

impl Upgrade {
    fn of(req: &mut Request<Body>) -> Self {
        match req
            .extensions_mut()
            .remove::<StreamUpgrade>()
            .and_then(|u| u.take())
        {
            Some(stream) => Self::H2(stream),
            None => Self::Http1(hyper::upgrade::on(req)),
        }
    }

    async fn stream(self) -> Result<TunnelIo, ConnError> {
        match self {
            Self::Http1(on) => on
                .await
                .map(|io| Either::Left(TokioIo::new(io)))
                .map_err(ConnError::RelayHttp),
            Self::H2(stream) => stream.await.map(Either::Right).map_err(|_| {
                ConnError::ClientIo(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the CONNECT stream ended before its answer was sent",
                ))
            }),
        }
    }
}

/// Per outer connection; cloned per request by hyper.
#[derive(Clone)]
pub struct RelayService {
    listener: Arc<str>,
    client: SocketAddr,
    routes: Arc<Routes>,
    shared: Arc<Shared>,
    admission: Admission,
}

impl RelayService {
    pub fn new(
        listener: Arc<str>,
        client: SocketAddr,
        routes: Arc<Routes>,
        shared: Arc<Shared>,
        admission: Admission,
    ) -> Self {
        Self {
            listener,
            client,
            routes,
            shared,
            admission,
        }
    }

    fn ctx(&self, mode: Mode) -> ConnCtx {
        ConnCtx::new(self.listener.clone(), Role::Relay, mode, self.client)
    }

    /// Ends a request with a local answer and its flow record.
    fn refuse(&self, mut ctx: ConnCtx, status: StatusCode, error: ConnError) -> Response<Body> {
        let response = local_response(status, &error);
        ctx.status = Some(status.as_u16());
        ctx.finish(&self.shared, Moved::default(), &Err(error));
        response
    }

    async fn connect_upstream(&self, host: &str, port: u16) -> Result<TcpStream, ConnError> {
        self.shared.connect(host, port).await
    }

    /// `stream` (HTTP/2 only) moves into the tunnel task: the stream stays active until it ends.
    async fn tunnel(
        self,
        mut req: Request<Body>,
        stream: &mut Option<RelayH2Stream>,
    ) -> Response<Body> {
        let mut ctx = self.ctx(Mode::Splice);
        let Some(authority) = req.uri().authority().cloned() else {
            return self.refuse(ctx, StatusCode::BAD_REQUEST, ConnError::ClientNoHost);
        };
        let name = host_of(authority.as_str());
        ctx.name = Some(name.clone());
        let Some(traffic) = authority.port_u16().and_then(traffic_for_connect_port) else {
            return self.refuse(ctx, StatusCode::FORBIDDEN, ConnError::PolicyPortNotRouted);
        };
        let Some((host, port)) = self.routes.target(&name, traffic) else {
            return self.refuse(ctx, StatusCode::FORBIDDEN, ConnError::PolicyNoRoute);
        };
        ctx.upstream = Some(host_port(&host, port));
        let permit = match self.admission.admit_tunnel() {
            Ok(permit) => permit,
            Err(e) => return self.refuse(ctx, StatusCode::TOO_MANY_REQUESTS, e),
        };
        let upstream = match self.connect_upstream(&host, port).await {
            Ok(stream) => stream,
            Err(e) => return self.refuse(ctx, status_for(&e), e),
        };
        let upgrade = Upgrade::of(&mut req);
        let shared = self.shared.clone();
        let held = stream.take().map(|mut s| {
            s.answered();
            s
        });
        self.shared.clone().spawn(async move {
            let _tunnel = permit;
            let _stream = held;
            let (moved, result) = match upgrade.stream().await {
                Ok(io) => carry(io, upstream, traffic, &name, &shared, &mut ctx.tls).await,
                Err(e) => (Moved::default(), Err(e)),
            };
            ctx.status = Some(200);
            ctx.finish(&shared, moved, &result);
        });
        Response::new(Empty::new().map_err(|never| match never {}).boxed())
    }

    async fn forward(self, req: Request<Body>) -> Response<Body> {
        let mut ctx = self.ctx(Mode::Http);
        ctx.http = Some(HttpFacts::of(&req, "http", "-"));
        let authority = request_authority(&req).map(str::to_owned);
        let Some(authority) = authority else {
            return self.refuse(ctx, StatusCode::BAD_REQUEST, ConnError::ClientNoHost);
        };
        let name = host_of(&authority);
        ctx.name = Some(name.clone());
        let Some((host, port)) = self.routes.target(&name, Traffic::Http) else {
            return self.refuse(ctx, StatusCode::FORBIDDEN, ConnError::PolicyNoRoute);
        };
        ctx.upstream = Some(host_port(&host, port));
        match crate::forward::pooled(&self.shared, req, &authority, &host, port).await {
            Ok(response) => {
                ctx.status = Some(response.status().as_u16());
                ctx.finish(&self.shared, Moved::default(), &Ok(()));
                response
            }
            Err(e) => self.refuse(ctx, status_for(&e), e),
        }
    }
}

/// After the CONNECT was accepted: for TLS, check the inner SNI against the authority, then splice.
async fn carry(
    mut io: TunnelIo,
    upstream: TcpStream,
    traffic: Traffic,
    authority_name: &str,
    shared: &Shared,
    tls: &mut Option<TlsFacts>,
) -> (Moved, Result<(), ConnError>) {
    let idle = shared.timeouts.idle;
    if traffic == Traffic::Http {
        return splice_ends(
            end(io),
            End::Stream(upstream),
            Bytes::new(),
            Bytes::new(),
            idle,
        )
        .await;
    }
    let mut prefix = BytesMut::with_capacity(2048);
    let read_only = |prefix: &BytesMut| Moved {
        from_client: prefix.len() as u64,
        to_client: 0,
    };
    let hello = detect::client_hello(&mut io, &mut prefix, shared, Role::Relay).await;
    if let Ok(hello) = &hello {
        *tls = Some(TlsFacts::offered(hello));
    }
    match hello {
        Err(e) => (read_only(&prefix), Err(e)),
        // No SNI: nothing contradicts the authority, which already chose the upstream.
        Ok(hello)
            if hello
                .sni
                .as_deref()
                .is_some_and(|sni| !same_name(sni, authority_name)) =>
        {
            let error = ConnError::PolicyInnerSniMismatch;
            let moved = refuse_tls(&mut io, &error, prefix.len() as u64).await;
            (moved, Err(error))
        }
        Ok(_) => {
            let (io, upstream) = (end(io), End::Stream(upstream));
            splice_ends(io, upstream, prefix.freeze(), Bytes::new(), idle).await
        }
    }
}

/// An HTTP/2 CONNECT stream is spliced as one, without copies (`io::End`).
fn end(io: TunnelIo) -> End<'static, TunnelIo> {
    match io {
        Either::Right(h2) => End::H2(h2),
        other => End::Stream(other),
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl hyper::service::Service<Request<Body>> for RelayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        let h2 = req.version() == http::Version::HTTP_2;
        let mut stream = h2.then(|| this.shared.flows.metrics().relay_h2_stream());
        // Dropped before it is answered (the edge reset the stream): counted as reset.
        let answered = |stream: &mut Option<RelayH2Stream>| {
            if let Some(stream) = stream.as_mut() {
                stream.answered();
            }
        };
        if req.method() == Method::CONNECT {
            return Box::pin(async move {
                let response = this.tunnel(req, &mut stream).await;
                answered(&mut stream);
                Ok(response)
            });
        }
        // A combinator, not an `async` block, which would keep the service and the request twice
        // in every forwarded request's future.
        Box::pin(this.forward(req).map(move |response| {
            answered(&mut stream);
            Ok(response)
        }))
    }
}

/// HTTP/1.1 outer connections (hyper's server): the same service, the body boxed.
impl hyper::service::Service<Request<Incoming>> for RelayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        hyper::service::Service::<Request<Body>>::call(self, req.map(boxed))
    }
}
