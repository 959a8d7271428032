//! The running gateway: binds every listener, accepts and dispatches connections to their role, and
//! on shutdown stops accepting at once and lets in-flight work finish within the grace period.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::admin::AdminState;
use crate::admit::{SourceLimit, TunnelLimit};
use crate::config::{Config, Listener, ListenerKind};
use crate::context::{ConnCtx, Shared};
use crate::error::ConnError;
use crate::flow::ring::FlowRing;
use crate::flow::{FlowSubscriber, Flows, Mode, Role};
use crate::intercept::{self, InterceptState};
use crate::io::Moved;
use crate::reload::{Base, Fixed, Reloader, Running};
use crate::transport::RelayClient;
use crate::workers::Workers;
use crate::{edge, relay};

/// Flow records kept for slow subscribers before they start losing the oldest.
const FLOW_BUS_CAPACITY: usize = 4096;
/// Pause after an accept error (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listeners[{index}] ({name}): binding {addr}")]
    Bind {
        index: usize,
        name: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("admin.listen: binding {addr}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("listeners[{index}] ({name}): preparing interception: {source}")]
    Intercept {
        index: usize,
        name: String,
        #[source]
        source: ConnError,
    },
}

/// A gateway whose listeners are bound (so tests can use port 0 and read the real ports).
pub struct Gateway {
    config: Config,
    sockets: Vec<TcpListener>,
    /// Per interception listener (by index): minting store, origin verifier.
    intercepts: HashMap<usize, Arc<InterceptState>>,
    flows: Flows,
    /// Recent records for the admin API, filled by `Flows::emit`.
    ring: Arc<FlowRing>,
    admin: Option<TcpListener>,
    reloader: Arc<Reloader>,
    /// Threads that serve the accepted connections; `None`: the runtime that accepts serves them.
    workers: Option<Arc<Workers>>,
}

/// The name the admin API's address is listed under in [`Gateway::local_addrs`].
pub const ADMIN_ADDR_NAME: &str = "admin";

impl Gateway {
    /// Binds every listener in `config`.
    pub async fn bind(config: Config) -> Result<Self, BindError> {
        let mut sockets = Vec::with_capacity(config.listeners.len());
        let mut intercepts = HashMap::new();
        for (index, listener) in config.listeners.iter().enumerate() {
            if let ListenerKind::Intercept(intercept) = &listener.kind {
                let state = InterceptState::new(intercept.clone()).map_err(|source| {
                    BindError::Intercept {
                        index,
                        name: listener.name.clone(),
                        source,
                    }
                })?;
                intercepts.insert(index, Arc::new(state));
            }
            let socket =
                TcpListener::bind(listener.listen)
                    .await
                    .map_err(|source| BindError::Bind {
                        index,
                        name: listener.name.clone(),
                        addr: listener.listen,
                        source,
                    })?;
            sockets.push(socket);
        }
        let admin =
            match &config.visibility.admin {
                Some(admin) => Some(TcpListener::bind(admin.listen).await.map_err(|source| {
                    BindError::Admin {
                        addr: admin.listen,
                        source,
                    }
                })?),
                None => None,
            };
        let ring = Arc::new(FlowRing::new(config.visibility.flows.ring_size));
        let flows = Flows::new(FLOW_BUS_CAPACITY)
            .with_redaction(crate::flow::Redaction::from(&config.visibility.flows))
            .with_ring(ring.clone());
        Ok(Self {
            reloader: Arc::new(Reloader::new(flows.clone())),
            ring,
            config,
            sockets,
            intercepts,
            flows,
            admin,
            workers: None,
        })
    }

    /// Accepts and serves connections on `workers`' threads instead of the runtime `run` is called
    /// on, which then runs the admin API, reloads and the access log.
    #[must_use]
    pub fn with_workers(mut self, workers: Arc<Workers>) -> Self {
        self.workers = Some(workers);
        self
    }

    /// `(listener name, bound address)` for every listener, in config order, then the admin API's
    /// as [`ADMIN_ADDR_NAME`] when configured.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let mut addrs: Vec<_> = self
            .config
            .listeners
            .iter()
            .zip(&self.sockets)
            .filter_map(|(l, s)| Some((l.name.clone(), s.local_addr().ok()?)))
            .collect();
        if let Some(addr) = self.admin_addr() {
            addrs.push((ADMIN_ADDR_NAME.to_owned(), addr));
        }
        addrs
    }

    /// The admin API's bound address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// A summary of the listeners for `/config`: names, kinds and addresses, no secrets.
    fn config_summary(&self) -> serde_json::Value {
        let listeners: Vec<_> = self
            .config
            .listeners
            .iter()
            .zip(&self.sockets)
            .map(|(l, s)| {
                serde_json::json!({
                    "name": l.name,
                    "kind": kind_name(&l.kind),
                    "listen": s.local_addr().map_or_else(|_| l.listen.to_string(), |a| a.to_string()),
                })
            })
            .collect();
        let visibility = &self.config.visibility;
        serde_json::json!({
            "listeners": listeners,
            "flows": { "ring_size": visibility.flows.ring_size },
            "admin": {
                "listen": self.admin_addr().map(|a| a.to_string()),
                "bearer_token": visibility.admin.as_ref().is_some_and(|a| a.bearer_token.is_some()),
            },
        })
    }

    /// The state of the interception listener named `name` (certificate store, counters): the
    /// one in force once running (a reload replaces it), else the one built at bind.
    pub fn intercept_state(&self, name: &str) -> Option<Arc<InterceptState>> {
        if let Some((_, state)) = self
            .reloader
            .intercepts()
            .into_iter()
            .find(|(n, _)| n == name)
        {
            return Some(state);
        }
        let index = self.config.listeners.iter().position(|l| l.name == name)?;
        self.intercepts.get(&index).cloned()
    }

    /// The handle that reloads this gateway once it runs (SIGHUP, admin `POST /reload`, tests).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Flow records from now on (one per connection, stream or HTTP request outcome).
    pub fn subscribe(&self) -> FlowSubscriber {
        self.flows.subscribe()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight work finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        // Serves until the connections have drained (so a follower sees the last records).
        let admin_stop = CancellationToken::new();
        let _stop_admin = admin_stop.clone().drop_guard();
        let config_summary = self.config_summary();
        let access_log = self.config.visibility.access_log.clone().map(|target| {
            let (rx, metrics) = (self.flows.subscribe(), self.flows.metrics().clone());
            tokio::spawn(crate::flow::access_log::run(
                target,
                rx,
                metrics,
                admin_stop.clone(),
            ))
        });
        let base = Base {
            flows: self.flows.clone(),
            shutdown: shutdown.clone(),
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        let (tracker, force) = (base.tracker.clone(), base.force.clone());
        let fixed = Fixed::of(&self.config);
        // The first generation: interception states were built (and checked) at bind.
        let generation = match crate::reload::build_generation(&self.config, self.intercepts, &base)
        {
            Ok(generation) => generation,
            Err(errors) => {
                for error in errors {
                    tracing::error!("cannot serve: {error}");
                }
                return;
            }
        };
        let mut senders = Vec::with_capacity(generation.tasks.len());
        let mut accept_loops = Vec::new();
        for ((task, listener), socket) in generation
            .tasks
            .iter()
            .zip(&self.config.listeners)
            .zip(self.sockets)
        {
            if let Ok(addr) = socket.local_addr() {
                tracing::info!(listener = %listener.name, %addr, kind = kind_name(&listener.kind), "listening");
            }
            let (tx, rx) = watch::channel(task.clone());
            senders.push(tx);
            let admission = Arc::new(Admission::of(task));
            let Some(workers) = &self.workers else {
                accept_loops.push(tokio::spawn(accept_loop(
                    Acceptor::Runtime(socket),
                    rx,
                    admission,
                    shutdown.clone(),
                )));
                continue;
            };
            // Every worker accepts from the listening socket itself (in its own reactor), so a
            // connection is served where it was accepted: by the worker the placement picks.
            let listening = match socket.into_std() {
                Ok(listening) => listening,
                Err(e) => {
                    tracing::error!(listener = %listener.name, "cannot serve: {e}");
                    continue;
                }
            };
            let listening = match workers.listen(listening) {
                Ok(listening) => listening,
                Err(e) => {
                    tracing::error!(listener = %listener.name, "the workers cannot accept: {e}");
                    continue;
                }
            };
            for (socket, handle) in listening.into_iter().zip(workers.handles()) {
                let (rx, admission, shutdown) = (rx.clone(), admission.clone(), shutdown.clone());
                let socket = Acceptor::Worker(socket);
                accept_loops.push(handle.spawn(accept_loop(socket, rx, admission, shutdown)));
            }
        }
        let running = Running {
            fixed,
            base,
            listeners: senders,
            policy_watch: shutdown.child_token(),
            grace: generation.grace,
        };
        // Installs the generation (and starts watching its policy files); reloads replace it.
        self.reloader.start(running, generation).await;
        if let Some(socket) = self.admin {
            let state = Arc::new(AdminState {
                flows: self.flows.clone(),
                ring: self.ring.clone(),
                config_summary,
                reloader: self.reloader.clone(),
                bearer_token: self
                    .config
                    .visibility
                    .admin
                    .as_ref()
                    .and_then(|a| a.bearer_token.clone()),
            });
            tokio::spawn(crate::admin::serve(socket, state, admin_stop.clone()));
        }
        shutdown.cancelled().await;
        // Listeners close as their accept loops end: no new connections from here on.
        for accept in accept_loops {
            let _ = accept.await;
        }
        tracker.close();
        // The grace period of the config in force (a reload may have changed it).
        let grace = self
            .reloader
            .grace()
            .await
            .unwrap_or(self.config.timeouts.shutdown_grace);
        tracing::info!(
            in_flight = tracker.len(),
            ?grace,
            "shutting down: draining connections"
        );
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over: closing remaining connections"
            );
            force.cancel();
            tracker.wait().await;
        }
        // The access log writes its last records (bounded in time) before the process exits.
        admin_stop.cancel();
        if let Some(task) = access_log {
            let _ = task.await;
        }
    }
}

