//! What every connection task shares (limits, guard, flow bus, shutdown) and its own context, from
//! which the one flow record of the connection is written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Limits, Timeouts};
use crate::error::ConnError;
use crate::flow::{FlowId, FlowRecord, Flows, Mode, Role, TlsFacts, UpstreamCert, Verdict};
use crate::io::Moved;
use crate::upstream::{DestinationGuard, Resolver};

/// Shared by all connections of a gateway.
#[derive(Debug)]
pub struct Shared {
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub guard: DestinationGuard,
    pub resolver: Resolver,
    pub flows: Flows,
    /// Cancelled when the gateway stops accepting; connections drain within the grace period.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period is over: every task still running is dropped (sockets close).
    pub force: CancellationToken,
    /// Every connection-scoped task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Keep-alive connections to upstreams for forwarded plain HTTP, this generation's own
    /// (`Default::default()`: built on first use from the fields above).
    pub upstream_pool: crate::forward::pool::UpstreamPool,
}

impl Shared {
    /// Connects to `host:port` (resolved, checked by the destination guard, within the connect
    /// timeout): the one way a role reaches an upstream it did not get from the operator.
    pub async fn connect(&self, host: &str, port: u16) -> Result<tokio::net::TcpStream, ConnError> {
        crate::upstream::connect(
            &self.resolver,
            host,
            port,
            Some(&self.guard),
            self.timeouts.connect,
        )
        .await
    }

    /// Refuses `host:port` at once when every address it resolves to (within the connect timeout)
    /// is forbidden by the destination guard, so an explicit CONNECT gets 403 instead of 200 and a
    /// later failure. Not a substitute for [`Shared::connect`], which checks the addresses it
    /// actually connects to (a name may resolve differently by then: DNS rebinding). `Ok` holds
    /// the addresses resolved (permitted or not).
    pub async fn vet_destination(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ConnError> {
        let resolving = self.resolver.resolve(host, port);
        let addrs = tokio::time::timeout(self.timeouts.connect, resolving)
            .await
            .map_err(|_| ConnError::UpstreamConnectTimeout)??;
        match addrs.iter().find(|a| !self.guard.permits(a.ip())) {
            Some(forbidden) if addrs.iter().all(|a| !self.guard.permits(a.ip())) => {
                Err(ConnError::PolicyDestinationForbidden(forbidden.ip()))
            }
            _ => Ok(addrs),
        }
    }

    /// Spawns a connection-scoped task: tracked for draining, dropped when the grace period ends.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let force = self.force.clone();
        // A task spawned while serving an admitted connection (an upgraded CONNECT tunnel, an
        // origin connection) keeps that connection's admission: the client's slots are held
        // until everything it started has ended.
        let admitted = ADMITTED.try_with(Arc::clone).ok();
        self.tracker.spawn(async move {
            let _admitted = admitted;
            // Polled on every wake-up of the task: `stopped`, not `force.cancelled()`, whose every
            // poll takes the token's locks, which all connections share.
            tokio::select! {
                () = task => {}
                () = crate::stop::stopped(&force) => {}
            }
        });
    }
}

/// Spawns a pooled upstream connection's task: not tracked for draining and not under any client's
/// admission (it outlives the request that opened it and serves others), stopped when `force`
/// (the end of the grace period) fires. Used by the relay's forward pool and the interceptor's
/// origin pool.
pub fn spawn_pooled<F>(force: &CancellationToken, task: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let force = force.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = crate::stop::stopped(&force) => {}
        }
    });
}

/// What an accepted connection holds while it is served (listener and per-source slots, the
/// active-connection gauge, its seat on its worker); released when the last holder drops it.
pub type Admitted = Arc<dyn std::any::Any + Send + Sync>;

tokio::task_local! {
    /// The admission of the connection being served by the current task; see [`Shared::spawn`].
    pub static ADMITTED: Admitted;
}

/// One connection's (or stream's, or request's) story so far.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    pub listener: Arc<str>,
    pub role: Role,
    pub mode: Mode,
    pub client: SocketAddr,
    pub started: Instant,
    pub name: Option<String>,
    pub upstream: Option<String>,
    pub status: Option<u16>,
    /// For HTTP request flows: the method and the full URL (`https://host/path?query`).
    pub http: Option<HttpFacts>,
    /// For TLS connections and the requests in them: what the client offered, the origin's cert.
    pub tls: Option<TlsFacts>,
    /// Set when the listener is in audit mode and the policy would have refused this traffic,
    /// which was let through: the record's verdict becomes `AUDIT`.
    pub audit: Option<Audit>,
}

