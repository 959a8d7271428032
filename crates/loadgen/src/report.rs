//! Failure kinds, per-worker tallies and the JSON report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds up to this bound (longer ones are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

/// Why one attempt failed; `label()` is the key in the report's `errors` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Proxy,
    ProxyStatus,
    Tls,
    Alpn,
    Http,
    Status,
    Body,
    Timeout,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Proxy => "proxy",
            Self::ProxyStatus => "proxy_status",
            Self::Tls => "tls",
            Self::Alpn => "alpn",
            Self::Http => "http",
            Self::Status => "status",
            Self::Body => "body",
            Self::Timeout => "timeout",
        }
    }
}

/// What one worker saw.
pub struct Tally {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub bytes: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub alpn_h2: u64,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            // Three significant digits between 1 µs and MAX_LATENCY_US: about 200 KiB per worker.
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .unwrap_or_else(|_| unreachable!("constant, valid histogram bounds")),
            ok: 0,
            bytes: 0,
            errors: BTreeMap::new(),
            alpn_h2: 0,
        }
    }

    pub fn record_ok(&mut self, latency: Duration, bytes: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
        self.latency_us
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
        self.ok += 1;
        self.bytes += bytes;
    }

    pub fn record_err(&mut self, failure: Failure) {
        *self.errors.entry(failure.label()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.ok += other.ok;
        self.bytes += other.bytes;
        self.alpn_h2 += other.alpn_h2;
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// The JSON printed at the end of a run (or when `--hold` connections are up).
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub http: &'static str,
    pub concurrency: usize,
    pub requests_ok: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub h2_connections: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub req_per_s: f64,
    pub bytes_per_s: f64,
    /// Microseconds.
    pub latency_us: Latency,
    /// Connections held open (`--hold` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<usize>,
}

impl Report {
    pub fn new(
        tally: &Tally,
        elapsed: Duration,
        mode: &'static str,
        http: &'static str,
        concurrency: usize,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &tally.latency_us;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Self {
            mode,
            http,
            concurrency,
            requests_ok: tally.ok,
            errors: tally.errors.clone(),
            h2_connections: tally.alpn_h2,
            bytes: tally.bytes,
            elapsed_s: secs,
            req_per_s: tally.ok as f64 / secs,
            bytes_per_s: tally.bytes as f64 / secs,
            latency_us: Latency {
                p50: q(0.50),
                p90: q(0.90),
                p99: q(0.99),
                max: h.max(),
                mean: h.mean(),
            },
            held: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_tallies_and_reports_percentiles() {
        let mut a = Tally::new();
        for us in 1..=100u64 {
            a.record_ok(Duration::from_micros(us * 10), 5);
        }
        let mut b = Tally::new();
        b.record_err(Failure::Tls);
        b.record_err(Failure::Tls);
        b.record_ok(Duration::from_micros(5000), 1);
        a.merge(&b);
        let r = Report::new(&a, Duration::from_secs(2), "keepalive", "1", 2);
        assert_eq!(r.requests_ok, 101);
        assert_eq!(r.bytes, 501);
        assert_eq!(r.errors.get("tls"), Some(&2));
        assert!((r.req_per_s - 50.5).abs() < 1e-9);
        assert!(
            (495..=515).contains(&r.latency_us.p50),
            "{}",
            r.latency_us.p50
        );
        assert!(r.latency_us.p99 >= 990 && r.latency_us.p99 <= 1001);
        assert!(r.latency_us.max >= 4995);
    }
}
