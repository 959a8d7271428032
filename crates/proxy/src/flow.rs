//! Flow records: one per connection (or tunnelled stream) outcome, written in exactly one place.
//!
//! Records go to a bounded broadcast bus (slow subscribers lose records, they never slow the data path),
//! to the metrics counters and to one log line. [`hubble`] renders them as Hubble-compatible JSON,
//! [`ring`] keeps the most recent ones for the admin API.
//!
//! Every connection and every HTTP request emits one, from every worker, so emitting takes no lock:
//! the counters are atomics, the ring is lock-free, and the bus (tokio's broadcast `send` locks the
//! channel) is skipped while nobody subscribes to it.

pub mod access_log;
pub mod filter;
pub mod hubble;
pub mod ring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

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

    /// Every mode, in declaration order (`mode as usize` indexes it).
    pub const ALL: [Self; 5] = [
        Self::Tunnel,
        Self::Splice,
        Self::Http,
        Self::Bump,
        Self::Deny,
    ];
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
    /// Let through although the policy would have refused it: the listener is in audit mode
    /// (`policy_audit: true`, like Cilium's policy audit mode). `reason` and `rule` say why it
    /// would have been refused.
    Audit,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "FORWARDED",
            Self::Dropped => "DROPPED",
            Self::Error => "ERROR",
            Self::Audit => "AUDIT",
        }
    }

    /// Every verdict, in the order documented.
    pub const ALL: [Self; 4] = [Self::Forwarded, Self::Dropped, Self::Error, Self::Audit];

    /// `FORWARDED`, `dropped`, `AUDIT`, ... (any case).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
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

/// Random bytes for flow ids, drawn from the system RNG [`FLOW_ID_BATCH`] ids at a time: every
/// request writes a record with two ids, and a `getrandom` call for each was a syscall per id
/// (1 % of the interceptor's samples in I1's profile).
const FLOW_ID_BATCH: usize = 128;

thread_local! {
    /// Unused random bytes of this thread's batch, and where they start.
    static FLOW_ID_BYTES: std::cell::RefCell<([u8; 16 * FLOW_ID_BATCH], usize)> =
        const { std::cell::RefCell::new(([0; 16 * FLOW_ID_BATCH], 16 * FLOW_ID_BATCH)) };
}

impl FlowId {
    /// A fresh random id; all zeros only if the system RNG fails (ids are for correlation, not
    /// security, so a record is still better than none).
    pub fn random() -> Self {
        use ::ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        FLOW_ID_BYTES.with_borrow_mut(|(batch, next)| {
            if *next == batch.len() {
                if ::ring::rand::SystemRandom::new().fill(batch).is_err() {
                    batch.fill(0);
                }
                *next = 0;
            }
            bytes.copy_from_slice(&batch[*next..*next + 16]);
            *next += 16;
        });
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
    /// For TLS connections and the requests carried in them: what the client offered and, when
    /// bumped, the origin's certificate.
    pub tls: Option<TlsFacts>,
}

/// The TLS facts of a flow (docs/flows.md, `tlsgate.alpn`, `tls_version`, `upstream_cert`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// The ALPN protocols the client offered in its ClientHello, in its order (at most
    /// [`TlsFacts::MAX_ALPN`], each cut at [`TlsFacts::MAX_ALPN_LEN`] bytes, lossy UTF-8). Shared:
    /// every request's record on a connection carries them.
    pub alpn: Arc<[String]>,
    /// The highest TLS version the client offered (`supported_versions`, else the legacy version).
    pub version: Option<&'static str>,
    /// Bumped connections: the origin's certificate and its verification.
    pub upstream_cert: Option<UpstreamCert>,
}

impl TlsFacts {
    /// ALPN protocols kept per flow: browsers offer two or three.
    pub const MAX_ALPN: usize = 8;
    /// Bytes of one ALPN protocol id kept (ids are at most 255 bytes; real ones are short).
    pub const MAX_ALPN_LEN: usize = 32;

    /// What the client offered in `hello`.
    pub fn offered(hello: &tlsgate_wire::ClientHelloInfo) -> Self {
        let alpn = hello
            .alpn
            .iter()
            .take(Self::MAX_ALPN)
            .map(|p| String::from_utf8_lossy(&p[..p.len().min(Self::MAX_ALPN_LEN)]).into_owned())
            .collect();
        let highest = hello
            .supported_versions
            .iter()
            .copied()
            .max()
            .unwrap_or(hello.legacy_version);
        Self {
            alpn,
            version: tls_version_name(highest),
            upstream_cert: None,
        }
    }
}

