//! Connection-serving threads, each running its own single-threaded tokio runtime (Envoy's worker
//! model). Every worker accepts from each listening socket in its own reactor, so the first idle
//! worker takes a new connection, and everything the connection then starts (its streams, the
//! origin connections it opens and pools) runs on that worker's thread.
//!
//! Why: on tokio's work-stealing runtime a request's tasks (client side, origin side, the origin
//! connection's own task) are woken on whichever worker is free, and every hand-off from one
//! thread to another is a wake-up and a context switch. `bench/run.sh --syscalls` counted 0.45–1.5
//! of them per request, against 0.05 for Squid's single-threaded workers. With one runtime per
//! thread no task moves, and pools keyed by [`current`] keep a worker's origin connections its own.
//!
//! A new connection wakes every worker waiting on the socket (tokio registers it without
//! `EPOLLEXCLUSIVE`); one accepts it and the others find nothing: one wasted wake-up per worker
//! and connection, against the two wake-ups and two reactor registrations of accepting on one
//! thread and handing the socket to another (measured: docs/performance-log.md, Changes).
//!
//! Without workers (`Gateway::with_workers` not called, as in the library's tests), connections
//! are served on the runtime that accepts them, as before.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

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
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
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
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    /// How many worker threads serve connections.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Each worker's runtime, to start a listener's accept loop on every worker.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
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

    #[tokio::test]
    async fn each_worker_runs_its_tasks_on_its_own_named_thread() {
        let workers = Workers::start(2).expect("workers");
        assert!(most() >= 2);
        let mut seen = Vec::new();
        for handle in workers.handles() {
            let ran = handle.spawn(async {
                let name = std::thread::current().name().map(str::to_owned);
                (current(), name.unwrap_or_default())
            });
            seen.push(ran.await.expect("the task ran"));
        }
        assert_eq!(
            seen,
            [
                (Some(0), THREAD_NAME.to_owned()),
                (Some(1), THREAD_NAME.to_owned())
            ]
        );
        assert_eq!(current(), None, "the test's own thread is no worker");
        drop(workers);
    }
}
