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
