//! Throw-away certificate authorities and leaves for tests.
//!
//! Every certificate is ECDSA P-256. Leaves carry their own key (never the CA key) and
//! get DNS or IP SANs depending on what each name parses as.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed test CA that can issue server and client leaves.
pub struct TestCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for TestCa {
    // Key material never goes into Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA (CA:true, keyCertSign + cRLSign) with the given common name.
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("test CA: generating a P-256 key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("test CA: params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("test CA: self-signing");
        TestCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Writes the CA certificate as PEM to `path`.
    pub fn write_cert_pem(&self, path: &Path) -> PathBuf {
        fs::write(path, &self.cert_pem).expect("writing test CA certificate");
        path.to_path_buf()
    }

    /// A server leaf for `names` (DNS SANs, or IP SANs for names that parse as IPs);
    /// the first name is also the common name.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("test leaf: invalid name");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client leaf (clientAuth EKU) with common name `cn`.
    pub fn issue_client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("test client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("test leaf: generating a P-256 key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("test leaf: signing");
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Leaf {
            chain: vec![cert.der().clone()],
            key: key_der,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A leaf certificate with its own private key.
pub struct Leaf {
    /// Leaf first; test leaves are issued directly by the CA, so the chain is the leaf alone.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Clone for Leaf {
    fn clone(&self) -> Self {
        Leaf {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl fmt::Debug for Leaf {
    // Key material never goes into Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("sha256", &hex(&self.sha256_fingerprint()))
            .finish_non_exhaustive()
    }
}

impl Leaf {
    /// Writes `<dir>/<stem>.pem` (certificate chain) and `<dir>/<stem>.key` (key, mode 0600).
    pub fn write_pem(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        fs::write(&cert_path, &self.cert_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", cert_path.display()));
        let mut key_file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", key_path.display()));
        key_file
            .write_all(self.key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("writing {}: {e}", key_path.display()));
        (cert_path, key_path)
    }

    /// SHA-256 of the leaf certificate's DER.
    pub fn sha256_fingerprint(&self) -> [u8; 32] {
        sha256(&self.chain[0])
    }

    /// The fingerprint as lowercase hex without separators.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256_fingerprint())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lowercase hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}
