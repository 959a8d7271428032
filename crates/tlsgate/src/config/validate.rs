//! `validate()`: the file shape into `tlsgate_proxy::config::Config`, collecting every problem.
//!
//! Each check records its error and yields `None`; a value is only built once all of its parts are
//! good, so one mistake produces one message, never a cascade. Nothing touches the network:
//! relay and upstream hosts are checked for syntax only and resolved at connect time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::ServerName;
use tlsgate_ca::{CaError, CertAuthority};
use tlsgate_policy::FqdnPattern;
use tlsgate_policy::fqdn::normalize_name;
use tlsgate_proxy::config::{
    AccessLogTarget, AdminSettings, CertSettings, CertStrategy, Config, EdgeHttp, EdgeTls,
    EndpointSettings, FlowSettings, InterceptAction, InterceptListener, InterceptMode,
    InterceptRule, InterceptRules, Limits, Listener, ListenerKind, RelayListener, RelayUpstream,
    Route, Routes, TargetHost, Timeouts, Transport, UpstreamTarget, Visibility,
};
use tlsgate_proxy::intercept::InterceptState;
use tlsgate_proxy::policy::PolicySlot;
use tlsgate_proxy::tls::{self, Identity, TlsConfigError};

use super::file::{
    AdminFile, CertStrategyFile, CertsFile, DnsFile, FileConfig, FlowsFile, InterceptActionFile,
    InterceptCaFile, InterceptModeFile, InterceptRuleFile, LimitsFile, ListenerFile,
    ListenerKindFile, RelayFile, RouteFile, ServerTlsFile, TimeoutsFile, TransportFile,
};
use super::lenient::Lenient;
use super::{ConfigError, join_path, pem};

/// h2 connections kept to each relay when `pool_size` is absent (owned by the runtime).
pub const DEFAULT_POOL_SIZE: usize = tlsgate_proxy::config::RelayUpstream::DEFAULT_POOL_SIZE;
/// Port named in `CONNECT name:PORT` when `inner_port` is absent (owned by the runtime).
pub const DEFAULT_INNER_PORT: u16 = tlsgate_proxy::config::EdgeTls::DEFAULT_INNER_PORT;
/// The placeholder for the requested name in a route target.
const SNI_PLACEHOLDER: &str = "{sni}";
/// The longest `certs.lifetime` accepted: Apple platforms refuse TLS server certificates valid
/// for more than 825 days, whoever issued them.
const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(825 * 24 * 3600);

/// Turns the parsed file into the runtime config, or returns every problem found (in file order).
pub fn validate(file: FileConfig, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut v = Validator {
        base_dir,
        errors: Vec::new(),
    };
    let relays = v.relays(file.relays);
    let listeners = v.listeners(file.listeners, &relays);
    let allow_destinations = v.allow_destinations(&file.allow_destinations);
    let dns_server = file.dns.and_then(|dns| v.dns(dns));
    let timeouts = v.timeouts(file.timeouts);
    let limits = v.limits(file.limits);
    let visibility = v.visibility(file.admin, file.flows);
    if !v.errors.is_empty() {
        return Err(v.errors);
    }
    Ok(Config {
        listeners,
        timeouts,
        limits,
        allow_destinations,
        dns_server,
        visibility,
    })
}

/// Relay names to what became of them; `None` for a relay that had errors (already reported).
type RelayTable = HashMap<String, Option<Arc<RelayUpstream>>>;

