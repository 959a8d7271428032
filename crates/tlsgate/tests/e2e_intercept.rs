//! End-to-end: tlsgate as a transparent intercepting gateway. The client has no proxy setting
//! at all; the gateway's kernel redirects its outbound HTTPS (iptables REDIRECT) to tlsgate,
//! which bumps, splices or denies by SNI. Real curl and openssl, nginx as the origin.
//!
//! ```text
//! client 198.51.100.1/30 ── 198.51.100.2/30 gateway 203.0.113.1/30 ── 203.0.113.2/30 origin
//!                                  │ ip_forward=1
//!                                  │ nat PREROUTING -i <client side> tcp dport 443 REDIRECT → :15001
//!                                  └ tlsgate run (intercept listener, mode: transparent, 0.0.0.0:15001)
//! ```
//!
//! The client's default route and the origin's route back both go via the gateway; the
//! gateway has only its two links. No namespace has a way out, and IPv6 is off everywhere.
//!
//! Needs root (namespaces, iptables) and Debian's nginx, iptables, iproute2, curl, openssl,
//! procps: `./scripts/test.sh` installs them. Without root the test fails with a clear message
//! unless `TLSGATE_SKIP_E2E=1` is set; CI never sets it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tlsgate_testkit::{
    ChildGuard, Leaf, NetNs, TempDir, TestCa, certs_from_pem, e2e_preflight, hex, sha256,
    unique_prefix, veth,
};

const CLIENT_IP: &str = "198.51.100.1";
const GATEWAY_CLIENT_IP: &str = "198.51.100.2";
const GATEWAY_ORIGIN_IP: &str = "203.0.113.1";
const ORIGIN_IP: &str = "203.0.113.2";

/// Bumped by default.
const WWW_NAME: &str = "www.example.test";
/// `action: splice`.
const SPLICE_NAME: &str = "splice.example.test";
/// `action: deny`.
const DENIED_NAME: &str = "denied.example.test";

/// The blog's host, served by a local nginx (never the real site).
const FACEBOOK_NAME: &str = "www.facebook.com";
/// Resolves, in the gateway only, to [`ELSEWHERE_IP`]: not the origin.
const ELSEWHERE_NAME: &str = "elsewhere.example.test";
const ELSEWHERE_IP: &str = "192.0.2.77";
/// The blog's policies, used unchanged: GET to www.facebook.com:443, then only
/// `GET /cucumber` with `dada: dada`.
const BLOG_POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../policy/testdata/blog-facebook-tls.yaml"
);
const BLOG_POLICY_CUCUMBER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../policy/testdata/blog-facebook-tls-cucumber.yaml"
);
/// The policy file tlsgate watches, in its gateway dir.
const POLICY_FILE: &str = "facebook-tls.yaml";
/// How long a replaced policy file may take to be in force.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the REDIRECT rule sends the client's port-443 traffic.
const INTERCEPT_PORT: u16 = 15001;
/// A second nginx port for www, not redirected: the routed path without tlsgate.
const DIRECT_PORT: u16 = 8443;

/// Every curl is bounded by this (seconds).
const CURL_MAX_TIME: &str = "10";
/// curl: "Peer certificate cannot be authenticated with known CA certificates".
const CURL_BAD_CERT: i32 = 60;
/// curl: "Operation timed out".
const CURL_TIMED_OUT: i32 = 28;
/// How long a flow record may take to reach the log after curl returned.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
/// How long tlsgate and nginx get after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
const LOG_FILTER: &str = "info,tlsgate=debug,tlsgate_proxy=debug";

/// Runs the test body only where end-to-end tests can run; fails loudly otherwise.
fn preflight() -> bool {
    let run = e2e_preflight().unwrap_or_else(|message| panic!("{message}"));
    if run {
        for tool in ["nginx", "iptables", "curl", "openssl", "ss", "sysctl"] {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|dir| Path::new(dir).join(tool).exists());
            assert!(
                found,
                "e2e tests need `{tool}`; ./scripts/test.sh installs nginx, iptables, iproute2, \
                 curl, openssl and procps"
            );
        }
        tlsgate_testkit::init_tracing();
    }
    run
}

/// Three namespaces in a line; dropping them removes every process and link inside.
struct Topology {
    client: NetNs,
    gateway: NetNs,
    origin: NetNs,
    /// The gateway's interface towards the client: the REDIRECT rule matches it.
    gateway_client_if: String,
}

impl Topology {
    /// The three namespaces; the client resolves every name in `origin_names` to the origin.
    fn build(origin_names: &[&str]) -> Topology {
        let prefix = unique_prefix();
        let ns = |role: &str| {
            NetNs::new(&format!("{prefix}{role}"))
                .unwrap_or_else(|e| panic!("creating namespace {prefix}{role}: {e}"))
        };
        let topo = Topology {
            client: ns("cli"),
            gateway: ns("gw"),
            origin: ns("org"),
            gateway_client_if: format!("{prefix}gc"),
        };
        veth(
            &topo.client,
            &format!("{prefix}cg"),
            &format!("{CLIENT_IP}/30"),
            &topo.gateway,
            &topo.gateway_client_if,
            &format!("{GATEWAY_CLIENT_IP}/30"),
        )
        .expect("veth client-gateway");
        veth(
            &topo.gateway,
            &format!("{prefix}go"),
            &format!("{GATEWAY_ORIGIN_IP}/30"),
            &topo.origin,
            &format!("{prefix}og"),
            &format!("{ORIGIN_IP}/30"),
        )
        .expect("veth gateway-origin");
        topo.gateway
            .sysctl("net.ipv4.ip_forward", "1")
            .expect("enabling forwarding on the gateway");
        topo.client
            .run(&["ip", "route", "add", "default", "via", GATEWAY_CLIENT_IP])
            .expect("client default route");
        topo.origin
            .run(&["ip", "route", "add", "default", "via", GATEWAY_ORIGIN_IP])
            .expect("origin route back");
        let hosts: Vec<(&str, &str)> = origin_names.iter().map(|n| (ORIGIN_IP, *n)).collect();
        topo.client.set_hosts(&hosts).expect("client hosts file");
        topo
    }

