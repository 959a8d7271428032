//! The real `openssl` accepts what the minter signs: a minted leaf and a mimicked leaf both
//! verify against the CA as a TLS server certificate for their names.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use tlsgate_ca::{
    Algorithm, CaParams, CertAuthority, DEFAULT_LEAF_LIFETIME, LeafRequest, MintedLeaf, Minter,
};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl (install it: apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes the CA and the leaf (leaf certificate only) and runs `openssl verify` with the
/// sslserver purpose, plus a hostname or IP check.
fn verify(dir: &Path, ca: &CertAuthority, leaf: &MintedLeaf, check: &[&str]) {
    let ca_pem = dir.join("ca.pem");
    let leaf_pem = dir.join("leaf.pem");
    fs::write(&ca_pem, ca.cert_pem()).unwrap();
    let chain = leaf.chain_pem();
    let leaf_only = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    fs::write(&leaf_pem, leaf_only).unwrap();
    let mut args = vec![
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        path(&ca_pem),
    ];
    args.extend_from_slice(check);
    args.push(path(&leaf_pem));
    let (ok, text) = openssl(&args);
    assert!(ok, "openssl verify {check:?} failed:\n{text}");
    assert!(text.contains(": OK"), "{text}");
}

#[test]
fn openssl_verifies_minted_leaves_for_dns_and_ip_names_under_ecdsa_and_rsa_cas() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in [Algorithm::EcdsaP256, Algorithm::Rsa2048] {
        let ca = Arc::new(
            CertAuthority::generate(&CaParams {
                common_name: "tlsgate openssl test CA".into(),
                algorithm,
                days: 30,
            })
            .unwrap(),
        );
        let minter = Minter::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME).unwrap();

        let leaf = minter
            .mint(&LeafRequest::for_name("api.example.com"))
            .unwrap();
        verify(
            dir.path(),
            &ca,
            &leaf,
            &["-verify_hostname", "api.example.com"],
        );

        let leaf = minter.mint(&LeafRequest::for_name("192.0.2.10")).unwrap();
        verify(dir.path(), &ca, &leaf, &["-verify_ip", "192.0.2.10"]);

        // Negative control: the same check fails for a name the leaf does not carry.
        let ca_pem = dir.path().join("ca.pem");
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            path(&ca_pem),
            "-verify_hostname",
            "other.example.com",
            path(&dir.path().join("leaf.pem")),
        ]);
        assert!(
            !ok,
            "a leaf for 192.0.2.10 must not verify for other.example.com:\n{text}"
        );
    }
}

#[test]
fn openssl_verifies_a_mimicked_leaf_for_each_origin_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        CertAuthority::generate(&CaParams {
            common_name: "tlsgate openssl test CA".into(),
            algorithm: Algorithm::EcdsaP256,
            days: 30,
        })
        .unwrap(),
    );

    // An origin certificate from an unrelated CA.
    let origin_ca_key = KeyPair::generate().unwrap();
    let mut origin_ca = CertificateParams::default();
    origin_ca
        .distinguished_name
        .push(DnType::CommonName, "Origin CA");
    origin_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let origin_issuer = rcgen::Issuer::new(origin_ca, origin_ca_key);
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::DnsName("www.example.org".try_into().unwrap()),
        SanType::IpAddress("203.0.113.9".parse().unwrap()),
        SanType::DnsName("*.cdn.example.org".try_into().unwrap()),
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "www.example.org");
    params.not_after = (SystemTime::now() + Duration::from_secs(90 * 86_400)).into();
    let origin = params
        .signed_by(&KeyPair::generate().unwrap(), &origin_issuer)
        .unwrap();

    let leaf = Minter::new(Arc::clone(&ca), DEFAULT_LEAF_LIFETIME)
        .unwrap()
        .mimic(origin.der())
        .unwrap();
    verify(
        dir.path(),
        &ca,
        &leaf,
        &["-verify_hostname", "www.example.org"],
    );
    verify(
        dir.path(),
        &ca,
        &leaf,
        &["-verify_hostname", "img.cdn.example.org"],
    );
    verify(dir.path(), &ca, &leaf, &["-verify_ip", "203.0.113.9"]);
}
