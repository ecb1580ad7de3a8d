//! rustls settings: the certificate pgwarden shows clients, and how it
//! checks the server's certificate. Always with the ring provider, so no
//! process-wide default is needed.

use crate::config::{TlsConfig, UpstreamTlsConfig, UpstreamTlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS setup failures, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The server-side TLS settings for client connections, or `None` when TLS
/// is disabled.
pub fn server_config(tls: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, Error> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        // Clients may present a certificate; one that does not chain to
        // the CA fails the handshake. Roles that require one check it
        // after authentication.
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(Some(ca))?),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| file_error(ca, e))?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    // libpq's direct TLS negotiation requires this ALPN protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The client-side TLS settings for the upstream leg, or `None` for plain.
pub fn client_config(tls: &UpstreamTlsConfig) -> Result<Option<Arc<ClientConfig>>, Error> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match tls.mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::VerifyFull => builder
            .with_root_certificates(roots(tls.ca_file.as_deref())?)
            .with_no_client_auth(),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
            .with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

fn roots(ca: Option<&Path>) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca {
        for c in load_certs(ca)? {
            roots.add(c).map_err(|e| file_error(ca, e))?;
        }
    }
    Ok(roots)
}

/// Client settings that verify servers against the CA certificates in
/// `ca` (a PEM bundle), for outgoing HTTPS.
pub fn verifying_client_config(ca: &Path) -> Result<Arc<ClientConfig>, Error> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(Some(ca))?)
            .with_no_client_auth(),
    ))
}

/// The name checked against the server certificate.
pub fn server_name(
    tls: &UpstreamTlsConfig,
    upstream_host: &str,
) -> Result<ServerName<'static>, Error> {
    let name = tls
        .server_name
        .clone()
        .unwrap_or_else(|| upstream_host.to_string());
    ServerName::try_from(name.clone()).map_err(|_| Error::File {
        path: "upstream_tls.server_name".into(),
        message: format!("`{name}` is not a valid server name"),
    })
}

/// Encrypts without authenticating the server, like libpq's
/// `sslmode=require`: signatures are still checked, the chain is not.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The common name (CN) of a verified client certificate's subject.
pub fn certificate_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
