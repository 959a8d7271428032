//! A relay's endpoints, kept in one place for both transports (Envoy's STRICT_DNS cluster with
//! ROUND_ROBIN): the addresses the relay's host resolves to (A and AAAA), re-resolved every
//! `resolve_interval`; new tunnels are spread over the healthy ones in turn; an endpoint that fails
//! (connect refused or timed out, TLS handshake failure, h2 connection error) is ejected and becomes
//! eligible again after an exponential backoff (`retry_backoff_min` doubling up to `retry_backoff_max`).
//!
//! When every endpoint is ejected, the ejected ones are still offered (soonest retry first) rather
//! than failing outright, like Envoy's panic threshold: a relay that is back is found at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{EndpointSettings, RelayUpstream};
use crate::error::ConnError;
use crate::metrics::Metrics;
use crate::upstream::Resolver;

/// Why an endpoint was ejected: a stable label for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    ConnectRefused,
    ConnectTimeout,
    ConnectFailed,
    HandshakeFailed,
    HandshakeTimeout,
    /// The relay did not negotiate ALPN `h2`, or the HTTP/2 handshake failed.
    H2HandshakeFailed,
    /// An established HTTP/2 connection ended with an error, or a stream could not be opened on it.
    H2ConnectionError,
    /// It had not answered (TCP connect, TLS handshake or CONNECT) [`HEDGE_AFTER`] into a tunnel
    /// attempt that another endpoint then served: a silent link looks like this.
    AnswerSlow,
}

/// How long a tunnel attempt waits for one endpoint before also trying the next one (the first to
/// answer serves the tunnel, like happy eyeballs across relays). A relay that answers a handshake
/// in more than a second is either far away or unreachable without saying so (a cut link drops
/// packets: no refusal, no reset); either way the next endpoint is the better bet.
pub const HEDGE_AFTER: Duration = Duration::from_secs(1);

impl EjectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectFailed => "connect_failed",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::H2HandshakeFailed => "h2_handshake_failed",
            Self::H2ConnectionError => "h2_connection_error",
            Self::AnswerSlow => "answer_slow",
        }
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    addr: SocketAddr,
    /// Consecutive failures; 0: healthy.
    failures: u32,
    /// While ejected: when the endpoint may be tried again.
    retry_at: Option<Instant>,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            failures: 0,
            retry_at: None,
        }
    }

    fn usable(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }
}

/// The endpoint set of one relay.
pub struct Endpoints {
    relay: Arc<RelayUpstream>,
    settings: EndpointSettings,
    /// A resolver with its own cache, emptied before each re-resolution (Envoy's STRICT_DNS
    /// re-resolves every `dns_refresh_rate` whatever the TTL).
    resolver: Resolver,
    set: Mutex<Vec<Endpoint>>,
    next: AtomicUsize,
    /// Bumped whenever the set of addresses changes.
    version: watch::Sender<u64>,
    /// The same count, read without a lock by [`Endpoints::generation`].
    generation: AtomicU64,
    /// How many endpoints of the set have failed since they last succeeded: while 0, every
    /// endpoint is usable and [`Endpoints::succeeded`] has nothing to reset.
    failing: AtomicUsize,
    /// Serialises the first resolution so a burst of tunnels asks once.
    first: tokio::sync::Mutex<()>,
    refresher: Once,
    shutdown: CancellationToken,
    /// Where failed attempts are counted (`tlsgate_relay_endpoint_failures_total`).
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("relay", &self.relay.name)
            .field("set", &self.lock().as_slice())
            .finish()
    }
}

