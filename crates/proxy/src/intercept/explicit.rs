//! Explicit mode: clients configured with the proxy. HTTP/1.1 `CONNECT host:port` is decided on the
//! authority before any TLS (deny → 403 at once); absolute-form requests (`GET http://host/`) are
//! forwarded as plain HTTP.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{InterceptState, Target, handle_stream, new_ctx};
use crate::config::InterceptAction;
use crate::context::{HttpFacts, Shared};
use crate::error::ConnError;
use crate::flow::Mode;
use crate::http_util::{host_of, local_response, request_authority, status_for};
use crate::io::Moved;
use crate::transport::Body;

pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) {
    let conn = new_ctx(listener.clone(), client);
    let service = ExplicitService {
        listener,
        client,
        state,
        shared: shared.clone(),
    };
    crate::http_server::serve_http1(tcp, service, &shared, conn).await;
}

#[derive(Clone)]
struct ExplicitService {
    listener: Arc<str>,
    client: SocketAddr,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
}

impl ExplicitService {
    async fn connect(self, req: Request<Incoming>) -> Response<Body> {
        let mut ctx = new_ctx(self.listener.clone(), self.client);
        let Some(authority) = req.uri().authority().cloned() else {
            return refuse(
                ctx,
                &self.shared,
                StatusCode::BAD_REQUEST,
                ConnError::ClientNoHost,
            );
        };
        let host = host_of(authority.as_str());
        let Some(port) = authority.port_u16() else {
            return refuse(
                ctx,
                &self.shared,
                StatusCode::BAD_REQUEST,
                ConnError::ClientNoHost,
            );
        };
        ctx.name = Some(host.clone());
        // Decided on the authority before any TLS: a denied destination gets 403 at once.
        // Audit mode passes a would-be-refused destination through untouched (spliced).
        let decided = self.state.decide(&host, port).or_else(|refusal| {
            self.state
                .audit(&mut ctx, refusal)
                .map(|()| InterceptAction::Splice)
        });
        let action = match decided {
            Ok(action) => action,
            Err(refusal) => {
                ctx.mode = Mode::Deny;
                return refuse(ctx, &self.shared, StatusCode::FORBIDDEN, refusal);
            }
        };
        // A forbidden destination (loopback, private, metadata...) is refused before the 200,
        // without any connection attempt.
        let vetted = if action == InterceptAction::Deny {
            Vec::new()
        } else {
            match self.shared.vet_destination(&host, port).await {
                Ok(addrs) => addrs,
                Err(refusal) => {
                    ctx.mode = Mode::Deny;
                    return refuse(ctx, &self.shared, status_for(&refusal), refusal);
                }
            }
        };
        let target = Target {
            host: Some(host),
            ip: None,
            port,
            decided: Some(action),
            vetted,
        };
        let on_upgrade = hyper::upgrade::on(req);
        let (state, shared) = (self.state.clone(), self.shared.clone());
        self.shared.spawn(async move {
            match on_upgrade.await {
                Ok(io) => handle_stream(TokioIo::new(io), target, ctx, state, shared).await,
                Err(e) => ctx.finish(&shared, Moved::default(), &Err(ConnError::RelayHttp(e))),
            }
        });
        Response::new(Empty::new().map_err(|never| match never {}).boxed())
    }
}

impl hyper::service::Service<Request<Incoming>> for ExplicitService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.method() == Method::CONNECT {
                return Ok(this.connect(req).await);
            }
            // Absolute-form: `GET http://host[:port]/path` — a plain-HTTP forward proxy request.
            let Some(authority) = req.uri().authority().cloned() else {
                let ctx = new_ctx(this.listener.clone(), this.client);
                return Ok(refuse(
                    ctx,
                    &this.shared,
                    StatusCode::BAD_REQUEST,
                    ConnError::ClientNoHost,
                ));
            };
            let target = Target {
                host: Some(host_of(authority.as_str())),
                ip: None,
                port: authority.port_u16().unwrap_or(80),
                decided: None,
                vetted: Vec::new(),
            };
            let plain = PlainHttp::new(target, this.listener, this.client, this.state, this.shared);
            Ok(plain.forward(req).await)
        })
    }
}

/// Plain HTTP to a known target (absolute-form requests, or HTTP inside CONNECT / redirected to
/// port 80): decided per request on its Host, forwarded as HTTP/1.1.
#[derive(Clone)]
pub(crate) struct PlainHttp {
    target: Target,
    listener: Arc<str>,
    client: SocketAddr,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
}

impl PlainHttp {
    pub(crate) fn new(
        target: Target,
        listener: Arc<str>,
        client: SocketAddr,
        state: Arc<InterceptState>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            target,
            listener,
            client,
            state,
            shared,
        }
    }

    async fn forward(self, req: Request<Incoming>) -> Response<Body> {
        let mut ctx = new_ctx(self.listener.clone(), self.client);
        ctx.mode = Mode::Http;
        ctx.http = Some(HttpFacts::of(&req, "http", &self.target.connect_host()));
        let authority = request_authority(&req).map(str::to_owned);
        let Some(authority) = authority else {
            return refuse(
                ctx,
                &self.shared,
                StatusCode::BAD_REQUEST,
                ConnError::ClientNoHost,
            );
        };
        let name = host_of(&authority);
        ctx.name = Some(name.clone());
        let (mut parts, body) = req.into_parts();
        let target = crate::http_util::origin_form(&parts.uri);
        let decided = self.state.decide(&name, self.target.port).and_then(|_| {
            let (method, headers) = (&parts.method, &mut parts.headers);
            self.state
                .check_request(&name, self.target.port, method, target, &authority, headers)
        });
        let decided = decided.or_else(|refusal| self.state.audit(&mut ctx, refusal));
        if let Err(refusal) = decided {
            ctx.mode = Mode::Deny;
            return refuse(ctx, &self.shared, StatusCode::FORBIDDEN, refusal);
        }
        let req = Request::from_parts(parts, body);
        // Connect where the client was going: the proxy request's host, or the original destination.
        let host = match (&self.target.ip, req.uri().authority()) {
            (Some(ip), _) => ip.to_string(),
            (None, _) => self.target.host.clone().unwrap_or(name),
        };
        ctx.upstream = Some(format!("{host}:{}", self.target.port));
        let result =
            crate::forward::pooled(&self.shared, req, &authority, &host, self.target.port).await;
        match result {
            Ok(response) => {
                ctx.status = Some(response.status().as_u16());
                ctx.finish(&self.shared, Moved::default(), &Ok(()));
                response
            }
            Err(e) => refuse(ctx, &self.shared, status_for(&e), e),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for PlainHttp {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

/// A local answer with its flow record.
pub(crate) fn refuse(
    mut ctx: crate::context::ConnCtx,
    shared: &Shared,
    status: StatusCode,
    error: ConnError,
) -> Response<Body> {
    let response = local_response(status, &error);
    ctx.status = Some(status.as_u16());
    ctx.finish(shared, Moved::default(), &Err(error));
    response
}