/// `TLSv1.3`, ... for the versions tlsgate can meet; `None` for others (never peer text).
pub fn tls_version_name(version: u16) -> Option<&'static str> {
    match version {
        0x0300 => Some("SSLv3"),
        0x0301 => Some("TLSv1.0"),
        0x0302 => Some("TLSv1.1"),
        0x0303 => Some("TLSv1.2"),
        0x0304 => Some("TLSv1.3"),
        _ => None,
    }
}

/// The origin's leaf certificate as a bumped connection met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCert {
    /// RFC 4514-style distinguished names, cut at `tlsgate_ca::MAX_NAME_LEN` bytes; empty when
    /// the certificate could not be parsed. Shared: every request's record on a connection
    /// carries them.
    pub subject: Arc<str>,
    pub issuer: Arc<str>,
    /// Whether it verified against the listener's trust anchors for the requested name.
    pub verified: bool,
    /// When not verified: a stable label ([`UpstreamCert::ERRORS`]).
    pub error: Option<&'static str>,
}

impl UpstreamCert {
    /// Every `error` label (docs/flows.md lists them).
    pub const ERRORS: [&'static str; 7] = [
        "unknown_issuer",
        "name_mismatch",
        "expired",
        "not_yet_valid",
        "revoked",
        "bad_signature",
        "invalid",
    ];
}

/// What is hidden from flow records besides the built-in credential headers
/// ([`crate::context::HttpFacts::SENSITIVE`]); applied in [`Flows::emit`], before anything sees
/// the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Header names (lower-case) whose values become `[REDACTED]`.
    pub headers: Vec<http::HeaderName>,
    /// Drop the query (`?` and after) from URLs, as Hubble's `--redact-http-urlquery` does.
    pub url_query: bool,
}

impl From<&crate::config::FlowSettings> for Redaction {
    fn from(settings: &crate::config::FlowSettings) -> Self {
        Self {
            headers: settings.redact_headers.clone(),
            url_query: settings.redact_url_query,
        }
    }
}

impl Redaction {
    fn apply(&self, record: &mut FlowRecord) {
        let Some(http) = record.http.as_mut() else {
            return;
        };
        for (name, value) in &mut http.headers {
            if self.headers.iter().any(|h| h.as_str() == name.as_str()) {
                crate::context::HttpFacts::REDACTED.clone_into(value);
            }
        }
        if self.url_query
            && let Some(at) = http.url.find('?')
        {
            http.url.truncate(at);
        }
    }
}

/// The flow bus.
#[derive(Debug, Clone)]
pub struct Flows {
    tx: broadcast::Sender<Arc<FlowRecord>>,
    /// Live [`FlowSubscriber`]s: `emit` sends on the bus only when there is one.
    subscribers: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    redaction: Arc<Redaction>,
    /// Filled in `emit` itself: no task to wake per record, and the ring never lags the bus.
    ring: Option<Arc<ring::FlowRing>>,
}

impl Flows {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            subscribers: Arc::default(),
            metrics: Arc::new(Metrics::default()),
            redaction: Arc::default(),
            ring: None,
        }
    }

    /// The bus with every emitted record also kept in `ring` (the admin API's `/flows`).
    pub fn with_ring(mut self, ring: Arc<ring::FlowRing>) -> Self {
        self.ring = Some(ring);
        self
    }

    /// The bus with `redaction` applied to every record emitted.
    pub fn with_redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = Arc::new(redaction);
        self
    }

    /// The counters every emitted record moves.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Receives records from now on; a lagging receiver gets `RecvError::Lagged(n)`.
    pub fn subscribe(&self) -> FlowSubscriber {
        FlowSubscriber::new(self.tx.subscribe(), self.subscribers.clone())
    }

    /// Publishes a record and writes its log line. Never blocks.
    pub fn emit(&self, mut record: FlowRecord, error: Option<&ConnError>) {
        self.redaction.apply(&mut record);
        log_record(&record, error);
        self.metrics.count_flow(&record);
        let record = Arc::new(record);
        if let Some(ring) = &self.ring {
            ring.push(record.clone());
            // Pairs with the fence in `FlowSubscriber::new`: a record pushed to the ring before a
            // subscriber reads it (admin `/flows?follow`) is either in what it reads or sent to
            // it. Without a ring there is nothing to pair with.
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        if self.subscribers.load(Ordering::Relaxed) > 0 {
            // A subscriber that left since is fine: send only fails when nobody listens.
            let _ = self.tx.send(record);
        }
    }
}

/// A subscription to the flow bus: every record emitted from now on, unless it lags by more than
/// the bus holds (`RecvError::Lagged(n)`). While one is held, emitting a record sends it on the bus.
#[derive(Debug)]
pub struct FlowSubscriber {
    rx: broadcast::Receiver<Arc<FlowRecord>>,
    count: Arc<AtomicUsize>,
}

