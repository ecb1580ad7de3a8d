//! The writer thread and the handle sessions use.
//!
//! Sessions queue records ([`AuditTrail::submit`]) and get a ticket; one
//! thread takes everything queued, chains it, writes it in one `write`
//! and, in `sync` mode, one `fdatasync`: group commit, so a thousand
//! sessions waiting cost one disk flush, not a thousand. A session that
//! must not show results before its record is durable waits on its ticket
//! ([`AuditTrail::wait`]).
//!
//! When writing fails (disk full, permissions, I/O error) the trail is
//! marked failed: waiters are told at once, restricted sessions are
//! refused, records are kept in memory (up to [`MAX_BACKLOG`]) and the
//! write is retried every second until it works again. Records that did
//! not fit are counted and reported in a `lost` record.

use super::chain::ChainKey;
use super::files::Files;
use super::record::Record;
use super::retention;
use crate::config::Durability;
use crate::metrics::Metrics;
use crate::ship::Shipping;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Records held in memory while the trail cannot be written.
pub const MAX_BACKLOG: usize = 200_000;
/// How often a failed write is retried, and the seal rewritten.
const TICK: Duration = Duration::from_secs(1);
/// In `async` mode, how long records may wait in memory before a write.
pub const ASYNC_FLUSH: Duration = Duration::from_millis(50);

/// How the trail is written.
#[derive(Debug, Clone)]
pub struct TrailOptions {
    pub durability: Durability,
    /// Rotate the current file at this size.
    pub rotate_bytes: u64,
    /// Rotate the current file at this age.
    pub rotate_after: Duration,
    /// Interval between `checkpoint` records.
    pub checkpoint_every: Duration,
    /// Remove files whose records are all older than this many days
    /// (0: keep everything).
    pub retention_days: f64,
    /// Outside sinks that get a copy of every written line.
    pub shipping: Option<Arc<Shipping>>,
}

impl Default for TrailOptions {
    fn default() -> Self {
        TrailOptions {
            durability: Durability::Sync,
            rotate_bytes: 128 * 1024 * 1024,
            rotate_after: Duration::from_secs(86_400),
            checkpoint_every: Duration::from_secs(60),
            retention_days: 0.0,
            shipping: None,
        }
    }
}

/// Why results cannot wait for their record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

struct Queue {
    /// Ticket of the next record submitted.
    next: u64,
    items: Vec<Record>,
    stop: bool,
    /// The writer is asleep waiting for records (sync mode).
    idle: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Every ticket up to this one is written (and fsynced in sync mode).
    durable: AtomicU64,
    failed: AtomicBool,
    written: tokio::sync::Notify,
}

/// The audit trail of a running proxy.
pub struct AuditTrail {
    shared: Arc<Shared>,
    durability: Durability,
    shipping: Option<Arc<Shipping>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("durability", &self.durability)
            .finish()
    }
}

impl AuditTrail {
    /// Open the trail in `dir` and start its writer thread.
    pub fn start(
        dir: &Path,
        key: ChainKey,
        options: TrailOptions,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<AuditTrail> {
        let durability = options.durability;
        let shipping = options.shipping.clone();
        let files = Files::open(dir, key, options.rotate_bytes, options.rotate_after)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                next: 1,
                items: Vec::new(),
                stop: false,
                idle: false,
            }),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            written: tokio::sync::Notify::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pgwarden-audit".into())
            .spawn(move || Writer::new(s, files, options, metrics).run())?;
        Ok(AuditTrail {
            shared,
            durability,
            shipping,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Queue a record; the ticket says when it is durable.
    pub fn submit(&self, record: Record) -> u64 {
        let mut q = lock(&self.shared.queue);
        let ticket = q.next;
        q.next += 1;
        q.items.push(record);
        let wake = q.idle;
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
        ticket
    }

    /// Whether records are being written.
    pub fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire)
    }

