//! TLS ClientHello peeking: facts from the first bytes of a connection without consuming them.
//!
//! The parser works in two steps:
//! 1. **Reassembly** walks TLS records from the start of the buffer and joins the fragments of the
//!    handshake message, whatever the record and TCP segment boundaries (a ClientHello with a
//!    post-quantum key share easily spans two records; hostile clients use 1-byte records). The
//!    size bound `max` applies to the records carrying the hello, headers included, and is
//!    enforced as soon as a length field makes it certain that the bound will be crossed.
//! 2. **Parsing** reads the complete handshake body with a bounded [`Reader`]; every length field
//!    is checked against its enclosing length, and each way it can be wrong has its own
//!    [`HelloError`] variant.
//!
//! Nothing allocates in proportion to a claimed length: fragments are copied only when the hello
//! spans records, and only the bytes actually present (at most `max`).

/// Largest TLS record payload accepted: 2^14 plus the 256 bytes RFC 5246 allows for compression.
pub const MAX_RECORD_PAYLOAD: usize = 16384 + 256;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
const RECORD_VERSION_MAJOR: u8 = 3;
/// `legacy_session_id` is at most 32 bytes (RFC 8446 §4.1.2).
const MAX_SESSION_ID_LEN: usize = 32;
/// A DNS name is at most 253 characters; 255 leaves room for a trailing dot and stays a safe bound.
const MAX_HOST_NAME_LEN: usize = 255;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const SNI_TYPE_HOST_NAME: u8 = 0;

/// Facts read from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `server_name` host name, lower-cased as sent (ASCII), if present.
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order, GREASE identifiers (RFC 8701) removed.
    pub alpn: Vec<Vec<u8>>,
    /// `legacy_version` of the ClientHello body.
    pub legacy_version: u16,
    /// Versions from `supported_versions`, GREASE removed.
    pub supported_versions: Vec<u16>,
    /// Length of the handshake message body (without the 4-byte handshake header).
    pub hello_len: usize,
    /// Bytes of the input, from the start, that carry the whole ClientHello (all records).
    pub consumed: usize,
}

/// What a parse of the first bytes says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A whole ClientHello was read.
    Complete(ClientHelloInfo),
    /// The bytes so far are a valid prefix; at least `need` more bytes are required.
    ///
    /// `need` is a lower bound (always ≥ 1): reading exactly `need` more bytes never reads past
    /// the end of the records that carry the hello.
    Incomplete { need: usize },
    /// The bytes are TLS but malformed or over the bound.
    Invalid(HelloError),
    /// The first bytes are not a TLS handshake record.
    NotTls,
}

/// Why a ClientHello was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The records carrying the ClientHello need more bytes than the configured bound.
    #[error("ClientHello exceeds the size bound")]
    TooLarge,
    /// A record declares a payload longer than TLS allows.
    #[error("TLS record longer than 2^14 + 256 bytes")]
    RecordTooLarge,
    /// A handshake record with no payload (forbidden by RFC 8446 §5.1).
    #[error("empty TLS handshake record")]
    EmptyRecord,
    /// A record after the first has a major version other than 3.
    #[error("TLS record with a version other than 3.x")]
    BadRecordVersion,
    /// A non-handshake record arrived before the ClientHello was complete.
    #[error("non-handshake record before the ClientHello was complete")]
    InterleavedRecord,
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
    /// The records carry more handshake bytes than the ClientHello.
    #[error("handshake data after the ClientHello in the same record")]
    TrailingHandshakeData,
    /// The body ends inside `legacy_version`.
    #[error("ClientHello truncated in legacy_version")]
    TruncatedVersion,
    /// The body ends inside `random`.
    #[error("ClientHello truncated in random")]
    TruncatedRandom,
    /// The session id length runs past the body.
    #[error("ClientHello truncated in legacy_session_id")]
    TruncatedSessionId,
    /// The session id is longer than 32 bytes.
    #[error("legacy_session_id longer than 32 bytes")]
    SessionIdTooLong,
    /// The cipher suite list length runs past the body.
    #[error("ClientHello truncated in cipher_suites")]
    TruncatedCipherSuites,
    /// The cipher suite list is empty or has an odd length.
    #[error("cipher_suites empty or of odd length")]
    BadCipherSuites,
    /// The compression method list length runs past the body.
    #[error("ClientHello truncated in legacy_compression_methods")]
    TruncatedCompression,
    /// The compression method list is empty.
    #[error("legacy_compression_methods empty")]
    BadCompression,
    /// The extensions block length runs past the body, or the body ends inside it.
    #[error("ClientHello truncated in extensions")]
    TruncatedExtensions,
    /// Bytes remain in the body after the extensions block.
    #[error("bytes after the extensions block")]
    TrailingBytes,
    /// An extension header or its data runs past the extensions block.
    #[error("extension truncated")]
    TruncatedExtension,
    /// The same extension type appears twice.
    #[error("duplicate extension")]
    DuplicateExtension,
    /// The `server_name` list is empty or its lengths are inconsistent.
    #[error("malformed server_name list")]
    BadSniList,
    /// The `server_name` list holds more than one host name.
    #[error("more than one host_name in server_name")]
    DuplicateSni,
    /// The host name is empty, too long, or has bytes outside `[A-Za-z0-9._-]`.
    #[error("invalid host_name in server_name")]
    BadHostName,
    /// The ALPN list is empty, holds an empty name, or its lengths are inconsistent.
    #[error("malformed application_layer_protocol_negotiation")]
    BadAlpn,
    /// The `supported_versions` list is empty, odd, or its length is inconsistent.
    #[error("malformed supported_versions")]
    BadSupportedVersions,
}