    /// The transparent redirect: the client's outbound HTTPS goes to tlsgate instead.
    fn install_redirect(&self) {
        let port = INTERCEPT_PORT.to_string();
        self.gateway
            .run(&[
                "iptables",
                "-w",
                "5",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                &self.gateway_client_if,
                "-p",
                "tcp",
                "--dport",
                "443",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port,
            ])
            .expect("installing the REDIRECT rule");
    }

    /// Packets that matched the REDIRECT rule so far (one per redirected connection: NAT
    /// rules see only a connection's first packet).
    fn redirected_connections(&self) -> u64 {
        let listing = self
            .gateway
            .run(&[
                "iptables",
                "-w",
                "5",
                "-t",
                "nat",
                "-L",
                "PREROUTING",
                "-v",
                "-x",
                "-n",
            ])
            .expect("listing the nat table");
        listing
            .lines()
            .find(|line| line.contains("REDIRECT"))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no REDIRECT counter in:\n{listing}"))
    }
}

/// Writes the nginx config under `dir` and starts nginx (one process) in `ns`: one HTTPS server
/// per leaf on :443 (each with `locations` besides `/`), the first once more on the
/// non-redirected port.
fn start_nginx(ns: &NetNs, dir: &Path, leaves: &[(&str, &Leaf)], locations: &str) -> ChildGuard {
    for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(sub)).expect("nginx temp dirs");
    }
    let d = dir.display();
    let mut servers = String::new();
    for (i, (name, leaf)) in leaves.iter().enumerate() {
        let (cert, key) = leaf.write_pem(dir, name);
        let label = name.split('.').next().unwrap_or(name);
        let default = if i == 0 { " default_server" } else { "" };
        let extra = if i == 0 {
            format!("        listen {ORIGIN_IP}:{DIRECT_PORT} ssl http2{default};\n")
        } else {
            String::new()
        };
        servers.push_str(&format!(
            r#"    server {{
        listen {ORIGIN_IP}:443 ssl http2{default};
{extra}        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "nginx {label} host=$host\n"; }}
{locations}
    }}
"#,
            cert = cert.display(),
            key = key.display(),
        ));
    }
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format names '$remote_addr sni=$ssl_server_name host=$host $status';
    access_log {d}/access.log names;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
{servers}}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("writing nginx.conf");
    let prefix = d.to_string();
    let conf_arg = conf_path.display().to_string();
    let error_log = format!("{d}/error.log");
    let args = ["nginx", "-p", &prefix, "-c", &conf_arg, "-e", &error_log];
    let test = ns
        .exec(&[&args[..], &["-t", "-q"]].concat())
        .expect("running nginx -t");
    assert!(
        test.status.success(),
        "nginx -t rejected the config: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let out = File::create(dir.join("nginx.out")).expect("nginx output file");
    let mut cmd = ns.command(&args);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out);
    ChildGuard::spawn(&mut cmd)
        .expect("starting nginx")
        .with_term_grace(STOP_GRACE)
}

/// The transparent intercept listener: bump by default, splice and deny by name.
fn tlsgate_config(ca_dir: &Path, upstream_ca: &Path, _gate_dir: &Path) -> String {
    format!(
        r#"listeners:
  - name: transparent
    kind: intercept
    listen: 0.0.0.0:{INTERCEPT_PORT}
    mode: transparent
    ca:
      dir: {ca_dir}
    upstream_ca: {upstream_ca}
    rules:
      - match: {SPLICE_NAME}
        action: splice
      - match: {DENIED_NAME}
        action: deny
    default_action: bump
timeouts:
  shutdown_grace: 1s
"#,
        ca_dir = ca_dir.display(),
        upstream_ca = upstream_ca.display(),
    )
}

/// The transparent intercept listener deciding by the policy file in the gateway dir.
fn blog_config(ca_dir: &Path, upstream_ca: &Path, gate_dir: &Path) -> String {
    format!(
        r#"listeners:
  - name: transparent
    kind: intercept
    listen: 0.0.0.0:{INTERCEPT_PORT}
    mode: transparent
    ca:
      dir: {ca_dir}
    upstream_ca: {upstream_ca}
    policy: {policy}
timeouts:
  shutdown_grace: 1s
"#,
        ca_dir = ca_dir.display(),
        upstream_ca = upstream_ca.display(),
        policy = gate_dir.join(POLICY_FILE).display(),
    )
}