struct Validator<'a> {
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Records `result`'s error at `path`; `Some` on success.
    fn check<T>(&mut self, path: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(path, message)).ok()
    }

    /// Reports a lenient element's errors under `at`; its value if it could be built.
    fn parsed<T>(&mut self, at: &str, element: Lenient<T>) -> Option<T> {
        for error in element.errors {
            self.error(join_path(at, &error.path), error.message);
        }
        element.value
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    fn certs(
        &mut self,
        at: String,
        path: &Path,
    ) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        let result = pem::load_certs(path, &self.resolve(path));
        self.check(at, result)
    }

    fn private_key(
        &mut self,
        at: String,
        path: &Path,
    ) -> Option<rustls_pki_types::PrivateKeyDer<'static>> {
        let result = pem::load_private_key(path, &self.resolve(path));
        self.check(at, result)
    }

    /// A name must be non-empty and used once; `seen` maps names to the first path using them.
    fn unique_name(
        &mut self,
        at: &str,
        name: &str,
        what: &str,
        seen: &mut HashMap<String, String>,
    ) {
        if name.trim().is_empty() {
            self.error(format!("{at}.name"), "must not be empty");
            return;
        }
        if let Some(first) = seen.get(name) {
            self.error(
                format!("{at}.name"),
                format!("duplicate {what} name {name:?} (first used by {first})"),
            );
            return;
        }
        seen.insert(name.to_owned(), at.to_owned());
    }

    // ---- admin API and flows ----

    fn visibility(
        &mut self,
        admin: Option<Lenient<AdminFile>>,
        flows: Option<Lenient<FlowsFile>>,
    ) -> Visibility {
        let admin = admin
            .and_then(|a| self.parsed("admin", a))
            .and_then(|a| self.admin(&a));
        let mut settings = FlowSettings::default();
        let mut access_log = None;
        if let Some(file) = flows.and_then(|f| self.parsed("flows", f)) {
            match file.ring_size {
                Some(n) if n == 0 || n > FlowSettings::MAX_RING_SIZE => self.error(
                    "flows.ring_size",
                    format!("must be between 1 and {}", FlowSettings::MAX_RING_SIZE),
                ),
                Some(n) => settings.ring_size = n,
                None => {}
            }
            settings.redact_headers = self.redact_headers(file.redact_headers.unwrap_or_default());
            settings.redact_url_query = file
                .redact_url_query
                .unwrap_or(FlowSettings::DEFAULT_REDACT_URL_QUERY);
            access_log = file.access_log.and_then(|path| self.access_log(&path));
        }
        Visibility {
            admin,
            flows: settings,
            access_log,
        }
    }

    /// `flows.redact_headers`: valid header names (stored lower-case), at most
    /// `FlowSettings::MAX_REDACT_HEADERS`.
    fn redact_headers(&mut self, names: Vec<String>) -> Vec<http::HeaderName> {
        if names.len() > FlowSettings::MAX_REDACT_HEADERS {
            self.error(
                "flows.redact_headers",
                format!("at most {} names", FlowSettings::MAX_REDACT_HEADERS),
            );
        }
        let mut headers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => headers.push(header),
                Err(_) => self.error(
                    format!("flows.redact_headers[{i}]"),
                    format!("{name:?} is not a valid header name"),
                ),
            }
        }
        headers
    }

    /// `-` is stdout; a file must be in an existing directory (it is created at start).
    fn access_log(&mut self, path: &Path) -> Option<AccessLogTarget> {
        if path == Path::new("-") {
            return Some(AccessLogTarget::Stdout);
        }
        let full = self.resolve(path);
        let dir = full
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let problem = if path.as_os_str().is_empty() {
            "is empty; give a file, or - for stdout".to_owned()
        } else if full.is_dir() {
            format!("{} is a directory", full.display())
        } else if !dir.is_dir() {
            format!("directory {} does not exist", dir.display())
        } else {
            return Some(AccessLogTarget::File(full));
        };
        self.error("flows.access_log", problem);
        None
    }

    fn admin(&mut self, file: &AdminFile) -> Option<AdminSettings> {
        let listen = self.check(
            "admin.listen",
            file.listen
                .parse::<SocketAddr>()
                .map_err(|_| format!("{:?} is not an ip:port address", file.listen)),
        );
        let token = match &file.bearer_token_file {
            Some(path) => {
                let result = read_token(path, &self.resolve(path));
                Some(self.check("admin.bearer_token_file", result)?)
            }
            None => None,
        };
        let listen = listen?;
        if token.is_none() && !listen.ip().is_loopback() {
            self.error(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address; the admin API shows every flow, so \
                     set admin.bearer_token_file to serve it beyond this machine"
                ),
            );
            return None;
        }
        Some(AdminSettings {
            listen,
            bearer_token: token.map(Arc::from),
        })
    }

    // ---- relays (edge side) ----

    fn relays(&mut self, relays: Vec<Lenient<RelayFile>>) -> RelayTable {
        let mut table = RelayTable::new();
        let mut seen = HashMap::new();
        for (index, relay) in relays.into_iter().enumerate() {
            let at = format!("relays[{index}]");
            let name = relay.name.clone();
            let Some(relay) = self.parsed(&at, relay) else {
                // Keep the name so listeners using it do not also report "unknown relay".
                if let Some(name) = name {
                    table.entry(name).or_insert(None);
                }
                continue;
            };
            self.unique_name(&at, &relay.name, "relay", &mut seen);
            let name = relay.name.clone();
            let upstream = self.relay(&at, relay).map(Arc::new);
            table.entry(name).or_insert(upstream);
        }
        table
    }

    fn relay(&mut self, at: &str, relay: RelayFile) -> Option<RelayUpstream> {
        let address = parse_host_port(&relay.address);
        let address = self.check(format!("{at}.address"), address);
        let server_name = match (&relay.server_name, &address) {
            (Some(name), _) => {
                let result = parse_server_name(name);
                self.check(format!("{at}.server_name"), result)
            }
            (None, Some((host, _))) => {
                let result = parse_server_name(host);
                self.check(format!("{at}.address"), result)
            }
            (None, None) => None,
        };
        let cas = self.certs(format!("{at}.ca"), &relay.ca);
        let identity = self.client_identity(at, &relay);
        let pool_size = match relay.pool_size {
            Some(0) => {
                self.error(format!("{at}.pool_size"), "must be at least 1");
                None
            }
            size => Some(size.unwrap_or(DEFAULT_POOL_SIZE)),
        };
        let transport = match relay.transport {
            None | Some(TransportFile::H2) => Transport::H2,
            Some(TransportFile::Tls) => Transport::Tls,
        };
        let preconnect = match (relay.preconnect, transport) {
            (None, _) | (Some(0), _) => Some(0),
            (Some(_), Transport::H2) => {
                self.error(
                    format!("{at}.preconnect"),
                    "only the tls transport opens outer connections per tunnel; \
                     with h2, pool_size connections are kept open already",
                );
                None
            }
            (Some(n), Transport::Tls) if n > RelayUpstream::MAX_PRECONNECT => {
                self.error(
                    format!("{at}.preconnect"),
                    format!("at most {} per worker", RelayUpstream::MAX_PRECONNECT),
                );
                None
            }
            (Some(n), Transport::Tls) => Some(n),
        };
        let endpoints = self.endpoint_settings(at, &relay);

        let ((host, port), server_name, cas, identity, pool_size, endpoints) = (
            address?,
            server_name?,
            cas?,
            identity?,
            pool_size?,
            endpoints?,
        );
        let preconnect = preconnect?;
        let (tls_h2, tls_raw) = match tls::relay_client_configs(&cas, identity) {
            Ok(configs) => configs,
            Err(err) => {
                let key = match err {
                    TlsConfigError::EmptyTrustAnchors | TlsConfigError::BadTrustAnchor(_) => "ca",
                    _ => "client_cert",
                };
                self.error(
                    format!("{at}.{key}"),
                    format!("building TLS client config: {err}"),
                );
                return None;
            }
        };
        Some(RelayUpstream {
            name: relay.name,
            host,
            port,
            server_name,
            transport,
            tls_h2,
            tls_raw,
            pool_size,
            preconnect,
            endpoints,
        })
    }

    /// Re-resolution period and ejection backoff; each greater than zero, min ≤ max.
    fn endpoint_settings(&mut self, at: &str, relay: &RelayFile) -> Option<EndpointSettings> {
        let mut settings = EndpointSettings::default();
        let mut ok = true;
        let fields = [
            (
                "resolve_interval",
                &mut settings.resolve_interval,
                relay.resolve_interval,
            ),
            (
                "retry_backoff_min",
                &mut settings.retry_backoff_min,
                relay.retry_backoff_min,
            ),
            (
                "retry_backoff_max",
                &mut settings.retry_backoff_max,
                relay.retry_backoff_max,
            ),
        ];
        for (key, slot, value) in fields {
            match value {
                Some(d) if d.is_zero() => {
                    self.error(format!("{at}.{key}"), "must be greater than zero");
                    ok = false;
                }
                Some(d) => *slot = d,
                None => {}
            }
        }
        if ok && settings.retry_backoff_min > settings.retry_backoff_max {
            self.error(
                format!("{at}.retry_backoff_min"),
                format!(
                    "{} is above retry_backoff_max ({})",
                    humantime::format_duration(settings.retry_backoff_min),
                    humantime::format_duration(settings.retry_backoff_max)
                ),
            );
            ok = false;
        }
        ok.then_some(settings)
    }

    /// `Some(None)`: no client certificate; `None`: an error was recorded.
    fn client_identity(&mut self, at: &str, relay: &RelayFile) -> Option<Option<Identity>> {
        match (&relay.client_cert, &relay.client_key) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => {
                let chain = self.certs(format!("{at}.client_cert"), cert);
                let key = self.private_key(format!("{at}.client_key"), key);
                Some(Some(Identity {
                    chain: chain?,
                    key: key?,
                }))
            }
            (Some(_), None) => {
                self.error(
                    format!("{at}.client_key"),
                    "required when client_cert is set",
                );
                None
            }
            (None, Some(_)) => {
                self.error(
                    format!("{at}.client_cert"),
                    "required when client_key is set",
                );
                None
            }
        }
    }

    // ---- listeners ----

    fn listeners(
        &mut self,
        listeners: Vec<Lenient<ListenerFile>>,
        relays: &RelayTable,
    ) -> Vec<Listener> {
        if listeners.is_empty() {
            self.error(
                "listeners",
                "no listeners configured; add at least one (see docs/config.md)",
            );
        }
        let mut names = HashMap::new();
        let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
        let mut built = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let at = format!("listeners[{index}]");
            let Some(listener) = self.parsed(&at, listener) else {
                continue;
            };
            self.unique_name(&at, &listener.name, "listener", &mut names);
            let listen = self.listen_address(&at, &listener.listen, &mut addresses);
            let name = listener.name.clone();
            let kind = self.listener_kind(&at, listener, relays);
            if let (Some(listen), Some(kind)) = (listen, kind) {
                built.push(Listener { name, listen, kind });
            }
        }
        built
    }

    fn listen_address(
        &mut self,
        at: &str,
        text: &str,
        seen: &mut HashMap<SocketAddr, String>,
    ) -> Option<SocketAddr> {
        let at = format!("{at}.listen");
        let Ok(addr) = text.parse::<SocketAddr>() else {
            self.error(
                at,
                format!("{text:?}: expected ip:port, e.g. 0.0.0.0:443 or [::]:443"),
            );
            return None;
        };
        // Port 0 picks a fresh port each time, so it never collides.
        if addr.port() != 0 {
            if let Some(first) = seen.get(&addr) {
                self.error(at, format!("{addr} is already used by {first}"));
                return None;
            }
            seen.insert(addr, at);
        }
        Some(addr)
    }

    fn listener_kind(
        &mut self,
        at: &str,
        listener: ListenerFile,
        relays: &RelayTable,
    ) -> Option<ListenerKind> {
        let kind = listener.kind;
        let present = [
            ("relay", listener.relay.is_some()),
            ("inner_port", listener.inner_port.is_some()),
            ("default_sni", listener.default_sni.is_some()),
            ("tls", listener.tls.is_some()),
            ("routes", listener.routes.is_some()),
            ("mode", listener.mode.is_some()),
            ("ca", listener.ca.is_some()),
            ("certs", listener.certs.is_some()),
            ("upstream_ca", listener.upstream_ca.is_some()),
            (
                "danger_accept_invalid_upstream_certs",
                listener.danger_accept_invalid_upstream_certs.is_some(),
            ),
            (
                "coalesce_origin_connections",
                listener.coalesce_origin_connections.is_some(),
            ),
            ("rules", listener.rules.is_some()),
            ("default_action", listener.default_action.is_some()),
            ("policy", listener.policy.is_some()),
            ("policy_audit", listener.policy_audit.is_some()),
        ];
        let allowed: &[&str] = match kind {
            ListenerKindFile::TlsPassthrough => &["relay", "inner_port", "default_sni"],
            ListenerKindFile::Http => &["relay"],
            ListenerKindFile::Relay => &["tls", "routes"],
            ListenerKindFile::Intercept => &[
                "mode",
                "ca",
                "certs",
                "upstream_ca",
                "danger_accept_invalid_upstream_certs",
                "coalesce_origin_connections",
                "rules",
                "default_action",
                "policy",
                "policy_audit",
            ],
        };
        for (key, _) in present
            .iter()
            .filter(|(key, set)| *set && !allowed.contains(key))
        {
            self.error(
                format!("{at}.{key}"),
                format!("not used by kind {}; remove it", kind.as_str()),
            );
        }

        match kind {
            ListenerKindFile::TlsPassthrough => {
                let relay = self.relay_reference(at, listener.relay.as_deref(), relays);
                let default_sni = match &listener.default_sni {
                    None => Some(None),
                    Some(name) => {
                        let result = normalize_name(name)
                            .map(Some)
                            .map_err(|e| format!("{name:?}: {e}"));
                        self.check(format!("{at}.default_sni"), result)
                    }
                };
                let inner_port = match listener.inner_port {
                    Some(0) => {
                        self.error(format!("{at}.inner_port"), "must be 1-65535");
                        None
                    }
                    port => Some(port.unwrap_or(DEFAULT_INNER_PORT)),
                };
                Some(ListenerKind::TlsPassthrough(EdgeTls {
                    relay: relay?,
                    inner_port: inner_port?,
                    default_sni: default_sni?,
                }))
            }
            ListenerKindFile::Http => {
                let relay = self.relay_reference(at, listener.relay.as_deref(), relays)?;
                Some(ListenerKind::Http(EdgeHttp { relay }))
            }
            ListenerKindFile::Relay => {
                let tls = match &listener.tls {
                    Some(tls) => self.server_tls(&format!("{at}.tls"), tls),
                    None => {
                        self.error(format!("{at}.tls"), "required for kind relay");
                        None
                    }
                };
                let routes = self.routes(at, listener.routes);
                Some(ListenerKind::Relay(RelayListener {
                    tls: tls?,
                    routes: Arc::new(routes?),
                }))
            }
            ListenerKindFile::Intercept => {
                self.intercept(at, listener).map(ListenerKind::Intercept)
            }
        }
    }

    // ---- intercept listeners ----

    fn intercept(&mut self, at: &str, listener: ListenerFile) -> Option<InterceptListener> {
        let mode = match listener.mode.map(|m| self.parsed(&format!("{at}.mode"), m)) {
            None => Some(InterceptMode::Explicit),
            Some(None) => None,
            Some(Some(InterceptModeFile::Explicit)) => Some(InterceptMode::Explicit),
            Some(Some(InterceptModeFile::Transparent)) => Some(InterceptMode::Transparent),
        };
        let ca = match listener.ca {
            Some(ca) => {
                let ca_at = format!("{at}.ca");
                self.parsed(&ca_at, ca)
                    .and_then(|ca| self.intercept_ca(&ca_at, &ca))
            }
            None => {
                self.error(
                    format!("{at}.ca"),
                    "required for kind intercept: `dir` (holding ca.pem and ca.key), or `cert` \
                     and `key`",
                );
                None
            }
        };
        let certs = self.cert_settings(&format!("{at}.certs"), listener.certs);
        let upstream_roots = self.upstream_roots(at, listener.upstream_ca.as_deref());
        let danger = self.patterns(
            &format!("{at}.danger_accept_invalid_upstream_certs"),
            listener
                .danger_accept_invalid_upstream_certs
                .as_deref()
                .unwrap_or_default(),
        );
        if listener.policy.is_some()
            && (listener.rules.is_some() || listener.default_action.is_some())
        {
            self.error(
                format!("{at}.policy"),
                "use either `policy` (an L7 policy file) or `rules`/`default_action`, not both",
            );
        }
        let policy = listener.policy.as_deref().map(|path| self.policy(at, path));
        let rules = self.intercept_rules(at, listener.rules, listener.default_action);

        let (strategy, leaf_lifetime, cache_capacity, cache_ttl) = certs?;
        let listener = InterceptListener {
            mode: mode?,
            rules: Arc::new(rules?),
            policy: match policy {
                Some(slot) => Some(slot?),
                None => None,
            },
            policy_audit: listener
                .policy_audit
                .unwrap_or(InterceptListener::DEFAULT_POLICY_AUDIT),
            certs: Arc::new(CertSettings {
                ca: Arc::new(ca?),
                strategy,
                leaf_lifetime,
                cache_capacity,
                cache_ttl,
            }),
            upstream_roots: upstream_roots?,
            danger_accept_invalid_upstream_certs: danger?,
            coalesce_origin_connections: listener
                .coalesce_origin_connections
                .unwrap_or(InterceptListener::DEFAULT_COALESCE_ORIGIN_CONNECTIONS),
        };
        // What `run` builds when binding (leaf minting, origin verifier, client-facing TLS), so
        // `check` proves it works.
        if let Err(err) = InterceptState::new(listener.clone()) {
            self.error(at, format!("building the interceptor: {err}"));
            return None;
        }
        Some(listener)
    }

    /// Loads and compiles an L7 policy file; its errors are reported under `{at}.policy`, each with
    /// the file, document and key path inside the policy.
    fn policy(&mut self, at: &str, path: &Path) -> Option<Arc<PolicySlot>> {
        let resolved = self.resolve(path);
        match PolicySlot::load(resolved, tlsgate_policy::LoadOptions::default()) {
            Ok((slot, notices)) => {
                for notice in notices {
                    tracing::info!("{at}.policy: {notice}");
                }
                Some(Arc::new(slot))
            }
            Err(errors) => {
                for error in errors {
                    self.error(format!("{at}.policy"), error.to_string());
                }
                None
            }
        }
    }

    /// Loads the CA from `dir`, or from `cert` and `key`; exactly one of the two forms.
    fn intercept_ca(&mut self, at: &str, ca: &InterceptCaFile) -> Option<CertAuthority> {
        match (&ca.dir, &ca.cert, &ca.key) {
            (Some(dir), None, None) => {
                let result =
                    CertAuthority::load_dir(&self.resolve(dir)).map_err(|e| describe_ca(&e));
                self.check(format!("{at}.dir"), result)
            }
            (None, Some(cert), Some(key)) => {
                let (cert, key) = (self.resolve(cert), self.resolve(key));
                match CertAuthority::load(&cert, &key) {
                    Ok(ca) => Some(ca),
                    Err(err) => {
                        let field = ca_error_field(&err, &key);
                        self.error(format!("{at}.{field}"), describe_ca(&err));
                        None
                    }
                }
            }
            (Some(_), _, _) => {
                self.error(
                    at,
                    "give either `dir` or `cert` and `key`, not both (dir holds ca.pem and ca.key)",
                );
                None
            }
            (None, Some(_), None) => {
                self.error(format!("{at}.key"), "required when cert is set");
                None
            }
            (None, None, Some(_)) => {
                self.error(format!("{at}.cert"), "required when key is set");
                None
            }
            (None, None, None) => {
                self.error(
                    at,
                    "needs `dir` (holding ca.pem and ca.key), or `cert` and `key`",
                );
                None
            }
        }
    }

    /// Strategy, leaf lifetime, cache capacity and cache TTL, defaults from `CertSettings`.
    fn cert_settings(
        &mut self,
        at: &str,
        file: Option<Lenient<CertsFile>>,
    ) -> Option<(CertStrategy, Duration, usize, Duration)> {
        let file = match file {
            None => CertsFile::default(),
            Some(file) => self.parsed(at, file)?,
        };
        let strategy = match file
            .strategy
            .map(|s| self.parsed(&format!("{at}.strategy"), s))
        {
            None | Some(Some(CertStrategyFile::DownstreamFirst)) => {
                Some(CertStrategy::DownstreamFirst)
            }
            Some(Some(CertStrategyFile::UpstreamFirst)) => Some(CertStrategy::UpstreamFirst),
            Some(None) => None,
        };
        let lifetime = match file.lifetime {
            Some(Duration::ZERO) => {
                self.error(format!("{at}.lifetime"), "must be greater than zero");
                None
            }
            Some(d) if d > MAX_LEAF_LIFETIME => {
                self.error(
                    format!("{at}.lifetime"),
                    format!(
                        "{} is too long: at most {} (Apple platforms refuse longer-lived \
                         TLS certificates)",
                        show_duration(d),
                        show_duration(MAX_LEAF_LIFETIME)
                    ),
                );
                None
            }
            d => Some(d.unwrap_or(CertSettings::DEFAULT_LEAF_LIFETIME)),
        };
        let capacity = match file.cache_size {
            Some(0) => {
                self.error(format!("{at}.cache_size"), "must be at least 1");
                None
            }
            n => Some(n.unwrap_or(CertSettings::DEFAULT_CACHE_CAPACITY)),
        };
        let ttl = match file.cache_ttl {
            Some(Duration::ZERO) => {
                self.error(format!("{at}.cache_ttl"), "must be greater than zero");
                None
            }
            d => Some(d.unwrap_or(CertSettings::DEFAULT_CACHE_TTL)),
        };
        if let (Some(ttl), Some(lifetime)) = (ttl, lifetime)
            && ttl >= lifetime
        {
            // Whichever was written is the one to change; both defaults always agree.
            let key = if file.cache_ttl.is_some() {
                "cache_ttl"
            } else {
                "lifetime"
            };
            self.error(
                format!("{at}.{key}"),
                format!(
                    "cache_ttl ({}) must be below lifetime ({}): a cached certificate must never \
                     be served after it expires",
                    show_duration(ttl),
                    show_duration(lifetime)
                ),
            );
            return None;
        }
        Some((strategy?, lifetime?, capacity?, ttl?))
    }

    /// The trust anchors for origins: `upstream_ca` if given, else the system trust store.
    fn upstream_roots(
        &mut self,
        at: &str,
        bundle: Option<&Path>,
    ) -> Option<Arc<rustls::RootCertStore>> {
        let at = format!("{at}.upstream_ca");
        let bundle = match bundle {
            Some(path) => Some(self.certs(at.clone(), path)?),
            None => None,
        };
        match tls::upstream_roots(bundle.as_deref()) {
            Ok(roots) => Some(roots),
            Err(TlsConfigError::EmptyTrustAnchors) if bundle.is_none() => {
                self.error(
                    at,
                    "no certificates found in the system trust store (install ca-certificates, \
                     set SSL_CERT_FILE, or name a PEM bundle here)",
                );
                None
            }
            Err(err) => {
                self.error(at, format!("loading trust anchors: {err}"));
                None
            }
        }
    }

    /// Host patterns under `at[i]`; `None` if any is bad (each reported).
    fn patterns(&mut self, at: &str, texts: &[String]) -> Option<Vec<FqdnPattern>> {
        let mut built = Vec::with_capacity(texts.len());
        let mut ok = true;
        for (index, text) in texts.iter().enumerate() {
            let pattern = FqdnPattern::parse(text).map_err(|e| format!("{text:?}: {e}"));
            match self.check(format!("{at}[{index}]"), pattern) {
                Some(pattern) => built.push(pattern),
                None => ok = false,
            }
        }
        ok.then_some(built)
    }

    fn intercept_rules(
        &mut self,
        at: &str,
        rules: Option<Vec<Lenient<InterceptRuleFile>>>,
        default_action: Option<Lenient<InterceptActionFile>>,
    ) -> Option<InterceptRules> {
        let mut built = Vec::new();
        let mut ok = true;
        for (index, rule) in rules.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{at}.rules[{index}]");
            let rule = self
                .parsed(&at, rule)
                .and_then(|rule| self.intercept_rule(&at, rule));
            match rule {
                Some(rule) => built.push(rule),
                None => ok = false,
            }
        }
        let default = match default_action {
            None => Some(InterceptAction::Bump),
            Some(action) => self
                .parsed(&format!("{at}.default_action"), action)
                .map(intercept_action),
        };
        let default = default?;
        ok.then_some(InterceptRules {
            rules: built,
            default,
        })
    }

    fn intercept_rule(&mut self, at: &str, rule: InterceptRuleFile) -> Option<InterceptRule> {
        let pattern =
            FqdnPattern::parse(&rule.pattern).map_err(|e| format!("{:?}: {e}", rule.pattern));
        let pattern = self.check(format!("{at}.match"), pattern);
        let ports = rule.ports.unwrap_or_default();
        let mut ports_ok = true;
        for (index, port) in ports.iter().enumerate() {
            if *port == 0 {
                self.error(format!("{at}.ports[{index}]"), "must be 1-65535");
                ports_ok = false;
            }
        }
        Some(InterceptRule {
            pattern: pattern?,
            ports: ports_ok.then_some(ports)?,
            action: intercept_action(rule.action),
        })
    }

    fn relay_reference(
        &mut self,
        at: &str,
        name: Option<&str>,
        relays: &RelayTable,
    ) -> Option<Arc<RelayUpstream>> {
        let at = format!("{at}.relay");
        let Some(name) = name else {
            self.error(at, "required: the name of an entry in `relays`");
            return None;
        };
        match relays.get(name) {
            Some(relay) => relay.clone(),
            None => {
                let mut known: Vec<&str> = relays.keys().map(String::as_str).collect();
                known.sort_unstable();
                let known = if known.is_empty() {
                    "none are defined".to_owned()
                } else {
                    format!("defined: {}", known.join(", "))
                };
                self.error(at, format!("unknown relay {name:?} ({known})"));
                None
            }
        }
    }

    fn server_tls(&mut self, at: &str, tls: &ServerTlsFile) -> Option<Arc<rustls::ServerConfig>> {
        let chain = self.certs(format!("{at}.cert"), &tls.cert);
        let key = self.private_key(format!("{at}.key"), &tls.key);
        let client_cas = match &tls.client_ca {
            None => Some(None),
            Some(path) => self.certs(format!("{at}.client_ca"), path).map(Some),
        };
        let (chain, key, client_cas) = (chain?, key?, client_cas?);
        match tls::relay_server_config(chain, key, client_cas.as_deref()) {
            Ok(config) => Some(config),
            Err(err) => {
                let path = match err {
                    TlsConfigError::BadIdentity(_) => at.to_owned(),
                    _ => format!("{at}.client_ca"),
                };
                self.error(path, format!("building TLS server config: {err}"));
                None
            }
        }
    }

    fn routes(&mut self, at: &str, routes: Option<Vec<Lenient<RouteFile>>>) -> Option<Routes> {
        let at = format!("{at}.routes");
        let routes = match routes {
            Some(routes) if !routes.is_empty() => routes,
            _ => {
                self.error(at, "a relay listener needs at least one route");
                return None;
            }
        };
        let mut built = Vec::with_capacity(routes.len());
        let mut ok = true;
        for (index, route) in routes.into_iter().enumerate() {
            let at = format!("{at}[{index}]");
            let route = self
                .parsed(&at, route)
                .and_then(|route| self.route(&at, &route));
            match route {
                Some(route) => built.push(route),
                None => ok = false,
            }
        }
        ok.then_some(Routes { routes: built })
    }

    fn route(&mut self, at: &str, route: &RouteFile) -> Option<Route> {
        let pattern =
            FqdnPattern::parse(&route.pattern).map_err(|e| format!("{:?}: {e}", route.pattern));
        let pattern = self.check(format!("{at}.match"), pattern);
        if route.tls.is_none() && route.http.is_none() {
            self.error(at, "needs at least one of `tls` and `http` (the upstreams)");
            return None;
        }
        let tls = self.target(format!("{at}.tls"), route.tls.as_deref());
        let http = self.target(format!("{at}.http"), route.http.as_deref());
        Some(Route {
            pattern: pattern?,
            tls: tls?,
            http: http?,
        })
    }

    /// `Some(None)` when absent; `None` after recording an error.
    fn target(&mut self, at: String, text: Option<&str>) -> Option<Option<UpstreamTarget>> {
        let Some(text) = text else {
            return Some(None);
        };
        self.check(at, parse_target(text)).map(Some)
    }

    // ---- global sections ----

    fn allow_destinations(&mut self, cidrs: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(cidrs.len());
        for (index, text) in cidrs.iter().enumerate() {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{text:?}: expected a CIDR like 10.0.0.0/8 or an IP address"));
            nets.extend(self.check(format!("allow_destinations[{index}]"), net));
        }
        nets
    }

    fn dns(&mut self, dns: Lenient<DnsFile>) -> Option<SocketAddr> {
        let dns = self.parsed("dns", dns)?;
        let server = dns
            .server
            .parse::<SocketAddr>()
            .map_err(|_| format!("{:?}: expected ip:port, e.g. 192.0.2.53:53", dns.server));
        self.check("dns.server", server)
    }

    fn timeouts(&mut self, file: Option<Lenient<TimeoutsFile>>) -> Timeouts {
        let mut timeouts = Timeouts::default();
        let Some(file) = file.and_then(|t| self.parsed("timeouts", t)) else {
            return timeouts;
        };
        let fields = [
            ("detect", &mut timeouts.detect, file.detect),
            ("connect", &mut timeouts.connect, file.connect),
            ("handshake", &mut timeouts.handshake, file.handshake),
            ("idle", &mut timeouts.idle, file.idle),
            (
                "http_header_read",
                &mut timeouts.http_header_read,
                file.http_header_read,
            ),
            (
                "shutdown_grace",
                &mut timeouts.shutdown_grace,
                file.shutdown_grace,
            ),
            ("relay_wait", &mut timeouts.relay_wait, file.relay_wait),
            (
                "http_request",
                &mut timeouts.http_request,
                file.http_request,
            ),
        ];
        for (key, slot, value) in fields {
            match value {
                Some(d) if d == Duration::ZERO => {
                    self.error(format!("timeouts.{key}"), "must be greater than zero")
                }
                Some(d) => *slot = d,
                None => {}
            }
        }
        timeouts
    }

    fn limits(&mut self, file: Option<Lenient<LimitsFile>>) -> Limits {
        let mut limits = Limits::default();
        let Some(file) = file.and_then(|l| self.parsed("limits", l)) else {
            return limits;
        };
        let fields = [
            (
                "max_client_hello",
                &mut limits.max_client_hello,
                file.max_client_hello,
            ),
            (
                "max_connections",
                &mut limits.max_connections,
                file.max_connections,
            ),
            (
                "http1_max_headers",
                &mut limits.http1_max_headers,
                file.http1_max_headers,
            ),
            (
                "http1_max_header_bytes",
                &mut limits.http1_max_header_bytes,
                file.http1_max_header_bytes,
            ),
            (
                "max_connections_per_source",
                &mut limits.max_connections_per_source,
                file.max_connections_per_source,
            ),
            (
                "max_tunnels_per_client",
                &mut limits.max_tunnels_per_client,
                file.max_tunnels_per_client,
            ),
            (
                "h2_max_pending_resets",
                &mut limits.h2_max_pending_resets,
                file.h2_max_pending_resets,
            ),
        ];
        for (key, slot, value) in fields {
            match value {
                Some(0) => self.error(format!("limits.{key}"), "must be greater than zero"),
                Some(n) => *slot = n,
                None => {}
            }
        }
        let fields = [
            (
                "h2_max_concurrent_streams",
                &mut limits.h2_max_concurrent_streams,
                file.h2_max_concurrent_streams,
            ),
            (
                "h2_max_header_list_size",
                &mut limits.h2_max_header_list_size,
                file.h2_max_header_list_size,
            ),
        ];
        for (key, slot, value) in fields {
            match value {
                Some(0) => self.error(format!("limits.{key}"), "must be greater than zero"),
                Some(n) => *slot = n,
                None => {}
            }
        }
        limits
    }
}

