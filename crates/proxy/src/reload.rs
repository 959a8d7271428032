//! Hot reload: a new [`Config`] (re-read from the config file by the binary's [`ConfigSource`], on
//! SIGHUP or an admin `POST /reload`) becomes a new *generation* of per-listener state (routes, TLS
//! server and client configs, relay clients, interception CA and minting store, policy) that is
//! swapped in atomically per listener. A connection keeps the generation it was accepted with until
//! it ends; connections accepted after the swap use the new one.
//!
//! A reload is all or nothing: a config that does not validate, or that changes something a reload
//! cannot change ([`Fixed`]), is rejected with every error, and the generation in force stays.
//! What needs a restart: the set of listeners (names, order, `listen` addresses, kinds), the admin
//! section, `flows.ring_size`, `flows.access_log` and `limits.max_connections`. Everything else
//! applies to new connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerKind, RelayUpstream};
use crate::context::Shared;
use crate::flow::Flows;
use crate::gateway::ListenerTask;
use crate::intercept::InterceptState;
use crate::policy::PolicySlot;
use crate::transport::RelayClient;
use crate::upstream::{DestinationGuard, Resolver};

/// Re-reads and validates the configuration (the binary reads its config file); every problem is
/// one line with its key path. Called on a blocking thread.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

/// Interception listeners by name, as the admin API shows them (`/certs`, certificate metrics).
pub type InterceptList = Vec<(String, Arc<InterceptState>)>;

/// Why a reload did not happen: every problem found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRejected {
    pub errors: Vec<String>,
}

/// What every generation shares with the gateway: the flow bus, the shutdown tokens, the tracker.
#[derive(Clone)]
pub(crate) struct Base {
    pub flows: Flows,
    pub shutdown: CancellationToken,
    pub force: CancellationToken,
    pub tracker: TaskTracker,
}

/// One generation of per-listener state, built from one config.
pub(crate) struct Generation {
    /// In listener order.
    pub tasks: Vec<Arc<ListenerTask>>,
    pub intercepts: InterceptList,
    pub policies: Vec<Arc<PolicySlot>>,
    pub grace: Duration,
}

/// What a reload cannot change, taken from the config the gateway was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fixed {
    /// `(name, configured listen address, kind)` per listener.
    listeners: Vec<(String, std::net::SocketAddr, &'static str)>,
    admin: Option<(std::net::SocketAddr, Option<Arc<str>>)>,
    ring_size: usize,
    /// The access-log task keeps its target; SIGUSR1 reopens the same path.
    access_log: Option<crate::config::AccessLogTarget>,
    max_connections: usize,
}

impl Fixed {
    pub fn of(config: &Config) -> Self {
        Self {
            listeners: config
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.listen, crate::gateway::kind_name(&l.kind)))
                .collect(),
            admin: config
                .visibility
                .admin
                .as_ref()
                .map(|a| (a.listen, a.bearer_token.clone())),
            ring_size: config.visibility.flows.ring_size,
            access_log: config.visibility.access_log.clone(),
            max_connections: config.limits.max_connections,
        }
    }

    /// Every difference between `self` (in force) and `new`, as errors with key paths.
    fn changes(&self, new: &Self) -> Vec<String> {
        const RESTART: &str = "cannot change on reload; restart tlsgate";
        let mut errors = Vec::new();
        if self.listeners.len() != new.listeners.len() {
            errors.push(format!(
                "listeners: {} listeners in force, {} in the new config: adding or removing listeners {RESTART}",
                self.listeners.len(),
                new.listeners.len()
            ));
        }
        for (i, (old, new)) in self.listeners.iter().zip(&new.listeners).enumerate() {
            if old.0 != new.0 {
                errors.push(format!(
                    "listeners[{i}].name: {:?} in force, {:?} new: {RESTART}",
                    old.0, new.0
                ));
            }
            if old.1 != new.1 {
                errors.push(format!(
                    "listeners[{i}].listen: {} in force, {} new: {RESTART}",
                    old.1, new.1
                ));
            }
            if old.2 != new.2 {
                errors.push(format!(
                    "listeners[{i}].kind: {} in force, {} new: {RESTART}",
                    old.2, new.2
                ));
            }
        }
        if self.admin != new.admin {
            errors.push(format!("admin: {RESTART}"));
        }
        if self.ring_size != new.ring_size {
            errors.push(format!("flows.ring_size: {RESTART}"));
        }
        if self.access_log != new.access_log {
            errors.push(format!("flows.access_log: {RESTART}"));
        }
        if self.max_connections != new.max_connections {
            errors.push(format!("limits.max_connections: {RESTART}"));
        }
        errors
    }
}

