//! Prometheus counters moved by every flow record at its one emission point ([`Metrics::count_flow`])
//! and by the accept loops, rendered as the text exposition format for `/metrics`. Every metric and
//! label is listed in docs/metrics.md; label values come from bounded sets (roles, modes, verdicts,
//! reason labels, status classes, operator-configured listener names), never from peer text.

mod histogram;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use histogram::{Histogram, MINT_SECONDS_BUCKETS, REQUEST_SECONDS_BUCKETS};

use crate::config::Transport;
use crate::error::ConnError;
use crate::flow::{FlowRecord, Mode, Role, Verdict};

/// `(role, mode, verdict, reason)`; reason is `""` for served flows.
type FlowKey = (&'static str, &'static str, &'static str, &'static str);

#[derive(Debug, Default)]
pub struct Metrics {
    /// Flows without a reason label (the served ones), `[role][mode][verdict]`. Every connection
    /// and every HTTP request moves one of these, from every worker: atomics, no lock.
    served_flows: [[[AtomicU64; Verdict::ALL.len()]; Mode::ALL.len()]; ROLES.len()],
    /// Flows with a reason label (refused, failed or audited). Reasons are static labels from an
    /// open set, so these are counted in a map behind a lock.
    flows_with_reason: Mutex<BTreeMap<FlowKey, u64>>,
    /// HTTP exchanges, `[role][verdict][status class]`.
    http: [[[AtomicU64; STATUS_CLASSES.len()]; Verdict::ALL.len()]; ROLES.len()],
    bytes_from_clients: AtomicU64,
    bytes_to_clients: AtomicU64,
    lost: AtomicU64,
    listeners: Mutex<Vec<Arc<ListenerGauges>>>,
    /// ClientHello peeks, `[role][outcome]`.
    hello_peeks: [[AtomicU64; PeekOutcome::ALL.len()]; ROLES.len()],
    /// Edge tunnels by `[transport][outcome]`, and those open by transport.
    tunnels: [[AtomicU64; TunnelOutcome::ALL.len()]; TRANSPORTS.len()],
    tunnels_active: [AtomicI64; TRANSPORTS.len()],
    relay_h2: RelayH2Counters,
    /// Origin certificates that failed verification, by the stable label of the flow records'
    /// `upstream_cert.error` (a fixed set; failures are rare, so a map behind a lock is fine).
    verify_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// HTTP exchange latency by role (request head in → response head out).
    request_seconds: RequestSeconds,
    /// Failed attempts on relay endpoints, each of which (re-)ejected the endpoint, by
    /// `(relay, endpoint, reason)`; at most [`MAX_ENDPOINT_SERIES`] series.
    endpoint_failures: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    /// Config reloads that were applied / rejected.
    reloads_applied: AtomicU64,
    reloads_rejected: AtomicU64,
}

/// Series of `tlsgate_relay_endpoint_failures_total` kept at most: relay addresses come from DNS,
/// so a relay whose answers keep changing must not grow the exposition without bound. Failures of
/// endpoints beyond it are counted under `endpoint="other"`.
pub const MAX_ENDPOINT_SERIES: usize = 256;

/// One listener's connection counters.
#[derive(Debug)]
pub struct ListenerGauges {
    pub listener: Arc<str>,
    pub role: &'static str,
    pub accepted: AtomicU64,
    pub active: AtomicI64,
}

/// Holds one active connection; dropping it ends it.
#[derive(Debug)]
pub struct ActiveConn(Arc<ListenerGauges>);

impl ListenerGauges {
    pub fn accept(self: &Arc<Self>) -> ActiveConn {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveConn(self.clone())
    }
}

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Roles in label order; [`role_index`] maps a role to its slot.
const ROLES: [Role; 3] = [Role::Edge, Role::Relay, Role::Intercept];

fn role_index(role: Role) -> usize {
    match role {
        Role::Edge => 0,
        Role::Relay => 1,
        Role::Intercept => 2,
    }
}

/// Tunnel transports in label order.
const TRANSPORTS: [(Transport, &str); 2] = [(Transport::H2, "h2"), (Transport::Tls, "tls")];

fn transport_index(transport: Transport) -> usize {
    match transport {
        Transport::H2 => 0,
        Transport::Tls => 1,
    }
}

/// How reading a connection's ClientHello ended (`outcome` label of
/// `tlsgate_client_hello_peeks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekOutcome {
    /// A whole ClientHello was buffered.
    Complete,
    /// The first bytes are not a TLS handshake (HTTP is then served where the role allows).
    NotTls,
    /// A malformed ClientHello (any `HelloError` but `TooLarge`).
    Invalid,
    /// The ClientHello exceeds `limits.max_client_hello`.
    TooLarge,
    /// The detect timeout passed with the ClientHello still incomplete.
    IncompleteTimeout,
    /// The client closed before the ClientHello was complete.
    ClosedEarly,
    /// Reading from the client failed.
    IoError,
}