impl HelloError {
    /// A stable snake_case label for logs and metric labels. Never changes once released.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::RecordTooLarge => "record_too_large",
            Self::EmptyRecord => "empty_record",
            Self::BadRecordVersion => "bad_record_version",
            Self::InterleavedRecord => "interleaved_record",
            Self::NotClientHello => "not_client_hello",
            Self::TrailingHandshakeData => "trailing_handshake_data",
            Self::TruncatedVersion => "truncated_version",
            Self::TruncatedRandom => "truncated_random",
            Self::TruncatedSessionId => "truncated_session_id",
            Self::SessionIdTooLong => "session_id_too_long",
            Self::TruncatedCipherSuites => "truncated_cipher_suites",
            Self::BadCipherSuites => "bad_cipher_suites",
            Self::TruncatedCompression => "truncated_compression",
            Self::BadCompression => "bad_compression",
            Self::TruncatedExtensions => "truncated_extensions",
            Self::TrailingBytes => "trailing_bytes",
            Self::TruncatedExtension => "truncated_extension",
            Self::DuplicateExtension => "duplicate_extension",
            Self::BadSniList => "bad_sni_list",
            Self::DuplicateSni => "duplicate_sni",
            Self::BadHostName => "bad_host_name",
            Self::BadAlpn => "bad_alpn",
            Self::BadSupportedVersions => "bad_supported_versions",
        }
    }
}

/// Peeks at `buf` (the first bytes a client sent) for a ClientHello whose records occupy at most
/// `max` bytes.
///
/// Decides [`Peek::NotTls`] from the first byte (or the second, the record's major version), and
/// [`HelloError::TooLarge`] as soon as a length field proves the bound will be crossed. Bytes after
/// the records carrying the hello are ignored.
pub fn peek_client_hello(buf: &[u8], max: usize) -> Peek {
    match buf {
        // A record header and a handshake header, at the least.
        [] => {
            return Peek::Incomplete {
                need: RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN,
            };
        }
        [first, ..] if *first != CONTENT_TYPE_HANDSHAKE => return Peek::NotTls,
        [_, major, ..] if *major != RECORD_VERSION_MAJOR => return Peek::NotTls,
        _ => {}
    }
    match reassemble(buf, max) {
        Ok(Reassembled::Complete { message, consumed }) => {
            let body = message
                .bytes()
                .get(HANDSHAKE_HEADER_LEN..)
                .unwrap_or_default();
            match parse_body(body) {
                Ok(info) => Peek::Complete(ClientHelloInfo {
                    hello_len: body.len(),
                    consumed,
                    ..info
                }),
                Err(e) => Peek::Invalid(e),
            }
        }
        Ok(Reassembled::Incomplete { need }) => Peek::Incomplete { need },
        Err(e) => Peek::Invalid(e),
    }
}

