//! Unit tests for the CA, the minter and their files. Certificates are checked by parsing them
//! back with x509-parser, not by trusting the parameters that produced them.

use std::collections::HashSet;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::encoding::asn1_to_system;
use crate::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn ca_params(algorithm: Algorithm, days: u32) -> CaParams {
    CaParams {
        common_name: "tlsgate test CA".into(),
        algorithm,
        days,
    }
}

/// One P-256 CA shared by tests that only need "a CA" (generation is cheap, but this keeps the
/// 1000-mint test honest about sharing).
fn shared_ca() -> Arc<CertAuthority> {
    static CA: OnceLock<Arc<CertAuthority>> = OnceLock::new();
    Arc::clone(CA.get_or_init(|| {
        Arc::new(CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 3650)).unwrap())
    }))
}

fn minter() -> Minter {
    Minter::new(shared_ca(), DEFAULT_LEAF_LIFETIME).unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

#[derive(Debug, PartialEq, Eq)]
enum San {
    Dns(String),
    Ip(IpAddr),
    Other,
}

fn sans(cert: &X509Certificate<'_>) -> Vec<San> {
    let Some(ext) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => San::Dns((*d).to_owned()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                San::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
            }
            GeneralName::IPAddress(b) => San::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
            _ => San::Other,
        })
        .collect()
}

fn common_names(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject()
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap().to_owned())
        .collect()
}

fn secs_between(a: SystemTime, b: SystemTime) -> i64 {
    let s = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    s(b) - s(a)
}

// ---- requests and SAN kinds ----

#[test]
fn for_name_puts_a_dns_name_in_a_dns_san_only() {
    let req = LeafRequest::for_name("api.example.com");
    assert_eq!(req.dns_names, vec!["api.example.com".to_owned()]);
    assert!(req.ips.is_empty());
    assert_eq!(req.common_name.as_deref(), Some("api.example.com"));
}

#[test]
fn for_name_puts_ip_literals_in_ip_sans_only() {
    for (name, ip) in [
        ("10.1.2.3", "10.1.2.3"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
    ] {
        let req = LeafRequest::for_name(name);
        assert!(req.dns_names.is_empty(), "{name}");
        assert_eq!(req.ips, vec![ip.parse::<IpAddr>().unwrap()], "{name}");
    }
}

#[test]
fn for_name_leaves_out_a_common_name_longer_than_x509_allows() {
    let long = format!("{}.example.com", "a".repeat(60));
    let req = LeafRequest::for_name(&long);
    assert_eq!(req.common_name, None);
    assert_eq!(req.dns_names, vec![long]);
}

#[test]
fn minted_leaf_has_dns_san_for_a_name_and_ip_san_for_an_ip() {
    let minter = minter();
    let dns = minter
        .mint(&LeafRequest::for_name("api.example.com"))
        .unwrap();
    let cert = parse(&dns.chain[0]);
    assert_eq!(sans(&cert), vec![San::Dns("api.example.com".into())]);
    assert_eq!(common_names(&cert), vec!["api.example.com".to_owned()]);

    let ip = minter.mint(&LeafRequest::for_name("192.0.2.7")).unwrap();
    let cert = parse(&ip.chain[0]);
    assert_eq!(sans(&cert), vec![San::Ip("192.0.2.7".parse().unwrap())]);

    let v6 = minter
        .mint(&LeafRequest::for_name("[2001:db8::7]"))
        .unwrap();
    assert_eq!(
        sans(&parse(&v6.chain[0])),
        vec![San::Ip("2001:db8::7".parse().unwrap())]
    );
}

#[test]
fn mint_refuses_an_empty_request_and_non_ascii_names() {
    let minter = minter();
    assert!(matches!(
        minter.mint(&LeafRequest::default()),
        Err(CaError::EmptyRequest)
    ));
    let bad = LeafRequest {
        dns_names: vec!["bücher.example".into()],
        ..Default::default()
    };
    assert!(matches!(
        minter.mint(&bad),
        Err(CaError::InvalidName { .. })
    ));
    let spaced = LeafRequest {
        dns_names: vec!["a b.example".into()],
        ..Default::default()
    };
    assert!(matches!(
        minter.mint(&spaced),
        Err(CaError::InvalidName { .. })
    ));
}

// ---- leaf contents ----

#[test]
fn leaf_is_a_server_cert_with_aki_and_chain_leaf_then_ca() {
    let ca = shared_ca();
    let leaf = minter()
        .mint(&LeafRequest::for_name("api.example.com"))
        .unwrap();
    assert_eq!(leaf.chain.len(), 2);
    assert_eq!(&leaf.chain[1], ca.cert_der());
    let cert = parse(&leaf.chain[0]);
    let ca_cert = parse(ca.cert_der());
    assert_eq!(cert.issuer(), ca_cert.subject());

    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    assert!(!eku.value.client_auth);
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);

    let ca_ski = ca_cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
        .expect("CA has a subject key identifier");
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("leaf has an authority key identifier");
    assert_eq!(aki, ca_ski);
}

