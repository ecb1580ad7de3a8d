//! A bounded queue of lines waiting for a sink.
//!
//! The audit writer (a plain thread) pushes the lines it has made durable;
//! a sink task takes them in batches. When the sink falls behind and the
//! queue is full the oldest lines are dropped and counted: a slow SIEM
//! must never hold up queries or grow memory without bound. The local
//! trail stays complete either way.

use bytes::Bytes;
use prometheus::IntCounter;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

pub struct Outbox {
    lines: Mutex<Inner>,
    capacity: usize,
    ready: Notify,
    dropped: IntCounter,
}

struct Inner {
    queue: VecDeque<Bytes>,
    closed: bool,
}

impl Outbox {
    pub fn new(capacity: usize, dropped: IntCounter) -> Outbox {
        Outbox {
            lines: Mutex::new(Inner {
                queue: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            dropped,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue every newline-terminated line of `batch` (without its newline).
    pub fn push_lines(&self, batch: &Bytes) {
        let mut start = 0;
        let mut inner = self.inner();
        for (i, &c) in batch.iter().enumerate() {
            if c == b'\n' {
                inner.queue.push_back(batch.slice(start..i));
                start = i + 1;
            }
        }
        self.trim(&mut inner);
        drop(inner);
        self.ready.notify_one();
    }

    /// Queue one item.
    pub fn push(&self, item: Bytes) {
        let mut inner = self.inner();
        inner.queue.push_back(item);
        self.trim(&mut inner);
        drop(inner);
        self.ready.notify_one();
    }

    fn trim(&self, inner: &mut Inner) {
        let excess = inner.queue.len().saturating_sub(self.capacity);
        if excess > 0 {
            inner.queue.drain(..excess);
            self.dropped.inc_by(excess as u64);
        }
    }

    /// Put back items a sink could not deliver, ahead of newer ones.
    pub fn requeue(&self, items: Vec<Bytes>) {
        let mut inner = self.inner();
        for item in items.into_iter().rev() {
            inner.queue.push_front(item);
        }
        self.trim(&mut inner);
    }

    /// Stop after what is queued has been taken.
    pub fn close(&self) {
        self.inner().closed = true;
        self.ready.notify_one();
    }

    pub fn len(&self) -> usize {
        self.inner().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait for items and take up to `max` of them; `None` once closed
    /// and empty.
    pub async fn take(&self, max: usize) -> Option<Vec<Bytes>> {
        loop {
            let ready = self.ready.notified();
            {
                let mut inner = self.inner();
                if !inner.queue.is_empty() {
                    let n = inner.queue.len().min(max.max(1));
                    return Some(inner.queue.drain(..n).collect());
                }
                if inner.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Take up to `max` items without waiting.
    pub fn try_take(&self, max: usize) -> Option<Vec<Bytes>> {
        let mut inner = self.inner();
        let n = inner.queue.len().min(max);
        (n > 0).then(|| inner.queue.drain(..n).collect())
    }

    /// Whether `close` was called.
    pub fn closed(&self) -> bool {
        self.inner().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_bounded_and_requeued_in_order() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let o = Outbox::new(3, dropped.clone());
        o.push_lines(&Bytes::from_static(b"a\nb\nc\nd\n"));
        // The oldest went.
        assert_eq!(dropped.get(), 1);
        let got = o.take(2).await.unwrap();
        assert_eq!(got, vec![Bytes::from("b"), Bytes::from("c")]);
        o.requeue(got);
        let got = o.take(10).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Bytes::from("b"));
        o.close();
        assert!(o.take(1).await.is_none());
    }
}
