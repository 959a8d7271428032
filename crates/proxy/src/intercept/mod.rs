//! The interceptor role: a forward proxy that decides per connection to bump (terminate the
//! client's TLS with a minted certificate and re-encrypt to the verified origin), splice (pass the
//! bytes untouched, SNI still logged) or deny.
//!
//! accept → (explicit: HTTP/1.1 CONNECT or absolute-form | transparent: SO_ORIGINAL_DST)
//!        → detect ClientHello → decide(host, port) → bump | splice | deny → finish

mod bump;
pub mod certs;
mod explicit;
pub mod origin;
mod transparent;
pub mod upstreams;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tlsgate_wire::{HttpSniff, looks_like_http_request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{
    CertStrategy, InterceptAction, InterceptListener, InterceptMode, InterceptRules,
};
use crate::context::{ConnCtx, Shared};
use crate::detect;
use crate::error::{ALERT_ACCESS_DENIED, ConnError, tls_alert};
use crate::flow::{Mode, Role, TlsFacts};
use crate::io::{Moved, Prefixed, splice};
use tlsgate_policy::{DenyReason, RequestFacts, RequestVerdict, TlsAction};

pub use certs::CertStore;
pub use origin::OriginTls;
pub use upstreams::Upstreams;

/// What one interception listener keeps for all its connections.
pub struct InterceptState {
    pub config: InterceptListener,
    /// Shared with the next generation when a reload keeps the CA and leaf settings (see
    /// [`InterceptState::reusing`]), so clients keep seeing the same minted leaves.
    pub certs: Arc<CertStore>,
    pub origin: OriginTls,
    /// Client-facing TLS config (TLS 1.2 + 1.3); each connection sets its leaf and ALPN on a clone.
    pub server_base: Arc<rustls::ServerConfig>,
    /// Origin connections shared by the listener's bumped connections; this generation's own
    /// (a reload starts an empty one, and the old one's idle connections close with it).
    pub upstreams: Arc<Upstreams>,
}

impl std::fmt::Debug for InterceptState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptState").finish_non_exhaustive()
    }
}

impl InterceptState {
    /// Builds the minting store, the origin verifier and the client-facing TLS base config.
    pub fn new(config: InterceptListener) -> Result<Self, ConnError> {
        Self::reusing(config, None)
    }

    /// Like [`InterceptState::new`], but keeps `previous`'s minting store (its leaf key and cache
    /// of minted leaves) when the CA certificate and the leaf settings are unchanged: a reload
    /// then costs no mint storm and serves the same leaves as before.
    pub fn reusing(
        config: InterceptListener,
        previous: Option<&InterceptState>,
    ) -> Result<Self, ConnError> {
        let provider = crate::tls::provider();
        let certs = match previous {
            Some(old) if same_minting(&old.config.certs, &config.certs) => old.certs.clone(),
            _ => Arc::new(CertStore::new(&config.certs, &provider)?),
        };
        let origin = OriginTls::new(config.upstream_roots.clone(), provider.clone())?;
        let server_base = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnError::LocalMint(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certs::NoCert));
        Ok(Self {
            config,
            certs,
            origin,
            server_base: Arc::new(server_base),
            upstreams: Arc::default(),
        })
    }

    fn accepts_invalid(&self, name: &str) -> bool {
        self.config
            .danger_accept_invalid_upstream_certs
            .iter()
            .any(|p| p.matches(name))
    }

    /// In audit mode, a refusal by a rule decision is recorded on `ctx` and `Ok` lets the traffic
    /// through; every other refusal (and every refusal outside audit mode) stays one. The Host
    /// checks (`host_sni_mismatch`, `missing_host`) and the destination guard are never audited:
    /// they keep the name the policy decided on honest.
    pub(crate) fn audit(&self, ctx: &mut ConnCtx, refusal: ConnError) -> Result<(), ConnError> {
        let by_rule = match &refusal {
            ConnError::PolicyDenied => true,
            ConnError::PolicyVerdict { reason, .. } => matches!(
                reason,
                DenyReason::NoRule | DenyReason::DenyRule | DenyReason::PolicyDenied
            ),
            _ => false,
        };
        if !(self.config.policy_audit && by_rule) {
            return Err(refusal);
        }
        ctx.audit = Some(crate::context::Audit::of(&refusal));
        Ok(())
    }

    fn strategy(&self) -> CertStrategy {
        self.config.certs.strategy
    }

    /// The connection-level decision for `host:port`: the policy's when one is configured, else
    /// the simple rules'. `Err` is the refusal, with its reason.
    pub(crate) fn decide(&self, host: &str, port: u16) -> Result<InterceptAction, ConnError> {
        let Some(slot) = &self.config.policy else {
            return match self.config.rules.decide(host, port) {
                InterceptAction::Deny => Err(ConnError::PolicyDenied),
                action => Ok(action),
            };
        };
        let policy = slot.current();
        let verdict = policy.decide_connection(host, port);
        match verdict.action {
            TlsAction::Bump => Ok(InterceptAction::Bump),
            TlsAction::Splice => Ok(InterceptAction::Splice),
            TlsAction::Deny => Err(ConnError::PolicyVerdict {
                reason: verdict.deny_reason().unwrap_or(DenyReason::NoRule),
                rule: rule_name(&policy, verdict.rule),
            }),
        }
    }

    /// The request-level decision (only with a policy): on allow, applies the policy's header
    /// edits to `headers`; on deny, the refusal. `conn_host` is the name the connection was
    /// allowed for (SNI, else CONNECT host); `authority` is the request's Host / :authority.
    pub(crate) fn check_request(
        &self,
        conn_host: &str,
        port: u16,
        method: &http::Method,
        target: &str,
        authority: &str,
        headers: &mut http::HeaderMap,
    ) -> Result<(), ConnError> {
        let Some(slot) = &self.config.policy else {
            return Ok(());
        };
        let policy = slot.current();
        let facts = RequestFacts {
            method: method.as_str(),
            path: target,
            host: authority,
            headers,
        };
        match policy.decide_request(conn_host, port, &facts) {
            RequestVerdict::Allow { edits, .. } => {
                for edit in edits {
                    edit.apply(headers);
                }
                Ok(())
            }
            RequestVerdict::Deny { reason, rule_set } => Err(ConnError::PolicyVerdict {
                reason,
                rule: rule_name(&policy, rule_set),
            }),
        }
    }
}

