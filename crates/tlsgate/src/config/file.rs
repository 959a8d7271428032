//! The file shape: what a user may write, nothing more. Every struct denies unknown keys; values are
//! kept close to their text so `validate()` can report each bad one with its key path.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::lenient::Lenient;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub relays: Vec<Lenient<RelayFile>>,
    #[serde(default)]
    pub listeners: Vec<Lenient<ListenerFile>>,
    #[serde(default)]
    pub allow_destinations: Vec<String>,
    #[serde(default)]
    pub dns: Option<Lenient<DnsFile>>,
    #[serde(default)]
    pub timeouts: Option<Lenient<TimeoutsFile>>,
    #[serde(default)]
    pub limits: Option<Lenient<LimitsFile>>,
    /// The admin API; absent: none.
    #[serde(default)]
    pub admin: Option<Lenient<AdminFile>>,
    #[serde(default)]
    pub flows: Option<Lenient<FlowsFile>>,
}

/// The admin API (`/flows`, `/metrics`, ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `ip:port`; loopback unless `bearer_token_file` is set.
    pub listen: String,
    /// A file holding the token clients must send as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

/// Absent keys take `tlsgate_proxy::config::FlowSettings::default()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsFile {
    #[serde(default)]
    pub ring_size: Option<usize>,
    /// Request header names (any case) whose values flow records redact, besides the built-in
    /// credential headers.
    #[serde(default)]
    pub redact_headers: Option<Vec<String>>,
    /// Drop query strings from the URLs in flow records.
    #[serde(default)]
    pub redact_url_query: Option<bool>,
    /// Every flow record as a JSON line: a file (relative to the config file) or `-` for stdout.
    #[serde(default)]
    pub access_log: Option<PathBuf>,
}

/// A relay as seen from an edge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    pub name: String,
    /// `host:port`; the host may be a name, resolved at connect time.
    pub address: String,
    #[serde(default)]
    pub server_name: Option<String>,
    pub ca: PathBuf,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub transport: Option<TransportFile>,
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// `tls` transport: outer connections opened ahead of need per worker (absent: 0).
    #[serde(default)]
    pub preconnect: Option<usize>,
    /// How often the host is re-resolved (absent: `EndpointSettings::DEFAULT_RESOLVE_INTERVAL`).
    #[serde(default, with = "humantime_serde::option")]
    pub resolve_interval: Option<Duration>,
    /// First retry delay of an ejected endpoint (absent: `EndpointSettings::DEFAULT_*`).
    #[serde(default, with = "humantime_serde::option")]
    pub retry_backoff_min: Option<Duration>,
    /// Largest retry delay of an ejected endpoint.
    #[serde(default, with = "humantime_serde::option")]
    pub retry_backoff_max: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportFile {
    H2,
    Tls,
}

/// One listener. The keys allowed depend on `kind`; `validate()` refuses keys a kind does not use
/// rather than ignoring them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    pub kind: ListenerKindFile,
    pub listen: String,
    /// Edge kinds: the relay to tunnel to.
    #[serde(default)]
    pub relay: Option<String>,
    /// `tls-passthrough`: port named in `CONNECT name:PORT`.
    #[serde(default)]
    pub inner_port: Option<u16>,
    /// `tls-passthrough`: name for ClientHellos without SNI.
    #[serde(default)]
    pub default_sni: Option<String>,
    /// `relay`: the outer TLS identity.
    #[serde(default)]
    pub tls: Option<ServerTlsFile>,
    /// `relay`: where inner connections go.
    #[serde(default)]
    pub routes: Option<Vec<Lenient<RouteFile>>>,
    /// `intercept`: explicit (default) or transparent. Lenient so a bad value is reported without
    /// hiding the listener's other problems; so are the other `intercept` keys below.
    #[serde(default)]
    pub mode: Option<Lenient<InterceptModeFile>>,
    /// `intercept`: the CA minted certificates chain to.
    #[serde(default)]
    pub ca: Option<Lenient<InterceptCaFile>>,
    /// `intercept`: minted certificates and their cache.
    #[serde(default)]
    pub certs: Option<Lenient<CertsFile>>,
    /// `intercept`: a PEM bundle to verify origins with instead of the system store.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// `intercept`: host patterns whose invalid certificates are accepted (labs only).
    #[serde(default)]
    pub danger_accept_invalid_upstream_certs: Option<Vec<String>>,
    /// `intercept`: let a name share another name's HTTP/2 origin connection when that
    /// connection's certificate covers it and its address is one the name resolves to (default
    /// true, as browsers do).
    #[serde(default)]
    pub coalesce_origin_connections: Option<bool>,
    /// `intercept`: ordered rules, first match wins.
    #[serde(default)]
    pub rules: Option<Vec<Lenient<InterceptRuleFile>>>,
    /// `intercept`: for hosts no rule matches (default bump).
    #[serde(default)]
    pub default_action: Option<Lenient<InterceptActionFile>>,
    /// `intercept`: an L7 policy file (tlsgate's format or Cilium policy YAML) that decides
    /// instead of `rules`; reloaded when it changes.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// `intercept`: audit mode: what `policy` or `rules` would refuse is let through and
    /// recorded with the verdict `AUDIT`.
    #[serde(default)]
    pub policy_audit: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerKindFile {
    TlsPassthrough,
    Http,
    Relay,
    Intercept,
}

impl ListenerKindFile {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TlsPassthrough => "tls-passthrough",
            Self::Http => "http",
            Self::Relay => "relay",
            Self::Intercept => "intercept",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub tls: Option<String>,
    #[serde(default)]
    pub http: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptModeFile {
    Explicit,
    Transparent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptActionFile {
    Bump,
    Splice,
    Deny,
}

/// The interception CA: `dir` (holding ca.pem and ca.key) or `cert` and `key`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptCaFile {
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// Absent keys take the `DEFAULT_*` consts of `tlsgate_proxy::config::CertSettings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertsFile {
    #[serde(default)]
    pub strategy: Option<Lenient<CertStrategyFile>>,
    #[serde(default, with = "humantime_serde::option")]
    pub lifetime: Option<Duration>,
    #[serde(default)]
    pub cache_size: Option<usize>,
    #[serde(default, with = "humantime_serde::option")]
    pub cache_ttl: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertStrategyFile {
    DownstreamFirst,
    UpstreamFirst,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptRuleFile {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    pub action: InterceptActionFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    pub server: String,
}

/// Absent keys take `tlsgate_proxy::config::Timeouts::default()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    #[serde(default, with = "humantime_serde::option")]
    pub detect: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub handshake: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub idle: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub http_header_read: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub shutdown_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub relay_wait: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub http_request: Option<Duration>,
}

/// Absent keys take `tlsgate_proxy::config::Limits::default()`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    #[serde(default)]
    pub max_client_hello: Option<usize>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub h2_max_concurrent_streams: Option<u32>,
    #[serde(default)]
    pub http1_max_headers: Option<usize>,
    #[serde(default)]
    pub http1_max_header_bytes: Option<usize>,
    #[serde(default)]
    pub max_connections_per_source: Option<usize>,
    #[serde(default)]
    pub max_tunnels_per_client: Option<usize>,
    #[serde(default)]
    pub h2_max_header_list_size: Option<u32>,
    #[serde(default)]
    pub h2_max_pending_resets: Option<usize>,
}
