//! Configuration: the TOML file of the contract, loaded once and validated.
//!
//! `load` reads the file, deserialises it with unknown keys rejected, checks
//! cross-field rules and resolves secrets read from other files, and returns
//! an immutable [`Config`]. Every error names the file, the key and what is
//! wrong, so `pgwarden policy check` and `pgwarden run` can print it as is.

mod error;
mod tls;

pub use error::Error;
pub use tls::{ClientTlsMode, TlsConfig, UpstreamTlsConfig, UpstreamTlsMode};

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to.
    pub listen: String,
    /// The PostgreSQL server, `host:port`.
    pub upstream: String,
    /// Folder of `*.yaml` policy files.
    pub policies: Option<PathBuf>,
    /// Most client connections served at once; more wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Threads serving sessions, each an event loop of its own; one per CPU
    /// when absent.
    pub workers: Option<usize>,
    /// Largest message a client may send, in bytes (PostgreSQL's own cap is 1 GiB).
    #[serde(default = "default_max_client_message")]
    pub max_client_message_bytes: usize,
    /// Largest message accepted from the server, in bytes.
    #[serde(default = "default_max_server_message")]
    pub max_server_message_bytes: usize,
    /// Seconds allowed to reach the upstream server.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds a graceful shutdown waits for running sessions.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Seconds a client has to complete the startup and authentication.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_secs: u64,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub masking: MaskingConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// The file this configuration was read from (not a key of the file).
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_max_connections() -> usize {
    1000
}
fn default_max_client_message() -> usize {
    64 * 1024 * 1024
}
fn default_max_server_message() -> usize {
    1024 * 1024 * 1024
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_startup_timeout() -> u64 {
    60
}

/// How clients authenticate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
    /// Query run by the catalog account to read a user's stored SCRAM secret
    /// (terminate mode); `$1` is the user name.
    #[serde(default = "default_auth_query")]
    pub auth_query: String,
}

fn default_auth_query() -> String {
    "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1".to_string()
}

/// Relay forwards the server's authentication exchange; terminate runs SCRAM
/// with the client and logs in with the recovered client key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Relay,
    Terminate,
}

/// The account pgwarden uses to read the schema (and auth secrets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Database used for catalog reads when a client's own is not known.
    pub database: Option<String>,
    /// Seconds between periodic schema refreshes.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
}

fn default_refresh() -> u64 {
    300
}

/// Where and how audit records are written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub durability: Durability,
    /// Rotate the current file once it reaches this many bytes.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotate the current file once it is this many seconds old.
    #[serde(default = "default_rotate_secs")]
    pub rotate_secs: u64,
    /// Delete files whose records are all older than this many days
    /// (fractions allowed; 0 keeps everything).
    #[serde(default)]
    pub retention_days: f64,
    /// Seconds between signed `checkpoint` records.
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: u64,
    /// Keep bind parameters only as keyed hashes.
    #[serde(default)]
    pub hash_parameters: bool,
    /// Also send every record to a syslog collector.
    pub syslog: Option<SyslogConfig>,
    /// Also POST every record to an HTTP endpoint.
    pub http: Option<HttpSinkConfig>,
}

/// A syslog collector receiving copies of the trail (RFC 5424).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the collector.
    pub address: String,
    #[serde(default)]
    pub transport: SyslogTransport,
    /// Facility name: kern, user, daemon, auth, syslog, authpriv, local0..local7.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// APP-NAME of the messages.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Records held for a collector that is down or slow; the oldest
    /// are dropped (and counted) beyond this.
    #[serde(default = "default_queue_records")]
    pub queue_records: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    #[default]
    Udp,
    Tcp,
}

fn default_facility() -> String {
    "local0".into()
}
fn default_app_name() -> String {
    "pgwarden".into()
}
fn default_queue_records() -> usize {
    100_000
}

