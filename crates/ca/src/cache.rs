//! A bounded, expiring cache of minted leaves, keyed by whatever the caller mints for
//! (a name, or an origin certificate fingerprint).
//!
//! Synchronous (`std::sync::Mutex`, held only for map operations, never while minting).
//! Entries expire after the TTL, or earlier when the leaf itself is about to expire; when full,
//! the least recently used entry is evicted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::{CaError, MintedLeaf};

/// A cached leaf is not served when it has less than this left to live, so a client never gets
/// a certificate that expires during its handshake.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Counters since the cache was made, and its current size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Lookups that found nothing usable (absent or expired).
    pub misses: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries dropped because their TTL (or their leaf) expired.
    pub expired: u64,
    pub len: usize,
}

/// The cache. `Send + Sync`; share it behind an `Arc`.
pub struct LeafCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Recency order: tick of last use → key. The smallest tick is the least recently used.
    order: BTreeMap<u64, String>,
    tick: u64,
    stats: CacheStats,
}

struct Entry {
    leaf: Arc<MintedLeaf>,
    expires: Instant,
    tick: u64,
}

impl LeafCache {
    /// A cache of at most `capacity` leaves, each kept at most `ttl`. `ttl` must be below
    /// `leaf_lifetime` ([`CaError::CacheTtlTooLong`]) so a cached leaf is always still valid.
    pub fn new(capacity: usize, ttl: Duration, leaf_lifetime: Duration) -> Result<Self, CaError> {
        if capacity == 0 {
            return Err(CaError::CacheCapacityZero);
        }
        if ttl >= leaf_lifetime {
            return Err(CaError::CacheTtlTooLong { ttl, leaf_lifetime });
        }
        Ok(LeafCache {
            capacity,
            ttl,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// The leaf cached under `key`, unless absent or expired (then removed).
    pub fn get(&self, key: &str) -> Option<Arc<MintedLeaf>> {
        self.get_at(key, Instant::now(), SystemTime::now())
    }

    /// Caches `leaf` under `key` (replacing any previous one), evicting the least recently used
    /// entry when full.
    pub fn insert(&self, key: String, leaf: Arc<MintedLeaf>) {
        self.insert_at(key, leaf, Instant::now());
    }

    /// Entries currently held (expired ones included until looked up or evicted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hits, misses, evictions, expirations and current length.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            len: inner.entries.len(),
            ..inner.stats
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing the cache, so keep serving rather than propagate the poison.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get_at(&self, key: &str, now: Instant, wall: SystemTime) -> Option<Arc<MintedLeaf>> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(key) else {
            inner.stats.misses += 1;
            return None;
        };
        let leaf_ending = entry.leaf.not_after <= wall + EXPIRY_MARGIN;
        if entry.expires <= now || leaf_ending {
            inner.remove(key);
            inner.stats.expired += 1;
            inner.stats.misses += 1;
            return None;
        }
        let old_tick = entry.tick;
        let leaf = Arc::clone(&entry.leaf);
        let tick = inner.next_tick();
        inner.order.remove(&old_tick);
        inner.order.insert(tick, key.to_owned());
        if let Some(entry) = inner.entries.get_mut(key) {
            entry.tick = tick;
        }
        inner.stats.hits += 1;
        Some(leaf)
    }

    fn insert_at(&self, key: String, leaf: Arc<MintedLeaf>, now: Instant) {
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.entries.len() >= self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
            inner.stats.evictions += 1;
        }
        let tick = inner.next_tick();
        inner.order.insert(tick, key.clone());
        inner.entries.insert(
            key,
            Entry {
                leaf,
                expires: now + self.ttl,
                tick,
            },
        );
    }
}

impl Inner {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn leaf(serial: u8) -> Arc<MintedLeaf> {
        Arc::new(MintedLeaf {
            chain: Vec::new(),
            not_after: SystemTime::now() + DAY,
            serial: vec![serial],
        })
    }

    fn serial(found: Option<Arc<MintedLeaf>>) -> Option<u8> {
        found.map(|l| l.serial[0])
    }