/// Writes the config to `dir/transparent.yaml`, checks it with `tlsgate check` and starts
/// `tlsgate run` in `ns` with stdout and stderr in `dir/tlsgate.log`.
fn start_tlsgate(ns: &NetNs, dir: &Path, config: &str) -> (ChildGuard, PathBuf) {
    let bin = env!("CARGO_BIN_EXE_tlsgate");
    let config_path = dir.join("transparent.yaml");
    std::fs::write(&config_path, config).expect("writing tlsgate config");
    let log = dir.join("tlsgate.log");
    let env = [("RUST_LOG", LOG_FILTER), ("NO_COLOR", "1")];
    let guard = ns.start_checked(bin, &config_path, &log, &env, STOP_GRACE);
    (guard, log)
}

/// Everything the test runs on. Field order is drop order: processes stop first, then the
/// namespaces go (with their iptables rules and anything left inside), then the temp dir.
struct World {
    tlsgate: ChildGuard,
    tlsgate_log: PathBuf,
    _nginx: ChildGuard,
    topo: Topology,
    /// The "public" CA the origin's leaves chain to (tlsgate's `upstream_ca`).
    public_ca_pem: PathBuf,
    /// tlsgate's interception CA certificate (`tlsgate ca init`).
    intercept_ca_pem: PathBuf,
    /// Both CAs: a client trusting this accepts a bumped and a spliced connection alike.
    both_ca_pem: PathBuf,
    /// Each origin name's own leaf (SHA-256 of its DER), as nginx serves it.
    origin_sha256: Vec<(String, [u8; 32])>,
    nginx_dir: PathBuf,
    /// tlsgate's config directory (its config, CA and any policy file live here).
    gate_dir: PathBuf,
    dir: TempDir,
}

/// What one test runs: the origin's names, their extra nginx locations, the gateway's own
/// name resolution, and tlsgate's config.
struct Scenario<'a> {
    /// Server names nginx serves on :443 with a leaf from the public CA; the client resolves
    /// each to the origin. The first is also served on the non-redirected port.
    origin_names: &'a [&'a str],
    /// nginx `location` blocks added to every server besides `/`.
    locations: &'a str,
    /// `/etc/netns/<gateway>/hosts` (tlsgate resolves with it); empty: none written.
    gateway_hosts: &'a [(&'a str, &'a str)],
    /// Files copied into the gateway dir before tlsgate starts: (file name, source).
    gateway_files: &'a [(&'a str, &'a str)],
    /// tlsgate's config from (interception CA dir, upstream CA bundle, gateway dir).
    config: fn(&Path, &Path, &Path) -> String,
}

impl World {
    fn start(scenario: &Scenario<'_>) -> World {
        let topo = Topology::build(scenario.origin_names);
        if !scenario.gateway_hosts.is_empty() {
            topo.gateway
                .set_hosts(scenario.gateway_hosts)
                .expect("gateway hosts file");
        }
        let dir = tlsgate_testkit::temp_dir("tlsgate-e2e-intercept-");
        let nginx_dir = dir.path().join("origin");
        let gate_dir = dir.path().join("gateway");
        std::fs::create_dir_all(&nginx_dir).expect("origin dir");
        std::fs::create_dir_all(&gate_dir).expect("gateway dir");
        for (name, source) in scenario.gateway_files {
            std::fs::copy(source, gate_dir.join(name))
                .unwrap_or_else(|e| panic!("copying {source} to the gateway dir: {e}"));
        }

        let public_ca = TestCa::new("e2e public CA");
        let public_ca_pem = public_ca.write_cert_pem(&dir.path().join("public-ca.pem"));
        let leaves: Vec<(&str, Leaf)> = scenario
            .origin_names
            .iter()
            .map(|name| (*name, public_ca.issue(&[name])))
            .collect();
        let leaf_refs: Vec<(&str, &Leaf)> = leaves.iter().map(|(n, l)| (*n, l)).collect();
        let mut nginx = start_nginx(&topo.origin, &nginx_dir, &leaf_refs, scenario.locations);
        topo.origin.wait_listening(
            &[
                format!("{ORIGIN_IP}:443"),
                format!("{ORIGIN_IP}:{DIRECT_PORT}"),
            ],
            &mut nginx,
            &nginx_dir.join("error.log"),
        );

        // tlsgate's own CA, made the way an operator makes it.
        let ca_dir = gate_dir.join("ca");
        let bin = env!("CARGO_BIN_EXE_tlsgate");
        let init = std::process::Command::new(bin)
            .args(["ca", "init", "--dir"])
            .arg(&ca_dir)
            .stdin(Stdio::null())
            .output()
            .expect("running tlsgate ca init");
        assert!(
            init.status.success(),
            "tlsgate ca init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let intercept_ca_pem = ca_dir.join("ca.pem");
        let both_ca_pem = dir.path().join("both-cas.pem");
        let both = [
            std::fs::read_to_string(&public_ca_pem).expect("public CA"),
            std::fs::read_to_string(&intercept_ca_pem).expect("interception CA"),
        ]
        .concat();
        std::fs::write(&both_ca_pem, both).expect("writing the CA bundle");

        let (mut tlsgate, tlsgate_log) = start_tlsgate(
            &topo.gateway,
            &gate_dir,
            &(scenario.config)(&ca_dir, &public_ca_pem, &gate_dir),
        );
        topo.gateway.wait_listening(
            &[format!("0.0.0.0:{INTERCEPT_PORT}")],
            &mut tlsgate,
            &tlsgate_log,
        );
        topo.install_redirect();

        World {
            tlsgate,
            tlsgate_log,
            _nginx: nginx,
            topo,
            public_ca_pem,
            intercept_ca_pem,
            both_ca_pem,
            origin_sha256: leaves
                .iter()
                .map(|(name, leaf)| ((*name).to_owned(), leaf.sha256_fingerprint()))
                .collect(),
            nginx_dir,
            gate_dir,
            dir,
        }
    }

    /// The SHA-256 of the leaf nginx serves for `name`.
    fn origin_sha256(&self, name: &str) -> [u8; 32] {
        self.origin_sha256
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, sha)| *sha)
            .unwrap_or_else(|| panic!("no origin leaf for {name}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.tlsgate_log).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.nginx_dir.join("access.log")).unwrap_or_default()
    }

    /// Context for failure messages.
    fn logs(&mut self) -> String {
        let alive = match self.tlsgate.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(e) => format!("unknown: {e}"),
        };
        format!(
            "--- tlsgate ({alive}) log ---\n{}\n--- nginx access log ---\n{}",
            self.log_text(),
            self.access_log()
        )
    }

