//! Prometheus counters moved by every flow record at its one emission point ([`Metrics::count_flow`])
//! and by the accept loops, rendered as the text exposition format for `/metrics`. Every metric and
//! label is listed in docs/metrics.md; label values come from bounded sets (roles, modes, verdicts,
//! reason labels, status classes, operator-configured listener names), never from peer text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::flow::FlowRecord;

/// `(role, mode, verdict, reason)`; reason is `""` for served flows.
type FlowKey = (&'static str, &'static str, &'static str, &'static str);

#[derive(Debug, Default)]
pub struct Metrics {
    flows: Mutex<BTreeMap<FlowKey, u64>>,
    /// `(role, verdict, status class)`.
    http: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    bytes_from_clients: AtomicU64,
    bytes_to_clients: AtomicU64,
    lost: AtomicU64,
    listeners: Mutex<Vec<Arc<ListenerGauges>>>,
}

/// One listener's connection counters.
#[derive(Debug)]
pub struct ListenerGauges {
    pub listener: Arc<str>,
    pub role: &'static str,
    pub accepted: AtomicU64,
    pub active: AtomicI64,
}

/// Holds one active connection; dropping it ends it.
#[derive(Debug)]
pub struct ActiveConn(Arc<ListenerGauges>);

impl ListenerGauges {
    pub fn accept(self: &Arc<Self>) -> ActiveConn {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveConn(self.clone())
    }
}

impl Drop for ActiveConn {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn status_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

impl Metrics {
    /// Counts one emitted record.
    pub fn count_flow(&self, r: &FlowRecord) {
        let key = (
            r.role.as_str(),
            r.mode.as_str(),
            r.verdict.as_str(),
            r.reason.unwrap_or(""),
        );
        // Counters stay meaningful after a panic elsewhere: a poisoned map is still a valid map.
        *self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
        if r.http.is_some() {
            let class = r.status.map_or("none", status_class);
            *self
                .http
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((r.role.as_str(), r.verdict.as_str(), class))
                .or_default() += 1;
        }
        self.bytes_from_clients
            .fetch_add(r.bytes_from_client, Ordering::Relaxed);
        self.bytes_to_clients
            .fetch_add(r.bytes_to_client, Ordering::Relaxed);
    }

    /// Counts records a flow subscriber (the ring or an admin follower) missed by falling behind.
    pub fn count_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }

    /// The connection counters of a listener, registered once per listener.
    pub fn listener(&self, listener: Arc<str>, role: &'static str) -> Arc<ListenerGauges> {
        let gauges = Arc::new(ListenerGauges {
            listener,
            role,
            accepted: AtomicU64::new(0),
            active: AtomicI64::new(0),
        });
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(gauges.clone());
        gauges
    }

    /// The Prometheus text exposition of every metric, with the interception listeners'
    /// certificate stores (`certs`, read at scrape time).
    pub fn render(&self, certs: &[CertGauges]) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "tlsgate_flows_total",
            "counter",
            "Flow records (connections, tunnelled streams, HTTP exchanges) by outcome.",
        );
        for ((role, mode, verdict, reason), n) in self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "tlsgate_flows_total{{role=\"{role}\",mode=\"{mode}\",verdict=\"{verdict}\",reason=\"{reason}\"}} {n}"
            );
        }
        family(
            &mut out,
            "tlsgate_http_requests_total",
            "counter",
            "HTTP exchanges by verdict and response status class.",
        );
        for ((role, verdict, class), n) in self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "tlsgate_http_requests_total{{role=\"{role}\",verdict=\"{verdict}\",status_class=\"{class}\"}} {n}"
            );
        }
        family(
            &mut out,
            "tlsgate_bytes_total",
            "counter",
            "Bytes of finished flows, by direction as seen from the client.",
        );
        let _ = writeln!(
            out,
            "tlsgate_bytes_total{{direction=\"from_client\"}} {}",
            self.bytes_from_clients.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "tlsgate_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes_to_clients.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "tlsgate_flow_records_lost_total",
            "counter",
            "Flow records a subscriber (flow ring, admin follower) missed by falling behind.",
        );
        let _ = writeln!(
            out,
            "tlsgate_flow_records_lost_total {}",
            self.lost.load(Ordering::Relaxed)
        );
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        family(
            &mut out,
            "tlsgate_connections_accepted_total",
            "counter",
            "Connections accepted (and admitted) by listener.",
        );
        for g in &listeners {
            let _ = writeln!(
                out,
                "tlsgate_connections_accepted_total{{listener=\"{}\",role=\"{}\"}} {}",
                escape(&g.listener),
                g.role,
                g.accepted.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "tlsgate_connections_active",
            "gauge",
            "Connections being served by listener.",
        );
        for g in &listeners {
            let _ = writeln!(
                out,
                "tlsgate_connections_active{{listener=\"{}\",role=\"{}\"}} {}",
                escape(&g.listener),
                g.role,
                g.active.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "tlsgate_cert_mints_total",
            "counter",
            "Leaf certificates signed by an interception listener.",
        );
        for c in certs {
            let _ = writeln!(
                out,
                "tlsgate_cert_mints_total{{listener=\"{}\"}} {}",
                escape(&c.listener),
                c.mints
            );
        }
        family(
            &mut out,
            "tlsgate_cert_cache_lookups_total",
            "counter",
            "Minted-certificate cache lookups by result.",
        );
        for c in certs {
            let l = escape(&c.listener);
            let _ = writeln!(
                out,
                "tlsgate_cert_cache_lookups_total{{listener=\"{l}\",result=\"hit\"}} {}",
                c.stats.hits
            );
            let _ = writeln!(
                out,
                "tlsgate_cert_cache_lookups_total{{listener=\"{l}\",result=\"miss\"}} {}",
                c.stats.misses
            );
        }
        family(
            &mut out,
            "tlsgate_cert_cache_entries",
            "gauge",
            "Minted certificates cached.",
        );
        for c in certs {
            let _ = writeln!(
                out,
                "tlsgate_cert_cache_entries{{listener=\"{}\"}} {}",
                escape(&c.listener),
                c.stats.len
            );
        }
        out
    }
}

