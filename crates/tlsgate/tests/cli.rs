//! The built `tlsgate` binary: help, version, `check` on the shipped examples and on a broken
//! config, `run` until SIGTERM, and `demo tunnel`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `tlsgate args` and asserts a usage error: exit status 2, and `says` in the message.
fn assert_usage_error(args: &[&str], says: &str) {
    let output = tlsgate(args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains(says), "{message}");
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().expect("file in a directory")).expect("mkdir");
    fs::write(path, text).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

/// Writes `certs/{name}.pem` and `certs/{name}.key` (0600) for `san`, signed by `ca`.
fn write_leaf(dir: &Path, name: &str, san: &str, ca: &CertifiedIssuer<'_, KeyPair>) {
    let key = KeyPair::generate().expect("leaf key");
    let cert = CertificateParams::new(vec![san.to_owned()])
        .expect("leaf params")
        .signed_by(&key, ca)
        .expect("leaf cert");
    write(&dir.join(format!("certs/{name}.pem")), &cert.pem(), 0o644);
    write(
        &dir.join(format!("certs/{name}.key")),
        &key.serialize_pem(),
        0o600,
    );
}

/// The certificates examples/firewall-tunnel/*.yaml reference, under `dir/certs/`.
fn write_example_pki(dir: &Path) {
    let relay_ca = new_ca("tlsgate test relay CA");
    write(&dir.join("certs/relay-ca.pem"), &relay_ca.pem(), 0o644);
    write_leaf(dir, "relay", "envoy-b.example.com", &relay_ca);
    let edge_ca = new_ca("tlsgate test edge CA");
    write(&dir.join("certs/edge-ca.pem"), &edge_ca.pem(), 0o644);
    write_leaf(dir, "edge", "edge-a.example.com", &edge_ca);
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/firewall-tunnel")
}