impl PeekOutcome {
    pub const ALL: [Self; 7] = [
        Self::Complete,
        Self::NotTls,
        Self::Invalid,
        Self::TooLarge,
        Self::IncompleteTimeout,
        Self::ClosedEarly,
        Self::IoError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::NotTls => "not_tls",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::IncompleteTimeout => "incomplete_timeout",
            Self::ClosedEarly => "closed_early",
            Self::IoError => "io_error",
        }
    }

    /// The outcome of `detect::read_client_hello`'s result.
    pub fn of(result: Result<(), &ConnError>) -> Self {
        match result {
            Ok(()) => Self::Complete,
            Err(ConnError::ClientNotTls) => Self::NotTls,
            Err(ConnError::ClientHelloInvalid(tlsgate_wire::HelloError::TooLarge)) => {
                Self::TooLarge
            }
            Err(ConnError::ClientHelloInvalid(_)) => Self::Invalid,
            Err(ConnError::ClientHelloTimeout) => Self::IncompleteTimeout,
            Err(ConnError::ClientClosedEarly) => Self::ClosedEarly,
            Err(_) => Self::IoError,
        }
    }
}

/// How opening an edge → relay tunnel ended (`outcome` label of `tlsgate_tunnels_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelOutcome {
    /// The relay accepted: the outer TLS connection is up, or the CONNECT stream got its 200.
    Opened,
    /// The relay answered the CONNECT with another status (no route, policy, upstream down).
    RelayRefused,
    /// No connection to the relay (connect, outer TLS handshake, or no h2 connection in time).
    RelayUnavailable,
    /// The HTTP/2 exchange with the relay failed (stream or connection error).
    RelayError,
}

impl TunnelOutcome {
    pub const ALL: [Self; 4] = [
        Self::Opened,
        Self::RelayRefused,
        Self::RelayUnavailable,
        Self::RelayError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::RelayRefused => "relay_refused",
            Self::RelayUnavailable => "relay_unavailable",
            Self::RelayError => "relay_error",
        }
    }

    pub fn of(result: Result<(), &ConnError>) -> Self {
        match result {
            Ok(()) => Self::Opened,
            Err(ConnError::RelayRefused(_)) => Self::RelayRefused,
            Err(ConnError::RelayUnavailable(_)) => Self::RelayUnavailable,
            Err(_) => Self::RelayError,
        }
    }
}

/// The relay's HTTP/2 server side: outer connections and the streams they carry.
#[derive(Debug, Default)]
struct RelayH2Counters {
    conns_accepted: AtomicU64,
    conns_active: AtomicI64,
    streams: AtomicU64,
    streams_active: AtomicI64,
    streams_reset: AtomicU64,
}

/// One request latency histogram per role.
#[derive(Debug)]
struct RequestSeconds([Histogram; ROLES.len()]);

impl Default for RequestSeconds {
    fn default() -> Self {
        Self(std::array::from_fn(|_| {
            Histogram::new(&REQUEST_SECONDS_BUCKETS)
        }))
    }
}

