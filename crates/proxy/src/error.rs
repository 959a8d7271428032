//! One error type for a connection's ending, naming the side at fault.
//!
//! `reason()` is a stable snake_case label used in logs, flow records and metric labels; it never
//! contains peer-controlled text. The full list is documented in docs/flows.md.

use std::io;
use std::net::IpAddr;

use tlsgate_wire::HelloError;

/// Why a connection (or a stream inside one) ended without being served.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    // --- client side ---
    #[error("client sent no complete ClientHello within the detect timeout")]
    ClientHelloTimeout,
    #[error("client closed the connection before a complete ClientHello")]
    ClientClosedEarly,
    #[error("client's first bytes are not a TLS handshake")]
    ClientNotTls,
    #[error("client's ClientHello is invalid: {0}")]
    ClientHelloInvalid(HelloError),
    #[error("client's ClientHello has no SNI and no default is configured")]
    ClientNoSni,
    #[error("client's SNI is an IP address literal (RFC 6066 forbids it)")]
    ClientSniIpLiteral,
    #[error("client's TLS handshake failed: {0}")]
    ClientHandshake(#[source] io::Error),
    #[error("client's TLS handshake did not finish within the handshake timeout")]
    ClientHandshakeTimeout,
    #[error("client i/o: {0}")]
    ClientIo(#[source] io::Error),
    #[error("client's request has no Host")]
    ClientNoHost,
    #[error("the tunnel was idle longer than the idle timeout")]
    IdleTimeout,
    #[error("the client's source address is at its connection limit on this listener")]
    ClientSourceLimit,
    #[error("the relay client is at its concurrent tunnel limit")]
    ClientTunnelLimit,
    #[error("the request head did not arrive within the header-read timeout")]
    ClientHeaderTimeout,
    #[error("the request got no response head within the request timeout")]
    RequestTimeout,
    #[error("the request's headers exceed the configured count or size")]
    ClientHeadersTooLarge,
    #[error("the client's bytes are not valid HTTP: {0}")]
    ClientHttpInvalid(#[source] hyper::Error),
    /// h2 reports its abuse limits alike (GOAWAY ENHANCE_YOUR_CALM, without saying which):
    /// streams reset before being accepted (rapid reset), too many CONTINUATION frames, a header
    /// block far over the limit, too many streams it had to reset itself.
    #[error("the client hit an HTTP/2 abuse limit (rapid reset, CONTINUATION flood, ...)")]
    ClientH2Flood,
    /// The text is h2's own description of the connection error it detected (never peer text).
    #[error("the client broke the HTTP/2 protocol: {0}")]
    ClientH2Protocol(String),

    // --- policy ---
    #[error("no route for the requested name")]
    PolicyNoRoute,
    #[error("the requested port has no route")]
    PolicyPortNotRouted,
    #[error("inner SNI differs from the CONNECT authority")]
    PolicyInnerSniMismatch,
    #[error("inner connection has no SNI; the CONNECT authority cannot be checked")]
    PolicyInnerSniMissing,
    #[error("destination {0} is forbidden by the destination guard")]
    PolicyDestinationForbidden(IpAddr),
    #[error("denied by an intercept rule")]
    PolicyDenied,
    #[error("{}", describe_policy_denial(*reason, rule.as_deref()))]
    PolicyVerdict {
        reason: tlsgate_policy::DenyReason,
        /// The name of the rule (set) that decided, from the operator's policy file.
        rule: Option<String>,
    },
    /// Transparent mode without SNI: the request's Host names the connection, so it must resolve
    /// to the address the client was actually connecting to (else the Host could name anything).
    #[error(
        "the request's Host does not resolve to the connection's original destination {dst} ({why})"
    )]
    PolicyHostAddressMismatch {
        dst: IpAddr,
        /// A fixed phrase (never peer text): "resolves elsewhere", "resolution failed", ...
        why: &'static str,
    },
    #[error("the original destination of a redirected connection is unknown: {0}")]
    LocalNoOriginalDst(#[source] io::Error),
    #[error("minting a certificate failed: {0}")]
    LocalMint(String),
    #[error("the origin's certificate is not valid: {0}")]
    UpstreamCertInvalid(String),
    #[error("TLS handshake with the origin failed: {0}")]
    UpstreamHandshake(#[source] io::Error),
    #[error("listener is at its connection limit")]
    LocalListenerFull,

    // --- upstream side (origins and relays) ---
    #[error("resolving the upstream name failed: {0}")]
    UpstreamResolve(#[source] io::Error),
    #[error("the upstream name resolved to no address")]
    UpstreamNoAddress,
    #[error("connecting to the upstream timed out")]
    UpstreamConnectTimeout,
    #[error("connecting to the upstream failed: {0}")]
    UpstreamConnect(#[source] io::Error),
    #[error("upstream i/o: {0}")]
    UpstreamIo(#[source] io::Error),
    #[error("the relay is not reachable: {0}")]
    RelayUnavailable(String),
    #[error("the relay refused the tunnel with HTTP status {0}")]
    RelayRefused(u16),
    #[error("HTTP exchange with the relay failed: {0}")]
    RelayHttp(#[source] hyper::Error),
    /// The same failure on the edge's HTTP/2 connections to the relay (the `h2` crate's error).
    #[error("HTTP/2 exchange with the relay failed: {0}")]
    RelayH2(#[source] h2::Error),
    #[error("HTTP exchange with the upstream failed: {0}")]
    UpstreamHttp(#[source] hyper::Error),
    /// An exchange on a pooled upstream connection failed (`forward::pool`): same label as
    /// [`ConnError::UpstreamHttp`], which it is, seen through hyper-util's pooled client.
    #[error("HTTP exchange with the upstream failed: {0}")]
    UpstreamExchange(#[source] hyper_util::client::legacy::Error),
    #[error("the upstream's response head is invalid")]
    UpstreamBadResponse,
}

fn describe_policy_denial(reason: tlsgate_policy::DenyReason, rule: Option<&str>) -> String {
    use tlsgate_policy::DenyReason;
    let what = match reason {
        DenyReason::NoRule => "no policy rule allows this destination",
        DenyReason::DenyRule => "a policy rule denies this destination",
        DenyReason::PolicyDenied => {
            "access denied by policy: the request matches none of the HTTP rules"
        }
        DenyReason::HostSniMismatch => {
            "the request's Host does not match the name this connection was allowed for"
        }
        DenyReason::MissingHost => "the request has no Host",
    };
    match rule {
        Some(rule) => format!("{what} (rule {rule})"),
        None => what.to_owned(),
    }
}

impl ConnError {
    /// A stable snake_case label for logs, flows and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientHelloTimeout => "client_hello_timeout",
            Self::ClientClosedEarly => "client_closed_early",
            Self::ClientNotTls => "client_not_tls",
            Self::ClientHelloInvalid(HelloError::TooLarge) => "client_hello_too_large",
            Self::ClientHelloInvalid(_) => "client_hello_invalid",
            Self::ClientNoSni => "client_no_sni",
            Self::ClientSniIpLiteral => "sni_ip_literal",
            Self::ClientHandshake(_) => "client_handshake_failed",
            Self::ClientHandshakeTimeout => "client_handshake_timeout",
            Self::ClientIo(_) => "client_io",
            Self::ClientNoHost => "client_no_host",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientSourceLimit => "source_limit",
            Self::ClientTunnelLimit => "client_tunnel_limit",
            Self::ClientHeaderTimeout => "header_read_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::ClientHeadersTooLarge => "headers_too_large",
            Self::ClientHttpInvalid(_) => "client_http_invalid",
            Self::ClientH2Flood => "h2_flood",
            Self::ClientH2Protocol(_) => "client_h2_protocol_error",
            Self::PolicyNoRoute => "no_route",
            Self::PolicyPortNotRouted => "port_not_routed",
            Self::PolicyInnerSniMismatch => "inner_sni_mismatch",
            Self::PolicyInnerSniMissing => "inner_sni_missing",
            Self::PolicyDestinationForbidden(_) => "destination_forbidden",
            Self::LocalListenerFull => "listener_full",
            Self::PolicyDenied => "denied",
            Self::PolicyVerdict { reason, .. } => reason.label(),
            Self::PolicyHostAddressMismatch { .. } => "host_address_mismatch",
            Self::LocalNoOriginalDst(_) => "no_original_destination",
            Self::LocalMint(_) => "mint_failed",
            Self::UpstreamCertInvalid(_) => "upstream_cert_invalid",
            Self::UpstreamHandshake(_) => "upstream_handshake_failed",
            Self::UpstreamResolve(_) => "upstream_resolve_failed",
            Self::UpstreamNoAddress => "upstream_no_address",
            Self::UpstreamConnectTimeout => "upstream_connect_timeout",
            Self::UpstreamConnect(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                "upstream_connect_refused"
            }
            Self::UpstreamConnect(_) => "upstream_connect_failed",
            Self::UpstreamIo(_) => "upstream_io",
            Self::RelayUnavailable(_) => "relay_unavailable",
            Self::RelayRefused(_) => "relay_refused",
            Self::RelayHttp(_) | Self::RelayH2(_) => "relay_http_error",
            Self::UpstreamHttp(_) | Self::UpstreamExchange(_) => "upstream_http_error",
            Self::UpstreamBadResponse => "upstream_bad_response",
        }
    }

    /// Whether the ending points at something wrong on this side (logged at `warn`) rather than at
    /// a peer or a policy decision (logged at `debug`/`info`).
    pub fn is_local_fault(&self) -> bool {
        matches!(
            self,
            Self::LocalListenerFull | Self::LocalNoOriginalDst(_) | Self::LocalMint(_)
        )
    }

    /// Whether the ending is a policy refusal (logged at `info`: operators want to see those).
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Self::PolicyNoRoute
                | Self::PolicyPortNotRouted
                | Self::PolicyInnerSniMismatch
                | Self::PolicyInnerSniMissing
                | Self::PolicyDestinationForbidden(_)
                | Self::PolicyDenied
                | Self::PolicyVerdict { .. }
                | Self::PolicyHostAddressMismatch { .. }
                | Self::ClientNoSni
        )
    }

    /// The TLS alert that tells a client which has sent only its ClientHello why its connection is
    /// not carried: `access_denied` for a refusal by policy (this gateway's, or the relay's 403 to a
    /// CONNECT), `internal_error` when the far side cannot be reached or a limit is hit. None for the
    /// client's own faults (a late, broken or missing hello), which get a plain close.
    pub fn refusal_alert(&self) -> Option<u8> {
        match self {
            e if e.is_policy() => Some(ALERT_ACCESS_DENIED),
            Self::RelayRefused(403) => Some(ALERT_ACCESS_DENIED),
            Self::RelayUnavailable(_)
            | Self::RelayRefused(_)
            | Self::RelayHttp(_)
            | Self::RelayH2(_)
            | Self::UpstreamResolve(_)
            | Self::UpstreamNoAddress
            | Self::UpstreamConnectTimeout
            | Self::UpstreamConnect(_)
            | Self::ClientTunnelLimit => Some(ALERT_INTERNAL_ERROR),
            _ => None,
        }
    }
}

/// TLS alert descriptions sent to a client before closing a connection that is not carried.
pub const ALERT_ACCESS_DENIED: u8 = 49;
pub const ALERT_INTERNAL_ERROR: u8 = 80;

/// A fatal TLS alert record, readable by a client that has sent only its ClientHello.
pub fn tls_alert(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_tells_policy_from_an_unreachable_far_side_and_spares_the_clients_own_faults() {
        for denied in [
            ConnError::PolicyNoRoute,
            ConnError::PolicyInnerSniMismatch,
            ConnError::ClientNoSni,
            ConnError::RelayRefused(403),
        ] {
            assert_eq!(
                denied.refusal_alert(),
                Some(ALERT_ACCESS_DENIED),
                "{denied}"
            );
        }
        for failed in [
            ConnError::RelayUnavailable("down".into()),
            ConnError::RelayRefused(502),
            ConnError::UpstreamConnectTimeout,
            ConnError::ClientTunnelLimit,
        ] {
            assert_eq!(
                failed.refusal_alert(),
                Some(ALERT_INTERNAL_ERROR),
                "{failed}"
            );
        }
        for clients_own in [
            ConnError::ClientHelloTimeout,
            ConnError::ClientClosedEarly,
            ConnError::ClientNotTls,
        ] {
            assert_eq!(clients_own.refusal_alert(), None, "{clients_own}");
        }
        // What a client that sent only its ClientHello can read: a plaintext fatal alert record.
        assert_eq!(tls_alert(ALERT_ACCESS_DENIED), [21, 3, 3, 0, 2, 2, 49]);
    }
}
