//! `http` listener: plain HTTP/1.1 in; each request forwarded to the relay over HTTP/2 + TLS 1.3 with
//! its method, path, headers and Host (as `:authority`) preserved, bodies streamed both ways.
//! `Upgrade` requests (WebSocket) travel through a CONNECT stream to `host:80` and are then spliced.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::Transport;
use crate::context::{ConnCtx, HttpFacts, Shared};
use crate::error::ConnError;
use crate::flow::{Mode, Role};
use crate::http_util::{
    addr_text, host_of, is_upgrade, local_response, origin_form, request_authority, status_for,
    strip_hop_by_hop,
};
use crate::io::{Moved, splice};
use crate::transport::{Body, RelayClient};

/// Serves one HTTP/1.1 client connection (keep-alive: many requests).
pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    relay: Arc<RelayClient>,
    shared: Arc<Shared>,
) {
    let conn = ConnCtx::new(listener.clone(), Role::Edge, Mode::Http, client);
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let ctx = ConnCtx::new(listener.clone(), Role::Edge, Mode::Http, client);
            // A combinator, not an `async` block around `handle`, which would keep the request
            // and its context twice in every request's future.
            handle(req, ctx, relay.clone(), shared.clone()).map(Ok::<_, Infallible>)
        })
    };
    crate::http_server::serve_http1(tcp, service, &shared, conn).await;
}

async fn handle(
    req: Request<Incoming>,
    mut ctx: ConnCtx,
    relay: Arc<RelayClient>,
    shared: Arc<Shared>,
) -> Response<Body> {
    let (relay, shared) = (&relay, &shared);
    // A request the relay carried names the endpoint that did; any other names the relay. Set
    // when the record is written, so a carried request does not copy the relay's name for nothing.
    let finish = |mut ctx: ConnCtx, status: StatusCode, outcome: &Result<(), ConnError>| {
        ctx.upstream
            .get_or_insert_with(|| relay.upstream.name.clone());
        ctx.status = Some(status.as_u16());
        ctx.finish(shared, Moved::default(), outcome);
    };
    ctx.http = Some(HttpFacts::of(&req, "http", "-"));
    let authority = request_authority(&req).map(str::to_owned);
    let Some(authority) = authority else {
        let error = ConnError::ClientNoHost;
        let response = local_response(StatusCode::BAD_REQUEST, &error);
        finish(ctx, response.status(), &Err(error));
        return response;
    };
    ctx.name = Some(host_of(&authority));
    let result = if is_upgrade(req.headers()) {
        // Boxed: its future (a splice's) is several times the size of a forwarded request's, and
        // every request's future would otherwise be that large, allocated and moved at that size.
        Box::pin(upgrade(req, &authority, &mut ctx, relay, shared)).await
    } else {
        forward(req, &authority, &mut ctx, relay).await
    };
    match result {
        Ok(response) => {
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                finish(ctx, response.status(), &Ok(()));
            }
            response
        }
        Err(e) => {
            let response = local_response(status_for(&e), &e);
            finish(ctx, response.status(), &Err(e));
            response
        }
    }
}

/// Forwards one request as HTTP/2 to the relay; the response streams back.
async fn forward(
    req: Request<Incoming>,
    authority: &str,
    ctx: &mut ConnCtx,
    relay: &RelayClient,
) -> Result<Response<Body>, ConnError> {
    let (mut parts, body) = req.into_parts();
    let path = origin_form(&parts.uri);
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ConnError::PolicyNoRoute)?;
    parts.version = Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    let request = Request::from_parts(parts, crate::transport::boxed(body));
    let (endpoint, response) = relay.send(request).await?;
    ctx.upstream = Some(addr_text(endpoint));
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(parts, body))
}

/// Largest upgrade response head read back from the tunnel.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Carries an `Upgrade` request through a CONNECT stream to `host:80`: the request head is sent
/// raw with the CONNECT, the response head read back; on 101 both sides are spliced.
async fn upgrade(
    mut req: Request<Incoming>,
    authority: &str,
    ctx: &mut ConnCtx,
    relay: &RelayClient,
    shared: &Arc<Shared>,
) -> Result<Response<Body>, ConnError> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let host = host_of(authority);
    // The request head rides behind the CONNECT (see `connect_stream`).
    let head = Bytes::from(request_head(&req));
    let opened = relay.open_h2_via(&format!("{host}:80"), head).await;
    let open = (shared.flows.metrics()).count_tunnel(Transport::H2, opened.as_ref().map(|_| ()));
    let (endpoint, mut tunnel) = opened?;
    ctx.upstream = Some(addr_text(endpoint));
    let mut buf = BytesMut::with_capacity(4096);
    let (response, head_len) = tokio::time::timeout(
        shared.timeouts.http_header_read,
        read_response_head(&mut tunnel, &mut buf),
    )
    .await
    .map_err(|_| ConnError::UpstreamBadResponse)??;
    let leftover = buf.split_off(head_len).freeze();
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let shared = shared.clone();
        let ctx = ctx.clone();
        shared.clone().spawn(async move {
            let _open = open;
            let (moved, result) = match on_upgrade.await {
                Ok(client) => {
                    splice(
                        TokioIo::new(client),
                        tunnel,
                        Bytes::new(),
                        leftover,
                        shared.timeouts.idle,
                    )
                    .await
                }
                Err(e) => (Moved::default(), Err(ConnError::RelayHttp(e))),
            };
            let mut ctx = ctx;
            ctx.status = Some(101);
            ctx.finish(&shared, moved, &result);
        });
    }
    Ok(response)
}

fn request_head(req: &Request<Incoming>) -> Vec<u8> {
    let path = origin_form(req.uri());
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

async fn read_response_head<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<(Response<Body>, usize), ConnError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut response =
                    Response::new(Empty::new().map_err(|never| match never {}).boxed());
                *response.status_mut() = parsed
                    .code
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or(ConnError::UpstreamBadResponse)?;
                for h in parsed.headers.iter() {
                    let name = header::HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| ConnError::UpstreamBadResponse)?;
                    let value = HeaderValue::from_bytes(h.value)
                        .map_err(|_| ConnError::UpstreamBadResponse)?;
                    response.headers_mut().append(name, value);
                }
                return Ok((response, len));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {}
            _ => return Err(ConnError::UpstreamBadResponse),
        }
        buf.reserve(4096);
        if io.read_buf(buf).await.map_err(ConnError::UpstreamIo)? == 0 {
            return Err(ConnError::UpstreamBadResponse);
        }
    }
}
