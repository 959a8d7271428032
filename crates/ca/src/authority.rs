//! The certificate authority: generate, save, load, describe.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::CaError;
use crate::encoding::{asn1_to_system, fingerprints, hex_upper, pem, to_offset};
use crate::files::{self, CERT_MODE, KEY_MODE, NewFile};

/// File names inside a CA directory.
pub const CA_CERT_PEM: &str = "ca.pem";
/// DER copy of the certificate, for trust stores that want DER (Android, some appliances).
pub const CA_CERT_DER: &str = "ca.der";
/// The CA private key (PKCS#8 PEM, mode 0600).
pub const CA_KEY: &str = "ca.key";

/// How far certificate start times are back-dated, so that clients with a slightly slow clock
/// accept a certificate minted a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Longest validity accepted anywhere in this crate (100 years), far inside what X.509 time
/// encodings and the `time` crate can represent.
pub const MAX_DAYS: u32 = 36_525;

/// Key algorithm of a generated CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256: small, fast, accepted by every current TLS client.
    EcdsaP256,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256: for clients or appliances that only take RSA roots.
    Rsa2048,
    /// RSA 3072 with PKCS#1 v1.5 SHA-256.
    Rsa3072,
}

impl Algorithm {
    /// The name accepted by `FromStr` and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Rsa2048 => "rsa-2048",
            Algorithm::Rsa3072 => "rsa-3072",
        }
    }

    /// Every supported algorithm, in CLI order.
    pub const ALL: [Algorithm; 3] = [Algorithm::EcdsaP256, Algorithm::Rsa2048, Algorithm::Rsa3072];
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| CaError::UnknownAlgorithm(s.to_owned()))
    }
}

/// What to put in a new CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaParams {
    /// Subject common name (the name users see in trust stores).
    pub common_name: String,
    pub algorithm: Algorithm,
    /// Validity in days from now (the start is back-dated by [`BACKDATE`]).
    pub days: u32,
}

/// Where `save` put the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    pub cert_pem: PathBuf,
    pub cert_der: PathBuf,
    pub key: PathBuf,
}

/// A human description of the CA certificate (what `tlsgate ca show` prints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSummary {
    /// Subject DN as x509-parser prints it (`CN=tlsgate interception CA`).
    pub subject: String,
    pub issuer: String,
    /// Serial number, uppercase hex without separators (as `openssl x509 -serial`).
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// SHA-256 of the DER certificate, uppercase hex, colon-separated (as `openssl x509 -fingerprint`).
    pub sha256_fingerprint: String,
    /// SHA-1 of the DER certificate, same format (some trust-store UIs still show SHA-1).
    pub sha1_fingerprint: String,
    /// Key algorithm, e.g. `ECDSA P-256`, `RSA 3072`.
    pub algorithm: String,
}

/// A CA certificate with its private key, able to sign leaves.
///
/// `Send + Sync`: share it behind an `Arc`. `Debug` shows the subject and fingerprint, never the key.
pub struct CertAuthority {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_before: SystemTime,
    not_after: SystemTime,
    algorithm: String,
}

impl fmt::Debug for CertAuthority {
    // Key material never goes into Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = self.summary();
        f.debug_struct("CertAuthority")
            .field("subject", &summary.subject)
            .field("algorithm", &summary.algorithm)
            .field("sha256", &summary.sha256_fingerprint)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A new self-signed CA: basicConstraints CA:TRUE with pathlen 0 (it signs leaves only),
    /// keyUsage keyCertSign + cRLSign (critical), a random 16-byte serial, a subject key
    /// identifier, and a validity starting [`BACKDATE`] ago.
    pub fn generate(params: &CaParams) -> Result<Self, CaError> {
        let common_name = params.common_name.trim();
        if common_name.is_empty() {
            return Err(CaError::InvalidName {
                name: params.common_name.clone(),
                reason: "the CA common name is empty",
            });
        }
        if params.days == 0 {
            return Err(CaError::InvalidValidity(
                "a CA must be valid for at least 1 day".into(),
            ));
        }
        if params.days > MAX_DAYS {
            return Err(CaError::InvalidValidity(format!(
                "{} days is more than the maximum of {MAX_DAYS}",
                params.days
            )));
        }
        let now = SystemTime::now();
        let not_after = now + Duration::from_secs(u64::from(params.days) * 86_400);

        let key = generate_key(params.algorithm)?;
        let mut cert_params = CertificateParams::default();
        cert_params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        cert_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cert_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        cert_params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        cert_params.not_before = to_offset(now - BACKDATE);
        cert_params.not_after = to_offset(not_after);
        let cert = cert_params.self_signed(&key).map_err(CaError::Sign)?;
        Self::from_parts(
            cert.der().clone(),
            Issuer::new(cert_params, key),
            Path::new("<generated>"),
        )
    }