/// `host:port` where host is a DNS name, an IPv4 address or a bracketed IPv6 address. The host is
/// returned without brackets, lower-cased.
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?}: expected host:port"));
    };
    let port = parse_port(text, port)?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip = v6
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{text:?}: {v6:?} is not an IPv6 address"))?;
        return Ok((ip.to_string(), port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_ipv6() {
            return Err(format!(
                "{text:?}: write IPv6 addresses in brackets, e.g. [{ip}]:{port}"
            ));
        }
        return Ok((ip.to_string(), port));
    }
    let host = normalize_name(host).map_err(|e| format!("{text:?}: host {host:?}: {e}"))?;
    Ok((host, port))
}

fn parse_port(text: &str, port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{text:?}: port must be 1-65535")),
        Ok(port) => Ok(port),
    }
}

/// A route upstream: `host:port`, or `{sni}:port` for the requested name.
fn parse_target(text: &str) -> Result<UpstreamTarget, String> {
    if let Some((host, port)) = text.rsplit_once(':')
        && host == SNI_PLACEHOLDER
    {
        return Ok(UpstreamTarget {
            host: TargetHost::Requested,
            port: parse_port(text, port)?,
        });
    }
    if text.contains(SNI_PLACEHOLDER) {
        return Err(format!(
            "{text:?}: `{SNI_PLACEHOLDER}` must be the whole host, as in {{sni}}:443"
        ));
    }
    let (host, port) = parse_host_port(text)?;
    Ok(UpstreamTarget {
        host: TargetHost::Fixed(host),
        port,
    })
}