/// Why audited traffic would have been refused.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The refusal's stable reason label (`policy_denied`, `no_rule`, ...).
    pub reason: &'static str,
    /// The policy rule (set) that would have refused it.
    pub rule: Option<String>,
    /// The refusal, in words.
    pub detail: String,
}

impl Audit {
    /// The would-be refusal `error`.
    pub fn of(error: &ConnError) -> Self {
        let rule = match error {
            ConnError::PolicyVerdict { rule, .. } => rule.clone(),
            _ => None,
        };
        Self {
            reason: error.reason(),
            rule,
            detail: format!("audit mode, would be refused: {error}"),
        }
    }
}

/// What a request flow records about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFacts {
    pub method: String,
    pub url: String,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'static str,
    /// The first [`HttpFacts::MAX_HEADERS`] request headers, names lower-case, values cut at
    /// [`HttpFacts::MAX_HEADER_VALUE`] bytes, sensitive ones (credentials, cookies) replaced by
    /// [`HttpFacts::REDACTED`].
    pub headers: Vec<(String, String)>,
}

impl HttpFacts {
    /// Headers kept per request: enough to see what a client sent, bounded per record.
    pub const MAX_HEADERS: usize = 32;
    /// Bytes of a header value kept; longer values end with `...`.
    pub const MAX_HEADER_VALUE: usize = 256;
    /// What a sensitive header's value becomes.
    pub const REDACTED: &'static str = "[REDACTED]";
    /// Headers whose values are credentials.
    pub const SENSITIVE: [&'static str; 4] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ];

    /// Facts of `req`, whose URL is built from `scheme`, the request authority (or `fallback_host`)
    /// and its origin-form target.
    pub fn of<B>(req: &http::Request<B>, scheme: &str, fallback_host: &str) -> Self {
        let host = crate::http_util::request_authority(req).unwrap_or(fallback_host);
        Self {
            method: req.method().as_str().to_owned(),
            url: format!(
                "{scheme}://{host}{}",
                crate::http_util::origin_form(req.uri())
            ),
            protocol: protocol_name(req.version()),
            headers: req
                .headers()
                .iter()
                .take(Self::MAX_HEADERS)
                .map(|(name, value)| (name.as_str().to_owned(), Self::kept_value(name, value)))
                .collect(),
        }
    }

    fn kept_value(name: &http::HeaderName, value: &http::HeaderValue) -> String {
        if Self::SENSITIVE.contains(&name.as_str()) {
            return Self::REDACTED.to_owned();
        }
        let bytes = value.as_bytes();
        let cut = &bytes[..bytes.len().min(Self::MAX_HEADER_VALUE)];
        let mut text = String::from_utf8_lossy(cut).into_owned();
        if cut.len() < bytes.len() {
            text.push_str("...");
        }
        text
    }
}

fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

impl ConnCtx {
    pub fn new(listener: Arc<str>, role: Role, mode: Mode, client: SocketAddr) -> Self {
        Self {
            listener,
            role,
            mode,
            client,
            started: Instant::now(),
            name: None,
            upstream: None,
            status: None,
            http: None,
            tls: None,
            audit: None,
        }
    }

    /// Records the origin's certificate on this context's TLS facts.
    pub fn set_upstream_cert(&mut self, cert: Option<UpstreamCert>) {
        if cert.is_some() {
            self.tls.get_or_insert_with(TlsFacts::default).upstream_cert = cert;
        }
    }

    /// Writes the flow record for this context: the only place a connection's outcome is recorded.
    pub fn finish(self, shared: &Shared, moved: Moved, result: &Result<(), ConnError>) {
        let error = result.as_ref().err();
        let (verdict, mut rule, mut reason, mut detail) = (
            Verdict::of(error),
            match error {
                Some(ConnError::PolicyVerdict { rule, .. }) => rule.clone(),
                _ => None,
            },
            error.map(ConnError::reason),
            error.map(ToString::to_string),
        );
        // A failure after the audited refusal (the origin was down) is what the record reports.
        let verdict = match (error, self.audit) {
            (None, Some(audit)) => {
                (rule, reason, detail) = (audit.rule, Some(audit.reason), Some(audit.detail));
                Verdict::Audit
            }
            _ => verdict,
        };
        let record = FlowRecord {
            time: SystemTime::now(),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict,
            rule,
            listener: self.listener,
            role: self.role,
            mode: self.mode,
            client: self.client,
            name: self.name,
            upstream: self.upstream,
            reason,
            detail,
            status: self.status,
            http: self.http,
            bytes_from_client: moved.from_client,
            bytes_to_client: moved.to_client,
            duration: self.started.elapsed(),
            tls: self.tls,
        };
        shared.flows.emit(record, error);
    }
}
