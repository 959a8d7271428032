//! Typed runtime configuration. Built by the binary's config layer after validation; it cannot hold an
//! invalid value (names are parsed patterns, TLS configs are built, addresses are parsed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tlsgate_policy::FqdnPattern;

/// Everything a running tlsgate needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// CIDRs exempt from the destination guard.
    pub allow_destinations: Vec<IpNet>,
    /// A DNS server to resolve upstream names with instead of the system resolver.
    pub dns_server: Option<SocketAddr>,
    /// The admin API and the flow ring.
    pub visibility: Visibility,
}

/// Where flows and metrics can be read.
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    /// The admin API (`/flows`, `/metrics`, ...); `None`: no admin server.
    pub admin: Option<AdminSettings>,
    pub flows: FlowSettings,
    /// Every flow record as a JSON line (`flows.access_log`); `None`: no access log.
    pub access_log: Option<AccessLogTarget>,
}

/// Where the access log goes (docs/flows.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `-`: the process's stdout.
    Stdout,
    /// A file opened append-only (created 0640) and reopened by name on SIGUSR1.
    File(std::path::PathBuf),
}

/// The admin API's socket and credentials. Validation refuses a non-loopback address without a
/// bearer token.
#[derive(Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<Arc<str>>,
}

impl AdminSettings {
    /// Where `tlsgate observe` looks by default (Envoy's admin port; loopback only).
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9901,
    ));
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<elided>"),
            )
            .finish()
    }
}

/// The flow ring behind `/flows`, and what flow records hide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSettings {
    pub ring_size: usize,
    /// Request headers whose values flow records show as `[REDACTED]`, in addition to the
    /// built-in credential headers (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`).
    pub redact_headers: Vec<http::HeaderName>,
    /// Drop the query string from URLs in flow records.
    pub redact_url_query: bool,
}

impl FlowSettings {
    /// Recent records kept for `/flows`: at a few hundred bytes each, about 5 MiB.
    pub const DEFAULT_RING_SIZE: usize = 10_000;
    /// The largest ring accepted (about half a GiB of records).
    pub const MAX_RING_SIZE: usize = 1_000_000;
    /// Queries are kept by default: they are often what an operator needs to see, and the
    /// credentials that do travel in URLs can be hidden with this switch.
    pub const DEFAULT_REDACT_URL_QUERY: bool = false;
    /// Configured redacted headers accepted (each is compared on every header of every record).
    pub const MAX_REDACT_HEADERS: usize = 64;
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            ring_size: Self::DEFAULT_RING_SIZE,
            redact_headers: Vec::new(),
            redact_url_query: Self::DEFAULT_REDACT_URL_QUERY,
        }
    }
}

/// One listening socket and its role.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    pub kind: ListenerKind,
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// Edge: read the ClientHello without consuming it, tunnel the exact bytes to a relay.
    TlsPassthrough(EdgeTls),
    /// Edge: plain HTTP/1.1 in, each request forwarded to the relay over HTTP/2 + TLS 1.3.
    Http(EdgeHttp),
    /// Relay: terminate the outer TLS, route by inner SNI / CONNECT authority / Host.
    Relay(RelayListener),
    /// Interceptor: a forward proxy (explicit CONNECT / absolute-form, or transparent) that bumps,
    /// splices or denies each connection.
    Intercept(InterceptListener),
}

#[derive(Debug, Clone)]
pub struct EdgeTls {
    pub relay: Arc<RelayUpstream>,
    /// Port named in `CONNECT name:PORT`.
    pub inner_port: u16,
    /// Name used for ClientHellos without SNI; `None` refuses them.
    pub default_sni: Option<String>,
}

impl EdgeTls {
    /// Port named in `CONNECT name:PORT` when the config does not say: the HTTPS port.
    pub const DEFAULT_INNER_PORT: u16 = 443;
}

#[derive(Debug, Clone)]
pub struct EdgeHttp {
    pub relay: Arc<RelayUpstream>,
}

/// How inner connections travel to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/2 CONNECT streams multiplexed over pooled TLS 1.3 connections.
    H2,
    /// One outer TLS 1.3 connection per inner connection, the inner bytes raw inside it.
    Tls,
}

/// A relay as seen from an edge.
#[derive(Debug)]
pub struct RelayUpstream {
    pub name: String,
    /// Host (name or IP literal) and port to connect to.
    pub host: String,
    pub port: u16,
    /// SNI of the outer TLS; also the name verified in the relay's certificate.
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub transport: Transport,
    /// Client TLS config with ALPN `h2` (TLS 1.3 only).
    pub tls_h2: Arc<rustls::ClientConfig>,
    /// Client TLS config without ALPN, for the raw `tls` transport (TLS 1.3 only).
    pub tls_raw: Arc<rustls::ClientConfig>,
    /// Number of h2 connections kept open to each endpoint, per worker thread that carries tunnels
    /// (`crate::workers`).
    pub pool_size: usize,
    /// `tls` transport: outer connections opened ahead of need, per worker thread that opens
    /// tunnels (0: none; `transport::tls::Spares`).
    pub preconnect: usize,
    /// How the addresses `host` resolves to are refreshed and how failing ones are retried.
    pub endpoints: EndpointSettings,
}

