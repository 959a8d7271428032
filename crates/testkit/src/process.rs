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
