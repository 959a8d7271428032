//! Leaf certificates: minted for a requested name (downstream-first) or mimicking a verified
//! origin certificate (upstream-first). Every leaf carries the minter's own key, never the CA's.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber, string::Ia5String,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::{BACKDATE, MAX_DAYS, random_serial};
use crate::encoding::{asn1_to_system, hex_upper, pem, to_offset, to_system};
use crate::files::{self, CERT_MODE, KEY_MODE, NewFile};
use crate::{CaError, CertAuthority};

/// The leaf lifetime callers use unless configured otherwise: short, so a leaked leaf key
/// matters for a week at most, and long enough that caching pays off.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// X.509's upper bound for a common name (RFC 5280 `ub-common-name`).
const MAX_COMMON_NAME: usize = 64;
/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_DNS_NAME: usize = 253;

/// The names a leaf is minted for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeafRequest {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl LeafRequest {
    /// A request for one name, as a client asked for it (SNI or CONNECT host): an IP literal
    /// (`10.0.0.1`, `::1`, `[::1]`) becomes an IP SAN and nothing else becomes a DNS SAN.
    /// The common name is the name as given, unless it is longer than X.509 allows
    /// (64 characters), in which case the leaf has only the SAN, which is what clients check.
    pub fn for_name(name: &str) -> Self {
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let common_name = (name.len() <= MAX_COMMON_NAME).then(|| name.to_owned());
        match unbracketed.parse::<IpAddr>() {
            Ok(ip) => LeafRequest {
                common_name,
                dns_names: Vec::new(),
                ips: vec![ip],
            },
            Err(_) => LeafRequest {
                common_name,
                dns_names: vec![name.to_owned()],
                ips: Vec::new(),
            },
        }
    }
}

/// A signed leaf, ready for a TLS server config together with [`Minter::leaf_key`].
#[derive(Clone, PartialEq, Eq)]
pub struct MintedLeaf {
    /// `[leaf, CA]`.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's notAfter (whole seconds, as encoded).
    pub not_after: SystemTime,
    /// The serial number as encoded (16 bytes, positive).
    pub serial: Vec<u8>,
}

impl fmt::Debug for MintedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedLeaf")
            .field("serial", &hex_upper(&self.serial, ""))
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

impl MintedLeaf {
    /// The chain as concatenated PEM certificates, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }
}

/// Where [`Minter::save_leaf`] wrote a leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafFiles {
    /// `<stem>.pem`: the leaf then the CA, PEM (0644).
    pub chain: PathBuf,
    /// `<stem>.key`: the leaf key, PKCS#8 PEM (created 0600).
    pub key: PathBuf,
}

/// Signs leaves with the CA. Holds one ECDSA P-256 leaf key, generated in [`Minter::new`] and
/// shared by every leaf it mints (so a TLS server needs one key and many chains).
///
/// Synchronous and CPU-bound (one ECDSA or RSA signature per leaf); async callers decide
/// whether to use `spawn_blocking`. `Debug` never shows key material.
pub struct Minter {
    ca: Arc<CertAuthority>,
    leaf_key: KeyPair,
    lifetime: Duration,
}

