//! TLS settings for both legs: clients to pgwarden (`[tls]`) and pgwarden to
//! the server (`[upstream_tls]`).

use serde::Deserialize;
use std::path::PathBuf;

/// What pgwarden accepts from clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Answer `N` to every SSLRequest.
    #[default]
    Disable,
    /// TLS when the client asks for it, plain otherwise.
    Allow,
    /// Refuse clients that do not use TLS.
    Require,
}

/// `[tls]`: certificate and key shown to clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub mode: Option<ClientTlsMode>,
    /// CA of client certificates: clients may present one, and roles with
    /// `connect.client_cert: required` must, with their login as CN.
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// The effective mode: `allow` when a certificate is configured and no
    /// mode is given, `disable` otherwise.
    pub fn effective_mode(&self) -> ClientTlsMode {
        match self.mode {
            Some(m) => m,
            None if self.cert.is_some() => ClientTlsMode::Allow,
            None => ClientTlsMode::Disable,
        }
    }

    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let mode = self.effective_mode();
        if mode != ClientTlsMode::Disable && (self.cert.is_none() || self.key.is_none()) {
            return Err(("cert", "TLS mode needs both tls.cert and tls.key".into()));
        }
        for (k, p) in [
            ("cert", &self.cert),
            ("key", &self.key),
            ("client_ca", &self.client_ca),
        ] {
            if let Some(p) = p {
                std::fs::metadata(p)
                    .map_err(|e| (k, format!("cannot read {}: {e}", p.display())))?;
            }
        }
        Ok(())
    }
}

/// How pgwarden talks TLS to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS if the server offers it, without certificate checks.
    Prefer,
    /// TLS or fail, without certificate checks.
    Require,
    /// TLS, the certificate chain checked against `ca_file` and the host name.
    VerifyFull,
}

/// `[upstream_tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    pub ca_file: Option<PathBuf>,
    /// Name to check in the server certificate (defaults to the upstream host).
    pub server_name: Option<String>,
}

impl UpstreamTlsConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.mode == UpstreamTlsMode::VerifyFull && self.ca_file.is_none() {
            return Err(("ca_file", "verify-full needs upstream_tls.ca_file".into()));
        }
        if let Some(p) = &self.ca_file {
            std::fs::metadata(p)
                .map_err(|e| ("ca_file", format!("cannot read {}: {e}", p.display())))?;
        }
        Ok(())
    }
}
