//! Small encoders and conversions: PEM, hex, and time between `SystemTime`, rcgen's
//! `OffsetDateTime` and x509-parser's `ASN1Time`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// PEM-encodes `der` with the given label (`CERTIFICATE`, `PRIVATE KEY`), 64 columns per line.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        b64.push(sextet(18));
        b64.push(sextet(12));
        b64.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        b64.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    // `b64` is ASCII, so splitting its bytes into 64-byte lines never splits a character.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Uppercase hex bytes joined by `sep` (`""` for a serial, `":"` for fingerprints, like openssl).
pub(crate) fn hex_upper(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// `t` as an `OffsetDateTime` truncated to whole seconds (certificates carry no fractions).
pub(crate) fn to_offset(t: SystemTime) -> OffsetDateTime {
    let dt = OffsetDateTime::from(t);
    dt.replace_nanosecond(0).unwrap_or(dt)
}

/// Back to `SystemTime`.
pub(crate) fn to_system(dt: OffsetDateTime) -> SystemTime {
    SystemTime::from(dt)
}

/// x509-parser's `ASN1Time` as a `SystemTime` (second precision, pre-1970 allowed).
pub(crate) fn asn1_to_system(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// SHA-256 and SHA-1 fingerprints of `der`, uppercase and colon-separated.
pub(crate) fn fingerprints(der: &[u8]) -> (String, String) {
    let sha256 = ring::digest::digest(&ring::digest::SHA256, der);
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    (
        hex_upper(sha256.as_ref(), ":"),
        hex_upper(sha1.as_ref(), ":"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encodes_like_rfc4648_with_padding() {
        assert_eq!(pem("X", b"f"), "-----BEGIN X-----\nZg==\n-----END X-----\n");
        assert_eq!(
            pem("X", b"fo"),
            "-----BEGIN X-----\nZm8=\n-----END X-----\n"
        );
        assert_eq!(
            pem("X", b"foobar"),
            "-----BEGIN X-----\nZm9vYmFy\n-----END X-----\n"
        );
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let out = pem("X", &[0u8; 100]);
        let lines: Vec<&str> = out.lines().collect();
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3], "AAAAAA==");
    }

    #[test]
    fn time_round_trips_at_second_precision() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 999_000_000);
        assert_eq!(
            to_system(to_offset(t)),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}
