//! Certificates for bumped connections: minted from the interception CA (or mimicking a verified
//! origin's names), cached, and minted once per name even when many first requests race.
//!
//! Minting signs with the CA key (an ECDSA or RSA signature: tens of microseconds to milliseconds),
//! so it runs on the blocking pool, never on a reactor thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use tlsgate_ca::{CertAuthority, LeafCache, LeafRequest, MintedLeaf, Minter};
use tokio::sync::OnceCell;

use crate::config::CertSettings;
use crate::error::ConnError;
use crate::metrics::{Histogram, MINT_SECONDS_BUCKETS};

/// A minted leaf ready for rustls.
pub struct Leaf {
    pub minted: Arc<MintedLeaf>,
    pub certified: Arc<CertifiedKey>,
}

/// Mints and caches leaves for one interception listener.
pub struct CertStore {
    minter: Arc<Minter>,
    cache: LeafCache,
    signing_key: Arc<dyn SigningKey>,
    /// Mints in progress: concurrent first requests for one key share one mint.
    inflight: Mutex<HashMap<String, Arc<OnceCell<Arc<MintedLeaf>>>>>,
    ca: Arc<CertAuthority>,
    /// Leaves minted so far (cache misses that signed a certificate).
    mints: Arc<AtomicU64>,
    /// Time each mint took on the blocking pool.
    mint_seconds: Arc<Histogram>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MintStats {
    pub mints: u64,
    pub cache_hits: u64,
}

impl CertStore {
    pub fn new(settings: &CertSettings, provider: &CryptoProvider) -> Result<Self, ConnError> {
        let minter = Minter::new(settings.ca.clone(), settings.leaf_lifetime)
            .map_err(|e| ConnError::LocalMint(e.to_string()))?;
        let cache = LeafCache::new(
            settings.cache_capacity,
            settings.cache_ttl,
            settings.leaf_lifetime,
        )
        .map_err(|e| ConnError::LocalMint(e.to_string()))?;
        let signing_key = provider
            .key_provider
            .load_private_key(minter.leaf_key())
            .map_err(|e| ConnError::LocalMint(e.to_string()))?;
        Ok(Self {
            minter: Arc::new(minter),
            cache,
            signing_key,
            inflight: Mutex::new(HashMap::new()),
            ca: settings.ca.clone(),
            mints: Arc::new(AtomicU64::new(0)),
            mint_seconds: Arc::new(Histogram::new(&MINT_SECONDS_BUCKETS)),
        })
    }

    /// The interception CA's certificate.
    pub fn ca(&self) -> &CertAuthority {
        &self.ca
    }

    pub fn cache_stats(&self) -> tlsgate_ca::CacheStats {
        self.cache.stats()
    }

    /// How many leaves were signed since start.
    pub fn mint_count(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// The mint latency histogram (`tlsgate_cert_mint_duration_seconds`).
    pub fn mint_seconds(&self) -> &Arc<Histogram> {
        &self.mint_seconds
    }

    /// A leaf for `name` (a DNS name, or an IP literal for an IP SAN), minted from the request.
    pub async fn for_name(&self, name: &str) -> Result<Leaf, ConnError> {
        let request = LeafRequest::for_name(name);
        self.get_or_mint(format!("name:{name}"), move |minter| minter.mint(&request))
            .await
    }

    /// A leaf copying the names of a verified origin certificate.
    pub async fn mimic(&self, origin_leaf_der: &[u8]) -> Result<Leaf, ConnError> {
        let digest = ring_digest(origin_leaf_der);
        let der = origin_leaf_der.to_vec();
        self.get_or_mint(format!("mimic:{digest}"), move |minter| minter.mimic(&der))
            .await
    }

    async fn get_or_mint<F>(&self, key: String, mint: F) -> Result<Leaf, ConnError>
    where
        F: FnOnce(&Minter) -> Result<MintedLeaf, tlsgate_ca::CaError> + Send + 'static,
    {
        if let Some(minted) = self.cache.get(&key) {
            return Ok(self.leaf(minted));
        }
        let cell = {
            let mut inflight = self
                .inflight
                .lock()
                .map_err(|_| ConnError::LocalMint("poisoned".into()))?;
            inflight.entry(key.clone()).or_default().clone()
        };
        let minter = self.minter.clone();
        let mints = self.mints.clone();
        let mint_seconds = self.mint_seconds.clone();
        let result = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    mints.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let minted = mint(&minter);
                    mint_seconds.observe(started.elapsed());
                    minted
                })
                .await
                .map_err(|e| ConnError::LocalMint(e.to_string()))?
                .map(Arc::new)
                .map_err(|e| ConnError::LocalMint(e.to_string()))
            })
            .await
            .cloned();
        if let Ok(minted) = &result {
            self.cache.insert(key.clone(), minted.clone());
        }
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&key);
        }
        result.map(|minted| self.leaf(minted))
    }

    fn leaf(&self, minted: Arc<MintedLeaf>) -> Leaf {
        let certified = Arc::new(CertifiedKey::new(
            minted.chain.clone(),
            self.signing_key.clone(),
        ));
        Leaf { minted, certified }
    }
}

fn ring_digest(der: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Resolves every handshake of one connection to the leaf chosen before the handshake.
#[derive(Debug)]
pub struct FixedCert(pub Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The base config's resolver: never used, since every connection sets its own leaf.
#[derive(Debug)]
pub struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}
