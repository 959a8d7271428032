//! Flow records: one per connection (or tunnelled stream) outcome, written in exactly one place.
//!
//! Records go to a bounded broadcast bus (slow subscribers lose records, they never slow the data path)
//! and to one log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::error::ConnError;

/// Which role served the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Edge,
    Relay,
    Intercept,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Relay => "relay",
            Self::Intercept => "intercept",
        }
    }
}

/// How the bytes travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tunnelled to a relay (edge) without terminating the inner TLS.
    Tunnel,
    /// Passed untouched to an upstream (relay).
    Splice,
    /// An HTTP request forwarded.
    Http,
    /// TLS terminated with a minted certificate and re-encrypted to the origin.
    Bump,
    /// Refused by policy.
    Deny,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tunnel => "tunnel",
            Self::Splice => "splice",
            Self::Http => "http",
            Self::Bump => "bump",
            Self::Deny => "deny",
        }
    }
}

/// The outcome of one connection, stream or HTTP request.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub time: SystemTime,
    pub listener: Arc<str>,
    pub role: Role,
    pub mode: Mode,
    pub client: SocketAddr,
    /// The inner SNI, CONNECT authority host or Host, when known.
    pub name: Option<String>,
    /// The upstream (`host:port`) or relay the traffic went to, when chosen.
    pub upstream: Option<String>,
    /// `None` when served; else the stable reason label.
    pub reason: Option<&'static str>,
    /// Human-readable detail of the error (may quote local error text, never logged as a label).
    pub detail: Option<String>,
    /// HTTP status for request flows.
    pub status: Option<u16>,
    /// Method and URL for request flows.
    pub http: Option<crate::context::HttpFacts>,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub duration: Duration,
}

/// The flow bus.
#[derive(Debug, Clone)]
pub struct Flows {
    tx: broadcast::Sender<Arc<FlowRecord>>,
}

impl Flows {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Receives records from now on; a lagging receiver gets `RecvError::Lagged(n)`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FlowRecord>> {
        self.tx.subscribe()
    }

    /// Publishes a record and writes its log line. Never blocks.
    pub fn emit(&self, record: FlowRecord, error: Option<&ConnError>) {
        log_record(&record, error);
        // No subscriber is fine: send only fails when nobody listens.
        let _ = self.tx.send(Arc::new(record));
    }
}

fn log_record(r: &FlowRecord, error: Option<&ConnError>) {
    let name = r.name.as_deref().unwrap_or("-");
    let upstream = r.upstream.as_deref().unwrap_or("-");
    let ms = r.duration.as_millis() as u64;
    match error {
        None => tracing::info!(
            listener = %r.listener, role = r.role.as_str(), mode = r.mode.as_str(), client = %r.client,
            name, upstream, method = r.http.as_ref().map(|h| h.method.as_str()),
            url = r.http.as_ref().map(|h| h.url.as_str()), status = r.status,
            bytes_in = r.bytes_from_client, bytes_out = r.bytes_to_client, ms, "served"
        ),
        Some(e) if e.is_local_fault() => tracing::warn!(
            listener = %r.listener, role = r.role.as_str(), client = %r.client, name, upstream,
            reason = e.reason(), ms, "closed: {e}"
        ),
        Some(e) if e.is_policy() => tracing::info!(
            listener = %r.listener, role = r.role.as_str(), client = %r.client, name, upstream,
            method = r.http.as_ref().map(|h| h.method.as_str()),
            url = r.http.as_ref().map(|h| h.url.as_str()), status = r.status,
            reason = e.reason(), ms, "refused: {e}"
        ),
        Some(e) => tracing::debug!(
            listener = %r.listener, role = r.role.as_str(), client = %r.client, name, upstream,
            reason = e.reason(), ms, bytes_in = r.bytes_from_client, bytes_out = r.bytes_to_client,
            "closed: {e}"
        ),
    }
}
