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
         `server_name`, `ca`, `client_cert`, `client_key`, `transport`, `pool_size`"
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

#[test]
fn run_prints_bound_listeners_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_example_pki(dir.path());
    let config = dir.path().join("relay.yaml");
    write(
        &config,
        "listeners:\n  - name: relay\n    kind: relay\n    listen: 127.0.0.1:0\n    tls: {cert: certs/relay.pem, key: certs/relay.key}\n    routes: [{match: a.example.com, tls: \"a.example.com:443\"}]\n",
        0o644,
    );
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
