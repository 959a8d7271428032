//! Shared helpers for the ClientHello tests: captured vectors, record framing, a ClientHello
//! builder for hellos the local clients cannot make, a map of a hello's length fields, and the
//! invariants every result must satisfy.
#![allow(dead_code)] // each test binary uses a different subset

use tlsgate_wire::{HelloError, Peek, peek_client_hello};

/// The runtime's default bound.
pub const MAX: usize = 16 * 1024;

pub const HOST: &str = "private.service.example.com";

/// A ClientHello captured from a real client by `testdata/capture.sh`.
pub struct Vector {
    pub name: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! vector {
    ($name:literal) => {
        Vector {
            name: $name,
            bytes: include_bytes!(concat!("../../testdata/", $name, ".bin")),
        }
    };
}

pub const VECTORS: &[Vector] = &[
    vector!("curl_h2"),
    vector!("curl_http11"),
    vector!("curl_no_alpn"),
    vector!("curl_tls12_only"),
    vector!("openssl_tls13"),
    vector!("openssl_tls12"),
    vector!("openssl_no_sni"),
    vector!("openssl_no_sni_tls12"),
    vector!("openssl_alpn_mixed_case_sni"),
];

pub fn vector(name: &str) -> &'static [u8] {
    VECTORS
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
        .bytes
}

pub fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The handshake message (header included) carried by the handshake records at the start of
/// `stream`. Test vectors are well formed, so this walker trusts their lengths.
pub fn handshake_message(stream: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    let mut pos = 0;
    while pos + 5 <= stream.len() && stream[pos] == 0x16 {
        let len = u16_at(stream, pos + 3);
        message.extend_from_slice(&stream[pos + 5..pos + 5 + len]);
        pos += 5 + len;
        if message.len() >= 4 {
            let total = 4 + (usize::from(message[1]) << 16 | u16_at(&message, 2));
            if message.len() >= total {
                message.truncate(total);
                break;
            }
        }
    }
    message
}

/// Frames `message` into handshake records whose payloads have the given sizes (cycled; the
/// last record takes what is left).
pub fn into_records(message: &[u8], sizes: &[usize]) -> Vec<u8> {
    assert!(sizes.iter().all(|&s| s > 0));
    let mut out = Vec::with_capacity(message.len() * 6);
    let mut rest = message;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (fragment, tail) = rest.split_at(size.min(rest.len()));
        out.extend_from_slice(&record(0x16, fragment));
        rest = tail;
    }
    out
}

/// One TLS record with legacy version 3.1, as clients send their first record.
pub fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload fits a record");
    let mut out = vec![content_type, 3, 1];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `message` in one record.
pub fn one_record(message: &[u8]) -> Vec<u8> {
    into_records(message, &[message.len().max(1)])
}

/// Rewrites the 24-bit handshake length of `message` to match its actual size.
pub fn fix_handshake_len(message: &mut [u8]) {
    let len = u32::try_from(message.len() - 4).unwrap();
    message[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
}

/// Checks what every result must satisfy, whatever the input. Returns the result for chaining.
pub fn assert_invariants(buf: &[u8], max: usize, peek: &Peek) {
    match peek {
        Peek::Complete(info) => {
            assert!(info.consumed > 0, "Complete with nothing consumed");
            assert!(info.consumed <= buf.len(), "consumed past the input");
            assert!(info.consumed <= max, "consumed past the bound");
            assert!(
                info.hello_len + 4 + 5 <= info.consumed,
                "hello larger than its records"
            );
            if let Some(sni) = &info.sni {
                assert!(!sni.is_empty());
                assert!(!sni.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()));
            }
            assert_eq!(
                &peek_client_hello(&buf[..info.consumed], max),
                peek,
                "result changes when cut at `consumed`"
            );
        }
        Peek::Incomplete { need } => {
            assert!(*need >= 1, "Incomplete needs nothing");
            assert!(
                buf.is_empty() || buf.len() + need <= max,
                "asks for bytes past the bound"
            );
        }
        Peek::Invalid(e) => {
            assert!(!buf.is_empty(), "empty input judged invalid");
            assert!(!e.label().is_empty());
        }
        Peek::NotTls => {
            assert!(buf.first() != Some(&0x16) || buf.get(1) != Some(&3));
        }
    }
}

/// Peeks and checks invariants.
pub fn peek(buf: &[u8], max: usize) -> Peek {
    let peek = peek_client_hello(buf, max);
    assert_invariants(buf, max, &peek);
    peek
}