/// Builds a generation from `config`; `prebuilt` holds interception states already made (by
/// listener index) at bind time.
pub(crate) fn build_generation(
    config: &Config,
    mut prebuilt: HashMap<usize, Arc<InterceptState>>,
    base: &Base,
) -> Result<Generation, Vec<String>> {
    let shared = Arc::new(Shared {
        timeouts: config.timeouts,
        limits: config.limits,
        guard: DestinationGuard::new(config.allow_destinations.clone()),
        resolver: Resolver::new(config.dns_server),
        // Redaction is the generation's: a reload changes it for connections accepted after it.
        flows: (base.flows.clone()).with_redaction((&config.visibility.flows).into()),
        shutdown: base.shutdown.clone(),
        force: base.force.clone(),
        tracker: base.tracker.clone(),
        upstream_pool: Default::default(),
    });
    // The relay clients of this generation stop opening connections once no listener task of it is
    // left (every connection holds its task): pooled h2 connections then close when their last
    // stream ends. Shutdown stops them too.
    let retire = base.shutdown.child_token();
    let retire_guard = Arc::new(retire.clone().drop_guard());
    // Keyed by the upstream's address: listeners naming the same relay share one client (and pool).
    let mut relays: HashMap<usize, Arc<RelayClient>> = HashMap::new();
    let mut errors = Vec::new();
    let mut tasks = Vec::with_capacity(config.listeners.len());
    let mut intercepts = Vec::new();
    let mut policies = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let relay = relay_of(&listener.kind).map(|upstream| {
            relays
                .entry(Arc::as_ptr(upstream) as usize)
                .or_insert_with(|| {
                    Arc::new(RelayClient::new(
                        upstream.clone(),
                        shared.resolver.clone(),
                        shared.timeouts,
                        retire.clone(),
                        shared.flows.metrics().clone(),
                    ))
                })
                .clone()
        });
        let intercept = match &listener.kind {
            ListenerKind::Intercept(config) => match prebuilt.remove(&index) {
                Some(state) => Some(state),
                None => match InterceptState::new(config.clone()) {
                    Ok(state) => Some(Arc::new(state)),
                    Err(e) => {
                        errors.push(format!(
                            "listeners[{index}] ({}): preparing interception: {e}",
                            listener.name
                        ));
                        None
                    }
                },
            },
            _ => None,
        };
        if let Some(state) = &intercept {
            intercepts.push((listener.name.clone(), state.clone()));
            policies.extend(state.config.policy.clone());
        }
        tasks.push(Arc::new(ListenerTask {
            name: listener.name.as_str().into(),
            listener: listener.clone(),
            relay,
            intercept,
            shared: shared.clone(),
            _retire: retire_guard.clone(),
        }));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Generation {
        tasks,
        intercepts,
        policies,
        grace: config.timeouts.shutdown_grace,
    })
}

fn relay_of(kind: &ListenerKind) -> Option<&Arc<RelayUpstream>> {
    match kind {
        ListenerKind::TlsPassthrough(edge) => Some(&edge.relay),
        ListenerKind::Http(edge) => Some(&edge.relay),
        ListenerKind::Relay(_) | ListenerKind::Intercept(_) => None,
    }
}

/// The running gateway's state a reload replaces.
pub(crate) struct Running {
    pub fixed: Fixed,
    pub base: Base,
    /// One per listener, in order: its accept loop takes the task in force for each connection.
    pub listeners: Vec<watch::Sender<Arc<ListenerTask>>>,
    /// Stops the policy-file watcher of the generation in force.
    pub policy_watch: CancellationToken,
    pub grace: Duration,
}

impl Running {
    /// Starts watching `policies` (file changes) until the next swap or shutdown.
    fn watch_policies(&mut self, policies: Vec<Arc<PolicySlot>>) {
        self.policy_watch.cancel();
        self.policy_watch = self.base.shutdown.child_token();
        tokio::spawn(crate::policy::watch(policies, self.policy_watch.clone()));
    }
}

/// The handle that reloads a running gateway: from SIGHUP (the binary), the admin API, or a test.
pub struct Reloader {
    source: Mutex<Option<ConfigSource>>,
    /// `None` until the gateway runs; the async lock also serializes reloads.
    running: tokio::sync::Mutex<Option<Running>>,
    intercepts: RwLock<InterceptList>,
    flows: Flows,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(flows: Flows) -> Self {
        Self {
            source: Mutex::new(None),
            running: tokio::sync::Mutex::new(None),
            intercepts: RwLock::new(Vec::new()),
            flows,
        }
    }

