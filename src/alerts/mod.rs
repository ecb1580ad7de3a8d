//! Alerts: a bulk export, a lookup spree or a shared account noticed.
//!
//! A side path. [`Alerts::raise`] sends one alert to every sink at once:
//! the audit trail (`event: "alert"`, chained like every record),
//! Prometheus (`pgwarden_alerts_total{rule}`), the structured log (a
//! `warn` line) and configured webhooks (JSON POSTs through a bounded
//! outbox, retried with backoff, never blocking a query). Alerts are
//! deduplicated per rule, user and outcome (alerted or blocked): within
//! [`DEDUP`] of an alert, more of the same only count, and the next alert carries that count
//! (`detail.suppressed`), so one incident pages once.

use crate::access::Login;
use crate::audit::{AuditTrail, Record};
use crate::metrics::Metrics;
use crate::policy::Role;
use crate::ship::outbox::Outbox;
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::warn;

/// Alerts of one rule for one user closer than this are one incident.
pub const DEDUP: Duration = Duration::from_secs(600);

/// One alert.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `rows_per_query`, `classified_rows_per_hour`, `second_address`, ...
    pub rule: &'static str,
    pub user: String,
    pub role: String,
    /// The session that raised it, and its client address.
    pub session: Option<String>,
    pub client: Option<String>,
    /// What was seen: limits, counts, addresses, SQL.
    pub evidence: serde_json::Value,
    /// The statement was stopped or the connection refused.
    pub blocked: bool,
}

impl Alert {
    /// An alert about `login`'s session under `role`.
    pub fn of(
        rule: &'static str,
        login: Login<'_>,
        role: &Role,
        evidence: serde_json::Value,
        blocked: bool,
    ) -> Alert {
        Alert {
            rule,
            user: login.user.to_string(),
            role: role.name.clone(),
            session: Some(login.session.to_string()),
            client: Some(login.client.to_string()),
            evidence,
            blocked,
        }
    }
}

struct Seen {
    at: Instant,
    suppressed: u64,
}

/// Where alerts go.
pub struct Alerts {
    audit: Option<Arc<AuditTrail>>,
    metrics: Arc<Metrics>,
    webhooks: Vec<Arc<Outbox>>,
    /// By rule, user and whether it blocked: a block after an alert of
    /// the same rule is news.
    seen: DashMap<(&'static str, String, bool), Seen>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("webhooks", &self.webhooks.len())
            .finish()
    }
}

impl Alerts {
    pub fn new(
        audit: Option<Arc<AuditTrail>>,
        metrics: Arc<Metrics>,
        webhooks: Vec<Arc<Outbox>>,
    ) -> Alerts {
        Alerts {
            audit,
            metrics,
            webhooks,
            seen: DashMap::new(),
        }
    }

    /// Send `alert` to every sink, unless the same rule fired for the same
    /// user within [`DEDUP`] (then it is only counted). Returns whether it
    /// was sent.
    pub fn raise(&self, alert: Alert) -> bool {
        let key = (alert.rule, alert.user.clone(), alert.blocked);
        let suppressed = {
            let mut e = self.seen.entry(key).or_insert(Seen {
                at: Instant::now() - DEDUP - Duration::from_secs(1),
                suppressed: 0,
            });
            if e.at.elapsed() < DEDUP {
                e.suppressed += 1;
                return false;
            }
            e.at = Instant::now();
            std::mem::take(&mut e.suppressed)
        };
        self.metrics.alerts.with_label_values(&[alert.rule]).inc();
        warn!(
            rule = alert.rule,
            user = %alert.user,
            role = %alert.role,
            client = alert.client.as_deref().unwrap_or(""),
            blocked = alert.blocked,
            evidence = %alert.evidence,
            suppressed,
            "ALERT"
        );
        let mut r = Record::new("alert");
        r.ts = jiff::Timestamp::now().to_string();
        r.rule = Some(alert.rule.to_string());
        r.user = Some(alert.user.clone());
        r.role = Some(alert.role.clone());
        r.session = alert.session.clone();
        r.client = alert.client.clone();
        let mut detail = alert.evidence.clone();
        if let Some(o) = detail.as_object_mut() {
            o.insert("blocked".into(), alert.blocked.into());
            o.insert("suppressed".into(), suppressed.into());
        }
        r.detail = Some(detail);
        if !self.webhooks.is_empty() {
            if let Ok(body) = serde_json::to_vec(&r) {
                let body = Bytes::from(body);
                for w in &self.webhooks {
                    w.push(body.clone());
                }
            }
        }
        if let Some(trail) = &self.audit {
            trail.submit(r);
        }
        true
    }

    /// Let webhooks deliver what they hold, for at most `grace`.
    pub fn close(&self) {
        for w in &self.webhooks {
            w.close();
        }
    }
}