/// The relay's endpoints (the addresses its host resolves to, like Envoy's STRICT_DNS cluster):
/// re-resolution period and the ejection backoff of a failing endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSettings {
    /// Period of re-resolution of the relay's host name.
    pub resolve_interval: Duration,
    /// First retry delay of an ejected endpoint; doubled on each further failure ...
    pub retry_backoff_min: Duration,
    /// ... up to this.
    pub retry_backoff_max: Duration,
}

impl EndpointSettings {
    /// Envoy's `dns_refresh_rate` default for STRICT_DNS clusters: a changed relay address set is
    /// picked up within seconds, at one query per interval.
    pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
    /// A relay restarting is usually back within a second; retrying sooner only adds refused
    /// connects (a retry is one connection attempt, not a tunnel: clients never wait on it).
    pub const DEFAULT_RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
    /// Envoy's base ejection time: a relay that stays down costs one connect per 30 s.
    pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            resolve_interval: Self::DEFAULT_RESOLVE_INTERVAL,
            retry_backoff_min: Self::DEFAULT_RETRY_BACKOFF_MIN,
            retry_backoff_max: Self::DEFAULT_RETRY_BACKOFF_MAX,
        }
    }
}

impl RelayUpstream {
    /// h2 connections kept to a relay when the config does not say: one connection multiplexes
    /// `h2_max_concurrent_streams` tunnels, plenty for an edge; raise it for more.
    pub const DEFAULT_POOL_SIZE: usize = 1;
    /// Most spare outer connections `preconnect` may ask for per worker: a burst of new tunnels
    /// is served by the spares and the ones opened behind them; more would only hold sockets.
    pub const MAX_PRECONNECT: usize = 16;
}

/// A relay listener.
#[derive(Debug, Clone)]
pub struct RelayListener {
    /// Server TLS config (TLS 1.3, ALPN `h2` and `http/1.1`, optional client verification).
    pub tls: Arc<rustls::ServerConfig>,
    pub routes: Arc<Routes>,
}

/// Ordered routes; the first whose pattern matches wins.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: FqdnPattern,
    /// Upstream for tunnelled TLS (CONNECT :443, the raw `tls` transport).
    pub tls: Option<UpstreamTarget>,
    /// Upstream for forwarded plain HTTP (requests over h2 or HTTP/1.1, CONNECT :80).
    pub http: Option<UpstreamTarget>,
}

/// `host:port`, where the host may be the requested name itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub host: TargetHost,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A fixed host name or IP literal.
    Fixed(String),
    /// `{sni}`: the requested name (inner SNI, CONNECT authority or Host).
    Requested,
}

/// Every network wait, named. Defaults are in [`Timeouts::default`] and documented in docs/config.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub detect: Duration,
    pub connect: Duration,
    pub handshake: Duration,
    pub idle: Duration,
    pub http_header_read: Duration,
    pub shutdown_grace: Duration,
    pub relay_wait: Duration,
    /// One HTTP request, from its parsed head to the response head (the head itself is bounded by
    /// `http_header_read`): every HTTP listener and the interceptor's HTTP service.
    pub http_request: Duration,
}

impl Timeouts {
    /// Long enough for a slow origin behind a slow relay, short enough that a stalled request does
    /// not hold a connection slot for minutes.
    pub const DEFAULT_HTTP_REQUEST: Duration = Duration::from_secs(60);
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            // A client that has not sent its whole ClientHello in 10 s is not a browser on a bad link.
            detect: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            // Long enough for interactive sessions, short enough to reclaim abandoned tunnels.
            idle: Duration::from_secs(300),
            http_header_read: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            // New tunnels wait briefly for a relay that is reconnecting instead of failing at once.
            relay_wait: Duration::from_secs(5),
            http_request: Self::DEFAULT_HTTP_REQUEST,
        }
    }
}

/// Every buffer and count, bounded. Defaults are in [`Limits::default`] and documented in docs/config.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_client_hello: usize,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    pub http1_max_headers: usize,
    pub http1_max_header_bytes: usize,
    /// Connections from one source IP at once, per listener.
    pub max_connections_per_source: usize,
    /// Concurrent tunnels (CONNECT streams and raw `tls` tunnels) per relay client identity: its
    /// client certificate when it presented one, else its source IP.
    pub max_tunnels_per_client: usize,
    /// Bound on one HTTP/2 header block (decoded), advertised as SETTINGS_MAX_HEADER_LIST_SIZE; it
    /// also bounds CONTINUATION frames per block (h2 refuses more than ~list size / frame size).
    pub h2_max_header_list_size: u32,
    /// Streams a client may reset before they were accepted (rapid reset, CVE-2023-44487); one
    /// more and the connection gets GOAWAY ENHANCE_YOUR_CALM.
    pub h2_max_pending_resets: usize,
}