    /// Writes `ca.pem` (0644), `ca.der` (0644) and `ca.key` (0600, created that way) into `dir`,
    /// creating `dir` with mode 0700 if missing. Refuses, before writing anything, if any of
    /// the three exists.
    pub fn save(&self, dir: &Path) -> Result<CaFiles, CaError> {
        let paths = CaFiles {
            cert_pem: dir.join(CA_CERT_PEM),
            cert_der: dir.join(CA_CERT_DER),
            key: dir.join(CA_KEY),
        };
        files::ensure_dir(dir)?;
        let key_pem = self.issuer.key().serialize_pem();
        let cert_pem = self.cert_pem();
        files::write_all_new(&[
            NewFile {
                path: paths.key.clone(),
                contents: key_pem.as_bytes(),
                mode: KEY_MODE,
            },
            NewFile {
                path: paths.cert_pem.clone(),
                contents: cert_pem.as_bytes(),
                mode: CERT_MODE,
            },
            NewFile {
                path: paths.cert_der.clone(),
                contents: self.cert_der.as_ref(),
                mode: CERT_MODE,
            },
        ])?;
        Ok(paths)
    }

    /// Loads a CA from a PEM certificate and a PKCS#8 PEM key.
    ///
    /// Refuses a key file that group or others can read ([`CaError::KeyTooOpen`]), a
    /// certificate that is not a CA, and a key that does not match the certificate.
    pub fn load(cert_pem: &Path, key_pem: &Path) -> Result<Self, CaError> {
        let cert_der = read_cert(cert_pem)?;
        let key = read_key(key_pem)?;
        let (_, x509) =
            X509Certificate::from_der(&cert_der).map_err(|e| CaError::InvalidCertificate {
                path: cert_pem.to_path_buf(),
                reason: e.to_string(),
            })?;
        let is_ca = x509
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaError::NotACa {
                path: cert_pem.to_path_buf(),
            });
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                cert: cert_pem.to_path_buf(),
                key: key_pem.to_path_buf(),
            });
        }
        drop(x509);
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::InvalidCertificate {
                path: cert_pem.to_path_buf(),
                reason: e.to_string(),
            })?;
        Self::from_parts(cert_der, issuer, cert_pem)
    }

    /// Loads `ca.pem` and `ca.key` from `dir` (the layout `save` writes).
    pub fn load_dir(dir: &Path) -> Result<Self, CaError> {
        Self::load(&dir.join(CA_CERT_PEM), &dir.join(CA_KEY))
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// Start of the CA's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the CA's validity; no leaf it signs outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Subject, issuer, serial, validity, fingerprints and key algorithm.
    pub fn summary(&self) -> CaSummary {
        let (sha256_fingerprint, sha1_fingerprint) = fingerprints(&self.cert_der);
        // The DER was parsed successfully when this value was built and is immutable since.
        let parsed = X509Certificate::from_der(&self.cert_der).ok();
        let (subject, issuer, serial_hex) = parsed
            .map(|(_, x)| {
                (
                    x.subject().to_string(),
                    x.issuer().to_string(),
                    hex_upper(x.raw_serial(), ""),
                )
            })
            .unwrap_or_default();
        CaSummary {
            subject,
            issuer,
            serial_hex,
            not_before: self.not_before,
            not_after: self.not_after,
            sha256_fingerprint,
            sha1_fingerprint,
            algorithm: self.algorithm.clone(),
        }
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA's public key (raw subjectPublicKey bits), for comparisons.
    pub fn public_key_raw(&self) -> &[u8] {
        self.issuer.key().public_key_raw()
    }

    fn from_parts(
        cert_der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
        path: &Path,
    ) -> Result<Self, CaError> {
        let (_, x509) =
            X509Certificate::from_der(&cert_der).map_err(|e| CaError::InvalidCertificate {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let validity = x509.validity();
        let not_before = asn1_to_system(validity.not_before);
        let not_after = asn1_to_system(validity.not_after);
        let algorithm = describe_key(issuer.key(), &x509);
        drop(x509);
        Ok(CertAuthority {
            cert_der,
            issuer,
            not_before,
            not_after,
            algorithm,
        })
    }
}

/// A fresh key pair for `algorithm`.
fn generate_key(algorithm: Algorithm) -> Result<KeyPair, CaError> {
    let failed = |reason: String| CaError::KeyGeneration {
        algorithm: algorithm.name(),
        reason,
    };
    let bits = match algorithm {
        Algorithm::EcdsaP256 => {
            return KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| failed(e.to_string()));
        }
        Algorithm::Rsa2048 => 2048,
        Algorithm::Rsa3072 => 3072,
    };
    // ring signs with RSA but cannot generate RSA keys; the RustCrypto `rsa` crate does, and
    // ring then loads (and validates) the PKCS#8 result like any other key.
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| failed(e.to_string()))?;
    let pkcs8 =
        rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&rsa_key).map_err(|e| failed(e.to_string()))?;
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_bytes()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| failed(e.to_string()))
}