pub fn complete(buf: &[u8], max: usize) -> tlsgate_wire::ClientHelloInfo {
    match peek(buf, max) {
        Peek::Complete(info) => info,
        other => panic!("expected Complete, got {other:?}"),
    }
}

/// Feeds `stream` to the peeker one growing prefix at a time, cut at `cuts` (sorted, within the
/// stream), as a runtime reading TCP segments would, and checks that every prefix before the end
/// is Incomplete with a `need` that does not reach past the end.
pub fn feed_in_segments(stream: &[u8], cuts: &[usize], max: usize) -> Peek {
    for &cut in cuts.iter().filter(|&&c| c < stream.len()) {
        match peek(&stream[..cut], max) {
            Peek::Incomplete { need } => assert!(
                cut + need <= stream.len(),
                "prefix {cut}: need {need} overshoots {}",
                stream.len()
            ),
            other => panic!("prefix {cut} of {}: {other:?}", stream.len()),
        }
    }
    peek(stream, max)
}

// ---- a ClientHello builder -------------------------------------------------------------------

pub const GREASE: [u16; 4] = [0x0a0a, 0x3a3a, 0x8a8a, 0xdada];
pub const X25519MLKEM768: u16 = 0x11ec;
pub const X25519: u16 = 0x001d;

/// Builds ClientHello handshake messages field by field. Lengths are computed from the contents
/// unless a test overrides them after building.
#[derive(Clone)]
pub struct HelloBuilder {
    pub legacy_version: u16,
    pub session_id: Vec<u8>,
    pub cipher_suites: Vec<u16>,
    pub compression: Vec<u8>,
    /// `None` omits the extensions block (allowed before TLS 1.3).
    pub extensions: Option<Vec<(u16, Vec<u8>)>>,
}

impl Default for HelloBuilder {
    fn default() -> Self {
        Self {
            legacy_version: 0x0303,
            session_id: vec![0x5e; 32],
            cipher_suites: vec![0x1301, 0x1302, 0xc02b],
            compression: vec![0],
            extensions: Some(Vec::new()),
        }
    }
}

impl HelloBuilder {
    pub fn ext(mut self, ext_type: u16, data: Vec<u8>) -> Self {
        self.extensions
            .get_or_insert_with(Vec::new)
            .push((ext_type, data));
        self
    }

    /// The handshake message: type 1, 24-bit length, body.
    pub fn message(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.legacy_version.to_be_bytes());
        body.extend((0u8..32).map(|i| i.wrapping_mul(37)));
        body.push(u8::try_from(self.session_id.len()).unwrap());
        body.extend_from_slice(&self.session_id);
        body.extend_from_slice(&u16_len(self.cipher_suites.len() * 2));
        for s in &self.cipher_suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.push(u8::try_from(self.compression.len()).unwrap());
        body.extend_from_slice(&self.compression);
        if let Some(extensions) = &self.extensions {
            let mut block = Vec::new();
            for (ext_type, data) in extensions {
                block.extend_from_slice(&ext_type.to_be_bytes());
                block.extend_from_slice(&u16_len(data.len()));
                block.extend_from_slice(data);
            }
            body.extend_from_slice(&u16_len(block.len()));
            body.extend_from_slice(&block);
        }
        let mut message = vec![1, 0, 0, 0];
        message.extend_from_slice(&body);
        fix_handshake_len(&mut message);
        message
    }
}

pub fn u16_len(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap().to_be_bytes()
}

pub fn sni_ext(hosts: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for host in hosts {
        list.push(0);
        list.extend_from_slice(&u16_len(host.len()));
        list.extend_from_slice(host);
    }
    prefixed16(&list)
}

pub fn alpn_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(u8::try_from(name.len()).unwrap());
        list.extend_from_slice(name);
    }
    prefixed16(&list)
}