#[test]
fn serials_are_unique_positive_16_bytes_over_1000_mints() {
    let minter = minter();
    let req = LeafRequest::for_name("same.example.com");
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let leaf = minter.mint(&req).unwrap();
        let cert = parse(&leaf.chain[0]);
        assert_eq!(
            cert.raw_serial(),
            leaf.serial.as_slice(),
            "reported serial is the encoded one"
        );
        assert_eq!(leaf.serial.len(), 16);
        assert_eq!(leaf.serial[0] & 0x80, 0, "positive");
        assert!(seen.insert(leaf.serial), "duplicate serial");
    }
    assert_eq!(seen.len(), 1000);
}

#[test]
fn not_before_is_backdated_by_an_hour_and_not_after_is_now_plus_lifetime() {
    let before = SystemTime::now();
    let leaf = minter().mint(&LeafRequest::for_name("a.example")).unwrap();
    let after = SystemTime::now();
    let cert = parse(&leaf.chain[0]);
    let nb = asn1_to_system(cert.validity().not_before);
    let na = asn1_to_system(cert.validity().not_after);
    // Whole seconds: allow one second of truncation on each side.
    assert!(
        (3599..=3601).contains(&secs_between(nb, before)),
        "{nb:?} vs {before:?}"
    );
    assert!(nb < after - HOUR + Duration::from_secs(1));
    let life = secs_between(nb, na) - 3600;
    assert!(
        (DEFAULT_LEAF_LIFETIME.as_secs() as i64 - 2..=DEFAULT_LEAF_LIFETIME.as_secs() as i64 + 1)
            .contains(&life),
        "{life}"
    );
    assert_eq!(leaf.not_after, na);
}

#[test]
fn not_after_is_clipped_to_the_cas() {
    let ca = Arc::new(CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1)).unwrap());
    let minter = Minter::new(Arc::clone(&ca), 30 * DAY).unwrap();
    let leaf = minter.mint(&LeafRequest::for_name("a.example")).unwrap();
    let cert = parse(&leaf.chain[0]);
    assert_eq!(asn1_to_system(cert.validity().not_after), ca.not_after());
    assert_eq!(leaf.not_after, ca.not_after());
    // And the start is never before the CA's own start.
    assert!(asn1_to_system(cert.validity().not_before) >= ca.not_before());
}

#[test]
fn leaf_key_is_not_the_ca_key() {
    let ca = shared_ca();
    let minter = minter();
    let leaf = minter.mint(&LeafRequest::for_name("a.example")).unwrap();
    let cert = parse(&leaf.chain[0]);
    let leaf_spki = cert.public_key().subject_public_key.data.to_vec();
    let ca_spki = parse(ca.cert_der())
        .public_key()
        .subject_public_key
        .data
        .to_vec();
    assert_ne!(leaf_spki, ca_spki);
    assert_ne!(minter.leaf_public_key_raw(), ca.public_key_raw());
    // The key handed to TLS servers is the one in the certificate.
    let key = KeyPair::try_from(&minter.leaf_key()).unwrap();
    assert_eq!(key.public_key_raw(), leaf_spki.as_slice());
    // Two minters never share a leaf key.
    assert_ne!(
        Minter::new(ca, DAY).unwrap().leaf_public_key_raw(),
        minter.leaf_public_key_raw()
    );
}

// ---- mimicry ----

/// An origin certificate from an unrelated CA, with SANs of every kind and extra subject fields.
fn origin_cert(not_after: SystemTime) -> (Vec<u8>, Vec<u8>) {
    let origin_ca_key = KeyPair::generate().unwrap();
    let mut origin_ca = CertificateParams::default();
    origin_ca
        .distinguished_name
        .push(DnType::CommonName, "Origin Public CA");
    origin_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let origin_issuer = rcgen::Issuer::new(origin_ca, origin_ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::DnsName("www.example.org".try_into().unwrap()),
        SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
        SanType::IpAddress("203.0.113.9".parse().unwrap()),
        SanType::DnsName("*.cdn.example.org".try_into().unwrap()),
        SanType::URI("https://example.org/".try_into().unwrap()),
        SanType::IpAddress("2001:db8::9".parse().unwrap()),
        SanType::DnsName("example.org".try_into().unwrap()),
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "www.example.org");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Org");
    params.not_after = crate::encoding::to_offset(not_after);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &origin_issuer).unwrap();
    (cert.der().to_vec(), key.public_key_raw().to_vec())
}

