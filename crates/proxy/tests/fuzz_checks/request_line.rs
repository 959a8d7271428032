//! The checks of the `request_line` fuzz target (`fuzz/fuzz_targets/request_line.rs` includes
//! this file), replayed on the committed corpus by `tests/fuzz_corpus.rs` on the stable toolchain.
//!
//! The input is what a client sends first: a request line (`CONNECT host:port HTTP/1.1`,
//! `GET http://host/ HTTP/1.1`) or anything else. Checked: the sniff that tells HTTP from TLS
//! decides within its bound and never changes its mind as bytes arrive; and the name the proxy
//! decides on (`host_of`) is, for every target hyper's `http` crate accepts, the host that crate
//! reads — so policy never judges one name while the connection goes to another — lower-case,
//! without a port or a trailing dot.

use tlsgate_wire::http_head::MAX_METHOD_PREFIX;
use tlsgate_wire::{HttpSniff, host_of, looks_like_http_request};

pub fn check(data: &[u8]) {
    sniff_is_bounded_and_final(data);
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut tokens = line.split(|&b| b == b' ');
    let (first, second) = (tokens.next().unwrap_or_default(), tokens.next());
    // A request line's target, else the line itself (a Host header value, an SNI-like name).
    let target = second.unwrap_or(first);
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    name_is_normalised(target);
    if let Ok(authority) = http::uri::Authority::try_from(target) {
        // CONNECT's authority-form, exactly as hyper parses it.
        agrees_with_http(&authority);
    }
    if let Some(authority) = http::Uri::try_from(target)
        .ok()
        .and_then(|u| u.authority().cloned())
    {
        // Absolute-form (`http://host:port/path`).
        agrees_with_http(&authority);
    }
}

fn sniff_is_bounded_and_final(data: &[u8]) {
    let sniff = looks_like_http_request(data);
    let head = &data[..data.len().min(MAX_METHOD_PREFIX)];
    let space = head.iter().position(|&b| b == b' ');
    let method_ok = |end: usize| end > 0 && head[..end].iter().all(u8::is_ascii_uppercase);
    match sniff {
        HttpSniff::Http => assert!(space.is_some_and(method_ok)),
        HttpSniff::Incomplete => {
            assert!(data.is_empty() || (data.len() < MAX_METHOD_PREFIX && method_ok(data.len())));
        }
        HttpSniff::NotHttp => assert!(!space.is_some_and(method_ok)),
    }
    // Fewer bytes may only say "incomplete" or the same thing.
    for cut in 0..head.len() {
        let earlier = looks_like_http_request(&data[..cut]);
        assert!(
            earlier == HttpSniff::Incomplete || earlier == sniff,
            "cut {cut}"
        );
    }
}

fn name_is_normalised(target: &str) {
    let name = host_of(target);
    assert!(name.len() <= target.len());
    assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    assert!(!name.ends_with('.'), "{name:?}");
}

fn agrees_with_http(authority: &http::uri::Authority) {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let expected = host.trim_end_matches('.').to_ascii_lowercase();
    assert_eq!(
        host_of(authority.as_str()),
        expected,
        "{:?}",
        authority.as_str()
    );
}
