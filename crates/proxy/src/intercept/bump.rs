//! Bumping one connection: choose the leaf (minted for the name, or mimicking the verified origin),
//! complete the client's TLS with it, then serve HTTP/1.1 or HTTP/2 (by ALPN) and re-send each
//! request over TLS to the origin, HTTP/2 or HTTP/1.1 by what the origin negotiates. A client on
//! HTTP/2 works with an origin that only speaks HTTP/1.1, and the other way round. Origin
//! connections come from the listener's shared pool ([`super::upstreams`]), keyed by address,
//! port and verified name, so client connections to one origin share them.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tlsgate_wire::ClientHelloInfo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::certs::FixedCert;
use super::explicit::refuse;
use super::origin::OriginConn;
use super::upstreams::{Checkout, Coalescing, Key, Sender};
use super::{InterceptState, Target, new_ctx};
use crate::config::{CertStrategy, InterceptAction};
use crate::context::{ConnCtx, HttpFacts, Shared};
use crate::error::ConnError;
use crate::error::{ALERT_INTERNAL_ERROR, tls_alert};
use crate::flow::{Mode, TlsFacts, UpstreamCert};
use crate::http_util::{
    host_of, host_port, is_upgrade, origin_form, request_authority, status_for, strip_hop_by_hop,
};
use crate::io::{Counted, Moved, Prefixed, splice};
use crate::tls::{ALPN_H2, ALPN_HTTP1};
use crate::transport::Body;

/// What names a bumped connection's requests for the policy and the origin's certificate.
pub(crate) enum Naming {
    /// The SNI, else the CONNECT host, else (no policy) the original IP: every request's Host
    /// must match it.
    Fixed(String),
    /// Transparent mode with a policy and no SNI: the leaf is minted for `dst`, and each request's
    /// Host names the request, provided it resolves to `dst` (see [`Bumped::admit_host`]).
    ByHost { dst: IpAddr },
}

