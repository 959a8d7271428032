//! TLS ClientHello peeking (placeholder API; the full parser lands with its test vectors).

/// Facts read from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `server_name` host name, lower-cased as sent (ASCII), if present.
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order.
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
    Incomplete { need: usize },
    /// The bytes are TLS but malformed or over the bound.
    Invalid(HelloError),
    /// The first bytes are not a TLS handshake record.
    NotTls,
}

/// Why a ClientHello was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("ClientHello exceeds the size bound")]
    TooLarge,
    #[error("malformed ClientHello")]
    Malformed,
}

/// Peeks at `buf` (the first bytes a client sent) for a ClientHello of at most `max` bytes.
pub fn peek_client_hello(buf: &[u8], max: usize) -> Peek {
    let _ = (buf, max);
    Peek::NotTls
}