    /// curl in the client namespace, with no proxy setting of any kind.
    fn curl(&self, args: &[&str]) -> Curl {
        let start = Instant::now();
        let out = self
            .topo
            .client
            .command(&[&["curl", "-sS", "--max-time", CURL_MAX_TIME][..], args].concat())
            // Whatever the test runner's environment says, the client has no proxy.
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .env("NO_PROXY", "")
            .stdin(Stdio::null())
            .output()
            .expect("running curl");
        Curl {
            // A curl killed by a signal has no code; -1 keeps it distinct from every curl code.
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    /// `GET https://<name><port>/` trusting `ca`, with the body in a file and
    /// `%{http_code}\n%{http_version}\n%{certs}` on stdout.
    fn fetch(&self, name: &str, port: Option<u16>, ca: &Path, extra: &[&str]) -> Fetch {
        let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
        self.fetch_url(&format!("https://{name}{port_part}/"), ca, extra)
    }

    /// `GET url` trusting `ca`, like [`World::fetch`].
    fn fetch_url(&self, url: &str, ca: &Path, extra: &[&str]) -> Fetch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let label: String = format!("{url}{}", extra.join(""))
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let body_path = self.dir.path().join(format!("body-{n}-{label}"));
        let body_arg = body_path.display().to_string();
        let ca_arg = ca.display().to_string();
        let mut args = vec![
            "--cacert",
            &ca_arg,
            "-o",
            &body_arg,
            "-w",
            "%{http_code}\n%{http_version}\n%{certs}",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        let curl = self.curl(&args);
        let body = std::fs::read_to_string(&body_path).unwrap_or_default();
        let mut lines = curl.stdout.lines();
        let status = lines.next().unwrap_or_default().to_owned();
        let http_version = lines.next().unwrap_or_default().to_owned();
        let leaf = certs_from_pem(&curl.stdout)
            .into_iter()
            .next()
            .map(|der| der.to_vec());
        Fetch {
            curl,
            body,
            status,
            http_version,
            leaf,
        }
    }

    /// Polls tlsgate's log (bounded) until a line satisfies `wanted`; panics with the log.
    fn wait_for_log_line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            if let Some(line) = self.log_text().lines().find(|l| wanted(l)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line for {what} after {LOG_TIMEOUT:?}\n{}",
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }
}

/// What one curl run did.
#[derive(Debug)]
struct Curl {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Curl {
    fn describe(&self) -> String {
        format!(
            "curl exit {} after {:?}; stdout: {:?}; stderr: {:?}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// One HTTPS fetch: curl's outcome, the body, and the leaf certificate curl verified.
#[derive(Debug)]
struct Fetch {
    curl: Curl,
    body: String,
    status: String,
    http_version: String,
    leaf: Option<Vec<u8>>,
}

impl Fetch {
    fn leaf(&self) -> &[u8] {
        self.leaf
            .as_deref()
            .unwrap_or_else(|| panic!("curl printed no certificate: {}", self.curl.describe()))
    }
}

/// `openssl x509 -noout <args>` on the first certificate in `pem` (written under `dir`).
fn openssl_x509(dir: &Path, stem: &str, pem: &str, args: &[&str]) -> String {
    let path = dir.join(format!("{stem}.pem"));
    std::fs::write(&path, first_pem_block(pem)).expect("writing a certificate");
    let path_arg = path.display().to_string();
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([&["x509", "-in", &path_arg, "-noout"][..], args].concat());
    tlsgate_testkit::run(&mut cmd).unwrap_or_else(|e| panic!("openssl x509: {e}"))
}

/// The first `CERTIFICATE` PEM block in `text` (curl's `%{certs}` prints them among other
/// lines).
fn first_pem_block(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text
        .find(BEGIN)
        .unwrap_or_else(|| panic!("no certificate in {text:?}"));
    let len = text[start..]
        .find(END)
        .unwrap_or_else(|| panic!("unterminated certificate in {text:?}"));
    format!("{}\n", &text[start..start + len + END.len()])
}

/// The value after `issuer=` / `subject=` in openssl's one-line output.
fn dn(openssl_line: &str) -> String {
    openssl_line
        .trim()
        .split_once('=')
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// The SAN entries openssl prints under "X509v3 Subject Alternative Name:".
fn san_entries(openssl_out: &str) -> Vec<String> {
    let mut lines = openssl_out.lines();
    lines
        .by_ref()
        .find(|l| l.contains("Subject Alternative Name"))
        .unwrap_or_else(|| panic!("no subjectAltName in {openssl_out:?}"));
    lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn transparent_gateway_bumps_splices_and_denies_with_no_client_proxy_setting() {
    if !preflight() {
        return;
    }
    let started = Instant::now();
    let mut world = World::start(&Scenario {
        origin_names: &[WWW_NAME, SPLICE_NAME, DENIED_NAME],
        locations: "",
        gateway_hosts: &[],
        gateway_files: &[],
        config: tlsgate_config,
    });
    eprintln!(
        "namespaces, nginx, tlsgate and the REDIRECT rule up in {:?}",
        started.elapsed()
    );
    let facts = world.dir.path().join("facts");
    std::fs::create_dir_all(&facts).expect("facts dir");

    // (0) Control: the routed path to nginx works without tlsgate. Port 8443 is not
    // redirected, so the client sees the origin's own certificate.
    let direct = world.fetch(WWW_NAME, Some(DIRECT_PORT), &world.public_ca_pem, &[]);
    assert_eq!(
        direct.curl.code,
        0,
        "direct {WWW_NAME}:{DIRECT_PORT}: {}\n{}",
        direct.curl.describe(),
        world.logs()
    );
    assert_eq!(direct.body, format!("nginx www host={WWW_NAME}\n"));
    assert_eq!(
        hex(&sha256(direct.leaf())),
        hex(&world.origin_sha256(WWW_NAME))
    );
    assert_eq!(
        world.topo.redirected_connections(),
        0,
        "port {DIRECT_PORT} must not be redirected"
    );
    eprintln!(
        "(0) control https://{WWW_NAME}:{DIRECT_PORT}/ (not redirected): exit 0, body {:?}, \
         leaf sha256 {} = origin's",
        direct.body,
        hex(&world.origin_sha256(WWW_NAME))
    );

    // (1) Port 443 is intercepted: a client that trusts neither the interception CA (system
    // store) nor anything else refuses; one that trusts only the origin's public CA, which
    // would accept nginx itself, refuses too, so what answered was not nginx.
    let url = format!("https://{WWW_NAME}/");
    let untrusted = world.curl(&[&url]);
    assert_eq!(
        untrusted.code,
        CURL_BAD_CERT,
        "{}\n{}",
        untrusted.describe(),
        world.logs()
    );
    let public_ca = world.public_ca_pem.display().to_string();
    let public_only = world.curl(&["--cacert", &public_ca, &url]);
    assert_eq!(
        public_only.code,
        CURL_BAD_CERT,
        "{}\n{}",
        public_only.describe(),
        world.logs()
    );
    let redirected = world.topo.redirected_connections();
    assert_eq!(redirected, 2, "both connections must hit the REDIRECT rule");
    eprintln!(
        "(1) {url} with the system store: exit {}; with only the public CA: exit {} ({}); \
         REDIRECT rule counted {redirected} connections",
        untrusted.code,
        public_only.code,
        public_only.stderr.trim()
    );

    // (2) Trusting the interception CA: nginx answers through tlsgate, and the certificate
    // curl verified was minted by tlsgate for exactly the requested name.
    let intercept_ca = world.intercept_ca_pem.clone();
    let bumped = world.fetch(WWW_NAME, None, &intercept_ca, &[]);
    assert_eq!(
        bumped.curl.code,
        0,
        "{}\n{}",
        bumped.curl.describe(),
        world.logs()
    );
    assert_eq!(bumped.status, "200");
    assert_eq!(bumped.body, format!("nginx www host={WWW_NAME}\n"));
    let minted = bumped.leaf().to_vec();
    assert_ne!(
        hex(&sha256(&minted)),
        hex(&world.origin_sha256(WWW_NAME)),
        "a bumped connection must not show the origin's certificate"
    );
    let ca_text = std::fs::read_to_string(&intercept_ca).expect("interception CA pem");
    let ca_subject = dn(&openssl_x509(&facts, "ca", &ca_text, &["-subject"]));
    let leaf_facts = openssl_x509(
        &facts,
        "minted-www",
        &bumped.curl.stdout,
        &["-issuer", "-ext", "subjectAltName"],
    );
    let issuer = dn(leaf_facts.lines().next().unwrap_or_default());
    assert!(
        !ca_subject.is_empty() && issuer == ca_subject,
        "minted leaf issuer {issuer:?} is not the interception CA {ca_subject:?}"
    );
    let sans = san_entries(&leaf_facts);
    assert_eq!(sans, vec![format!("DNS:{WWW_NAME}")], "{leaf_facts}");
    let www_flow = world.wait_for_log_line("the bumped www request", |l| {
        l.contains("served")
            && l.contains(&format!("name=\"{WWW_NAME}\""))
            && l.contains("mode=\"bump\"")
    });
    eprintln!(
        "(2) {url} trusting the interception CA: exit 0, status {}, HTTP/{}, body {:?}; \
         leaf issuer {issuer:?} (= CA subject), SAN {sans:?}, leaf sha256 {} (origin's is {}); \
         flow: {www_flow}",
        bumped.status,
        bumped.http_version,
        bumped.body,
        hex(&sha256(&minted)),
        hex(&world.origin_sha256(WWW_NAME))
    );

    // (3) Both HTTP versions through the bump.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let fetch = world.fetch(WWW_NAME, None, &intercept_ca, &[flag]);
        assert_eq!(
            fetch.curl.code,
            0,
            "{flag}: {}\n{}",
            fetch.curl.describe(),
            world.logs()
        );
        assert_eq!(fetch.status, "200", "{flag}");
        assert_eq!(fetch.http_version, version, "{flag}");
        assert_eq!(fetch.body, format!("nginx www host={WWW_NAME}\n"), "{flag}");
        assert_eq!(hex(&sha256(fetch.leaf())), hex(&sha256(&minted)), "{flag}");
        eprintln!(
            "(3) {url} {flag}: exit 0, status 200, %{{http_version}} = {}, body {:?}",
            fetch.http_version, fetch.body
        );
    }

    // (4) A spliced name: tlsgate passes the bytes through, so the client verifies the
    // origin's own leaf against the public CA.
    let public_ca_path = world.public_ca_pem.clone();
    let spliced = world.fetch(SPLICE_NAME, None, &public_ca_path, &[]);
    assert_eq!(
        spliced.curl.code,
        0,
        "{}\n{}",
        spliced.curl.describe(),
        world.logs()
    );
    assert_eq!(spliced.status, "200");
    assert_eq!(spliced.body, format!("nginx splice host={SPLICE_NAME}\n"));
    assert_eq!(
        hex(&sha256(spliced.leaf())),
        hex(&world.origin_sha256(SPLICE_NAME)),
        "a spliced connection must show the origin's own certificate"
    );
    let splice_flow = world.wait_for_log_line("the spliced request", |l| {
        l.contains(&format!("name=\"{SPLICE_NAME}\"")) && l.contains("mode=\"splice\"")
    });
    eprintln!(
        "(4) https://{SPLICE_NAME}/ trusting only the public CA: exit 0, status 200, body {:?}, \
         leaf sha256 {} = origin's; flow: {splice_flow}",
        spliced.body,
        hex(&sha256(spliced.leaf()))
    );

    // (5) A denied name fails even for a client that trusts both CAs (so neither a bump nor
    // a splice would have failed), tlsgate logs why, and nginx never sees the request.
    let both_ca = world.both_ca_pem.clone();
    let denied = world.fetch(DENIED_NAME, None, &both_ca, &[]);
    assert!(
        denied.curl.code != 0 && denied.curl.code != CURL_TIMED_OUT,
        "{DENIED_NAME} must be refused promptly: {}\n{}",
        denied.curl.describe(),
        world.logs()
    );
    let denied_line = world.wait_for_log_line("the denied request", |l| {
        l.contains(&format!("name=\"{DENIED_NAME}\"")) && l.contains("reason=\"denied\"")
    });
    let access = world.access_log();
    assert!(
        !access.contains(DENIED_NAME),
        "nginx served {DENIED_NAME}:\n{access}"
    );
    eprintln!(
        "(5) https://{DENIED_NAME}/ trusting both CAs: {}; log: {denied_line}",
        denied.curl.describe()
    );

    // (6) nginx saw the client itself only on the non-redirected control port; every
    // request over 443 (three bumped, one spliced) came from tlsgate on the gateway.
    let from = |addr: &str, name: &str| {
        access
            .lines()
            .filter(|l| l.starts_with(&format!("{addr} sni={name} ")))
            .count()
    };
    let seen = [
        from(CLIENT_IP, WWW_NAME),
        from(GATEWAY_ORIGIN_IP, WWW_NAME),
        from(GATEWAY_ORIGIN_IP, SPLICE_NAME),
    ];
    assert_eq!(seen, [1, 3, 1], "nginx access log:\n{access}");
    assert_eq!(access.lines().count(), 5, "nginx access log:\n{access}");
    let redirected = world.topo.redirected_connections();
    assert_eq!(redirected, 7, "connections through the REDIRECT rule");
    eprintln!(
        "(6) REDIRECT rule counted {redirected} connections; nginx access log:\n{access}whole \
         test took {:?}",
        started.elapsed()
    );
}

/// Issue 4's blog sequence with no client proxy setting: tlsgate transparent, deciding by the
/// blog's Cilium policies (copied unchanged, then replaced while running), plus the no-SNI rule:
/// a client that sends no SNI (an IP URL) is decided by its Host, which must resolve to the
/// address it was connecting to.
#[test]
fn transparent_gateway_enforces_the_blog_policy_and_decides_no_sni_requests_by_host() {
    if !preflight() {
        return;
    }
    let started = Instant::now();
    let mut world = World::start(&Scenario {
        origin_names: &[FACEBOOK_NAME, WWW_NAME],
        locations: "        location /cucumber { return 404 \"nginx cucumber host=$host\\n\"; }\n",
        gateway_hosts: &[
            (ORIGIN_IP, FACEBOOK_NAME),
            (ORIGIN_IP, WWW_NAME),
            (ELSEWHERE_IP, ELSEWHERE_NAME),
        ],
        gateway_files: &[(POLICY_FILE, BLOG_POLICY)],
        config: blog_config,
    });
    eprintln!(
        "namespaces, nginx, tlsgate (policy {POLICY_FILE} = blog-facebook-tls.yaml) and the \
         REDIRECT rule up in {:?}",
        started.elapsed()
    );
    let facts = world.dir.path().join("facts");
    std::fs::create_dir_all(&facts).expect("facts dir");
    let ca = world.intercept_ca_pem.clone();
    let facebook_body = format!("nginx www host={FACEBOOK_NAME}\n");
    let ip_url = format!("https://{ORIGIN_IP}/");
    let host_facebook = format!("Host: {FACEBOOK_NAME}");

    // (1) The blog's first policy allows GET to www.facebook.com:443: nginx answers through a
    // bump (the client sees a minted leaf, not the origin's).
    let page = world.fetch(FACEBOOK_NAME, None, &ca, &[]);
    assert_eq!(
        (page.curl.code, page.status.as_str(), page.body.as_str()),
        (0, "200", facebook_body.as_str()),
        "{}\n{}",
        page.curl.describe(),
        world.logs()
    );
    assert_ne!(
        hex(&sha256(page.leaf())),
        hex(&world.origin_sha256(FACEBOOK_NAME)),
        "a bumped connection must not show the origin's certificate"
    );
    let flow = world.wait_for_log_line("the allowed facebook request", |l| {
        l.contains("served")
            && l.contains(&format!("name=\"{FACEBOOK_NAME}\""))
            && l.contains("mode=\"bump\"")
    });
    eprintln!(
        "(1) https://{FACEBOOK_NAME}/: exit 0, status 200, body {:?}; flow: {flow}",
        page.body
    );

    // (2) No SNI (an IP URL) with Host www.facebook.com: the leaf is minted for the IP, the Host
    // resolves (in the gateway) to the original destination, so it decides: allowed, and the
    // origin is reached with the Host as SNI.
    let no_sni = world.fetch_url(&ip_url, &ca, &["-H", &host_facebook]);
    assert_eq!(
        (
            no_sni.curl.code,
            no_sni.status.as_str(),
            no_sni.body.as_str()
        ),
        (0, "200", facebook_body.as_str()),
        "{}\n{}",
        no_sni.curl.describe(),
        world.logs()
    );
    let leaf_facts = openssl_x509(
        &facts,
        "minted-ip",
        &no_sni.curl.stdout,
        &["-ext", "subjectAltName"],
    );
    let sans = san_entries(&leaf_facts);
    assert_eq!(
        sans,
        vec![format!("IP Address:{ORIGIN_IP}")],
        "{leaf_facts}"
    );
    let via_gateway = format!("{GATEWAY_ORIGIN_IP} sni={FACEBOOK_NAME} host={FACEBOOK_NAME} 200");
    let access = world.access_log();
    assert_eq!(
        access.lines().filter(|l| *l == via_gateway).count(),
        2,
        "both allowed requests reach nginx from tlsgate with SNI = Host:\n{access}"
    );
    eprintln!(
        "(2) {ip_url} -H '{host_facebook}' (no SNI): exit 0, status 200, body {:?}, minted SAN \
         {sans:?}; nginx saw {via_gateway:?}",
        no_sni.body
    );

    // (3) No SNI, and a Host that resolves elsewhere: claiming an allowed-looking name for
    // another address is refused before any rule, and nginx never sees it.
    let host_elsewhere = format!("Host: {ELSEWHERE_NAME}");
    let elsewhere = world.fetch_url(&ip_url, &ca, &["-H", &host_elsewhere]);
    assert_eq!(
        (elsewhere.curl.code, elsewhere.status.as_str()),
        (0, "403"),
        "{}\n{}",
        elsewhere.curl.describe(),
        world.logs()
    );
    assert!(
        elsewhere.body.contains("host_address_mismatch"),
        "403 body: {:?}",
        elsewhere.body
    );
    let mismatch = world.wait_for_log_line("the host_address_mismatch refusal", |l| {
        l.contains("reason=\"host_address_mismatch\"") && l.contains(ELSEWHERE_NAME)
    });
    eprintln!(
        "(3) {ip_url} -H '{host_elsewhere}' ({ELSEWHERE_NAME} -> {ELSEWHERE_IP} in the gateway): \
         exit 0, status 403, body {:?}; log: {mismatch}",
        elsewhere.body
    );

    // (4) No SNI, and a Host that does resolve to the origin but no rule selects: the Host
    // decides at connection level too (no_rule, as its SNI would have).
    let host_other = format!("Host: {WWW_NAME}");
    let other_no_sni = world.fetch_url(&ip_url, &ca, &["-H", &host_other]);
    assert_eq!(
        (other_no_sni.curl.code, other_no_sni.status.as_str()),
        (0, "403"),
        "{}\n{}",
        other_no_sni.curl.describe(),
        world.logs()
    );
    let other_line = world.wait_for_log_line("the no-SNI no_rule refusal", |l| {
        l.contains("reason=\"no_rule\"") && l.contains(&format!("url=\"https://{WWW_NAME}/\""))
    });
    eprintln!(
        "(4) {ip_url} -H '{host_other}' (resolves to the origin, no rule): status 403; log: \
         {other_line}"
    );

    // (5) A host not in the policy, with its SNI: refused at connection level (TLS alert).
    let refused = world.fetch(WWW_NAME, None, &ca, &[]);
    assert!(
        refused.curl.code != 0 && refused.curl.code != CURL_TIMED_OUT,
        "{WWW_NAME} must be refused promptly: {}\n{}",
        refused.curl.describe(),
        world.logs()
    );
    let refused_line = world.wait_for_log_line("the no_rule refusal", |l| {
        l.contains(&format!("name=\"{WWW_NAME}\"")) && l.contains("reason=\"no_rule\"")
    });
    eprintln!(
        "(5) https://{WWW_NAME}/: {}; log: {refused_line}",
        refused.curl.describe()
    );

    // (6) The blog's second policy replaces the file in one rename; tlsgate reloads it.
    let policy_path = world.gate_dir.join(POLICY_FILE);
    let tmp = world.gate_dir.join("facebook-tls.yaml.tmp");
    std::fs::copy(BLOG_POLICY_CUCUMBER, &tmp).expect("writing the new policy");
    let reloads_before = count_reloads(&world.log_text());
    let replaced = Instant::now();
    std::fs::rename(&tmp, &policy_path).expect("replacing the policy");
    let reload_time = loop {
        if count_reloads(&world.log_text()) > reloads_before {
            break replaced.elapsed();
        }
        assert!(
            replaced.elapsed() < RELOAD_TIMEOUT,
            "policy not reloaded within {RELOAD_TIMEOUT:?}\n{}",
            world.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "(6) policy replaced with blog-facebook-tls-cucumber.yaml; reloaded after {reload_time:?}"
    );

    // (7) GET /cucumber with dada: dada is allowed: nginx's own 404.
    let cucumber_url = format!("https://{FACEBOOK_NAME}/cucumber");
    let dada = world.fetch_url(&cucumber_url, &ca, &["-H", "dada: dada"]);
    let cucumber_body = format!("nginx cucumber host={FACEBOOK_NAME}\n");
    assert_eq!(
        (dada.curl.code, dada.status.as_str(), dada.body.as_str()),
        (0, "404", cucumber_body.as_str()),
        "{}\n{}",
        dada.curl.describe(),
        world.logs()
    );
    eprintln!(
        "(7) {cucumber_url} -H 'dada: dada': exit 0, status 404, body {:?} (nginx)",
        dada.body
    );

    // (8) ... with dada: dado it matches no HTTP rule: 403 from tlsgate, naming the policy.
    let dado = world.fetch_url(&cucumber_url, &ca, &["-H", "dada: dado"]);
    assert_eq!(
        (dado.curl.code, dado.status.as_str()),
        (0, "403"),
        "{}\n{}",
        dado.curl.describe(),
        world.logs()
    );
    assert!(
        dado.body.contains("denied by policy") && dado.body.contains("policy_denied"),
        "403 body: {:?}",
        dado.body
    );
    let dado_line = world.wait_for_log_line("the policy_denied refusal", |l| {
        l.contains("reason=\"policy_denied\"") && l.contains(&format!("name=\"{FACEBOOK_NAME}\""))
    });
    eprintln!(
        "(8) {cucumber_url} -H 'dada: dado': exit 0, status 403, body {:?}; log: {dado_line}",
        dado.body
    );

    // (9) The same two requests without SNI, named by their Host: the new policy applies to
    // them as well.
    let ip_cucumber = format!("https://{ORIGIN_IP}/cucumber");
    let no_sni_dada = world.fetch_url(
        &ip_cucumber,
        &ca,
        &["-H", &host_facebook, "-H", "dada: dada"],
    );
    assert_eq!(
        (
            no_sni_dada.curl.code,
            no_sni_dada.status.as_str(),
            no_sni_dada.body.as_str()
        ),
        (0, "404", cucumber_body.as_str()),
        "{}\n{}",
        no_sni_dada.curl.describe(),
        world.logs()
    );
    let no_sni_dado = world.fetch_url(
        &ip_cucumber,
        &ca,
        &["-H", &host_facebook, "-H", "dada: dado"],
    );
    assert_eq!(
        (no_sni_dado.curl.code, no_sni_dado.status.as_str()),
        (0, "403"),
        "{}\n{}",
        no_sni_dado.curl.describe(),
        world.logs()
    );
    let no_sni_dado_line = world.wait_for_log_line("the no-SNI policy_denied refusal", |l| {
        l.contains("reason=\"policy_denied\"") && l.contains(&format!("name=\"{ORIGIN_IP}\""))
    });
    eprintln!(
        "(9) {ip_cucumber} -H '{host_facebook}': dada: dada → status 404 body {:?}; dada: dado → \
         status 403; log: {no_sni_dado_line}",
        no_sni_dada.body
    );

    // (10) nginx saw exactly the allowed requests, all from tlsgate with SNI = Host.
    let access = world.access_log();
    let cucumbers = format!("{GATEWAY_ORIGIN_IP} sni={FACEBOOK_NAME} host={FACEBOOK_NAME} 404");
    let seen = [
        access.lines().filter(|l| *l == via_gateway).count(),
        access.lines().filter(|l| *l == cucumbers).count(),
    ];
    assert_eq!(seen, [2, 2], "nginx access log:\n{access}");
    assert_eq!(access.lines().count(), 4, "nginx access log:\n{access}");
    let redirected = world.topo.redirected_connections();
    assert_eq!(redirected, 9, "connections through the REDIRECT rule");
    eprintln!(
        "(10) REDIRECT rule counted {redirected} connections; nginx access log:\n{access}whole \
         test took {:?}",
        started.elapsed()
    );
}

/// How many times tlsgate logged a policy reload.
fn count_reloads(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("policy reloaded"))
        .count()
}
