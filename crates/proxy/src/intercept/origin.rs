//! Re-encrypting to the origin: TCP through the destination guard, then TLS with the requested name
//! as SNI, verified against the configured roots. The verifier records what was wrong instead of
//! only failing, so the client can be told exactly why (HTTP 502 body) — and so a host listed in
//! `danger_accept_invalid_upstream_certs` can proceed with the problem recorded in its flows.
//! No application data is ever sent to an origin whose certificate failed and is not exempt.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::context::Shared;
use crate::error::ConnError;
use crate::flow::UpstreamCert;

/// Verifies origins for one interception listener.
pub struct OriginTls {
    provider: Arc<CryptoProvider>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls").finish_non_exhaustive()
    }
}

/// A TLS connection to an origin.
pub struct OriginConn {
    pub tls: TlsStream<TcpStream>,
    /// The ALPN protocol the origin chose.
    pub alpn: Option<Vec<u8>>,
    /// The origin's leaf certificate (DER).
    pub leaf: CertificateDer<'static>,
    /// What was wrong with the origin's certificate, when it was accepted anyway (danger flag).
    pub accepted_invalid: Option<String>,
    /// The origin's certificate and its verification, for flow records.
    pub cert: UpstreamCert,
}

impl OriginTls {
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ConnError> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ConnError::LocalMint(format!("origin verifier: {e}")))?;
        Ok(Self { provider, webpki })
    }

    /// Connects to `host:port` and completes TLS with SNI `sni`, offering `alpn`. Whatever the
    /// outcome, `seen` holds the origin's certificate and its verification once the origin sent
    /// one (so a refusal's flow can say what was wrong).
    #[allow(clippy::too_many_arguments)] // one call per origin connection; each argument is distinct
    pub async fn connect(
        &self,
        shared: &Shared,
        host: &str,
        port: u16,
        sni: &str,
        alpn: Vec<Vec<u8>>,
        accept_invalid: bool,
        seen: &mut Option<UpstreamCert>,
    ) -> Result<OriginConn, ConnError> {
        let tcp = shared.connect(host, port).await?;
        let outcome = Arc::new(Mutex::new(None));
        let cert_seen = Arc::new(Mutex::new(None));
        let verifier = Arc::new(Recording {
            inner: self.webpki.clone(),
            outcome: outcome.clone(),
            cert: cert_seen.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnError::LocalMint(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        // This config lives for one connection, so a session cache in it could never resume
        // anything (and a resumed session would show no certificate to record); rustls' default
        // in-memory cache would still allocate ~15 KiB up front and hold it for the connection's life.
        config.resumption = rustls::client::Resumption::disabled();
        let name = ServerName::try_from(sni.to_owned()).map_err(|_| {
            ConnError::UpstreamCertInvalid(format!("{sni:?} is not a valid server name"))
        })?;
        let tls = tokio::time::timeout(
            shared.timeouts.handshake,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| {
            ConnError::UpstreamHandshake(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake with the origin timed out",
            ))
        });
        *seen = cert_seen.lock().ok().and_then(|mut c| c.take());
        if let Some(reason) = seen.as_ref().and_then(|c| c.error) {
            shared.flows.metrics().count_verify_failure(reason);
        }
        let tls = tls?.map_err(ConnError::UpstreamHandshake)?;
        let problem = outcome.lock().ok().and_then(|mut o| o.take());
        if let Some(problem) = &problem
            && !accept_invalid
        {
            return Err(ConnError::UpstreamCertInvalid(problem.clone()));
        }
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned()
            .ok_or_else(|| {
                ConnError::UpstreamCertInvalid("the origin sent no certificate".into())
            })?;
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let cert = seen
            .clone()
            .unwrap_or_else(|| UpstreamCert::of(&leaf, None));
        Ok(OriginConn {
            tls,
            alpn,
            leaf,
            accepted_invalid: problem,
            cert,
        })
    }
}

/// Verifies like WebPKI, but records a failure and lets the caller decide (it refuses unless the
/// host is exempt). Handshake signatures are always checked.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    outcome: Arc<Mutex<Option<String>>>,
    /// The leaf and the verification's outcome, for flow records.
    cert: Arc<Mutex<Option<UpstreamCert>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Ok(mut cert) = self.cert.lock() {
            *cert = Some(UpstreamCert::of(end_entity, verified.as_ref().err()));
        }
        if let Err(e) = verified
            && let Ok(mut outcome) = self.outcome.lock()
        {
            *outcome = Some(describe(&e, server_name));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl UpstreamCert {
    /// The facts of the origin's leaf `der`, verified unless `error`.
    fn of(der: &CertificateDer<'_>, error: Option<&rustls::Error>) -> Self {
        let names = tlsgate_ca::cert_names(der.as_ref());
        let (subject, issuer) = names.map_or_else(Default::default, |n| (n.subject, n.issuer));
        Self {
            subject: subject.into(),
            issuer: issuer.into(),
            verified: error.is_none(),
            error: error.map(error_label),
        }
    }
}

/// The stable label of a verification failure (one of [`UpstreamCert::ERRORS`]).
fn error_label(error: &rustls::Error) -> &'static str {
    let rustls::Error::InvalidCertificate(cert) = error else {
        return "invalid";
    };
    match cert {
        CertificateError::UnknownIssuer => "unknown_issuer",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "name_mismatch"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not_yet_valid"
        }
        CertificateError::Revoked => "revoked",
        CertificateError::BadSignature => "bad_signature",
        _ => "invalid",
    }
}

/// A sentence saying what is wrong with the origin's certificate.
fn describe(error: &rustls::Error, name: &ServerName<'_>) -> String {
    let name = name.to_str();
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("certificate expired ({error})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("certificate not valid yet ({error})")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate is not valid for {name} ({error})")
            }
            CertificateError::UnknownIssuer => format!(
                "certificate is not issued by a trusted CA: self-signed or unknown issuer ({error})"
            ),
            CertificateError::Revoked => format!("certificate revoked ({error})"),
            _ => format!("certificate rejected ({error})"),
        },
        other => format!("certificate rejected ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_every_verification_failure_from_the_documented_set() {
        let cases = [
            (CertificateError::UnknownIssuer, "unknown_issuer"),
            (CertificateError::NotValidForName, "name_mismatch"),
            (CertificateError::Expired, "expired"),
            (CertificateError::NotValidYet, "not_yet_valid"),
            (CertificateError::Revoked, "revoked"),
            (CertificateError::BadSignature, "bad_signature"),
            (CertificateError::BadEncoding, "invalid"),
        ];
        for (error, label) in cases {
            let got = error_label(&rustls::Error::InvalidCertificate(error));
            assert_eq!(got, label);
            assert!(UpstreamCert::ERRORS.contains(&got));
        }
        assert_eq!(error_label(&rustls::Error::DecryptError), "invalid");
    }
}
