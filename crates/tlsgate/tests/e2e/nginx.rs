//! nginx (Debian's package) as the provider's origin, in the `origin` namespace.
//!
//! `private.service.example.com` on :80 and :443, `other.service.example.com` on :443, each
//! answering `/` with a body that names the server block and the Host it saw; `/big` on
//! the private HTTPS server is a static file for the download test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tlsgate_testkit::{ChildGuard, Leaf, NetNs};

use crate::topology::ORIGIN_IP;

pub const PRIVATE_NAME: &str = "private.service.example.com";
pub const OTHER_NAME: &str = "other.service.example.com";

/// How long nginx gets to stop after SIGTERM before SIGKILL.
const NGINX_STOP_GRACE: Duration = Duration::from_secs(3);

/// Writes the config under `dir` and starts nginx in `ns` (one process: master_process off,
/// daemon off), killed by PID on Drop of the returned guard.
pub fn start(ns: &NetNs, dir: &Path, private: &Leaf, other: &Leaf, big_file: &Path) -> ChildGuard {
    let (private_cert, private_key) = private.write_pem(dir, "private");
    let (other_cert, other_key) = other.write_pem(dir, "other");
    for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(sub)).expect("nginx temp dirs");
    }
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    ssl_protocols TLSv1.2 TLSv1.3;
    sendfile on;

    server {{
        listen {ORIGIN_IP}:80 default_server;
        server_name {PRIVATE_NAME};
        location / {{ return 200 "private-http host=$host uri=$request_uri\n"; }}
    }}
    server {{
        listen {ORIGIN_IP}:443 ssl http2 default_server;
        server_name {PRIVATE_NAME};
        ssl_certificate {pc};
        ssl_certificate_key {pk};
        location = /big {{ alias {big}; default_type application/octet-stream; }}
        location / {{ return 200 "private-https host=$host\n"; }}
    }}
    server {{
        listen {ORIGIN_IP}:443 ssl http2;
        server_name {OTHER_NAME};
        ssl_certificate {oc};
        ssl_certificate_key {ok};
        location / {{ return 200 "other-https host=$host\n"; }}
    }}
}}
"#,
        pc = private_cert.display(),
        pk = private_key.display(),
        oc = other_cert.display(),
        ok = other_key.display(),
        big = big_file.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("writing nginx.conf");
    let test = ns
        .exec(&[
            "nginx",
            "-t",
            "-q",
            "-p",
            &d.to_string(),
            "-c",
            &conf_path.display().to_string(),
            "-e",
            &format!("{d}/error.log"),
        ])
        .expect("running nginx -t");
    assert!(
        test.status.success(),
        "nginx -t rejected the config: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let log = File::create(dir.join("nginx.out")).expect("nginx output file");
    let mut cmd = ns.command(&[
        "nginx",
        "-p",
        &d.to_string(),
        "-c",
        &conf_path.display().to_string(),
        "-e",
        &format!("{d}/error.log"),
    ]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
    ChildGuard::spawn(&mut cmd)
        .expect("starting nginx")
        .with_term_grace(NGINX_STOP_GRACE)
}

/// Where nginx writes its error log.
pub fn error_log(dir: &Path) -> PathBuf {
    dir.join("error.log")
}
