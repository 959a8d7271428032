//! Shared by the reload and shutdown suites: one `tlsgate run` child serving a relay, a TLS
//! passthrough edge tunnelling to that relay (h2), an explicit intercepting proxy and the admin API,
//! all on loopback, in front of an in-process HTTPS origin for `localhost`; curl and openssl as
//! clients.

#![allow(dead_code)] // each suite uses a different part

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tlsgate_testkit::{
    ChildGuard, Origin, TestCa, TlsgateRun, certs_from_pem, hex, sha256, spawn_https_origin,
};

/// The origin's name: resolves to 127.0.0.1 without any DNS setup.
pub const NAME: &str = "localhost";
/// The name the edge checks in the relay's certificate.
pub const RELAY_NAME: &str = "relay.test";
/// Listener names in the config, in order.
pub const LISTENERS: [&str; 3] = ["relay", "edge", "proxy"];

/// Files and servers one test owns.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub public: TestCa,
    pub relay_ca: TestCa,
    pub origin: Origin,
    /// The relay's port, fixed in the config because the edge's `relays[].address` names it.
    pub relay_port: u16,
}

/// What a config version says.
pub struct Version<'a> {
    /// Stem of the relay certificate files (`<stem>.pem`, `<stem>.key`).
    pub relay_cert: &'a str,
    /// The interceptor's `policy` file; `None`: bump `localhost`, deny the rest.
    pub policy: Option<&'a str>,
    pub grace: &'a str,
    /// The edge's listen address (a reload cannot change it).
    pub edge_listen: &'a str,
    /// Appended verbatim under the proxy listener (to make a config invalid).
    pub proxy_extra: &'a str,
}

impl Default for Version<'_> {
    fn default() -> Self {
        Self {
            relay_cert: "relay-v1",
            policy: None,
            grace: "60s",
            edge_listen: "127.0.0.1:0",
            proxy_extra: "",
        }
    }
}