impl Endpoints {
    pub fn new(
        relay: Arc<RelayUpstream>,
        resolver: &Resolver,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings: relay.endpoints,
            relay,
            resolver: resolver.dedicated(),
            set: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            version: watch::Sender::new(0),
            generation: AtomicU64::new(0),
            failing: AtomicUsize::new(0),
            first: tokio::sync::Mutex::new(()),
            refresher: Once::new(),
            shutdown,
            metrics,
        }
    }

    pub fn relay_name(&self) -> &str {
        &self.relay.name
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Endpoint>> {
        // A panic while holding the lock cannot leave the list half-updated (every update is a
        // single assignment), so a poisoned lock's data is still good.
        self.set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves the relay's host if no address is known yet, and starts the periodic
    /// re-resolution. Fails only when there is no address at all.
    pub async fn ensure_resolved(self: &Arc<Self>) -> Result<(), ConnError> {
        self.refresher.call_once(|| {
            let weak = Arc::downgrade(self);
            let shutdown = self.shutdown.clone();
            let interval = self.settings.resolve_interval;
            tokio::spawn(refresh(weak, interval, shutdown));
        });
        if !self.lock().is_empty() {
            return Ok(());
        }
        let _first = self.first.lock().await;
        if !self.lock().is_empty() {
            return Ok(());
        }
        self.resolve().await
    }

    /// Asks for the relay's addresses now and merges them into the set: addresses that stay keep
    /// their health, new ones start healthy, gone ones are dropped. A failed or empty answer keeps
    /// the old set (a DNS outage must not take the relay away).
    pub async fn resolve(&self) -> Result<(), ConnError> {
        self.resolver.clear_cache();
        let mut addrs = self
            .resolver
            .resolve(&self.relay.host, self.relay.port)
            .await?;
        addrs.sort();
        addrs.dedup();
        let changed = {
            let mut set = self.lock();
            let before: Vec<SocketAddr> = set.iter().map(|e| e.addr).collect();
            if before == addrs {
                false
            } else {
                let merged = addrs
                    .iter()
                    .map(|addr| {
                        set.iter()
                            .find(|e| e.addr == *addr)
                            .cloned()
                            .unwrap_or_else(|| Endpoint::new(*addr))
                    })
                    .collect();
                *set = merged;
                self.count_failing(&set);
                true
            }
        };
        if changed {
            tracing::info!(relay = %self.relay.name, endpoints = ?addrs, "relay endpoints resolved");
            self.generation.fetch_add(1, Ordering::Release);
            self.version.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// The current addresses, in resolution order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.lock().iter().map(|e| e.addr).collect()
    }

    /// Counts the changes of the address set, like [`Endpoints::subscribe`]'s value, without a
    /// lock: a set read after a generation was read is that generation's or a later one's.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether no endpoint has failed since it last succeeded: then every endpoint is usable, and
    /// [`Endpoints::candidates`] is [`Endpoints::addrs`] from the next in turn. Read without a lock.
    pub fn all_healthy(&self) -> bool {
        self.failing.load(Ordering::Acquire) == 0
    }

    /// The index (below `len`, which is not 0) where the next tunnel attempt starts among the
    /// usable endpoints: one after the last attempt's, shared by every caller so tunnels go round.
    pub fn next_in_turn(&self, len: usize) -> usize {
        if len == 1 {
            return 0;
        }
        self.next.fetch_add(1, Ordering::Relaxed) % len
    }

    fn count_failing(&self, set: &[Endpoint]) {
        let failing = set.iter().filter(|e| e.failures > 0).count();
        self.failing.store(failing, Ordering::Release);
    }

    /// Notified when the address set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The order in which one tunnel attempt tries endpoints: the usable ones (healthy, or ejected
    /// with their retry time come) starting at the next in turn, then the ejected ones, soonest
    /// retry first.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let set = self.lock();
        let usable: Vec<SocketAddr> = set
            .iter()
            .filter(|e| e.usable(now))
            .map(|e| e.addr)
            .collect();
        let mut ejected: Vec<&Endpoint> = set.iter().filter(|e| !e.usable(now)).collect();
        ejected.sort_by_key(|e| e.retry_at);
        let mut order = Vec::with_capacity(set.len());
        if !usable.is_empty() {
            let start = self.next_in_turn(usable.len());
            order.extend(usable[start..].iter().chain(&usable[..start]));
        }
        order.extend(ejected.iter().map(|e| e.addr));
        order
    }

    /// Whether `addr` is healthy or due for a retry.
    pub fn is_usable(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        self.lock().iter().any(|e| e.addr == addr && e.usable(now))
    }

    /// Whether any endpoint is healthy or due for a retry.
    pub fn any_usable(&self) -> bool {
        let now = Instant::now();
        self.lock().iter().any(|e| e.usable(now))
    }

    /// When an ejected `addr` may be tried again; `None` when it may be tried now.
    pub fn retry_at(&self, addr: SocketAddr) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .iter()
            .find(|e| e.addr == addr)
            .and_then(|e| e.retry_at)
            .filter(|at| *at > now)
    }

    /// A connection to `addr` succeeded: it is healthy again.
    pub fn succeeded(&self, addr: SocketAddr) {
        // The usual case, on every request and tunnel: nothing to reset, and no lock taken.
        if self.all_healthy() {
            return;
        }
        let mut set = self.lock();
        let Some(endpoint) = set.iter_mut().find(|e| e.addr == addr) else {
            return;
        };
        if endpoint.failures > 0 {
            tracing::info!(relay = %self.relay.name, endpoint = %addr, "relay endpoint healthy again");
        }
        endpoint.failures = 0;
        endpoint.retry_at = None;
        self.count_failing(&set);
    }

    /// `addr` failed: eject it for `retry_backoff_min · 2^(failures-1)`, at most `retry_backoff_max`.
    pub fn failed(&self, addr: SocketAddr, reason: EjectReason, detail: &ConnError) {
        let mut set = self.lock();
        let Some(endpoint) = set.iter_mut().find(|e| e.addr == addr) else {
            return;
        };
        self.metrics
            .count_endpoint_failure(&self.relay.name, addr, reason.as_str());
        endpoint.failures = endpoint.failures.saturating_add(1);
        let backoff = backoff(&self.settings, endpoint.failures);
        endpoint.retry_at = Some(Instant::now() + backoff);
        let failures = endpoint.failures;
        self.count_failing(&set);
        if failures == 1 {
            tracing::warn!(
                relay = %self.relay.name, endpoint = %addr, reason = reason.as_str(),
                retry_in = ?backoff, "relay endpoint ejected: {detail}"
            );
        } else {
            tracing::debug!(
                relay = %self.relay.name, endpoint = %addr, reason = reason.as_str(),
                failures, retry_in = ?backoff, "relay endpoint still failing: {detail}"
            );
        }
    }
}

