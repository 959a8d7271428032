//! A TCP hop on loopback between two parts under test: it counts the connections it accepted and
//! those still open, can cut them all (as a relay restart or a firewall's reset would), can cut the
//! next one to send bytes onward (a connection that dies just as it is used), and can stop
//! accepting (new connections are then refused) while the accepted ones go on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    /// Connections accepted before this many may be cut on their next bytes onward (0: none).
    cut_next: Arc<AtomicUsize>,
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
        let cut_next = Arc::new(AtomicUsize::new(0));
        let next = cut_next.clone();
        let (cut, cuts) = watch::channel(0u64);
        let accepting = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let index = count.fetch_add(1, Ordering::SeqCst);
                live.fetch_add(1, Ordering::SeqCst);
                let (live, next) = (live.clone(), next.clone());
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(to).await {
                        let copying = forward(down, up, index, next);
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
            cut_next,
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

    /// Closes, once, the first connection accepted so far that then has bytes to send onward: they
    /// are read and dropped, and both of its sockets closed (a FIN each way, no reset).
    pub fn cut_on_next_data(&self) {
        self.cut_next.store(self.accepted(), Ordering::SeqCst);
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

/// Copies both ways until each side has closed its half, as `copy_bidirectional` does; ends early,
/// closing both connections, when connection number `index` is the one [`TcpHop::cut_on_next_data`]
/// armed for and bytes arrive to go onward.
async fn forward(
    down: TcpStream,
    up: TcpStream,
    index: usize,
    cut_next: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let (mut down_read, mut down_write) = down.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let onward = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = down_read.read(&mut buf).await?;
            if n == 0 {
                return up_write.shutdown().await;
            }
            let armed = cut_next.load(Ordering::SeqCst);
            if index < armed
                && cut_next
                    .compare_exchange(armed, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Err(std::io::Error::other("cut by the hop"));
            }
            up_write.write_all(&buf[..n]).await?;
        }
    };
    let back = async {
        tokio::io::copy(&mut up_read, &mut down_write).await?;
        down_write.shutdown().await
    };
    tokio::try_join!(onward, back).map(|_| ())
}