    /// Where [`Reloader::reload`] reads the new config from (the binary: its config file).
    pub fn set_source(&self, source: ConfigSource) {
        *self.source.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// The interception listeners in force.
    pub fn intercepts(&self) -> InterceptList {
        self.intercepts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Installs the first generation (called once by `Gateway::run`).
    pub(crate) async fn start(&self, mut running: Running, generation: Generation) {
        self.swap(&mut running, generation);
        *self.running.lock().await = Some(running);
    }

    /// The shutdown grace period of the config in force.
    pub(crate) async fn grace(&self) -> Option<Duration> {
        self.running.lock().await.as_ref().map(|r| r.grace)
    }

    /// Re-reads the config from the source and applies it; `why` (`SIGHUP`, `admin`) is logged.
    pub async fn reload(&self, why: &str) -> Result<(), ReloadRejected> {
        let source = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let loaded = match source {
            // Reading files and loading the CA block; keep them off the runtime's workers.
            Some(source) => tokio::task::spawn_blocking(move || source())
                .await
                .unwrap_or_else(|e| Err(vec![format!("loading the config failed: {e}")])),
            None => Err(vec![
                "this gateway has no config source to reload from".to_owned(),
            ]),
        };
        let result = match loaded {
            Ok(config) => self.apply_inner(config).await,
            Err(errors) => Err(ReloadRejected { errors }),
        };
        self.report(why, &result);
        result
    }

    /// Applies `config` as a reload would (for embedders and tests that build configs in process).
    pub async fn apply(&self, config: Config, why: &str) -> Result<(), ReloadRejected> {
        let result = self.apply_inner(config).await;
        self.report(why, &result);
        result
    }

    async fn apply_inner(&self, config: Config) -> Result<(), ReloadRejected> {
        let mut guard = self.running.lock().await;
        let Some(running) = guard.as_mut() else {
            return Err(ReloadRejected {
                errors: vec!["the gateway is not running".to_owned()],
            });
        };
        let errors = running.fixed.changes(&Fixed::of(&config));
        if !errors.is_empty() {
            return Err(ReloadRejected { errors });
        }
        let generation = build_generation(&config, self.reused_intercepts(&config), &running.base)
            .map_err(|errors| ReloadRejected { errors })?;
        self.swap(running, generation);
        Ok(())
    }

    /// Interception states for `config`'s intercept listeners that keep the minting store of the
    /// same-named listener in force (see [`InterceptState::reusing`]); a listener whose state
    /// cannot be built here is left to `build_generation`, which reports the error.
    fn reused_intercepts(&self, config: &Config) -> HashMap<usize, Arc<InterceptState>> {
        let current = self.intercepts();
        let mut reused = HashMap::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            let ListenerKind::Intercept(intercept) = &listener.kind else {
                continue;
            };
            let Some((_, old)) = current.iter().find(|(name, _)| *name == listener.name) else {
                continue;
            };
            if let Ok(state) = InterceptState::reusing(intercept.clone(), Some(old)) {
                reused.insert(index, Arc::new(state));
            }
        }
        reused
    }

    /// Puts `generation` in force: each listener's next connection takes it.
    fn swap(&self, running: &mut Running, generation: Generation) {
        for (tx, task) in running.listeners.iter().zip(generation.tasks) {
            tx.send_replace(task);
        }
        running.grace = generation.grace;
        running.watch_policies(generation.policies);
        *self
            .intercepts
            .write()
            .unwrap_or_else(PoisonError::into_inner) = generation.intercepts;
    }

    /// The one place a reload's outcome is logged and counted.
    fn report(&self, why: &str, result: &Result<(), ReloadRejected>) {
        self.flows.metrics().count_reload(result.is_ok());
        match result {
            Ok(()) => tracing::info!(why, "config reloaded; new connections use it"),
            Err(rejected) => {
                tracing::warn!(
                    why,
                    errors = rejected.errors.len(),
                    "config reload rejected; the config in force stays"
                );
                for error in &rejected.errors {
                    tracing::warn!(why, "config reload error: {error}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(names: &[(&str, &str)]) -> Fixed {
        Fixed {
            listeners: names
                .iter()
                .map(|(n, a)| ((*n).to_owned(), a.parse().unwrap(), "relay"))
                .collect(),
            admin: None,
            ring_size: 10,
            access_log: None,
            max_connections: 10,
        }
    }

    #[test]
    fn reports_every_change_that_needs_a_restart_with_its_key_path() {
        let old = fixed(&[("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")]);
        let mut new = fixed(&[("a", "127.0.0.1:1"), ("c", "127.0.0.1:3")]);
        new.ring_size = 11;
        let errors = old.changes(&new);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("listeners[1].name:"), "{errors:?}");
        assert!(errors[1].starts_with("listeners[1].listen:"), "{errors:?}");
        assert!(errors[2].starts_with("flows.ring_size:"), "{errors:?}");
        assert!(old.changes(&old.clone()).is_empty());
        let mut logged = old.clone();
        logged.access_log = Some(crate::config::AccessLogTarget::Stdout);
        assert_eq!(
            old.changes(&logged),
            ["flows.access_log: cannot change on reload; restart tlsgate".to_owned()]
        );
    }
}
