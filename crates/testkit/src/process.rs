//! Child processes that cannot outlive the test that started them.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often a stopping child is polled.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Owns one child process; on Drop it signals that child's own PID (never a name or a group)
/// and reaps it.
///
/// By default the child gets SIGKILL. With [`ChildGuard::with_term_grace`] it first gets
/// SIGTERM and that long to exit (so, say, nginx can stop its workers) before SIGKILL.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    label: String,
    term_grace: Option<Duration>,
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` and guards the child.
    pub fn spawn(cmd: &mut Command) -> io::Result<ChildGuard> {
        let label = format!("{cmd:?}");
        let child = cmd.spawn()?;
        Ok(ChildGuard {
            child,
            label,
            term_grace: None,
            reaped: None,
        })
    }

    /// Guards an already spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            label: format!("pid {}", child.id()),
            child,
            term_grace: None,
            reaped: None,
        }
    }

    /// Stop with SIGTERM first and allow `grace` before SIGKILL.
    pub fn with_term_grace(mut self, grace: Duration) -> ChildGuard {
        self.term_grace = Some(grace);
        self
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Mutable access to the child (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has exited (reaping it), without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.reaped {
            return Ok(Some(status));
        }
        let status = self.child.try_wait()?;
        self.reaped = status;
        Ok(status)
    }

    /// Stops the child (SIGTERM with grace if configured, then SIGKILL) and reaps it.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.try_wait() {
            return Some(status);
        }
        if let Some(grace) = self.term_grace {
            // The child is not reaped yet, so its PID cannot have been reused.
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = self.try_wait() {
                    return Some(status);
                }
                std::thread::sleep(STOP_POLL);
            }
            tracing::warn!(label = %self.label, "child ignored SIGTERM; sending SIGKILL");
        }
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.reaped = status;
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a `tlsgate run` child may take to print its listeners.
const LISTENERS_WAIT: Duration = Duration::from_secs(20);

/// The `/metrics` text of the admin API at `admin`, fetched with curl (10 s at most; empty if it
/// fails).
pub fn metrics_text(admin: std::net::SocketAddr) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://{admin}/metrics"))
        .output();
    out.map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// A `tlsgate run` child and the addresses its listeners announced (`listening: NAME ADDR` on
/// stdout). A thread drains stdout for the child's whole life, so a late line never meets a closed
/// pipe; the lines after the announcements (an access log on `-`, say) arrive on `lines`.
#[derive(Debug)]
pub struct TlsgateRun {
    pub child: ChildGuard,
    pub addrs: std::collections::BTreeMap<String, std::net::SocketAddr>,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl TlsgateRun {
    /// `BIN run --config CONFIG --log-level LEVEL`, stderr to `stderr`; waits for `listeners`
    /// announcements (other lines before them are skipped). Errors say what was missing.
    pub fn start(
        bin: &std::path::Path,
        config: &std::path::Path,
        log_level: &str,
        stderr: std::process::Stdio,
        listeners: usize,
    ) -> Result<Self, String> {
        Self::start_with_env(bin, config, log_level, stderr, listeners, &[])
    }

    /// [`TlsgateRun::start`] with `env` added to the child's environment.
    pub fn start_with_env(
        bin: &std::path::Path,
        config: &std::path::Path,
        log_level: &str,
        stderr: std::process::Stdio,
        listeners: usize,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        use std::io::BufRead;
        let mut child = ChildGuard::spawn(
            Command::new(bin)
                .args(["run", "--config"])
                .arg(config)
                .args(["--log-level", log_level])
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::piped())
                .stderr(stderr),
        )
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let stdout = child.child_mut().stdout.take().ok_or("no piped stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keep draining after the receiver is gone.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + LISTENERS_WAIT;
        let mut addrs = std::collections::BTreeMap::new();
        while addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).map_err(|_| {
                format!(
                    "{} announced {} of {listeners} listeners ({addrs:?})",
                    config.display(),
                    addrs.len()
                )
            })?;
            let announced = line
                .strip_prefix("listening: ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(name, addr)| Some((name, addr.trim().parse().ok()?)));
            // Anything else printed before the announcements is not for the caller.
            if let Some((name, addr)) = announced {
                addrs.insert(name.to_owned(), addr);
            }
        }
        Ok(Self {
            child,
            addrs,
            lines,
        })
    }

    /// [`TlsgateRun::start`] at log level `warn` with stderr discarded; panics (a test's setup
    /// error) when the listeners do not come up.
    pub fn quiet(bin: &std::path::Path, config: &std::path::Path, listeners: usize) -> Self {
        Self::start(bin, config, "warn", std::process::Stdio::null(), listeners)
            .unwrap_or_else(|e| panic!("tlsgate run: {e}"))
    }

    /// The address `name` announced (panics if it did not: a test's setup error).
    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        self.addrs[name]
    }
}

/// The names of process `pid`'s threads, as `/proc/PID/task/*/comm` shows them (empty when the
/// process is gone).
pub fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|comm| comm.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What process `pid`'s open file descriptors point to (`/proc/PID/fd/*`): a path, `socket:[INODE]`,
/// `pipe:[…]`, `anon_inode:[…]`. An fd closed while it is read is left out.
pub fn fd_targets(pid: u32) -> std::io::Result<Vec<std::path::PathBuf>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .collect())
}

/// The inode of an fd target that is a socket (`socket:[INODE]`).
pub fn socket_inode(target: &std::path::Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Process `pid`'s resident set (`VmRSS` of `/proc/PID/status`), in KiB; `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One socket of the network namespace process `pid` is in, as `/proc/PID/net/{tcp,tcp6,udp,udp6,
/// unix}` lists it.
#[derive(Debug, Clone)]
pub struct NetSocket {
    pub proto: &'static str,
    pub inode: u64,
    /// `ADDR:PORT` in the kernel's hex (see [`NetSocket::remote_v4`]); a unix socket's path.
    pub local: String,
    pub remote: String,
    /// The state's name as TCP calls it (else the kernel's hex code); empty for unix sockets.
    pub state: String,
}

impl NetSocket {
    /// The remote end of an IPv4 socket: the kernel prints the address's bytes, in network
    /// order, as a native-endian u32, and the port in hex.
    pub fn remote_v4(&self) -> Option<std::net::SocketAddrV4> {
        let (addr, port) = self.remote.split_once(':')?;
        let addr = u32::from_str_radix(addr, 16).ok()?.to_ne_bytes();
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(std::net::SocketAddrV4::new(addr.into(), port))
    }

    /// One line for a report: `tcp LOCAL -> REMOTE STATE`, or `unix PATH`.
    pub fn describe(&self) -> String {
        if self.proto == "unix" {
            format!("unix {}", self.local)
        } else {
            format!(
                "{} {} -> {} {}",
                self.proto, self.local, self.remote, self.state
            )
        }
    }
}

/// The sockets of the network namespace process `pid` is in (empty tables when it is gone).
pub fn net_sockets(pid: u32) -> Vec<NetSocket> {
    let mut sockets = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6", "unix"] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let socket = if proto == "unix" {
                let Some(inode) = cols.get(6).and_then(|i| i.parse().ok()) else {
                    continue;
                };
                NetSocket {
                    proto,
                    inode,
                    local: cols.get(7).unwrap_or(&"").to_string(),
                    remote: String::new(),
                    state: String::new(),
                }
            } else {
                let Some(inode) = cols.get(9).and_then(|i| i.parse().ok()) else {
                    continue;
                };
                let state = match cols.get(3).copied() {
                    Some("01") => "ESTABLISHED",
                    Some("06") => "TIME_WAIT",
                    Some("07") => "CLOSE",
                    Some("08") => "CLOSE_WAIT",
                    Some("0A") => "LISTEN",
                    Some(other) => other,
                    None => "?",
                };
                NetSocket {
                    proto,
                    inode,
                    local: cols.get(1).unwrap_or(&"?").to_string(),
                    remote: cols.get(2).unwrap_or(&"?").to_string(),
                    state: state.to_owned(),
                }
            };
            sockets.push(socket);
        }
    }
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_sockets_lists_a_connected_socket_with_its_peer_and_fd() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer = match listener.local_addr().expect("addr") {
            std::net::SocketAddr::V4(v4) => v4,
            other => panic!("not IPv4: {other}"),
        };
        let stream = std::net::TcpStream::connect(peer).expect("connect");
        let pid = std::process::id();
        let ours: Vec<u64> = fd_targets(pid)
            .expect("our fds")
            .iter()
            .filter_map(|t| socket_inode(t))
            .collect();
        // The table is the network namespace's: earlier connections to the port the kernel has now
        // handed this listener may linger in TIME_WAIT, owned by no process (inode 0).
        let found: Vec<NetSocket> = net_sockets(pid)
            .into_iter()
            .filter(|s| s.proto == "tcp" && s.remote_v4() == Some(peer) && s.inode != 0)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            ours.contains(&found[0].inode),
            "{found:?} not among {ours:?}"
        );
        assert_eq!(found[0].state, "ESTABLISHED");
        assert!(
            found[0].describe().starts_with("tcp "),
            "{:?}",
            found[0].describe()
        );
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        drop(stream);
    }
}
