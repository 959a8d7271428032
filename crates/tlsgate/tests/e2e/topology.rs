//! Five network namespaces in a line, addressed only from the documentation ranges:
//!
//! ```text
//! client 192.0.2.1/30 ── 192.0.2.2/30 edge 192.0.2.5/30 ── 192.0.2.6/30 fw
//!     fw 198.51.100.1/30 ── 198.51.100.2/30 relay 203.0.113.1/30 ── 203.0.113.2/30 origin
//! ```
//!
//! `edge`, `fw` and `relay` forward, so the client's direct route to the origin crosses the
//! firewall. No namespace has a default route and IPv6 is off everywhere.

use tlsgate_testkit::{NetNs, unique_prefix, veth};

pub const CLIENT_IP: &str = "192.0.2.1";
pub const EDGE_IP: &str = "192.0.2.2";
pub const EDGE_FW_IP: &str = "192.0.2.5";
pub const FW_CUSTOMER_IP: &str = "192.0.2.6";
pub const FW_PROVIDER_IP: &str = "198.51.100.1";
pub const RELAY_IP: &str = "198.51.100.2";
pub const RELAY_ORIGIN_IP: &str = "203.0.113.1";
pub const ORIGIN_IP: &str = "203.0.113.2";

const CUSTOMER_NETS: &str = "192.0.2.0/29";
const PROVIDER_NET: &str = "198.51.100.0/30";
const ORIGIN_NET: &str = "203.0.113.0/30";
const CLIENT_EDGE_NET: &str = "192.0.2.0/30";
const EDGE_FW_NET: &str = "192.0.2.4/30";

/// The namespaces; dropping this removes them, and every process left inside them.
pub struct Topology {
    pub prefix: String,
    pub client: NetNs,
    pub edge: NetNs,
    pub fw: NetNs,
    pub relay: NetNs,
    pub origin: NetNs,
    /// The firewall's interface towards the customer (edge) side.
    pub fw_customer_if: String,
    /// The firewall's interface towards the provider (relay) side.
    pub fw_provider_if: String,
}

impl Topology {
    pub fn build() -> Topology {
        let prefix = unique_prefix();
        let ns = |role: &str| {
            NetNs::new(&format!("{prefix}{role}"))
                .unwrap_or_else(|e| panic!("creating namespace {prefix}{role}: {e}"))
        };
        let topo = Topology {
            client: ns("client"),
            edge: ns("edge"),
            fw: ns("fw"),
            relay: ns("relay"),
            origin: ns("origin"),
            fw_customer_if: format!("{prefix}fc"),
            fw_provider_if: format!("{prefix}fp"),
            prefix,
        };
        topo.link();
        topo
    }

    fn link(&self) {
        let p = &self.prefix;
        let cidr = |ip: &str| format!("{ip}/30");
        veth(
            &self.client,
            &format!("{p}ce"),
            &cidr(CLIENT_IP),
            &self.edge,
            &format!("{p}ec"),
            &cidr(EDGE_IP),
        )
        .expect("veth client-edge");
        veth(
            &self.edge,
            &format!("{p}ef"),
            &cidr(EDGE_FW_IP),
            &self.fw,
            &self.fw_customer_if,
            &cidr(FW_CUSTOMER_IP),
        )
        .expect("veth edge-fw");
        veth(
            &self.fw,
            &self.fw_provider_if,
            &cidr(FW_PROVIDER_IP),
            &self.relay,
            &format!("{p}rf"),
            &cidr(RELAY_IP),
        )
        .expect("veth fw-relay");
        veth(
            &self.relay,
            &format!("{p}ro"),
            &cidr(RELAY_ORIGIN_IP),
            &self.origin,
            &format!("{p}or"),
            &cidr(ORIGIN_IP),
        )
        .expect("veth relay-origin");

        for router in [&self.edge, &self.fw, &self.relay] {
            router
                .sysctl("net.ipv4.ip_forward", "1")
                .expect("enabling forwarding");
        }
        let routes: [(&NetNs, &[&str], &str); 5] = [
            (
                &self.client,
                &[EDGE_FW_NET, PROVIDER_NET, ORIGIN_NET],
                EDGE_IP,
            ),
            (&self.edge, &[PROVIDER_NET, ORIGIN_NET], FW_CUSTOMER_IP),
            (&self.fw, &[CLIENT_EDGE_NET], EDGE_FW_IP),
            (&self.relay, &[CUSTOMER_NETS], FW_PROVIDER_IP),
            (
                &self.origin,
                &[CUSTOMER_NETS, PROVIDER_NET],
                RELAY_ORIGIN_IP,
            ),
        ];
        for (ns, nets, via) in routes {
            for net in nets {
                ns.run(&["ip", "route", "add", net, "via", via])
                    .unwrap_or_else(|e| panic!("route {net} via {via} in {}: {e}", ns.name()));
            }
        }
        self.fw
            .run(&["ip", "route", "add", ORIGIN_NET, "via", RELAY_IP])
            .expect("fw route to the origin net");
    }
}
