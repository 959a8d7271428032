//! Connection-serving threads, each running its own single-threaded tokio runtime (Envoy's worker
//! model). A listener accepts on the control runtime and hands each connection to the worker with
//! the fewest connections; everything the connection then starts (its streams, the origin
//! connections it opens and pools) runs on that worker's thread.
//!
//! Why: on tokio's work-stealing runtime a request's tasks (client side, origin side, the origin
//! connection's own task) are woken on whichever worker is free, and every hand-off from one
//! thread to another is a wake-up and a context switch. `bench/run.sh --syscalls` counted 0.45–1.5
//! of them per request, against 0.05 for Squid's single-threaded workers. With one runtime per
//! thread no task moves, and pools keyed by [`current`] keep a worker's origin connections its own.
//!
//! Without workers (`Gateway::with_workers` not called, as in the library's tests), connections
//! are served on the runtime that accepts them, as before.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The most workers any [`Workers`] of this process has: per-worker pools size themselves by it.
static MOST: AtomicUsize = AtomicUsize::new(0);

/// The worker the calling thread is, if it is one: pools key their connections by it, so that a
/// connection opened on a worker is only used by that worker's tasks.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// How many worker indexes [`current`] can return in this process (0 before workers start).
pub fn most() -> usize {
    MOST.load(Ordering::Relaxed)
}

/// The name of a worker thread (what `top -H` and `/proc/PID/task/*/comm` show).
pub const THREAD_NAME: &str = "tlsgate-worker";

/// The gateway's worker threads; dropping it stops them (tasks still on them are dropped).
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least busy worker starts, turned on every hand-off so that ties
    /// are spread.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    /// Connections being served on this worker.
    active: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` (at least 1) worker threads.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        MOST.fetch_max(count.max(1), Ordering::Relaxed);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // Its spawn_blocking threads (certificate minting, config reads).
                .thread_name("tlsgate-blocking")
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(THREAD_NAME.to_owned())
                .spawn(move || {
                    INDEX.with(|i| i.set(Some(index)));
                    // Runs the worker's tasks until told to stop (or the sender is dropped).
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                active: Arc::default(),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// How many worker threads serve connections.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Serves `tcp` with `serve` on the worker with the fewest connections. The socket moves from
    /// the accepting runtime's reactor to the worker's; if that fails, the connection is closed
    /// and the reason returned.
    pub fn serve<F, Fut>(&self, tcp: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std = tcp.into_std()?;
        let worker = self.least_busy();
        let active = worker.active.clone();
        active.fetch_add(1, Ordering::Relaxed);
        worker.handle.spawn(async move {
            let _served = Served(active);
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!("handing a connection to a worker failed: {e}"),
            }
        });
        Ok(())
    }

    fn least_busy(&self) -> &Worker {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.workers.len();
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.active.load(Ordering::Relaxed))
            .expect("at least one worker")
    }
}

/// Counts a connection out of its worker when its task ends (or is dropped).
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connections_are_served_on_worker_threads_spread_by_load() {
        let workers = Workers::start(2).expect("workers");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Two connections held open: each worker serves one, and says which it is.
        let mut clients = Vec::new();
        for _ in 0..2 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let (tcp, _) = listener.accept().await.expect("accept");
            workers
                .serve(tcp, |mut tcp| async move {
                    let name = std::thread::current().name().map(str::to_owned);
                    let index = current().expect("on a worker");
                    let reply = format!("{index} {}", name.unwrap_or_default());
                    let _ = tcp.write_all(reply.as_bytes()).await;
                    // Held until the client closes.
                    let _ = tcp.read(&mut [0; 1]).await;
                })
                .expect("serve");
            let mut reply = vec![0; 64];
            let n = client.read(&mut reply).await.expect("reply");
            clients.push((client, String::from_utf8_lossy(&reply[..n]).into_owned()));
        }
        let mut seen: Vec<&str> = clients.iter().map(|(_, r)| r.as_str()).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            ["0 tlsgate-worker", "1 tlsgate-worker"],
            "one connection per worker"
        );
        assert_eq!(current(), None, "the test's own thread is no worker");
        drop(clients);
        drop(workers);
    }
}
