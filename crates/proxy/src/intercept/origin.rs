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

    /// Connects to `host:port` and completes TLS with SNI `sni`, offering `alpn`.
    pub async fn connect(
        &self,
        shared: &Shared,
        host: &str,
        port: u16,
        sni: &str,
        alpn: Vec<Vec<u8>>,
        accept_invalid: bool,
    ) -> Result<OriginConn, ConnError> {
        let tcp = shared.connect(host, port).await?;
        let outcome = Arc::new(Mutex::new(None));
        let verifier = Arc::new(Recording {
            inner: self.webpki.clone(),
            outcome: outcome.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnError::LocalMint(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
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
        })?
        .map_err(ConnError::UpstreamHandshake)?;
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
        Ok(OriginConn {
            tls,
            alpn,
            leaf,
            accepted_invalid: problem,
        })
    }
}

/// Verifies like WebPKI, but records a failure and lets the caller decide (it refuses unless the
/// host is exempt). Handshake signatures are always checked.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    outcome: Arc<Mutex<Option<String>>>,
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
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) && let Ok(mut outcome) = self.outcome.lock()
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