impl Lab {
    /// A lab whose origin runs on the returned runtime (keep it alive as long as the lab).
    pub fn on_runtime() -> (tokio::runtime::Runtime, Lab) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime for the origin");
        let lab = runtime.block_on(Lab::new());
        (runtime, lab)
    }

    pub async fn new() -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let public = TestCa::new("lifecycle public CA");
        public.write_cert_pem(&dir.path().join("public.pem"));
        let relay_ca = TestCa::new("lifecycle relay CA");
        relay_ca.write_cert_pem(&dir.path().join("relay-ca.pem"));
        let origin = spawn_https_origin("origin", &public.issue(&[NAME])).await;
        let init = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
            .args(["ca", "init", "--dir"])
            .arg(dir.path().join("ca"))
            .stdout(Stdio::null())
            .status()
            .expect("tlsgate ca init");
        assert!(init.success());
        Lab {
            relay_port: free_port(),
            dir,
            public,
            relay_ca,
            origin,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a new relay certificate (same name, new key) as `<stem>.pem/.key`; returns the
    /// SHA-256 of its DER.
    pub fn issue_relay_cert(&self, stem: &str) -> String {
        let leaf = self.relay_ca.issue(&[RELAY_NAME]);
        leaf.write_pem(self.dir.path(), stem);
        leaf.sha256_hex()
    }

    pub fn config(&self, v: &Version<'_>) -> String {
        let d = self.dir.path().display();
        let port = self.origin.addr.port();
        let decide = match v.policy {
            Some(policy) => format!("    policy: {d}/{policy}\n"),
            None => {
                format!("    rules: [{{match: {NAME}, action: bump}}]\n    default_action: deny\n")
            }
        };
        format!(
            "allow_destinations: [127.0.0.0/8]
timeouts:
  shutdown_grace: {grace}
relays:
  - name: b
    address: 127.0.0.1:{relay}
    server_name: {RELAY_NAME}
    ca: {d}/relay-ca.pem
listeners:
  - name: relay
    kind: relay
    listen: 127.0.0.1:{relay}
    tls: {{cert: {d}/{cert}.pem, key: {d}/{cert}.key}}
    routes:
      - {{match: {NAME}, tls: \"127.0.0.1:{port}\"}}
  - name: edge
    kind: tls-passthrough
    listen: {edge}
    relay: b
  - name: proxy
    kind: intercept
    listen: 127.0.0.1:0
    ca: {{dir: {d}/ca}}
    upstream_ca: {d}/public.pem
{decide}{extra}admin:
  listen: 127.0.0.1:0
",
            grace = v.grace,
            relay = self.relay_port,
            cert = v.relay_cert,
            edge = v.edge_listen,
            extra = v.proxy_extra,
        )
    }

    pub fn write_config(&self, v: &Version<'_>) -> PathBuf {
        let path = self.path("config.yaml");
        std::fs::write(&path, self.config(v)).expect("write config");
        path
    }

    /// Starts `tlsgate run` on the written config; logs go to `tlsgate.log` in the lab.
    pub fn start(&self) -> (ChildGuard, BTreeMap<String, SocketAddr>) {
        let log = std::fs::File::create(self.path("tlsgate.log")).expect("log file");
        let run = TlsgateRun::start(
            Path::new(env!("CARGO_BIN_EXE_tlsgate")),
            &self.path("config.yaml"),
            "info",
            log.into(),
            LISTENERS.len() + 1,
        )
        .unwrap_or_else(|e| panic!("tlsgate run: {e}\n{}", self.log()));
        (run.child, run.addrs)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("tlsgate.log")).unwrap_or_default()
    }

    /// curl through the edge (TLS passthrough → relay → origin) for `path`.
    pub fn curl_edge(&self, edge: SocketAddr, path: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{size_download}"])
            .arg("--cacert")
            .arg(self.path("public.pem"))
            .args(extra)
            .arg(format!("https://{NAME}:{}{path}", edge.port()));
        cmd
    }

    /// curl through the intercepting proxy (bumped) for `path` on the origin.
    pub fn curl_proxy(&self, proxy: SocketAddr, path: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{size_download}"])
            .args(["-x", &format!("http://{proxy}")])
            .arg("--cacert")
            .arg(self.path("ca/ca.pem"))
            .args(extra)
            .arg(format!("https://{NAME}:{}{path}", self.origin.addr.port()));
        cmd
    }
}

/// A port that was free a moment ago (for the one address the config must name in advance).
pub fn free_port() -> u16 {
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    socket.local_addr().expect("local addr").port()
}

/// `(http status, bytes downloaded)` from curl's `-w "%{http_code} %{size_download}"`, or the
/// failure as text.
pub fn curl_result(out: &Output) -> Result<(u16, u64), String> {
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "curl {:?}: {text} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut parts = text.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok());
    let size = parts.next().and_then(|s| s.parse().ok());
    match (status, size) {
        (Some(status), Some(size)) => Ok((status, size)),
        _ => Err(format!("unexpected curl output {text:?}")),
    }
}

/// SHA-256 (hex) of the certificate a new TLS handshake with `addr` (SNI `name`) shows, read with
/// `openssl s_client`.
pub fn served_cert_sha256(addr: SocketAddr, name: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    let certs = certs_from_pem(&text);
    let first = certs
        .first()
        .unwrap_or_else(|| panic!("openssl s_client showed no certificate: {text}"));
    hex(&sha256(first))
}

/// POSTs to the admin API; `(status, body)`.
pub fn admin_post(admin: SocketAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{admin}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of one metric line (`name{labels}`) in `/metrics`.
pub fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    tlsgate_testkit::metrics_text(admin)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Sends `signal` (`TERM`, `HUP`) to the child's own PID.
pub fn signal(child: &ChildGuard, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Whether a TCP connection to `addr` is refused now.
pub fn refused(addr: SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
