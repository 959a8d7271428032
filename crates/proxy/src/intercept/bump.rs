//! Bumping one connection: choose the leaf (minted for the name, or mimicking the verified origin),
//! complete the client's TLS with it, then serve HTTP/1.1 or HTTP/2 (by ALPN) and re-send each
//! request over TLS to the origin, HTTP/2 or HTTP/1.1 by what the origin negotiates. A client on
//! HTTP/2 works with an origin that only speaks HTTP/1.1, and the other way round.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tlsgate_wire::ClientHelloInfo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

use super::certs::FixedCert;
use super::explicit::refuse;
use super::origin::OriginConn;
use super::{ALERT_INTERNAL_ERROR, InterceptState, Target, new_ctx, tls_alert};
use crate::config::CertStrategy;
use crate::context::{ConnCtx, HttpFacts, Shared};
use crate::error::ConnError;
use crate::flow::Mode;
use crate::http_util::{is_upgrade, origin_form, request_authority, status_for, strip_hop_by_hop};
use crate::io::{Moved, Prefixed, splice};
use crate::tls::{ALPN_H2, ALPN_HTTP1};
use crate::transport::Body;
use crate::transport::h2::{H2_CONN_WINDOW, H2_MAX_FRAME, H2_STREAM_WINDOW};

/// Idle HTTP/1.1 origin connections kept per bumped client connection.
const MAX_IDLE_HTTP1: usize = 8;

pub(crate) async fn serve<S>(
    mut io: Prefixed<S>,
    hello: ClientHelloInfo,
    name: String,
    target: Target,
    mut ctx: ConnCtx,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let host = target.host.clone().unwrap_or_else(|| target.connect_host());
    ctx.upstream = Some(format!("{host}:{}", target.port));
    let accept_invalid = state.accepts_invalid(&name);
    let client_alpn: Vec<Vec<u8>> = hello
        .alpn
        .iter()
        .filter(|p| p.as_slice() == ALPN_H2 || p.as_slice() == ALPN_HTTP1)
        .cloned()
        .collect();

    let mut first_origin = None;
    let mut origin_problem = None;
    let leaf = match state.strategy() {
        CertStrategy::DownstreamFirst => state.certs.for_name(&name).await,
        CertStrategy::UpstreamFirst => {
            let offer = if client_alpn.is_empty() {
                vec![ALPN_HTTP1.to_vec()]
            } else {
                client_alpn.clone()
            };
            match state
                .origin
                .connect(&shared, &host, target.port, &name, offer, accept_invalid)
                .await
            {
                Ok(conn) => {
                    let leaf = state.certs.mimic(conn.leaf.as_ref()).await;
                    first_origin = Some(conn);
                    leaf
                }
                // The origin exists but its certificate is bad: tell the client in a 502 body.
                Err(ConnError::UpstreamCertInvalid(problem)) => {
                    origin_problem = Some(problem);
                    state.certs.for_name(&name).await
                }
                // No origin: never present a certificate for a host that is not there.
                Err(e) => {
                    let _ = io.write_all(&tls_alert(ALERT_INTERNAL_ERROR)).await;
                    return ctx.finish(&shared, Moved::default(), &Err(e));
                }
            }
        }
    };
    let leaf = match leaf {
        Ok(leaf) => leaf,
        Err(e) => {
            let _ = io.write_all(&tls_alert(ALERT_INTERNAL_ERROR)).await;
            return ctx.finish(&shared, Moved::default(), &Err(e));
        }
    };
    // Upstream-first mirrors the origin's ALPN; downstream-first offers both (we bridge versions).
    let alpn = match &first_origin {
        Some(OriginConn { alpn: Some(p), .. }) => vec![p.clone()],
        Some(OriginConn { alpn: None, .. }) => Vec::new(),
        None => vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
    };
    let mut config = (*state.server_base).clone();
    config.cert_resolver = Arc::new(FixedCert(leaf.certified));
    config.alpn_protocols = alpn;
    let accepted = tokio::time::timeout(
        shared.timeouts.handshake,
        TlsAcceptor::from(Arc::new(config)).accept(io),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::ClientHandshake(e)),
            );
        }
        Err(_) => {
            return ctx.finish(
                &shared,
                Moved::default(),
                &Err(ConnError::ClientHandshakeTimeout),
            );
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let service = BumpService {
        inner: Arc::new(Bumped {
            name,
            host,
            port: target.port,
            accept_invalid,
            listener: ctx.listener.clone(),
            client: ctx.client,
            origin_problem,
            pool: Mutex::new(Pool {
                first: first_origin,
                ..Pool::default()
            }),
            state,
            shared: shared.clone(),
        }),
    };
    if h2 {
        crate::http_server::serve_h2(tls, service, &shared).await;
    } else {
        crate::http_server::serve_http1(tls, service, &shared).await;
    }
}