pub fn versions_ext(versions: &[u16]) -> Vec<u8> {
    let mut out = vec![u8::try_from(versions.len() * 2).unwrap()];
    for v in versions {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

pub fn key_share_ext(shares: &[(u16, usize)]) -> Vec<u8> {
    let mut list = Vec::new();
    for &(group, len) in shares {
        list.extend_from_slice(&group.to_be_bytes());
        list.extend_from_slice(&u16_len(len));
        list.extend((0..len).map(|i| (i % 251) as u8));
    }
    prefixed16(&list)
}

pub fn prefixed16(bytes: &[u8]) -> Vec<u8> {
    let mut out = u16_len(bytes.len()).to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A hello shaped like a current Chrome/Firefox one (SYNTHESIZED: Debian 12's OpenSSL 3.0 cannot
/// send X25519MLKEM768): GREASE cipher suites, extensions and versions, SNI, ALPN h2 + http/1.1,
/// a 1216-byte X25519MLKEM768 key share next to an x25519 one, and padding. About 1.9 KB, so a
/// browser's TLS stack may put it into two records.
pub fn browser_like_pq_hello(host: &str) -> Vec<u8> {
    HelloBuilder {
        cipher_suites: vec![
            GREASE[0], 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
            0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        ..HelloBuilder::default()
    }
    .ext(GREASE[1], Vec::new())
    .ext(0, sni_ext(&[host.as_bytes()]))
    .ext(23, Vec::new()) // extended_master_secret
    .ext(65281, vec![0]) // renegotiation_info
    .ext(
        10,
        prefixed16(&[0x0a, 0x0a, 0x11, 0xec, 0x00, 0x1d, 0x00, 0x17]),
    ) // supported_groups
    .ext(11, vec![1, 0]) // ec_point_formats
    .ext(35, Vec::new()) // session_ticket
    .ext(16, alpn_ext(&[b"h2", b"http/1.1"]))
    .ext(5, vec![1, 0, 0, 0, 0]) // status_request
    .ext(13, prefixed16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01])) // signature_algorithms
    .ext(18, Vec::new()) // signed_certificate_timestamp
    .ext(
        51,
        key_share_ext(&[(GREASE[2], 1), (X25519MLKEM768, 1216), (X25519, 32)]),
    )
    .ext(45, vec![1, 1]) // psk_key_exchange_modes
    .ext(43, versions_ext(&[GREASE[3], 0x0304, 0x0303]))
    .ext(27, vec![2, 0, 2]) // compress_certificate
    .ext(17513, prefixed16(&[2, b'h', b'2'])) // application_settings
    .ext(GREASE[0], vec![0])
    .ext(21, vec![0; 200]) // padding
    .message()
}

// ---- where a hello keeps its length fields ---------------------------------------------------

/// A length field of a ClientHello handshake message.
#[derive(Debug, Clone)]
pub struct LengthField {
    /// Offset in the handshake message (header included).
    pub offset: usize,
    /// 1 or 2 bytes.
    pub width: usize,
    /// Bytes between the end of this field and the end of its enclosing vector: a value of
    /// `room + 1` runs past it.
    pub room: usize,
    /// The error a value running past the enclosing vector must produce.
    pub overflow: HelloError,
    pub what: &'static str,
}

/// Locates every length field of a well-formed ClientHello handshake message.
pub fn length_fields(message: &[u8]) -> Vec<LengthField> {
    let end = message.len();
    let mut fields = Vec::new();
    let mut push = |offset: usize, width: usize, end: usize, overflow, what| {
        fields.push(LengthField {
            offset,
            width,
            room: end - offset - width,
            overflow,
            what,
        });
    };
    let mut p = 4 + 2 + 32;
    push(p, 1, end, HelloError::TruncatedSessionId, "session_id");
    p += 1 + usize::from(message[p]);
    push(
        p,
        2,
        end,
        HelloError::TruncatedCipherSuites,
        "cipher_suites",
    );
    p += 2 + u16_at(message, p);
    push(p, 1, end, HelloError::TruncatedCompression, "compression");
    p += 1 + usize::from(message[p]);
    if p == end {
        return fields;
    }
    push(p, 2, end, HelloError::TruncatedExtensions, "extensions");
    let block_end = p + 2 + u16_at(message, p);
    p += 2;
    while p < block_end {
        let ext_type = u16_at(message, p);
        let len_at = p + 2;
        push(
            len_at,
            2,
            block_end,
            HelloError::TruncatedExtension,
            "extension",
        );
        let data = len_at + 2;
        let data_end = data + u16_at(message, len_at);
        match ext_type {
            0 => {
                push(
                    data,
                    2,
                    data_end,
                    HelloError::BadSniList,
                    "server_name list",
                );
                let mut q = data + 2;
                while q < data_end {
                    push(q + 1, 2, data_end, HelloError::BadSniList, "host_name");
                    q += 3 + u16_at(message, q + 1);
                }
            }
            16 => {
                push(data, 2, data_end, HelloError::BadAlpn, "alpn list");
                let mut q = data + 2;
                while q < data_end {
                    push(q, 1, data_end, HelloError::BadAlpn, "alpn name");
                    q += 1 + usize::from(message[q]);
                }
            }
            43 => push(
                data,
                1,
                data_end,
                HelloError::BadSupportedVersions,
                "versions",
            ),
            _ => {}
        }
        p = data_end;
    }
    fields
}