impl Limits {
    /// Per source IP and listener: far above what one host or a small NAT needs, far below the
    /// listener's `max_connections`, so one client cannot take all the slots (slowloris).
    pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 1024;
    /// Half a listener's default `max_connections`: one edge cannot hold all of a relay's tunnels.
    pub const DEFAULT_MAX_TUNNELS_PER_CLIENT: usize = 5000;
    /// 64 KiB: the same bound as an HTTP/1 head (`http1_max_header_bytes`).
    pub const DEFAULT_H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
    /// hyper's default is 20; 32 tolerates clients cancelling a page's worth of requests at once.
    pub const DEFAULT_H2_MAX_PENDING_RESETS: usize = 32;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Post-quantum hellos are ~2 KB; 16 KiB leaves room for large session tickets and ECH.
            max_client_hello: 16 * 1024,
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            http1_max_headers: 100,
            http1_max_header_bytes: 64 * 1024,
            max_connections_per_source: Self::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            max_tunnels_per_client: Self::DEFAULT_MAX_TUNNELS_PER_CLIENT,
            h2_max_header_list_size: Self::DEFAULT_H2_MAX_HEADER_LIST_SIZE,
            h2_max_pending_resets: Self::DEFAULT_H2_MAX_PENDING_RESETS,
        }
    }
}

/// An intercepting forward proxy listener.
#[derive(Debug, Clone)]
pub struct InterceptListener {
    pub mode: InterceptMode,
    /// Per-connection decisions by host and port (the simple form, used without `policy`).
    pub rules: Arc<InterceptRules>,
    /// The L7 policy (tlsgate or Cilium format): when set, it decides connections and requests
    /// instead of `rules`, and is reloaded when its file changes.
    pub policy: Option<Arc<crate::policy::PolicySlot>>,
    /// Audit mode (Cilium's policy audit mode): what `policy` or `rules` would refuse by a rule
    /// decision (`no_rule`, `deny_rule`, `policy_denied`, `denied`) is let through instead (a
    /// connection spliced, a request forwarded) and recorded with the verdict `AUDIT`.
    pub policy_audit: bool,
    pub certs: Arc<CertSettings>,
    /// Trust anchors that verify origins when re-encrypting (the system store or a configured
    /// bundle); built with `tls::upstream_roots`.
    pub upstream_roots: Arc<rustls::RootCertStore>,
    /// Hosts whose invalid certificates are accepted anyway (labs only; every flow says so).
    pub danger_accept_invalid_upstream_certs: Vec<FqdnPattern>,
    /// A name without an origin connection of its own may use another name's HTTP/2 connection
    /// whose certificate covers it, at an address the name resolves to (RFC 9113 §9.1.1; see
    /// `intercept::upstreams`).
    pub coalesce_origin_connections: bool,
}

impl InterceptListener {
    /// Refusals are enforced unless the operator asks for audit mode.
    pub const DEFAULT_POLICY_AUDIT: bool = false;
    /// On, as in browsers: a wildcard or multi-name origin then costs one connection, not one per
    /// name, and an origin that does not serve a name there says so with 421.
    pub const DEFAULT_COALESCE_ORIGIN_CONNECTIONS: bool = true;
}

/// How clients reach the interceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptMode {
    /// Clients are configured with the proxy: HTTP/1.1 CONNECT and absolute-form requests.
    Explicit,
    /// Connections redirected by iptables REDIRECT/TPROXY; the original destination is recovered
    /// with SO_ORIGINAL_DST and the host name comes from the SNI.
    Transparent,
}

/// What to do with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptAction {
    /// Terminate the client's TLS with a minted certificate, re-encrypt to the verified origin.
    Bump,
    /// Pass the bytes untouched (the SNI is still logged).
    Splice,
    /// Refuse with a reason.
    Deny,
}

/// Ordered rules; the first matching one decides, else `default`.
#[derive(Debug, Clone)]
pub struct InterceptRules {
    pub rules: Vec<InterceptRule>,
    pub default: InterceptAction,
}

#[derive(Debug, Clone)]
pub struct InterceptRule {
    pub pattern: FqdnPattern,
    /// Empty: any port.
    pub ports: Vec<u16>,
    pub action: InterceptAction,
}

/// Where minted certificates come from and how long they live.
#[derive(Debug)]
pub struct CertSettings {
    /// The interception CA.
    pub ca: Arc<tlsgate_ca::CertAuthority>,
    pub strategy: CertStrategy,
    /// Lifetime of minted leaves.
    pub leaf_lifetime: Duration,
    /// Minted leaves kept, and for how long (always below `leaf_lifetime`).
    pub cache_capacity: usize,
    pub cache_ttl: Duration,
}

impl CertSettings {
    /// Short-lived leaves limit the damage of a leaked leaf key.
    pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Enough names for a busy office; each entry is a few KiB.
    pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
    /// A day: well below the leaf lifetime, so a cached leaf never expires in use.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
}

/// When the minted certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStrategy {
    /// Mint from the SNI, else the CONNECT host, else the original IP, before contacting the origin.
    DownstreamFirst,
    /// Connect to the origin first, verify it, and mimic its certificate's names; mirror its ALPN.
    UpstreamFirst,
}