enum Reassembled<'a> {
    /// The whole handshake message, header included, and the end of its last record.
    Complete {
        message: Fragments<'a>,
        consumed: usize,
    },
    Incomplete {
        need: usize,
    },
}

/// Handshake bytes gathered from records: borrowed while they come from one record, copied once
/// a second fragment arrives.
#[derive(Default)]
struct Fragments<'a> {
    first: &'a [u8],
    joined: Option<Vec<u8>>,
}

impl<'a> Fragments<'a> {
    fn push(&mut self, fragment: &'a [u8]) {
        match &mut self.joined {
            Some(joined) => joined.extend_from_slice(fragment),
            None if self.first.is_empty() => self.first = fragment,
            None => {
                let mut joined = Vec::with_capacity(self.first.len() + fragment.len());
                joined.extend_from_slice(self.first);
                joined.extend_from_slice(fragment);
                self.joined = Some(joined);
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        self.joined.as_deref().unwrap_or(self.first)
    }
}

/// Walks the records at the start of `buf` and joins the handshake message they carry.
fn reassemble(buf: &[u8], max: usize) -> Result<Reassembled<'_>, HelloError> {
    let mut fragments = Fragments::default();
    // Handshake bytes declared by the records seen so far (present in `buf` or not).
    let mut declared = 0usize;
    let mut pos = 0usize;
    loop {
        // Every record before `pos` is wholly in `buf`, so `fragments` holds `declared` bytes.
        let header = &buf[pos..buf.len().min(pos + RECORD_HEADER_LEN)];
        check_record_start(header, pos)?;
        // What the handshake still needs beyond the records seen so far, if known.
        let missing = missing_handshake_bytes(&fragments, declared)?;
        let Some(&[_, _, _, len_hi, len_lo]) = header.first_chunk::<RECORD_HEADER_LEN>() else {
            let need = RECORD_HEADER_LEN - header.len() + missing.max(1);
            check_bound(pos + RECORD_HEADER_LEN + missing.max(1), max)?;
            return Ok(Reassembled::Incomplete { need });
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if len == 0 {
            return Err(HelloError::EmptyRecord);
        }
        if len > MAX_RECORD_PAYLOAD {
            return Err(HelloError::RecordTooLarge);
        }
        let record_end = pos + RECORD_HEADER_LEN + len;
        check_bound(record_end, max)?;
        let payload = &buf[pos + RECORD_HEADER_LEN..buf.len().min(record_end)];
        fragments.push(payload);
        declared += len;

        let total = handshake_total(&fragments)?;
        if total.is_some_and(|total| declared > total) {
            return Err(HelloError::TrailingHandshakeData);
        }
        // Handshake bytes the records after this one must carry (a lower bound while the
        // handshake header is incomplete); each such record costs a header too.
        let beyond = match total {
            Some(total) => total - declared,
            None => HANDSHAKE_HEADER_LEN.saturating_sub(declared),
        };
        let next_records = if beyond > 0 {
            RECORD_HEADER_LEN + beyond
        } else {
            0
        };
        check_bound(record_end + next_records, max)?;
        if record_end > buf.len() {
            return Ok(Reassembled::Incomplete {
                need: record_end - buf.len() + next_records,
            });
        }
        if total == Some(fragments.bytes().len()) {
            return Ok(Reassembled::Complete {
                message: fragments,
                consumed: record_end,
            });
        }
        pos = record_end;
    }
}

/// Checks the bytes of a record header present so far. `pos` is 0 for the first record, whose
/// type and version the caller has already checked.
fn check_record_start(header: &[u8], pos: usize) -> Result<(), HelloError> {
    if pos == 0 {
        return Ok(());
    }
    if header.first().is_some_and(|&t| t != CONTENT_TYPE_HANDSHAKE) {
        return Err(HelloError::InterleavedRecord);
    }
    if header.get(1).is_some_and(|&v| v != RECORD_VERSION_MAJOR) {
        return Err(HelloError::BadRecordVersion);
    }
    Ok(())
}

/// Total length (header included) of the handshake message, once its header has arrived.
fn handshake_total(fragments: &Fragments<'_>) -> Result<Option<usize>, HelloError> {
    let bytes = fragments.bytes();
    if bytes
        .first()
        .is_some_and(|&t| t != HANDSHAKE_TYPE_CLIENT_HELLO)
    {
        return Err(HelloError::NotClientHello);
    }
    let Some(&[_, a, b, c]) = bytes.first_chunk::<HANDSHAKE_HEADER_LEN>() else {
        return Ok(None);
    };
    let body = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    Ok(Some(HANDSHAKE_HEADER_LEN + body))
}

/// Handshake bytes still needed beyond the `declared` ones (a lower bound when the handshake
/// header has not fully arrived).
fn missing_handshake_bytes(
    fragments: &Fragments<'_>,
    declared: usize,
) -> Result<usize, HelloError> {
    Ok(match handshake_total(fragments)? {
        Some(total) => total.saturating_sub(declared),
        None => HANDSHAKE_HEADER_LEN.saturating_sub(declared),
    })
}

fn check_bound(required: usize, max: usize) -> Result<(), HelloError> {
    if required > max {
        return Err(HelloError::TooLarge);
    }
    Ok(())
}

/// A cursor over a byte slice whose reads fail (with `None`) instead of running past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.first_chunk().copied().map(u16::from_be_bytes)
    }