    #[test]
    fn rejects_ttl_not_below_leaf_lifetime() {
        let err = LeafCache::new(10, DAY, DAY).unwrap_err();
        assert!(
            matches!(err, CaError::CacheTtlTooLong { ttl, leaf_lifetime } if ttl == DAY && leaf_lifetime == DAY)
        );
        assert!(matches!(
            LeafCache::new(10, 2 * DAY, DAY).unwrap_err(),
            CaError::CacheTtlTooLong { .. }
        ));
        assert!(LeafCache::new(10, DAY - Duration::from_secs(1), DAY).is_ok());
    }

    #[test]
    fn rejects_zero_capacity() {
        assert!(matches!(
            LeafCache::new(0, HOUR, DAY).unwrap_err(),
            CaError::CacheCapacityZero
        ));
    }

    #[test]
    fn serves_until_ttl_then_expires() {
        let cache = LeafCache::new(4, HOUR, DAY).unwrap();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        cache.insert_at("a".into(), leaf(1), t0);
        assert_eq!(
            serial(cache.get_at("a", t0 + HOUR - Duration::from_secs(1), wall)),
            Some(1)
        );
        assert_eq!(serial(cache.get_at("a", t0 + HOUR, wall)), None);
        assert_eq!(cache.len(), 0, "expired entry removed on lookup");
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.expired, stats.len),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn never_serves_a_leaf_about_to_expire_even_within_ttl() {
        let cache = LeafCache::new(4, HOUR, DAY).unwrap();
        let t0 = Instant::now();
        let short = Arc::new(MintedLeaf {
            chain: Vec::new(),
            not_after: SystemTime::now() + Duration::from_secs(30),
            serial: vec![9],
        });
        cache.insert_at("short".into(), short, t0);
        assert!(cache.get_at("short", t0, SystemTime::now()).is_none());
    }

    #[test]
    fn evicts_least_recently_used_at_capacity() {
        let cache = LeafCache::new(2, HOUR, DAY).unwrap();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        cache.insert_at("a".into(), leaf(1), t0);
        cache.insert_at("b".into(), leaf(2), t0);
        // Touch "a": now "b" is the least recently used.
        assert_eq!(serial(cache.get_at("a", t0, wall)), Some(1));
        cache.insert_at("c".into(), leaf(3), t0);
        assert_eq!(cache.len(), 2);
        assert_eq!(serial(cache.get_at("b", t0, wall)), None);
        assert_eq!(serial(cache.get_at("a", t0, wall)), Some(1));
        assert_eq!(serial(cache.get_at("c", t0, wall)), Some(3));
        let stats = cache.stats();
        assert_eq!(
            stats,
            CacheStats {
                hits: 3,
                misses: 1,
                evictions: 1,
                expired: 0,
                len: 2
            }
        );
    }

    #[test]
    fn replacing_a_key_does_not_evict_others() {
        let cache = LeafCache::new(2, HOUR, DAY).unwrap();
        let t0 = Instant::now();
        cache.insert_at("a".into(), leaf(1), t0);
        cache.insert_at("b".into(), leaf(2), t0);
        cache.insert_at("a".into(), leaf(7), t0);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.stats().evictions, 0);
        assert_eq!(serial(cache.get_at("a", t0, SystemTime::now())), Some(7));
        assert_eq!(serial(cache.get_at("b", t0, SystemTime::now())), Some(2));
    }

    #[test]
    fn stays_bounded_under_many_inserts() {
        let cache = LeafCache::new(100, HOUR, DAY).unwrap();
        for i in 0..1000u32 {
            cache.insert(format!("host{i}.example"), leaf((i % 256) as u8));
        }
        assert_eq!(cache.len(), 100);
        assert_eq!(cache.stats().evictions, 900);
        // The newest 100 survive.
        assert!(cache.get("host999.example").is_some());
        assert!(cache.get("host899.example").is_none());
        assert!(cache.get("host900.example").is_some());
    }
}
