//! Copies of the trail for outside systems: syslog collectors and HTTP
//! endpoints (SIEMs), and later alert webhooks.
//!
//! A side path that never weakens the local trail: the writer hands a
//! sink only lines already written (and, in `sync` mode, fsynced), through
//! a bounded [`Outbox`]; each sink runs as its own task, retries with
//! backoff, and drops the oldest lines (counted in
//! `pgwarden_audit_ship_dropped_total`) rather than hold up queries or
//! grow without bound. Gaps show as missing `seq` numbers at the receiver
//! and can be filled from the local files with `pgwarden audit search`.

pub mod http;
pub mod outbox;
pub mod syslog;

use crate::config::AuditConfig;
use crate::metrics::Metrics;
use bytes::Bytes;
use outbox::Outbox;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Start a task per alert webhook; each alert is POSTed on its own as a
/// JSON object.
pub fn start_webhooks(
    hooks: &[crate::config::HttpSinkConfig],
    metrics: &Metrics,
) -> anyhow::Result<Vec<Arc<Outbox>>> {
    let mut out = Vec::new();
    for h in hooks {
        let endpoint = h.endpoint().map_err(anyhow::Error::msg)?;
        let outbox = Arc::new(Outbox::new(
            h.queue_records,
            metrics.audit_ship_dropped.with_label_values(&["webhook"]),
        ));
        let sent = metrics.audit_shipped.with_label_values(&["webhook"]);
        tokio::spawn(http::run(endpoint, outbox.clone(), 1, Duration::ZERO, sent));
        out.push(outbox);
    }
    Ok(out)
}

/// The running sinks of the trail.
pub struct Shipping {
    outboxes: Vec<Arc<Outbox>>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shipping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipping")
            .field("sinks", &self.outboxes.len())
            .finish()
    }
}

impl Shipping {
    /// Start a task per configured sink; `None` when there is none. Must
    /// be called inside the Tokio runtime.
    pub fn start(config: &AuditConfig, metrics: &Metrics) -> anyhow::Result<Option<Shipping>> {
        let mut outboxes = Vec::new();
        let mut tasks = Vec::new();
        if let Some(s) = &config.syslog {
            let outbox = Arc::new(Outbox::new(
                s.queue_records,
                metrics.audit_ship_dropped.with_label_values(&["syslog"]),
            ));
            let sent = metrics.audit_shipped.with_label_values(&["syslog"]);
            tasks.push(tokio::spawn(syslog::run(s.clone(), outbox.clone(), sent)));
            outboxes.push(outbox);
        }
        if let Some(h) = &config.http {
            let endpoint = h.endpoint().map_err(anyhow::Error::msg)?;
            let outbox = Arc::new(Outbox::new(
                h.queue_records,
                metrics.audit_ship_dropped.with_label_values(&["http"]),
            ));
            let sent = metrics.audit_shipped.with_label_values(&["http"]);
            tasks.push(tokio::spawn(http::run(
                endpoint,
                outbox.clone(),
                h.batch_records,
                Duration::from_millis(h.batch_ms),
                sent,
            )));
            outboxes.push(outbox);
        }
        if outboxes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Shipping {
            outboxes,
            tasks: std::sync::Mutex::new(tasks),
        }))
    }

    /// Hand every sink the lines of a written batch.
    pub fn push(&self, batch: &[u8]) {
        let batch = Bytes::copy_from_slice(batch);
        for o in &self.outboxes {
            o.push_lines(&batch);
        }
    }

    /// Let the sinks deliver what is queued, for at most `grace`.
    pub async fn close(&self, grace: Duration) {
        for o in &self.outboxes {
            o.close();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(grace, t).await.is_err() {
                abort.abort();
            }
        }
    }
}
