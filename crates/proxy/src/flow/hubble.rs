//! Flow records as JSON shaped like Hubble's `flow.Flow` (`{"flow": {...}}`) where the concepts
//! match, with tlsgate's own facts under `tlsgate`. Every field is documented in docs/flows.md.
//!
//! An HTTP exchange is one [`FlowRecord`] written when the response is known; it renders as two
//! Hubble flows, a REQUEST (at the time the exchange started) and a RESPONSE (with the status and
//! latency). Any other record renders as one L3_L4 flow.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{FlowRecord, Verdict};

/// The Hubble flows of `record`, in time order.
pub fn flows(record: &FlowRecord) -> Vec<Value> {
    match &record.http {
        Some(_) => vec![flow(record, L7::Request), flow(record, L7::Response)],
        None => vec![flow(record, L7::None)],
    }
}

/// Each Hubble flow of `record` as one NDJSON line (with its newline).
pub fn ndjson(record: &FlowRecord) -> String {
    let mut out = String::new();
    for flow in flows(record) {
        out.push_str(&flow.to_string());
        out.push('\n');
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum L7 {
    None,
    Request,
    Response,
}

fn flow(record: &FlowRecord, l7: L7) -> Value {
    let time = match l7 {
        L7::Request => record
            .time
            .checked_sub(record.duration)
            .unwrap_or(record.time),
        L7::None | L7::Response => record.time,
    };
    let uuid = match l7 {
        L7::Request => record.request_uuid,
        L7::None | L7::Response => record.uuid,
    };
    let upstream = record.upstream.as_deref().map(split_host_port);
    let mut ip = Map::new();
    ip.insert("source".into(), record.client.ip().to_string().into());
    if let Some((Some(addr), _)) = upstream {
        ip.insert("destination".into(), addr.ip().to_string().into());
    }
    ip.insert(
        "ipVersion".into(),
        if record.client.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
        .into(),
    );
    let mut tcp = Map::new();
    tcp.insert("source_port".into(), record.client.port().into());
    if let Some((_, Some(port))) = upstream {
        tcp.insert("destination_port".into(), port.into());
    }
    let mut flow = Map::new();
    flow.insert("time".into(), rfc3339(time).into());
    flow.insert("uuid".into(), uuid.to_string().into());
    flow.insert("verdict".into(), record.verdict.as_str().into());
    if let (Some(reason), true) = (record.reason, record.verdict != Verdict::Forwarded) {
        flow.insert(
            "drop_reason_desc".into(),
            reason.to_ascii_uppercase().into(),
        );
    }
    flow.insert("IP".into(), Value::Object(ip));
    flow.insert("l4".into(), json!({ "TCP": tcp }));
    let names: Vec<&str> = record.name.as_deref().into_iter().collect();
    flow.insert("destination_names".into(), json!(names));
    let kind = if l7 == L7::None { "L3_L4" } else { "L7" };
    flow.insert("Type".into(), kind.into());
    flow.insert("traffic_direction".into(), "EGRESS".into());
    flow.insert("is_reply".into(), false.into());
    if let (Some(http), false) = (&record.http, l7 == L7::None) {
        let headers: Vec<Value> = http
            .headers
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
        let mut h = Map::new();
        h.insert("method".into(), http.method.as_str().into());
        h.insert("url".into(), http.url.as_str().into());
        h.insert("protocol".into(), http.protocol.into());
        h.insert("headers".into(), Value::Array(headers));
        let mut l7_obj = Map::new();
        if l7 == L7::Response {
            h.insert("code".into(), record.status.unwrap_or(0).into());
            l7_obj.insert("type".into(), "RESPONSE".into());
            l7_obj.insert("latency_ns".into(), nanos(record.duration).into());
        } else {
            l7_obj.insert("type".into(), "REQUEST".into());
        }
        l7_obj.insert("http".into(), Value::Object(h));
        flow.insert("l7".into(), Value::Object(l7_obj));
    }
    flow.insert("tlsgate".into(), tlsgate_facts(record));
    json!({ "flow": flow })
}

fn tlsgate_facts(record: &FlowRecord) -> Value {
    let tls = record.tls.as_ref();
    let upstream_cert = tls.and_then(|t| t.upstream_cert.as_ref()).map(|c| {
        json!({
            "subject": &*c.subject,
            "issuer": &*c.issuer,
            "verified": c.verified,
            "error": c.error,
        })
    });
    json!({
        "listener": &*record.listener,
        "role": record.role.as_str(),
        "mode": record.mode.as_str(),
        "sni": record.name,
        "alpn": tls.map(|t| &*t.alpn),
        "tls_version": tls.and_then(|t| t.version),
        "upstream_cert": upstream_cert,
        "upstream": record.upstream,
        "rule": record.rule,
        "reason": record.reason,
        "error": record.detail,
        "bytes_in": record.bytes_from_client,
        "bytes_out": record.bytes_to_client,
        "duration_ns": nanos(record.duration),
    })
}

/// `(address if the host is an IP literal, port)` of `host:port` / `[v6]:port`.
fn split_host_port(text: &str) -> (Option<SocketAddr>, Option<u16>) {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return (Some(addr), Some(addr.port()));
    }
    let port = text.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    (None, port)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `2026-11-22T18:20:01.123456789Z` (UTC, nanoseconds, as Hubble writes it).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::context::HttpFacts;
    use crate::flow::{FlowId, Mode, Role};

    fn record() -> FlowRecord {
        FlowRecord {
            time: UNIX_EPOCH + Duration::from_secs(1_795_803_601) + Duration::from_millis(123),
            uuid: FlowId::random(),
            request_uuid: FlowId::random(),
            verdict: Verdict::Forwarded,
            rule: None,
            listener: Arc::from("proxy"),
            role: Role::Intercept,
            mode: Mode::Bump,
            client: "127.0.0.1:51234".parse().unwrap(),
            name: Some("www.example.com".into()),
            upstream: Some("93.184.215.14:443".into()),
            reason: None,
            detail: None,
            status: None,
            http: None,
            bytes_from_client: 517,
            bytes_to_client: 4096,
            duration: Duration::from_millis(20),
            tls: None,
        }
    }

    #[test]
    fn writes_rfc3339_utc_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_803_601) + Duration::from_millis(123);
        assert_eq!(rfc3339(t), "2026-11-27T18:20:01.123000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn connection_record_is_one_l3_l4_flow() {
        let flows = flows(&record());
        assert_eq!(flows.len(), 1);
        let f = &flows[0]["flow"];
        assert_eq!(f["Type"], "L3_L4");
        assert_eq!(f["verdict"], "FORWARDED");
        assert_eq!(f["time"], "2026-11-27T18:20:01.123000000Z");
        assert_eq!(f["IP"]["source"], "127.0.0.1");
        assert_eq!(f["IP"]["destination"], "93.184.215.14");
        assert_eq!(f["l4"]["TCP"]["source_port"], 51234);
        assert_eq!(f["l4"]["TCP"]["destination_port"], 443);
        assert_eq!(f["destination_names"], json!(["www.example.com"]));
        assert_eq!(f["traffic_direction"], "EGRESS");
        assert_eq!(f["is_reply"], false);
        assert!(f.get("l7").is_none());
        assert!(f.get("drop_reason_desc").is_none());
        assert_eq!(f["tlsgate"]["listener"], "proxy");
        assert_eq!(f["tlsgate"]["role"], "intercept");
        assert_eq!(f["tlsgate"]["mode"], "bump");
        assert_eq!(f["tlsgate"]["sni"], "www.example.com");
        assert_eq!(f["tlsgate"]["bytes_in"], 517);
        assert_eq!(f["tlsgate"]["bytes_out"], 4096);
        let uuid = f["uuid"].as_str().unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "version 4 uuid: {uuid}");
    }

    #[test]
    fn refused_request_is_a_request_and_a_dropped_response() {
        let mut r = record();
        r.verdict = Verdict::Dropped;
        r.reason = Some("policy_denied");
        r.rule = Some("blog".into());
        r.status = Some(403);
        r.upstream = Some("www.facebook.com:443".into());
        r.http = Some(HttpFacts {
            method: "GET".into(),
            url: "https://www.facebook.com/cucumber".into(),
            protocol: "HTTP/1.1",
            headers: vec![
                ("host".into(), "www.facebook.com".into()),
                ("authorization".into(), HttpFacts::REDACTED.into()),
            ],
        });
        let flows = flows(&r);
        assert_eq!(flows.len(), 2);
        let (req, resp) = (&flows[0]["flow"], &flows[1]["flow"]);
        assert_eq!(req["Type"], "L7");
        assert_eq!(req["l7"]["type"], "REQUEST");
        assert!(req["l7"]["http"].get("code").is_none());
        assert!(req["l7"].get("latency_ns").is_none());
        assert_eq!(req["time"], "2026-11-27T18:20:01.103000000Z");
        assert_eq!(resp["l7"]["type"], "RESPONSE");
        assert_eq!(resp["l7"]["latency_ns"], 20_000_000);
        assert_ne!(req["uuid"], resp["uuid"]);
        for f in [req, resp] {
            assert_eq!(f["verdict"], "DROPPED");
            assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
            assert_eq!(f["tlsgate"]["reason"], "policy_denied");
            assert_eq!(f["tlsgate"]["rule"], "blog");
            assert!(f["IP"].get("destination").is_none());
            assert_eq!(f["l4"]["TCP"]["destination_port"], 443);
            let http = &f["l7"]["http"];
            assert_eq!(http["method"], "GET");
            assert_eq!(http["url"], "https://www.facebook.com/cucumber");
            assert_eq!(http["protocol"], "HTTP/1.1");
            assert_eq!(
                http["headers"][1],
                json!({"key": "authorization", "value": "[REDACTED]"})
            );
        }
        assert_eq!(resp["l7"]["http"]["code"], 403);
    }

    #[test]
    fn redacts_credentials_and_bounds_headers() {
        let mut builder = http::Request::builder()
            .uri("/x")
            .header("Authorization", "Bearer secret")
            .header("Cookie", "a=b")
            .header("Proxy-Authorization", "Basic x")
            .header("x-long", "v".repeat(1000));
        for i in 0..40 {
            builder = builder.header(format!("x-{i}"), "1");
        }
        let facts = HttpFacts::of(&builder.body(()).unwrap(), "https", "h.example");
        assert_eq!(facts.headers.len(), HttpFacts::MAX_HEADERS);
        let value = |k: &str| {
            facts
                .headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(value("authorization").as_deref(), Some("[REDACTED]"));
        assert_eq!(value("cookie").as_deref(), Some("[REDACTED]"));
        assert_eq!(value("proxy-authorization").as_deref(), Some("[REDACTED]"));
        let long = value("x-long").unwrap();
        assert_eq!(long.len(), HttpFacts::MAX_HEADER_VALUE + 3);
        assert!(!facts.headers.iter().any(|(_, v)| v.contains("secret")));
        assert_eq!(facts.protocol, "HTTP/1.1");
        assert_eq!(facts.url, "https://h.example/x");
    }
}
