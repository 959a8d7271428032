//! Sniffing whether the first bytes of a connection look like an HTTP/1 request line.
//!
//! This only tells plain HTTP (`GET /`, `CONNECT host:443`) apart from other protocols so the
//! caller can pick a parser; it does not validate the request.

/// The longest method token accepted, plus the space after it. `CONNECT ` and the WebDAV methods
/// (`PROPPATCH `, `MKCALENDAR `) fit comfortably.
pub const MAX_METHOD_PREFIX: usize = 16;

/// What the first bytes say about an HTTP/1 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpSniff {
    /// The bytes begin with an upper-case token followed by a space.
    Http,
    /// Every byte so far could begin a request line; more are needed.
    Incomplete,
    /// The bytes cannot begin an HTTP/1 request line.
    NotHttp,
}

/// Checks whether `buf` begins with an upper-case method token and a space within the first
/// [`MAX_METHOD_PREFIX`] bytes. Decides as soon as a byte rules HTTP out.
pub fn looks_like_http_request(buf: &[u8]) -> HttpSniff {
    for (i, &b) in buf.iter().take(MAX_METHOD_PREFIX).enumerate() {
        match b {
            b'A'..=b'Z' => {}
            b' ' if i > 0 => return HttpSniff::Http,
            _ => return HttpSniff::NotHttp,
        }
    }
    if buf.len() >= MAX_METHOD_PREFIX {
        return HttpSniff::NotHttp;
    }
    HttpSniff::Incomplete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_methods() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"MKCALENDAR /c HTTP/1.1\r\n",
        ] {
            assert_eq!(looks_like_http_request(line), HttpSniff::Http, "{line:?}");
        }
    }

    #[test]
    fn decides_on_the_space_after_the_method() {
        assert_eq!(looks_like_http_request(b"GET "), HttpSniff::Http);
        assert_eq!(looks_like_http_request(b"GET"), HttpSniff::Incomplete);
    }

    #[test]
    fn wants_more_bytes_for_an_uppercase_prefix() {
        assert_eq!(looks_like_http_request(b""), HttpSniff::Incomplete);
        assert_eq!(looks_like_http_request(b"C"), HttpSniff::Incomplete);
        assert_eq!(looks_like_http_request(b"CONNEC"), HttpSniff::Incomplete);
    }

    #[test]
    fn rejects_tls_and_lowercase_and_leading_space() {
        assert_eq!(
            looks_like_http_request(&[0x16, 0x03, 0x01]),
            HttpSniff::NotHttp
        );
        assert_eq!(
            looks_like_http_request(b"get / HTTP/1.1"),
            HttpSniff::NotHttp
        );
        assert_eq!(looks_like_http_request(b" GET /"), HttpSniff::NotHttp);
        assert_eq!(looks_like_http_request(b"GET\t/"), HttpSniff::NotHttp);
        assert_eq!(
            looks_like_http_request(b"SSH-2.0-OpenSSH"),
            HttpSniff::NotHttp
        );
    }

    #[test]
    fn rejects_a_token_without_a_space_within_the_bound() {
        let token = [b'A'; MAX_METHOD_PREFIX];
        assert_eq!(looks_like_http_request(&token), HttpSniff::NotHttp);
        assert_eq!(
            looks_like_http_request(&token[..MAX_METHOD_PREFIX - 1]),
            HttpSniff::Incomplete
        );
        let mut longest = [b'A'; MAX_METHOD_PREFIX];
        longest[MAX_METHOD_PREFIX - 1] = b' ';
        assert_eq!(looks_like_http_request(&longest), HttpSniff::Http);
    }

    #[test]
    fn never_asks_for_more_than_the_bound() {
        for len in 0..=MAX_METHOD_PREFIX + 4 {
            let buf = vec![b'Z'; len];
            let sniff = looks_like_http_request(&buf);
            assert_eq!(
                sniff == HttpSniff::Incomplete,
                len < MAX_METHOD_PREFIX,
                "len {len}"
            );
        }
    }
}