/// One bumped client connection's view of its origin.
struct Bumped {
    /// The name the connection was allowed for (SNI, else CONNECT host, else IP).
    name: String,
    /// Where to connect (CONNECT host or original destination) and the port.
    host: String,
    port: u16,
    accept_invalid: bool,
    listener: Arc<str>,
    client: SocketAddr,
    /// Set when upstream-first found the origin's certificate invalid: every request gets a 502.
    origin_problem: Option<String>,
    pool: Mutex<Pool>,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Pool {
    /// The connection upstream-first opened before the client's handshake.
    first: Option<OriginConn>,
    h2: Option<http2::SendRequest<Body>>,
    http1: Vec<http1::SendRequest<Body>>,
    /// The origin answered ALPN without h2: offer only HTTP/1.1 from now on.
    http1_only: bool,
}

enum Sender {
    H2(http2::SendRequest<Body>),
    Http1(http1::SendRequest<Body>),
}

#[derive(Clone)]
struct BumpService {
    inner: Arc<Bumped>,
}

impl Bumped {
    fn ctx(&self) -> ConnCtx {
        let mut ctx = new_ctx(self.listener.clone(), self.client);
        ctx.mode = Mode::Bump;
        ctx.name = Some(self.name.clone());
        ctx.upstream = Some(format!("{}:{}", self.host, self.port));
        ctx
    }

    async fn connect_origin(&self, alpn: Vec<Vec<u8>>) -> Result<OriginConn, ConnError> {
        self.state
            .origin
            .connect(
                &self.shared,
                &self.host,
                self.port,
                &self.name,
                alpn,
                self.accept_invalid,
            )
            .await
    }

