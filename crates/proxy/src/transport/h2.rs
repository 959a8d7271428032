//! The `h2` transport: a small pool of long-lived TLS 1.3 connections to the relay (ALPN `h2`), each
//! carrying many HTTP/2 CONNECT streams. A background task per slot keeps its connection up and
//! reconnects with backoff; new tunnels wait up to `relay_wait` for a connection instead of failing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Body, tls};
use crate::config::{RelayUpstream, Timeouts};
use crate::error::ConnError;
use crate::upstream::Resolver;

/// Per-stream receive window: large enough that one tunnel can fill a fast link (the 64 KiB protocol
/// default caps a stream at 64 KiB per round trip).
pub const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Connection receive window, shared by all streams of a connection.
pub const H2_CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame we accept: fewer frames per megabyte than the 16 KiB default.
pub const H2_MAX_FRAME: u32 = 64 * 1024;
/// Ping interval that detects a relay that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The pool of h2 connections to one relay.
pub struct Pool {
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
}

struct Slot {
    relay: Arc<RelayUpstream>,
    resolver: Resolver,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    started: Once,
    state: watch::Sender<Option<SendRequest<Body>>>,
    last_error: Mutex<String>,
}

impl Pool {
    pub fn new(
        relay: Arc<RelayUpstream>,
        resolver: Resolver,
        timeouts: Timeouts,
        shutdown: CancellationToken,
    ) -> Self {
        let slots = (0..relay.pool_size.max(1))
            .map(|_| {
                Arc::new(Slot {
                    relay: relay.clone(),
                    resolver: resolver.clone(),
                    timeouts,
                    shutdown: shutdown.clone(),
                    started: Once::new(),
                    state: watch::Sender::new(None),
                    last_error: Mutex::new("not connected yet".into()),
                })
            })
            .collect();
        Self {
            slots,
            next: AtomicUsize::new(0),
        }
    }

    /// Opens a CONNECT stream for `authority` and returns it once the relay answered 200.
    pub async fn connect_stream(&self, authority: &str) -> Result<TokioIo<Upgraded>, ConnError> {
        let mut sender = self.ready_sender().await?;
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|_| ConnError::RelayRefused(StatusCode::BAD_REQUEST.as_u16()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ConnError::RelayHttp)?;
        if response.status() != StatusCode::OK {
            return Err(ConnError::RelayRefused(response.status().as_u16()));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(ConnError::RelayHttp)?;
        Ok(TokioIo::new(upgraded))
    }

    /// Sends a forwarded request on a pooled connection.
    pub async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, ConnError> {
        let mut sender = self.ready_sender().await?;
        sender
            .send_request(request)
            .await
            .map_err(ConnError::RelayHttp)
    }

    /// A connected sender: round-robin over slots, preferring one that is up; otherwise waits up to
    /// `relay_wait` for the first slot to (re)connect.
    async fn ready_sender(&self) -> Result<SendRequest<Body>, ConnError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        for i in 0..n {
            let slot = &self.slots[(start + i) % n];
            slot.ensure_started();
            if let Some(sender) = slot.current() {
                return Ok(sender);
            }
        }
        let slot = &self.slots[start % n];
        let mut rx = slot.state.subscribe();
        let wait = async {
            loop {
                if let Some(sender) = rx.borrow_and_update().clone()
                    && !sender.is_closed()
                {
                    return Ok(sender);
                }
                if rx.changed().await.is_err() {
                    return Err(());
                }
            }
        };
        match tokio::time::timeout(slot.timeouts.relay_wait, wait).await {
            Ok(Ok(sender)) => Ok(sender),
            _ => Err(ConnError::RelayUnavailable(slot.last_error())),
        }
    }
}

impl Slot {
    fn ensure_started(self: &Arc<Self>) {
        self.started.call_once(|| {
            let slot = self.clone();
            tokio::spawn(async move { slot.maintain().await });
        });
    }

    fn current(&self) -> Option<SendRequest<Body>> {
        self.state
            .borrow()
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned()
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "unknown".into())
    }

    fn set_error(&self, message: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = message;
        }
    }

    /// Keeps one connection up until shutdown; reconnects with exponential backoff.
    async fn maintain(&self) {
        let mut backoff = BACKOFF_MIN;
        while !self.shutdown.is_cancelled() {
            match connect(&self.relay, &self.resolver, &self.timeouts).await {
                Ok((sender, conn)) => {
                    backoff = BACKOFF_MIN;
                    tracing::debug!(relay = %self.relay.name, "h2 connection to relay up");
                    self.state.send_replace(Some(sender));
                    tokio::pin!(conn);
                    let ended = tokio::select! {
                        r = conn.as_mut() => Some(r),
                        () = self.shutdown.cancelled() => None,
                    };
                    self.state.send_replace(None);
                    match ended {
                        Some(Ok(())) => self.set_error("relay closed the connection".into()),
                        Some(Err(e)) => {
                            tracing::info!(relay = %self.relay.name, "h2 connection to relay ended: {e}");
                            self.set_error(format!("connection ended: {e}"));
                        }
                        // Shutting down: no new streams; in-flight ones hold their own handles and
                        // the connection closes once they finish. Never reconnect.
                        None => {
                            let _ = conn.await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(relay = %self.relay.name, retry_in = ?backoff, "connecting to relay: {e}");
                    self.set_error(e.to_string());
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

type Connection = hyper::client::conn::http2::Connection<
    TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Body,
    TokioExecutor,
>;

/// One TLS 1.3 + HTTP/2 connection to the relay.
async fn connect(
    relay: &RelayUpstream,
    resolver: &Resolver,
    timeouts: &Timeouts,
) -> Result<(SendRequest<Body>, Connection), ConnError> {
    let stream = tls::handshake(relay, resolver, timeouts, relay.tls_h2.clone()).await?;
    if stream.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN_H2) {
        return Err(ConnError::RelayUnavailable(
            "the relay did not negotiate ALPN h2".into(),
        ));
    }
    hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnError::RelayHttp)
}