/// Holds one open edge tunnel in `tlsgate_tunnels_active`; dropping it closes it.
#[derive(Debug)]
pub struct OpenTunnel {
    metrics: Arc<Metrics>,
    transport: usize,
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.metrics.tunnels_active[self.transport].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one outer HTTP/2 connection accepted by a relay; dropping it ends it.
#[derive(Debug)]
pub struct RelayH2Conn(Arc<Metrics>);

impl Drop for RelayH2Conn {
    fn drop(&mut self) {
        self.0.relay_h2.conns_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One HTTP/2 stream a relay is serving. Dropped before [`RelayH2Stream::answered`] — hyper drops
/// a stream's service future when the edge resets the stream or the connection goes away — it
/// counts as reset.
#[derive(Debug)]
pub struct RelayH2Stream {
    metrics: Arc<Metrics>,
    answered: bool,
}

impl RelayH2Stream {
    /// The relay sent its response head: the stream was not abandoned.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for RelayH2Stream {
    fn drop(&mut self) {
        let relay = &self.metrics.relay_h2;
        relay.streams_active.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            relay.streams_reset.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Status classes in label order; [`status_class`] maps a response to its slot.
const STATUS_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "none"];

fn status_class(status: Option<u16>) -> usize {
    match status.map(|code| code / 100) {
        Some(class @ 1..=5) => usize::from(class) - 1,
        Some(_) => 5,
        None => 6,
    }
}

impl Metrics {
    /// Counts one emitted record.
    pub fn count_flow(&self, r: &FlowRecord) {
        if let Some(reason) = r.reason {
            let key = (r.role.as_str(), r.mode.as_str(), r.verdict.as_str(), reason);
            // Counters stay meaningful after a panic elsewhere: a poisoned map is still a valid map.
            *self
                .flows_with_reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default() += 1;
        } else {
            self.served_flows[role_index(r.role)][r.mode as usize][r.verdict as usize]
                .fetch_add(1, Ordering::Relaxed);
        }
        if r.http.is_some() {
            self.http[role_index(r.role)][r.verdict as usize][status_class(r.status)]
                .fetch_add(1, Ordering::Relaxed);
        }
        // An upgraded exchange (101) is recorded when its tunnel ends: not a request latency.
        if r.http.is_some() && r.status != Some(101) {
            self.request_seconds.0[role_index(r.role)].observe(r.duration);
        }
        self.bytes_from_clients
            .fetch_add(r.bytes_from_client, Ordering::Relaxed);
        self.bytes_to_clients
            .fetch_add(r.bytes_to_client, Ordering::Relaxed);
    }

    /// Counts one ClientHello read by `role` (`detect::client_hello`).
    pub fn count_hello(&self, role: Role, result: Result<(), &ConnError>) {
        let outcome = PeekOutcome::of(result) as usize;
        self.hello_peeks[role_index(role)][outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt to open an edge → relay tunnel; an opened one stays in
    /// `tlsgate_tunnels_active` until the returned guard drops.
    pub fn count_tunnel(
        self: &Arc<Self>,
        transport: Transport,
        result: Result<(), &ConnError>,
    ) -> Option<OpenTunnel> {
        let t = transport_index(transport);
        let outcome = TunnelOutcome::of(result);
        self.tunnels[t][outcome as usize].fetch_add(1, Ordering::Relaxed);
        if outcome != TunnelOutcome::Opened {
            return None;
        }
        self.tunnels_active[t].fetch_add(1, Ordering::Relaxed);
        Some(OpenTunnel {
            metrics: self.clone(),
            transport: t,
        })
    }

    /// Counts an outer HTTP/2 connection a relay accepted; active until the guard drops.
    pub fn relay_h2_conn(self: &Arc<Self>) -> RelayH2Conn {
        self.relay_h2.conns_accepted.fetch_add(1, Ordering::Relaxed);
        self.relay_h2.conns_active.fetch_add(1, Ordering::Relaxed);
        RelayH2Conn(self.clone())
    }

    /// Counts a stream on a relay's HTTP/2 connection; active until the guard drops.
    pub fn relay_h2_stream(self: &Arc<Self>) -> RelayH2Stream {
        self.relay_h2.streams.fetch_add(1, Ordering::Relaxed);
        self.relay_h2.streams_active.fetch_add(1, Ordering::Relaxed);
        RelayH2Stream {
            metrics: self.clone(),
            answered: false,
        }
    }

    /// Counts an origin certificate that failed verification (exempt host or not); `reason` is
    /// one of `flow::UpstreamCert::ERRORS`.
    pub fn count_verify_failure(&self, reason: &'static str) {
        *self
            .verify_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts a failed attempt on relay endpoint `endpoint` of relay `relay`, which ejected it
    /// (again) for its backoff; `reason` is one of the endpoint set's stable ejection labels.
    pub fn count_endpoint_failure(&self, relay: &str, endpoint: SocketAddr, reason: &'static str) {
        let mut series = self
            .endpoint_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut key = (relay.to_owned(), endpoint.to_string(), reason);
        if !series.contains_key(&key) && series.len() >= MAX_ENDPOINT_SERIES {
            key.1 = "other".into();
        }
        *series.entry(key).or_default() += 1;
    }

    /// Counts records a flow subscriber (the ring or an admin follower) missed by falling behind.
    pub fn count_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one config reload attempt: `applied` (the new config is in force) or rejected (the
    /// old one stays).
    pub fn count_reload(&self, applied: bool) {
        let counter = if applied {
            &self.reloads_applied
        } else {
            &self.reloads_rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection counters of a listener, registered once per listener.
    pub fn listener(&self, listener: Arc<str>, role: &'static str) -> Arc<ListenerGauges> {
        let gauges = Arc::new(ListenerGauges {
            listener,
            role,
            accepted: AtomicU64::new(0),
            active: AtomicI64::new(0),
        });
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(gauges.clone());
        gauges
    }

    /// The Prometheus text exposition of every metric, with the interception listeners'
    /// certificate stores (`certs`, read at scrape time).
    pub fn render(&self, certs: &[CertGauges]) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "tlsgate_flows_total",
            "counter",
            "Flow records (connections, tunnelled streams, HTTP exchanges) by outcome.",
        );
        for ((role, mode, verdict, reason), n) in self.flow_counts() {
            let _ = writeln!(
                out,
                "tlsgate_flows_total{{role=\"{role}\",mode=\"{mode}\",verdict=\"{verdict}\",reason=\"{reason}\"}} {n}"
            );
        }
        family(
            &mut out,
            "tlsgate_http_requests_total",
            "counter",
            "HTTP exchanges by verdict and response status class.",
        );
        for ((role, verdict, class), n) in self.http_counts() {
            let _ = writeln!(
                out,
                "tlsgate_http_requests_total{{role=\"{role}\",verdict=\"{verdict}\",status_class=\"{class}\"}} {n}"
            );
        }
        family(
            &mut out,
            "tlsgate_bytes_total",
            "counter",
            "Bytes of finished flows, by direction as seen from the client.",
        );
        let _ = writeln!(
            out,
            "tlsgate_bytes_total{{direction=\"from_client\"}} {}",
            self.bytes_from_clients.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "tlsgate_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes_to_clients.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "tlsgate_flow_records_lost_total",
            "counter",
            "Flow records a subscriber (flow ring, admin follower) missed by falling behind.",
        );
        let _ = writeln!(
            out,
            "tlsgate_flow_records_lost_total {}",
            self.lost.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "tlsgate_config_reloads_total",
            "counter",
            "Config reloads (SIGHUP, admin POST /reload) by result: applied or rejected.",
        );
        for (result, counter) in [
            ("applied", &self.reloads_applied),
            ("rejected", &self.reloads_rejected),
        ] {
            let _ = writeln!(
                out,
                "tlsgate_config_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        family(
            &mut out,
            "tlsgate_connections_accepted_total",
            "counter",
            "Connections accepted (and admitted) by listener.",
        );
        for g in &listeners {
            let _ = writeln!(
                out,
                "tlsgate_connections_accepted_total{{listener=\"{}\",role=\"{}\"}} {}",
                escape(&g.listener),
                g.role,
                g.accepted.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "tlsgate_connections_active",
            "gauge",
            "Connections being served by listener.",
        );
        for g in &listeners {
            let _ = writeln!(
                out,
                "tlsgate_connections_active{{listener=\"{}\",role=\"{}\"}} {}",
                escape(&g.listener),
                g.role,
                g.active.load(Ordering::Relaxed)
            );
        }
        let workers = crate::workers::open_connections();
        if !workers.is_empty() {
            family(
                &mut out,
                "tlsgate_worker_connections",
                "gauge",
                "Client connections open on each worker thread (tlsgate run --placement).",
            );
            for (worker, open) in workers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tlsgate_worker_connections{{worker=\"{worker}\"}} {open}"
                );
            }
        }
        family(
            &mut out,
            "tlsgate_cert_mints_total",
            "counter",
            "Leaf certificates signed by an interception listener.",
        );
        for c in certs {
            let _ = writeln!(
                out,
                "tlsgate_cert_mints_total{{listener=\"{}\"}} {}",
                escape(&c.listener),
                c.mints
            );
        }
        family(
            &mut out,
            "tlsgate_cert_cache_lookups_total",
            "counter",
            "Minted-certificate cache lookups by result.",
        );
        for c in certs {
            let l = escape(&c.listener);
            let _ = writeln!(
                out,
                "tlsgate_cert_cache_lookups_total{{listener=\"{l}\",result=\"hit\"}} {}",
                c.stats.hits
            );
            let _ = writeln!(
                out,
                "tlsgate_cert_cache_lookups_total{{listener=\"{l}\",result=\"miss\"}} {}",
                c.stats.misses
            );
        }
        family(
            &mut out,
            "tlsgate_cert_cache_entries",
            "gauge",
            "Minted certificates cached.",
        );
        for c in certs {
            let _ = writeln!(
                out,
                "tlsgate_cert_cache_entries{{listener=\"{}\"}} {}",
                escape(&c.listener),
                c.stats.len
            );
        }
        family(
            &mut out,
            "tlsgate_cert_mint_duration_seconds",
            "histogram",
            "Time to sign one leaf certificate on the blocking pool.",
        );
        for c in certs {
            let labels = format!("listener=\"{}\"", escape(&c.listener));
            c.mint_seconds
                .render(&mut out, "tlsgate_cert_mint_duration_seconds", &labels);
        }
        self.render_handshakes(&mut out);
        self.render_relay_h2(&mut out);
        family(
            &mut out,
            "tlsgate_relay_endpoint_failures_total",
            "counter",
            "Failed attempts on an edge's relay endpoints, each ejecting the endpoint for its backoff, by reason.",
        );
        for ((relay, endpoint, reason), n) in self
            .endpoint_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "tlsgate_relay_endpoint_failures_total{{relay=\"{}\",endpoint=\"{}\",reason=\"{reason}\"}} {n}",
                escape(relay),
                escape(endpoint)
            );
        }
        family(
            &mut out,
            "tlsgate_http_request_duration_seconds",
            "histogram",
            "HTTP exchanges from request head received to response head sent, by role.",
        );
        for role in ROLES {
            let labels = format!("role=\"{}\"", role.as_str());
            self.request_seconds.0[role_index(role)].render(
                &mut out,
                "tlsgate_http_request_duration_seconds",
                &labels,
            );
        }
        out
    }

    /// Every flow series counted so far, in label order.
    fn flow_counts(&self) -> BTreeMap<FlowKey, u64> {
        let mut counts = self
            .flows_with_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for role in ROLES {
            for mode in Mode::ALL {
                for verdict in Verdict::ALL {
                    let n = self.served_flows[role_index(role)][mode as usize][verdict as usize]
                        .load(Ordering::Relaxed);
                    if n > 0 {
                        counts.insert((role.as_str(), mode.as_str(), verdict.as_str(), ""), n);
                    }
                }
            }
        }
        counts
    }

    /// Every HTTP exchange series counted so far, in label order.
    fn http_counts(&self) -> BTreeMap<(&'static str, &'static str, &'static str), u64> {
        let mut counts = BTreeMap::new();
        for role in ROLES {
            for verdict in Verdict::ALL {
                for (i, class) in STATUS_CLASSES.into_iter().enumerate() {
                    let n =
                        self.http[role_index(role)][verdict as usize][i].load(Ordering::Relaxed);
                    if n > 0 {
                        counts.insert((role.as_str(), verdict.as_str(), class), n);
                    }
                }
            }
        }
        counts
    }

    fn render_handshakes(&self, out: &mut String) {
        family(
            out,
            "tlsgate_client_hello_peeks_total",
            "counter",
            "ClientHello reads by role and outcome.",
        );
        for role in ROLES {
            for outcome in PeekOutcome::ALL {
                let n =
                    self.hello_peeks[role_index(role)][outcome as usize].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tlsgate_client_hello_peeks_total{{role=\"{}\",outcome=\"{}\"}} {n}",
                    role.as_str(),
                    outcome.as_str()
                );
            }
        }
        family(
            out,
            "tlsgate_tunnels_total",
            "counter",
            "Edge to relay tunnel openings by transport and outcome.",
        );
        for (transport, name) in TRANSPORTS {
            for outcome in TunnelOutcome::ALL {
                let n = self.tunnels[transport_index(transport)][outcome as usize]
                    .load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tlsgate_tunnels_total{{transport=\"{name}\",outcome=\"{}\"}} {n}",
                    outcome.as_str()
                );
            }
        }
        family(
            out,
            "tlsgate_tunnels_active",
            "gauge",
            "Edge to relay tunnels open, by transport.",
        );
        for (transport, name) in TRANSPORTS {
            let _ = writeln!(
                out,
                "tlsgate_tunnels_active{{transport=\"{name}\"}} {}",
                self.tunnels_active[transport_index(transport)].load(Ordering::Relaxed)
            );
        }
        family(
            out,
            "tlsgate_upstream_cert_verify_failures_total",
            "counter",
            "Origin certificates that failed verification, by reason.",
        );
        for (reason, n) in self
            .verify_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "tlsgate_upstream_cert_verify_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }

    fn render_relay_h2(&self, out: &mut String) {
        let relay = &self.relay_h2;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let gauge = |g: &AtomicI64| g.load(Ordering::Relaxed).to_string();
        for (name, kind, help, value) in [
            (
                "tlsgate_relay_h2_connections_accepted_total",
                "counter",
                "Outer HTTP/2 connections a relay accepted.",
                load(&relay.conns_accepted),
            ),
            (
                "tlsgate_relay_h2_connections_active",
                "gauge",
                "Outer HTTP/2 connections a relay is serving.",
                gauge(&relay.conns_active),
            ),
            (
                "tlsgate_relay_h2_streams_total",
                "counter",
                "HTTP/2 streams (CONNECT tunnels, forwarded requests) a relay received.",
                load(&relay.streams),
            ),
            (
                "tlsgate_relay_h2_streams_active",
                "gauge",
                "HTTP/2 streams a relay is serving (a CONNECT stream until its tunnel ends).",
                gauge(&relay.streams_active),
            ),
            (
                "tlsgate_relay_h2_streams_reset_total",
                "counter",
                "HTTP/2 streams the edge reset (or lost with its connection) before the relay answered.",
                load(&relay.streams_reset),
            ),
        ] {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// One interception listener's certificate store, read at scrape time.
#[derive(Debug, Clone)]
pub struct CertGauges {
    pub listener: String,
    pub mints: u64,
    pub stats: tlsgate_ca::CacheStats,
    /// The store's mint latency histogram.
    pub mint_seconds: Arc<Histogram>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::context::HttpFacts;
    use crate::flow::{FlowId, Mode, Role, Verdict};

    #[test]
    fn docs_list_every_metric_and_the_ring_default() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/");
        let metrics_md = std::fs::read_to_string(format!("{docs}metrics.md")).unwrap();
        let rendered = Metrics::default().render(&[]);
        let families: Vec<&str> = rendered
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert!(families.len() >= 9);
        for name in families {
            assert!(
                metrics_md.contains(&format!("| `{name}` |")),
                "docs/metrics.md misses {name}"
            );
        }
        for (name, bounds) in [
            (
                "tlsgate_http_request_duration_seconds",
                &REQUEST_SECONDS_BUCKETS[..],
            ),
            (
                "tlsgate_cert_mint_duration_seconds",
                &MINT_SECONDS_BUCKETS[..],
            ),
        ] {
            let listed: Vec<String> = bounds.iter().map(f64::to_string).collect();
            let row = format!("| `{name}` | {} |", listed.join(", "));
            assert!(metrics_md.contains(&row), "docs/metrics.md misses {row}");
        }
        let flows_md = std::fs::read_to_string(format!("{docs}flows.md")).unwrap();
        let default = crate::config::FlowSettings::DEFAULT_RING_SIZE;
        assert!(flows_md.contains(&format!("ring_size: {default} ")));
        assert!(flows_md.contains(&format!(
            "(default {default}, 1..={})",
            crate::config::FlowSettings::MAX_RING_SIZE
        )));
    }

    #[test]
    fn the_label_tables_are_in_declaration_order() {
        for (i, mode) in Mode::ALL.into_iter().enumerate() {
            assert_eq!(mode as usize, i, "{}", mode.as_str());
        }
        for (i, verdict) in Verdict::ALL.into_iter().enumerate() {
            assert_eq!(verdict as usize, i, "{}", verdict.as_str());
        }
        let classes = [
            (101, "1xx"),
            (204, "2xx"),
            (302, "3xx"),
            (404, "4xx"),
            (503, "5xx"),
        ];
        for (code, class) in classes.into_iter().chain([(600, "other"), (99, "other")]) {
            assert_eq!(STATUS_CLASSES[status_class(Some(code))], class, "{code}");
        }
        assert_eq!(STATUS_CLASSES[status_class(None)], "none");
    }

    /// Each served (role, mode, verdict) and each (role, verdict, status class) is its own series,
    /// counted exactly from two threads at once and rendered in label order.
    #[test]
    fn served_flows_and_requests_are_counted_per_series_from_many_threads() {
        let m = Metrics::default();
        let statuses = [
            Some(101),
            Some(200),
            Some(301),
            Some(404),
            Some(502),
            Some(999),
            None,
        ];
        let mut records = Vec::new();
        for role in ROLES {
            for mode in Mode::ALL {
                for verdict in Verdict::ALL {
                    let mut r = record(role, mode, verdict);
                    r.status = statuses[records.len() % statuses.len()];
                    records.push(r);
                }
            }
        }
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..500 {
                        for r in &records {
                            m.count_flow(r);
                        }
                    }
                });
            }
        });
        let text = m.render(&[]);
        let mut flows = Vec::new();
        let mut http = BTreeMap::new();
        for r in &records {
            flows.push(format!(
                "tlsgate_flows_total{{role=\"{}\",mode=\"{}\",verdict=\"{}\",reason=\"\"}} 1000",
                r.role.as_str(),
                r.mode.as_str(),
                r.verdict.as_str()
            ));
            let class = STATUS_CLASSES[status_class(r.status)];
            *http
                .entry((r.role.as_str(), r.verdict.as_str(), class))
                .or_insert(0) += 1000;
        }
        flows.sort();
        let rendered: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tlsgate_flows_total{"))
            .collect();
        assert_eq!(rendered, flows);
        let http: Vec<String> = http
            .into_iter()
            .map(|((role, verdict, class), n)| {
                format!("tlsgate_http_requests_total{{role=\"{role}\",verdict=\"{verdict}\",status_class=\"{class}\"}} {n}")
            })
            .collect();
        let rendered: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tlsgate_http_requests_total{"))
            .collect();
        assert_eq!(rendered, http);
    }

    fn record(role: Role, mode: Mode, verdict: Verdict) -> FlowRecord {
        FlowRecord {
            time: SystemTime::now(),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict,
            rule: None,
            listener: Arc::from("l"),
            role,
            mode,
            client: ([127, 0, 0, 1], 1).into(),
            name: None,
            upstream: None,
            reason: None,
            detail: None,
            status: None,
            http: Some(HttpFacts {
                method: "GET".into(),
                url: "https://x/".into(),
                protocol: "HTTP/1.1",
                headers: Vec::new(),
            }),
            bytes_from_client: 0,
            bytes_to_client: 0,
            duration: Duration::ZERO,
            tls: None,
        }
    }

    #[test]
    fn counts_flows_requests_bytes_and_connections() {
        let m = Metrics::default();
        let mut r = FlowRecord {
            time: SystemTime::now(),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict: Verdict::Dropped,
            rule: None,
            listener: Arc::from("proxy"),
            role: Role::Intercept,
            mode: Mode::Bump,
            client: ([127, 0, 0, 1], 1).into(),
            name: None,
            upstream: None,
            reason: Some("policy_denied"),
            detail: None,
            status: Some(403),
            http: Some(HttpFacts {
                method: "GET".into(),
                url: "https://x/".into(),
                protocol: "HTTP/1.1",
                headers: Vec::new(),
            }),
            bytes_from_client: 10,
            bytes_to_client: 20,
            duration: Duration::ZERO,
            tls: None,
        };
        m.count_flow(&r);
        m.count_flow(&r);
        r.http = None;
        r.verdict = Verdict::Forwarded;
        r.reason = None;
        m.count_flow(&r);
        let gauges = m.listener(Arc::from("pro\"xy"), "intercept");
        let conn = gauges.accept();
        let text = m.render(&[]);
        assert!(text.contains("tlsgate_flows_total{role=\"intercept\",mode=\"bump\",verdict=\"DROPPED\",reason=\"policy_denied\"} 2\n"), "{text}");
        assert!(text.contains("tlsgate_flows_total{role=\"intercept\",mode=\"bump\",verdict=\"FORWARDED\",reason=\"\"} 1\n"));
        assert!(text.contains("tlsgate_http_requests_total{role=\"intercept\",verdict=\"DROPPED\",status_class=\"4xx\"} 2\n"));
        assert!(text.contains("tlsgate_bytes_total{direction=\"from_client\"} 30\n"));
        // Only the two HTTP records are request latencies, both of the intercept role.
        assert!(text.contains(
            "tlsgate_http_request_duration_seconds_bucket{role=\"intercept\",le=\"0.001\"} 2\n"
        ));
        assert!(
            text.contains("tlsgate_http_request_duration_seconds_count{role=\"intercept\"} 2\n")
        );
        assert!(text.contains("tlsgate_http_request_duration_seconds_count{role=\"edge\"} 0\n"));
        assert!(
            text.contains(
                "tlsgate_connections_active{listener=\"pro\\\"xy\",role=\"intercept\"} 1\n"
            )
        );
        drop(conn);
        let text = m.render(&[]);
        assert!(
            text.contains(
                "tlsgate_connections_active{listener=\"pro\\\"xy\",role=\"intercept\"} 0\n"
            )
        );
        assert!(text.contains(
            "tlsgate_connections_accepted_total{listener=\"pro\\\"xy\",role=\"intercept\"} 1\n"
        ));
    }

    fn sample(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn counts_client_hello_peeks_by_role_and_outcome() {
        let m = Metrics::default();
        m.count_hello(Role::Edge, Ok(()));
        m.count_hello(Role::Edge, Ok(()));
        m.count_hello(Role::Relay, Err(&ConnError::ClientNotTls));
        let too_large = ConnError::ClientHelloInvalid(tlsgate_wire::HelloError::TooLarge);
        m.count_hello(Role::Intercept, Err(&too_large));
        let invalid = ConnError::ClientHelloInvalid(tlsgate_wire::HelloError::EmptyRecord);
        m.count_hello(Role::Intercept, Err(&invalid));
        m.count_hello(Role::Intercept, Err(&ConnError::ClientHelloTimeout));
        m.count_hello(Role::Intercept, Err(&ConnError::ClientClosedEarly));
        let io = ConnError::ClientIo(std::io::ErrorKind::ConnectionReset.into());
        m.count_hello(Role::Intercept, Err(&io));
        let text = m.render(&[]);
        let peeks = |role: &str, outcome: &str| {
            let series = format!(
                "tlsgate_client_hello_peeks_total{{role=\"{role}\",outcome=\"{outcome}\"}}"
            );
            sample(&text, &series)
        };
        assert_eq!(peeks("edge", "complete"), 2);
        assert_eq!(peeks("relay", "complete"), 0);
        assert_eq!(peeks("relay", "not_tls"), 1);
        for outcome in [
            "too_large",
            "invalid",
            "incomplete_timeout",
            "closed_early",
            "io_error",
        ] {
            assert_eq!(peeks("intercept", outcome), 1, "{outcome}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("tlsgate_client_hello_peeks_total{"));
        assert_eq!(series.count(), ROLES.len() * PeekOutcome::ALL.len());
    }

    #[test]
    fn counts_tunnels_and_keeps_opened_ones_active_until_dropped() {
        let m = Arc::new(Metrics::default());
        let open = m.count_tunnel(Transport::H2, Ok(()));
        assert!(open.is_some());
        let refused = m.count_tunnel(Transport::H2, Err(&ConnError::RelayRefused(403)));
        assert!(refused.is_none());
        let down = ConnError::RelayUnavailable("connection refused".into());
        assert!(m.count_tunnel(Transport::Tls, Err(&down)).is_none());
        let tls = m.count_tunnel(Transport::Tls, Ok(()));
        let text = m.render(&[]);
        let total = |t: &str, o: &str| {
            sample(
                &text,
                &format!("tlsgate_tunnels_total{{transport=\"{t}\",outcome=\"{o}\"}}"),
            )
        };
        assert_eq!(total("h2", "opened"), 1);
        assert_eq!(total("h2", "relay_refused"), 1);
        assert_eq!(total("tls", "relay_unavailable"), 1);
        assert_eq!(total("tls", "opened"), 1);
        assert_eq!(total("tls", "relay_error"), 0);
        assert_eq!(sample(&text, "tlsgate_tunnels_active{transport=\"h2\"}"), 1);
        drop((open, tls));
        let text = m.render(&[]);
        assert_eq!(sample(&text, "tlsgate_tunnels_active{transport=\"h2\"}"), 0);
        assert_eq!(
            sample(&text, "tlsgate_tunnels_active{transport=\"tls\"}"),
            0
        );
    }

    #[test]
    fn relay_h2_streams_dropped_before_answering_count_as_reset() {
        let m = Arc::new(Metrics::default());
        let conn = m.relay_h2_conn();
        let mut answered = m.relay_h2_stream();
        answered.answered();
        let abandoned = m.relay_h2_stream();
        let text = m.render(&[]);
        assert_eq!(
            sample(&text, "tlsgate_relay_h2_connections_accepted_total"),
            1
        );
        assert_eq!(sample(&text, "tlsgate_relay_h2_connections_active"), 1);
        assert_eq!(sample(&text, "tlsgate_relay_h2_streams_total"), 2);
        assert_eq!(sample(&text, "tlsgate_relay_h2_streams_active"), 2);
        drop((answered, abandoned, conn));
        let text = m.render(&[]);
        assert_eq!(sample(&text, "tlsgate_relay_h2_connections_active"), 0);
        assert_eq!(sample(&text, "tlsgate_relay_h2_streams_active"), 0);
        assert_eq!(sample(&text, "tlsgate_relay_h2_streams_reset_total"), 1);
    }

    #[test]
    fn relay_endpoint_failures_by_endpoint_and_reason_with_a_bounded_series_count() {
        let m = Metrics::default();
        let a: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:443".parse().unwrap();
        m.count_endpoint_failure("r", a, "connect_refused");
        m.count_endpoint_failure("r", a, "connect_refused");
        m.count_endpoint_failure("r", b, "connect_timeout");
        let text = m.render(&[]);
        let failures = |e: &str, reason: &str| {
            sample(
                &text,
                &format!(
                    "tlsgate_relay_endpoint_failures_total{{relay=\"r\",endpoint=\"{e}\",reason=\"{reason}\"}}"
                ),
            )
        };
        assert_eq!(failures("192.0.2.1:443", "connect_refused"), 2);
        assert_eq!(failures("192.0.2.2:443", "connect_timeout"), 1);
        // Endpoints that keep changing stop adding series at the bound.
        for port in 0..(MAX_ENDPOINT_SERIES as u16 + 10) {
            m.count_endpoint_failure("r", SocketAddr::new(a.ip(), 1000 + port), "connect_refused");
        }
        let text = m.render(&[]);
        let series = text
            .lines()
            .filter(|l| l.starts_with("tlsgate_relay_endpoint_failures_total{"))
            .count();
        assert_eq!(series, MAX_ENDPOINT_SERIES + 1, "the bound plus `other`");
        assert_eq!(
            sample(
                &text,
                "tlsgate_relay_endpoint_failures_total{relay=\"r\",endpoint=\"other\",reason=\"connect_refused\"}"
            ),
            12
        );
    }

    #[test]
    fn counts_verify_failures_and_renders_mint_latency_per_listener() {
        let m = Metrics::default();
        m.count_verify_failure("unknown_issuer");
        m.count_verify_failure("unknown_issuer");
        m.count_verify_failure("name_mismatch");
        let mint_seconds = Arc::new(Histogram::new(&MINT_SECONDS_BUCKETS));
        mint_seconds.observe(Duration::from_micros(300));
        let certs = [CertGauges {
            listener: "proxy".into(),
            mints: 1,
            stats: tlsgate_ca::CacheStats::default(),
            mint_seconds,
        }];
        let text = m.render(&certs);
        let failures = |r: &str| {
            sample(
                &text,
                &format!("tlsgate_upstream_cert_verify_failures_total{{reason=\"{r}\"}}"),
            )
        };
        assert_eq!(failures("unknown_issuer"), 2);
        assert_eq!(failures("name_mismatch"), 1);
        let mint = "tlsgate_cert_mint_duration_seconds";
        assert_eq!(
            sample(
                &text,
                &format!("{mint}_bucket{{listener=\"proxy\",le=\"0.00025\"}}")
            ),
            0
        );
        assert_eq!(
            sample(
                &text,
                &format!("{mint}_bucket{{listener=\"proxy\",le=\"0.0005\"}}")
            ),
            1
        );
        assert_eq!(
            sample(&text, &format!("{mint}_count{{listener=\"proxy\"}}")),
            1
        );
    }
}
