//! The admin API (HTTP/1.1, loopback by default): `/flows` (NDJSON, `?follow=1` streams), `/metrics`
//! (Prometheus text), `/ready`, `/config` (listeners, no secrets), `/certs` (minted-certificate
//! caches), and `POST /reload` (re-read and apply the config file; docs/config.md). Documented in
//! docs/flows.md and docs/metrics.md.
//!
//! A follower gets records through its own bounded queue fed from the flow bus; when it stops
//! reading, its feeder falls behind the bus and skips ahead (telling it `{"lost": N}`), so the data
//! path never waits for an admin client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use crate::flow::filter::FlowQuery;
use crate::flow::ring::FlowRing;
use crate::flow::{Flows, hubble};
use crate::metrics::CertGauges;
use crate::reload::Reloader;

/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Lines queued for one follower before its feeder stops taking records off the bus.
const FOLLOW_QUEUE: usize = 64;
/// A client must send its request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the admin API serves from.
pub struct AdminState {
    pub flows: Flows,
    pub ring: Arc<FlowRing>,
    /// `/config`: a summary of the listeners (no keys, no tokens).
    pub config_summary: Value,
    /// Reloads the config (`POST /reload`); also knows the interception listeners in force, for
    /// `/certs` and the certificate metrics.
    pub reloader: Arc<Reloader>,
    pub bearer_token: Option<Arc<str>>,
}

/// Serves the admin API on `socket` until `stop`.
pub async fn serve(socket: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    if let Ok(addr) = socket.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit,
            () = stop.cancelled() => return,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { return };
        let (tcp, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            serve_conn(tcp, peer, state, stop).await;
            drop(permit);
        });
    }
}

async fn serve_conn(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
) {
    let service_stop = stop.clone();
    let service = hyper::service::service_fn(move |req| {
        let (state, stop) = (state.clone(), service_stop.clone());
        async move {
            if req.method() == Method::POST && req.uri().path() == "/reload" {
                return Ok::<_, Infallible>(reload(&state, &req).await);
            }
            Ok::<_, Infallible>(handle(&state, req, stop))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => return,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "admin connection ended: {e}");
    }
}

/// `POST /reload`: 200 with `reloaded` once the new config is in force; 409 with every error, one
/// per line, when it is rejected (the config in force stays).
async fn reload(state: &AdminState, req: &Request<Incoming>) -> Response<AdminBody> {
    if let Some(resp) = unauthorized(state, req) {
        return resp;
    }
    match state.reloader.reload("admin").await {
        Ok(()) => text(StatusCode::OK, "reloaded\n"),
        Err(rejected) => {
            let mut body = format!(
                "config rejected ({} errors); the config in force stays\n",
                rejected.errors.len()
            );
            for error in &rejected.errors {
                body.push_str(error);
                body.push('\n');
            }
            text(StatusCode::CONFLICT, body)
        }
    }
}

/// The 401 response when a token is configured and `req` does not carry it.
fn unauthorized<B>(state: &AdminState, req: &Request<B>) -> Option<Response<AdminBody>> {
    let token = state.bearer_token.as_ref()?;
    if authorized(req, token) {
        return None;
    }
    let mut resp = text(StatusCode::UNAUTHORIZED, "bearer token required\n");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(resp)
}

fn handle(
    state: &AdminState,
    req: Request<Incoming>,
    stop: CancellationToken,
) -> Response<AdminBody> {
    if let Some(resp) = unauthorized(state, &req) {
        return resp;
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET (and POST /reload)\n",
        );
    }
    match req.uri().path() {
        "/ready" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let body = state.flows.metrics().render(&cert_gauges(state));
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/config" => json_response(&state.config_summary),
        "/certs" => json_response(&certs(state)),
        "/flows" => flows(state, req.uri().query().unwrap_or(""), stop),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /flows /metrics /ready /config /certs\n",
        ),
    }
}

/// Compares the bearer token without an early exit on the first differing byte.
fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cert_gauges(state: &AdminState) -> Vec<CertGauges> {
    state
        .reloader
        .intercepts()
        .into_iter()
        .map(|(name, s)| CertGauges {
            listener: name,
            mints: s.certs.mint_count(),
            stats: s.certs.cache_stats(),
            mint_seconds: s.certs.mint_seconds().clone(),
        })
        .collect()
}

fn certs(state: &AdminState) -> Value {
    let listeners: Vec<Value> = cert_gauges(state)
        .into_iter()
        .map(|c| {
            json!({
                "listener": c.listener,
                "minted": c.mints,
                "cache": {
                    "entries": c.stats.len,
                    "hits": c.stats.hits,
                    "misses": c.stats.misses,
                    "evictions": c.stats.evictions,
                    "expired": c.stats.expired,
                },
            })
        })
        .collect();
    json!({ "listeners": listeners })
}

fn flows(state: &AdminState, query: &str, stop: CancellationToken) -> Response<AdminBody> {
    let query = match FlowQuery::parse(query) {
        Ok(query) => query,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    // Subscribe before reading the ring, so nothing falls between the two (a record may show twice).
    let rx = query.follow.then(|| state.flows.subscribe());
    let recent = state.ring.snapshot(&query.filter, query.last);
    let Some(mut rx) = rx else {
        let body: String = recent.iter().map(|r| hubble::ndjson(r)).collect();
        return ndjson_response(Full::new(Bytes::from(body)).boxed_unsync());
    };
    let (tx, lines) = mpsc::channel::<Bytes>(FOLLOW_QUEUE);
    let metrics = state.flows.metrics().clone();
    let filter = query.filter;
    tokio::spawn(async move {
        for record in recent {
            if !send(&tx, hubble::ndjson(&record), &stop).await {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                () = stop.cancelled() => return,
                () = tx.closed() => return,
            };
            let line = match next {
                Ok(record) if filter.matches(&record) => hubble::ndjson(&record),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    metrics.count_lost(n);
                    format!("{}\n", json!({ "lost": n }))
                }
                Err(RecvError::Closed) => return,
            };
            if !send(&tx, line, &stop).await {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(lines, |mut lines| async move {
        let line = lines.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), lines))
    });
    ndjson_response(StreamBody::new(stream).boxed_unsync())
}

/// Queues `line` for the follower; `false` once it is gone or the gateway stops.
async fn send(tx: &mpsc::Sender<Bytes>, line: String, stop: &CancellationToken) -> bool {
    tokio::select! {
        sent = tx.send(Bytes::from(line)) => sent.is_ok(),
        () = stop.cancelled() => false,
    }
}

fn ndjson_response(body: AdminBody) -> Response<AdminBody> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

fn json_response(value: &Value) -> Response<AdminBody> {
    let mut resp = text(StatusCode::OK, format!("{value:#}\n"));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
