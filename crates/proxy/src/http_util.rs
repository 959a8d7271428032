//! Small HTTP helpers shared by the edge's and the relay's HTTP services.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::error::ConnError;
use crate::transport::Body;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies must not forward.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those named in `Connection`, and `Upgrade`.
///
/// Runs on every forwarded request and response, so the usual case allocates nothing: the names
/// are removed as text (`HeaderMap` looks `&str` names up without making a `HeaderName`), from a
/// `Connection` value that is the request's own reference-counted bytes.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut connection = headers.get_all(header::CONNECTION).iter();
    match (connection.next().cloned(), connection.next().is_some()) {
        (None, _) => {}
        (Some(only), false) => remove_named(headers, &only),
        (Some(_), true) => {
            let all: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for value in &all {
                remove_named(headers, value);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Removes the headers a `Connection` value names (a comma-separated list; case does not matter).
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(names) = connection.to_str() else {
        return;
    };
    for name in names.split(',').map(str::trim) {
        headers.remove(name);
    }
}

/// `host:port`, as a flow record names an upstream: what `format!("{host}:{port}")` gives, in a
/// string allocated once at its final size (`format!` starts it empty and grows it as it writes).
pub fn host_port(host: &str, port: u16) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(host.len() + ":65535".len());
    let _ = write!(text, "{host}:{port}");
    text
}

/// `addr` as text (`ip:port`, `[ipv6]:port`), as a flow record names a relay endpoint, in a string
/// allocated once.
pub fn addr_text(addr: std::net::SocketAddr) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".len());
    let _ = write!(text, "{addr}");
    text
}

/// Whether a request asks for a protocol upgrade (e.g. WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The authority a request names: its absolute URI's (`:authority` in HTTP/2, absolute-form in
/// HTTP/1.1, which RFC 9112 says wins), else its Host header.
pub fn request_authority<B>(req: &http::Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(http::uri::Authority::as_str)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
}

/// The origin-form target (`/path?query`) of a URI, `/` when it has none.
pub fn origin_form(uri: &http::Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The host part of `host[:port]` (brackets kept off IPv6 literals), lower-cased: a pure parser,
/// so it lives in tlsgate-wire and is fuzzed there (`fuzz/fuzz_targets/request_line.rs`).
pub use tlsgate_wire::host_of;

/// A short plain-text response from tlsgate itself, naming the reason label (never peer text).
pub fn local_response(status: StatusCode, error: &ConnError) -> Response<Body> {
    let body = format!("tlsgate: {} ({})\n", error, error.reason());
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert("x-tlsgate-reason", HeaderValue::from_static(error.reason()));
    response
}

/// The status tlsgate answers with for an error on a forwarded request or CONNECT.
pub fn status_for(error: &ConnError) -> StatusCode {
    match error {
        e if e.is_policy() => StatusCode::FORBIDDEN,
        ConnError::UpstreamConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
        ConnError::RelayUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ConnError::RelayRefused(code) => {
            StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_brackets_and_case() {
        assert_eq!(host_of("Example.COM:443"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_of("example.com.:80"), "example.com");
    }

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn host_port_and_addr_text_read_as_format_does() {
        for (host, port) in [
            ("a.example", 443),
            ("2001:db8::1", 8080),
            ("", 1),
            ("x", 65535),
        ] {
            let text = host_port(host, port);
            assert_eq!(text, format!("{host}:{port}"));
            assert!(text.capacity() >= text.len());
        }
        for addr in ["127.0.0.1:40000", "[2001:db8::1]:443", "[fe80::1%2]:65535"] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            assert_eq!(addr_text(addr), addr.to_string());
        }
    }

    /// Names in any case, across several `Connection` lines, with empty and invalid list items.
    #[test]
    fn strips_what_every_connection_line_names() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("X-One, , bad name"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-two,KEEP-ALIVE"),
        );
        for name in ["x-one", "x-two", "keep-alive", "x-three"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-three"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("example.test"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host"]);
    }
}
