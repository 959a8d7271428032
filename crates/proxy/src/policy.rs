//! The L7 policy as the runtime holds it: compiled, shared, and swapped atomically when its file
//! changes (polled). SIGHUP reloads the whole config, policies included (`reload`). A policy that
//! fails to load is rejected with its errors logged; the one in force stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tlsgate_policy::{LoadOptions, Notice, Policy, PolicyError};

/// How often the policy file is checked for changes (a change takes effect within this).
pub const POLICY_POLL: Duration = Duration::from_millis(250);

/// A policy file and the compiled policy currently in force.
pub struct PolicySlot {
    path: PathBuf,
    options: LoadOptions,
    current: RwLock<Arc<Policy>>,
    /// What the loader reported about the file as loaded at start (ignored Cilium fields, ...).
    notices: Vec<Notice>,
    /// (modified time, length) of the file the current policy was loaded from.
    stamp: RwLock<Option<(SystemTime, u64)>>,
}

impl std::fmt::Debug for PolicySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySlot")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PolicySlot {
    /// Loads `path` (tlsgate or Cilium format).
    pub fn load(
        path: PathBuf,
        options: LoadOptions,
    ) -> Result<(Self, Vec<Notice>), Vec<PolicyError>> {
        let stamp = stamp_of(&path);
        let (policy, notices) = tlsgate_policy::load_file_with(&path, &options)?;
        let slot = Self {
            path,
            options,
            current: RwLock::new(Arc::new(policy)),
            notices: notices.clone(),
            stamp: RwLock::new(stamp),
        };
        Ok((slot, notices))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The loader's notices for the file as first loaded (never silently dropped: `check` prints
    /// them and `run` logs them).
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// The policy in force now (requests take it per request; a swap affects the next one).
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(current) => current.clone(),
            // A writer panicked mid-swap: the value is still a whole Arc, use it.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the file and swaps the policy in if it compiles; otherwise keeps the current one.
    pub fn reload(&self) -> Result<Vec<Notice>, Vec<PolicyError>> {
        let stamp = stamp_of(&self.path);
        let (policy, notices) = tlsgate_policy::load_file_with(&self.path, &self.options)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(policy);
        }
        if let Ok(mut last) = self.stamp.write() {
            *last = stamp;
        }
        Ok(notices)
    }

    /// Whether the file changed since the policy in force was loaded.
    pub fn changed(&self) -> bool {
        let now = stamp_of(&self.path);
        self.stamp.read().map(|last| *last != now).unwrap_or(true)
    }

    /// Reloads and logs the outcome (the one place reload results are reported).
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(notices) => {
                tracing::info!(path = %self.path.display(), why, notices = notices.len(), "policy reloaded");
                for notice in notices {
                    tracing::info!(path = %self.path.display(), "policy notice: {notice}");
                }
            }
            Err(errors) => {
                tracing::warn!(
                    path = %self.path.display(), why, errors = errors.len(),
                    "policy rejected; the previous policy stays in force"
                );
                for error in errors {
                    tracing::warn!(path = %self.path.display(), "policy error: {error}");
                }
                // Do not retry the same broken file on every poll.
                if let Ok(mut last) = self.stamp.write() {
                    *last = stamp_of(&self.path);
                }
            }
        }
    }
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches `slots` until `stop`: reloads a policy when its file changes. (SIGHUP is a whole-config
/// reload, which builds new slots and restarts this watcher on them.)
pub async fn watch(slots: Vec<Arc<PolicySlot>>, stop: tokio_util::sync::CancellationToken) {
    if slots.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLICY_POLL) => {
                for slot in slots.iter().filter(|s| s.changed()) {
                    slot.reload_and_log("file changed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW_A: &str =
        "default: deny\nrules:\n  - match: a.example.test\n    ports: [443]\n    tls: bump\n";
    const ALLOW_B: &str =
        "default: deny\nrules:\n  - match: b.example.test\n    ports: [443]\n    tls: splice\n";

    fn allows(slot: &PolicySlot, host: &str) -> bool {
        slot.current()
            .decide_connection(host, 443)
            .deny_reason()
            .is_none()
    }

    #[test]
    fn an_invalid_new_policy_is_rejected_and_the_old_one_stays_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, ALLOW_A).unwrap();
        let (slot, _) = PolicySlot::load(path.clone(), LoadOptions::default()).unwrap();
        assert!(allows(&slot, "a.example.test"));
        std::fs::write(
            &path,
            "default: deny\nrules:\n  - match: a.*.bad\n    tls: bump\n    colour: blue\n",
        )
        .unwrap();
        let errors = slot.reload().expect_err("the broken file is rejected");
        assert!(!errors.is_empty());
        assert!(
            allows(&slot, "a.example.test"),
            "the old policy stays in force"
        );
        // A valid edit is then taken, and the change detector sees it.
        std::fs::write(&path, ALLOW_B).unwrap();
        slot.reload().unwrap();
        assert!(!allows(&slot, "a.example.test"));
        assert!(allows(&slot, "b.example.test"));
        assert!(!slot.changed(), "the loaded file is the current one");
    }
}