pub(crate) async fn serve<S>(
    mut io: Prefixed<S>,
    hello: ClientHelloInfo,
    naming: Naming,
    target: Target,
    mut ctx: ConnCtx,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (name, by_host) = match naming {
        Naming::Fixed(name) => (name, None),
        Naming::ByHost { dst } => (dst.to_string(), Some(dst)),
    };
    let host = target.host.clone().unwrap_or_else(|| target.connect_host());
    ctx.upstream = Some(format!("{host}:{}", target.port));
    let accept_invalid = state.accepts_invalid(&name);
    // Without a name before the first request, the leaf is minted for the IP: upstream-first
    // would verify the origin for the IP, which origins' certificates rarely carry.
    let strategy = match by_host {
        Some(_) => CertStrategy::DownstreamFirst,
        None => state.strategy(),
    };
    let client_alpn: Vec<Vec<u8>> = hello
        .alpn
        .iter()
        .filter(|p| p.as_slice() == ALPN_H2 || p.as_slice() == ALPN_HTTP1)
        .cloned()
        .collect();

    let mut first_origin = None;
    let mut origin_problem = None;
    let mut origin_cert = None;
    let leaf = match strategy {
        CertStrategy::DownstreamFirst => state.certs.for_name(&name).await,
        CertStrategy::UpstreamFirst => {
            let offer = if client_alpn.is_empty() {
                vec![ALPN_HTTP1.to_vec()]
            } else {
                client_alpn.clone()
            };
            match state
                .origin
                .connect(
                    &shared,
                    &host,
                    target.port,
                    &name,
                    offer,
                    accept_invalid,
                    &mut origin_cert,
                )
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
                    ctx.set_upstream_cert(origin_cert);
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
    // The client's bytes on the wire (TLS records), for the connection's own flow record.
    let (io, counts) = Counted::new(io);
    let accepted = tokio::time::timeout(
        shared.timeouts.handshake,
        TlsAcceptor::from(Arc::new(config)).accept(io),
    )
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let e = ConnError::ClientHandshake(e);
            return ctx.finish(&shared, counts.moved(), &Err(e));
        }
        Err(_) => {
            let e = ConnError::ClientHandshakeTimeout;
            return ctx.finish(&shared, counts.moved(), &Err(e));
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    // Upstream-first offered the client's protocols (HTTP/1.1 when it named none).
    let first_offered_h2 = client_alpn.iter().any(|p| p == ALPN_H2);
    let key = origin_key(&host, target.port, &name, &state);
    let bumped = Arc::new(Bumped {
        key,
        first: std::sync::Mutex::new(first_origin),
        vetted: std::sync::Mutex::new(Some(target.vetted)),
        first_offered_h2,
        name,
        by_host,
        host,
        port: target.port,
        listener: ctx.listener.clone(),
        client: ctx.client,
        tls: ctx.tls.clone(),
        cert: std::sync::Mutex::new(origin_cert),
        origin_problem,
        state,
        shared: shared.clone(),
    });
    let service = BumpService {
        inner: bumped.clone(),
    };
    let served = if h2 {
        crate::http_server::serve_h2_conn(tls, service, &shared, ctx.clone()).await
    } else {
        crate::http_server::serve_http1_conn(tls, service, &shared, ctx.clone()).await
    };
    // The connection's own L3_L4 record, next to its requests' L7 ones: one record, which names
    // the client's abuse (h2 flood, oversized heads, ...) when that is what ended it.
    ctx.set_upstream_cert(bumped.cert());
    ctx.finish(&shared, counts.moved(), &served);
}

/// The origin pool's key for requests named `name` to `host:port`, on the calling worker.
fn origin_key(host: &str, port: u16, name: &str, state: &InterceptState) -> Key {
    Key {
        host: host.to_owned(),
        port,
        name: name.to_owned(),
        accepts_invalid: state.accepts_invalid(name),
        worker: crate::workers::current(),
    }
}

/// One bumped client connection's view of its origin.
struct Bumped {
    /// The name the connection was allowed for (SNI, else CONNECT host, else IP).
    name: String,
    /// Transparent mode with a policy and no SNI: the original destination, which each request's
    /// Host must resolve to; the Host then names the request instead of `name`.
    by_host: Option<IpAddr>,
    /// Where to connect (CONNECT host or original destination) and the port.
    host: String,
    port: u16,
    /// The origin pool's key for `name`, made once per connection.
    key: Key,
    listener: Arc<str>,
    client: SocketAddr,
    /// What the client offered in its ClientHello, copied to every request's record.
    tls: Option<TlsFacts>,
    /// The certificate of the origin connection that carried the last request (or refused last),
    /// for the connection's own record.
    cert: std::sync::Mutex<Option<UpstreamCert>>,
    /// Set when upstream-first found the origin's certificate invalid: every request gets a 502.
    origin_problem: Option<String>,
    /// The connection upstream-first opened before the client's handshake: the first request
    /// uses it, then it joins the listener's shared pool ([`InterceptState::upstreams`]).
    first: std::sync::Mutex<Option<OriginConn>>,
    /// Whether h2 was offered on `first` (only if the client offered it).
    first_offered_h2: bool,
    /// What `host` resolved to when the CONNECT was vetted: the first request's look for a
    /// coalescable origin connection uses it (later ones resolve afresh).
    vetted: std::sync::Mutex<Option<Vec<SocketAddr>>>,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
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
        ctx.upstream = Some(host_port(&self.host, self.port));
        ctx.tls = self.tls.clone();
        ctx
    }

    /// The certificate of the origin connection opened (or refused) last.
    fn cert(&self) -> Option<UpstreamCert> {
        match self.cert.lock() {
            Ok(cert) => cert.clone(),
            // A panic while holding the lock left a whole value (a clone assignment): use it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_cert(&self, seen: Option<UpstreamCert>) {
        if seen.is_some() {
            // A panic while holding the lock left a whole value: overwrite it.
            *self
                .cert
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
        }
    }

    /// What makes an origin connection fit for a request named `name` on this connection: the
    /// connection's own key when `name` is its name (every request but those named by Host).
    fn key(&self, name: &str) -> Cow<'_, Key> {
        if name == self.key.name {
            return Cow::Borrowed(&self.key);
        }
        Cow::Owned(origin_key(&self.host, self.port, name, &self.state))
    }

    /// A dedicated TLS connection to the origin, verified for (and with SNI) `name`.
    async fn connect_origin(
        &self,
        alpn: Vec<Vec<u8>>,
        name: &str,
    ) -> Result<OriginConn, ConnError> {
        let accept_invalid = self.state.accepts_invalid(name);
        let mut seen = None;
        let conn = self
            .state
            .origin
            .connect(
                &self.shared,
                &self.host,
                self.port,
                name,
                alpn,
                accept_invalid,
                &mut seen,
            )
            .await;
        self.set_cert(seen);
        conn
    }

    /// A sender to the origin verified for `key.name`: upstream-first's own connection first,
    /// else one from the listener's shared pool (or a new one). The carrying connection's
    /// certificate (or the refused one's) becomes the connection's record's.
    async fn acquire(&self, key: &Key) -> Result<Checkout, ConnError> {
        let first = self
            .first
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let upstreams = &self.state.upstreams;
        let checkout = match first {
            // Once per client connection: boxed, so its handshake's state does not make every
            // request's future larger (`BumpService::call`).
            Some(conn) if key.name == self.name => {
                Box::pin(upstreams.start(key, conn, self.first_offered_h2, &self.shared)).await
            }
            _ => {
                let mut seen = None;
                let vetted = self
                    .vetted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    // Only addresses of the very host the key connects to.
                    .filter(|addrs| !addrs.is_empty() && key.host == self.host);
                let coalescing = if self.state.config.coalesce_origin_connections {
                    Coalescing::On { resolved: vetted }
                } else {
                    Coalescing::Off
                };
                let checkout = upstreams
                    .acquire(key, &self.state.origin, &self.shared, coalescing, &mut seen)
                    .await;
                if checkout.is_err() {
                    self.set_cert(seen);
                }
                checkout
            }
        };
        if let Ok(checkout) = &checkout {
            self.set_cert(Some(checkout.cert.clone()));
        }
        checkout
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let mut ctx = self.ctx();
        ctx.http = Some(HttpFacts::of(&req, "https", &self.name));
        if let Some(problem) = &self.origin_problem {
            ctx.set_upstream_cert(self.cert());
            let e = ConnError::UpstreamCertInvalid(problem.clone());
            return refuse(ctx, &self.shared, StatusCode::BAD_GATEWAY, e);
        }
        let authority = request_authority(&req).map_or_else(|| self.name.clone(), str::to_owned);
        let name: Cow<'_, str> = match self.by_host {
            None => Cow::Borrowed(&self.name),
            Some(dst) => match Box::pin(self.admit_host(&authority, dst)).await {
                Ok(host) => Cow::Owned(host),
                Err(refusal) => return refuse(ctx, &self.shared, StatusCode::FORBIDDEN, refusal),
            },
        };
        let (mut parts, body) = req.into_parts();
        let path = origin_form(&parts.uri).to_owned();
        let (method, headers) = (&parts.method, &mut parts.headers);
        let checked = self
            .state
            .check_request(&name, self.port, method, &path, &authority, headers);
        if let Err(refusal) = checked.or_else(|refusal| self.state.audit(&mut ctx, refusal)) {
            return refuse(ctx, &self.shared, StatusCode::FORBIDDEN, refusal);
        }
        if is_upgrade(&parts.headers) {
            let req = Request::from_parts(parts, body);
            return Box::pin(self.upgrade(req, ctx, &name)).await;
        }
        let key = self.key(&name);
        strip_hop_by_hop(&mut parts.headers);
        let mut request = Request::from_parts(parts, crate::transport::boxed(body));
        let mut retried = false;
        let result = loop {
            let Checkout {
                sender,
                cert,
                id,
                coalesced,
            } = match self.acquire(&key).await {
                Ok(checkout) => checkout,
                Err(e) => {
                    ctx.set_upstream_cert(self.cert());
                    return refuse(ctx, &self.shared, status_for(&e), e);
                }
            };
            // The certificate of the origin connection carrying this very request.
            ctx.set_upstream_cert(Some(cert.clone()));
            // Another name's connection may answer 421: a request without a body is sent again.
            let replay = (coalesced && !retried && request.body().is_end_stream())
                .then(|| head_only(&request));
            let shaped = match &sender {
                Sender::H2(_) => to_h2(request, &authority, &path),
                Sender::Http1(_) => to_http1(request, &authority, &path),
            };
            let Some(shaped) = shaped else {
                let e = ConnError::ClientNoHost;
                return refuse(ctx, &self.shared, StatusCode::BAD_REQUEST, e);
            };
            let sent = match sender {
                Sender::H2(mut sender) => sender.try_send_request(shaped).await,
                Sender::Http1(mut sender) => {
                    let sent = sender.try_send_request(shaped).await;
                    self.state.upstreams.release(&key, sender, cert);
                    sent
                }
            };
            match sent {
                // The origin does not serve this name on the connection it shares with another:
                // from now on the name gets connections of its own.
                Ok(response)
                    if coalesced && response.status() == StatusCode::MISDIRECTED_REQUEST =>
                {
                    self.state.upstreams.uncoalesce(&key, id);
                    match replay {
                        Some(again) => {
                            tracing::debug!("coalesced origin connection answered 421; sent again");
                            (request, retried) = (again, true);
                        }
                        None => break Ok(response),
                    }
                }
                Ok(response) => break Ok(response),
                // Not written at all: the pooled connection was closing (the origin's keep-alive
                // close, or its GOAWAY, raced with the request). Once more, on another connection.
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !retried => {
                        tracing::debug!("origin connection closed before the request; sent again");
                        self.state.upstreams.forget(&key, id);
                        (request, retried) = (unsent, true);
                    }
                    _ => break Err(e.into_error()),
                },
            }
        };
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                ctx.status = Some(parts.status.as_u16());
                ctx.finish(&self.shared, Moved::default(), &Ok(()));
                Response::from_parts(parts, crate::transport::boxed(body))
            }
            Err(e) => {
                let e = ConnError::UpstreamHttp(e);
                refuse(ctx, &self.shared, status_for(&e), e)
            }
        }
    }

    /// Transparent mode without SNI: the request's Host (`authority`) names the request only if
    /// it resolves, within the connect timeout, to the original destination `dst` (else any Host
    /// could be claimed for any address), and if the policy does not deny the connection for it.
    /// The request rules are checked afterwards, with the Host as the connection's name.
    async fn admit_host(&self, authority: &str, dst: IpAddr) -> Result<String, ConnError> {
        let host = host_of(authority);
        if host.is_empty() {
            return Err(ConnError::PolicyVerdict {
                reason: tlsgate_policy::DenyReason::MissingHost,
                rule: None,
            });
        }
        let mismatch = |why| ConnError::PolicyHostAddressMismatch { dst, why };
        let resolving = self.shared.resolver.resolve(&host, self.port);
        let addrs = match tokio::time::timeout(self.shared.timeouts.connect, resolving).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(_)) => return Err(mismatch("the name does not resolve")),
            Err(_) => return Err(mismatch("resolving the name timed out")),
        };
        let dst = dst.to_canonical();
        if !addrs.iter().any(|addr| addr.ip().to_canonical() == dst) {
            return Err(mismatch("the name resolves to other addresses"));
        }
        match self.state.decide(&host, self.port)? {
            InterceptAction::Deny => Err(ConnError::PolicyDenied),
            InterceptAction::Bump | InterceptAction::Splice => Ok(host),
        }
    }

    /// WebSocket and other upgrades: a dedicated HTTP/1.1 origin connection, then both sides spliced.
    async fn upgrade(
        &self,
        mut req: Request<Incoming>,
        mut ctx: ConnCtx,
        name: &str,
    ) -> Response<Body> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let authority = request_authority(&req).map_or_else(|| self.name.clone(), str::to_owned);
        let conn = self.connect_origin(vec![ALPN_HTTP1.to_vec()], name).await;
        ctx.set_upstream_cert(self.cert());
        let conn = match conn {
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
            .send_request(Request::from_parts(parts, crate::transport::boxed(body)))
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
        Response::from_parts(parts, crate::transport::boxed(body))
    }
}

