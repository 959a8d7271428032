//! The `tls` transport: one outer TLS 1.3 connection to the relay per inner connection; the inner
//! bytes are written raw inside it. With `preconnect`, a few are opened ahead of need ([`Spares`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::endpoints::{EjectReason, Endpoints, HEDGE_AFTER};
use crate::config::{RelayUpstream, Timeouts};
use crate::error::ConnError;
use crate::outer::{self, Outer};

/// Connects to the relay and completes the outer handshake (SNI = the relay's name, no ALPN),
/// trying its endpoints in turn: a failing endpoint is ejected and the next one is tried within the
/// same attempt, so a client sees an error only when no endpoint answers. An endpoint that has not
/// answered after [`HEDGE_AFTER`] gets company: the next endpoint is tried alongside, the first
/// handshake to finish wins, and an endpoint outpaced that way is ejected (`answer_slow`).
pub async fn connect(
    relay: &RelayUpstream,
    endpoints: &Arc<Endpoints>,
    timeouts: &Timeouts,
) -> Result<(SocketAddr, Outer<TcpStream>), ConnError> {
    endpoints
        .ensure_resolved()
        .await
        .map_err(|e| ConnError::RelayUnavailable(format!("resolving the relay: {e}")))?;
    let mut waiting = endpoints.candidates().into_iter();
    let mut last = ConnError::RelayUnavailable("the relay has no endpoint".into());
    let mut running = FuturesUnordered::new();
    let mut pending: Vec<SocketAddr> = Vec::new();
    let attempt = |addr: SocketAddr| async move {
        (
            addr,
            handshake(addr, relay, timeouts, relay.tls_raw.clone()).await,
        )
    };
    if let Some(addr) = waiting.next() {
        pending.push(addr);
        running.push(attempt(addr));
    }
    let hedge = tokio::time::sleep(HEDGE_AFTER);
    tokio::pin!(hedge);
    while !running.is_empty() {
        tokio::select! {
            Some((addr, result)) = running.next() => {
                pending.retain(|a| *a != addr);
                match result {
                    Ok(stream) => {
                        endpoints.succeeded(addr);
                        outpaced(endpoints, &pending, addr);
                        return Ok((addr, stream));
                    }
                    Err((reason, e)) => {
                        endpoints.failed(addr, reason, &e);
                        last = e;
                        if let Some(next) = waiting.next() {
                            pending.push(next);
                            running.push(attempt(next));
                            hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
                        }
                    }
                }
            }
            () = hedge.as_mut(), if waiting.len() > 0 => {
                if let Some(next) = waiting.next() {
                    pending.push(next);
                    running.push(attempt(next));
                }
                hedge.as_mut().reset(tokio::time::Instant::now() + HEDGE_AFTER);
            }
        }
    }
    Err(last)
}

/// Ejects the endpoints still `pending` when `winner` served the tunnel.
pub(super) fn outpaced(endpoints: &Endpoints, pending: &[SocketAddr], winner: SocketAddr) {
    for slow in pending {
        let detail = ConnError::RelayUnavailable(format!(
            "{slow} had not answered after {HEDGE_AFTER:?}; {winner} served the tunnel"
        ));
        endpoints.failed(*slow, EjectReason::AnswerSlow, &detail);
    }
}

/// TCP connect + TLS handshake to one relay endpoint with `config`, both bounded by their timeouts.
/// The relay is named by the operator, so the destination guard does not apply to it.
pub async fn handshake(
    addr: SocketAddr,
    relay: &RelayUpstream,
    timeouts: &Timeouts,
    config: Arc<rustls::ClientConfig>,
) -> Result<Outer<TcpStream>, (EjectReason, ConnError)> {
    let tcp = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                EjectReason::ConnectRefused
            } else {
                EjectReason::ConnectFailed
            };
            let error = ConnError::RelayUnavailable(format!("connecting to {addr}: {e}"));
            return Err((reason, error));
        }
        Err(_) => {
            let error = ConnError::RelayUnavailable(format!("connecting to {addr} timed out"));
            return Err((EjectReason::ConnectTimeout, error));
        }
    };
    // Tunnels carry interactive TLS handshakes: do not wait to coalesce small writes.
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(
        timeouts.handshake,
        outer::connect(config, relay.server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err((
            EjectReason::HandshakeFailed,
            ConnError::RelayUnavailable(format!("TLS handshake with {addr}: {e}")),
        )),
        Err(_) => Err((
            EjectReason::HandshakeTimeout,
            ConnError::RelayUnavailable(format!("TLS handshake with {addr} timed out")),
        )),
    }
}

