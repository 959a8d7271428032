//! ClientHellos captured from real curl and openssl clients (see `testdata/capture.sh`).

mod common;

use common::*;
use tlsgate_wire::{HelloError, Peek};

const TLS13: u16 = 0x0304;
const TLS12: u16 = 0x0303;
/// OpenSSL 3.0 with its default minimum (TLS 1.0) lists every version it would accept.
const ALL: &[u16] = &[TLS13, TLS12, 0x0302, 0x0301];

struct Expected {
    name: &'static str,
    sni: Option<&'static str>,
    alpn: &'static [&'static [u8]],
    versions: &'static [u16],
}

/// What each client was told to send, per the command line in `capture.sh`.
const EXPECTED: &[Expected] = &[
    Expected {
        name: "curl_h2",
        sni: Some(HOST),
        alpn: &[b"h2", b"http/1.1"],
        versions: ALL,
    },
    Expected {
        name: "curl_http11",
        sni: Some(HOST),
        alpn: &[b"http/1.1"],
        versions: ALL,
    },
    Expected {
        name: "curl_no_alpn",
        sni: Some(HOST),
        alpn: &[],
        versions: ALL,
    },
    // curl offers h2 by default; OpenSSL omits supported_versions when TLS 1.3 is disabled.
    Expected {
        name: "curl_tls12_only",
        sni: Some(HOST),
        alpn: &[b"h2", b"http/1.1"],
        versions: &[],
    },
    Expected {
        name: "openssl_tls13",
        sni: Some(HOST),
        alpn: &[],
        versions: &[TLS13],
    },
    Expected {
        name: "openssl_tls12",
        sni: Some(HOST),
        alpn: &[],
        versions: &[],
    },
    Expected {
        name: "openssl_no_sni",
        sni: None,
        alpn: &[],
        versions: ALL,
    },
    Expected {
        name: "openssl_no_sni_tls12",
        sni: None,
        alpn: &[],
        versions: &[],
    },
    Expected {
        name: "openssl_alpn_mixed_case_sni",
        sni: Some(HOST),
        alpn: &[b"h2", b"http/1.1"],
        versions: ALL,
    },
];

#[test]
fn reads_sni_alpn_and_versions_from_every_captured_client() {
    assert_eq!(EXPECTED.len(), VECTORS.len());
    for want in EXPECTED {
        let bytes = vector(want.name);
        let info = complete(bytes, MAX);
        assert_eq!(info.sni.as_deref(), want.sni, "{}", want.name);
        assert_eq!(info.alpn, want.alpn, "{}", want.name);
        assert_eq!(info.supported_versions, want.versions, "{}", want.name);
        assert_eq!(info.legacy_version, TLS12, "{}", want.name);
        assert_eq!(info.consumed, bytes.len(), "{}", want.name);
        assert_eq!(
            info.hello_len + 4,
            handshake_message(bytes).len(),
            "{}",
            want.name
        );
    }
}

#[test]
fn lower_cases_a_mixed_case_sni() {
    let raw = vector("openssl_alpn_mixed_case_sni");
    assert!(
        raw.windows(7).any(|w| w == b"Private"),
        "capture keeps the client's case"
    );
    assert_eq!(complete(raw, MAX).sni.as_deref(), Some(HOST));
}

#[test]
fn every_prefix_of_a_real_hello_is_incomplete_then_complete() {
    for v in VECTORS {
        let cuts: Vec<usize> = (0..v.bytes.len()).collect();
        let whole = feed_in_segments(v.bytes, &cuts, MAX);
        assert_eq!(whole, Peek::Complete(complete(v.bytes, MAX)), "{}", v.name);
    }
}

#[test]
fn keeps_sni_across_one_byte_records() {
    for v in VECTORS {
        let message = handshake_message(v.bytes);
        let split = into_records(&message, &[1]);
        assert_eq!(split.len(), message.len() * 6);
        let original = complete(v.bytes, MAX);
        let info = complete(&split, split.len());
        assert_eq!(info.consumed, split.len());
        assert_eq!(info.sni, original.sni, "{}", v.name);
        assert_eq!(info.alpn, original.alpn, "{}", v.name);
        assert_eq!(
            info.supported_versions, original.supported_versions,
            "{}",
            v.name
        );
        assert_eq!(info.hello_len, original.hello_len, "{}", v.name);
    }
}

#[test]
fn every_prefix_of_one_byte_records_is_incomplete() {
    let message = handshake_message(vector("curl_h2"));
    let split = into_records(&message, &[1]);
    let cuts: Vec<usize> = (0..split.len()).collect();
    let info = match feed_in_segments(&split, &cuts, split.len()) {
        Peek::Complete(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.sni.as_deref(), Some(HOST));
}

#[test]
fn ignores_records_after_the_hello() {
    let hello = vector("curl_h2");
    let mut stream = hello.to_vec();
    stream.extend_from_slice(&record(0x14, &[1])); // change_cipher_spec
    stream.extend_from_slice(&record(0x17, b"early data")); // application_data
    let info = complete(&stream, MAX);
    assert_eq!(info.consumed, hello.len());
    assert_eq!(Peek::Complete(info), peek(hello, MAX));
}

#[test]
fn accepts_a_hello_exactly_at_the_bound_and_rejects_one_byte_over() {
    for v in VECTORS {
        assert!(
            matches!(peek(v.bytes, v.bytes.len()), Peek::Complete(_)),
            "{}",
            v.name
        );
        assert_eq!(
            peek(v.bytes, v.bytes.len() - 1),
            Peek::Invalid(HelloError::TooLarge),
            "{}",
            v.name
        );
    }
}

#[test]
fn rejects_an_oversized_hello_from_its_first_record_header() {
    let bytes = vector("curl_h2");
    // The record header alone declares 517 bytes of records; a 512-byte bound is already crossed.
    assert_eq!(peek(&bytes[..5], 512), Peek::Invalid(HelloError::TooLarge));
}

#[test]
fn rejects_a_hello_over_the_bound_as_soon_as_its_split_handshake_header_arrives() {
    let message = handshake_message(vector("curl_h2"));
    let split = into_records(&message, &[1]);
    // After the 4-byte handshake header (four 1-byte records, 24 bytes), the hello still needs
    // 513 bytes and at least one more record header: 542 > 500, decided right there.
    assert_eq!(
        peek(&split[..4 * 6], 500),
        Peek::Invalid(HelloError::TooLarge)
    );
    assert!(matches!(
        peek(&split[..3 * 6], 500),
        Peek::Incomplete { .. }
    ));
}
