//! `tlsgate ca` driven through the built binary, with the real `openssl` as the judge of what
//! it writes: file modes, refusal to overwrite, refusal of an open CA key, and certificates that
//! `openssl verify` accepts with the extensions clients rely on.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)")
}

fn text(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// Runs a command that must succeed and returns its stdout.
fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", text(&output));
    stdout(&output)
}

fn init(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["ca", "init", "--dir", s(dir)];
    args.extend_from_slice(extra);
    ok(tlsgate(&args))
}

/// The base64 body of a PEM key, for "never printed" checks.
fn pem_body(path: &Path) -> String {
    fs::read_to_string(path)
        .expect("read key")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

fn assert_no_key_material(printed: &str, key: &Path) {
    let body = pem_body(key);
    for window in body.as_bytes().windows(16).step_by(8) {
        let window = std::str::from_utf8(window).expect("base64 is ASCII");
        assert!(
            !printed.contains(window),
            "key material printed:\n{printed}"
        );
    }
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
}

#[test]
fn init_writes_private_key_public_certs_in_a_private_dir_and_says_how_to_trust_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let out = init(&dir, &[]);

    assert_eq!(mode(&dir), 0o700, "directory");
    assert_eq!(mode(&dir.join("ca.key")), 0o600, "key");
    assert_eq!(mode(&dir.join("ca.pem")), 0o644, "PEM certificate");
    assert_eq!(mode(&dir.join("ca.der")), 0o644, "DER certificate");

    // The DER file is the PEM certificate, as openssl sees them.
    let from_der = ok(openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        s(&dir.join("ca.der")),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]));
    let from_pem = ok(openssl(&[
        "x509",
        "-in",
        s(&dir.join("ca.pem")),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]));
    assert_eq!(from_der, from_pem);

    for hint in [
        "update-ca-certificates",
        "/usr/local/share/ca-certificates/tlsgate.crt",
        "/etc/pki/ca-trust/source/anchors/",
        "update-ca-trust",
        "--cacert",
        "certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n tlsgate -i",
    ] {
        assert!(out.contains(hint), "missing {hint:?} in:\n{out}");
    }
    assert!(out.contains(s(&dir.join("ca.pem"))), "{out}");
    assert_no_key_material(&out, &dir.join("ca.key"));
}

#[test]
fn second_init_refuses_to_overwrite_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    init(&dir, &[]);
    let cert_before = fs::read(dir.join("ca.pem")).unwrap();
    let key_before = fs::read(dir.join("ca.key")).unwrap();

    let again = tlsgate(&["ca", "init", "--dir", s(&dir)]);
    assert!(!again.status.success(), "{}", text(&again));
    let err = stderr(&again);
    assert!(
        err.contains(s(&dir.join("ca.key"))) && err.contains("refusing to overwrite"),
        "{err}"
    );
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), cert_before);
    assert_eq!(fs::read(dir.join("ca.key")).unwrap(), key_before);

    // Also when only the certificate is left (someone deleted the key): still no overwrite.
    fs::remove_file(dir.join("ca.key")).unwrap();
    let again = tlsgate(&["ca", "init", "--dir", s(&dir)]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        stderr(&again).contains(s(&dir.join("ca.pem"))),
        "{}",
        text(&again)
    );
    assert!(!dir.join("ca.key").exists(), "no key written when refusing");
}

#[test]
fn show_refuses_a_key_readable_by_others_and_says_chmod_600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    init(&dir, &[]);
    let key = dir.join("ca.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();

    let shown = tlsgate(&["ca", "show", "--dir", s(&dir)]);
    assert!(!shown.status.success(), "{}", text(&shown));
    let err = stderr(&shown);
    assert!(err.contains("chmod 600") && err.contains(s(&key)), "{err}");
    assert!(stdout(&shown).is_empty(), "nothing shown from a refused CA");
    assert_no_key_material(&text(&shown), &key);

    // `issue` loads the CA the same way.
    let issued = tlsgate(&[
        "ca",
        "issue",
        "a.example",
        "--dir",
        s(&dir),
        "--out",
        s(tmp.path()),
    ]);
    assert!(
        !issued.status.success() && stderr(&issued).contains("chmod 600"),
        "{}",
        text(&issued)
    );

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    ok(tlsgate(&["ca", "show", "--dir", s(&dir)]));
}

