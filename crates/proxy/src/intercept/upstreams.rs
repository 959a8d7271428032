//! Origin connections shared by all bumped client connections of one interception listener (one
//! pool per config generation: it lives in the generation's [`super::InterceptState`] and closes
//! its idle connections when that is dropped).
//!
//! Two origin connections are interchangeable only when they were opened to the same address and
//! port, verified for (and sent as SNI) the same name, with the same verification leniency
//! ([`Key`]); a connection is never handed to a request for another name. On worker threads
//! ([`crate::workers`]) the key also names the worker: a worker's requests use only the
//! connections it opened, whose tasks run on its thread, so each worker keeps its own.
//! - HTTP/2 origin connections are shared: one live connection per key carries the requests of
//!   every client connection with that key (replaced when it closes). While it is being opened,
//!   other clients wanting the same key wait for it (bounded by the connect and handshake
//!   timeouts) instead of opening their own.
//! - HTTP/1.1 origin connections are checked out for one request and put back after its response
//!   ([`Upstreams::release`]), at most [`MAX_IDLE_HTTP1_PER_KEY`] per key and [`MAX_IDLE_HTTP1`] in
//!   all.
//! - At most [`MAX_KEYS`] keys; the least recently used one is dropped to make room. Idle
//!   connections close after [`IDLE_TIMEOUT`] (a sweeper runs every [`SWEEP_EVERY`] while the pool
//!   exists; it holds only a `Weak`).
//! - Each pooled connection keeps the facts of its origin's certificate, so a request's flow names
//!   the certificate of the connection that carried it.
//! - Connection coalescing (RFC 9113 §9.1.1, as browsers do; on unless the listener turns it off):
//!   a name with no connection of its own may use another name's HTTP/2 connection when that
//!   connection's certificate was verified strictly and is valid for the name too (a wildcard or
//!   a multi-name certificate), it goes to the same port, and its peer address is one the name
//!   resolves to now and the destination guard permits. An origin that does not serve the name
//!   there answers 421 (Misdirected Request); the name then gets connections of its own
//!   ([`Upstreams::uncoalesce`]) and a request without a body is sent again on one.
//!
//! Dropping the pool's handle to a connection never cuts a request: hyper keeps an origin
//! connection open while a request or response on it is in flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::ParsedCertificate;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::time::Instant;

use super::origin::{OriginConn, OriginTls};
use crate::context::Shared;
use crate::error::ConnError;
use crate::flow::UpstreamCert;
use crate::tls::{ALPN_H2, ALPN_HTTP1};
use crate::transport::Body;
use crate::transport::h2::{H2_MAX_FRAME, H2_SHARED_CONN_WINDOW, H2_STREAM_WINDOW};

/// Keys (address, port, name, leniency) the pool remembers: a bumping listener talks to many
/// origins, but one client spraying names must not grow the pool without bound. Making room drops
/// the least recently used key's idle connections (requests in flight on them finish).
pub const MAX_KEYS: usize = 1024;
/// Idle HTTP/1.1 origin connections kept per key: the handful of parallel requests a browser makes
/// to one origin each find a warm connection; beyond that, connections close after their request.
pub const MAX_IDLE_HTTP1_PER_KEY: usize = 8;
/// Idle HTTP/1.1 origin connections kept in all (each holds a TLS session and a socket).
pub const MAX_IDLE_HTTP1: usize = 1024;
/// How long an origin connection stays open unused: long enough for the next request of a client
/// that pauses between page loads, and below nginx's 75 s `keepalive_timeout` default, so the pool
/// usually closes first instead of racing the origin's close with a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often idle connections are looked for: a connection lives at most this much past
/// [`IDLE_TIMEOUT`].
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// What makes two origin connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Where we connect: the CONNECT host or the original destination IP.
    pub host: String,
    pub port: u16,
    /// The name the origin's certificate was verified for, sent as SNI.
    pub name: String,
    /// Whether an invalid certificate is accepted for `name` (`danger_accept_invalid_upstream_certs`).
    pub accepts_invalid: bool,
    /// The worker thread whose connections these are ([`crate::workers::current`]): a worker
    /// uses only connections it opened, whose tasks run on its own thread.
    pub worker: Option<usize>,
}