    /// Reads a `u8`-length-prefixed vector.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// Reads a `u16`-length-prefixed vector.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Parses a complete ClientHello body (after the handshake header). `hello_len` and `consumed`
/// are left for the caller to fill in.
fn parse_body(body: &[u8]) -> Result<ClientHelloInfo, HelloError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16().ok_or(HelloError::TruncatedVersion)?;
    r.take(32).ok_or(HelloError::TruncatedRandom)?;
    let session_id = r.vec8().ok_or(HelloError::TruncatedSessionId)?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err(HelloError::SessionIdTooLong);
    }
    let suites = r.vec16().ok_or(HelloError::TruncatedCipherSuites)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::BadCipherSuites);
    }
    let compression = r.vec8().ok_or(HelloError::TruncatedCompression)?;
    if compression.is_empty() {
        return Err(HelloError::BadCompression);
    }
    let mut info = ClientHelloInfo {
        sni: None,
        alpn: Vec::new(),
        legacy_version,
        supported_versions: Vec::new(),
        hello_len: 0,
        consumed: 0,
    };
    // Extensions are optional before TLS 1.3 (RFC 5246 §7.4.1.2).
    if r.is_empty() {
        return Ok(info);
    }
    let extensions = r.vec16().ok_or(HelloError::TruncatedExtensions)?;
    if !r.is_empty() {
        return Err(HelloError::TrailingBytes);
    }
    parse_extensions(extensions, &mut info)?;
    Ok(info)
}

fn parse_extensions(block: &[u8], info: &mut ClientHelloInfo) -> Result<(), HelloError> {
    let mut r = Reader::new(block);
    // Bounded by the block: at most one entry per 4 bytes of actual input.
    let mut seen: Vec<u16> = Vec::new();
    while !r.is_empty() {
        let ext_type = r.u16().ok_or(HelloError::TruncatedExtension)?;
        let data = r.vec16().ok_or(HelloError::TruncatedExtension)?;
        if is_grease(ext_type) {
            continue;
        }
        seen.push(ext_type);
        match ext_type {
            EXT_SERVER_NAME => info.sni = parse_server_name(data)?,
            EXT_ALPN => info.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => info.supported_versions = parse_supported_versions(data)?,
            _ => {}
        }
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(HelloError::DuplicateExtension);
    }
    Ok(())
}

/// `server_name` (RFC 6066 §3): a list of (type, name); only `host_name` is defined, and it may
/// appear once. Names of unknown types are skipped.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16().ok_or(HelloError::BadSniList)?;
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::BadSniList);
    }
    let mut r = Reader::new(list);
    let mut host = None;
    while !r.is_empty() {
        let name_type = r.u8().ok_or(HelloError::BadSniList)?;
        let name = r.vec16().ok_or(HelloError::BadSniList)?;
        if name_type != SNI_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err(HelloError::DuplicateSni);
        }
        host = Some(host_name(name)?);
    }
    Ok(host)
}

