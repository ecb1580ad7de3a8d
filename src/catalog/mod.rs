//! The catalog account: pgwarden's own connection to PostgreSQL.
//!
//! Used to read stored password verifiers through `auth_query` (terminate
//! mode) and, with column enforcement, the schema. One connection is kept
//! and re-opened on failure; it goes through the same upstream TLS settings
//! as client sessions.

use crate::config::{Config, UpstreamTlsMode, split_host_port};
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

/// Why the catalog account could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog.user is not configured")]
    NotConfigured,
    #[error("catalog connection: {0}")]
    Connect(tokio_postgres::Error),
    #[error("catalog query: {0}")]
    Query(tokio_postgres::Error),
}

pub struct CatalogClient {
    config: Arc<Config>,
    tls: Option<Arc<rustls::ClientConfig>>,
    client: Mutex<Option<Client>>,
}

impl CatalogClient {
    pub fn new(config: Arc<Config>, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        CatalogClient {
            config,
            tls,
            client: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Client, Error> {
        let c = &self.config;
        let user = c.catalog.user.as_deref().ok_or(Error::NotConfigured)?;
        let (host, port) = split_host_port(&c.upstream).map_err(|_| Error::NotConfigured)?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&host)
            .port(port)
            .user(user)
            .dbname(c.catalog.database.as_deref().unwrap_or("postgres"))
            .application_name("pgwarden-catalog")
            .connect_timeout(c.connect_timeout());
        if let Some(p) = c.catalog_password() {
            pg.password(p);
        }
        let client = match &self.tls {
            None => {
                let (client, conn) = pg.connect(NoTls).await.map_err(Error::Connect)?;
                tokio::spawn(conn);
                client
            }
            Some(tls) => {
                pg.ssl_mode(match c.upstream_tls.mode {
                    UpstreamTlsMode::Prefer => SslMode::Prefer,
                    _ => SslMode::Require,
                });
                let connector = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, conn) = pg.connect(connector).await.map_err(Error::Connect)?;
                tokio::spawn(conn);
                client
            }
        };
        Ok(client)
    }

    /// A live connection, opened if needed.
    async fn client(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, Error> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.connect().await?);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("set above")
        }))
    }

    /// The stored password verifier of `user` via `auth_query`, or `None`
    /// when there is no such login or it has no password.
    pub async fn auth_secret(&self, user: &str) -> Result<Option<String>, Error> {
        for attempt in 0..2 {
            let client = self.client().await?;
            match client
                .query_opt(self.config.auth.auth_query.as_str(), &[&user])
                .await
            {
                Ok(row) => {
                    return Ok(row.and_then(|r| {
                        let idx = if r.len() > 1 { 1 } else { 0 };
                        r.try_get::<_, Option<String>>(idx).ok().flatten()
                    }));
                }
                Err(e) if attempt == 0 && client.is_closed() => {
                    warn!(error = %e, "catalog connection lost; reconnecting");
                }
                Err(e) => return Err(Error::Query(e)),
            }
        }
        Err(Error::NotConfigured)
    }
}
