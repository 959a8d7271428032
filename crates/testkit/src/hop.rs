//! A TCP hop on loopback between two parts under test: it counts the connections it accepted and
//! those still open, can cut them all (as a relay restart or a firewall's reset would), and can
//! stop accepting (new connections are then refused) while the accepted ones go on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a forwarded connection may last at most (far past any test's need).
const HOP_CONNECTION_BOUND: Duration = Duration::from_secs(60);
/// Bound on [`TcpHop::wait`] and [`TcpHop::stop_accepting`].
const HOP_WAIT: Duration = Duration::from_secs(10);

/// A running hop to one address; it stops accepting on Drop (accepted connections finish).
#[derive(Debug)]
pub struct TcpHop {
    /// Where to connect to go through the hop.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    accepting: JoinHandle<()>,
    cut: watch::Sender<u64>,
}

impl TcpHop {
    /// A hop on `127.0.0.1:0` to `to`.
    pub async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the hop");
        let addr = listener.local_addr().expect("the hop's address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (count, live) = (accepted.clone(), open.clone());
        let (cut, cuts) = watch::channel(0u64);
        let accepting = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                live.fetch_add(1, Ordering::SeqCst);
                let live = live.clone();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(to).await {
                        let copying = tokio::io::copy_bidirectional(&mut down, &mut up);
                        tokio::select! {
                            _ = tokio::time::timeout(HOP_CONNECTION_BOUND, copying) => {}
                            _ = cuts.changed() => {}
                        }
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            open,
            accepting,
            cut,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Accepted connections not yet ended.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes every connection accepted so far (both of its sockets).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Closes the listening socket: connecting is refused from now on.
    pub async fn stop_accepting(&self) {
        self.accepting.abort();
        let deadline = Instant::now() + HOP_WAIT;
        while TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "the hop still accepts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most 10 s) until `done` holds; panics naming `what` otherwise.
    pub async fn wait(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + HOP_WAIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: accepted {}, open {}",
                self.accepted(),
                self.open()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TcpHop {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
