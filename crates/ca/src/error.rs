//! The one error type of this crate. Variants name what went wrong and carry the path or value
//! involved; none of them ever holds key material.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Everything that can go wrong creating, storing, loading or using the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// `save` and `ca issue` never replace a file: an existing CA may already be trusted by clients.
    #[error("{} already exists; refusing to overwrite it (move it away or choose another directory)", .0.display())]
    AlreadyExists(PathBuf),

    /// The private key file can be read by group or others.
    #[error(
        "CA key {} is readable by group or others (mode {mode:04o}); restrict it with: chmod 600 {}",
        path.display(),
        path.display()
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },

    #[error("creating directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("writing {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("reading {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file holds no PEM certificate, or one that does not parse as X.509.
    #[error("{}: not a valid PEM certificate: {reason}", path.display())]
    InvalidCertificate { path: PathBuf, reason: String },

    /// The certificate parses but is not a CA (no basicConstraints CA:TRUE).
    #[error("{}: certificate is not a CA (basicConstraints CA:TRUE missing)", path.display())]
    NotACa { path: PathBuf },

    /// The key file holds no usable PKCS#8 private key.
    #[error("{}: {reason}", path.display())]
    InvalidKey { path: PathBuf, reason: String },

    /// The private key does not belong to the certificate's public key.
    #[error("CA key {} does not match the public key of certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    /// `--algorithm` / `Algorithm::from_str` got an unknown name.
    #[error("unknown key algorithm {0:?}; expected ecdsa-p256, rsa-2048 or rsa-3072")]
    UnknownAlgorithm(String),

    /// Generating a key pair failed.
    #[error("generating a {algorithm} key pair: {reason}")]
    KeyGeneration {
        algorithm: &'static str,
        reason: String,
    },

    /// A validity period that is empty or out of range.
    #[error("invalid validity: {0}")]
    InvalidValidity(String),

    /// The CA's validity does not include the present: nothing it signs now would be valid.
    #[error("the CA is not valid now (valid {not_before:?} to {not_after:?})")]
    CaNotValidNow {
        not_before: SystemTime,
        not_after: SystemTime,
    },

    /// The origin's certificate expires before the leaf could start; mimicking it makes no sense.
    #[error("the origin certificate expired ({not_after:?}); refusing to mimic it")]
    OriginExpired { not_after: SystemTime },

    /// The origin's leaf could not be parsed.
    #[error("origin certificate does not parse: {0}")]
    InvalidOriginCertificate(String),

    /// The origin's leaf has neither DNS/IP SANs nor a subject CN.
    #[error("origin certificate names nothing (no DNS/IP subjectAltName, no subject CN)")]
    OriginHasNoNames,

    /// A leaf request with no name at all.
    #[error("leaf request names nothing (no common name, DNS name or IP)")]
    EmptyRequest,

    /// A name that cannot go into a certificate.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// rcgen refused the parameters or failed to sign.
    #[error("signing a certificate")]
    Sign(#[source] rcgen::Error),

    /// A cached leaf would outlive the certificate it holds.
    #[error("cache TTL {ttl:?} must be below the leaf lifetime {leaf_lifetime:?}")]
    CacheTtlTooLong {
        ttl: Duration,
        leaf_lifetime: Duration,
    },

    /// A cache that can hold nothing.
    #[error("cache capacity must be at least 1")]
    CacheCapacityZero,
}