/// A `tls` tunnel's outer connection, as the splice uses it.
///
/// One taken from the spares may die unseen between its last check and the ClientHello's write (a
/// relay restarting, a link cut). If its transport then fails (a close without close_notify, a
/// reset) before the relay sent anything back, and nothing but the bytes given at open went in,
/// those bytes are written again on a new outer connection, once. A relay that refuses a tunnel
/// says so inside it (a TLS alert, [`crate::io::refuse_tls`]) and a close_notify is the relay's own
/// ending: neither is replayed, so a refusal is never repeated at the relay or an origin. Only
/// the client's first bytes (its ClientHello) are ever replayed, which the TLS handshake allows.
pub struct TlsTunnel {
    outer: Outer<TcpStream>,
    endpoint: SocketAddr,
    replay: Replay,
}

/// A new outer connection being opened for a replay.
type Dial = Pin<Box<dyn Future<Output = Result<(SocketAddr, Outer<TcpStream>), ConnError>> + Send>>;

/// Where a replay opens its new outer connection: as a fresh tunnel would ([`connect`]).
struct Redial {
    relay: Arc<RelayUpstream>,
    endpoints: Arc<Endpoints>,
    timeouts: Timeouts,
}

enum Replay {
    Off,
    /// Nothing came back yet; `written` bytes of `first` went in.
    Armed {
        first: Bytes,
        written: usize,
        redial: Box<Redial>,
    },
    /// The transport failed with `cause`; a new outer connection is being opened.
    Dialing {
        first: Bytes,
        written: usize,
        dial: Dial,
        cause: io::Error,
    },
    /// On the new connection: `first[pos..written]` is still to be written again.
    Resending {
        first: Bytes,
        pos: usize,
        written: usize,
    },
}

impl TlsTunnel {
    /// A tunnel on an outer connection opened for it: nothing to replay.
    pub(crate) fn fresh(endpoint: SocketAddr, outer: Outer<TcpStream>) -> Self {
        Self {
            outer,
            endpoint,
            replay: Replay::Off,
        }
    }

    /// A tunnel on a spare: `first` (the bytes the tunnel writes first) may be replayed on a new
    /// connection opened by `redial`.
    fn on_spare(
        endpoint: SocketAddr,
        outer: Outer<TcpStream>,
        first: Bytes,
        redial: Redial,
    ) -> Self {
        Self {
            outer,
            endpoint,
            replay: Replay::Armed {
                first,
                written: 0,
                redial: Box::new(redial),
            },
        }
    }

    /// The relay endpoint that carries the tunnel (after a replay, the new connection's).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Starts a replay if `error` is a transport failure while one is possible; `false` otherwise.
    fn redial_on(&mut self, error: &io::Error) -> bool {
        if !matches!(
            error.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::NotConnected
        ) {
            return false;
        }
        let Replay::Armed {
            first,
            written,
            redial,
        } = std::mem::replace(&mut self.replay, Replay::Off)
        else {
            return false;
        };
        let Redial {
            relay,
            endpoints,
            timeouts,
        } = *redial;
        tracing::debug!(endpoint = %self.endpoint, "the spare outer connection failed before the relay answered ({error}); its first bytes go again on a new connection");
        self.replay = Replay::Dialing {
            first,
            written,
            dial: Box::pin(async move { connect(&relay, &endpoints, &timeouts).await }),
            cause: io::Error::new(error.kind(), error.to_string()),
        };
        true
    }