    /// Resolves once record `ticket` is durable (sync mode; at once in
    /// async mode), or with [`Unavailable`] while the trail cannot be
    /// written.
    pub async fn wait(&self, ticket: u64) -> Result<(), Unavailable> {
        if self.durability == Durability::Async {
            return if self.healthy() {
                Ok(())
            } else {
                Err(Unavailable)
            };
        }
        loop {
            let written = self.shared.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if self.shared.durable.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            if !self.healthy() {
                return Err(Unavailable);
            }
            written.await;
        }
    }

    /// Write a `stop` record, flush everything, seal and end the thread.
    pub fn close(&self) {
        self.submit(Record::new("stop"));
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }

    /// After [`close`](Self::close): give outside sinks up to `grace` to
    /// deliver what they hold.
    pub async fn close_sinks(&self, grace: Duration) {
        if let Some(s) = &self.shipping {
            s.close(grace).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Writer {
    shared: Arc<Shared>,
    files: Files,
    durability: Durability,
    options: TrailOptions,
    metrics: Arc<Metrics>,
    /// Taken from the queue, not yet written.
    backlog: Vec<Record>,
    /// Ticket of the last record in `backlog` (or written).
    last_ticket: u64,
    lost: u64,
    buf: Vec<u8>,
    retry_at: Option<Instant>,
    last_tick: Instant,
    last_checkpoint: Instant,
    last_sync: Instant,
    written_total: u64,
    sealed_once: bool,
}

impl Writer {
    fn new(
        shared: Arc<Shared>,
        files: Files,
        options: TrailOptions,
        metrics: Arc<Metrics>,
    ) -> Writer {
        let now = Instant::now();
        let durability = options.durability;
        let mut start = Record::new("start");
        start.detail = Some(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "durability": match durability { Durability::Sync => "sync", Durability::Async => "async" },
        }));
        Writer {
            shared,
            files,
            durability,
            options,
            metrics,
            backlog: vec![start],
            last_ticket: 0,
            lost: 0,
            buf: Vec::with_capacity(64 * 1024),
            retry_at: None,
            last_tick: now,
            last_checkpoint: now,
            last_sync: now,
            written_total: 0,
            sealed_once: false,
        }
    }

    fn run(mut self) {
        loop {
            let stop = self.take();
            let failed = self.shared.failed.load(Ordering::Acquire);
            let retry_due = self.retry_at.is_none_or(|t| Instant::now() >= t);
            if !self.backlog.is_empty() && (!failed || retry_due) {
                self.flush();
            }
            self.periodic();
            if stop && (self.backlog.is_empty() || self.shared.failed.load(Ordering::Acquire)) {
                let _ = self.files.sync();
                if let Err(e) = self.files.seal() {
                    error!(error = %e, "cannot write the audit seal on shutdown");
                }
                return;
            }
        }
    }

    /// Wait for records (or a tick) and move them to the backlog.
    fn take(&mut self) -> bool {
        let mut q = lock(&self.shared.queue);
        if q.items.is_empty() && !q.stop {
            let wait = match self.durability {
                Durability::Sync => TICK,
                Durability::Async => ASYNC_FLUSH,
            };
            q.idle = self.durability == Durability::Sync;
            q = self
                .shared
                .wake
                .wait_timeout(q, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            q.idle = false;
        } else if self.durability == Durability::Async && !q.stop {
            // Let records gather for one flush interval.
            drop(q);
            std::thread::sleep(ASYNC_FLUSH);
            q = lock(&self.shared.queue);
        }
        let items = std::mem::take(&mut q.items);
        self.last_ticket = q.next - 1;
        let stop = q.stop;
        drop(q);
        let room = MAX_BACKLOG.saturating_sub(self.backlog.len());
        if items.len() > room {
            let dropped = (items.len() - room) as u64;
            self.lost += dropped;
            self.metrics.audit_lost.inc_by(dropped);
        }
        self.backlog.extend(items.into_iter().take(room));
        stop
    }

    fn flush(&mut self) {
        let started = Instant::now();
        if self.lost > 0 {
            let mut r = Record::new("lost");
            r.detail = Some(serde_json::json!({ "records": self.lost }));
            self.backlog.insert(0, r);
        }
        let sync = self.durability == Durability::Sync;
        let result = self
            .files
            .write(&mut self.backlog, &mut self.buf)
            .and_then(|_| if sync { self.files.sync() } else { Ok(()) });
        match result {
            Ok(()) => {
                if let Some(s) = &self.options.shipping {
                    s.push(&self.buf);
                }
                let n = self.backlog.len() as u64;
                self.written_total += n;
                self.metrics.audit_records.inc_by(n);
                self.backlog.clear();
                self.lost = 0;
                self.retry_at = None;
                if self.shared.failed.swap(false, Ordering::AcqRel) {
                    info!("audit trail writable again");
                }
                self.shared
                    .durable
                    .store(self.last_ticket, Ordering::Release);
                if !self.sealed_once {
                    // Seal the first records at once, not a tick later.
                    self.sealed_once = self.files.seal().is_ok();
                }
                let label = if sync { "sync" } else { "async" };
                self.metrics
                    .audit_write_seconds
                    .with_label_values(&[label])
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                if self.lost > 0 {
                    self.backlog.remove(0);
                }
                self.metrics.audit_failures.inc();
                if !self.shared.failed.swap(true, Ordering::AcqRel) {
                    error!(error = %e, backlog = self.backlog.len(), "cannot write the audit trail; restricted sessions are refused until it can be written");
                } else {
                    warn!(error = %e, backlog = self.backlog.len(), "audit trail still not writable");
                }
                self.retry_at = Some(Instant::now() + TICK);
            }
        }
        self.metrics.audit_backlog.set(self.backlog.len() as i64);
        self.shared.written.notify_waiters();
    }

    /// Seal, fsync (async mode), checkpoint: at most once per tick.
    fn periodic(&mut self) {
        if self.last_tick.elapsed() < TICK {
            return;
        }
        self.last_tick = Instant::now();
        if self.files.unsynced && self.last_sync.elapsed() >= TICK {
            if let Err(e) = self.files.sync() {
                warn!(error = %e, "audit fsync failed");
            }
            self.last_sync = Instant::now();
        }
        if self.last_checkpoint.elapsed() >= self.options.checkpoint_every && self.written_total > 0
        {
            self.last_checkpoint = Instant::now();
            let mut r = Record::new("checkpoint");
            r.detail = Some(serde_json::json!({ "records_since_start": self.written_total }));
            self.backlog.push(r);
            // Files the previous checkpoint covers may now be removed.
            self.retain();
        }
        if let Err(e) = self.files.seal() {
            warn!(error = %e, "cannot write the audit seal");
        }
    }

    /// Remove the files retention no longer keeps: first a durable
    /// `retention` record, then the signed anchor, then the files.
    fn retain(&mut self) {
        let days = self.options.retention_days;
        if days <= 0.0 || self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        let Ok(age) = jiff::SignedDuration::try_from_secs_f64(days * 86_400.0) else {
            return;
        };
        let Ok(cutoff) = jiff::Timestamp::now().checked_sub(age) else {
            return;
        };
        let dir = self.files.dir().to_path_buf();
        let (doomed, keep_from) = match retention::expired(&dir, cutoff, self.files.checkpoint_seq)
        {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot list the audit files for retention");
                return;
            }
        };
        self.backlog
            .push(retention::record(&doomed, keep_from, days));
        self.flush();
        if self.shared.failed.load(Ordering::Acquire) || self.files.sync().is_err() {
            return;
        }
        match retention::remove(&dir, self.files.key(), &doomed, keep_from) {
            Ok(()) => info!(
                files = doomed.len(),
                first_seq_kept = keep_from,
                "audit retention removed old files"
            ),
            Err(e) => error!(error = %e, "audit retention could not remove old files"),
        }
    }
}
