//! Reading the names out of a certificate someone else issued (an origin's), for flow records.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Bytes of a distinguished name kept; longer ones end with `...` (a name is peer text).
pub const MAX_NAME_LEN: usize = 256;

/// A certificate's subject and issuer as RFC 4514-style strings (`CN=www.example.com, O=Example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNames {
    pub subject: String,
    pub issuer: String,
}

/// The subject and issuer of `der`; `None` when it is not an X.509 certificate.
pub fn cert_names(der: &[u8]) -> Option<CertNames> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(CertNames {
        subject: bounded(cert.subject().to_string()),
        issuer: bounded(cert.issuer().to_string()),
    })
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_NAME_LEN {
        let mut cut = MAX_NAME_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subject_and_issuer_of_a_minted_leaf() {
        let ca = crate::CertAuthority::generate(&crate::CaParams {
            common_name: "names test CA".into(),
            algorithm: crate::Algorithm::EcdsaP256,
            days: 1,
        })
        .unwrap();
        let minter =
            crate::Minter::new(std::sync::Arc::new(ca), crate::DEFAULT_LEAF_LIFETIME).unwrap();
        let leaf = minter
            .mint(&crate::LeafRequest::for_name("www.example.test"))
            .unwrap();
        let names = cert_names(leaf.chain[0].as_ref()).unwrap();
        assert!(names.subject.contains("CN=www.example.test"), "{names:?}");
        assert!(names.issuer.contains("CN=names test CA"), "{names:?}");
        assert_eq!(cert_names(b"not a certificate"), None);
    }

    #[test]
    fn bounds_long_names() {
        let long = bounded("é".repeat(MAX_NAME_LEN));
        assert!(long.len() <= MAX_NAME_LEN + 3 && long.ends_with("..."));
        assert_eq!(bounded("CN=a".into()), "CN=a");
    }
}
