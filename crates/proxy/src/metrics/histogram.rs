//! A Prometheus histogram with fixed bucket bounds and no lock: one atomic counter per bucket and an
//! atomic sum, so observing on the data path is two relaxed `fetch_add`s.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// HTTP request latency buckets in seconds: Prometheus' default set, with 1 ms below it (answers the
/// proxy gives itself: refusals, 403s) and 30 s, 60 s above it (bumped requests to slow origins).
pub const REQUEST_SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Certificate mint latency buckets in seconds: signing a leaf takes tens of microseconds with an
/// ECDSA P-256 CA key, about a millisecond with RSA-2048 and several with RSA-4096; the top buckets
/// show a starved blocking pool.
pub const MINT_SECONDS_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Durations observed into fixed buckets (`le` bounds in seconds, ascending).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; the last one is above every bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// Sum of all observations, in nanoseconds (wraps after 584 years of summed latency).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration. Lock-free.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        // The first bucket whose bound is >= the value (Prometheus buckets are `le`); at most
        // bounds.len(), the +Inf bucket, which `counts` always has.
        let i = self.bounds.partition_point(|&bound| bound < seconds);
        if let Some(count) = self.counts.get(i) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of `name`; `labels` are the series' other
    /// labels (`role="edge"`, or empty). `_count` equals the `+Inf` bucket by construction.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive_of_their_bound() {
        let h = Histogram::new(&[0.001, 0.01, 1.0]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1)); // exactly on a bound: counted in le="0.001"
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "role=\"edge\"");
        let expected = "x_seconds_bucket{role=\"edge\",le=\"0.001\"} 2\n\
             x_seconds_bucket{role=\"edge\",le=\"0.01\"} 2\n\
             x_seconds_bucket{role=\"edge\",le=\"1\"} 3\n\
             x_seconds_bucket{role=\"edge\",le=\"+Inf\"} 4\n\
             x_seconds_sum{role=\"edge\"} 5.0215\n\
             x_seconds_count{role=\"edge\"} 4\n";
        assert_eq!(out, expected);
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn renders_without_labels() {
        let h = Histogram::new(&MINT_SECONDS_BUCKETS);
        let mut out = String::new();
        h.render(&mut out, "m", "");
        assert!(out.starts_with("m_bucket{le=\"0.0001\"} 0\n"), "{out}");
        assert!(out.contains("m_bucket{le=\"0.00025\"} 0\n"));
        assert!(
            out.ends_with("m_bucket{le=\"+Inf\"} 0\nm_sum 0\nm_count 0\n"),
            "{out}"
        );
    }

    #[test]
    fn bounds_ascend() {
        for bounds in [&REQUEST_SECONDS_BUCKETS[..], &MINT_SECONDS_BUCKETS[..]] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(&REQUEST_SECONDS_BUCKETS));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe(Duration::from_micros(i * 7 + t));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.count(), 40_000);
    }
}