/// A connection's request handle.
pub(crate) enum Sender {
    H2(http2::SendRequest<Body>),
    Http1(http1::SendRequest<Body>),
}

/// Whether [`Upstreams::acquire`] may use another name's h2 connection for a key without one.
pub(crate) enum Coalescing {
    Off,
    /// `resolved`: what the key's host resolved to moments ago; `None`: resolve it when a
    /// candidate connection's certificate covers the name.
    On {
        resolved: Option<Vec<SocketAddr>>,
    },
}

/// A request handle with the certificate facts of the origin connection behind it.
pub(crate) struct Checkout {
    pub sender: Sender,
    pub cert: UpstreamCert,
    /// Names a shared h2 connection for [`Upstreams::forget`]; 0 for HTTP/1.1.
    pub id: u64,
    /// The connection was opened for another name and carries this one's requests too (coalesced):
    /// a 421 answer on it means the origin does not serve this name there.
    pub coalesced: bool,
}

/// The listener's shared origin connections.
#[derive(Default)]
pub struct Upstreams {
    entries: Mutex<HashMap<Key, Entry>>,
    /// Idle HTTP/1.1 connections over all keys, kept with the map (changed only under its lock) so
    /// that putting one back does not count every key's.
    idle: AtomicUsize,
    sweeping: AtomicBool,
    /// Numbers h2 connections from 1.
    next_id: AtomicU64,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("keys", &self.lock().len())
            .finish()
    }
}

struct Entry {
    /// The shared h2 connection.
    h2: Option<H2Conn>,
    http1: Vec<IdleHttp1>,
    /// The origin answered an offer of h2 with HTTP/1.1: offer only HTTP/1.1 from now on.
    http1_only: bool,
    /// This key's requests may use another name's h2 connection (false once one answered 421).
    coalesce: bool,
    /// Held while a connection that may turn out h2 is being opened, so one is opened, not many.
    dial: Arc<tokio::sync::Mutex<()>>,
    last_used: Instant,
}

/// What [`Upstreams::acquire`] found under the lock for a key without a usable connection.
struct Missing {
    /// Held by whoever opens a connection that may be h2 for the key; `None` once the origin
    /// chose HTTP/1.1 (each request then opens its own when none is idle).
    dial: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Other names' live h2 connections that might carry the key's requests (coalescing).
    candidates: Vec<H2Conn>,
}

/// A shared h2 connection: its request handle, certificate facts and number.
#[derive(Clone)]
struct H2Conn {
    sender: http2::SendRequest<Body>,
    cert: UpstreamCert,
    id: u64,
    /// Where it goes and what it was verified with, when it may carry other names' requests.
    reach: Option<Arc<Reach>>,
    /// Opened for another key (see [`Checkout::coalesced`]).
    coalesced: bool,
}

/// What decides whether an h2 connection may carry another name's requests.
struct Reach {
    /// The origin address the connection went to.
    peer: SocketAddr,
    /// The origin's leaf, verified strictly (chain and name) when the connection was opened.
    leaf: CertificateDer<'static>,
}

impl Reach {
    /// The leaf is valid for `name` too (the same check as a handshake's).
    fn covers(&self, name: &ServerName<'_>) -> bool {
        ParsedCertificate::try_from(&self.leaf)
            .is_ok_and(|cert| rustls::client::verify_server_name(&cert, name).is_ok())
    }
}

impl H2Conn {
    fn checkout(&self) -> Checkout {
        Checkout {
            sender: Sender::H2(self.sender.clone()),
            cert: self.cert.clone(),
            id: self.id,
            coalesced: self.coalesced,
        }
    }
}