/// A duration the way a config would say it: `7d`, `12h`, else humantime's `1h 30m`.
/// The admin bearer token in `resolved` (shown as `shown`): one non-empty line, in a file no one
/// else can read.
fn read_token(shown: &Path, resolved: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(resolved).map_err(|e| format!("{}: {e}", shown.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{}: readable by others (mode {:o}); chmod 600 it",
            shown.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text =
        std::fs::read_to_string(resolved).map_err(|e| format!("{}: {e}", shown.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!(
            "{}: expected one token on one line",
            shown.display()
        ));
    }
    Ok(token.to_owned())
}

fn show_duration(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs > 0 && secs.is_multiple_of(DAY) {
        format!("{}d", secs / DAY)
    } else if d.subsec_nanos() == 0 && secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn intercept_action(action: InterceptActionFile) -> InterceptAction {
    match action {
        InterceptActionFile::Bump => InterceptAction::Bump,
        InterceptActionFile::Splice => InterceptAction::Splice,
        InterceptActionFile::Deny => InterceptAction::Deny,
    }
}

/// A CA error with its causes (`reading ca.key: No such file or directory`).
fn describe_ca(err: &CaError) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Which of `ca.cert` / `ca.key` a loading error is about.
fn ca_error_field(err: &CaError, key: &Path) -> &'static str {
    match err {
        CaError::KeyTooOpen { .. } | CaError::InvalidKey { .. } | CaError::KeyMismatch { .. } => {
            "key"
        }
        CaError::ReadFile { path, .. } if path == key => "key",
        _ => "cert",
    }
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    use super::*;
    use crate::config::parse_and_validate;

    fn validate_yaml(yaml: &str, dir: &Path) -> Result<Config, Vec<ConfigError>> {
        parse_and_validate(yaml, dir)
    }

    fn error_paths(result: Result<Config, Vec<ConfigError>>) -> Vec<String> {
        let errors = result.expect_err("config must be refused");
        errors.into_iter().map(|e| e.path).collect()
    }

    fn write(path: &Path, text: &str, mode: u32) {
        fs::create_dir_all(path.parent().expect("file in a directory")).expect("mkdir");
        fs::write(path, text).expect("write file");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A CA, a relay certificate for envoy-b.example.com and an edge client certificate, under
    /// `dir/certs/`, keys 0600.
    fn write_pki(dir: &Path) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("self-signed CA");
        write(&dir.join("certs/ca.pem"), &ca.pem(), 0o644);
        for (name, san) in [
            ("relay", "envoy-b.example.com"),
            ("edge", "edge.example.com"),
        ] {
            let key = KeyPair::generate().expect("leaf key");
            let cert = CertificateParams::new(vec![san.to_owned()])
                .expect("leaf params")
                .signed_by(&key, &ca)
                .expect("leaf signed");
            write(&dir.join(format!("certs/{name}.pem")), &cert.pem(), 0o644);
            write(
                &dir.join(format!("certs/{name}.key")),
                &key.serialize_pem(),
                0o600,
            );
        }
    }

    const GOOD: &str = r#"
relays:
  - name: b
    address: Envoy-B.example.com:8443
    ca: certs/ca.pem
    client_cert: certs/edge.pem
    client_key: certs/edge.key
listeners:
  - name: https
    kind: tls-passthrough
    listen: 127.0.0.1:0
    relay: b
  - name: http
    kind: http
    listen: 127.0.0.1:0
    relay: b
  - name: relay
    kind: relay
    listen: "[::1]:0"
    tls: {cert: certs/relay.pem, key: certs/relay.key, client_ca: certs/ca.pem}
    routes:
      - {match: private.service.example.com, tls: "private.service.example.com:443", http: "10.0.0.1:80"}
      - {match: "*.svc.example.com", tls: "{sni}:443"}
      - {match: fixed.example.com, tls: "{sni}:8443"}
timeouts: {idle: 90s}
limits: {max_connections: 10}
"#;

    #[test]
    fn preconnect_is_for_the_tls_transport_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pki(dir.path());
        let config = validate_yaml(GOOD, dir.path()).expect("valid config");
        let ListenerKind::TlsPassthrough(edge) = &config.listeners[0].kind else {
            panic!("https is tls-passthrough")
        };
        assert_eq!(edge.relay.preconnect, 0, "off unless asked for");
        let with = |extra: &str| {
            GOOD.replace(
                "    client_key: certs/edge.key\n",
                &format!("    client_key: certs/edge.key\n{extra}"),
            )
        };
        let tls = with("    transport: tls\n    preconnect: 2\n");
        let config = validate_yaml(&tls, dir.path()).expect("valid config");
        let ListenerKind::TlsPassthrough(edge) = &config.listeners[0].kind else {
            panic!("https is tls-passthrough")
        };
        assert_eq!(edge.relay.preconnect, 2);
        let h2 = with("    preconnect: 2\n");
        assert_eq!(
            error_paths(validate_yaml(&h2, dir.path())),
            ["relays[0].preconnect"]
        );
        let too_many = with(&format!(
            "    transport: tls\n    preconnect: {}\n",
            RelayUpstream::MAX_PRECONNECT + 1
        ));
        assert_eq!(
            error_paths(validate_yaml(&too_many, dir.path())),
            ["relays[0].preconnect"]
        );
    }

    #[test]
    fn admin_is_off_by_default_loopback_without_a_token_and_flows_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pki(dir.path());
        let config = validate_yaml(GOOD, dir.path()).expect("valid config");
        assert!(config.visibility.admin.is_none());
        assert_eq!(
            config.visibility.flows.ring_size,
            FlowSettings::DEFAULT_RING_SIZE
        );

        let with_admin =
            format!("{GOOD}admin: {{listen: 127.0.0.1:9901}}\nflows: {{ring_size: 50}}\n");
        let config = validate_yaml(&with_admin, dir.path()).expect("valid config");
        let admin = config.visibility.admin.expect("admin");
        assert_eq!(admin.listen, AdminSettings::DEFAULT_LISTEN);
        assert!(admin.bearer_token.is_none());
        assert_eq!(config.visibility.flows.ring_size, 50);

        let exposed = format!("{GOOD}admin: {{listen: 0.0.0.0:9901}}\nflows: {{ring_size: 0}}\n");
        assert_eq!(
            error_paths(validate_yaml(&exposed, dir.path())),
            ["admin.listen", "flows.ring_size"]
        );

        let token = dir.path().join("admin.token");
        write(&token, "s3cret\n", 0o644);
        let open_token =
            format!("{GOOD}admin: {{listen: 0.0.0.0:9901, bearer_token_file: admin.token}}\n");
        assert_eq!(
            error_paths(validate_yaml(&open_token, dir.path())),
            ["admin.bearer_token_file"]
        );
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).expect("chmod");
        let config = validate_yaml(&open_token, dir.path()).expect("a token allows any address");
        let admin = config.visibility.admin.expect("admin");
        assert_eq!(admin.bearer_token.as_deref(), Some("s3cret"));
        assert!(
            !format!("{admin:?}").contains("s3cret"),
            "Debug elides the token"
        );
    }

    #[test]
    fn builds_runtime_config_with_documented_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pki(dir.path());
        let config = validate_yaml(GOOD, dir.path()).expect("valid config");

        assert_eq!(config.timeouts.idle, Duration::from_secs(90));
        let defaults = Timeouts::default();
        assert_eq!(config.timeouts.detect, defaults.detect);
        assert_eq!(config.timeouts.shutdown_grace, defaults.shutdown_grace);
        assert_eq!(config.limits.max_connections, 10);
        assert_eq!(
            config.limits.max_client_hello,
            Limits::default().max_client_hello
        );

        let [https, http, relay] = &config.listeners[..] else {
            panic!("three listeners expected")
        };
        let ListenerKind::TlsPassthrough(edge) = &https.kind else {
            panic!("https is tls-passthrough")
        };
        assert_eq!(edge.inner_port, DEFAULT_INNER_PORT);
        assert_eq!(edge.default_sni, None);
        assert_eq!(edge.relay.host, "envoy-b.example.com");
        assert_eq!(edge.relay.port, 8443);
        assert_eq!(edge.relay.transport, Transport::H2);
        assert_eq!(edge.relay.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(
            edge.relay.server_name,
            ServerName::try_from("envoy-b.example.com").expect("valid name")
        );
        assert_eq!(edge.relay.tls_h2.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(matches!(&http.kind, ListenerKind::Http(e) if Arc::ptr_eq(&e.relay, &edge.relay)));

        let ListenerKind::Relay(relay) = &relay.kind else {
            panic!("relay listener expected")
        };
        let routes = &relay.routes.routes;
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[0].http,
            Some(UpstreamTarget {
                host: TargetHost::Fixed("10.0.0.1".into()),
                port: 80
            })
        );
        assert_eq!(
            routes[1].tls,
            Some(UpstreamTarget {
                host: TargetHost::Requested,
                port: 443
            })
        );
        assert_eq!(routes[1].http, None);
        assert!(routes[1].pattern.matches("api.svc.example.com"));
        // `{sni}` in a route for one fixed name is simply that name.
        assert_eq!(
            routes[2].tls.as_ref().map(|t| &t.host),
            Some(&TargetHost::Requested)
        );
    }

    #[test]
    fn reports_every_semantic_problem_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pki(dir.path());
        let yaml = r#"