#[test]
fn mimic_copies_exactly_the_dns_and_ip_sans_and_the_cn() {
    let ca = shared_ca();
    let minter = minter();
    let (origin_der, origin_key) = origin_cert(SystemTime::now() + 90 * DAY);
    let leaf = minter.mimic(&origin_der).unwrap();
    let cert = parse(&leaf.chain[0]);
    assert_eq!(
        sans(&cert),
        vec![
            San::Dns("www.example.org".into()),
            San::Ip("203.0.113.9".parse().unwrap()),
            San::Dns("*.cdn.example.org".into()),
            San::Ip("2001:db8::9".parse().unwrap()),
            San::Dns("example.org".into()),
        ]
    );
    assert_eq!(common_names(&cert), vec!["www.example.org".to_owned()]);
    // Nothing else from the origin: not its O=, its issuer, its key, its clientAuth EKU.
    assert_eq!(cert.subject().iter().count(), 1, "subject is the CN alone");
    assert_eq!(cert.issuer(), parse(ca.cert_der()).subject());
    assert_ne!(
        cert.public_key().subject_public_key.data.as_ref(),
        origin_key.as_slice()
    );
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        minter.leaf_public_key_raw()
    );
    assert!(
        !cert
            .extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .client_auth
    );
    assert_ne!(cert.raw_serial(), parse(&origin_der).raw_serial());
}

#[test]
fn mimic_clips_not_after_to_the_origins() {
    let origin_end = SystemTime::now() + 2 * DAY;
    let (origin_der, _) = origin_cert(origin_end);
    let origin_na = asn1_to_system(parse(&origin_der).validity().not_after);
    let leaf = minter().mimic(&origin_der).unwrap();
    assert_eq!(leaf.not_after, origin_na);
    assert_eq!(
        asn1_to_system(parse(&leaf.chain[0]).validity().not_after),
        origin_na
    );
}

#[test]
fn mimic_clips_not_after_to_the_lifetime_when_the_origin_lives_longer() {
    let (origin_der, _) = origin_cert(SystemTime::now() + 365 * DAY);
    let leaf = minter().mimic(&origin_der).unwrap();
    let left = secs_between(SystemTime::now(), leaf.not_after);
    assert!(
        left <= DEFAULT_LEAF_LIFETIME.as_secs() as i64
            && left > DEFAULT_LEAF_LIFETIME.as_secs() as i64 - 5
    );
}

#[test]
fn mimic_refuses_an_expired_origin_and_garbage() {
    let (expired, _) = origin_cert(SystemTime::now() - DAY);
    assert!(matches!(
        minter().mimic(&expired),
        Err(CaError::OriginExpired { .. })
    ));
    assert!(matches!(
        minter().mimic(b"not a certificate"),
        Err(CaError::InvalidOriginCertificate(_))
    ));
}

// ---- the CA itself ----

#[test]
fn ca_is_pathlen_zero_with_critical_cert_and_crl_sign() {
    let before = SystemTime::now();
    let ca = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 10)).unwrap();
    let cert = parse(ca.cert_der());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert_eq!(cert.raw_serial().len(), 16);
    assert!((3599..=3601).contains(&secs_between(ca.not_before(), before)));
    assert!(
        (10 * 86_400 - 3600 - 2..=10 * 86_400 + 1)
            .contains(&(secs_between(ca.not_before(), ca.not_after()) - 3600))
    );
    assert_eq!(common_names(&cert), vec!["tlsgate test CA".to_owned()]);
    assert_eq!(cert.subject(), cert.issuer());
}

#[test]
fn ca_serials_differ() {
    let a = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1)).unwrap();
    let b = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1)).unwrap();
    assert_ne!(a.summary().serial_hex, b.summary().serial_hex);
}

#[test]
fn generate_refuses_zero_days_too_many_days_and_an_empty_name() {
    assert!(matches!(
        CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 0)),
        Err(CaError::InvalidValidity(_))
    ));
    assert!(matches!(
        CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, MAX_DAYS + 1)),
        Err(CaError::InvalidValidity(_))
    ));
    let unnamed = CaParams {
        common_name: "  ".into(),
        ..ca_params(Algorithm::EcdsaP256, 1)
    };
    assert!(matches!(
        CertAuthority::generate(&unnamed),
        Err(CaError::InvalidName { .. })
    ));
}

