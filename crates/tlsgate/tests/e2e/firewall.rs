//! The provider's SNI firewall in the `fw` namespace (iptables, FORWARD chain).
//!
//! A customer→provider TCP connection may carry payload only if its first payload packet is
//! a TLS ClientHello whose server_name extension names the relay exactly. Payload-less
//! packets (handshake, ACKs, FIN) pass; the verdict on the first payload packet is kept in
//! the connection mark (1 allowed, 2 denied) and reset on every SYN, so a reused port pair
//! cannot inherit an old verdict. Everything else is dropped, each drop rule with a comment
//! and counters so the test can read them. See shared notes on the kernel SNI firewall:
//! `--algo kmp` (Boyer-Moore misses patterns across fragments) and the full extension bytes
//! (so `xenvoy-b…`, `envoy-b….evil.net` and the name inside ALPN do not pass).

use tlsgate_testkit::NetNs;

const JUDGE: &str = "TG_JUDGE";
const NO_PAYLOAD: &str = "TG_NOPAYLOAD";

/// Offset of the TCP payload, as a u32-match location prefix.
const PAYLOAD: &str = "0>>22&0x3C@12>>26&0x3C@";

/// The bytes of a server_name extension naming exactly `name`, in iptables hex-string form.
pub fn sni_extension_pattern(name: &str) -> String {
    let len = name.len();
    assert!(len < 0x4000, "SNI too long for a test");
    let mut bytes = vec![0x00, 0x00];
    bytes.extend_from_slice(&((len + 5) as u16).to_be_bytes()); // extension length
    bytes.extend_from_slice(&((len + 3) as u16).to_be_bytes()); // server name list length
    bytes.push(0x00); // name type: host_name
    bytes.extend_from_slice(&(len as u16).to_be_bytes());
    bytes.extend_from_slice(name.as_bytes());
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("|{}|", hex.join(" "))
}

fn ipt(fw: &NetNs, args: &[&str]) {
    fw.run(&[&["iptables", "-w", "5"][..], args].concat())
        .unwrap_or_else(|e| panic!("iptables {args:?}: {e}"));
}

/// Installs the rules; `customer_if` faces the edge, `provider_if` the relay.
pub fn install(fw: &NetNs, customer_if: &str, provider_if: &str, allowed_sni: &str) {
    for ipt6 in [
        &["ip6tables", "-w", "5", "-P", "FORWARD", "DROP"][..],
        &["ip6tables", "-w", "5", "-P", "INPUT", "DROP"][..],
    ] {
        fw.run(ipt6).expect("ip6tables policy");
    }
    let (c, p) = (customer_if, provider_if);
    ipt(fw, &["-N", JUDGE]);
    ipt(fw, &["-N", NO_PAYLOAD]);
    ipt(fw, &["-P", "FORWARD", "DROP"]);

    #[rustfmt::skip]
    let rules: Vec<Vec<&str>> = vec![
        vec!["-m", "conntrack", "--ctstate", "INVALID", "-m", "comment", "--comment",
             "tg drop invalid", "-j", "DROP"],
        vec!["-i", p, "-o", c, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-m",
             "comment", "--comment", "tg provider replies", "-j", "ACCEPT"],
        vec!["-i", c, "-o", p, "-p", "tcp", "--syn", "-m", "comment", "--comment",
             "tg reset verdict on SYN", "-j", "CONNMARK", "--set-mark", "0"],
        vec!["-i", c, "-o", p, "-p", "tcp", "-m", "connmark", "--mark", "1", "-m", "comment",
             "--comment", "tg judged allowed", "-j", "ACCEPT"],
        vec!["-i", c, "-o", p, "-p", "tcp", "-m", "comment", "--comment",
             "tg payload-less packets", "-j", NO_PAYLOAD],
        vec!["-i", c, "-o", p, "-p", "tcp", "-m", "connmark", "--mark", "2", "-m", "comment",
             "--comment", "tg judged denied", "-j", "DROP"],
        vec!["-i", c, "-o", p, "-p", "tcp", "-m", "connmark", "--mark", "0", "-m", "comment",
             "--comment", "tg judge first payload", "-j", JUDGE],
        vec!["-m", "comment", "--comment", "tg drop everything else", "-j", "DROP"],
    ];
    for rule in &rules {
        ipt(fw, &[&["-A", "FORWARD"][..], rule].concat());
    }

    // A packet without payload: IPv4 without options (IHL 5) whose total length is exactly
    // 20 + the TCP header length. One rule per possible TCP data offset (20..=60 bytes).
    for tcp_header in (20..=60).step_by(4) {
        let expr = format!(
            "0>>24=0x45 && 0>>22&0x3C@12>>26&0x3C={tcp_header} && 0&0xFFFF={}",
            20 + tcp_header
        );
        let comment = format!("tg no payload tcp header {tcp_header}");
        let rule = [
            "-A",
            NO_PAYLOAD,
            "-m",
            "u32",
            "--u32",
            &expr,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "ACCEPT",
        ];
        ipt(fw, &rule);
    }

    // The first payload packet: a TLS handshake record (0x16 0x03 ..) holding a ClientHello
    // (handshake type 1) and the server_name extension for exactly `allowed_sni`.
    let hello = format!("{PAYLOAD}0>>16=0x1603 && {PAYLOAD}4>>16&0xFF=0x01");
    let sni = sni_extension_pattern(allowed_sni);
    #[rustfmt::skip]
    let judge: Vec<Vec<&str>> = vec![
        vec!["-m", "u32", "--u32", &hello, "-m", "string", "--algo", "kmp", "--hex-string",
             &sni, "-m", "comment", "--comment", "tg hello for the relay", "-j", "CONNMARK",
             "--set-mark", "1"],
        vec!["-m", "connmark", "--mark", "1", "-m", "comment", "--comment",
             "tg accept first hello", "-j", "ACCEPT"],
        vec!["-m", "comment", "--comment", "tg deny connection", "-j", "CONNMARK",
             "--set-mark", "2"],
        vec!["-m", "comment", "--comment", "tg drop first payload", "-j", "DROP"],
    ];
    for rule in &judge {
        ipt(fw, &[&["-A", JUDGE][..], rule].concat());
    }
}

/// A reading of the firewall's counters.
#[derive(Debug, Clone)]
pub struct Counters {
    /// Packets dropped by any DROP rule or the FORWARD policy.
    pub dropped: u64,
    /// Packets accepted as first ClientHello of an allowed connection.
    pub hellos_allowed: u64,
    /// The listing it was read from, for failure messages.
    pub listing: String,
}

/// Reads `iptables -L -v -x -n` in the firewall namespace.
pub fn counters(fw: &NetNs) -> Counters {
    let listing = fw
        .run(&["iptables", "-w", "5", "-L", "-v", "-x", "-n"])
        .expect("listing iptables counters");
    let mut dropped = 0;
    let mut hellos_allowed = 0;
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if let Some(rest) = line.strip_prefix("Chain FORWARD (policy DROP ") {
            dropped += rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("policy packet count");
            continue;
        }
        let Some(packets) = cols.first().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if cols.get(2) == Some(&"DROP") {
            dropped += packets;
        }
        if line.contains("tg accept first hello") {
            hellos_allowed += packets;
        }
    }
    Counters {
        dropped,
        hellos_allowed,
        listing,
    }
}
