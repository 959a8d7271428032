//! Guard and connect: resolve a name, refuse forbidden destinations, connect within a timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;

use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::error::ConnError;

/// Refuses loopback, private, link-local (incl. cloud metadata), multicast, broadcast and unspecified
/// destinations — and their IPv4-mapped IPv6 forms — unless an allowed CIDR contains them.
#[derive(Debug, Clone, Default)]
pub struct DestinationGuard {
    allow: Vec<IpNet>,
}

impl DestinationGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Whether tlsgate may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        !is_sensitive(ip)
    }
}

fn is_sensitive(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_sensitive_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_sensitive_v4(v4);
            }
            if let Some(v4) = embedded_v4(v6) {
                return is_sensitive_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local (RFC 4193), includes fd00:ec2::254
                || (seg0 & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// The IPv4 address carried by IPv6 forms that reach it: IPv4-compatible `::a.b.c.d` (deprecated,
/// still routed by some stacks), NAT64 `64:ff9b::/96` (RFC 6052) and 6to4 `2002::/16` (RFC 3056).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return Some(tail(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(tail(s[1], s[2]));
    }
    None
}

fn is_sensitive_v4(v4: Ipv4Addr) -> bool {
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local() // 169.254.0.0/16, includes 169.254.169.254 (cloud metadata)
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_unspecified()
        || v4.octets()[0] == 0 // 0.0.0.0/8 ("this network")
        || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64) // 100.64.0.0/10 shared space
        || v4.octets()[..3] == [192, 0, 0] // 192.0.0.0/24 IETF protocol assignments
        || v4.octets()[0] >= 240 // 240.0.0.0/4 reserved
}

/// How upstream names become addresses.
#[derive(Clone, Default)]
pub enum Resolver {
    /// The system resolver (getaddrinfo): honours /etc/hosts and /etc/resolv.conf.
    #[default]
    System,
    /// A configured DNS server, asked over UDP (TCP for truncated answers).
    Dns(Arc<TokioResolver>),
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => f.write_str("Resolver::System"),
            Self::Dns(_) => f.write_str("Resolver::Dns"),
        }
    }
}

impl Resolver {
    /// The system resolver, or one asking only `server`.
    pub fn new(server: Option<SocketAddr>) -> Self {
        let Some(server) = server else {
            return Self::System;
        };
        let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build();
        Self::Dns(Arc::new(resolver))
    }

    /// A resolver asking the same servers with a cache of its own, so [`Resolver::clear_cache`] on
    /// it (periodic re-resolution of relay endpoints) does not empty the cache other roles use.
    pub fn dedicated(&self) -> Self {
        match self {
            Self::System => Self::System,
            Self::Dns(shared) => {
                let resolver = TokioResolver::builder_with_config(
                    shared.config().clone(),
                    TokioConnectionProvider::default(),
                )
                .with_options(shared.options().clone())
                .build();
                Self::Dns(Arc::new(resolver))
            }
        }
    }

    /// Forgets cached answers (the system resolver keeps none in-process).
    pub fn clear_cache(&self) {
        if let Self::Dns(resolver) = self {
            resolver.clear_cache();
        }
    }

    /// Resolves `host:port`: an IP literal as is, else a name.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = match self {
            Self::System => tokio::net::lookup_host((host, port))
                .await
                .map_err(ConnError::UpstreamResolve)?
                .collect(),
            Self::Dns(resolver) => resolver
                .lookup_ip(host)
                .await
                .map_err(|e| ConnError::UpstreamResolve(std::io::Error::other(e)))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        if addrs.is_empty() {
            return Err(ConnError::UpstreamNoAddress);
        }
        Ok(addrs)
    }
}

/// Resolves, checks every candidate against the guard, and connects to the first that answers.
/// With `guard = None` (a relay the operator named) nothing is refused.
pub async fn connect(
    resolver: &Resolver,
    host: &str,
    port: u16,
    guard: Option<&DestinationGuard>,
    timeout: Duration,
) -> Result<TcpStream, ConnError> {
    let addrs = resolver.resolve(host, port).await?;
    let mut last = ConnError::UpstreamNoAddress;
    for addr in addrs {
        if let Some(guard) = guard
            && !guard.permits(addr.ip())
        {
            last = ConnError::PolicyDestinationForbidden(addr.ip());
            continue;
        }
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Tunnels carry interactive TLS handshakes: do not wait to coalesce small writes.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = ConnError::UpstreamConnect(e),
            Err(_) => last = ConnError::UpstreamConnectTimeout,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_loopback_private_link_local_and_metadata() {
        let guard = DestinationGuard::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::1",
            "192.0.0.170",
            "240.0.0.1",
        ] {
            assert!(!guard.permits(ip(bad)), "{bad} must be refused");
        }
    }

    #[test]
    fn permits_public_and_documentation_addresses() {
        let guard = DestinationGuard::default();
        for good in [
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.5",
            "2001:db8::1",
            "8.8.8.8",
            "64:ff9b::203.0.113.5",
            "2002:c000:0205::1",
        ] {
            assert!(guard.permits(ip(good)), "{good} must be permitted");
        }
    }

    #[test]
    fn allow_list_exempts_only_its_cidrs() {
        let guard = DestinationGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(guard.permits(ip("127.0.0.1")));
        assert!(!guard.permits(ip("::1")));
        assert!(!guard.permits(ip("10.0.0.1")));
    }

    #[test]
    fn is_sensitive_ignores_port_of_documentation_v6() {
        assert!(!is_sensitive(IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0, 0, 0, 0, 0, 1
        ))));
    }
}
