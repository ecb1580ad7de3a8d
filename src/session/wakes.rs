//! Racing a session's futures, polling only the ones that were woken.
//!
//! `tokio::select!` polls every branch each time the task wakes. For a
//! relay that means each message from the server also polls the client's
//! read (and the shutdown signal), which then finds nothing and re-registers
//! its interest: work per message for nothing. [`Wakes`] gives each branch a
//! waker of its own that records which branch it belongs to before waking
//! the task, so the task polls only the branches with news.

use atomic_waker::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Per-branch wakers for up to 32 branches of one task.
pub struct Wakes<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
}

struct Shared {
    /// One bit per branch woken since the task last looked.
    woken: AtomicU32,
    task: AtomicWaker,
}

struct Branch {
    shared: Arc<Shared>,
    bit: u32,
}

impl Wake for Branch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.bit, Ordering::AcqRel);
        self.shared.task.wake();
    }
}

impl<const N: usize> Default for Wakes<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Wakes<N> {
    /// Every branch starts out woken, so each is polled once.
    pub fn new() -> Self {
        const { assert!(N <= 32) };
        let shared = Arc::new(Shared {
            woken: AtomicU32::new(u32::MAX),
            task: AtomicWaker::new(),
        });
        let wakers = std::array::from_fn(|i| {
            Waker::from(Arc::new(Branch {
                shared: shared.clone(),
                bit: 1 << i,
            }))
        });
        Wakes { shared, wakers }
    }

    /// Note the task's waker and take the set of branches woken since the
    /// last call (bit `i` for branch `i`). Wakes after this call wake the
    /// task again.
    pub fn take(&self, cx: &Context<'_>) -> u32 {
        self.shared.task.register(cx.waker());
        self.shared.woken.swap(0, Ordering::AcqRel)
    }

    /// The context to poll branch `i` with.
    pub fn context(&self, i: usize) -> Context<'_> {
        Context::from_waker(&self.wakers[i])
    }

    /// Poll branch `i` with its own waker if it is in `woken` (from
    /// [`Wakes::take`]); `Pending` without polling otherwise.
    #[inline(always)]
    pub fn poll<F: Future + ?Sized>(
        &self,
        woken: u32,
        i: usize,
        f: Pin<&mut F>,
    ) -> Poll<F::Output> {
        if woken & (1 << i) == 0 {
            return Poll::Pending;
        }
        f.poll(&mut self.context(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    #[tokio::test]
    async fn only_woken_branches_are_polled() {
        let wakes = Wakes::<2>::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        tx.send(1).unwrap();
        let mut never = pin!(std::future::pending::<()>());
        let mut polls = [0u32; 2];
        let mut got = Vec::new();
        let mut sent_more = false;
        std::future::poll_fn(|cx| {
            let woken = wakes.take(cx);
            if woken & 1 != 0 {
                polls[0] += 1;
                let mut c = wakes.context(0);
                while let Poll::Ready(Some(v)) = rx.poll_recv(&mut c) {
                    got.push(v);
                    if v == 3 {
                        return Poll::Ready(());
                    }
                }
            }
            if woken & 2 != 0 {
                polls[1] += 1;
            }
            let _ = wakes.poll(woken, 1, never.as_mut());
            if !sent_more {
                // Wake branch 0 from another task, twice.
                sent_more = true;
                let tx = tx.clone();
                tokio::spawn(async move {
                    tx.send(2).unwrap();
                    tokio::task::yield_now().await;
                    tx.send(3).unwrap();
                });
            }
            Poll::Pending
        })
        .await;
        assert_eq!(got, [1, 2, 3]);
        // The branch that never wakes was polled once, at the start.
        assert_eq!(polls[1], 1);
        assert!(polls[0] >= 2, "{polls:?}");
    }
}
