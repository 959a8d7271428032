//! tlsgate's interception CA.
//!
//! - [`CertAuthority`]: generate a local CA (ECDSA P-256, RSA 2048/3072), save it with safe
//!   file modes, load it back (refusing a key readable by others), describe it.
//! - [`Minter`]: sign leaf certificates for a requested name ([`Minter::mint`], downstream-first)
//!   or mimicking a verified origin certificate's names ([`Minter::mimic`], upstream-first). All
//!   leaves share one ECDSA P-256 leaf key that is never the CA key.
//! - [`LeafCache`]: bounded LRU with a TTL below the leaf lifetime.
//!
//! Synchronous and CPU-only: no sockets, no async runtime. Key material never appears in
//! `Debug` output or error messages.

#![forbid(unsafe_code)]

mod authority;
mod cache;
mod encoding;
mod error;
mod files;
mod inspect;
mod mint;

pub use authority::{
    Algorithm, BACKDATE, CA_CERT_DER, CA_CERT_PEM, CA_KEY, CaFiles, CaParams, CaSummary,
    CertAuthority, MAX_DAYS,
};
pub use cache::{CacheStats, EXPIRY_MARGIN, LeafCache};
pub use error::CaError;
pub use inspect::{CertNames, MAX_NAME_LEN, cert_names};
pub use mint::{DEFAULT_LEAF_LIFETIME, LeafFiles, LeafRequest, MintedLeaf, Minter};

#[cfg(test)]
mod tests;
