//! Prometheus metrics and the HTTP endpoint that serves them.
//!
//! One [`Metrics`] per running proxy (so several proxies in one test process
//! keep separate counts). Labels are bounded sets chosen by pgwarden, never
//! SQL text or user input.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// All metrics of one proxy.
pub struct Metrics {
    pub registry: Registry,
    pub connections_total: IntCounter,
    pub connections_active: IntGauge,
    pub connections_rejected: IntCounterVec,
    pub auth_failures: IntCounter,
    pub statements: IntCounterVec,
    pub queries: IntCounterVec,
    pub statement_errors: IntCounter,
    pub statement_duration: HistogramVec,
    pub rows: IntCounter,
    pub rows_masked: IntCounterVec,
    pub bytes: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub protocol_errors: IntCounter,
    pub cancel_requests: IntCounterVec,
    pub alerts: IntCounterVec,
    pub audit_write_seconds: HistogramVec,
    pub audit_records: IntCounter,
    pub audit_failures: IntCounter,
    pub audit_lost: IntCounter,
    pub audit_backlog: IntGauge,
    pub audit_shipped: IntCounterVec,
    pub audit_ship_dropped: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    /// Children of the vectors above resolved once, for the per-message path.
    pub hot: HotMetrics,
}

/// Pre-resolved label values used for every statement or read, so the data
/// path never hashes label values.
pub struct HotMetrics {
    pub statements_simple: IntCounter,
    pub statements_extended: IntCounter,
    pub queries_forward: IntCounter,
    /// Statements of restricted roles whose results are rewritten.
    pub queries_rewrite: IntCounter,
    pub queries_refuse: IntCounter,
    /// Rows in which at least one value was masked, hashed or redacted.
    pub rows_masked: IntCounter,
    pub bytes_to_server: IntCounter,
    pub bytes_to_client: IntCounter,
    pub duration_simple: Histogram,
    pub duration_extended: Histogram,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        let active = IntGauge::new("pgwarden_connections_active", "Client connections open now")
            .expect("valid metric");
        r.register(Box::new(active.clone())).expect("unique metric");
        let latency = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 10.0,
        ];
        let statements = counter_vec(
            &r,
            "pgwarden_statements_total",
            "Statements forwarded, by protocol",
            &["protocol"],
        );
        let queries = counter_vec(
            &r,
            "pgwarden_queries_total",
            "Statements by decision",
            &["decision"],
        );
        let bytes = counter_vec(
            &r,
            "pgwarden_bytes_total",
            "Bytes relayed, by direction",
            &["direction"],
        );
        let statement_duration = histogram_vec(
            &r,
            "pgwarden_statement_duration_seconds",
            "Time from forwarding a statement to its completion",
            &["protocol"],
            latency.clone(),
        );
        let rows_masked = counter_vec(
            &r,
            "pgwarden_rows_masked_total",
            "Rows in which values were masked, hashed or redacted",
            &["action"],
        );
        let audit_backlog = IntGauge::new(
            "pgwarden_audit_backlog",
            "Audit records held in memory because the trail cannot be written",
        )
        .expect("valid metric");
        r.register(Box::new(audit_backlog.clone()))
            .expect("unique metric");
        let hot = HotMetrics {
            statements_simple: statements.with_label_values(&["simple"]),
            statements_extended: statements.with_label_values(&["extended"]),
            queries_forward: queries.with_label_values(&["forward"]),
            queries_rewrite: queries.with_label_values(&["rewrite"]),
            queries_refuse: queries.with_label_values(&["refuse"]),
            rows_masked: rows_masked.with_label_values(&["rewrite"]),
            bytes_to_server: bytes.with_label_values(&["to_server"]),
            bytes_to_client: bytes.with_label_values(&["to_client"]),
            duration_simple: statement_duration.with_label_values(&["simple"]),
            duration_extended: statement_duration.with_label_values(&["extended"]),
        };
        let m = Metrics {
            hot,
            statements,
            queries,
            bytes,
            statement_duration,
            connections_total: counter(
                &r,
                "pgwarden_connections_total",
                "Client connections accepted",
            ),
            connections_active: active,
            connections_rejected: counter_vec(
                &r,
                "pgwarden_connections_rejected_total",
                "Client connections refused before a session started",
                &["reason"],
            ),
            auth_failures: counter(
                &r,
                "pgwarden_auth_failures_total",
                "Logins the server or pgwarden refused",
            ),
            statement_errors: counter(
                &r,
                "pgwarden_statement_errors_total",
                "Statements that ended in an error",
            ),
            rows: counter(&r, "pgwarden_rows_total", "Rows returned to clients"),
            rows_masked,
            upstream_errors: counter_vec(
                &r,
                "pgwarden_upstream_errors_total",
                "Failures talking to the server",
                &["kind"],
            ),
            protocol_errors: counter(
                &r,
                "pgwarden_protocol_errors_total",
                "Connections closed for a malformed client message",
            ),
            cancel_requests: counter_vec(
                &r,
                "pgwarden_cancel_requests_total",
                "Cancel requests, by outcome",
                &["outcome"],
            ),
            alerts: counter_vec(
                &r,
                "pgwarden_alerts_total",
                "Alerts raised, by rule",
                &["rule"],
            ),
            audit_write_seconds: histogram_vec(
                &r,
                "pgwarden_audit_write_seconds",
                "Time to write (and in sync mode fsync) audit records",
                &["durability"],
                latency,
            ),
            audit_records: counter(&r, "pgwarden_audit_records_total", "Audit records written"),
            audit_failures: counter(
                &r,
                "pgwarden_audit_write_failures_total",
                "Failed attempts to write (or fsync) audit records",
            ),
            audit_lost: counter(
                &r,
                "pgwarden_audit_records_lost_total",
                "Audit records dropped because the in-memory backlog was full",
            ),
            audit_backlog,
            audit_shipped: counter_vec(
                &r,
                "pgwarden_audit_shipped_total",
                "Audit records delivered to an outside sink, by sink",
                &["sink"],
            ),
            audit_ship_dropped: counter_vec(
                &r,
                "pgwarden_audit_ship_dropped_total",
                "Audit records dropped because a sink's queue was full, by sink",
                &["sink"],
            ),
            policy_reloads: counter_vec(
                &r,
                "pgwarden_policy_reloads_total",
                "Policy reloads, by outcome",
                &["outcome"],
            ),
            registry: r,
        };
        Arc::new(m)
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding gathered metrics into memory does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Serve `/metrics` (and `/healthz`) on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Bind the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
