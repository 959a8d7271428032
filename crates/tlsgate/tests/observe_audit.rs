//! Audit mode end to end with the built binary: `tlsgate run` with an interception listener in
//! `policy_audit` mode forwards a request its rules would refuse, and `tlsgate observe --verdict
//! AUDIT` (any case) prints exactly that exchange, with the would-be reason.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tlsgate_testkit::TlsgateRun;

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

/// A plain HTTP origin on loopback answering one request with 200 and a body naming it.
fn spawn_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let body = "origin says hi\n";
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    addr
}

/// `tlsgate run` bumping `allowed.test`, denying everything else, in audit mode, with the admin
/// API: (guard, proxy address, admin address).
fn start(dir: &Path) -> (TlsgateRun, SocketAddr, SocketAddr) {
    let ca_dir = dir.join("ca");
    let init = tlsgate(&["ca", "init", "--dir", ca_dir.to_str().unwrap()]);
    assert!(init.status.success(), "{init:?}");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: proxy\n    kind: intercept\n    listen: 127.0.0.1:0\n    ca: {{dir: {}}}\n    rules: [{{match: allowed.test, action: bump}}]\n    default_action: deny\n    policy_audit: true\nallow_destinations: [127.0.0.0/8]\nadmin:\n  listen: 127.0.0.1:0\n",
            ca_dir.display()
        ),
    )
    .unwrap();
    let run = TlsgateRun::quiet(Path::new(env!("CARGO_BIN_EXE_tlsgate")), &config, 2);
    let (proxy, admin) = (run.addr("proxy"), run.addr("admin"));
    (run, proxy, admin)
}

fn observe(admin: SocketAddr, extra: &[&str]) -> String {
    let server = admin.to_string();
    let mut args = vec!["observe", "--server", &server];
    args.extend_from_slice(extra);
    let out = tlsgate(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn observe_shows_a_request_audit_mode_let_through() {
    let dir = tempfile::tempdir().unwrap();
    let origin = spawn_origin();
    let (_run, proxy, admin) = start(dir.path());
    let url = format!("http://{origin}/would-be-refused");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(["-x", &format!("http://{proxy}")])
        .arg(&url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text, "origin says hi\n\n200",
        "the origin answered: {out:?}"
    );

    let json = observe(admin, &["--verdict", "AUDIT", "-o", "json", "--last", "10"]);
    let flows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["flow"].clone())
        .collect();
    assert_eq!(flows.len(), 2, "REQUEST and RESPONSE: {json}");
    for f in &flows {
        assert_eq!(f["verdict"], "AUDIT");
        assert_eq!(f["drop_reason_desc"], "DENIED");
        assert_eq!(f["tlsgate"]["reason"], "denied");
        assert_eq!(f["l7"]["http"]["url"], url.as_str());
    }
    assert_eq!(flows[1]["l7"]["http"]["code"], 200);

    let compact = observe(admin, &["--verdict", "audit"]);
    let lines: Vec<&str> = compact.lines().collect();
    assert_eq!(lines.len(), 2, "{compact}");
    assert!(
        lines.iter().all(|l| l.contains("verdict Audit (denied)")),
        "{compact}"
    );
    assert!(lines[1].ends_with("=> 200"), "{compact}");
    assert_eq!(observe(admin, &["--verdict", "FORWARDED"]), "");
}