impl FlowSubscriber {
    fn new(rx: broadcast::Receiver<Arc<FlowRecord>>, count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        // Counted before the caller reads anything else (the ring): see `Flows::emit`.
        std::sync::atomic::fence(Ordering::SeqCst);
        Self { rx, count }
    }

    pub async fn recv(&mut self) -> Result<Arc<FlowRecord>, RecvError> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Result<Arc<FlowRecord>, TryRecvError> {
        self.rx.try_recv()
    }

    /// Another subscription, starting at the newest record (not where this one is).
    pub fn resubscribe(&self) -> Self {
        Self::new(self.rx.resubscribe(), self.count.clone())
    }
}

impl Drop for FlowSubscriber {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

fn log_record(r: &FlowRecord, error: Option<&ConnError>) {
    let name = r.name.as_deref().unwrap_or("-");
    let upstream = r.upstream.as_deref().unwrap_or("-");
    let ms = r.duration.as_millis() as u64;
    match error {
        None if r.verdict == Verdict::Audit => tracing::info!(
            listener = %r.listener, role = r.role.as_str(), mode = r.mode.as_str(), client = %r.client,
            name, upstream, method = r.http.as_ref().map(|h| h.method.as_str()),
            url = r.http.as_ref().map(|h| h.url.as_str()), status = r.status,
            reason = r.reason, rule = r.rule.as_deref(), ms, "audited: served, the policy would refuse it"
        ),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::context::{Audit, ConnCtx, HttpFacts};

    #[test]
    fn flow_ids_are_distinct_version_4_uuids_across_batches_and_threads() {
        let draw = || {
            (0..3 * FLOW_ID_BATCH + 5)
                .map(|_| FlowId::random())
                .collect::<Vec<_>>()
        };
        let mut ids = draw();
        ids.extend(std::thread::spawn(draw).join().unwrap());
        let distinct: std::collections::HashSet<[u8; 16]> = ids.iter().map(|id| id.0).collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            let text = id.to_string();
            assert_eq!(text.len(), 36);
            assert_eq!(&text[14..15], "4", "{text}");
            assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        }
    }

    /// A served edge tunnel's record from `127.0.0.1:port`, for the flow modules' tests.
    pub(crate) fn record(port: u16) -> FlowRecord {
        FlowRecord {
            time: SystemTime::now(),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict: Verdict::Forwarded,
            rule: None,
            listener: Arc::from("l"),
            role: Role::Edge,
            mode: Mode::Tunnel,
            client: ([127, 0, 0, 1], port).into(),
            name: None,
            upstream: None,
            reason: None,
            detail: None,
            status: None,
            http: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
            duration: Duration::ZERO,
            tls: None,
        }
    }

    fn ports(records: impl IntoIterator<Item = Arc<FlowRecord>>) -> Vec<u16> {
        records.into_iter().map(|r| r.client.port()).collect()
    }

    fn drain(rx: &mut FlowSubscriber) -> Vec<u16> {
        ports(std::iter::from_fn(|| rx.try_recv().ok()))
    }

    /// Every subscription (a resubscribed one too) gets every record emitted while it is held,
    /// and the bus is sent on only while one is.
    #[test]
    fn subscriptions_get_every_record_emitted_while_they_are_held() {
        let flows = Flows::new(16);
        let held = || flows.subscribers.load(Ordering::Relaxed);
        flows.emit(record(1), None);
        let mut first = flows.subscribe();
        flows.emit(record(2), None);
        let mut second = first.resubscribe();
        assert_eq!(held(), 2);
        flows.emit(record(3), None);
        assert_eq!(drain(&mut first), [2, 3]);
        assert_eq!(drain(&mut second), [3]);
        drop(first);
        flows.emit(record(4), None);
        assert_eq!(drain(&mut second), [4]);
        drop(second);
        assert_eq!(held(), 0);
        flows.emit(record(5), None);
        let mut third = flows.clone().subscribe();
        assert_eq!(held(), 1, "clones of the bus share the count");
        flows.emit(record(6), None);
        assert_eq!(drain(&mut third), [6]);
    }

    /// `/flows?follow` subscribes, then reads the ring: a record emitted meanwhile, from another
    /// thread, is in the ring's snapshot or on the bus, never in neither.
    #[test]
    fn a_record_emitted_while_a_follower_subscribes_is_in_the_ring_or_on_the_bus() {
        const RECORDS: u16 = 2_000;
        for _ in 0..20 {
            let ring = Arc::new(ring::FlowRing::new(usize::from(RECORDS)));
            let flows = Flows::new(usize::from(RECORDS)).with_ring(ring.clone());
            let (seen, mut rx) = std::thread::scope(|s| {
                s.spawn(|| {
                    for port in 1..=RECORDS {
                        flows.emit(record(port), None);
                    }
                });
                while ring.snapshot(&filter::FlowFilter::default(), None).len() < 200 {
                    std::hint::spin_loop();
                }
                let rx = flows.subscribe();
                (ring.snapshot(&filter::FlowFilter::default(), None), rx)
            });
            let mut all = ports(seen);
            while let Ok(record) = rx.try_recv() {
                all.push(record.client.port());
            }
            all.sort_unstable();
            all.dedup();
            assert_eq!(all, (1..=RECORDS).collect::<Vec<_>>());
        }
    }

    #[test]
    fn parses_every_verdict_in_any_case() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
            assert_eq!(Verdict::parse(&v.as_str().to_ascii_lowercase()), Some(v));
        }
        assert_eq!(Verdict::parse("Audit"), Some(Verdict::Audit));
        assert_eq!(Verdict::parse("allowed"), None);
    }

    #[test]
    fn offered_tls_facts_are_bounded_and_name_known_versions_only() {
        let hello = tlsgate_wire::ClientHelloInfo {
            sni: Some("a.example".into()),
            alpn: (0..20)
                .map(|i| format!("p{i}").repeat(20).into_bytes())
                .collect(),
            legacy_version: 0x0303,
            supported_versions: vec![0x0303, 0x0304],
            hello_len: 0,
            consumed: 0,
        };
        let facts = TlsFacts::offered(&hello);
        assert_eq!(facts.alpn.len(), TlsFacts::MAX_ALPN);
        assert!(facts.alpn.iter().all(|p| p.len() <= TlsFacts::MAX_ALPN_LEN));
        assert_eq!(facts.version, Some("TLSv1.3"));
        let old = tlsgate_wire::ClientHelloInfo {
            supported_versions: Vec::new(),
            ..hello.clone()
        };
        assert_eq!(TlsFacts::offered(&old).version, Some("TLSv1.2"));
        assert_eq!(tls_version_name(0x7f1c), None);
    }

    #[tokio::test]
    async fn emit_redacts_configured_headers_and_queries_and_audits() {
        let ring = Arc::new(ring::FlowRing::new(4));
        let flows = Flows::new(8)
            .with_redaction(Redaction {
                headers: vec![http::HeaderName::from_static("x-api-key")],
                url_query: true,
            })
            .with_ring(ring.clone());
        let mut rx = flows.subscribe();
        let shared = crate::context::Shared {
            timeouts: Default::default(),
            limits: Default::default(),
            guard: crate::upstream::DestinationGuard::new(Vec::new()),
            resolver: crate::upstream::Resolver::new(None),
            flows,
            shutdown: Default::default(),
            force: Default::default(),
            tracker: Default::default(),
            upstream_pool: Default::default(),
        };
        let req = http::Request::get("https://h.example/p?token=1")
            .header("X-Api-Key", "k")
            .header("x-other", "v")
            .body(())
            .unwrap();
        let mut ctx = ConnCtx::new(
            "l".into(),
            Role::Intercept,
            Mode::Bump,
            "127.0.0.1:1".parse().unwrap(),
        );
        ctx.http = Some(HttpFacts::of(&req, "https", "h.example"));
        ctx.audit = Some(Audit::of(&ConnError::PolicyVerdict {
            reason: tlsgate_policy::DenyReason::PolicyDenied,
            rule: Some("r".into()),
        }));
        ctx.finish(&shared, crate::io::Moved::default(), &Ok(()));
        // The ring has the record as soon as it is emitted (no task in between), redacted.
        let kept = ring.snapshot(&filter::FlowFilter::default(), None);
        assert_eq!(kept.len(), 1);
        let record = rx.recv().await.unwrap();
        assert!(Arc::ptr_eq(&kept[0], &record));
        let http = record.http.as_ref().unwrap();
        assert_eq!(http.url, "https://h.example/p");
        let value = |k: &str| http.headers.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(value("x-api-key"), HttpFacts::REDACTED);
        assert_eq!(value("x-other"), "v");
        assert_eq!(record.verdict, Verdict::Audit);
        assert_eq!(record.reason, Some("policy_denied"));
        assert_eq!(record.rule.as_deref(), Some("r"));
        let json = hubble::flows(&record);
        assert_eq!(json[1]["flow"]["verdict"], "AUDIT");
        assert_eq!(json[1]["flow"]["drop_reason_desc"], "POLICY_DENIED");
    }
}
