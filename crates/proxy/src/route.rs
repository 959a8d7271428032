//! Route lookup on the relay: the first route whose pattern matches the requested name wins.

use crate::config::{Route, Routes, TargetHost, UpstreamTarget};

/// Which kind of traffic is being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Tunnelled TLS: CONNECT to port 443 or the raw `tls` transport.
    Tls,
    /// Plain HTTP: forwarded requests and CONNECT to port 80.
    Http,
}

/// CONNECT ports and what they carry. Other ports are refused (`port_not_routed`).
pub fn traffic_for_connect_port(port: u16) -> Option<Traffic> {
    match port {
        443 => Some(Traffic::Tls),
        80 => Some(Traffic::Http),
        _ => None,
    }
}

impl Routes {
    /// The first route matching `name`.
    pub fn find(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.pattern.matches(name))
    }

    /// The upstream `(host, port)` for `name` and `traffic`, if a route allows it.
    pub fn target(&self, name: &str, traffic: Traffic) -> Option<(String, u16)> {
        let route = self.find(name)?;
        let target = match traffic {
            Traffic::Tls => route.tls.as_ref()?,
            Traffic::Http => route.http.as_ref()?,
        };
        Some(target.resolve(name))
    }
}

impl UpstreamTarget {
    /// The concrete `(host, port)` for a request naming `name`.
    pub fn resolve(&self, name: &str) -> (String, u16) {
        match &self.host {
            TargetHost::Fixed(host) => (host.clone(), self.port),
            TargetHost::Requested => (name.to_owned(), self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlsgate_policy::FqdnPattern;

    fn routes() -> Routes {
        Routes {
            routes: vec![
                Route {
                    pattern: FqdnPattern::parse("private.service.example.com").unwrap(),
                    tls: Some(UpstreamTarget {
                        host: TargetHost::Fixed("192.0.2.10".into()),
                        port: 443,
                    }),
                    http: Some(UpstreamTarget {
                        host: TargetHost::Fixed("192.0.2.10".into()),
                        port: 80,
                    }),
                },
                Route {
                    pattern: FqdnPattern::parse("*.svc.example.com").unwrap(),
                    tls: Some(UpstreamTarget {
                        host: TargetHost::Requested,
                        port: 8443,
                    }),
                    http: None,
                },
            ],
        }
    }

    #[test]
    fn routes_by_exact_name_and_wildcard_template() {
        let r = routes();
        assert_eq!(
            r.target("PRIVATE.service.example.com", Traffic::Tls),
            Some(("192.0.2.10".into(), 443))
        );
        assert_eq!(
            r.target("private.service.example.com", Traffic::Http),
            Some(("192.0.2.10".into(), 80))
        );
        assert_eq!(
            r.target("api.svc.example.com", Traffic::Tls),
            Some(("api.svc.example.com".into(), 8443))
        );
    }

    #[test]
    fn refuses_unrouted_names_and_missing_kinds() {
        let r = routes();
        assert_eq!(r.target("svc.example.com", Traffic::Tls), None);
        assert_eq!(r.target("unknown.example.com", Traffic::Tls), None);
        assert_eq!(r.target("api.svc.example.com", Traffic::Http), None);
    }
}
