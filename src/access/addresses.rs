//! Where each login is connected from: to notice one account used from
//! two machines at once, or from a second machine soon after the first.
//!
//! Addresses are compared without ports. A session holds a [`Presence`]
//! for its lifetime; when the last session from an address ends, the
//! address is remembered for the longest window a rule may ask about.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest time an address is remembered after its last session.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct Seen {
    ip: IpAddr,
    /// Sessions open from it now.
    open: u32,
    /// When the last one ended (or began).
    last: Instant,
}

/// Another address a login is or was recently connected from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    pub ip: IpAddr,
    /// It still has a session open.
    pub open: bool,
    /// Seconds since its last session ended (0 while open).
    pub ago_secs: u64,
}

#[derive(Debug, Default)]
pub struct Addresses {
    users: DashMap<String, Vec<Seen>>,
}

impl Addresses {
    /// An address other than `ip` that `user` is connected from, or left
    /// less than `within` ago; open ones first.
    pub fn other(&self, user: &str, ip: IpAddr, within: Duration) -> Option<Other> {
        let seen = self.users.get(user)?;
        let mut found: Vec<Other> = seen
            .iter()
            .filter(|s| s.ip != ip && (s.open > 0 || s.last.elapsed() <= within))
            .map(|s| Other {
                ip: s.ip,
                open: s.open > 0,
                ago_secs: if s.open > 0 {
                    0
                } else {
                    s.last.elapsed().as_secs()
                },
            })
            .collect();
        found.sort_by_key(|o| (!o.open, o.ago_secs));
        found.into_iter().next()
    }

    /// `user` is now connected from `ip` until the presence is dropped.
    pub fn arrive(self: &Arc<Self>, user: &str, ip: IpAddr) -> Presence {
        let mut seen = self.users.entry(user.to_string()).or_default();
        seen.retain(|s| s.open > 0 || s.last.elapsed() <= FORGET_AFTER);
        match seen.iter_mut().find(|s| s.ip == ip) {
            Some(s) => {
                s.open += 1;
                s.last = Instant::now();
            }
            None => seen.push(Seen {
                ip,
                open: 1,
                last: Instant::now(),
            }),
        }
        Presence {
            addresses: self.clone(),
            user: user.to_string(),
            ip,
        }
    }
}

/// A session's place in [`Addresses`], released when dropped.
#[derive(Debug)]
pub struct Presence {
    addresses: Arc<Addresses>,
    user: String,
    ip: IpAddr,
}

impl Drop for Presence {
    fn drop(&mut self) {
        if let Some(mut seen) = self.addresses.users.get_mut(&self.user) {
            if let Some(s) = seen.iter_mut().find(|s| s.ip == self.ip) {
                s.open = s.open.saturating_sub(1);
                s.last = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_address_is_seen_while_the_first_is_open_and_for_a_while_after() {
        let a = Arc::new(Addresses::default());
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let first = a.arrive("li", one);
        // The same address again is not a second address.
        assert_eq!(a.other("li", one, Duration::ZERO), None);
        let other = a.other("li", two, Duration::ZERO).unwrap();
        assert_eq!(other.ip, one);
        assert!(other.open);
        // Another user is unaffected.
        assert_eq!(a.other("wu", two, Duration::ZERO), None);
        drop(first);
        assert_eq!(a.other("li", two, Duration::ZERO), None);
        let recent = a.other("li", two, Duration::from_secs(600)).unwrap();
        assert!(!recent.open);
        // Two sessions from one address: one leaving keeps it open.
        let _x = a.arrive("wu", one);
        let y = a.arrive("wu", one);
        drop(y);
        assert!(a.other("wu", two, Duration::ZERO).unwrap().open);
    }
}