/// One interception listener's certificate store, read at scrape time.
#[derive(Debug, Clone)]
pub struct CertGauges {
    pub listener: String,
    pub mints: u64,
    pub stats: tlsgate_ca::CacheStats,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::context::HttpFacts;
    use crate::flow::{FlowId, Mode, Role, Verdict};

    #[test]
    fn docs_list_every_metric_and_the_ring_default() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/");
        let metrics_md = std::fs::read_to_string(format!("{docs}metrics.md")).unwrap();
        let rendered = Metrics::default().render(&[]);
        let families: Vec<&str> = rendered
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert!(families.len() >= 9);
        for name in families {
            assert!(
                metrics_md.contains(&format!("| `{name}` |")),
                "docs/metrics.md misses {name}"
            );
        }
        let flows_md = std::fs::read_to_string(format!("{docs}flows.md")).unwrap();
        let default = crate::config::FlowSettings::DEFAULT_RING_SIZE;
        assert!(flows_md.contains(&format!("ring_size: {default} ")));
        assert!(flows_md.contains(&format!(
            "(default {default}, 1..={})",
            crate::config::FlowSettings::MAX_RING_SIZE
        )));
    }

    #[test]
    fn counts_flows_requests_bytes_and_connections() {
        let m = Metrics::default();
        let mut r = FlowRecord {
            time: SystemTime::now(),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict: Verdict::Dropped,
            rule: None,
            listener: Arc::from("proxy"),
            role: Role::Intercept,
            mode: Mode::Bump,
            client: ([127, 0, 0, 1], 1).into(),
            name: None,
            upstream: None,
            reason: Some("policy_denied"),
            detail: None,
            status: Some(403),
            http: Some(HttpFacts {
                method: "GET".into(),
                url: "https://x/".into(),
                protocol: "HTTP/1.1",
                headers: Vec::new(),
            }),
            bytes_from_client: 10,
            bytes_to_client: 20,
            duration: Duration::ZERO,
        };
        m.count_flow(&r);
        m.count_flow(&r);
        r.http = None;
        r.verdict = Verdict::Forwarded;
        r.reason = None;
        m.count_flow(&r);
        let gauges = m.listener(Arc::from("pro\"xy"), "intercept");
        let conn = gauges.accept();
        let text = m.render(&[]);
        assert!(text.contains("tlsgate_flows_total{role=\"intercept\",mode=\"bump\",verdict=\"DROPPED\",reason=\"policy_denied\"} 2\n"), "{text}");
        assert!(text.contains("tlsgate_flows_total{role=\"intercept\",mode=\"bump\",verdict=\"FORWARDED\",reason=\"\"} 1\n"));
        assert!(text.contains("tlsgate_http_requests_total{role=\"intercept\",verdict=\"DROPPED\",status_class=\"4xx\"} 2\n"));
        assert!(text.contains("tlsgate_bytes_total{direction=\"from_client\"} 30\n"));
        assert!(
            text.contains(
                "tlsgate_connections_active{listener=\"pro\\\"xy\",role=\"intercept\"} 1\n"
            )
        );
        drop(conn);
        let text = m.render(&[]);
        assert!(
            text.contains(
                "tlsgate_connections_active{listener=\"pro\\\"xy\",role=\"intercept\"} 0\n"
            )
        );
        assert!(text.contains(
            "tlsgate_connections_accepted_total{listener=\"pro\\\"xy\",role=\"intercept\"} 1\n"
        ));
    }
}