/// 16 random bytes, first bit clear (a positive INTEGER) and second bit set (so the DER
/// encoding keeps all 16 bytes and the serial reported equals the serial encoded).
pub(crate) fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial).map_err(
        |_| CaError::KeyGeneration {
            algorithm: "serial",
            reason: "system RNG failed".into(),
        },
    )?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// "ECDSA P-256", "RSA 3072", ... for summaries.
fn describe_key(key: &KeyPair, cert: &X509Certificate<'_>) -> String {
    let alg = key.algorithm();
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        return "ECDSA P-256".into();
    }
    if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        return "ECDSA P-384".into();
    }
    if alg == &rcgen::PKCS_ED25519 {
        return "Ed25519".into();
    }
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        _ => "unknown".into(),
    }
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    let bytes = files::read_public(path)?;
    CertificateDer::from_pem_slice(&bytes).map_err(|e| CaError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: format!("{e:?}"),
    })
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    let bytes = files::read_private(path)?;
    let invalid = |reason: String| CaError::InvalidKey {
        path: path.to_path_buf(),
        reason,
    };
    // The error Debug of pki-types names the PEM problem, never key bytes.
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| invalid(format!("no PEM private key found ({e:?})")))?;
    let legacy = match &key {
        PrivateKeyDer::Pkcs8(_) => None,
        PrivateKeyDer::Pkcs1(_) => Some("a PKCS#1 RSA key (BEGIN RSA PRIVATE KEY)"),
        PrivateKeyDer::Sec1(_) => Some("a SEC1 EC key (BEGIN EC PRIVATE KEY)"),
        _ => Some("an unsupported key format"),
    };
    if let Some(kind) = legacy {
        return Err(invalid(format!(
            "{kind}; tlsgate needs PKCS#8 (BEGIN PRIVATE KEY); convert it with: \
             openssl pkcs8 -topk8 -nocrypt -in {0} -out {0}.pk8",
            path.display()
        )));
    }
    KeyPair::try_from(&key).map_err(|e| {
        invalid(format!(
            "unsupported key ({e}); supported: ECDSA P-256/P-384, Ed25519, RSA"
        ))
    })
}
