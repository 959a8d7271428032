//! The `h2` transport: long-lived TLS 1.3 connections to the relay (ALPN `h2`), `pool_size` per
//! endpoint, each carrying many HTTP/2 CONNECT streams. A background task per slot keeps its
//! connection up, reconnecting when its endpoint's ejection backoff allows; new tunnels take a
//! connection of the next healthy endpoint in turn, fail over to another endpoint when a stream
//! cannot be opened, and wait up to `relay_wait` when no connection is up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::endpoints::{EjectReason, Endpoints, HEDGE_AFTER};
use super::{Body, boxed, tls};
use crate::config::{RelayUpstream, Timeouts};
use crate::error::ConnError;
use crate::h2io::{H2Io, RecvBody, keep_alive, send_body, send_data};

/// Per-stream receive window: large enough that one tunnel can fill a fast link (the 64 KiB protocol
/// default caps a stream at 64 KiB per round trip).
pub const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Connection receive window of a connection that serves one client (the interceptor's HTTP/2
/// server for a bumped client connection): its streams share it.
pub const H2_CONN_WINDOW: u32 = 16 * 1024 * 1024;
/// Streams of a shared connection that may each hold a full stream window unread before the others
/// feel it: above the relay's default stream limit (100) and nginx's (128).
pub const H2_SHARED_STREAMS: u32 = 128;
/// Connection receive window of a connection that carries many clients' streams (the edge's
/// connections to the relay, the interceptor's shared origin connections); see
/// [`shared_conn_window`].
pub const H2_SHARED_CONN_WINDOW: u32 = shared_conn_window(H2_SHARED_STREAMS);

/// The connection receive window that leaves each of `streams` streams its full window however
/// many of the others stopped being read: a stream whose reader stalls (a client that stops reading
/// a download, an origin that stops reading an upload) holds at most its own window of the
/// connection's, so with `streams` × [`H2_STREAM_WINDOW`] no stalled stream takes window another
/// needs. It reserves no memory: what a connection buffers is bounded by its open streams' windows,
/// as it would be on separate connections. At least [`H2_CONN_WINDOW`], at most the protocol's
/// largest window (2^31 − 1, RFC 9113 §6.9.1).
pub const fn shared_conn_window(streams: u32) -> u32 {
    const MAX_WINDOW: u64 = (1 << 31) - 1;
    let window = H2_STREAM_WINDOW as u64 * streams as u64;
    if window < H2_CONN_WINDOW as u64 {
        H2_CONN_WINDOW
    } else if window > MAX_WINDOW {
        MAX_WINDOW as u32
    } else {
        window as u32
    }
}

/// Largest DATA frame we accept: fewer frames per megabyte than the 16 KiB default.
pub const H2_MAX_FRAME: u32 = 64 * 1024;
/// Ping interval that detects a relay that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes h2 may hold queued per stream beyond its window (hyper's default): a bound on what one
/// stream's writer can park in memory.
pub const H2_MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Least time between two connection attempts of one slot, whatever wakes it (a relay closing
/// connections gracefully, tunnels waiting while every endpoint is ejected).
const MIN_RECONNECT_SPACING: Duration = Duration::from_millis(100);

/// The pool of h2 connections to one relay's endpoints.
pub struct Pool {
    relay: Arc<RelayUpstream>,
    endpoints: Arc<Endpoints>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    slots: Mutex<Vec<Arc<Slot>>>,
    /// The slots as of one generation of the endpoint set, for [`Pool::sender_fast`]: what a
    /// request or tunnel reads to pick a connection, without the locks of `slots` and of the
    /// endpoints. Replaced by [`Pool::sync_slots`].
    view: ArcSwapOption<View>,
    next: AtomicUsize,
    /// Bumped whenever a slot's connection comes up or goes down.
    changes: Arc<watch::Sender<u64>>,
}

/// The slots, and the endpoint addresses they were made for, as [`Pool::sync_slots`] last left them.
struct View {
    /// [`Endpoints::generation`] read before `addrs`.
    generation: u64,
    addrs: Vec<SocketAddr>,
    slots: Vec<Arc<Slot>>,
    /// The workers that have all their slots (`pool_size` for each address): for them,
    /// `sync_slots` would change nothing while the generation is the same.
    complete: Vec<Option<usize>>,
}

impl View {
    fn new(generation: u64, addrs: Vec<SocketAddr>, slots: &[Arc<Slot>], pool_size: usize) -> Self {
        let mut workers: Vec<Option<usize>> = slots.iter().map(|s| s.worker).collect();
        workers.sort_unstable();
        workers.dedup();
        let complete = workers
            .into_iter()
            .filter(|&worker| {
                addrs.iter().all(|&addr| {
                    let own = slots
                        .iter()
                        .filter(|s| s.addr == addr && s.worker == worker);
                    own.count() >= pool_size
                })
            })
            .collect();
        Self {
            generation,
            addrs,
            slots: slots.to_vec(),
            complete,
        }
    }
}

struct Slot {
    addr: SocketAddr,
    /// The worker thread whose tunnels use this slot first, and whose runtime runs its connection
    /// ([`crate::workers::current`]); `None` outside worker threads.
    worker: Option<usize>,
    relay: Arc<RelayUpstream>,
    endpoints: Arc<Endpoints>,
    timeouts: Timeouts,
    /// Cancelled at shutdown or when the endpoint leaves the relay's address set.
    stop: CancellationToken,
    /// Wakes a slot waiting out its endpoint's backoff (used when every endpoint is ejected).
    kick: Notify,
    state: watch::Sender<Option<SendRequest<Bytes>>>,
    changes: Arc<watch::Sender<u64>>,
    last_error: Mutex<String>,
}

impl Pool {
    pub fn new(
        relay: Arc<RelayUpstream>,
        endpoints: Arc<Endpoints>,
        timeouts: Timeouts,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            relay,
            endpoints,
            timeouts,
            shutdown,
            slots: Mutex::new(Vec::new()),
            view: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        // Updates are single pushes/retains: a poisoned list is still consistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a CONNECT stream for `authority` and returns it, with the endpoint that carries it,
    /// once the relay answered 200. `early` (the client's first bytes, e.g. its ClientHello) goes
    /// out right behind the CONNECT, before the answer: the relay holds it in the stream's window
    /// while it connects upstream, so the client's first flight reaches the origin one edge ↔
    /// relay round trip sooner, and a refused stream carries nothing further. A stream that cannot
    /// be opened on one endpoint (its connection died) is retried on the next one, `early` with
    /// it: no byte of it has reached an upstream then, so a retry is always safe. When an endpoint
    /// has not answered after [`HEDGE_AFTER`], the next endpoint with a connection up is asked
    /// alongside; the first answer wins, the other stream is reset (its relay drops the upstream
    /// connection it made), and an endpoint outpaced that way is ejected.
    pub async fn connect_stream(
        &self,
        authority: &str,
        early: Bytes,
    ) -> Result<(SocketAddr, H2Io), ConnError> {
        let mut tried = Vec::new();
        let mut pending: Vec<SocketAddr> = Vec::new();
        let mut running = FuturesUnordered::new();
        let (addr, sender) = self.sender(&tried).await?;
        tried.push(addr);
        pending.push(addr);
        running.push(self.ask(addr, sender, authority, early.clone()));
        let hedge = tokio::time::sleep(HEDGE_AFTER);
        tokio::pin!(hedge);
        loop {
            tokio::select! {
                Some((addr, asked)) = running.next() => {
                    pending.retain(|a| *a != addr);
                    match asked {
                        Ok((status, stream)) => {
                            self.endpoints.succeeded(addr);
                            tls::outpaced(&self.endpoints, &pending, addr);
                            if status != StatusCode::OK {
                                return Err(ConnError::RelayRefused(status.as_u16()));
                            }
                            return Ok((addr, stream));
                        }
                        Err(error) => {
                            self.endpoints.failed(addr, EjectReason::H2ConnectionError, &error);
                            if !running.is_empty() {
                                continue;
                            }
                            self.last_chance(&tried, error)?;
                            let (next, sender) = self.sender(&tried).await?;
                            tried.push(next);
                            pending.push(next);
                            running.push(self.ask(next, sender, authority, early.clone()));
                            hedge.as_mut().reset(Instant::now() + HEDGE_AFTER);
                        }
                    }
                }
                () = hedge.as_mut() => {
                    if let Some((next, sender)) = self.sender_now(&tried) {
                        tried.push(next);
                        pending.push(next);
                        running.push(self.ask(next, sender, authority, early.clone()));
                    }
                    hedge.as_mut().reset(Instant::now() + HEDGE_AFTER);
                }
            }
        }
    }

    /// Sends `CONNECT authority` on `sender`, then `early` on the stream, and waits for the answer
    /// head. The relay answers once it has connected upstream (within its connect timeout); no
    /// answer after that plus a handshake's time means the link is gone.
    async fn ask(
        &self,
        addr: SocketAddr,
        sender: SendRequest<Bytes>,
        authority: &str,
        early: Bytes,
    ) -> (SocketAddr, Result<(StatusCode, H2Io), ConnError>) {
        let Ok(request) = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
        else {
            return (
                addr,
                Err(ConnError::RelayRefused(StatusCode::BAD_REQUEST.as_u16())),
            );
        };
        let bound = self.timeouts.connect + self.timeouts.handshake;
        let asking = async {
            let mut sender = sender.ready().await.map_err(ConnError::RelayH2)?;
            let (response, mut send) = sender
                .send_request(request, false)
                .map_err(ConnError::RelayH2)?;
            // The relay grants each new stream a window far above a first flight, so this does
            // not wait for the answer.
            let sent = if early.is_empty() {
                Ok(())
            } else {
                send_data(&mut send, early, false).await
            };
            // A refusal is told by the answer; a stream that lost its early bytes is no tunnel.
            let response = response.await.map_err(ConnError::RelayH2)?;
            let status = response.status();
            if let Err(e) = sent
                && status == StatusCode::OK
            {
                return Err(ConnError::RelayUnavailable(format!(
                    "sending the first bytes on a CONNECT stream to {addr}: {e}"
                )));
            }
            Ok((status, H2Io::new(send, response.into_body())))
        };
        let answer = match tokio::time::timeout(bound, asking).await {
            Ok(answer) => answer,
            Err(_) => Err(ConnError::RelayUnavailable(format!(
                "no answer to CONNECT from {addr} within {bound:?}"
            ))),
        };
        (addr, answer)
    }

    /// Sends a forwarded request on a pooled connection; its body streams to the relay alongside.
    /// A request that never left (its connection had died) is retried on the next endpoint; one
    /// that was sent is not (its body may be half consumed).
    pub async fn send(
        &self,
        request: Request<Body>,
    ) -> Result<(SocketAddr, Response<Body>), ConnError> {
        let mut tried = Vec::new();
        let (parts, body) = request.into_parts();
        let end = body.is_end_stream();
        loop {
            let (addr, sender) = self.sender(&tried).await?;
            let head = head_of(&parts);
            let sent = match sender.ready().await {
                Ok(mut sender) => sender.send_request(head, end),
                Err(e) => Err(e),
            };
            let (response, stream) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    let error = ConnError::RelayH2(e);
                    self.endpoints
                        .failed(addr, EjectReason::H2ConnectionError, &error);
                    tried.push(addr);
                    self.last_chance(&tried, error)?;
                    continue;
                }
            };
            if !end {
                tokio::spawn(async move {
                    if let Err(e) = send_body(body, stream).await {
                        tracing::debug!("forwarded request body to the relay ended early: {e}");
                    }
                });
            }
            return match response.await {
                Ok(response) => {
                    self.endpoints.succeeded(addr);
                    let (parts, recv) = response.into_parts();
                    Ok((
                        addr,
                        Response::from_parts(parts, boxed(RecvBody::new(recv))),
                    ))
                }
                Err(e) => {
                    let error = ConnError::RelayH2(e);
                    self.endpoints
                        .failed(addr, EjectReason::H2ConnectionError, &error);
                    Err(error)
                }
            };
        }
    }

    /// `Err(error)` once every endpoint has been tried in this attempt.
    fn last_chance(&self, tried: &[SocketAddr], error: ConnError) -> Result<(), ConnError> {
        if self.endpoints.addrs().iter().all(|a| tried.contains(a)) {
            return Err(error);
        }
        Ok(())
    }

    /// A connected sender of the first endpoint in turn (see [`Endpoints::candidates`]) that has a
    /// connection up, skipping `tried`; waits up to `relay_wait` for one to come up. Taken from
    /// the view while it is current (no lock, no allocation: this runs for every forwarded
    /// request), else by [`Pool::ready_sender`], boxed, which keeps the callers' futures small.
    async fn sender(
        &self,
        tried: &[SocketAddr],
    ) -> Result<(SocketAddr, SendRequest<Bytes>), ConnError> {
        if tried.is_empty()
            && let Some(found) = self.sender_fast()
        {
            return Ok(found);
        }
        Box::pin(self.ready_sender(tried)).await
    }

    /// What the first round of [`Pool::ready_sender`] would find, when it can be told without
    /// the locks: every endpoint healthy (so the candidates are the addresses from the next in
    /// turn) and the calling worker's slots all made for the current generation of the endpoint
    /// set (so `sync_slots` would change nothing). `None` sends the caller the long way.
    fn sender_fast(&self) -> Option<(SocketAddr, SendRequest<Bytes>)> {
        if !self.endpoints.all_healthy() {
            return None;
        }
        let view = self.view.load();
        let view = view.as_deref()?;
        let worker = crate::workers::current();
        if view.generation != self.endpoints.generation()
            || view.addrs.is_empty()
            || !view.complete.contains(&worker)
        {
            return None;
        }
        let len = view.addrs.len();
        let start = self.endpoints.next_in_turn(len);
        (0..len)
            .map(|i| view.addrs[(start + i) % len])
            .find_map(|addr| self.pick(&view.slots, addr, worker).map(|s| (addr, s)))
    }

    async fn ready_sender(
        &self,
        tried: &[SocketAddr],
    ) -> Result<(SocketAddr, SendRequest<Bytes>), ConnError> {
        self.endpoints
            .ensure_resolved()
            .await
            .map_err(|e| ConnError::RelayUnavailable(format!("resolving the relay: {e}")))?;
        let deadline = Instant::now() + self.timeouts.relay_wait;
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            self.sync_slots();
            let candidates: Vec<SocketAddr> = self
                .endpoints
                .candidates()
                .into_iter()
                .filter(|a| !tried.contains(a))
                .collect();
            for addr in &candidates {
                if let Some(sender) = self.sender_for(*addr) {
                    return Ok((*addr, sender));
                }
            }
            if !self.endpoints.any_usable() {
                // Every endpoint is ejected: try them now rather than make this tunnel fail.
                for slot in self.lock().iter() {
                    slot.kick.notify_one();
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(ConnError::RelayUnavailable(self.last_error()));
            }
        }
    }

    /// The first endpoint in turn, not in `tried`, with a connection up now.
    fn sender_now(&self, tried: &[SocketAddr]) -> Option<(SocketAddr, SendRequest<Bytes>)> {
        self.endpoints
            .candidates()
            .into_iter()
            .filter(|a| !tried.contains(a))
            .find_map(|addr| self.sender_for(addr).map(|s| (addr, s)))
    }

    /// A live sender of one of `addr`'s slots, in turn: the calling worker's own slots first (their
    /// connections run on its thread), another worker's while none of its own is up.
    fn sender_for(&self, addr: SocketAddr) -> Option<SendRequest<Bytes>> {
        let worker = crate::workers::current();
        self.pick(&self.lock(), addr, worker)
    }

    /// A live sender of one of `addr`'s `slots`, in turn: `worker`'s own first, then another's.
    fn pick(
        &self,
        slots: &[Arc<Slot>],
        addr: SocketAddr,
        worker: Option<usize>,
    ) -> Option<SendRequest<Bytes>> {
        let pick = |own: bool| {
            let of = || {
                slots
                    .iter()
                    .filter(move |s| s.addr == addr && (s.worker == worker) == own)
            };
            let len = of().count();
            // One slot (`pool_size` 1, the default) needs no turn: no counter shared by the
            // workers is touched.
            let start = match len {
                0 => return None,
                1 => 0,
                _ => self.next.fetch_add(1, Ordering::Relaxed),
            };
            (0..len).find_map(|i| of().nth((start + i) % len).and_then(|s| s.current()))
        };
        pick(true).or_else(|| pick(false))
    }

    /// Gives every endpoint `pool_size` slots for the calling worker (started on its runtime) and
    /// stops the slots of endpoints that are gone. On worker threads each worker has its own
    /// connections to the relay, like its own origin connections: a tunnel's frames never cross
    /// threads.
    fn sync_slots(&self) {
        let worker = crate::workers::current();
        let generation = self.endpoints.generation();
        let addrs = self.endpoints.addrs();
        let mut slots = self.lock();
        slots.retain(|slot| {
            let keep = addrs.contains(&slot.addr);
            if !keep {
                tracing::info!(relay = %self.relay.name, endpoint = %slot.addr, "relay endpoint gone: closing its connections once idle");
                slot.stop.cancel();
            }
            keep
        });
        for &addr in &addrs {
            let have = slots
                .iter()
                .filter(|s| s.addr == addr && s.worker == worker)
                .count();
            for _ in have..self.relay.pool_size.max(1) {
                let slot = Arc::new(Slot {
                    addr,
                    worker,
                    relay: self.relay.clone(),
                    endpoints: self.endpoints.clone(),
                    timeouts: self.timeouts,
                    stop: self.shutdown.child_token(),
                    kick: Notify::new(),
                    state: watch::Sender::new(None),
                    changes: self.changes.clone(),
                    last_error: Mutex::new("not connected yet".into()),
                });
                tokio::spawn(slot.clone().maintain());
                slots.push(slot);
            }
        }
        let pool_size = self.relay.pool_size.max(1);
        let view = View::new(generation, addrs, &slots, pool_size);
        self.view.store(Some(Arc::new(view)));
    }

    fn last_error(&self) -> String {
        let errors: Vec<String> = self
            .lock()
            .iter()
            .map(|s| format!("{}: {}", s.addr, s.last_error()))
            .collect();
        if errors.is_empty() {
            return "the relay has no endpoint".into();
        }
        errors.join("; ")
    }
}

impl Drop for Pool {
    /// A dropped pool (its relay client replaced by a reload) stops its slots: each connection
    /// closes once its last stream ends.
    fn drop(&mut self) {
        for slot in self.lock().iter() {
            slot.stop.cancel();
        }
    }
}

impl Slot {
    /// The slot's connection, while it is up (taken down as soon as its connection ends).
    fn current(&self) -> Option<SendRequest<Bytes>> {
        self.state.borrow().clone()
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

    fn publish(&self, sender: Option<SendRequest<Bytes>>) {
        self.state.send_replace(sender);
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Keeps one connection to the endpoint up until stopped; waits out the endpoint's ejection
    /// backoff between attempts.
    async fn maintain(self: Arc<Self>) {
        let mut last_attempt: Option<Instant> = None;
        loop {
            if let Some(at) = self.endpoints.retry_at(self.addr) {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = self.kick.notified() => {}
                    () = self.stop.cancelled() => return,
                }
            }
            if let Some(last) = last_attempt {
                tokio::select! {
                    () = tokio::time::sleep_until(last + MIN_RECONNECT_SPACING) => {}
                    () = self.stop.cancelled() => return,
                }
            }
            if self.stop.is_cancelled() {
                return;
            }
            last_attempt = Some(Instant::now());
            let (sender, mut conn) = match connect(self.addr, &self.relay, &self.timeouts).await {
                Ok(up) => up,
                Err((reason, e)) => {
                    self.endpoints.failed(self.addr, reason, &e);
                    self.set_error(e.to_string());
                    continue;
                }
            };
            self.endpoints.succeeded(self.addr);
            tracing::debug!(relay = %self.relay.name, endpoint = %self.addr, "h2 connection to relay up");
            let pings = conn.ping_pong();
            self.publish(Some(sender));
            // Polled whenever the connection wakes its task (every frame read): see `stop`.
            let ended = tokio::select! {
                r = &mut conn => Some(r.map_err(ConnError::RelayH2)),
                e = keep_alive(pings, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT) => {
                    Some(Err(ConnError::RelayUnavailable(e.to_string())))
                }
                () = crate::stop::stopped(&self.stop) => None,
            };
            self.publish(None);
            match ended {
                Some(Ok(())) => self.set_error("the relay closed the connection".into()),
                Some(Err(error)) => {
                    self.endpoints
                        .failed(self.addr, EjectReason::H2ConnectionError, &error);
                    self.set_error(error.to_string());
                }
                // Stopping: no new streams; in-flight ones hold their own handles and the
                // connection closes once they finish. Never reconnect.
                None => {
                    let _ = conn.await;
                    return;
                }
            }
        }
    }
}

type Connection = h2::client::Connection<crate::outer::Outer<tokio::net::TcpStream>, Bytes>;

/// One TLS 1.3 + HTTP/2 connection to one relay endpoint.
async fn connect(
    addr: SocketAddr,
    relay: &RelayUpstream,
    timeouts: &Timeouts,
) -> Result<(SendRequest<Bytes>, Connection), (EjectReason, ConnError)> {
    let stream = tls::handshake(addr, relay, timeouts, relay.tls_h2.clone()).await?;
    if stream.alpn_protocol() != Some(crate::tls::ALPN_H2) {
        return Err((
            EjectReason::H2HandshakeFailed,
            ConnError::RelayUnavailable(format!("the relay at {addr} did not negotiate ALPN h2")),
        ));
    }
    let handshake = h2::client::Builder::new()
        .initial_window_size(H2_STREAM_WINDOW)
        // Tunnels of many clients share the connection: one that stops reading must not stall them.
        .initial_connection_window_size(H2_SHARED_CONN_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .max_send_buffer_size(H2_MAX_SEND_BUFFER)
        .enable_push(false)
        .handshake(stream);
    match tokio::time::timeout(timeouts.handshake, handshake).await {
        Ok(Ok(up)) => Ok(up),
        Ok(Err(e)) => Err((EjectReason::H2HandshakeFailed, ConnError::RelayH2(e))),
        Err(_) => Err((
            EjectReason::H2HandshakeFailed,
            ConnError::RelayUnavailable(format!(
                "the relay at {addr} did not complete the HTTP/2 handshake within {:?}",
                timeouts.handshake
            )),
        )),
    }
}

/// A request head for `send_request`, rebuilt from `parts` for each attempt.
fn head_of(parts: &http::request::Parts) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_window_has_room_for_every_streams_window_within_the_protocols_limit() {
        const MIB: u32 = 1024 * 1024;
        assert_eq!(shared_conn_window(0), H2_CONN_WINDOW);
        assert_eq!(shared_conn_window(1), H2_CONN_WINDOW);
        assert_eq!(shared_conn_window(100), 400 * MIB);
        assert_eq!(H2_SHARED_CONN_WINDOW, 512 * MIB);
        // 2^31 − 1 is the largest window HTTP/2 allows (RFC 9113 §6.9.1).
        assert_eq!(shared_conn_window(512), (1 << 31) - 1);
        assert_eq!(shared_conn_window(u32::MAX), (1 << 31) - 1);
    }
}
