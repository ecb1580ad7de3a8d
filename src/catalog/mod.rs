//! The catalog account: pgwarden's own connection to PostgreSQL.
//!
//! Used to read stored password verifiers through `auth_query` (terminate
//! mode) and the schema of each database clients use ([`schema`]). One
//! connection is kept for `auth_query` and re-opened on failure; schemas are
//! read over a short connection to each database and cached until
//! invalidated. Both go through the same upstream TLS settings as client
//! sessions.

pub mod schema;

pub use schema::Schema;

use crate::config::{Config, UpstreamTlsMode, split_host_port};
use crate::fastmap::FastDashMap;
use schema::RelationRow;
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
    schemas: FastDashMap<String, Arc<Schema>>,
}

const RELATIONS_SQL: &str = include_str!("queries/relations.sql");

impl CatalogClient {
    pub fn new(config: Arc<Config>, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        CatalogClient {
            config,
            tls,
            client: Mutex::new(None),
            schemas: FastDashMap::default(),
        }
    }

    async fn connect(&self) -> Result<Client, Error> {
        self.connect_to(
            self.config
                .catalog
                .database
                .as_deref()
                .unwrap_or("postgres"),
        )
        .await
    }

    async fn connect_to(&self, database: &str) -> Result<Client, Error> {
        let c = &self.config;
        let user = c.catalog.user.as_deref().ok_or(Error::NotConfigured)?;
        let (host, port) = split_host_port(&c.upstream).map_err(|_| Error::NotConfigured)?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&host)
            .port(port)
            .user(user)
            .dbname(database)
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

    /// The schema of `database`, read on first use and cached.
    pub async fn schema(&self, database: &str) -> Result<Arc<Schema>, Error> {
        if let Some(s) = self.schemas.get(database) {
            return Ok(s.clone());
        }
        let schema = Arc::new(self.load_schema(database).await?);
        self.schemas.insert(database.to_string(), schema.clone());
        Ok(schema)
    }

    /// Forget the cached schema of `database` (after DDL), so the next use
    /// reads it again.
    pub fn invalidate(&self, database: &str) {
        self.schemas.remove(database);
    }

    /// Forget every cached schema (periodic refresh).
    pub fn invalidate_all(&self) {
        self.schemas.clear();
    }

    /// Whether a schema of `database` is cached.
    pub fn is_cached(&self, database: &str) -> bool {
        self.schemas.contains_key(database)
    }
}

/// Whether a CommandComplete tag reports a change to the schema (tables,
/// views, columns, schemas, types, functions, ownership, privileges).
pub fn is_schema_change(tag: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "CREATE ",
        "ALTER ",
        "DROP ",
        "COMMENT",
        "GRANT",
        "REVOKE",
        "SECURITY LABEL",
        "IMPORT FOREIGN SCHEMA",
    ];
    PREFIXES.iter().any(|p| tag.starts_with(p))
}

impl CatalogClient {
    /// Read every relation and column of `database`.
    pub async fn load_schema(&self, database: &str) -> Result<Schema, Error> {
        let client = self.connect_to(database).await?;
        let rows = client
            .query(RELATIONS_SQL, &[])
            .await
            .map_err(Error::Query)?;
        let rows = rows.into_iter().map(|r| RelationRow {
            oid: r.get::<_, i64>("oid") as u32,
            schema: r.get("schema"),
            name: r.get("name"),
            kind: r.get("kind"),
            attnum: r.get("attnum"),
            column: r.get("column_name"),
            type_oid: r.get::<_, i64>("type_oid") as u32,
            type_name: r.get("type_name"),
            view_sql: r.get("view_sql"),
        });
        Ok(Schema::from_rows(rows))
    }
}