relays:
  - name: b
    address: envoy-b.example.com
    ca: certs/missing-ca.pem
    client_cert: certs/edge.pem
listeners:
  - name: one
    kind: tls-passthrough
    listen: 0.0.0.0:443
    relay: nowhere
    default_sni: "bad name"
  - name: one
    kind: http
    listen: 0.0.0.0:443
    relay: b
    routes: []
  - name: r
    kind: relay
    listen: localhost:8443
    tls: {cert: certs/relay.pem, key: certs/relay.key}
    routes:
      - {match: "a.*.com", tls: "x.example.com:443"}
      - {match: ok.example.com}
      - {match: ok2.example.com, http: "{sni}.internal:80"}
  - name: r2
    kind: relay
    listen: 0.0.0.0:8444
    tls: {cert: certs/relay.pem, key: certs/relay.key}
allow_destinations: [10.0.0.0/8, not-a-cidr]
dns: {server: "192.0.2.53"}
timeouts: {detect: 0s}
"#;
        let errors = validate_yaml(yaml, dir.path()).expect_err("refused");
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "relays[0].address",
                "relays[0].ca",
                "relays[0].client_key",
                "listeners[0].relay",
                "listeners[0].default_sni",
                "listeners[1].name",
                "listeners[1].listen",
                "listeners[1].routes",
                "listeners[2].listen",
                "listeners[2].routes[0].match",
                "listeners[2].routes[1]",
                "listeners[2].routes[2].http",
                "listeners[3].routes",
                "allow_destinations[1]",
                "dns.server",
                "timeouts.detect",
            ],
            "{rendered:#?}"
        );
        assert!(
            rendered[1].contains("reading certs/missing-ca.pem: No such file"),
            "{}",
            rendered[1]
        );
        assert!(
            rendered[3].contains(r#"unknown relay "nowhere" (defined: b)"#),
            "{}",
            rendered[3]
        );
        assert!(
            rendered[5].contains("duplicate listener name \"one\""),
            "{}",
            rendered[5]
        );
        assert!(
            rendered[9].contains("\"a.*.com\": `*` is only allowed"),
            "{}",
            rendered[9]
        );
    }

    #[test]
    fn unknown_key_in_one_element_does_not_hide_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = r#"
