//! The most recent flow records, for `/flows`: a bounded ring that `Flows::emit` fills as it publishes.
//!
//! Every connection's and every request's record passes through [`FlowRing::push`], from every
//! worker, so it takes no lock: a push claims the next slot with one atomic add and swaps its record
//! in (`arc_swap`), and the record it displaces is dropped outside any critical section. Readers
//! (the admin API) load the slots one by one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use super::FlowRecord;
use super::filter::FlowFilter;

/// Up to `capacity` records; a full ring drops its oldest record.
#[derive(Debug)]
pub struct FlowRing {
    slots: Box<[ArcSwapOption<FlowRecord>]>,
    /// Records pushed so far; push `n` goes to slot `n % capacity`.
    pushed: AtomicU64,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity.max(1))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            pushed: AtomicU64::new(0),
        }
    }

    pub fn push(&self, record: Arc<FlowRecord>) {
        let n = self.pushed.fetch_add(1, Ordering::Relaxed);
        let displaced = self.slots[self.slot(n)].swap(Some(record));
        drop(displaced);
    }

    fn slot(&self, n: u64) -> usize {
        (n % self.slots.len() as u64) as usize
    }

    /// The matching records, oldest first; only the newest `last` when given. Records pushed while
    /// the snapshot is read may or may not be in it, and one that displaced an older record shows
    /// in that record's place.
    pub fn snapshot(&self, filter: &FlowFilter, last: Option<usize>) -> Vec<Arc<FlowRecord>> {
        let pushed = self.pushed.load(Ordering::Acquire);
        let kept = pushed.min(self.slots.len() as u64);
        let mut out: Vec<_> = (pushed - kept..pushed)
            .rev()
            .filter_map(|n| self.slots[self.slot(n)].load_full())
            .filter(|r| filter.matches(r))
            .take(last.unwrap_or(usize::MAX))
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(port: u16) -> Arc<FlowRecord> {
        Arc::new(crate::flow::tests::record(port))
    }

    #[test]
    fn keeps_only_the_newest_records() {
        let ring = FlowRing::new(3);
        for port in 1..=5 {
            ring.push(record(port));
        }
        let ports: Vec<u16> = ring
            .snapshot(&FlowFilter::default(), None)
            .iter()
            .map(|r| r.client.port())
            .collect();
        assert_eq!(ports, [3, 4, 5]);
        let last: Vec<u16> = ring
            .snapshot(&FlowFilter::default(), Some(2))
            .iter()
            .map(|r| r.client.port())
            .collect();
        assert_eq!(last, [4, 5]);
    }

    #[test]
    fn pushes_from_many_threads_keep_the_newest_records_of_each_and_drop_the_rest() {
        const THREADS: u16 = 4;
        const PER_THREAD: u16 = 5_000;
        let ring = Arc::new(FlowRing::new(1_000));
        let first = record(0);
        let first_weak = Arc::downgrade(&first);
        ring.push(first);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let ring = &ring;
                s.spawn(move || {
                    for i in 1..=PER_THREAD {
                        ring.push(record(t * 10_000 + i));
                    }
                });
            }
        });
        assert!(
            first_weak.upgrade().is_none(),
            "a displaced record is dropped"
        );
        let kept = ring.snapshot(&FlowFilter::default(), None);
        assert_eq!(kept.len(), 1_000);
        // The ring keeps the last 1,000 pushes, so each thread's records in it are its newest ones,
        // oldest first and without a gap.
        for t in 0..THREADS {
            let ports: Vec<u16> = kept
                .iter()
                .map(|r| r.client.port())
                .filter(|p| p / 10_000 == t)
                .collect();
            if let Some(&oldest) = ports.first() {
                let expected: Vec<u16> = (oldest..=t * 10_000 + PER_THREAD).collect();
                assert_eq!(ports, expected, "thread {t}");
            }
        }
    }
}