pub(crate) fn kind_name(kind: &ListenerKind) -> &'static str {
    match kind {
        ListenerKind::TlsPassthrough(_) => "tls-passthrough",
        ListenerKind::Http(_) => "http",
        ListenerKind::Relay(_) => "relay",
        ListenerKind::Intercept(_) => "intercept",
    }
}

/// What one listener's connections need, from one config generation (see `reload`): a connection
/// holds the task it was accepted with until it ends.
pub(crate) struct ListenerTask {
    pub name: Arc<str>,
    pub listener: Listener,
    pub relay: Option<Arc<RelayClient>>,
    pub intercept: Option<Arc<InterceptState>>,
    pub shared: Arc<Shared>,
    /// Shared by the generation's tasks: when the last is gone, its relay clients stop.
    pub _retire: Arc<DropGuard>,
}

/// A listener's admission state, shared by its accept loops (one per worker thread).
struct Admission {
    name: Arc<str>,
    limit: Arc<Semaphore>,
    sources: SourceLimit,
    tunnels: Arc<TunnelLimit>,
    gauges: Arc<crate::metrics::ListenerGauges>,
}

impl Admission {
    /// Name, kind and the limits cannot change on reload, so the first task's do for the listener.
    /// Only those values are kept: holding the task itself would keep its generation (relay pools
    /// and their connections, interception caches) alive after a reload replaced it.
    fn of(task: &ListenerTask) -> Self {
        let limits = task.shared.limits;
        Self {
            name: task.name.clone(),
            limit: Arc::new(Semaphore::new(limits.max_connections)),
            // Like max_connections, these limits live as long as the listener (a reload keeps them).
            sources: SourceLimit::new(limits.max_connections_per_source),
            tunnels: Arc::new(TunnelLimit::new(limits.max_tunnels_per_client)),
            gauges: task
                .shared
                .flows
                .metrics()
                .listener(task.name.clone(), role_of(&task.listener.kind).as_str()),
        }
    }
}

