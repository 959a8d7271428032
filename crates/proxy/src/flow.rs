//! Flow records: one per connection (or tunnelled stream) outcome, written in exactly one place.
//!
//! Records go to a bounded broadcast bus (slow subscribers lose records, they never slow the data path),
//! to the metrics counters and to one log line. [`hubble`] renders them as Hubble-compatible JSON,
//! [`ring`] keeps the most recent ones for the admin API.

pub mod filter;
pub mod hubble;
pub mod ring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::error::ConnError;
use crate::metrics::Metrics;

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

/// What became of the traffic, in Hubble's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Served (spliced, tunnelled, bumped or forwarded).
    Forwarded,
    /// Refused by policy or routing.
    Dropped,
    /// Ended by a failure on either side.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "FORWARDED",
            Self::Dropped => "DROPPED",
            Self::Error => "ERROR",
        }
    }

    /// `FORWARDED`, `dropped`, ... (any case).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Forwarded, Self::Dropped, Self::Error]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(text))
    }

    /// The verdict of a flow that ended with `error`.
    pub fn of(error: Option<&ConnError>) -> Self {
        match error {
            None => Self::Forwarded,
            Some(e) if e.is_policy() => Self::Dropped,
            Some(_) => Self::Error,
        }
    }
}

/// A random (version 4) UUID naming one Hubble flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FlowId([u8; 16]);

impl FlowId {
    /// A fresh random id; all zeros only if the system RNG fails (ids are for correlation, not
    /// security, so a record is still better than none).
    pub fn random() -> Self {
        use ::ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        let _ = ::ring::rand::SystemRandom::new().fill(&mut bytes);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(bytes)
    }
}

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowId({self})")
    }
}

/// The outcome of one connection, stream or HTTP request.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    /// When the outcome was known (the end of the connection, stream or exchange).
    pub time: SystemTime,
    /// Names this record's Hubble flow (the RESPONSE flow for HTTP exchanges).
    pub uuid: FlowId,
    /// Names the REQUEST flow of an HTTP exchange.
    pub request_uuid: FlowId,
    pub verdict: Verdict,
    /// The policy rule (set) that refused the flow, from the operator's policy file.
    pub rule: Option<String>,
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
    metrics: Arc<Metrics>,
}

impl Flows {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// The counters every emitted record moves.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Receives records from now on; a lagging receiver gets `RecvError::Lagged(n)`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FlowRecord>> {
        self.tx.subscribe()
    }

    /// Publishes a record and writes its log line. Never blocks.
    pub fn emit(&self, record: FlowRecord, error: Option<&ConnError>) {
        log_record(&record, error);
        self.metrics.count_flow(&record);
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
