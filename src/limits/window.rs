//! A sliding one-hour window of counts in one-minute buckets.

/// Buckets in the window (one a minute).
const BUCKETS: usize = 60;

/// Counts of the last hour, at one-minute resolution.
#[derive(Debug, Clone)]
pub struct Window {
    counts: [u64; BUCKETS],
    /// The minute each bucket holds.
    minutes: [u64; BUCKETS],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            counts: [0; BUCKETS],
            minutes: [u64::MAX; BUCKETS],
        }
    }
}

impl Window {
    /// Add `n` at minute `now` (minutes since the epoch).
    pub fn add(&mut self, now: u64, n: u64) {
        let i = (now % BUCKETS as u64) as usize;
        if self.minutes[i] != now {
            self.minutes[i] = now;
            self.counts[i] = 0;
        }
        self.counts[i] += n;
    }

    /// The total of the 60 minutes up to and including `now`.
    pub fn sum(&self, now: u64) -> u64 {
        (0..BUCKETS)
            .filter(|&i| {
                self.minutes[i] != u64::MAX && self.minutes[i] <= now && now - self.minutes[i] < 60
            })
            .map(|i| self.counts[i])
            .sum()
    }

    /// The minute at which the total will have dropped by at least `need`
    /// (when the window will allow that many more), if it ever will.
    pub fn frees_at(&self, now: u64, need: u64) -> Option<u64> {
        let mut live: Vec<(u64, u64)> = (0..BUCKETS)
            .filter(|&i| {
                self.minutes[i] != u64::MAX && self.minutes[i] <= now && now - self.minutes[i] < 60
            })
            .map(|i| (self.minutes[i], self.counts[i]))
            .collect();
        live.sort();
        let mut freed = 0;
        for (m, c) in live {
            freed += c;
            if freed >= need {
                return Some(m + 60);
            }
        }
        None
    }
}

/// Minutes since the epoch, now.
pub fn minute_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_after_an_hour() {
        let mut w = Window::default();
        w.add(1000, 5);
        w.add(1010, 7);
        assert_eq!(w.sum(1010), 12);
        assert_eq!(w.sum(1059), 12);
        assert_eq!(w.sum(1060), 7);
        assert_eq!(w.sum(1070), 0);
        assert_eq!(w.frees_at(1010, 3), Some(1060));
        assert_eq!(w.frees_at(1010, 6), Some(1070));
        assert_eq!(w.frees_at(1010, 13), None);
        // A bucket reused an hour later starts from zero.
        w.add(1060, 1);
        assert_eq!(w.sum(1060), 8);
    }
}
