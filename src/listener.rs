//! The accept loop: one task per client connection, capped in number, run
//! on the [`crate::workers`], with graceful shutdown.
//!
//! [`Proxy::start`] binds the listen address (and the metrics endpoint),
//! spawns the loop and returns at once, so `pgwarden run`, the demo and the
//! tests all start the proxy the same way. On shutdown the loop stops
//! accepting, running sessions get `shutdown_timeout` to finish, and the
//! rest are told the proxy is going away.

use crate::config::{Config, parse_listen};
use crate::context::ProxyContext;
use crate::error::{PgError, sqlstate};
use crate::events::{EventSink, FanOut, LogSink};
use crate::metrics::{self, Metrics};
use crate::policy::PolicyStore;
use crate::session;
use crate::workers::{self, Workers};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// A running proxy.
pub struct Proxy {
    /// The address clients connect to (the bound port when 0 was asked).
    pub addr: SocketAddr,
    /// The metrics endpoint, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the admin endpoint listens, when configured.
    pub admin_addr: Option<SocketAddr>,
    pub context: Arc<ProxyContext>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Bind and start serving in the background.
    pub async fn start(config: Config) -> anyhow::Result<Proxy> {
        Self::start_with_events(config, None).await
    }

    /// Like [`Proxy::start`], with an extra sink that receives every session
    /// event besides the log.
    pub async fn start_with_events(
        config: Config,
        extra: Option<Arc<dyn EventSink>>,
    ) -> anyhow::Result<Proxy> {
        let policy = PolicyStore::open(config.policies.as_deref())
            .map_err(|e| anyhow::anyhow!("invalid policies:\n{e}"))?;
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let context =
            ProxyContext::new(config.clone(), metrics.clone(), policy, events_sink(extra))?;
        let listen = parse_listen(&config.listen).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let metrics_addr = match &config.metrics.listen {
            Some(m) => {
                let l = metrics::bind(parse_listen(m).map_err(anyhow::Error::msg)?)
                    .await
                    .with_context(|| format!("cannot listen on {m} for metrics"))?;
                let a = l.local_addr()?;
                let token = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = metrics::serve(l, metrics, token).await {
                        error!(error = %e, "metrics endpoint stopped");
                    }
                });
                Some(a)
            }
            None => None,
        };
        let admin_addr = match &config.admin.listen {
            Some(m) => {
                let token = config.admin.token().map_err(anyhow::Error::msg)?;
                let l = TcpListener::bind(parse_listen(m).map_err(anyhow::Error::msg)?)
                    .await
                    .with_context(|| format!("cannot listen on {m} for the admin endpoint"))?;
                let a = l.local_addr()?;
                let (ctx, stop) = (context.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = crate::admin::serve(l, ctx, token, stop).await {
                        error!(error = %e, "admin endpoint stopped");
                    }
                });
                Some(a)
            }
            None => None,
        };
        info!(%addr, upstream = %config.upstream, metrics = ?metrics_addr, admin = ?admin_addr, "pgwarden listening");
        tokio::spawn(refresh_schemas(context.clone(), shutdown.clone()));
        let workers = Workers::start(config.workers.unwrap_or_else(workers::default_count))
            .context("cannot start the session workers")?;
        let task = tokio::spawn(accept_loop(
            listener,
            workers,
            context.clone(),
            shutdown.clone(),
        ));
        Ok(Proxy {
            addr,
            metrics_addr,
            admin_addr,
            context,
            shutdown,
            task,
        })
    }

    /// Stop accepting, let sessions finish (bounded), then return.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        if let Some(trail) = self.context.audit.clone() {
            // Flush, seal and stop the writer.
            let t = trail.clone();
            let _ = tokio::task::spawn_blocking(move || t.close()).await;
            trail.close_sinks(Duration::from_secs(5)).await;
        }
        // Alerts still queued for webhooks get the same grace.
        self.context.limiter.alerts.close();
    }

    /// Re-read the policies; on errors the ones in force stay (logged and
    /// counted either way).
    pub fn reload_policies(&self) -> bool {
        let outcome = self.context.policy.reload();
        if let Some(trail) = &self.context.audit {
            let mut r = crate::audit::Record::new("policy_reload");
            r.detail = Some(match &outcome {
                Ok(p) => serde_json::json!({
                    "outcome": "ok",
                    "roles": p.roles.len(),
                    "classified_columns": p.classified_columns(),
                }),
                Err(errors) => serde_json::json!({
                    "outcome": "failed",
                    "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                }),
            });
            trail.submit(r);
        }
        let m = &self.context.metrics.policy_reloads;
        match outcome {
            Ok(p) => {
                m.with_label_values(&["ok"]).inc();
                info!(
                    roles = p.roles.len(),
                    classified_columns = p.classified_columns(),
                    "policies reloaded"
                );
                true
            }
            Err(errors) => {
                m.with_label_values(&["failed"]).inc();
                for e in &errors.0 {
                    error!(error = %e, "policy reload refused; the previous policies stay in force");
                }
                false
            }
        }
    }

    /// A token that, when cancelled, shuts the proxy down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Drop cached schemas every `catalog.refresh_secs`, so changes made
/// around the proxy (migrations run directly on the server) are seen.
async fn refresh_schemas(ctx: Arc<ProxyContext>, shutdown: CancellationToken) {
    let every = Duration::from_secs(ctx.config.catalog.refresh_secs.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => ctx.catalog.invalidate_all(),
        }
    }
}

fn events_sink(extra: Option<Arc<dyn EventSink>>) -> Arc<dyn EventSink> {
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(LogSink)];
    sinks.extend(extra);
    Arc::new(FanOut(sinks))
}

async fn accept_loop(
    listener: TcpListener,
    workers: Workers,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    let tasks = TaskTracker::new();
    // Sessions are told to stop only after the grace period.
    let sessions_stop = CancellationToken::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and similar: wait and retry.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ctx.metrics
                .connections_rejected
                .with_label_values(&["too_many"])
                .inc();
            tokio::spawn(refuse(
                tcp,
                PgError::fatal(
                    sqlstate::TOO_MANY_CONNECTIONS,
                    "sorry, too many clients already",
                ),
            ));
            continue;
        };
        // The socket moves to the worker's event loop.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!(error = %e, %peer, "cannot hand the connection to a worker");
                continue;
            }
        };
        let ctx = ctx.clone();
        let stop = sessions_stop.clone();
        workers.spawn(tasks.track_future(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => session::run(ctx, tcp, peer, stop).await,
                Err(e) => warn!(error = %e, %peer, "cannot register the connection"),
            }
            drop(permit);
        }));
    }
    drop(listener);
    tasks.close();
    let grace = ctx.config.shutdown_timeout();
    info!(
        sessions = tasks.len(),
        grace_secs = grace.as_secs(),
        "shutting down"
    );
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!(
            sessions = tasks.len(),
            "grace period over: closing remaining sessions"
        );
        sessions_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    }
    // Dropping the workers stops their threads.
    drop(workers);
}

/// Answer a connection we will not serve with an error, then close it.
async fn refuse(mut tcp: TcpStream, e: PgError) {
    // Read (and ignore) the opening so the client sees the error instead
    // of a reset.
    let mut scratch = [0u8; 512];
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut scratch),
    )
    .await;
    if scratch.starts_with(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]) {
        let _ = tcp.write_all(b"N").await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut scratch),
        )
        .await;
    }
    let _ = tcp.write_all(&e.encode()).await;
    let _ = tcp.shutdown().await;
}