fn host_name(name: &[u8]) -> Result<String, HelloError> {
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if name.is_empty() || name.len() > MAX_HOST_NAME_LEN || !name.iter().all(valid) {
        return Err(HelloError::BadHostName);
    }
    // All bytes are ASCII, checked above, so this is a byte-for-byte copy.
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// ALPN (RFC 7301 §3.1): a non-empty list of non-empty names. GREASE names (RFC 8701 §2) are
/// dropped.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, HelloError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16().ok_or(HelloError::BadAlpn)?;
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::BadAlpn);
    }
    let mut r = Reader::new(list);
    let mut names = Vec::new();
    while !r.is_empty() {
        let name = r.vec8().ok_or(HelloError::BadAlpn)?;
        if name.is_empty() {
            return Err(HelloError::BadAlpn);
        }
        let grease = matches!(name, [a, b] if is_grease(u16::from_be_bytes([*a, *b])));
        if !grease {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// `supported_versions` in a ClientHello (RFC 8446 §4.2.1): a `u8`-length list of `u16`.
fn parse_supported_versions(data: &[u8]) -> Result<Vec<u16>, HelloError> {
    let mut outer = Reader::new(data);
    let list = outer.vec8().ok_or(HelloError::BadSupportedVersions)?;
    if !outer.is_empty() || list.is_empty() || list.len() % 2 != 0 {
        return Err(HelloError::BadSupportedVersions);
    }
    Ok(list
        .chunks_exact(2)
        .filter_map(|v| v.first_chunk().copied().map(u16::from_be_bytes))
        .filter(|&v| !is_grease(v))
        .collect())
}

/// GREASE values (RFC 8701 §2): `0x?A?A` with both bytes equal.
pub fn is_grease(value: u16) -> bool {
    let [hi, lo] = value.to_be_bytes();
    hi == lo && hi & 0x0f == 0x0a
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    #[test]
    fn empty_input_is_incomplete() {
        assert_eq!(
            peek_client_hello(&[], MAX),
            Peek::Incomplete {
                need: RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN
            }
        );
    }

    #[test]
    fn decides_not_tls_from_the_first_byte() {
        assert_eq!(peek_client_hello(b"G", MAX), Peek::NotTls);
        assert_eq!(peek_client_hello(&[0x17], MAX), Peek::NotTls);
    }

    #[test]
    fn decides_not_tls_from_a_bad_record_major_version() {
        assert_eq!(peek_client_hello(&[0x16, 0x02], MAX), Peek::NotTls);
    }

    #[test]
    fn recognises_grease_values() {
        assert!(is_grease(0x0a0a));
        assert!(is_grease(0xfafa));
        assert!(!is_grease(0x0a1a));
        assert!(!is_grease(0x0304));
    }

    #[test]
    fn reader_refuses_to_run_past_the_end() {
        let mut r = Reader::new(&[0, 3, 1, 2]);
        assert_eq!(r.vec16(), None);
        let mut r = Reader::new(&[2, 1, 2]);
        assert_eq!(r.vec8(), Some(&[1u8, 2][..]));
        assert!(r.is_empty());
    }

    #[test]
    fn every_error_has_a_distinct_snake_case_label() {
        use HelloError::*;
        let all = [
            TooLarge,
            RecordTooLarge,
            EmptyRecord,
            BadRecordVersion,
            InterleavedRecord,
            NotClientHello,
            TrailingHandshakeData,
            TruncatedVersion,
            TruncatedRandom,
            TruncatedSessionId,
            SessionIdTooLong,
            TruncatedCipherSuites,
            BadCipherSuites,
            TruncatedCompression,
            BadCompression,
            TruncatedExtensions,
            TrailingBytes,
            TruncatedExtension,
            DuplicateExtension,
            BadSniList,
            DuplicateSni,
            BadHostName,
            BadAlpn,
            BadSupportedVersions,
        ];
        let mut labels: Vec<_> = all.iter().map(HelloError::label).collect();
        assert!(
            labels
                .iter()
                .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
        assert_eq!(TooLarge.label(), "too_large");
    }
}