/// The ejection time after `failures` consecutive failures (≥ 1).
fn backoff(settings: &EndpointSettings, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    settings
        .retry_backoff_min
        .saturating_mul(1 << doublings)
        .min(settings.retry_backoff_max)
}

/// Re-resolves every `interval` until shutdown or until the endpoint set is dropped.
async fn refresh(endpoints: Weak<Endpoints>, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(endpoints) = endpoints.upgrade() else {
            return;
        };
        if let Err(e) = endpoints.resolve().await {
            tracing::warn!(
                relay = %endpoints.relay_name(), reason = e.reason(),
                "re-resolving the relay failed; keeping its endpoints: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EndpointSettings {
        EndpointSettings {
            resolve_interval: Duration::from_secs(5),
            retry_backoff_min: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_from_min_and_stops_at_max() {
        let s = settings();
        let got: Vec<u64> = (1..=7).map(|n| backoff(&s, n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(&s, u32::MAX), Duration::from_secs(30));
    }

    /// Endpoints of a relay at the IP literal `host` (resolved without DNS).
    fn endpoints_at(host: &str) -> Endpoints {
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let config = Arc::new(config);
        let relay = RelayUpstream {
            name: "relay".into(),
            host: host.into(),
            port: 443,
            server_name: rustls_pki_types::ServerName::try_from("relay.test").unwrap(),
            transport: crate::config::Transport::H2,
            tls_h2: config.clone(),
            tls_raw: config,
            pool_size: 1,
            preconnect: 0,
            endpoints: settings(),
        };
        let resolver = Resolver::new(None);
        let shutdown = CancellationToken::new();
        Endpoints::new(Arc::new(relay), &resolver, shutdown, Arc::default())
    }

    /// What the lock-free readers rely on: the generation moves exactly when the address set
    /// does, and `all_healthy` is false from an endpoint's failure until its success.
    #[tokio::test]
    async fn the_generation_and_the_health_flag_follow_the_set() {
        let endpoints = endpoints_at("127.0.0.1");
        assert_eq!(endpoints.generation(), 0);
        assert!(endpoints.all_healthy());
        endpoints.resolve().await.unwrap();
        assert_eq!(endpoints.generation(), 1);
        endpoints.resolve().await.unwrap();
        assert_eq!(
            endpoints.generation(),
            1,
            "an unchanged set keeps its generation"
        );

        let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
        assert_eq!(endpoints.addrs(), [addr]);
        let error = ConnError::RelayUnavailable("test".into());
        endpoints.failed(addr, EjectReason::ConnectRefused, &error);
        assert!(!endpoints.all_healthy());
        assert!(!endpoints.is_usable(addr));
        endpoints.failed(addr, EjectReason::ConnectRefused, &error);
        assert!(!endpoints.all_healthy());
        endpoints.succeeded(addr);
        assert!(endpoints.all_healthy());
        assert!(endpoints.is_usable(addr));
        // A success elsewhere leaves a failing endpoint failing.
        endpoints.failed(addr, EjectReason::ConnectRefused, &error);
        endpoints.succeeded("127.0.0.1:80".parse().unwrap());
        assert!(!endpoints.all_healthy());
        assert_eq!(endpoints.generation(), 1);
    }

    #[test]
    fn one_endpoint_is_always_next_in_turn_and_more_go_round() {
        let endpoints = endpoints_at("127.0.0.1");
        assert_eq!(endpoints.next_in_turn(1), 0);
        let turns: Vec<usize> = (0..6).map(|_| endpoints.next_in_turn(3)).collect();
        assert_eq!(turns, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn ejected_endpoint_is_usable_again_once_its_retry_time_comes() {
        let now = Instant::now();
        let mut e = Endpoint::new("127.0.0.1:1".parse().unwrap());
        assert!(e.usable(now));
        e.retry_at = Some(now + Duration::from_secs(1));
        assert!(!e.usable(now));
        assert!(e.usable(now + Duration::from_secs(1)));
    }
}