relays:
  - name: b
    address: envoy-b.example.com:8443
    ca: certs/ca.pem
    transprot: h2
listeners:
  - name: https
    kind: tls-passthrough
    listen: 0.0.0.0:443
    relay: b
  - name: relay
    kind: relay
    listen: 0.0.0.0:8443
    tls: {cert: certs/relay.pem, key: certs/relay.key}
    routes:
      - {match: "a.*.com", tls: "{sni}:443"}
      - {match: ok.example.com, tls: "ok:443", weight: 3}
limits: {max_connections: lots}
"#;
        let errors = validate_yaml(yaml, dir.path()).expect_err("refused");
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        // The typo does not hide relays[0]'s missing CA; listeners[0] refers to relay b without
        // an "unknown relay" error.
        assert_eq!(
            paths,
            [
                "relays[0].transprot",
                "relays[0].ca",
                "listeners[1].tls.cert",
                "listeners[1].tls.key",
                "listeners[1].routes[0].match",
                "listeners[1].routes[1].weight",
                "limits.max_connections",
            ],
            "{rendered:#?}"
        );
        assert!(
            rendered[0].contains("unknown field `transprot`"),
            "{}",
            rendered[0]
        );
    }

    #[test]
    fn top_level_unknown_key_is_reported_with_its_path_alongside_the_rest() {
        let errors = validate_yaml("listeners: []\ntimeout: {idle: 5m}\n", Path::new("."))
            .expect_err("refused");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["timeout", "listeners"], "{errors:?}");
        assert!(
            errors[0].message.contains("unknown field `timeout`"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn type_error_outside_lists_stops_with_its_path() {
        let errors =
            validate_yaml("relays: []\nlisteners: {a: 1}\n", Path::new(".")).expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "listeners", "{errors:?}");
        assert!(
            errors[0].message.contains("invalid type: map"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn yaml_syntax_error_is_reported_with_its_location() {
        let errors = validate_yaml("listeners:\n  - name: x\n   bad: indent\n", Path::new("."))
            .expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("line 3"), "{}", errors[0]);
    }

    #[test]
    fn refuses_key_file_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pki(dir.path());
        let key = dir.path().join("certs/relay.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let yaml = "listeners:\n- {name: r, kind: relay, listen: \"0.0.0.0:1\", tls: {cert: certs/relay.pem, key: certs/relay.key}, routes: [{match: a.com, tls: \"a.com:443\"}]}\n";
        let errors = validate_yaml(yaml, dir.path()).expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "listeners[0].tls.key");
        assert_eq!(
            errors[0].message,
            format!(
                "certs/relay.key is readable by group/others (mode 0644); run chmod 600 {}",
                key.display()
            )
        );
    }

    #[test]
    fn refuses_keys_a_listener_kind_does_not_use() {
        let yaml = "relays: []\nlisteners:\n- {name: h, kind: http, listen: \"0.0.0.0:80\", inner_port: 443, default_sni: a.com}\n";
        assert_eq!(
            error_paths(validate_yaml(yaml, Path::new("."))),
            [
                "listeners[0].inner_port",
                "listeners[0].default_sni",
                "listeners[0].relay"
            ]
        );
    }

    /// A fresh interception CA in `dir/ca` (ca.pem, ca.key 0600) and a public-roots bundle
    /// `dir/roots.pem`, so tests never depend on the machine's trust store.
    fn write_intercept_pki(dir: &Path) {
        let params = tlsgate_ca::CaParams {
            common_name: "tlsgate test interception CA".to_owned(),
            algorithm: tlsgate_ca::Algorithm::EcdsaP256,
            days: 30,
        };
        tlsgate_ca::CertAuthority::generate(&params)
            .expect("generate CA")
            .save(&dir.join("ca"))
            .expect("save CA");
        write_pki(dir);
        fs::copy(dir.join("certs/ca.pem"), dir.join("roots.pem")).expect("copy roots");
    }

    fn intercept(config: &Config, index: usize) -> &InterceptListener {
        match &config.listeners[index].kind {
            ListenerKind::Intercept(intercept) => intercept,
            other => panic!("listener {index} is not intercept: {other:?}"),
        }
    }

    #[test]
    fn intercept_takes_the_documented_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_intercept_pki(dir.path());
        let yaml = "listeners:\n- {name: p, kind: intercept, listen: \"127.0.0.1:0\", ca: {dir: ca}, upstream_ca: roots.pem}\n";
        let config = validate_yaml(yaml, dir.path()).expect("valid config");
        let p = intercept(&config, 0);
        assert_eq!(p.mode, InterceptMode::Explicit);
        assert!(p.rules.rules.is_empty());
        assert_eq!(p.rules.default, InterceptAction::Bump);
        assert_eq!(p.certs.strategy, CertStrategy::DownstreamFirst);
        assert_eq!(p.certs.leaf_lifetime, CertSettings::DEFAULT_LEAF_LIFETIME);
        assert_eq!(p.certs.cache_capacity, CertSettings::DEFAULT_CACHE_CAPACITY);
        assert_eq!(p.certs.cache_ttl, CertSettings::DEFAULT_CACHE_TTL);
        assert!(p.danger_accept_invalid_upstream_certs.is_empty());
        assert!(p.coalesce_origin_connections);
        let debug = format!("{:?}", p.certs.ca);
        assert!(
            debug.contains("tlsgate test interception CA") && !debug.contains("PRIVATE"),
            "{debug}"
        );
    }

    #[test]
    fn audit_mode_is_off_by_default_and_for_intercept_listeners_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_intercept_pki(dir.path());
        let listener = "{name: p, kind: intercept, listen: \"127.0.0.1:0\", ca: {dir: ca}, upstream_ca: roots.pem";
        let config = validate_yaml(&format!("listeners:\n- {listener}}}\n"), dir.path())
            .expect("valid config");
        assert_eq!(
            intercept(&config, 0).policy_audit,
            InterceptListener::DEFAULT_POLICY_AUDIT
        );
        const { assert!(!InterceptListener::DEFAULT_POLICY_AUDIT) };
        let yaml = format!("listeners:\n- {listener}, policy_audit: true}}\n");
        let config = validate_yaml(&yaml, dir.path()).expect("valid config");
        assert!(intercept(&config, 0).policy_audit);
        let on_relay = GOOD.replacen("kind: relay", "kind: relay\n    policy_audit: true", 1);
        assert_ne!(on_relay, GOOD, "GOOD has a relay listener");
        let paths = error_paths(validate_yaml(&on_relay, dir.path()));
        assert_eq!(paths.len(), 1, "{paths:?}");
        assert!(paths[0].ends_with(".policy_audit"), "{paths:?}");
    }

    #[test]
    fn flows_redaction_keys_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pki(dir.path());
        let config = validate_yaml(GOOD, dir.path()).expect("valid config");
        assert!(config.visibility.flows.redact_headers.is_empty());
        assert_eq!(
            config.visibility.flows.redact_url_query,
            FlowSettings::DEFAULT_REDACT_URL_QUERY
        );
        let yaml = format!(
            "{GOOD}flows: {{redact_headers: [X-Api-Key, x-session], redact_url_query: true}}\n"
        );
        let config = validate_yaml(&yaml, dir.path()).expect("valid config");
        let names: Vec<&str> = config
            .visibility
            .flows
            .redact_headers
            .iter()
            .map(http::HeaderName::as_str)
            .collect();
        assert_eq!(names, ["x-api-key", "x-session"]);
        assert!(config.visibility.flows.redact_url_query);
        let bad = format!("{GOOD}flows: {{redact_headers: [ok, \"bad name\"]}}\n");
        assert_eq!(
            error_paths(validate_yaml(&bad, dir.path())),
            ["flows.redact_headers[1]"]
        );
    }

    #[test]
    fn intercept_reads_every_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_intercept_pki(dir.path());
        let yaml = r#"