#[test]
fn help_teaches_the_commands_and_examples() {
    let output = tlsgate(&["--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = stdout(&output);
    for expected in [
        "run",
        "check",
        "edge",
        "relay",
        "EXAMPLES",
        "tlsgate check --config examples/firewall-tunnel/edge.yaml",
        "tlsgate run --config examples/firewall-tunnel/relay.yaml",
        "tlsgate demo tunnel",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
}

#[test]
fn version_names_the_package_version() {
    let output = tlsgate(&["--version"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        format!("tlsgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_both_firewall_tunnel_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["edge.yaml", "relay.yaml"] {
        fs::copy(examples_dir().join(name), dir.path().join(name)).expect("copy example");
    }
    write_example_pki(dir.path());

    let edge = tlsgate(&[
        "check",
        "--config",
        &dir.path().join("edge.yaml").to_string_lossy(),
    ]);
    assert!(edge.status.success(), "edge.yaml:\n{}", stderr(&edge));
    assert_eq!(
        stdout(&edge).trim(),
        "config OK: 2 listeners (http: http on 0.0.0.0:80 via relay provider-b; \
         https: tls-passthrough on 0.0.0.0:443 via relay provider-b)"
    );

    let relay = tlsgate(&[
        "check",
        "-c",
        &dir.path().join("relay.yaml").to_string_lossy(),
    ]);
    assert!(relay.status.success(), "relay.yaml:\n{}", stderr(&relay));
    assert_eq!(
        stdout(&relay).trim(),
        "config OK: 1 listener (relay: relay on 0.0.0.0:8443 with 2 routes)"
    );
}

#[test]
fn check_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_example_pki(dir.path());
    // Readable by everyone: must be refused, not loaded.
    fs::set_permissions(
        dir.path().join("certs/edge.key"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let config = dir.path().join("broken.yaml");
    write(
        &config,
        r#"
relays:
  - name: provider-b
    address: envoy-b.example.com:8443
    ca: certs/relay-ca.pem
    client_cert: certs/edge.pem
    client_key: certs/edge.key
    transprot: h2
listeners:
  - name: https
    kind: tls-passthrough
    listen: 0.0.0.0:443
    relay: provider-b
  - name: relay
    kind: relay
    listen: 0.0.0.0:8443
    tls:
      cert: certs/relay.pem
      key: certs/missing.key
    routes:
      - match: "a.*.com"
        tls: "{sni}:443"
"#,
        0o644,
    );

    let output = tlsgate(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(1), "stdout: {}", stdout(&output));
    let report = stderr(&output);
    let lines: Vec<&str> = report.lines().collect();
    let key = dir.path().join("certs/edge.key");
    let expected = [
        "relays[0].transprot: unknown field `transprot`, expected one of `name`, `address`, \
         `server_name`, `ca`, `client_cert`, `client_key`, `transport`, `pool_size`, \
         `preconnect`, `resolve_interval`, `retry_backoff_min`, `retry_backoff_max`"
            .to_owned(),
        format!(
            "relays[0].client_key: certs/edge.key is readable by group/others (mode 0644); \
             run chmod 600 {}",
            key.display()
        ),
        "listeners[1].tls.key: reading certs/missing.key: No such file or directory (os error 2)"
            .to_owned(),
        "listeners[1].routes[0].match: \"a.*.com\": `*` is only allowed as the whole first \
         label (`*.example.com`) or alone"
            .to_owned(),
        format!("{}: 4 problems", config.display()),
    ];
    assert_eq!(lines, expected, "full report:\n{report}");
    assert_eq!(stdout(&output), "", "nothing claims success");
}

#[test]
fn check_reports_a_missing_config_file() {
    let output = tlsgate(&["check", "--config", "/nonexistent/tlsgate.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("reading /nonexistent/tlsgate.yaml: No such file or directory"),
        "{}",
        stderr(&output)
    );
}

/// Kills the child on drop so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A relay config on an ephemeral loopback port, with the example PKI, in `dir`.
fn relay_config(dir: &Path) -> PathBuf {
    write_example_pki(dir);
    let config = dir.join("relay.yaml");
    write(
        &config,
        "listeners:\n  - name: relay\n    kind: relay\n    listen: 127.0.0.1:0\n    tls: {cert: certs/relay.pem, key: certs/relay.key}\n    routes: [{match: a.example.com, tls: \"a.example.com:443\"}]\n",
        0o644,
    );
    config
}

#[test]
fn run_prints_bound_listeners_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = relay_config(dir.path());
    let child = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args([
            "run",
            "--config",
            &config.to_string_lossy(),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tlsgate run");
    let mut child = ChildGuard(child);

    let out = child.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read stdout");
    let addr = line
        .trim()
        .strip_prefix("listening: relay ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the real bound port is printed");
    std::net::TcpStream::connect(addr).expect("the listener accepts connections");

    let pid = child.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tlsgate run did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn demo_tunnel_runs_the_whole_topology_and_checks_certificates() {
    let output = tlsgate(&["demo", "tunnel"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    // Both transports carried both services, each showing the origin's own certificate.
    for transport in ["[h2]", "[tls]"] {
        for name in ["private.service.example.com", "other.service.example.com"] {
            let line = format!("{transport} GET https://{name}/ → 200 OK");
            assert!(out.contains(&line), "missing {line:?} in:\n{out}");
        }
    }
    assert_eq!(
        out.matches("the origin's own (never re-encrypted)").count(),
        4,
        "{out}"
    );
    assert!(
        out.contains("[http] GET http://private.service.example.com/"),
        "{out}"
    );
    assert!(out.contains("refused (relay: no_route)"), "{out}");
    assert!(out.contains("all 6 checks passed"), "{out}");
}

// ---- intercept listeners and `run` without a config ----

fn intercept_examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/intercept")
}

/// An interception CA made by tlsgate-ca in `dir` (ca.pem, ca.der, ca.key 0600).
fn write_interception_ca(dir: &Path) {
    let params = tlsgate_ca::CaParams {
        common_name: "tlsgate test interception CA".to_owned(),
        algorithm: tlsgate_ca::Algorithm::EcdsaP256,
        days: 30,
    };
    tlsgate_ca::CertAuthority::generate(&params)
        .expect("generate CA")
        .save(dir)
        .expect("save CA");
}

/// A PEM bundle to stand in for the system trust store (via SSL_CERT_FILE), so the tests do not
/// depend on the machine having ca-certificates installed.
fn write_trust_store(path: &Path) {
    write(path, &new_ca("tlsgate test public root").pem(), 0o644);
}

fn tlsgate_with_trust_store(args: &[&str], trust_store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .env("SSL_CERT_FILE", trust_store)
        .env_remove("SSL_CERT_DIR")
        .output()
        .expect("run tlsgate")
}

#[test]
fn check_accepts_both_intercept_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["explicit.yaml", "transparent.yaml"] {
        fs::copy(intercept_examples_dir().join(name), dir.path().join(name)).expect("copy example");
    }
    write_interception_ca(&dir.path().join("ca"));
    let trust_store = dir.path().join("system-roots.pem");
    write_trust_store(&trust_store);

    let expected = [
        (
            "explicit.yaml",
            "config OK: 1 listener (proxy: intercept on 127.0.0.1:8080 with 2 rules, default \
             bump, explicit mode)",
        ),
        (
            "transparent.yaml",
            "config OK: 1 listener (transparent: intercept on 127.0.0.1:8443 with 3 rules, \
             default bump, transparent mode)",
        ),
    ];
    for (name, summary) in expected {
        let config = dir.path().join(name);
        let output = tlsgate_with_trust_store(
            &["check", "--config", &config.to_string_lossy()],
            &trust_store,
        );
        assert!(output.status.success(), "{name}:\n{}", stderr(&output));
        assert_eq!(stdout(&output).trim(), summary, "{name}");
    }
}

#[test]
fn check_loads_a_cilium_policy_unchanged_and_prints_what_it_ignores() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["cilium-policy.yaml", "facebook-tls.yaml"] {
        fs::copy(intercept_examples_dir().join(name), dir.path().join(name)).expect("copy example");
    }
    write_interception_ca(&dir.path().join("ca"));
    let trust_store = dir.path().join("system-roots.pem");
    write_trust_store(&trust_store);
    let config = dir.path().join("cilium-policy.yaml");
    let output = tlsgate_with_trust_store(
        &["check", "--config", &config.to_string_lossy()],
        &trust_store,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(
        out.starts_with("config OK: 1 listener (proxy: intercept on 127.0.0.1:8080 with policy"),
        "{out}"
    );
    assert!(out.contains("explicit mode)"), "{out}");
    // Nothing is dropped silently: each ignored Cilium field is named with its key path.
    let notes: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("listeners.proxy.policy: note:"))
        .collect();
    assert!(
        notes.iter().any(|l| l.contains("endpointSelector")),
        "{out}"
    );
    assert!(notes.iter().any(|l| l.contains("dns")), "{out}");
}

#[test]
fn check_reports_every_intercept_problem_with_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_interception_ca(&dir.path().join("ca"));
    fs::set_permissions(
        dir.path().join("ca/ca.key"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let trust_store = dir.path().join("system-roots.pem");
    write_trust_store(&trust_store);
    let config = dir.path().join("broken.yaml");
    write(
        &config,
        r#"
listeners:
  - name: proxy
    kind: intercept
    listen: 127.0.0.1:8080
    mode: transparant
    ca:
      dir: ca
    certs:
      lifetime: 1d
      cache_ttl: 2d
    rules:
      - match: "*.bank.*"
        action: splice
      - match: blocked.example.com
        action: block
  - name: second
    kind: intercept
    listen: 127.0.0.1:8081
    ca:
      dir: no-such-ca
    upstream_ca: roots.pem
"#,
        0o644,
    );

    let output = tlsgate_with_trust_store(
        &["check", "--config", &config.to_string_lossy()],
        &trust_store,
    );
    assert_eq!(output.status.code(), Some(1), "stdout: {}", stdout(&output));
    let report = stderr(&output);
    let lines: Vec<&str> = report.lines().collect();
    let key = dir.path().join("ca/ca.key");
    let expected = [
        "listeners[0].mode: unknown variant `transparant`, expected `explicit` or `transparent`"
            .to_owned(),
        format!(
            "listeners[0].ca.dir: CA key {} is readable by group or others (mode 0644); \
             restrict it with: chmod 600 {}",
            key.display(),
            key.display()
        ),
        "listeners[0].certs.cache_ttl: cache_ttl (2d) must be below lifetime (1d): a \
         cached certificate must never be served after it expires"
            .to_owned(),
        "listeners[0].rules[0].match: \"*.bank.*\": `*` is only allowed as the whole first \
         label (`*.example.com`) or alone"
            .to_owned(),
        "listeners[0].rules[1].action: unknown variant `block`, expected one of `bump`, \
         `splice`, `deny`"
            .to_owned(),
        format!(
            "listeners[1].ca.dir: reading {}: No such file or directory (os error 2)",
            dir.path().join("no-such-ca/ca.pem").display()
        ),
        "listeners[1].upstream_ca: reading roots.pem: No such file or directory (os error 2)"
            .to_owned(),
        format!("{}: 7 problems", config.display()),
    ];
    assert_eq!(lines, expected, "full report:\n{report}");
    assert_eq!(stdout(&output), "", "nothing claims success");
}

#[test]
fn run_refuses_listen_together_with_config() {
    assert_usage_error(
        &["run", "--config", "tlsgate.yaml", "--listen", "127.0.0.1:0"],
        "cannot be used with",
    );
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
fn terminate(child: &mut ChildGuard) {
    let pid = child.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tlsgate run did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

/// Starts `tlsgate run --listen 127.0.0.1:0` with `home` as HOME and `xdg` as XDG_DATA_HOME and
/// returns it with the first `lines` lines of its stdout, and the rest of stdout (kept open: a
/// closed pipe would make the child's next print fail).
fn run_default(
    home: &Path,
    xdg: &Path,
    trust_store: &Path,
    lines: usize,
) -> (ChildGuard, Vec<String>, impl BufRead) {
    let child = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(["run", "--listen", "127.0.0.1:0", "--log-level", "warn"])
        .env("HOME", home)
        .env("XDG_DATA_HOME", xdg)
        .env("SSL_CERT_FILE", trust_store)
        .env_remove("SSL_CERT_DIR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tlsgate run");
    let mut child = ChildGuard(child);
    let mut out = BufReader::new(child.0.stdout.take().expect("piped stdout"));
    let mut read = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read stdout");
        assert_ne!(n, 0, "stdout ended after {read:?}");
        read.push(line.trim_end().to_owned());
    }
    (child, read, out)
}

#[test]
fn run_without_config_creates_a_ca_prints_how_to_trust_it_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let xdg = dir.path().join("xdg");
    fs::create_dir_all(&home).expect("mkdir home");
    let trust_store = dir.path().join("system-roots.pem");
    write_trust_store(&trust_store);
    let ca_dir = xdg.join("tlsgate/ca");
    let cert = ca_dir.join("ca.pem");

    // First run: the CA is created in $XDG_DATA_HOME/tlsgate/ca.
    let (mut child, lines, _out) = run_default(&home, &xdg, &trust_store, 4);
    assert_eq!(
        lines[0],
        format!("created a new interception CA in {}", ca_dir.display())
    );
    let addr = lines[1]
        .strip_prefix("listening: proxy ")
        .unwrap_or_else(|| panic!("unexpected line {:?}", lines[1]));
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "the real bound port is printed");
    assert_eq!(lines[2], format!("CA certificate: {}", cert.display()));
    assert_eq!(
        lines[3],
        format!(
            "trust it per request, e.g.: curl --cacert {} -x http://{addr} https://example.com/",
            cert.display()
        )
    );
    let key_mode = fs::metadata(ca_dir.join("ca.key"))
        .expect("ca.key exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "ca.key mode {key_mode:04o}");
    let dir_mode = fs::metadata(&ca_dir).expect("ca dir").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "CA directory mode {dir_mode:04o}");
    let pem = fs::read_to_string(&cert).expect("read ca.pem");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(
        !home.join(".local").exists(),
        "XDG_DATA_HOME wins over HOME"
    );
    std::net::TcpStream::connect(addr).expect("the proxy accepts connections");
    terminate(&mut child);

    // Second run: the same CA is reused, not replaced.
    let (mut child, lines, _out) = run_default(&home, &xdg, &trust_store, 3);
    assert!(
        lines[0].starts_with("listening: proxy 127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(lines[1], format!("CA certificate: {}", cert.display()));
    assert_eq!(fs::read_to_string(&cert).expect("read ca.pem"), pem);
    terminate(&mut child);
}

#[test]
fn run_without_config_falls_back_to_home_for_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trust_store = dir.path().join("system-roots.pem");
    write_trust_store(&trust_store);
    // A relative XDG_DATA_HOME is ignored, as the XDG spec says.
    let (mut child, lines, _out) = run_default(dir.path(), Path::new("relative"), &trust_store, 4);
    let ca_dir = dir.path().join(".local/share/tlsgate/ca");
    assert_eq!(
        lines[0],
        format!("created a new interception CA in {}", ca_dir.display())
    );
    assert!(ca_dir.join("ca.key").is_file());
    let cert = ca_dir.join("ca.pem");
    assert_eq!(lines[2], format!("CA certificate: {}", cert.display()));
    assert!(
        lines[3].contains(&format!(
            "curl --cacert {} -x http://127.0.0.1:",
            cert.display()
        )),
        "{}",
        lines[3]
    );
    terminate(&mut child);
}

/// Waits (5 s at most) until `pid` has `want` worker threads. They are started before the process
/// prints its listeners, but a new thread names itself only once it first runs, which on a loaded
/// machine can come later.
fn wait_for_worker_threads(pid: u32, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let names = tlsgate_testkit::thread_names(pid);
        let workers = names.iter().filter(|n| *n == "tlsgate-worker").count();
        if workers == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{workers} worker threads, want {want}; threads: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_serves_with_the_workers_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = relay_config(dir.path());
    for workers in [1, 3] {
        let child = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
            .args(["run", "--config", &config.to_string_lossy()])
            .args(["--log-level", "warn", "--workers", &workers.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tlsgate run");
        let mut child = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read stdout");
        assert!(line.starts_with("listening: relay "), "{line:?}");
        wait_for_worker_threads(child.0.id(), workers);
        terminate(&mut child);
    }

    assert_usage_error(&["run", "--workers", "0"], "0 is not in 1..=1024");
}

/// `tlsgate_worker_connections` from the admin API at `admin`, by worker index.
fn worker_connections(admin: std::net::SocketAddr) -> Vec<u64> {
    tlsgate_testkit::metrics_text(admin)
        .lines()
        .filter_map(|line| line.strip_prefix("tlsgate_worker_connections{worker=\""))
        .filter_map(|rest| rest.split_once("\"} ")?.1.parse().ok())
        .collect()
}

#[test]
fn run_places_new_connections_on_the_workers_as_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = relay_config(dir.path());
    let mut text = fs::read_to_string(&config).expect("read config");
    text.push_str("admin:\n  listen: 127.0.0.1:0\n");
    write(&config, &text, 0o644);
    // Six idle connections, one at a time: fill keeps them on worker 0 (asleep between them, so
    // it has room), balance deals them out.
    for (placement, want) in [("fill", [6, 0]), ("balance", [3, 3])] {
        let child = Command::new(env!("CARGO_BIN_EXE_tlsgate"))
            .args(["run", "--config", &config.to_string_lossy()])
            .args([
                "--log-level",
                "warn",
                "--workers",
                "2",
                "--placement",
                placement,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tlsgate run");
        let mut child = ChildGuard(child);
        let mut lines = BufReader::new(child.0.stdout.take().expect("piped stdout")).lines();
        let mut addr = |name: &str| -> std::net::SocketAddr {
            let line = lines.next().expect("a line").expect("read stdout");
            let addr = line.strip_prefix(&format!("listening: {name} "));
            let addr = addr.unwrap_or_else(|| panic!("{line:?}"));
            addr.parse().expect("an address")
        };
        let (relay, admin) = (addr("relay"), addr("admin"));
        wait_for_worker_threads(child.0.id(), 2);
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(std::net::TcpStream::connect(relay).expect("connect"));
            std::thread::sleep(Duration::from_millis(30));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = worker_connections(admin);
        while seen.iter().sum::<u64>() < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            seen = worker_connections(admin);
        }
        assert_eq!(seen, want, "--placement {placement}");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while worker_connections(admin) != [0, 0] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            worker_connections(admin),
            [0, 0],
            "seats given back on close"
        );
        terminate(&mut child);
    }

    assert_usage_error(
        &["run", "--placement", "round-robin"],
        "possible values: fill, balance",
    );
}
