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
/// How long a server gets to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
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
    fn build() -> Topology {
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
        topo.client
            .set_hosts(&[
                (ORIGIN_IP, WWW_NAME),
                (ORIGIN_IP, SPLICE_NAME),
                (ORIGIN_IP, DENIED_NAME),
            ])
            .expect("client hosts file");
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

/// Writes the nginx config under `dir` and starts nginx (one process) in `ns`: three HTTPS
/// server names on :443, and www once more on the non-redirected port.
fn start_nginx(ns: &NetNs, dir: &Path, leaves: &[(&str, &Leaf)]) -> ChildGuard {
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
fn tlsgate_config(ca_dir: &Path, upstream_ca: &Path) -> String {
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

/// Writes the config to `dir/transparent.yaml`, checks it with `tlsgate check` and starts
/// `tlsgate run` in `ns` with stdout and stderr in `dir/tlsgate.log`.
fn start_tlsgate(ns: &NetNs, dir: &Path, config: &str) -> (ChildGuard, PathBuf) {
    let bin = env!("CARGO_BIN_EXE_tlsgate");
    let config_path = dir.join("transparent.yaml");
    std::fs::write(&config_path, config).expect("writing tlsgate config");
    let config_arg = config_path.display().to_string();
    let check = ns
        .exec(&[bin, "check", "--config", &config_arg])
        .expect("running tlsgate check");
    assert!(
        check.status.success(),
        "tlsgate check rejected transparent.yaml:\n{config}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = dir.join("tlsgate.log");
    let out = File::create(&log).expect("tlsgate log file");
    let mut cmd = ns.command(&[bin, "run", "--config", &config_arg]);
    cmd.env("RUST_LOG", LOG_FILTER)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out);
    let guard = ChildGuard::spawn(&mut cmd)
        .expect("starting tlsgate")
        .with_term_grace(STOP_GRACE);
    (guard, log)
}

/// Waits until every `addr:port` in `sockets` is listening in `ns`, failing early (with the
/// log) if `child` exits.
fn wait_listening(ns: &NetNs, sockets: &[String], child: &mut ChildGuard, log: &Path) {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        let listening = ns.run(&["ss", "-H", "-l", "-t", "-n"]).unwrap_or_default();
        let missing: Vec<&String> = sockets
            .iter()
            .filter(|s| !listening.split_whitespace().any(|col| col == s.as_str()))
            .collect();
        if missing.is_empty() {
            return;
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "process in {} exited ({status}) before listening on {missing:?}; its log:\n{}",
                ns.name(),
                log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} not listening in {} after {LISTEN_TIMEOUT:?}; log:\n{}",
            ns.name(),
            log_text()
        );
        std::thread::sleep(POLL);
    }
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
    www_sha256: [u8; 32],
    splice_sha256: [u8; 32],
    nginx_dir: PathBuf,
    dir: TempDir,
}

impl World {
    fn start() -> World {
        let topo = Topology::build();
        let dir = tlsgate_testkit::temp_dir("tlsgate-e2e-intercept-");
        let nginx_dir = dir.path().join("origin");
        let gate_dir = dir.path().join("gateway");
        std::fs::create_dir_all(&nginx_dir).expect("origin dir");
        std::fs::create_dir_all(&gate_dir).expect("gateway dir");

        let public_ca = TestCa::new("e2e public CA");
        let public_ca_pem = public_ca.write_cert_pem(&dir.path().join("public-ca.pem"));
        let www = public_ca.issue(&[WWW_NAME]);
        let splice = public_ca.issue(&[SPLICE_NAME]);
        let denied = public_ca.issue(&[DENIED_NAME]);
        let mut nginx = start_nginx(
            &topo.origin,
            &nginx_dir,
            &[
                (WWW_NAME, &www),
                (SPLICE_NAME, &splice),
                (DENIED_NAME, &denied),
            ],
        );
        wait_listening(
            &topo.origin,
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
            &tlsgate_config(&ca_dir, &public_ca_pem),
        );
        wait_listening(
            &topo.gateway,
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
            www_sha256: www.sha256_fingerprint(),
            splice_sha256: splice.sha256_fingerprint(),
            nginx_dir,
            dir,
        }
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
        let label = format!("{name}{port_part}{}", extra.join(""));
        let body_path = self.dir.path().join(format!("body-{label}"));
        let body_arg = body_path.display().to_string();
        let ca_arg = ca.display().to_string();
        let url = format!("https://{name}{port_part}/");
        let mut args = vec![
            "--cacert",
            &ca_arg,
            "-o",
            &body_arg,
            "-w",
            "%{http_code}\n%{http_version}\n%{certs}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
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
    let mut world = World::start();
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
    assert_eq!(hex(&sha256(direct.leaf())), hex(&world.www_sha256));
    assert_eq!(
        world.topo.redirected_connections(),
        0,
        "port {DIRECT_PORT} must not be redirected"
    );
    eprintln!(
        "(0) control https://{WWW_NAME}:{DIRECT_PORT}/ (not redirected): exit 0, body {:?}, \
         leaf sha256 {} = origin's",
        direct.body,
        hex(&world.www_sha256)
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
        hex(&world.www_sha256),
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
        hex(&world.www_sha256)
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
        hex(&world.splice_sha256),
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
