//! Waiting on a cancellation token beside a connection's work, without taking the token's locks on
//! every wake-up.
//!
//! Every connection task waits on a token that all of the process's connections share: the end of
//! the grace period (`Shared::force`, in [`crate::context::Shared::spawn`]), and in the HTTP
//! servers and the h2 links the shutdown itself. It sits in a `select!` beside the connection's
//! own future, so it is polled on every wake-up of the task: every read. tokio-util's `cancelled()`
//! future takes two mutexes of the token on each poll (the token's own, to read whether it is
//! cancelled, and its `Notify`'s, to keep the waker), so each wake-up of each connection, on every
//! worker thread, took the same two locks: a lock on the data path, shared across cores.
//!
//! [`Stop`] registers with the token once, under a waker of its own that raises a flag when the
//! token fires. Later polls read that flag (one atomic load) and, when the task's waker changed,
//! hand the new one to the flag ([`AtomicWaker`], no lock); only a poll after the flag was raised
//! asks the token again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Resolves once `token` is cancelled, like `token.cancelled()`, for a future polled often.
pub fn stopped(token: &CancellationToken) -> Stop {
    Stop {
        wait: Box::pin(token.clone().cancelled_owned()),
        flag: Arc::default(),
        task: None,
        armed: false,
    }
}

/// See [`stopped`].
pub struct Stop {
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    flag: Arc<Flag>,
    /// The waker `flag` holds, so that an unchanged one (a task's own, poll after poll) is not
    /// registered again.
    task: Option<Waker>,
    /// The token holds `flag`'s waker: until it fires, polls need not ask the token.
    armed: bool,
}

/// The waker the token holds: it marks that the token fired, then wakes the task.
#[derive(Default)]
struct Flag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Future for Stop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // The task's waker first, then the flag: a token firing in between still wakes this task.
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            this.flag.task.register(cx.waker());
            this.task = Some(cx.waker().clone());
        }
        if this.armed && !this.flag.fired.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // The first poll, or the token fired: ask it (this takes its locks). The flag is lowered
        // first, so a token firing during the poll raises it again.
        this.flag.fired.store(false, Ordering::Release);
        let waker = Waker::from(this.flag.clone());
        let poll = this.wait.as_mut().poll(&mut Context::from_waker(&waker));
        this.armed = poll.is_pending();
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn resolves_at_once_for_a_token_already_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        let mut stop = stopped(&token);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut stop).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_cancel_wakes_the_task_that_polled_last_and_then_resolves() {
        let token = CancellationToken::new();
        let mut stop = stopped(&token);
        let (first, second) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        let first_waker = Waker::from(first.clone());
        let second_waker = Waker::from(second.clone());
        // Polled many times, as a connection's task is: pending every time, whichever waker.
        for _ in 0..100 {
            let mut cx = Context::from_waker(&first_waker);
            assert!(Pin::new(&mut stop).poll(&mut cx).is_pending());
        }
        let mut cx = Context::from_waker(&second_waker);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_pending());

        token.cancel();
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "an outdated waker was woken"
        );
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "the task was not woken");
        let mut cx = Context::from_waker(&second_waker);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_child_token_cancelled_through_its_parent_resolves() {
        let parent = CancellationToken::new();
        let child = parent.child_token();
        let mut stop = stopped(&child);
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_pending());
        parent.cancel();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut stop).poll(&mut cx).is_ready());
    }

    /// In a `select!` beside work that keeps waking the task, as in a connection: the work runs,
    /// and the cancel still ends the task at once.
    #[tokio::test]
    async fn beside_busy_work_a_cancel_still_ends_the_select() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            canceller.cancel();
        });
        let mut rounds = 0u64;
        let work = async {
            loop {
                rounds += 1;
                tokio::task::yield_now().await;
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                () = work => {}
                () = stopped(&token) => {}
            }
        })
        .await;
        assert!(ended.is_ok(), "the cancel did not end the select");
        assert!(rounds > 10, "the work did not run beside the wait");
    }
}