#[test]
fn show_agrees_with_openssl_on_serial_fingerprints_and_subject() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    init(&dir, &["--name", "Example egress CA"]);
    let out = ok(tlsgate(&["ca", "show", "--dir", s(&dir)]));
    let pem = dir.join("ca.pem");
    let field = |args: &[&str]| {
        let mut all = vec!["x509", "-in", s(&pem), "-noout"];
        all.extend_from_slice(args);
        let line = ok(openssl(&all));
        line.trim()
            .split_once('=')
            .expect("openssl prints name=value")
            .1
            .to_owned()
    };
    let serial = field(&["-serial"]);
    let sha256 = field(&["-fingerprint", "-sha256"]);
    let sha1 = field(&["-fingerprint", "-sha1"]);
    assert!(
        out.contains(&format!("serial:        {serial}\n")),
        "{serial} in:\n{out}"
    );
    assert!(
        out.contains(&format!("SHA-256:       {sha256}\n")),
        "{sha256} in:\n{out}"
    );
    assert!(
        out.contains(&format!("SHA-1:         {sha1}\n")),
        "{sha1} in:\n{out}"
    );
    assert!(
        out.contains("subject:       CN=Example egress CA\n"),
        "{out}"
    );
    assert!(out.contains("key algorithm: ECDSA P-256\n"), "{out}");
    assert!(out.contains("days left"), "{out}");
    assert_no_key_material(&out, &dir.join("ca.key"));
}

#[test]
fn issue_writes_a_leaf_that_openssl_verifies_with_dns_and_ip_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let out_dir = tmp.path().join("certs");
    init(&dir, &[]);
    let printed = ok(tlsgate(&[
        "ca",
        "issue",
        "api.example.com",
        "www.example.com",
        "--ip",
        "10.0.0.7",
        "--ip",
        "2001:db8::7",
        "--dir",
        s(&dir),
        "--out",
        s(&out_dir),
        "--days",
        "30",
    ]));
    let ca_pem = dir.join("ca.pem");
    let leaf_pem = out_dir.join("api.example.com.pem");
    let leaf_key = out_dir.join("api.example.com.key");
    assert_eq!(mode(&leaf_key), 0o600);
    assert_eq!(mode(&leaf_pem), 0o644);
    assert_eq!(
        fs::read_to_string(&leaf_pem)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "leaf + CA"
    );
    assert_no_key_material(&printed, &leaf_key);
    assert_no_key_material(&printed, &dir.join("ca.key"));

    // The real verifier accepts it, as a TLS server certificate, for each of its names.
    ok(openssl(&["verify", "-CAfile", s(&ca_pem), s(&leaf_pem)]));
    for check in [
        ["-verify_hostname", "api.example.com"],
        ["-verify_hostname", "www.example.com"],
        ["-verify_ip", "10.0.0.7"],
        ["-verify_ip", "2001:db8::7"],
    ] {
        ok(openssl(&[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            s(&ca_pem),
            check[0],
            check[1],
            s(&leaf_pem),
        ]));
    }
    let wrong = openssl(&[
        "verify",
        "-CAfile",
        s(&ca_pem),
        "-verify_hostname",
        "evil.example.com",
        s(&leaf_pem),
    ]);
    assert!(
        !wrong.status.success(),
        "a name not in the certificate must fail:\n{}",
        text(&wrong)
    );

    let ca_text = ok(openssl(&["x509", "-in", s(&ca_pem), "-noout", "-text"]));
    assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
    let leaf_text = ok(openssl(&["x509", "-in", s(&leaf_pem), "-noout", "-text"]));
    assert!(
        leaf_text.contains("X509v3 Subject Alternative Name"),
        "{leaf_text}"
    );
    assert!(
        leaf_text.contains("DNS:api.example.com, DNS:www.example.com, IP Address:10.0.0.7, IP Address:2001:DB8:0:0:0:0:0:7"),
        "{leaf_text}"
    );
    assert!(
        leaf_text.contains("TLS Web Server Authentication"),
        "{leaf_text}"
    );
    assert!(
        leaf_text.contains("Subject: CN = api.example.com"),
        "{leaf_text}"
    );

    // The leaf has its own key: not the CA's.
    let public = |key: &Path| ok(openssl(&["pkey", "-in", s(key), "-pubout"]));
    let leaf_pub = public(&leaf_key);
    assert_ne!(leaf_pub, public(&dir.join("ca.key")));
    assert_eq!(
        leaf_pub,
        ok(openssl(&["x509", "-in", s(&leaf_pem), "-noout", "-pubkey"]))
    );

    // And a second issue for the same name refuses to overwrite.
    let again = tlsgate(&[
        "ca",
        "issue",
        "api.example.com",
        "--dir",
        s(&dir),
        "--out",
        s(&out_dir),
    ]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        text(&again)
    );
}

