//! The name in a request's authority: a CONNECT target (`host:port`), an absolute URI's authority
//! or a Host header / `:authority` (`host[:port]`, `[v6]:port`). Policy decides on this name, so
//! every place that reads one calls [`host_of`].

/// The host part of `host[:port]`, lower-cased, without the brackets of an IPv6 literal, the port
/// or a trailing dot. Any text gives a result (the empty string when there is no host); callers
/// refuse names policy does not know, so a malformed authority is refused, never misread.
pub fn host_of(authority: &str) -> String {
    // RFC 3986 userinfo (`user@host`): the `http` crate accepts it in a CONNECT target and reads
    // the host after it, so the policy must judge that host too.
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        // Up to the first colon, exactly as the `http` crate reads it: `host:port` whatever the
        // port says (callers check it), and odd forms it accepts (`w[::1]:80`, `o:f:1%]:80`)
        // too — else policy would judge one name while hyper saw another. An IPv6 address
        // without brackets is not an authority (RFC 3986 §3.2.2): it reads as its first group, a
        // name no policy allows.
        authority.split(':').next().unwrap_or(authority)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_port_brackets_trailing_dot_and_case() {
        assert_eq!(host_of("Example.COM:443"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_of("example.com.:80"), "example.com");
    }

    #[test]
    fn strips_a_port_that_is_not_a_number() {
        // Found by the request_line fuzz target: `http::uri::Authority` accepts this (its
        // `port_u16()` is None) and reads the host as 192.0.2.10; so must the policy.
        assert_eq!(host_of("192.0.2.10:4PTHT4"), "192.0.2.10");
        assert_eq!(host_of("example.com:https"), "example.com");
        assert_eq!(host_of("example.com:"), "example.com");
    }

    #[test]
    fn reads_the_host_after_userinfo() {
        // Found by the request_line fuzz target: `http::uri::Authority` reads host `TS`.
        assert_eq!(host_of("O@TS"), "ts");
        assert_eq!(host_of("user:pass@Example.com:443"), "example.com");
    }

    #[test]
    fn reads_up_to_the_first_colon_when_a_bracket_is_not_first() {
        // Found by the request_line fuzz target: `http::uri::Authority` accepts `w[::1]:8www`
        // and reads host `w[`.
        assert_eq!(host_of("w[::1]:8www"), "w[");
        assert_eq!(host_of("a[::1]:443"), "a[");
    }

    #[test]
    fn reads_a_closing_bracket_after_userinfo_up_to_the_first_colon() {
        // Found by the request_line fuzz target: `http::uri::Authority` reads host `O`.
        assert_eq!(host_of("[@@@@@@O:fffffff:1%]:80"), "o");
    }

    #[test]
    fn reads_a_bare_ipv6_address_as_its_first_group() {
        // Not an authority without brackets; never the address itself.
        assert_eq!(host_of("2001:DB8::1"), "2001");
        assert_eq!(host_of("::1"), "");
    }
}