/// An HTTP endpoint receiving batches of records (or alerts) as JSON Lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// `http://` or `https://` URL POSTed to.
    pub url: String,
    /// PEM CA bundle for `https://` (default: the system bundle).
    pub ca_file: Option<PathBuf>,
    /// Extra request headers, such as `Authorization`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Most records in one request.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Milliseconds a partial batch waits for more records.
    #[serde(default = "default_batch_ms")]
    pub batch_ms: u64,
    /// Seconds to wait for an answer before retrying.
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
    /// Records held while the endpoint is down or slow; the oldest are
    /// dropped (and counted) beyond this.
    #[serde(default = "default_queue_records")]
    pub queue_records: usize,
}

fn default_batch_records() -> usize {
    500
}
fn default_batch_ms() -> u64 {
    200
}
fn default_http_timeout() -> u64 {
    10
}

impl HttpSinkConfig {
    /// The endpoint, checked; the error says what is wrong.
    pub fn endpoint(&self) -> Result<crate::ship::http::Endpoint, String> {
        crate::ship::http::Endpoint::new(
            &self.url,
            self.ca_file.as_deref(),
            self.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Duration::from_secs(self.timeout_secs.max(1)),
        )
    }
}

fn default_rotate_bytes() -> u64 {
    128 * 1024 * 1024
}
fn default_rotate_secs() -> u64 {
    86_400
}
fn default_checkpoint_secs() -> u64 {
    60
}

/// `sync`: fsynced before results flow; `async`: batched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Sync,
    Async,
}

/// Where alerts go besides the trail, the metrics and the log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `[[alerts.webhook]]`: endpoints that get each alert as a JSON POST.
    #[serde(default)]
    pub webhook: Vec<HttpSinkConfig>,
}

/// The admin endpoint: list and lift blocks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Option<String>,
    /// A file holding the bearer token callers must present.
    pub token_file: Option<PathBuf>,
}

impl AdminConfig {
    /// The token, trimmed; errors name what is wrong.
    pub fn token(&self) -> Result<String, String> {
        let p = self
            .token_file
            .as_ref()
            .ok_or("the admin endpoint needs admin.token_file")?;
        let t = read_secret(p)?.trim().to_string();
        if t.len() < 16 {
            return Err(format!(
                "{}: the token must be at least 16 characters",
                p.display()
            ));
        }
        Ok(t)
    }
}

/// Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<String>,
}

/// Keys for the hash action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    pub hash_key_file: Option<PathBuf>,
}

