//! Network namespaces, veth links and the root gate for end-to-end tests.
//!
//! Everything created here is removed on Drop, also when a test panics: the processes
//! still inside the namespace (all of them started by the test), the namespace with its
//! interfaces, and `/etc/netns/NAME`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::ChildGuard;

/// Environment variable that explicitly skips end-to-end tests. CI never sets it.
pub const SKIP_E2E_ENV: &str = "TLSGATE_SKIP_E2E";

/// Message for a machine where end-to-end tests cannot run.
pub const NEED_ROOT_MESSAGE: &str = "e2e tests need root and network namespaces; \
     run as root or set TLSGATE_SKIP_E2E=1 to skip explicitly";

/// How long [`NetNs::wait_listening`] waits for sockets to appear.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
const LISTEN_POLL: Duration = Duration::from_millis(100);

/// Whether an end-to-end test should run: `Ok(true)` as root, `Ok(false)` when skipped
/// explicitly with `TLSGATE_SKIP_E2E=1` (printed loudly), `Err` otherwise. Tests turn the
/// `Err` into a failure: end-to-end tests never skip silently.
pub fn e2e_preflight() -> Result<bool, String> {
    if std::env::var(SKIP_E2E_ENV).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: {SKIP_E2E_ENV}=1 is set; end-to-end test not run");
        return Ok(false);
    }
    if !is_root() {
        return Err(NEED_ROOT_MESSAGE.to_owned());
    }
    let probe = Command::new("ip").args(["netns", "list"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(true),
        Ok(out) => Err(format!(
            "{NEED_ROOT_MESSAGE} (`ip netns list` failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "{NEED_ROOT_MESSAGE} (`ip` not runnable: {e}; install iproute2)"
        )),
    }
}

/// Whether the effective user is root (read from `/proc/self/status`).
pub fn is_root() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// A prefix unique to this process and call, e.g. `tg4242a`: namespaces and interfaces named
/// with it do not clash with parallel runs or leftovers of killed runs. At most 10 chars, so
/// `<prefix><5 chars>` still fits an interface name (15).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let letter = char::from(b'a' + (n % 26) as u8);
    format!("tg{}{letter}", std::process::id() % 10_000_000)
}

/// Runs a command; on a non-zero exit returns its stderr as the error.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// A network namespace owned by the test.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace, brings `lo` up and turns IPv6 off in it (so nothing can leak
    /// over IPv6 link-local or router discovery).
    pub fn new(name: &str) -> Result<NetNs, String> {
        ip(&["netns", "add", name])?;
        // From here on, Drop cleans up.
        let ns = NetNs {
            name: name.to_owned(),
        };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        // A kernel without IPv6 has nothing to turn off (and no such sysctls).
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME args...` as a Command, for callers that set up stdio themselves.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace and returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        self.command(args).stdin(Stdio::null()).output()
    }

    /// Runs `args` inside the namespace; a non-zero exit is an error carrying stderr.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        run(&mut self.command(args))
    }

    /// Starts `args` inside the namespace with stdio discarded, guarded.
    pub fn spawn(&self, args: &[&str]) -> io::Result<ChildGuard> {
        ChildGuard::spawn(
            self.command(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Writes `/etc/netns/NAME/hosts`, which `ip netns exec` mounts over `/etc/hosts`.
    pub fn set_hosts(&self, entries: &[(&str, &str)]) -> io::Result<()> {
        let dir = self.etc_dir();
        fs::create_dir_all(&dir)?;
        let mut text = String::from("127.0.0.1 localhost\n");
        for (addr, name) in entries {
            text.push_str(&format!("{addr} {name}\n"));
        }
        fs::write(dir.join("hosts"), text)
    }

    /// PIDs of all processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        ip(&["netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Waits (at most [`LISTEN_TIMEOUT`]) until every `addr:port` in `sockets` is listening in this
    /// namespace, failing early with the log if `child` exits first.
    pub fn wait_listening(&self, sockets: &[String], child: &mut ChildGuard, log: &Path) {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let listening = self
                .run(&["ss", "-H", "-l", "-t", "-n"])
                .unwrap_or_default();
            let missing: Vec<&String> = sockets
                .iter()
                .filter(|s| !listening.split_whitespace().any(|col| col == s.as_str()))
                .collect();
            if missing.is_empty() {
                return;
            }
            let log_text = || fs::read_to_string(log).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "process in {} exited ({status}) before listening on {missing:?}; its log:\n{}",
                    self.name(),
                    log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{missing:?} not listening in {} after {LISTEN_TIMEOUT:?}; log:\n{}",
                self.name(),
                log_text()
            );
            std::thread::sleep(LISTEN_POLL);
        }
    }

    /// Validates `config` with `<bin> check --config`, then starts `<bin> run --config` in this
    /// namespace with stdout and stderr in `log` and `env` set. The guard sends SIGTERM and waits
    /// `grace` before SIGKILL.
    pub fn start_checked(
        &self,
        bin: &str,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
        grace: Duration,
    ) -> ChildGuard {
        let config_arg = config.display().to_string();
        let check = self
            .exec(&[bin, "check", "--config", &config_arg])
            .expect("running check");
        assert!(
            check.status.success(),
            "check rejected {}:\n{}\nstdout: {}\nstderr: {}",
            config.display(),
            fs::read_to_string(config).unwrap_or_default(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let out = fs::File::create(log).expect("log file");
        let mut cmd = self.command(&[bin, "run", "--config", &config_arg]);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out);
        ChildGuard::spawn(&mut cmd)
            .expect("starting the process")
            .with_term_grace(grace)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Only the test's own processes live in its namespace.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        let dir = self.etc_dir();
        if dir.exists()
            && let Err(e) = fs::remove_dir_all(&dir)
        {
            eprintln!("cleanup: removing {}: {e}", dir.display());
        }
    }
}

/// A veth pair between two namespaces, both ends addressed (`addr` with prefix, e.g.
/// `192.0.2.1/30`) and up. The pair goes away with either namespace.
pub fn veth(
    ns_a: &NetNs,
    if_a: &str,
    addr_a: &str,
    ns_b: &NetNs,
    if_b: &str,
    addr_b: &str,
) -> Result<(), String> {
    for name in [if_a, if_b] {
        if name.len() > 15 {
            return Err(format!("interface name {name:?} is longer than 15 bytes"));
        }
    }
    ip(&[
        "link", "add", if_a, "netns", &ns_a.name, "type", "veth", "peer", "name", if_b, "netns",
        &ns_b.name,
    ])?;
    for (ns, ifname, addr) in [(ns_a, if_a, addr_a), (ns_b, if_b, addr_b)] {
        ns.run(&["ip", "addr", "add", addr, "dev", ifname])?;
        ns.run(&["ip", "link", "set", ifname, "up"])?;
    }
    Ok(())
}