/// `request` in HTTP/2 form for the origin: absolute URI with `authority`, no Host header.
fn to_h2(request: Request<Body>, authority: &str, path: &str) -> Option<Request<Body>> {
    let (mut parts, body) = request.into_parts();
    parts.uri = Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()?;
    parts.version = Version::HTTP_2;
    parts.headers.remove(header::HOST);
    Some(Request::from_parts(parts, body))
}

/// `request` in HTTP/1.1 form for the origin: origin-form target, Host set to `authority`.
fn to_http1(request: Request<Body>, authority: &str, path: &str) -> Option<Request<Body>> {
    let (mut parts, body) = request.into_parts();
    parts.uri = Uri::try_from(path).ok()?;
    parts.version = Version::HTTP_11;
    if let Ok(value) = HeaderValue::from_str(authority) {
        parts.headers.insert(header::HOST, value);
    }
    Some(Request::from_parts(parts, body))
}

impl hyper::service::Service<Request<Incoming>> for BumpService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // A combinator, not an `async` block around `handle`, which would keep the request twice
        // in every request's future.
        Box::pin(self.inner.clone().handle(req).map(Ok))
    }
}

/// A copy of `request`'s head with an empty body, to send it again.
fn head_only(request: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(Empty::new().map_err(|never| match never {}).boxed());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}