/// Structured log output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `pgwarden=debug`.
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Read, parse and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate configuration text; `path` is used in messages and
    /// to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::syntax(path, text, e))?;
        config.source = path.to_path_buf();
        config.resolve_paths();
        config.validate()?;
        Ok(config)
    }

    /// Relative paths in the file are relative to the file's folder.
    fn resolve_paths(&mut self) {
        let base = self
            .source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let opt = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        };
        if let Some(p) = &mut self.policies {
            fix(p);
        }
        opt(&mut self.catalog.password_file);
        opt(&mut self.audit.dir);
        opt(&mut self.audit.key_file);
        if let Some(h) = &mut self.audit.http {
            opt(&mut h.ca_file);
        }
        for h in &mut self.alerts.webhook {
            opt(&mut h.ca_file);
        }
        opt(&mut self.masking.hash_key_file);
        opt(&mut self.tls.cert);
        opt(&mut self.tls.key);
        opt(&mut self.upstream_tls.ca_file);
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.source.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        parse_listen(&self.listen).map_err(|m| self.invalid("listen", m))?;
        split_host_port(&self.upstream).map_err(|m| self.invalid("upstream", m))?;
        if let Some(m) = &self.metrics.listen {
            parse_listen(m).map_err(|e| self.invalid("metrics.listen", e))?;
        }
        if let Some(m) = &self.admin.listen {
            parse_listen(m).map_err(|e| self.invalid("admin.listen", e))?;
            self.admin
                .token()
                .map_err(|e| self.invalid("admin.token_file", e))?;
        }
        if self.max_connections == 0 {
            return Err(self.invalid("max_connections", "must be at least 1"));
        }
        if matches!(self.workers, Some(n) if n == 0 || n > 1024) {
            return Err(self.invalid("workers", "must be between 1 and 1024"));
        }
        if self.max_client_message_bytes < 16 * 1024 {
            return Err(self.invalid("max_client_message_bytes", "must be at least 16384"));
        }
        if self.max_server_message_bytes < 64 * 1024 {
            return Err(self.invalid("max_server_message_bytes", "must be at least 65536"));
        }
        if let Some(p) = &self.policies {
            if !p.is_dir() {
                return Err(self.invalid(
                    "policies",
                    format!("{} is not a readable folder", p.display()),
                ));
            }
        }
        self.tls
            .validate()
            .map_err(|(k, m)| self.invalid(&format!("tls.{k}"), m))?;
        self.upstream_tls
            .validate()
            .map_err(|(k, m)| self.invalid(&format!("upstream_tls.{k}"), m))?;
        if self.catalog.password.is_some() && self.catalog.password_file.is_some() {
            return Err(self.invalid(
                "catalog.password_file",
                "give either catalog.password or catalog.password_file, not both",
            ));
        }
        if let Some(p) = &self.catalog.password_file {
            read_secret(p).map_err(|m| self.invalid("catalog.password_file", m))?;
        }
        if self.auth.mode == AuthMode::Terminate && self.catalog.user.is_none() {
            return Err(self.invalid(
                "auth.mode",
                "terminate mode reads SCRAM secrets through the catalog account: set catalog.user",
            ));
        }
        if self.audit.key_file.is_some() && self.audit.dir.is_none() {
            return Err(self.invalid("audit.dir", "audit.key_file is set but audit.dir is not"));
        }
        if !(self.audit.retention_days >= 0.0 && self.audit.retention_days.is_finite()) {
            return Err(self.invalid(
                "audit.retention_days",
                "must be a number of days, 0 or more (0 keeps everything)",
            ));
        }
        if let Some(s) = &self.audit.syslog {
            split_host_port(&s.address).map_err(|m| self.invalid("audit.syslog.address", m))?;
            if crate::ship::syslog::facility_code(&s.facility).is_none() {
                return Err(self.invalid(
                    "audit.syslog.facility",
                    format!("`{}` is not one of kern, user, daemon, auth, syslog, authpriv, local0 to local7", s.facility),
                ));
            }
            if s.queue_records == 0 {
                return Err(self.invalid("audit.syslog.queue_records", "must be at least 1"));
            }
        }
        if let Some(h) = &self.audit.http {
            h.endpoint()
                .map_err(|m| self.invalid("audit.http.url", m))?;
            if h.batch_records == 0 || h.queue_records == 0 {
                return Err(self.invalid(
                    "audit.http.batch_records",
                    "batch_records and queue_records must be at least 1",
                ));
            }
        }
        for (i, h) in self.alerts.webhook.iter().enumerate() {
            h.endpoint()
                .map_err(|m| self.invalid(&format!("alerts.webhook[{i}].url"), m))?;
        }
        if self.audit.dir.is_some() && self.audit.checkpoint_secs == 0 {
            return Err(self.invalid("audit.checkpoint_secs", "must be at least 1"));
        }
        if let Some(p) = &self.audit.key_file {
            read_key(p).map_err(|m| self.invalid("audit.key_file", m))?;
        }
        if let Some(p) = &self.masking.hash_key_file {
            read_key(p).map_err(|m| self.invalid("masking.hash_key_file", m))?;
        }
        if let Some(level) = &self.log.level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| self.invalid("log.level", e.to_string()))?;
        }
        Ok(())
    }

    /// The catalog account's password, from the file or inline.
    pub fn catalog_password(&self) -> Option<String> {
        if let Some(p) = &self.catalog.password_file {
            return read_secret(p).ok().map(|s| s.trim_end().to_string());
        }
        self.catalog.password.clone()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs)
    }

    /// The upstream host name (used for TLS server-name checks).
    pub fn upstream_host(&self) -> String {
        split_host_port(&self.upstream)
            .map(|(h, _)| h)
            .unwrap_or_default()
    }
}

/// Parse `host:port` or `[v6]:port` into a socket address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:6432"))
}

/// Split `host:port` (host may be a name, IPv4 or `[IPv6]`).
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("`{s}` is not host:port (for example 127.0.0.1:5432)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Read a secret file; the error names the path.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text)
}

/// Check that a key file (any bytes) can be read and is not empty.
fn read_key(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