#[test]
fn issue_accepts_ip_only_and_refuses_over_825_days() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    init(&dir, &[]);
    ok(tlsgate(&[
        "ca",
        "issue",
        "--ip",
        "192.0.2.9",
        "--dir",
        s(&dir),
        "--out",
        s(tmp.path()),
    ]));
    let leaf = tmp.path().join("192.0.2.9.pem");
    ok(openssl(&[
        "verify",
        "-CAfile",
        s(&dir.join("ca.pem")),
        "-verify_ip",
        "192.0.2.9",
        s(&leaf),
    ]));
    let leaf_text = ok(openssl(&[
        "x509",
        "-in",
        s(&leaf),
        "-noout",
        "-ext",
        "subjectAltName",
    ]));
    assert!(
        leaf_text.contains("IP Address:192.0.2.9") && !leaf_text.contains("DNS:"),
        "{leaf_text}"
    );

    let long = tlsgate(&[
        "ca",
        "issue",
        "a.example",
        "--days",
        "826",
        "--dir",
        s(&dir),
        "--out",
        s(tmp.path()),
    ]);
    assert!(
        !long.status.success() && stderr(&long).contains("825"),
        "{}",
        text(&long)
    );
    assert!(!tmp.path().join("a.example.pem").exists());
}

#[test]
fn every_algorithm_inits_and_openssl_reads_its_key() {
    for (algorithm, shown, openssl_says) in [
        ("ecdsa-p256", "ECDSA P-256", "NIST CURVE: P-256"),
        ("rsa-2048", "RSA 2048", "Public-Key: (2048 bit)"),
        ("rsa-3072", "RSA 3072", "Public-Key: (3072 bit)"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        init(&dir, &["--algorithm", algorithm, "--days", "30"]);
        assert_eq!(mode(&dir.join("ca.key")), 0o600, "{algorithm}");
        let cert = ok(openssl(&[
            "x509",
            "-in",
            s(&dir.join("ca.pem")),
            "-noout",
            "-text",
        ]));
        assert!(cert.contains(openssl_says), "{algorithm}: {cert}");
        assert!(cert.contains("CA:TRUE, pathlen:0"), "{algorithm}: {cert}");
        // The key file is a valid PKCS#8 key that openssl can use.
        ok(openssl(&["pkey", "-in", s(&dir.join("ca.key")), "-noout"]));
        let show = ok(tlsgate(&["ca", "show", "--dir", s(&dir)]));
        assert!(
            show.contains(&format!("key algorithm: {shown}\n")),
            "{show}"
        );
    }
    let bad = tlsgate(&[
        "ca",
        "init",
        "--algorithm",
        "dsa-1024",
        "--dir",
        "/nonexistent",
    ]);
    assert!(
        !bad.status.success() && stderr(&bad).contains("ecdsa-p256"),
        "{}",
        text(&bad)
    );
}

#[test]
fn default_directory_follows_xdg_data_home() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tlsgate"))
            .args(args)
            .env("XDG_DATA_HOME", tmp.path())
            .output()
            .expect("run tlsgate")
    };
    ok(run(&["ca", "init"]));
    let dir = tmp.path().join("tlsgate/ca");
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    let show = ok(run(&["ca", "show"]));
    assert!(show.contains(s(&dir)), "{show}");
    assert!(
        show.contains("subject:       CN=tlsgate interception CA\n"),
        "{show}"
    );
}

#[test]
fn help_explains_each_command_with_examples() {
    let top = ok(tlsgate(&["--help"]));
    assert!(top.contains("ca "), "{top}");
    let ca = ok(tlsgate(&["ca", "--help"]));
    for needle in ["init", "issue", "show", "EXAMPLES:", "tlsgate ca init"] {
        assert!(ca.contains(needle), "{needle:?} in:\n{ca}");
    }
    let init = ok(tlsgate(&["ca", "init", "--help"]));
    for needle in [
        "ecdsa-p256",
        "rsa-2048",
        "rsa-3072",
        "tlsgate interception CA",
        "3650",
        "0600",
        "--dir",
    ] {
        assert!(init.contains(needle), "{needle:?} in:\n{init}");
    }
    let issue = ok(tlsgate(&["ca", "issue", "--help"]));
    for needle in ["--ip", "--out", "825", "<name>.key", "EXAMPLES:"] {
        assert!(issue.contains(needle), "{needle:?} in:\n{issue}");
    }
}