impl fmt::Debug for Minter {
    // Key material never goes into Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("ca", &self.ca)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter for leaves living at most `lifetime` (callers default to
    /// [`DEFAULT_LEAF_LIFETIME`]), with a fresh leaf key separate from the CA key.
    pub fn new(ca: Arc<CertAuthority>, lifetime: Duration) -> Result<Self, CaError> {
        if lifetime.is_zero() || lifetime > Duration::from_secs(u64::from(MAX_DAYS) * 86_400) {
            return Err(CaError::InvalidValidity(format!(
                "leaf lifetime {lifetime:?} must be above zero and at most {MAX_DAYS} days"
            )));
        }
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
            CaError::KeyGeneration {
                algorithm: "ecdsa-p256",
                reason: e.to_string(),
            }
        })?;
        Ok(Minter {
            ca,
            leaf_key,
            lifetime,
        })
    }

    /// The CA this minter signs with.
    pub fn ca(&self) -> &Arc<CertAuthority> {
        &self.ca
    }

    /// The lifetime given to `new`.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A leaf for `req`: DNS and IP SANs as requested, CN if given, EKU serverAuth, KU
    /// digitalSignature, basicConstraints CA:FALSE, authority key identifier, random 16-byte
    /// serial, notBefore = now - 1 h (not before the CA's), notAfter = min(now + lifetime,
    /// CA notAfter).
    pub fn mint(&self, req: &LeafRequest) -> Result<MintedLeaf, CaError> {
        if req.common_name.is_none() && req.dns_names.is_empty() && req.ips.is_empty() {
            return Err(CaError::EmptyRequest);
        }
        let mut sans = Vec::with_capacity(req.dns_names.len() + req.ips.len());
        for name in &req.dns_names {
            sans.push(SanType::DnsName(dns_name(name)?));
        }
        sans.extend(req.ips.iter().copied().map(SanType::IpAddress));
        let common_name = req.common_name.as_deref().map(common_name).transpose()?;
        self.sign(sans, common_name, None)
    }

    /// A leaf that looks like the origin's: the same DNS and IP SANs in the same order and the
    /// same subject CN, nothing else (not its key, issuer, serial or other extensions).
    /// notAfter = min(origin notAfter, CA notAfter, now + lifetime). Call it only for an origin
    /// certificate that has been verified.
    pub fn mimic(&self, origin_leaf_der: &[u8]) -> Result<MintedLeaf, CaError> {
        let (_, origin) = X509Certificate::from_der(origin_leaf_der)
            .map_err(|e| CaError::InvalidOriginCertificate(e.to_string()))?;
        let san_ext = origin
            .subject_alternative_name()
            .map_err(|e| CaError::InvalidOriginCertificate(format!("subjectAltName: {e}")))?;
        let mut sans = Vec::new();
        for general_name in san_ext
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
        {
            match general_name {
                GeneralName::DNSName(name) => sans.push(SanType::DnsName(ia5(name)?)),
                GeneralName::IPAddress(bytes) => sans.push(SanType::IpAddress(ip_from(bytes)?)),
                _ => {}
            }
        }
        let common_name = match origin.subject().iter_common_name().next() {
            Some(cn) => Some(
                cn.as_str()
                    .map_err(|e| {
                        CaError::InvalidOriginCertificate(format!("subject CN is not text: {e}"))
                    })?
                    .to_owned(),
            ),
            None => None,
        };
        if sans.is_empty() && common_name.is_none() {
            return Err(CaError::OriginHasNoNames);
        }
        let origin_not_after = asn1_to_system(origin.validity().not_after);
        self.sign(sans, common_name, Some(origin_not_after))
    }

    /// The leaf private key (PKCS#8) matching every leaf this minter signs.
    pub fn leaf_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()))
    }

    /// The leaf private key as PKCS#8 PEM, for writing a key file (`tlsgate ca issue`).
    /// Secret: never log it.
    pub fn leaf_key_pem(&self) -> String {
        self.leaf_key.serialize_pem()
    }

    /// Writes `leaf` (minted by this minter) as `<dir>/<stem>.pem` and this minter's key as
    /// `<dir>/<stem>.key`, for installing a leaf by hand. Same rules as [`CertAuthority::save`]:
    /// creates `dir` 0700 if missing, never overwrites, key created 0600, all or nothing.
    pub fn save_leaf(
        &self,
        leaf: &MintedLeaf,
        dir: &Path,
        stem: &str,
    ) -> Result<LeafFiles, CaError> {
        if stem.is_empty() || stem.starts_with('.') || stem.contains('/') {
            return Err(CaError::InvalidName {
                name: stem.to_owned(),
                reason: "not usable as a file name",
            });
        }
        let paths = LeafFiles {
            chain: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        files::ensure_dir(dir)?;
        let key_pem = self.leaf_key_pem();
        let chain_pem = leaf.chain_pem();
        files::write_all_new(&[
            NewFile {
                path: paths.key.clone(),
                contents: key_pem.as_bytes(),
                mode: KEY_MODE,
            },
            NewFile {
                path: paths.chain.clone(),
                contents: chain_pem.as_bytes(),
                mode: CERT_MODE,
            },
        ])?;
        Ok(paths)
    }

    /// The leaf public key (raw subjectPublicKey bits).
    pub fn leaf_public_key_raw(&self) -> &[u8] {
        self.leaf_key.public_key_raw()
    }

    fn sign(
        &self,
        sans: Vec<SanType>,
        common_name: Option<String>,
        origin_not_after: Option<SystemTime>,
    ) -> Result<MintedLeaf, CaError> {
        let now = SystemTime::now();
        let ca_not_valid = CaError::CaNotValidNow {
            not_before: self.ca.not_before(),
            not_after: self.ca.not_after(),
        };
        if self.ca.not_before() > now || self.ca.not_after() <= now {
            return Err(ca_not_valid);
        }
        if let Some(not_after) = origin_not_after.filter(|t| *t <= now) {
            return Err(CaError::OriginExpired { not_after });
        }
        let not_before = (now - BACKDATE).max(self.ca.not_before());
        let not_after = [
            Some(now + self.lifetime),
            Some(self.ca.not_after()),
            origin_not_after,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now); // The array always holds `now + lifetime`.

        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let cert = params
            .signed_by(&self.leaf_key, self.ca.issuer())
            .map_err(CaError::Sign)?;
        Ok(MintedLeaf {
            chain: vec![cert.der().clone(), self.ca.cert_der().clone()],
            not_after: to_system(params.not_after),
            serial: serial.to_vec(),
        })
    }
}

fn dns_name(name: &str) -> Result<Ia5String, CaError> {
    let invalid = |reason| CaError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_DNS_NAME {
        return Err(invalid("longer than 253 characters"));
    }
    if name.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(invalid(
            "not printable ASCII (IDNs must be given in A-label form)",
        ));
    }
    ia5(name)
}

fn common_name(name: &str) -> Result<String, CaError> {
    let invalid = |reason| CaError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty common name"));
    }
    if name.chars().count() > MAX_COMMON_NAME {
        return Err(invalid("common name longer than 64 characters"));
    }
    Ok(name.to_owned())
}

fn ia5(name: &str) -> Result<Ia5String, CaError> {
    Ia5String::try_from(name).map_err(|_| CaError::InvalidName {
        name: name.to_owned(),
        reason: "not IA5 (ASCII)",
    })
}

fn ip_from(bytes: &[u8]) -> Result<IpAddr, CaError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::from(v6));
    }
    Err(CaError::InvalidOriginCertificate(format!(
        "IP address subjectAltName of {} bytes",
        bytes.len()
    )))
}