/// Where an accept loop takes connections from.
enum Acceptor {
    /// The runtime's own listener (no workers): it serves what it accepts.
    Runtime(TcpListener),
    /// One worker's registration of the listening socket.
    Worker(crate::workers::Listening),
}

/// A connection's seat on its worker, if it was accepted by one.
type Accepted = (
    tokio::net::TcpStream,
    std::net::SocketAddr,
    Option<crate::workers::Seat>,
);

impl Acceptor {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Self::Runtime(socket) => socket.accept().await.map(|(tcp, a)| (tcp, a, None)),
            Self::Worker(socket) => socket.accept().await.map(|(tcp, a, s)| (tcp, a, Some(s))),
        }
    }
}

async fn accept_loop(
    socket: Acceptor,
    current: watch::Receiver<Arc<ListenerTask>>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    let Admission {
        name,
        limit,
        sources,
        tunnels,
        gauges,
    } = &*admission;
    // Polled on every new connection: see `stop`.
    let mut stop = crate::stop::stopped(&shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            () = &mut stop => return,
        };
        let (tcp, client, seat) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(listener = %name, "accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // The generation in force now: a reload swaps it for connections accepted from here on.
        let task = current.borrow().clone();
        // A connection over a limit is closed at once (dropping `tcp`), with a flow saying which.
        let refuse = |error: ConnError| {
            let ctx = ConnCtx::new(
                task.name.clone(),
                role_of(&task.listener.kind),
                Mode::Splice,
                client,
            );
            ctx.finish(&task.shared, Moved::default(), &Err(error));
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refuse(ConnError::LocalListenerFull);
            continue;
        };
        let Some(source) = sources.try_admit(client.ip().to_canonical()) else {
            refuse(ConnError::ClientSourceLimit);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = task.clone();
        let active = gauges.accept();
        let tunnels = tunnels.clone();
        // Held by the connection and by every task it spawns (an upgraded CONNECT outlives it).
        let admitted: crate::context::Admitted = Arc::new((permit, source, active, seat));
        task.shared
            .spawn(crate::context::ADMITTED.scope(admitted, async move {
                conn.serve(tcp, client, tunnels).await;
            }));
    }
}

fn role_of(kind: &ListenerKind) -> Role {
    match kind {
        ListenerKind::Relay(_) => Role::Relay,
        ListenerKind::Intercept(_) => Role::Intercept,
        ListenerKind::TlsPassthrough(_) | ListenerKind::Http(_) => Role::Edge,
    }
}

impl ListenerTask {
    /// Serves one connection with its listener's role. Each role's future is boxed, so a
    /// connection's task holds only its own role's state, not the largest role's (an idle tunnel
    /// would otherwise pay for the interceptor's).
    async fn serve(&self, tcp: TcpStream, client: SocketAddr, tunnels: Arc<TunnelLimit>) {
        let shared = &self.shared;
        match (&self.listener.kind, &self.relay) {
            (ListenerKind::TlsPassthrough(edge), Some(relay)) => {
                let name = self.name.clone();
                Box::pin(edge::passthrough::serve(
                    tcp, client, name, edge, relay, shared,
                ))
                .await
            }
            (ListenerKind::Http(_), Some(relay)) => {
                let name = self.name.clone();
                Box::pin(edge::http::serve(
                    tcp,
                    client,
                    name,
                    relay.clone(),
                    shared.clone(),
                ))
                .await
            }
            (ListenerKind::Relay(relay), _) => {
                let name = self.name.clone();
                Box::pin(relay::serve(
                    tcp,
                    client,
                    name,
                    relay,
                    shared.clone(),
                    tunnels,
                ))
                .await
            }
            (ListenerKind::Intercept(_), _) => {
                if let Some(state) = &self.intercept {
                    let name = self.name.clone();
                    Box::pin(intercept::serve(
                        tcp,
                        client,
                        name,
                        state.clone(),
                        shared.clone(),
                    ))
                    .await
                }
            }
            // Edge listeners always get a relay client in `run`.
            (_, None) => {}
        }
    }
}
