//! What every session of one running proxy shares: configuration, TLS
//! settings, the cancel-key registry and metrics.

use crate::access::Gate;
use crate::alerts::Alerts;
use crate::audit::AuditTrail;
use crate::cancel::CancelRegistry;
use crate::catalog::CatalogClient;
use crate::config::Config;
use crate::events::EventSink;
use crate::limits::Limiter;
use crate::masking::HashKey;
use crate::metrics::Metrics;
use crate::net::tls;
use crate::policy::PolicyStore;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::sync::Arc;

/// Shared, read-only state of a running proxy.
pub struct ProxyContext {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub cancel: Arc<CancelRegistry>,
    /// TLS shown to clients, when configured.
    pub client_tls: Option<Arc<ServerConfig>>,
    /// TLS towards the server, when configured.
    pub upstream_tls: Option<Arc<ClientConfig>>,
    pub upstream_name: ServerName<'static>,
    /// pgwarden's own connection for `auth_query` and schema reads.
    pub catalog: CatalogClient,
    /// The policies in force (swapped on SIGHUP).
    pub policy: PolicyStore,
    /// Where session events go (logs, audit).
    pub events: Arc<dyn EventSink>,
    /// The key of `hash` pseudonyms.
    pub hash_key: HashKey,
    /// The audit trail, when `[audit] dir` is set.
    pub audit: Option<Arc<AuditTrail>>,
    /// Volume limits and the alerts they raise.
    pub limiter: Arc<Limiter>,
    /// Connect rules: networks, certificates, hours, second addresses.
    pub gate: Gate,
}

impl ProxyContext {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        policy: PolicyStore,
        events: Arc<dyn EventSink>,
    ) -> anyhow::Result<Arc<Self>> {
        let upstream_tls = tls::client_config(&config.upstream_tls)?;
        let hash_key = crate::masking::hash::load_key(&config).map_err(anyhow::Error::msg)?;
        let audit = crate::audit::open(&config, metrics.clone())?;
        let webhooks = crate::ship::start_webhooks(&config.alerts.webhook, &metrics)?;
        let alerts = Arc::new(Alerts::new(audit.clone(), metrics.clone(), webhooks));
        Ok(Arc::new(ProxyContext {
            gate: Gate::new(alerts.clone()),
            limiter: Arc::new(Limiter::new(alerts)),
            hash_key,
            audit,
            client_tls: tls::server_config(&config.tls)?,
            catalog: CatalogClient::new(config.clone(), upstream_tls.clone()),
            policy,
            events,
            upstream_tls,
            upstream_name: tls::server_name(&config.upstream_tls, &config.upstream_host())?,
            cancel: CancelRegistry::new(),
            config,
            metrics,
        }))
    }
}