struct IdleHttp1 {
    sender: http1::SendRequest<Body>,
    cert: UpstreamCert,
    since: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            h2: None,
            http1: Vec::new(),
            http1_only: false,
            coalesce: true,
            dial: Arc::new(tokio::sync::Mutex::new(())),
            last_used: now,
        }
    }

    /// Someone is opening a connection for this key (holds or waits for `dial`).
    fn dialing(&self) -> bool {
        Arc::strong_count(&self.dial) > 1
    }

    /// A live h2 connection, else a ready idle HTTP/1.1 one (taken out).
    fn take(&mut self, now: Instant) -> Option<Checkout> {
        self.last_used = now;
        if let Some(h2) = &self.h2 {
            if !h2.sender.is_closed() {
                return Some(h2.checkout());
            }
            self.h2 = None;
        }
        self.http1.retain(|idle| !idle.sender.is_closed());
        let i = self.http1.iter().position(|idle| idle.sender.is_ready())?;
        let idle = self.http1.swap_remove(i);
        Some(Checkout {
            sender: Sender::Http1(idle.sender),
            cert: idle.cert,
            id: 0,
            coalesced: false,
        })
    }

    /// Drops what has been idle since before `cutoff` or is closed; true when nothing is left.
    fn sweep(&mut self, cutoff: Instant) -> bool {
        let h2_idle = self
            .h2
            .as_ref()
            .is_some_and(|h2| h2.sender.is_closed() || self.last_used < cutoff);
        if h2_idle {
            self.h2 = None;
        }
        self.http1
            .retain(|idle| !idle.sender.is_closed() && idle.since >= cutoff);
        self.h2.is_none() && self.http1.is_empty() && !self.dialing() && self.last_used < cutoff
    }
}