    /// Drives a replay under way to its end; `Ready(Ok)` when none is (any more).
    fn poll_replay(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.replay {
                Replay::Dialing { dial, .. } => {
                    let dialed = ready!(dial.as_mut().poll(cx));
                    let Replay::Dialing {
                        first,
                        written,
                        cause,
                        ..
                    } = std::mem::replace(&mut self.replay, Replay::Off)
                    else {
                        unreachable!("matched above");
                    };
                    match dialed {
                        Ok((endpoint, outer)) => {
                            self.endpoint = endpoint;
                            self.outer = outer;
                            self.replay = Replay::Resending {
                                first,
                                pos: 0,
                                written,
                            };
                        }
                        Err(e) => {
                            return Poll::Ready(Err(io::Error::new(
                                cause.kind(),
                                format!("{cause}; a new outer connection failed too: {e}"),
                            )));
                        }
                    }
                }
                Replay::Resending {
                    first,
                    pos,
                    written,
                } => {
                    while *pos < *written {
                        let n = ready!(
                            Pin::new(&mut self.outer).poll_write(cx, &first[*pos..*written])
                        )?;
                        *pos += n;
                    }
                    self.replay = Replay::Off;
                }
                Replay::Off | Replay::Armed { .. } => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncRead for TlsTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_replay(cx))?;
            match Pin::new(&mut this.outer).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if this.redial_on(&e) => continue,
                Poll::Ready(result) => {
                    // Data or the relay's own close_notify: the relay answered.
                    if result.is_ok() {
                        this.replay = Replay::Off;
                    }
                    return Poll::Ready(result);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl crate::io::ReadChunks for TlsTunnel {
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut crate::io::Chunks,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_replay(cx))?;
            match self.outer.poll_read_chunks(cx, out) {
                Poll::Ready(Err(e)) if self.redial_on(&e) => continue,
                Poll::Ready(result) => {
                    // Data or the relay's own close_notify: the relay answered.
                    if result.is_ok() {
                        self.replay = Replay::Off;
                    }
                    return Poll::Ready(result);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for TlsTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_replay(cx))?;
            match Pin::new(&mut this.outer).poll_write(cx, buf) {
                Poll::Ready(Err(e)) if this.redial_on(&e) => continue,
                Poll::Ready(Ok(n)) => {
                    if let Replay::Armed { first, written, .. } = &mut this.replay {
                        *written += n;
                        if *written > first.len() {
                            // More than the first bytes went in: nothing may be replayed.
                            this.replay = Replay::Off;
                        }
                    }
                    return Poll::Ready(Ok(n));
                }
                other => return other,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_replay(cx))?;
            match Pin::new(&mut this.outer).poll_flush(cx) {
                Poll::Ready(Err(e)) if this.redial_on(&e) => continue,
                other => return other,
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replay(cx))?;
        Pin::new(&mut this.outer).poll_shutdown(cx)
    }
}

/// How long an outer connection opened ahead of need waits for a tunnel before the edge closes it:
/// half the relay's default `detect` timeout (10 s), after which the relay closes an outer
/// connection that has carried nothing.
pub const SPARE_LIFETIME: Duration = Duration::from_secs(5);

/// Outer connections opened ahead of need (`preconnect`), so that a tunnel's ClientHello leaves
/// the edge at once instead of after a TCP connect and the outer handshake: two crossings of the
/// edge ↔ relay link fewer, as a CONNECT stream on the h2 transport.
///
/// Each worker thread keeps its own ([`crate::workers`]), opened by a task on that worker, so a
/// tunnel's socket stays on its thread. They are kept while tunnels are being opened: a tunnel
/// that takes one (or finds none) has the worker's spares topped up behind it, and spares that
/// wait [`SPARE_LIFETIME`] unused are closed and not replaced until the next tunnel. An idle edge
/// therefore holds none and opens none. A spare the relay closed meanwhile (restart, its own
/// timeout) is found dead when taken and skipped.
pub(crate) struct Spares {
    per_worker: usize,
    relay: Arc<RelayUpstream>,
    endpoints: Arc<Endpoints>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    workers: Mutex<HashMap<Option<usize>, Kept>>,
}

/// One worker's spares.
#[derive(Default)]
struct Kept {
    /// Oldest first.
    ready: VecDeque<Spare>,
    /// A task keeps this worker's spares (tops them up and closes them at their end of life).
    filling: bool,
    /// A tunnel was opened since the task last topped up.
    demand: bool,
    wake: Arc<Notify>,
}

struct Spare {
    addr: SocketAddr,
    outer: Outer<TcpStream>,
    born: Instant,
}

impl Spares {
    pub(crate) fn new(
        relay: Arc<RelayUpstream>,
        endpoints: Arc<Endpoints>,
        timeouts: Timeouts,
        shutdown: CancellationToken,
    ) -> Option<Arc<Self>> {
        (relay.preconnect > 0).then(|| {
            Arc::new(Self {
                per_worker: relay.preconnect,
                relay,
                endpoints,
                timeouts,
                shutdown,
                workers: Mutex::new(HashMap::new()),
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<usize>, Kept>> {
        // Every critical section leaves the map whole: a panic in one cannot corrupt it.
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A tunnel on a live spare of the calling worker's, to an endpoint still usable, that will
    /// write `first` first (and may write it again, [`TlsTunnel`]); the worker's spares are topped
    /// up behind it either way. Spares found dead or expired are dropped.
    pub(crate) fn take(self: &Arc<Self>, first: &Bytes) -> Option<TlsTunnel> {
        let worker = crate::workers::current();
        let (found, spawn) = {
            let mut workers = self.lock();
            let kept = workers.entry(worker).or_default();
            let mut found = None;
            let now = Instant::now();
            while let Some(mut spare) = kept.ready.pop_front() {
                if now < spare.born + SPARE_LIFETIME
                    && self.endpoints.is_usable(spare.addr)
                    && is_live(&mut spare.outer)
                {
                    found = Some((spare.addr, spare.outer));
                    break;
                }
                tracing::debug!(endpoint = %spare.addr, "spare outer connection dropped: expired, ejected or closed by the relay");
            }
            kept.demand = true;
            kept.wake.notify_one();
            let spawn = !kept.filling;
            kept.filling = true;
            (found, spawn)
        };
        if spawn {
            tokio::spawn(self.clone().keep(worker));
        }
        found.map(|(endpoint, outer)| {
            TlsTunnel::on_spare(
                endpoint,
                outer,
                first.clone(),
                Redial {
                    relay: self.relay.clone(),
                    endpoints: self.endpoints.clone(),
                    timeouts: self.timeouts,
                },
            )
        })
    }

    /// Keeps `worker`'s spares: tops them up after each demand, closes them at their end of life,
    /// and ends when none are left and no tunnel asked meanwhile (or at shutdown).
    async fn keep(self: Arc<Self>, worker: Option<usize>) {
        loop {
            let (top_up, wake) = {
                let mut workers = self.lock();
                let kept = workers.entry(worker).or_default();
                (std::mem::take(&mut kept.demand), kept.wake.clone())
            };
            if top_up {
                self.top_up(worker).await;
            }
            let expiry = {
                let mut workers = self.lock();
                let kept = workers.entry(worker).or_default();
                match kept.ready.front() {
                    Some(oldest) => Some(oldest.born + SPARE_LIFETIME),
                    None if kept.demand => None,
                    None => {
                        kept.filling = false;
                        return;
                    }
                }
            };
            if let Some(expiry) = expiry {
                tokio::select! {
                    () = tokio::time::sleep_until(expiry) => {}
                    () = wake.notified() => {}
                    () = self.shutdown.cancelled() => {}
                }
            }
            let now = Instant::now();
            let (expired, stop) = {
                let mut workers = self.lock();
                let kept = workers.entry(worker).or_default();
                let stop = self.shutdown.is_cancelled();
                let keep_until = |spare: &Spare| !stop && now < spare.born + SPARE_LIFETIME;
                let (live, expired): (VecDeque<Spare>, VecDeque<Spare>) =
                    kept.ready.drain(..).partition(keep_until);
                kept.ready = live;
                if stop {
                    kept.filling = false;
                }
                (expired, stop)
            };
            for spare in expired {
                close(spare.outer).await;
            }
            if stop {
                return;
            }
        }
    }

    /// Opens outer connections until `worker` has `per_worker` spares; stops at the first failure
    /// (the endpoints are ejected as for a tunnel; the next tunnel's demand tries again).
    async fn top_up(&self, worker: Option<usize>) {
        loop {
            let have = self.lock().get(&worker).map_or(0, |k| k.ready.len());
            if have >= self.per_worker || self.shutdown.is_cancelled() {
                return;
            }
            let opened = tokio::select! {
                opened = connect(&self.relay, &self.endpoints, &self.timeouts) => opened,
                () = self.shutdown.cancelled() => return,
            };
            match opened {
                Ok((addr, outer)) => {
                    let spare = Spare {
                        addr,
                        outer,
                        born: Instant::now(),
                    };
                    self.lock()
                        .entry(worker)
                        .or_default()
                        .ready
                        .push_back(spare);
                }
                Err(e) => {
                    tracing::debug!("opening a spare outer connection to the relay: {e}");
                    return;
                }
            }
        }
    }
}

/// Whether an unused outer connection is still open: the relay sends nothing on a raw outer
/// connection before the inner ClientHello, so anything readable (its close, an error, data) means
/// it is gone. Post-handshake messages (session tickets) are taken in by the outer layer and read
/// as nothing.
///
/// Two looks, neither waiting: the outer layer reads what the runtime knows to be readable, then
/// the kernel is asked directly ([`quiet`]). The runtime learns of a socket's news only when its
/// reactor next turns, so a close that arrived since (a relay restarting, a link cut) would
/// otherwise pass for an open connection and fail the tunnel put on it.
fn is_live(outer: &mut Outer<TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(&mut *outer)
        .poll_read(&mut cx, &mut buf)
        .is_pending()
        && quiet(outer.get_ref())
}

/// Whether the kernel holds nothing to read on `tcp` and no close or error: a peek that would
/// block. Bytes the outer layer has not taken in yet (a session ticket that came after the
/// reactor's last turn, say) count as not quiet too: such a spare is dropped, which costs a new
/// connection, never the tunnel.
fn quiet(tcp: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    matches!(
        socket2::SockRef::from(tcp).peek(&mut byte),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// Closes an unused outer connection with its close_notify, bounded.
async fn close(mut outer: Outer<TcpStream>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), outer.shutdown()).await;
}

#[cfg(test)]
mod tests;
