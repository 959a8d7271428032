//! Admit: per-key concurrency limits taken before a connection or tunnel is served — connections per
//! source IP per listener (`limits.max_connections_per_source`) and tunnels per relay client
//! identity (`limits.max_tunnels_per_client`). A permit is released when dropped; the map only
//! holds keys with a live permit, so it is bounded by the connections themselves.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts live permits per key and refuses a key at its limit.
#[derive(Debug)]
pub struct KeyedLimit<K: Eq + Hash> {
    max: usize,
    live: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> KeyedLimit<K> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            live: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A permit for `key`, or `None` when `key` already holds `max` of them.
    pub fn try_admit(&self, key: K) -> Option<Permit<K>> {
        // A poisoned lock means a panic while holding it: the counts are still consistent (every
        // update is one statement), so keep using them.
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let count = live.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Permit {
            key: Some(key),
            live: self.live.clone(),
        })
    }

    /// Live permits held for `key`.
    pub fn count(&self, key: &K) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(key).copied().unwrap_or(0)
    }
}

/// One admitted connection or tunnel; releases its slot on drop.
#[derive(Debug)]
pub struct Permit<K: Eq + Hash> {
    key: Option<K>,
    live: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash> Drop for Permit<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = live.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.remove(&key);
            }
        }
    }
}

/// Connections per source IP on one listener. IPv4-mapped IPv6 sources count as their IPv4 form.
pub type SourceLimit = KeyedLimit<IpAddr>;

/// A relay client, for `limits.max_tunnels_per_client`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    /// The DER of the client certificate it authenticated with (mTLS).
    Cert(Arc<[u8]>),
    /// No client certificate: its source address.
    Ip(IpAddr),
}

impl ClientIdentity {
    /// The certificate's identity when the client presented one, else the source IP.
    pub fn of(cert: Option<&[u8]>, ip: IpAddr) -> Self {
        match cert {
            Some(der) => Self::Cert(der.into()),
            None => Self::Ip(ip.to_canonical()),
        }
    }
}

/// Tunnels per relay client identity on one relay listener.
pub type TunnelLimit = KeyedLimit<ClientIdentity>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_key_at_its_limit_and_frees_the_slot_on_drop() {
        let limit = SourceLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limit.try_admit(a).unwrap();
        let _second = limit.try_admit(a).unwrap();
        assert!(limit.try_admit(a).is_none(), "third from the same source");
        assert!(
            limit.try_admit(b).is_some(),
            "another source is not affected"
        );
        drop(first);
        assert!(limit.try_admit(a).is_some(), "a slot freed by drop");
    }

    #[test]
    fn forgets_keys_without_live_permits() {
        let limit = SourceLimit::new(1);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        drop(limit.try_admit(a));
        assert_eq!(limit.count(&a), 0);
        assert!(
            limit.live.lock().unwrap().is_empty(),
            "map bounded by live permits"
        );
    }

    #[test]
    fn mapped_ipv4_clients_share_their_ipv4_identity() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(
            ClientIdentity::of(None, v4),
            ClientIdentity::of(None, mapped)
        );
    }
}