#[test]
fn algorithms_parse_from_their_cli_names() {
    for alg in Algorithm::ALL {
        assert_eq!(alg.name().parse::<Algorithm>().unwrap(), alg);
    }
    assert_eq!("RSA-3072".parse::<Algorithm>().unwrap(), Algorithm::Rsa3072);
    assert!(
        matches!("dsa-1024".parse::<Algorithm>(), Err(CaError::UnknownAlgorithm(s)) if s == "dsa-1024")
    );
}

#[test]
fn rsa_cas_generate_and_sign_ecdsa_leaves() {
    for (alg, bits) in [
        (Algorithm::Rsa2048, "RSA 2048"),
        (Algorithm::Rsa3072, "RSA 3072"),
    ] {
        let ca = Arc::new(CertAuthority::generate(&ca_params(alg, 30)).unwrap());
        assert_eq!(ca.summary().algorithm, bits);
        let leaf = Minter::new(Arc::clone(&ca), DAY)
            .unwrap()
            .mint(&LeafRequest::for_name("a.example"))
            .unwrap();
        let cert = parse(&leaf.chain[0]);
        // sha256WithRSAEncryption
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.11"
        );
        assert!(
            cert.verify_signature(Some(parse(ca.cert_der()).public_key()))
                .is_ok()
        );
    }
}

#[test]
fn summary_reports_fingerprints_serial_and_algorithm() {
    let ca = shared_ca();
    let s = ca.summary();
    assert_eq!(s.subject, "CN=tlsgate test CA");
    assert_eq!(s.issuer, s.subject);
    assert_eq!(s.algorithm, "ECDSA P-256");
    assert_eq!(s.serial_hex.len(), 32);
    assert_eq!(
        s.serial_hex,
        crate::encoding::hex_upper(parse(ca.cert_der()).raw_serial(), "")
    );
    let sha = ring::digest::digest(&ring::digest::SHA256, ca.cert_der());
    assert_eq!(
        s.sha256_fingerprint,
        crate::encoding::hex_upper(sha.as_ref(), ":")
    );
    assert_eq!(s.sha256_fingerprint.len(), 32 * 3 - 1);
    assert_eq!(s.sha1_fingerprint.len(), 20 * 3 - 1);
}

#[test]
fn debug_output_never_contains_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1)).unwrap();
    let files = ca.save(dir.path()).unwrap();
    let key_pem = fs::read_to_string(&files.key).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let ca = Arc::new(ca);
    let minter = Minter::new(Arc::clone(&ca), DAY).unwrap();
    let leaf_body: String = minter
        .leaf_key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let leaf = minter.mint(&LeafRequest::for_name("a.example")).unwrap();
    let printed = format!(
        "{ca:?} {minter:?} {leaf:?} {:?}",
        LeafCache::new(1, HOUR, DAY).unwrap()
    );
    for secret in [&key_body, &leaf_body] {
        // Any 16-character window of the base64 key would be a leak.
        for window in secret.as_bytes().windows(16).step_by(8) {
            assert!(
                !printed.contains(std::str::from_utf8(window).unwrap()),
                "{printed}"
            );
        }
    }
    assert!(!printed.contains("PRIVATE"));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CertAuthority>();
    check::<Minter>();
    check::<LeafCache>();
    check::<MintedLeaf>();
}

// ---- files ----

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn save_writes_private_key_public_certs_private_dir_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let ca = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 30)).unwrap();
    let files = ca.save(&dir).unwrap();
    assert_eq!(files.key, dir.join("ca.key"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&files.cert_pem), 0o644);
    assert_eq!(mode(&files.cert_der), 0o644);
    assert_eq!(fs::read(&files.cert_der).unwrap(), ca.cert_der().as_ref());
    assert!(
        fs::read_to_string(&files.key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );

    let loaded = CertAuthority::load_dir(&dir).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.summary(), ca.summary());
    assert_eq!(loaded.public_key_raw(), ca.public_key_raw());
    // A loaded CA signs leaves whose AKI still matches the CA's SKI and whose signature verifies.
    let leaf = Minter::new(Arc::new(loaded), DAY)
        .unwrap()
        .mint(&LeafRequest::for_name("x.example"))
        .unwrap();
    assert!(
        parse(&leaf.chain[0])
            .verify_signature(Some(parse(ca.cert_der()).public_key()))
            .is_ok()
    );
}

