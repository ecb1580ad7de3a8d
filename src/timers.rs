//! Timeouts for code on the session workers.
//!
//! The workers ([`crate::workers`]) are tokio runtimes without a timer
//! driver. A timer driver reads the clock and visits its timer wheel every
//! time its thread wakes up, so for every message of every session, while
//! only the opening of a session (startup, connecting to the server, the
//! catalog account's connection) and a cancel's confirmation need a timer.
//! [`Timers`] keeps those timers on the main runtime: a deadline is a sleep
//! there that, when it ends, resolves a oneshot the worker races against
//! the guarded future.

use std::future::Future;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

/// The runtime that keeps time for the workers.
#[derive(Clone, Debug)]
pub struct Timers(Handle);

impl Timers {
    /// The runtime this is called on, which must have a timer driver.
    pub fn current() -> Timers {
        Timers(Handle::current())
    }

    /// `fut`'s output, unless `limit` passes first.
    pub async fn timeout<F: Future>(&self, limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
        let (fire, fired) = oneshot::channel::<()>();
        let _timer = AbortOnDrop(self.0.spawn(async move {
            tokio::time::sleep(limit).await;
            let _ = fire.send(());
        }));
        tokio::select! {
            biased;
            out = fut => Ok(out),
            // A timer dropped unfired (the main runtime stopping) leaves
            // the future to finish on its own.
            Ok(()) = fired => Err(Elapsed),
        }
    }

    /// Run `fut` on the main runtime, for work that starts tasks of its
    /// own that need timers; `None` if that runtime is shutting down.
    pub async fn run<F>(&self, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.0.spawn(fut).await {
            Ok(out) => Some(out),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime like a worker's: I/O, no timer driver.
    fn worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn deadlines_fire_on_a_runtime_without_timers() {
        let timers = Timers::current();
        let (late, quick) = std::thread::spawn(move || {
            worker().block_on(async {
                let late = timers
                    .timeout(Duration::from_millis(50), std::future::pending::<()>())
                    .await;
                let quick = timers.timeout(Duration::from_secs(60), async { 7 }).await;
                (late, quick)
            })
        })
        .join()
        .unwrap();
        assert_eq!(late, Err(Elapsed));
        assert_eq!(quick, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn run_starts_timed_work_elsewhere() {
        let timers = Timers::current();
        let slept = std::thread::spawn(move || {
            worker().block_on(timers.run(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                "slept"
            }))
        })
        .join()
        .unwrap();
        assert_eq!(slept, Some("slept"));
    }
}
