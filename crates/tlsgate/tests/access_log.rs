//! The access log (`flows.access_log`) of a running `tlsgate run`: every flow as a Hubble-shaped
//! JSON line in a 0640 file; after `mv log log.1` and SIGUSR1 (to the child's PID only) new flows
//! land in a new `log` while the old ones stay in `log.1`; `-` writes the same lines to stdout.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tlsgate_testkit::{ChildGuard, TlsgateRun};

/// How long a record may take to reach the log, and SIGUSR1 to take effect.
const WAIT: Duration = Duration::from_secs(10);

fn tlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsgate"))
        .args(args)
        .output()
        .expect("run tlsgate")
}

/// A config for an intercepting proxy that denies everything (so plain-HTTP requests through it
/// get 403 and one flow record each), logging flows to `access_log`.
fn write_config(dir: &Path, access_log: &str) -> std::path::PathBuf {
    let ca_dir = dir.join("ca");
    let init = tlsgate(&["ca", "init", "--dir", ca_dir.to_str().unwrap()]);
    assert!(init.status.success(), "{init:?}");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: proxy\n    kind: intercept\n    listen: 127.0.0.1:0\n    ca: {{dir: {}}}\n    rules: [{{match: allowed.test, action: bump}}]\n    default_action: deny\nflows:\n  ring_size: 100\n  access_log: {access_log:?}\n",
            ca_dir.display()
        ),
    )
    .unwrap();
    config
}

/// `tlsgate run`, its stdout lines (after the announcement) on a channel, and the proxy's address.
fn start(config: &Path) -> (ChildGuard, mpsc::Receiver<String>, SocketAddr) {
    let run = TlsgateRun::quiet(Path::new(env!("CARGO_BIN_EXE_tlsgate")), config, 1);
    let proxy = run.addr("proxy");
    (run.child, run.lines, proxy)
}

fn curl_denied(proxy: SocketAddr, path: &str) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "-x", &format!("http://{proxy}")])
        .arg(format!("http://denied.test{path}"))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{out:?}");
}

/// Every line of `path` as JSON (none when it does not exist).
fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

fn urls(flows: &[Value]) -> Vec<String> {
    flows
        .iter()
        .filter_map(|f| f["flow"]["l7"]["http"]["url"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `path` holds the REQUEST and RESPONSE flows of `url`.
fn wait_for_exchange(path: &Path, url: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let flows = read_lines(path);
        if urls(&flows).iter().filter(|u| *u == url).count() == 2 {
            return flows;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not logged in {}: {flows:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_refused_exchange(flows: &[Value], url: &str) {
    let exchange: Vec<&Value> = flows
        .iter()
        .map(|f| &f["flow"])
        .filter(|f| f["l7"]["http"]["url"] == url)
        .collect();
    assert_eq!(exchange.len(), 2, "{flows:?}");
    assert_eq!(exchange[0]["l7"]["type"], "REQUEST");
    assert_eq!(exchange[1]["l7"]["type"], "RESPONSE");
    assert_eq!(exchange[1]["l7"]["http"]["code"], 403);
    for flow in exchange {
        assert_eq!(flow["verdict"], "DROPPED");
        assert_eq!(flow["Type"], "L7");
        assert_eq!(flow["l7"]["http"]["method"], "GET");
        assert_eq!(flow["destination_names"][0], "denied.test");
        assert_eq!(flow["tlsgate"]["listener"], "proxy");
    }
}

/// The process umask, read from /proc without changing it.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .expect("Umask in /proc/self/status")
}

#[test]
fn access_log_writes_json_lines_and_reopens_on_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flows.log");
    let rotated = dir.path().join("flows.log.1");
    let config = write_config(dir.path(), "flows.log");
    let (child, _stdout, proxy) = start(&config);

    curl_denied(proxy, "/before");
    let flows = wait_for_exchange(&log, "http://denied.test/before");
    assert_refused_exchange(&flows, "http://denied.test/before");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640 & !umask(), "created 0640 (less the umask)");

    // logrotate's `create` style: move the file away, then tell tlsgate (this child only).
    std::fs::rename(&log, &rotated).unwrap();
    let kill = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let deadline = Instant::now() + WAIT;
    while !log.exists() {
        assert!(Instant::now() < deadline, "SIGUSR1 did not reopen {log:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGUSR1 must not stop tlsgate"
    );

    curl_denied(proxy, "/after");
    let new = wait_for_exchange(&log, "http://denied.test/after");
    assert_refused_exchange(&new, "http://denied.test/after");
    assert_eq!(
        urls(&new),
        ["http://denied.test/after", "http://denied.test/after"],
        "the new file holds only what came after the reopen"
    );
    let old = read_lines(&rotated);
    assert_eq!(
        urls(&old),
        ["http://denied.test/before", "http://denied.test/before"],
        "the rotated file keeps the old lines and gets no new ones"
    );
}

#[test]
fn access_log_dash_writes_json_lines_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "-");
    let (_child, stdout, proxy) = start(&config);
    curl_denied(proxy, "/stdout");
    let mut flows = Vec::new();
    while flows.len() < 2 {
        let line = stdout
            .recv_timeout(WAIT)
            .expect("the access log line on stdout");
        flows
            .push(serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")));
    }
    assert_refused_exchange(&flows, "http://denied.test/stdout");
}

#[test]
fn check_reports_an_access_log_in_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "no/such/dir/flows.log");
    let out = tlsgate(&["check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("flows.access_log: directory") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// A log that is never drained (a FIFO nobody reads past the pipe buffer) must not slow traffic:
/// every request is still answered, and once the reader catches up the writer says how many
/// records it skipped.
#[test]
fn a_stuck_access_log_loses_records_instead_of_slowing_traffic() {
    /// More than the flow bus holds (4096), so the stuck writer must fall behind.
    const REQUESTS: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("flows.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let config = write_config(dir.path(), "flows.fifo");
    let (_child, _stdout, proxy) = start(&config);
    // Opening the read end completes the writer's open; nothing is read until the traffic ends.
    let reader = std::fs::File::open(&fifo).expect("open the FIFO for reading");

    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-o", "/dev/null"])
        .args(["-w", "%{http_code}\\n", "-x", &format!("http://{proxy}")])
        .arg(format!("http://denied.test/[1-{REQUESTS}]"))
        .output()
        .expect("curl runs");
    let elapsed = started.elapsed();
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes.lines().filter(|c| *c == "403").count(),
        REQUESTS,
        "{out:?}"
    );
    eprintln!("{REQUESTS} requests with a stuck access log: {elapsed:?}");

    // Now drain the FIFO: the writer resumes and reports what it skipped.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut lost = 0;
    let mut flows = 0;
    while lost == 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {{\"lost\":N}} line after {flows} flows"));
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        match value["lost"].as_u64() {
            Some(n) => lost = n,
            None => flows += 1,
        }
    }
    assert!(lost > 0 && flows > 0, "lost {lost}, flows {flows}");
    eprintln!("the writer wrote {flows} flow lines, then {{\"lost\":{lost}}}");
}

#[test]
fn sigusr1_without_an_access_log_leaves_the_gateway_serving() {
    let dir = tlsgate_testkit::temp_dir("tlsgate-usr1");
    let config = write_config(dir.path(), "unused.log");
    let text = std::fs::read_to_string(&config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.contains("access_log"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, without).unwrap();
    let (mut child, _lines, proxy) = start(&config);
    curl_denied(proxy, "/before");
    for _ in 0..3 {
        let kill = Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "SIGUSR1 without an access log must not end tlsgate"
    );
    curl_denied(proxy, "/after");
    assert!(!dir.path().join("unused.log").exists());
}