    /// A sender to the origin: a pooled one, or a new connection.
    async fn acquire(&self) -> Result<Sender, ConnError> {
        let mut pool = self.pool.lock().await;
        if let Some(conn) = pool.first.take() {
            return self.start(conn, &mut pool).await;
        }
        if let Some(h2) = pool.h2.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Sender::H2(h2.clone()));
        }
        pool.http1.retain(|s| !s.is_closed());
        if let Some(i) = pool.http1.iter().position(|s| s.is_ready()) {
            return Ok(Sender::Http1(pool.http1.swap_remove(i)));
        }
        let alpn = if pool.http1_only {
            vec![ALPN_HTTP1.to_vec()]
        } else {
            vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
        };
        let conn = self.connect_origin(alpn).await?;
        self.start(conn, &mut pool).await
    }

    /// Starts HTTP on a fresh origin connection, by its negotiated ALPN.
    async fn start(&self, conn: OriginConn, pool: &mut Pool) -> Result<Sender, ConnError> {
        let io = TokioIo::new(conn.tls);
        if conn.alpn.as_deref() == Some(ALPN_H2) {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONN_WINDOW)
                .max_frame_size(H2_MAX_FRAME)
                .handshake(io)
                .await
                .map_err(ConnError::UpstreamHttp)?;
            self.shared.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("origin h2 connection ended: {e}");
                }
            });
            pool.h2 = Some(sender.clone());
            return Ok(Sender::H2(sender));
        }
        pool.http1_only = true;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(ConnError::UpstreamHttp)?;
        self.shared.spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("origin http/1.1 connection ended: {e}");
            }
        });
        Ok(Sender::Http1(sender))
    }

    async fn release(&self, sender: http1::SendRequest<Body>) {
        let mut pool = self.pool.lock().await;
        if pool.http1.len() < MAX_IDLE_HTTP1 {
            pool.http1.push(sender);
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut ctx = self.ctx();
        ctx.http = Some(HttpFacts::of(&req, "https", &self.name));
        if let Some(problem) = &self.origin_problem {
            let e = ConnError::UpstreamCertInvalid(problem.clone());
            return refuse(ctx, &self.shared, StatusCode::BAD_GATEWAY, e);
        }
        let authority = request_authority(&req).unwrap_or_else(|| self.name.clone());
        let (mut parts, body) = req.into_parts();
        let target = origin_form(&parts.uri);
        let (method, headers) = (&parts.method, &mut parts.headers);
        let checked = self
            .state
            .check_request(&self.name, self.port, method, &target, &authority, headers);
        if let Err(refusal) = checked {
            return refuse(ctx, &self.shared, StatusCode::FORBIDDEN, refusal);
        }
        let req = Request::from_parts(parts, body);
        if is_upgrade(req.headers()) {
            return self.upgrade(req, ctx).await;
        }
        let sender = match self.acquire().await {
            Ok(sender) => sender,
            Err(e) => return refuse(ctx, &self.shared, status_for(&e), e),
        };
        let (mut parts, body) = req.into_parts();
        let path = origin_form(&parts.uri);
        strip_hop_by_hop(&mut parts.headers);
        let result = match sender {
            Sender::H2(mut sender) => {
                parts.uri = match Uri::builder()
                    .scheme("https")
                    .authority(authority.as_str())
                    .path_and_query(path)
                    .build()
                {
                    Ok(uri) => uri,
                    Err(_) => {
                        return refuse(
                            ctx,
                            &self.shared,
                            StatusCode::BAD_REQUEST,
                            ConnError::ClientNoHost,
                        );
                    }
                };
                parts.version = Version::HTTP_2;
                parts.headers.remove(header::HOST);
                sender
                    .send_request(Request::from_parts(parts, body.boxed()))
                    .await
            }
            Sender::Http1(mut sender) => {
                parts.uri = match Uri::try_from(path) {
                    Ok(uri) => uri,
                    Err(_) => {
                        return refuse(
                            ctx,
                            &self.shared,
                            StatusCode::BAD_REQUEST,
                            ConnError::ClientNoHost,
                        );
                    }
                };
                parts.version = Version::HTTP_11;
                if let Ok(value) = HeaderValue::from_str(&authority) {
                    parts.headers.insert(header::HOST, value);
                }
                let result = sender
                    .send_request(Request::from_parts(parts, body.boxed()))
                    .await;
                self.release(sender).await;
                result
            }
        };
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                ctx.status = Some(parts.status.as_u16());
                ctx.finish(&self.shared, Moved::default(), &Ok(()));
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                let e = ConnError::UpstreamHttp(e);
                refuse(ctx, &self.shared, status_for(&e), e)
            }
        }
    }

    /// WebSocket and other upgrades: a dedicated HTTP/1.1 origin connection, then both sides spliced.
    async fn upgrade(&self, mut req: Request<Incoming>, mut ctx: ConnCtx) -> Response<Body> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let authority = request_authority(&req).unwrap_or_else(|| self.name.clone());
        let conn = match self.connect_origin(vec![ALPN_HTTP1.to_vec()]).await {
            Ok(conn) => conn,
            Err(e) => return refuse(ctx, &self.shared, status_for(&e), e),
        };
        let (mut sender, connection) = match http1::handshake(TokioIo::new(conn.tls)).await {
            Ok(pair) => pair,
            Err(e) => {
                return refuse(
                    ctx,
                    &self.shared,
                    StatusCode::BAD_GATEWAY,
                    ConnError::UpstreamHttp(e),
                );
            }
        };
        self.shared.spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let (mut parts, body) = req.into_parts();
        let path = origin_form(&parts.uri);
        parts.uri = Uri::try_from(path).unwrap_or_default();
        parts.version = Version::HTTP_11;
        if let Ok(value) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, value);
        }
        let mut response = match sender
            .send_request(Request::from_parts(parts, body.boxed()))
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return refuse(
                    ctx,
                    &self.shared,
                    StatusCode::BAD_GATEWAY,
                    ConnError::UpstreamHttp(e),
                );
            }
        };
        ctx.status = Some(response.status().as_u16());
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let origin_upgrade = hyper::upgrade::on(&mut response);
            let shared = self.shared.clone();
            self.shared.spawn(async move {
                let (moved, result) = match tokio::try_join!(client_upgrade, origin_upgrade) {
                    Ok((client, origin)) => {
                        splice(
                            TokioIo::new(client),
                            TokioIo::new(origin),
                            Bytes::new(),
                            Bytes::new(),
                            shared.timeouts.idle,
                        )
                        .await
                    }
                    Err(e) => (Moved::default(), Err(ConnError::UpstreamHttp(e))),
                };
                ctx.finish(&shared, moved, &result);
            });
            let (parts, _) = response.into_parts();
            return Response::from_parts(
                parts,
                Empty::new().map_err(|never| match never {}).boxed(),
            );
        }
        ctx.finish(&self.shared, Moved::default(), &Ok(()));
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, body.boxed())
    }
}

impl hyper::service::Service<Request<Incoming>> for BumpService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.handle(req).await) })
    }
}
