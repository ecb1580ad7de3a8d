//! Session workers: threads that each run an event loop of their own.
//!
//! A session is one task that lives on one thread from start to end. Each
//! worker is a single-threaded tokio runtime, so a session's reads, writes
//! and the wake-ups between its two directions never cross threads: no
//! work stealing, no cross-thread wake-ups, no futex traffic per message.
//! This is how PgBouncer runs (one event loop), extended to one loop per
//! CPU. New sessions go to the worker serving the fewest.
//!
//! The accept loop, the metrics and admin endpoints and the audit writer
//! run elsewhere; only sessions run here. Dropping [`Workers`] stops the
//! threads and drops whatever sessions they still hold, so a caller that
//! wants sessions to end cleanly waits for them first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The session threads of one proxy.
pub struct Workers {
    workers: Vec<Worker>,
    _stop: DropGuard,
}

struct Worker {
    handle: Handle,
    /// Sessions spawned here and not yet finished.
    load: Arc<AtomicUsize>,
}

/// Decrements a worker's load when its session ends (or is dropped).
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Start `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("pgwarden-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.push(Worker {
                handle,
                load: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Workers {
            workers,
            _stop: stop.drop_guard(),
        })
    }

    /// Run `session` on the least busy worker.
    pub fn spawn<F>(&self, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.load.fetch_add(1, Ordering::Relaxed);
        let guard = LoadGuard(worker.load.clone());
        worker.handle.spawn(async move {
            let _guard = guard;
            session.await
        });
    }

    /// Sessions currently running on each worker (one entry per thread).
    pub fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }
}

/// The default number of workers: one per CPU this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sessions_spread_over_workers_and_run_on_their_threads() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.loads().len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        let release = CancellationToken::new();
        for _ in 0..4 {
            let (tx, release) = (tx.clone(), release.clone());
            workers.spawn(async move {
                tx.send(std::thread::current().name().map(String::from))
                    .unwrap();
                release.cancelled().await;
            });
        }
        let mut names: Vec<_> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "pgwarden-worker-0",
                "pgwarden-worker-0",
                "pgwarden-worker-1",
                "pgwarden-worker-1"
            ]
        );
        assert_eq!(workers.loads(), [2, 2]);
        release.cancel();
        for _ in 0..500 {
            if workers.loads() == [0, 0] {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(workers.loads(), [0, 0]);
    }

    #[test]
    fn dropping_the_workers_drops_their_sessions() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel();
        workers.spawn(async move {
            let _held = tx;
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
        started.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(workers);
        // The session's sender is dropped with its runtime.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
