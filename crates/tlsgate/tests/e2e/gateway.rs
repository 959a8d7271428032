//! tlsgate as child processes: the edge (customer side) and the relay (provider side).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tlsgate_testkit::{ChildGuard, NetNs};

use crate::nginx::{OTHER_NAME, PRIVATE_NAME};
use crate::topology::{EDGE_IP, RELAY_IP};

pub const RELAY_NAME: &str = "envoy-b.example.com";
pub const RELAY_PORT: u16 = 8443;
/// Edge listeners: tls-passthrough over the h2 transport, over the tls transport, and http.
pub const EDGE_H2_PORT: u16 = 443;
pub const EDGE_TLS_PORT: u16 = 4443;
pub const EDGE_HTTP_PORT: u16 = 80;

/// How long tlsgate gets to stop after SIGTERM before SIGKILL.
const TLSGATE_STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_FILTER: &str = "info,tlsgate=debug,tlsgate_proxy=debug";

/// A running tlsgate and where it logs.
pub struct Tlsgate {
    pub guard: ChildGuard,
    pub log: PathBuf,
}

impl Tlsgate {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Edge config: two relays (same relay, one per transport) and three listeners.
pub fn edge_config(relay_ca: &Path) -> String {
    let ca = relay_ca.display();
    format!(
        r#"relays:
  - name: provider-b-h2
    address: {RELAY_NAME}:{RELAY_PORT}
    ca: {ca}
    transport: h2
  - name: provider-b-tls
    address: {RELAY_NAME}:{RELAY_PORT}
    ca: {ca}
    transport: tls
listeners:
  - name: https-h2
    kind: tls-passthrough
    listen: {EDGE_IP}:{EDGE_H2_PORT}
    relay: provider-b-h2
  - name: https-tls
    kind: tls-passthrough
    listen: {EDGE_IP}:{EDGE_TLS_PORT}
    relay: provider-b-tls
  - name: http
    kind: http
    listen: {EDGE_IP}:{EDGE_HTTP_PORT}
    relay: provider-b-h2
allow_destinations: [198.51.100.0/30]
timeouts:
  shutdown_grace: 1s
"#
    )
}

/// Relay config: routes the two service names to nginx by name (resolved via the relay
/// namespace's hosts file).
pub fn relay_config(cert: &Path, key: &Path) -> String {
    format!(
        r#"listeners:
  - name: relay
    kind: relay
    listen: {RELAY_IP}:{RELAY_PORT}
    tls:
      cert: {cert}
      key: {key}
    routes:
      - match: {PRIVATE_NAME}
        tls: {PRIVATE_NAME}:443
        http: {PRIVATE_NAME}:80
      - match: {OTHER_NAME}
        tls: {OTHER_NAME}:443
allow_destinations: [203.0.113.0/30]
timeouts:
  shutdown_grace: 1s
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

/// Writes `config` to `dir/<stem>.yaml`, checks it with `tlsgate check`, and starts
/// `tlsgate run` in `ns` with its output in `dir/<stem>.log`.
pub fn start(ns: &NetNs, dir: &Path, stem: &str, config: &str) -> Tlsgate {
    let bin = env!("CARGO_BIN_EXE_tlsgate");
    let config_path = dir.join(format!("{stem}.yaml"));
    std::fs::write(&config_path, config).expect("writing tlsgate config");
    let log = dir.join(format!("{stem}.log"));
    let env = [("RUST_LOG", LOG_FILTER), ("NO_COLOR", "1")];
    let guard = ns.start_checked(bin, &config_path, &log, &env, TLSGATE_STOP_GRACE);
    Tlsgate { guard, log }
}
