//! Distinct data subjects one user has seen in a sliding window.
//!
//! A subject is the keyed hash of a row's subject key (the customer id or
//! ID number the policy's `subjects:` section names per table). Seeing the
//! same customer again only refreshes it; a new one counts. So a thousand
//! lookups of the same customer count once, and a thousand one-row
//! lookups of different customers count like one thousand-row export.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Most subjects remembered per user, whatever the thresholds: bounds
/// memory when a role only alerts.
pub const MAX_REMEMBERED: usize = 200_000;

/// Subject ids are already the output of a keyed hash: the map uses them
/// as they are instead of hashing them again.
#[derive(Debug, Default)]
struct SubjectIdHasher(u64);

impl Hasher for SubjectIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The subjects of one user, each with the minute it was last seen.
#[derive(Debug, Default)]
pub struct SubjectWindow {
    last_seen: HashMap<u64, u64, BuildHasherDefault<SubjectIdHasher>>,
    /// (minute, subject) in the order seen; stale pairs are skipped.
    order: VecDeque<(u64, u64)>,
    /// An alert was raised for this crossing of the alert threshold.
    pub alerted: bool,
}

/// What seeing one subject did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Seen before in the window.
    Again,
    /// New; the window now holds this many.
    New(usize),
    /// New, but the window is full at `block`: not counted.
    Refused(usize),
}

impl SubjectWindow {
    /// Forget subjects last seen `window` minutes or more before `now`.
    pub fn expire(&mut self, now: u64, window: u64) {
        while let Some(&(minute, subject)) = self.order.front() {
            if now.saturating_sub(minute) < window {
                break;
            }
            self.order.pop_front();
            if self.last_seen.get(&subject) == Some(&minute) {
                self.last_seen.remove(&subject);
            }
        }
    }

    /// Whether `subject` is in the window.
    pub fn contains(&self, subject: u64) -> bool {
        self.last_seen.contains_key(&subject)
    }

    /// Distinct subjects in the window.
    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty()
    }

    /// See `subject` at minute `now`; a new one beyond `block` is refused.
    pub fn see(&mut self, subject: u64, now: u64, block: Option<u64>) -> Seen {
        if let Some(m) = self.last_seen.get_mut(&subject) {
            if *m != now {
                *m = now;
                self.order.push_back((now, subject));
                self.compact();
            }
            return Seen::Again;
        }
        let n = self.last_seen.len();
        if block.is_some_and(|b| n as u64 >= b) {
            return Seen::Refused(n);
        }
        if n >= MAX_REMEMBERED {
            return Seen::New(n);
        }
        self.last_seen.insert(subject, now);
        self.order.push_back((now, subject));
        Seen::New(n + 1)
    }

    /// Drop stale (minute, subject) pairs once they outnumber the live
    /// ones: subjects seen again every minute would otherwise grow the
    /// order queue by one pair each per minute of the window.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.last_seen.len() + 1024 {
            let last_seen = &self.last_seen;
            self.order.retain(|(m, s)| last_seen.get(s) == Some(m));
        }
    }

    /// The minute from which the window has room for one more subject.
    pub fn frees_at(&self, window: u64) -> Option<u64> {
        self.order
            .iter()
            .find(|(m, s)| self.last_seen.get(s) == Some(m))
            .map(|(m, _)| m + window)
    }

    /// Forget everything (a block lifted by an administrator).
    pub fn clear(&mut self) {
        self.last_seen.clear();
        self.order.clear();
        self.alerted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_subject_counts_once_and_new_ones_stop_at_block() {
        let mut w = SubjectWindow::default();
        assert_eq!(w.see(1, 100, Some(3)), Seen::New(1));
        assert_eq!(w.see(1, 100, Some(3)), Seen::Again);
        assert_eq!(w.see(2, 101, Some(3)), Seen::New(2));
        assert_eq!(w.see(3, 102, Some(3)), Seen::New(3));
        assert_eq!(w.see(4, 102, Some(3)), Seen::Refused(3));
        // Known subjects stay visible at the limit.
        assert_eq!(w.see(2, 103, Some(3)), Seen::Again);
        // Subject 1 (last seen at 100) leaves a 60-minute window at 160.
        assert_eq!(w.frees_at(60), Some(160));
        w.expire(160, 60);
        assert_eq!(w.len(), 2);
        assert_eq!(w.see(4, 160, Some(3)), Seen::New(3));
        // Subject 3 (seen at 102) leaves at 162; subject 2 was refreshed
        // at 103, so it stays until 163.
        w.expire(162, 60);
        assert_eq!(w.len(), 2);
        w.expire(163, 60);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn subjects_seen_every_minute_do_not_grow_the_queue() {
        let mut w = SubjectWindow::default();
        for minute in 0..600 {
            for subject in 0..100 {
                assert_ne!(w.see(subject, minute, None), Seen::Refused(100));
            }
            w.expire(minute, 60);
        }
        assert_eq!(w.len(), 100);
        assert!(w.order.len() <= 2 * 100 + 1024 + 1, "{}", w.order.len());
        // The oldest live pair is still found after compaction.
        assert_eq!(w.frees_at(60), Some(599 + 60));
    }
}