fn rule_name(
    policy: &tlsgate_policy::Policy,
    rule: Option<tlsgate_policy::RuleRef>,
) -> Option<String> {
    rule.and_then(|r| policy.rule(r))
        .map(|r| r.name().to_owned())
}

impl InterceptRules {
    /// The action for `host:port`: the first matching rule's, else the default.
    pub fn decide(&self, host: &str, port: u16) -> InterceptAction {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(host) && (r.ports.is_empty() || r.ports.contains(&port)))
            .map_or(self.default, |r| r.action)
    }
}

/// Where an intercepted connection was going.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The name the client asked for (CONNECT host), when known before the ClientHello.
    pub host: Option<String>,
    /// The original destination address (transparent mode).
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// Explicit mode decides on the CONNECT host before any TLS; transparent decides on the SNI.
    pub decided: Option<InterceptAction>,
    /// What the CONNECT host resolved to when it was vetted, moments before (explicit mode; else
    /// empty): a bumped connection's first look for a coalescable origin connection uses it
    /// instead of resolving again.
    pub vetted: Vec<SocketAddr>,
}

impl Target {
    /// Where to connect: the CONNECT host, else the original destination IP.
    fn connect_host(&self) -> String {
        match (&self.host, self.ip) {
            (Some(host), _) => host.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// Serves one accepted connection on an interception listener.
pub async fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) {
    match state.config.mode {
        InterceptMode::Explicit => explicit::serve(tcp, client, listener, state, shared).await,
        InterceptMode::Transparent => {
            transparent::serve(tcp, client, listener, state, shared).await
        }
    }
}

/// After CONNECT (explicit) or accept (transparent): detect what the client speaks, decide, and
/// bump, splice or deny.
pub(crate) async fn handle_stream<S>(
    mut io: S,
    target: Target,
    mut ctx: ConnCtx,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut prefix = BytesMut::with_capacity(2048);
    let hello = detect::client_hello(&mut io, &mut prefix, &shared, Role::Intercept).await;
    let read = Moved {
        from_client: prefix.len() as u64,
        to_client: 0,
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(ConnError::ClientNotTls) => {
            return plain(io, prefix.freeze(), target, ctx, state, shared).await;
        }
        Err(e) => return ctx.finish(&shared, read, &Err(e)),
    };
    let name = hello
        .sni
        .clone()
        .or_else(|| target.host.clone())
        .or_else(|| target.ip.map(|ip| ip.to_string()));
    let Some(name) = name else {
        return ctx.finish(&shared, read, &Err(ConnError::ClientNoSni));
    };
    ctx.name = Some(name.clone());
    ctx.tls = Some(TlsFacts::offered(&hello));
    let host_decides = host_decides(&state, &hello, &target);
    let action = match (target.decided, host_decides) {
        (Some(action), _) => Ok(action),
        // Nothing names the connection yet: bump it, and let each request's Host decide.
        (None, Some(_)) => Ok(InterceptAction::Bump),
        // Audit mode passes a would-be-refused connection through untouched.
        (None, None) => state.decide(&name, target.port).or_else(|refusal| {
            state
                .audit(&mut ctx, refusal)
                .map(|()| InterceptAction::Splice)
        }),
    };
    match action {
        Err(refusal) => {
            ctx.mode = Mode::Deny;
            // A TLS alert tells the client why the handshake stops (access_denied).
            let _ = io.write_all(&tls_alert(ALERT_ACCESS_DENIED)).await;
            ctx.finish(&shared, read, &Err(refusal));
        }
        Ok(InterceptAction::Deny) => {
            ctx.mode = Mode::Deny;
            let _ = io.write_all(&tls_alert(ALERT_ACCESS_DENIED)).await;
            ctx.finish(&shared, read, &Err(ConnError::PolicyDenied));
        }
        Ok(InterceptAction::Splice) => {
            ctx.mode = Mode::Splice;
            // Explicit mode connects where CONNECT said; transparent where the packet was going.
            let host = target.host.clone().unwrap_or_else(|| target.connect_host());
            ctx.upstream = Some(format!("{host}:{}", target.port));
            let upstream = match shared.connect(&host, target.port).await {
                Ok(upstream) => upstream,
                Err(e) => return ctx.finish(&shared, read, &Err(e)),
            };
            let (moved, result) = splice(
                io,
                upstream,
                prefix.freeze(),
                Bytes::new(),
                shared.timeouts.idle,
            )
            .await;
            ctx.finish(&shared, moved, &result);
        }
        Ok(InterceptAction::Bump) => {
            ctx.mode = Mode::Bump;
            let io = Prefixed::new(prefix.freeze(), io);
            let naming = match host_decides {
                Some(dst) => bump::Naming::ByHost { dst },
                None => bump::Naming::Fixed(name),
            };
            bump::serve(io, hello, naming, target, ctx, state, shared).await;
        }
    }
}

/// Transparent mode with a policy and a ClientHello without SNI: the original destination IP, which
/// each request's Host must resolve to (the Host then decides as the connection's name). `None`
/// everywhere else: the SNI (or CONNECT host) names the connection, exactly as before.
fn host_decides(
    state: &InterceptState,
    hello: &tlsgate_wire::ClientHelloInfo,
    target: &Target,
) -> Option<IpAddr> {
    let applies = state.config.mode == InterceptMode::Transparent
        && state.config.policy.is_some()
        && hello.sni.is_none()
        && target.host.is_none();
    target.ip.filter(|_| applies)
}

/// A stream that is not TLS: HTTP is served (and forwarded) when bumping, else spliced or denied.
async fn plain<S>(
    io: S,
    prefix: Bytes,
    target: Target,
    mut ctx: ConnCtx,
    state: Arc<InterceptState>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = target.connect_host();
    ctx.name = Some(name.clone());
    let action = match target.decided {
        Some(action) => Ok(action),
        None => state.decide(&name, target.port).or_else(|refusal| {
            state
                .audit(&mut ctx, refusal)
                .map(|()| InterceptAction::Splice)
        }),
    };
    let read = Moved {
        from_client: prefix.len() as u64,
        to_client: 0,
    };
    match action {
        Err(refusal) => ctx.finish(&shared, read, &Err(refusal)),
        Ok(InterceptAction::Deny) => ctx.finish(&shared, read, &Err(ConnError::PolicyDenied)),
        Ok(InterceptAction::Bump) if looks_like_http_request(&prefix) == HttpSniff::Http => {
            let io = Prefixed::new(prefix, io);
            let service = explicit::PlainHttp::new(
                target,
                ctx.listener.clone(),
                ctx.client,
                state,
                shared.clone(),
            );
            crate::http_server::serve_http1(io, service, &shared, ctx).await;
        }
        // Bumping means inspecting: bytes that are neither TLS nor HTTP are not let through.
        Ok(InterceptAction::Bump) => ctx.finish(&shared, read, &Err(ConnError::ClientNotTls)),
        Ok(InterceptAction::Splice) => {
            ctx.mode = Mode::Splice;
            let host = target.connect_host();
            ctx.upstream = Some(format!("{host}:{}", target.port));
            let upstream = match shared.connect(&host, target.port).await {
                Ok(upstream) => upstream,
                Err(e) => return ctx.finish(&shared, read, &Err(e)),
            };
            let (moved, result) =
                splice(io, upstream, prefix, Bytes::new(), shared.timeouts.idle).await;
            ctx.finish(&shared, moved, &result);
        }
    }
}

pub(crate) fn new_ctx(listener: Arc<str>, client: SocketAddr) -> ConnCtx {
    ConnCtx::new(listener, Role::Intercept, Mode::Bump, client)
}

/// Whether a minting store made for `old` serves `new` unchanged: same CA certificate (and so the
/// same key: a CA file pair is checked to match on load), leaf lifetime and cache bounds.
fn same_minting(old: &crate::config::CertSettings, new: &crate::config::CertSettings) -> bool {
    old.ca.cert_der() == new.ca.cert_der()
        && old.leaf_lifetime == new.leaf_lifetime
        && old.cache_capacity == new.cache_capacity
        && old.cache_ttl == new.cache_ttl
}