#[test]
fn save_refuses_to_overwrite_any_existing_file() {
    for existing in [CA_KEY, CA_CERT_PEM, CA_CERT_DER] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(existing);
        fs::write(&path, b"already here").unwrap();
        let ca = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1)).unwrap();
        let err = ca.save(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, CaError::AlreadyExists(p) if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains(existing), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"already here");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "nothing else written"
        );
    }
}

#[test]
fn load_refuses_a_key_readable_by_group_or_others() {
    let tmp = tempfile::tempdir().unwrap();
    let files = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1))
        .unwrap()
        .save(tmp.path())
        .unwrap();
    for bad in [0o644, 0o640, 0o604] {
        fs::set_permissions(&files.key, fs::Permissions::from_mode(bad)).unwrap();
        let err = CertAuthority::load_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, CaError::KeyTooOpen { path, mode } if *path == files.key && *mode == bad),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(
        CertAuthority::load_dir(tmp.path()).is_ok(),
        "owner-only read is fine"
    );
}

#[test]
fn load_refuses_a_key_of_another_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let a = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1))
        .unwrap()
        .save(&tmp.path().join("a"))
        .unwrap();
    let b = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1))
        .unwrap()
        .save(&tmp.path().join("b"))
        .unwrap();
    let err = CertAuthority::load(&a.cert_pem, &b.key).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn load_refuses_a_leaf_as_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let minter = minter();
    let leaf = minter.mint(&LeafRequest::for_name("a.example")).unwrap();
    let cert = tmp.path().join("leaf.pem");
    fs::write(&cert, crate::encoding::pem("CERTIFICATE", &leaf.chain[0])).unwrap();
    let key = tmp.path().join("leaf.key");
    fs::write(&key, minter.leaf_key_pem()).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        CertAuthority::load(&cert, &key),
        Err(CaError::NotACa { .. })
    ));
}

#[test]
fn load_explains_how_to_convert_a_pkcs1_key() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let tmp = tempfile::tempdir().unwrap();
    let files = CertAuthority::generate(&ca_params(Algorithm::EcdsaP256, 1))
        .unwrap()
        .save(tmp.path())
        .unwrap();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pkcs1 = rsa_key.to_pkcs1_der().unwrap();
    let path = tmp.path().join("pkcs1.key");
    fs::write(
        &path,
        crate::encoding::pem("RSA PRIVATE KEY", pkcs1.as_bytes()),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = CertAuthority::load(&files.cert_pem, &path).unwrap_err();
    assert!(matches!(err, CaError::InvalidKey { .. }), "{err:?}");
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
}

#[test]
fn minting_with_an_expired_ca_fails() {
    // A CA "loaded" from files whose validity has ended: build one with rcgen directly.
    let tmp = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "old CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.not_before = crate::encoding::to_offset(SystemTime::now() - 10 * DAY);
    params.not_after = crate::encoding::to_offset(SystemTime::now() - DAY);
    let cert = params.self_signed(&key).unwrap();
    fs::write(tmp.path().join("ca.pem"), cert.pem()).unwrap();
    let key_path = tmp.path().join("ca.key");
    fs::write(&key_path, key.serialize_pem()).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    let ca = Arc::new(CertAuthority::load_dir(tmp.path()).unwrap());
    let err = Minter::new(ca, DAY)
        .unwrap()
        .mint(&LeafRequest::for_name("a.example"))
        .unwrap_err();
    assert!(matches!(err, CaError::CaNotValidNow { .. }), "{err:?}");
}

#[test]
fn save_leaf_writes_chain_and_private_key_and_refuses_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let minter = minter();
    let leaf = minter.mint(&LeafRequest::for_name("a.example")).unwrap();
    let files = minter.save_leaf(&leaf, &out, "a.example").unwrap();
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&files.chain), 0o644);
    let chain = fs::read_to_string(&files.chain).unwrap();
    assert_eq!(chain.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert_eq!(chain, leaf.chain_pem());
    let key = KeyPair::from_pem(&fs::read_to_string(&files.key).unwrap()).unwrap();
    assert_eq!(key.public_key_raw(), minter.leaf_public_key_raw());

    let err = minter.save_leaf(&leaf, &out, "a.example").unwrap_err();
    assert!(
        matches!(&err, CaError::AlreadyExists(p) if *p == files.key),
        "{err:?}"
    );
    for stem in ["", "../x", ".hidden"] {
        assert!(
            matches!(
                minter.save_leaf(&leaf, &out, stem),
                Err(CaError::InvalidName { .. })
            ),
            "{stem:?}"
        );
    }
}