listeners:
  - name: proxy
    kind: intercept
    listen: 127.0.0.1:0
    mode: transparent
    ca: {cert: ca/ca.pem, key: ca/ca.key}
    certs: {strategy: upstream-first, lifetime: 2d, cache_size: 5, cache_ttl: 12h}
    upstream_ca: roots.pem
    danger_accept_invalid_upstream_certs: [lab.example.com, "*.test.example"]
    coalesce_origin_connections: false
    rules:
      - {match: "*.bank.example", ports: [443, 8443], action: splice}
      - {match: blocked.example.com, action: deny}
      - {match: "*", ports: [], action: bump}
    default_action: deny
"#;
        let config = validate_yaml(yaml, dir.path()).expect("valid config");
        let p = intercept(&config, 0);
        assert_eq!(p.mode, InterceptMode::Transparent);
        assert_eq!(p.certs.strategy, CertStrategy::UpstreamFirst);
        assert_eq!(p.certs.leaf_lifetime, Duration::from_secs(2 * 86400));
        assert_eq!(p.certs.cache_capacity, 5);
        assert_eq!(p.certs.cache_ttl, Duration::from_secs(12 * 3600));
        let danger: Vec<String> = p
            .danger_accept_invalid_upstream_certs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(danger, ["lab.example.com", "*.test.example"]);
        assert!(!p.coalesce_origin_connections);
        let rules: Vec<(String, Vec<u16>, InterceptAction)> = p
            .rules
            .rules
            .iter()
            .map(|r| (r.pattern.to_string(), r.ports.clone(), r.action))
            .collect();
        assert_eq!(
            rules,
            [
                (
                    "*.bank.example".to_owned(),
                    vec![443, 8443],
                    InterceptAction::Splice
                ),
                (
                    "blocked.example.com".to_owned(),
                    vec![],
                    InterceptAction::Deny
                ),
                ("*".to_owned(), vec![], InterceptAction::Bump),
            ]
        );
        assert_eq!(p.rules.default, InterceptAction::Deny);
    }

    #[test]
    fn intercept_reports_every_problem_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_intercept_pki(dir.path());
        let key = dir.path().join("ca/ca.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let yaml = r#"
listeners:
  - name: a
    kind: intercept
    listen: 127.0.0.1:0
    mode: sideways
    ca: {dir: missing-ca}
    certs: {lifetime: 1d, cache_ttl: 7d, strategy: sometimes}
    upstream_ca: roots.pem
    danger_accept_invalid_upstream_certs: [ok.example, "*.*.example"]
    rules:
      - {match: "a.*.com", action: splice}
      - {match: ok.example.com, action: allow}
      - {match: x.example.com, ports: [443, 0], action: deny}
    default_action: pass
  - name: b
    kind: intercept
    listen: 127.0.0.1:0
    ca: {cert: ca/ca.pem, key: ca/ca.key}
    upstream_ca: missing-roots.pem
  - name: c
    kind: intercept
    listen: 127.0.0.1:0
    ca: {dir: ca, cert: ca/ca.pem}
    certs: {cache_size: 0, lifetime: 900d}
    routes: []
  - name: d
    kind: intercept
    listen: 127.0.0.1:0
    ca: {key: ca/ca.key}
"#;
        let errors = validate_yaml(yaml, dir.path()).expect_err("refused");
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listeners[0].mode",
                "listeners[0].ca.dir",
                "listeners[0].certs.strategy",
                "listeners[0].certs.cache_ttl",
                "listeners[0].danger_accept_invalid_upstream_certs[1]",
                "listeners[0].rules[0].match",
                "listeners[0].rules[1].action",
                "listeners[0].rules[2].ports[1]",
                "listeners[0].default_action",
                "listeners[1].ca.key",
                "listeners[1].upstream_ca",
                "listeners[2].routes",
                "listeners[2].ca",
                "listeners[2].certs.lifetime",
                "listeners[2].certs.cache_size",
                "listeners[3].ca.cert",
            ],
            "{rendered:#?}"
        );
        let expect = |index: usize, part: &str| {
            assert!(
                rendered[index].contains(part),
                "{part:?} not in {}",
                rendered[index]
            );
        };
        expect(
            0,
            "unknown variant `sideways`, expected `explicit` or `transparent`",
        );
        expect(1, "missing-ca/ca.pem");
        expect(1, "No such file or directory");
        expect(
            2,
            "unknown variant `sometimes`, expected `downstream-first` or `upstream-first`",
        );
        expect(3, "cache_ttl (7d) must be below lifetime (1d)");
        expect(4, "\"*.*.example\": `*` is only allowed");
        expect(
            6,
            "unknown variant `allow`, expected one of `bump`, `splice`, `deny`",
        );
        expect(8, "unknown variant `pass`");
        expect(9, "is readable by group or others (mode 0644)");
        expect(10, "missing-roots.pem");
        expect(11, "not used by kind intercept");
        expect(12, "not both");
        expect(13, "900d is too long: at most 825d");
    }

    #[test]
    fn intercept_requires_a_ca_and_other_kinds_refuse_intercept_keys() {
        let yaml = "listeners:\n- {name: p, kind: intercept, listen: \"127.0.0.1:1\", upstream_ca: roots.pem}\n- {name: r, kind: relay, listen: \"127.0.0.1:2\", rules: [], default_action: bump, tls: {cert: c, key: k}, routes: []}\n";
        let errors = validate_yaml(yaml, Path::new("/nonexistent")).expect_err("refused");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listeners[0].ca",
                "listeners[0].upstream_ca",
                "listeners[1].rules",
                "listeners[1].default_action",
                "listeners[1].tls.cert",
                "listeners[1].tls.key",
                "listeners[1].routes",
            ],
            "{errors:#?}"
        );
        assert!(errors[0].message.starts_with("required for kind intercept"));
        assert_eq!(errors[2].message, "not used by kind relay; remove it");
    }

    #[test]
    fn parses_host_port_forms() {
        assert_eq!(parse_host_port("[::1]:443"), Ok(("::1".into(), 443)));
        assert_eq!(parse_host_port("10.0.0.1:80"), Ok(("10.0.0.1".into(), 80)));
        assert_eq!(
            parse_host_port("A.Example.com.:80"),
            Ok(("a.example.com".into(), 80))
        );
        assert!(parse_host_port("::1:443").is_err_and(|e| e.contains("brackets")));
        assert!(parse_host_port("a.com:0").is_err());
        assert!(parse_host_port("a.com").is_err());
        assert!(parse_host_port("a_b c:1").is_err());
        assert!(parse_target("{sni}.internal:443").is_err_and(|e| e.contains("whole host")));
        assert_eq!(
            parse_target("{sni}:8443"),
            Ok(UpstreamTarget {
                host: TargetHost::Requested,
                port: 8443
            })
        );
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;
    use crate::config::parse_yaml;

    /// The yaml samples in docs/config.md, in order, each parsed with the real schema.
    fn docs_samples() -> Vec<FileConfig> {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
        let text = std::fs::read_to_string(&docs).expect("read docs/config.md");
        let mut samples = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```yaml\n") {
            rest = &rest[start + "```yaml\n".len()..];
            let len = rest.find("```").expect("end of a yaml sample");
            let (file, errors) = parse_yaml(&rest[..len]);
            assert_eq!(
                errors,
                [],
                "docs/config.md sample {} does not match the schema",
                samples.len()
            );
            samples.push(file.expect("sample parses"));
            rest = &rest[len..];
        }
        samples
    }

    fn docs_sample() -> FileConfig {
        docs_samples().into_iter().next().expect("a yaml sample")
    }

    #[test]
    fn docs_intercept_sample_shows_the_real_defaults() {
        let samples = docs_samples();
        assert!(
            samples.len() >= 2,
            "the main sample comes first, then the intercept sample"
        );
        let listener = samples[1].listeners[0]
            .value
            .as_ref()
            .expect("intercept listener");
        assert_eq!(listener.kind, ListenerKindFile::Intercept);
        let certs = listener
            .certs
            .as_ref()
            .and_then(|c| c.value.as_ref())
            .expect("sample shows certs");
        assert_eq!(certs.lifetime, Some(CertSettings::DEFAULT_LEAF_LIFETIME));
        assert_eq!(certs.cache_size, Some(CertSettings::DEFAULT_CACHE_CAPACITY));
        assert_eq!(certs.cache_ttl, Some(CertSettings::DEFAULT_CACHE_TTL));
        assert_eq!(
            certs.strategy.as_ref().and_then(|s| s.value),
            Some(CertStrategyFile::DownstreamFirst)
        );
        assert_eq!(
            listener.mode.as_ref().and_then(|m| m.value),
            Some(InterceptModeFile::Explicit)
        );
        assert_eq!(
            listener.default_action.as_ref().and_then(|a| a.value),
            Some(InterceptActionFile::Bump)
        );
        assert_eq!(
            listener.policy_audit,
            Some(InterceptListener::DEFAULT_POLICY_AUDIT)
        );
    }

    #[test]
    fn docs_sample_matches_the_schema_and_shows_the_real_defaults() {
        let file = docs_sample();

        let timeouts = file
            .timeouts
            .and_then(|t| t.value)
            .expect("sample has timeouts");
        let defaults = Timeouts::default();
        let shown = [
            ("detect", timeouts.detect, defaults.detect),
            ("connect", timeouts.connect, defaults.connect),
            ("handshake", timeouts.handshake, defaults.handshake),
            ("idle", timeouts.idle, defaults.idle),
            (
                "http_header_read",
                timeouts.http_header_read,
                defaults.http_header_read,
            ),
            (
                "shutdown_grace",
                timeouts.shutdown_grace,
                defaults.shutdown_grace,
            ),
            ("relay_wait", timeouts.relay_wait, defaults.relay_wait),
            ("http_request", timeouts.http_request, defaults.http_request),
        ];
        for (key, shown, default) in shown {
            assert_eq!(shown, Some(default), "timeouts.{key} in docs/config.md");
        }

        let limits = file
            .limits
            .and_then(|l| l.value)
            .expect("sample has limits");
        let defaults = Limits::default();
        assert_eq!(limits.max_client_hello, Some(defaults.max_client_hello));
        assert_eq!(limits.max_connections, Some(defaults.max_connections));
        assert_eq!(
            limits.h2_max_concurrent_streams,
            Some(defaults.h2_max_concurrent_streams)
        );
        assert_eq!(limits.http1_max_headers, Some(defaults.http1_max_headers));
        assert_eq!(
            limits.http1_max_header_bytes,
            Some(defaults.http1_max_header_bytes)
        );
        assert_eq!(
            limits.max_connections_per_source,
            Some(defaults.max_connections_per_source)
        );
        assert_eq!(
            limits.max_tunnels_per_client,
            Some(defaults.max_tunnels_per_client)
        );
        assert_eq!(
            limits.h2_max_header_list_size,
            Some(defaults.h2_max_header_list_size)
        );
        assert_eq!(
            limits.h2_max_pending_resets,
            Some(defaults.h2_max_pending_resets)
        );

        let relay = file.relays[0].value.as_ref().expect("sample relay");
        assert_eq!(relay.pool_size, Some(DEFAULT_POOL_SIZE));
        assert_eq!(relay.preconnect, Some(0), "preconnect is off by default");
        let endpoints = EndpointSettings::default();
        assert_eq!(relay.resolve_interval, Some(endpoints.resolve_interval));
        assert_eq!(relay.retry_backoff_min, Some(endpoints.retry_backoff_min));
        assert_eq!(relay.retry_backoff_max, Some(endpoints.retry_backoff_max));
        let https = file.listeners[0].value.as_ref().expect("sample listener");
        assert_eq!(https.inner_port, Some(DEFAULT_INNER_PORT));
    }
}