impl Upstreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Every critical section leaves the map whole (inserts, removes, retains): a panic in one
        // cannot leave a half-made entry, so the map is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys currently remembered.
    pub fn keys(&self) -> usize {
        self.lock().len()
    }

    /// Idle HTTP/1.1 connections currently kept (all keys).
    pub fn idle_http1(&self) -> usize {
        let entries = self.lock();
        let idle = entries.values().map(|e| e.http1.len()).sum();
        debug_assert_eq!(
            idle,
            self.idle.load(Ordering::Relaxed),
            "the running idle count agrees with the entries"
        );
        idle
    }

    /// A request handle for `key`: the shared h2 connection, an idle HTTP/1.1 one, another name's
    /// h2 connection that may carry this one's requests ([`Coalescing`], see the module's notes),
    /// or a new connection (verified by `origin`; `seen` gets the origin's certificate facts as
    /// [`OriginTls::connect`] gives them).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        key: &Key,
        origin: &OriginTls,
        shared: &Arc<Shared>,
        coalescing: Coalescing,
        seen: &mut Option<UpstreamCert>,
    ) -> Result<Checkout, ConnError> {
        self.start_sweeper();
        let (dial, candidates) = {
            let mut entries = self.lock();
            let now = Instant::now();
            if let Some(found) = self.take(&mut entries, key, now) {
                return Ok(found);
            }
            let entry = self.entry(&mut entries, key, now);
            let dial = (!entry.http1_only).then(|| entry.dial.clone());
            let may = entry.coalesce && dial.is_some() && !key.accepts_invalid;
            let candidates = if may && let Coalescing::On { .. } = coalescing {
                coalescable(&entries, key)
            } else {
                Vec::new()
            };
            (dial, candidates)
        };
        // Boxed: most requests find a connection above, and the state of opening one (connect,
        // TLS and HTTP handshakes) would otherwise make every request's future that much larger.
        let missing = Missing { dial, candidates };
        Box::pin(self.open(key, origin, shared, coalescing, seen, missing)).await
    }

    /// [`Self::acquire`] when `key` has no usable connection: coalesce onto another name's, or
    /// open one.
    async fn open(
        &self,
        key: &Key,
        origin: &OriginTls,
        shared: &Arc<Shared>,
        coalescing: Coalescing,
        seen: &mut Option<UpstreamCert>,
        missing: Missing,
    ) -> Result<Checkout, ConnError> {
        let Missing { dial, candidates } = missing;
        if !candidates.is_empty()
            && let Coalescing::On { resolved } = coalescing
            && let Some(found) = self.coalesce(key, candidates, resolved, shared).await
        {
            return Ok(found);
        }
        // A connection that may be h2 is opened by one client at a time per key; the others wait
        // for that attempt (at most as long as opening one may take) and then share its
        // connection. When it brought none (the origin failed, or chose HTTP/1.1 and the
        // connection is busy), the waiters open theirs side by side, not one after another: a
        // failing origin then costs each request at most two attempts' time, however many wait.
        let wait = shared.timeouts.connect + shared.timeouts.handshake;
        let _dialing = match dial {
            Some(dial) => match dial.clone().try_lock_owned() {
                Ok(first) => Some(first),
                Err(_) => {
                    let _ = tokio::time::timeout(wait, dial.lock()).await;
                    None
                }
            },
            None => None,
        };
        let http1_only = {
            let mut entries = self.lock();
            let now = Instant::now();
            if let Some(found) = self.take(&mut entries, key, now) {
                return Ok(found);
            }
            entries.get(key).is_some_and(|e| e.http1_only)
        };
        let alpn = if http1_only {
            vec![ALPN_HTTP1.to_vec()]
        } else {
            vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
        };
        let conn = origin
            .connect(
                shared,
                &key.host,
                key.port,
                &key.name,
                alpn,
                key.accepts_invalid,
                seen,
            )
            .await?;
        self.start(key, conn, !http1_only, shared).await
    }

    /// Starts HTTP on a fresh origin connection by its negotiated ALPN; an h2 connection becomes
    /// the key's shared one unless the key already has a live one. `offered_h2`: whether h2 was
    /// offered (an origin that declines it is then offered only HTTP/1.1).
    pub(crate) async fn start(
        &self,
        key: &Key,
        conn: OriginConn,
        offered_h2: bool,
        shared: &Shared,
    ) -> Result<Checkout, ConnError> {
        let cert = conn.cert;
        let h2 = conn.alpn.as_deref() == Some(ALPN_H2);
        // Only a strictly verified connection may carry other names' requests.
        let strict = !key.accepts_invalid && conn.accepted_invalid.is_none();
        let reach = match conn.tls.get_ref().0.peer_addr() {
            Ok(peer) if strict => Some(Arc::new(Reach {
                peer,
                leaf: conn.leaf,
            })),
            _ => None,
        };
        let io = TokioIo::new(conn.tls);
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                // Shared by many client connections: one that stops reading must not stall them.
                .initial_connection_window_size(H2_SHARED_CONN_WINDOW)
                .max_frame_size(H2_MAX_FRAME)
                .handshake(io)
                .await
                .map_err(ConnError::UpstreamHttp)?;
            spawn_connection(shared, async move {
                if let Err(e) = connection.await {
                    tracing::debug!("origin h2 connection ended: {e}");
                }
            });
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(name = %key.name, id, coalescable = reach.is_some(), "origin h2 connection opened");
            let conn = H2Conn {
                sender,
                cert,
                id,
                reach,
                coalesced: false,
            };
            let mut entries = self.lock();
            let entry = self.entry(&mut entries, key, Instant::now());
            if entry.h2.as_ref().is_none_or(|h2| h2.sender.is_closed()) {
                entry.h2 = Some(conn.clone());
            }
            return Ok(conn.checkout());
        }
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(ConnError::UpstreamHttp)?;
        spawn_connection(shared, async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("origin http/1.1 connection ended: {e}");
            }
        });
        if offered_h2 {
            let mut entries = self.lock();
            self.entry(&mut entries, key, Instant::now()).http1_only = true;
        }
        Ok(Checkout {
            sender: Sender::Http1(sender),
            cert,
            id: 0,
            coalesced: false,
        })
    }

    /// `candidates` (live, strictly verified h2 connections to `key.port`) narrowed to one that
    /// may carry `key`'s requests: its certificate is valid for `key.name`, and its peer is an
    /// address `key.host` resolves to now (`resolved`, else resolved here) that the destination
    /// guard permits. That connection becomes `key`'s shared one. `None` when none qualifies (or
    /// the name does not resolve in time: opening a connection of its own then reports why).
    async fn coalesce(
        &self,
        key: &Key,
        candidates: Vec<H2Conn>,
        resolved: Option<Vec<SocketAddr>>,
        shared: &Shared,
    ) -> Option<Checkout> {
        let name = ServerName::try_from(key.name.as_str()).ok()?;
        let covering: Vec<H2Conn> = candidates
            .into_iter()
            .filter(|c| c.reach.as_ref().is_some_and(|r| r.covers(&name)))
            .collect();
        if covering.is_empty() {
            return None;
        }
        let addrs = match resolved {
            Some(addrs) => addrs,
            None => {
                let resolving = shared.resolver.resolve(&key.host, key.port);
                tokio::time::timeout(shared.timeouts.connect, resolving)
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let chosen = covering.into_iter().find(|c| {
            c.reach.as_ref().is_some_and(|r| {
                let peer = r.peer.ip().to_canonical();
                shared.guard.permits(peer)
                    && addrs
                        .iter()
                        .any(|a| a.port() == r.peer.port() && a.ip().to_canonical() == peer)
            })
        })?;
        let mut entries = self.lock();
        let entry = self.entry(&mut entries, key, Instant::now());
        if !entry.coalesce {
            return None; // it answered 421 meanwhile
        }
        let h2 = match &entry.h2 {
            // A connection of its own appeared meanwhile.
            Some(own) if !own.sender.is_closed() => own.clone(),
            _ => {
                tracing::debug!(name = %key.name, id = chosen.id, "coalesced onto an origin h2 connection");
                let h2 = H2Conn {
                    coalesced: true,
                    ..chosen
                };
                entry.h2 = Some(h2.clone());
                h2
            }
        };
        Some(h2.checkout())
    }

    /// Stops sharing h2 connection `id` of `key` (it refused a request: it is going away).
    pub(crate) fn forget(&self, key: &Key, id: u64) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key)
            && entry.h2.as_ref().is_some_and(|h2| h2.id == id)
        {
            entry.h2 = None;
        }
    }

    /// The origin answered 421 (Misdirected Request) for `key` on coalesced connection `id`: it
    /// does not serve `key.name` there. From now on `key` gets connections of its own.
    pub(crate) fn uncoalesce(&self, key: &Key, id: u64) {
        let mut entries = self.lock();
        let entry = self.entry(&mut entries, key, Instant::now());
        entry.coalesce = false;
        if entry
            .h2
            .as_ref()
            .is_some_and(|h2| h2.coalesced && h2.id == id)
        {
            entry.h2 = None;
        }
    }

    /// Puts an HTTP/1.1 connection back after its response, if it is open and there is room.
    pub(crate) fn release(&self, key: &Key, sender: http1::SendRequest<Body>, cert: UpstreamCert) {
        if sender.is_closed() {
            return;
        }
        let mut entries = self.lock();
        if self.idle.load(Ordering::Relaxed) >= MAX_IDLE_HTTP1 {
            return;
        }
        let now = Instant::now();
        let entry = self.entry(&mut entries, key, now);
        if entry.http1.len() < MAX_IDLE_HTTP1_PER_KEY {
            entry.http1.push(IdleHttp1 {
                sender,
                cert,
                since: now,
            });
            self.idle.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Entry::take`] on `key`'s entry, keeping the idle count.
    fn take(&self, entries: &mut HashMap<Key, Entry>, key: &Key, now: Instant) -> Option<Checkout> {
        let entry = entries.get_mut(key)?;
        let before = entry.http1.len();
        let found = entry.take(now);
        self.idle
            .fetch_sub(before - entry.http1.len(), Ordering::Relaxed);
        found
    }

    /// The entry for `key`, made (room made first) when missing.
    fn entry<'a>(
        &self,
        entries: &'a mut HashMap<Key, Entry>,
        key: &Key,
        now: Instant,
    ) -> &'a mut Entry {
        if !entries.contains_key(key) && entries.len() >= MAX_KEYS {
            let dropped = evict_one(entries);
            self.idle.fetch_sub(dropped, Ordering::Relaxed);
        }
        entries
            .entry(key.clone())
            .or_insert_with(|| Entry::new(now))
    }

    /// Closes idle connections and forgets keys with nothing left.
    fn sweep(&self) {
        let Some(cutoff) = Instant::now().checked_sub(IDLE_TIMEOUT) else {
            return;
        };
        let mut entries = self.lock();
        let mut closed = 0;
        entries.retain(|_, entry| {
            let before = entry.http1.len();
            let gone = entry.sweep(cutoff);
            closed += before - entry.http1.len();
            !gone
        });
        self.idle.fetch_sub(closed, Ordering::Relaxed);
    }

    /// Starts the sweeper once (on first use: the pool may be built outside a runtime).
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(sweeper(pool));
    }
}

/// The distinct live h2 connections of `wanted`'s worker to its port that were verified strictly:
/// those that might carry `wanted`'s requests (one clone each; O(keys), only when a key has no
/// connection).
fn coalescable(entries: &HashMap<Key, Entry>, wanted: &Key) -> Vec<H2Conn> {
    let (port, worker) = (wanted.port, wanted.worker);
    let mut ids = std::collections::HashSet::new();
    let mut found = Vec::new();
    for (key, entry) in entries {
        let Some(h2) = &entry.h2 else { continue };
        let same_port = key.port == port
            && key.worker == worker
            && h2.reach.as_ref().is_some_and(|r| r.peer.port() == port);
        // Many keys may hold one coalesced connection: each is looked at once.
        if same_port && !key.accepts_invalid && ids.insert(h2.id) && !h2.sender.is_closed() {
            found.push(h2.clone());
        }
    }
    found
}

/// Drops the least recently used key, preferring one nobody is opening a connection for; returns
/// how many idle HTTP/1.1 connections went with it.
fn evict_one(entries: &mut HashMap<Key, Entry>) -> usize {
    let victim = entries
        .iter()
        .min_by_key(|(_, e)| (e.dialing(), e.last_used))
        .map(|(k, _)| k.clone());
    victim
        .and_then(|victim| entries.remove(&victim))
        .map_or(0, |entry| entry.http1.len())
}

/// Sweeps every [`SWEEP_EVERY`] until the pool is gone.
async fn sweeper(pool: Weak<Upstreams>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep();
    }
}

/// Runs an origin connection's task. Not under the admission of the client connection that opened
/// it (a pooled connection outlives that client and serves others: it must not hold the client's
/// listener and per-source slots), and not on the gateway's task tracker (an idle pooled
/// connection must not hold up a graceful shutdown; a request in flight is held by its client
/// connection's task, which is tracked). The grace period's end stops them all, as it stops the
/// forward proxy's pooled connections.
fn spawn_connection<F>(shared: &Shared, task: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    crate::context::spawn_pooled(&shared.force, task);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key {
            host: "127.0.0.1".into(),
            port: 443,
            name: name.into(),
            accepts_invalid: false,
            worker: None,
        }
    }

    #[test]
    fn keys_differing_only_in_name_or_leniency_are_distinct() {
        let lenient = Key {
            accepts_invalid: true,
            ..key("a.example")
        };
        assert_ne!(key("a.example"), key("b.example"));
        assert_ne!(key("a.example"), lenient);
        let on_worker = Key {
            worker: Some(0),
            ..key("a.example")
        };
        assert_ne!(
            key("a.example"),
            on_worker,
            "workers do not share connections"
        );
        assert_eq!(key("a.example"), key("a.example"));
    }

    #[test]
    fn making_room_drops_the_least_recently_used_key_but_not_one_being_dialled() {
        let pool = Upstreams::default();
        let mut entries = pool.lock();
        let start = Instant::now();
        for i in 0..MAX_KEYS {
            let at = start + Duration::from_millis(i as u64);
            pool.entry(&mut entries, &key(&format!("n{i}.example")), at);
        }
        // The oldest key has a dial in progress: the next oldest goes instead.
        let dialing = entries[&key("n0.example")].dial.clone();
        let later = start + Duration::from_secs(10);
        pool.entry(&mut entries, &key("new.example"), later);
        assert_eq!(entries.len(), MAX_KEYS);
        assert!(entries.contains_key(&key("n0.example")));
        assert!(!entries.contains_key(&key("n1.example")));
        assert!(entries.contains_key(&key("new.example")));
        drop(dialing);
        pool.entry(&mut entries, &key("newer.example"), later);
        assert_eq!(entries.len(), MAX_KEYS);
        assert!(!entries.contains_key(&key("n0.example")));
    }

    #[test]
    fn sweeping_forgets_keys_unused_for_the_idle_timeout() {
        let pool = Upstreams::default();
        let now = Instant::now();
        {
            let mut entries = pool.lock();
            let old = now
                .checked_sub(IDLE_TIMEOUT + Duration::from_secs(1))
                .unwrap();
            pool.entry(&mut entries, &key("old.example"), old);
            pool.entry(&mut entries, &key("fresh.example"), now);
        }
        pool.sweep();
        let entries = pool.lock();
        assert!(!entries.contains_key(&key("old.example")));
        assert!(entries.contains_key(&key("fresh.example")));
    }
}
