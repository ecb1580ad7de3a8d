//! `lookups_per_hour`: the distinct values one user compared classified
//! columns with in the last hour, across all their sessions.
//!
//! An equality lookup answers one guess; a patient insider who knows
//! `138****5678` from the mask needs up to 10,000 guesses to learn the
//! hidden digits. Each distinct (kind, value) pair a user probes counts
//! once per sliding hour: looking the same customer up again while
//! handling a case costs nothing, ten thousand candidates cost ten
//! thousand. A statement that would take the window past the limit is
//! refused before it runs (`on_exceed: block`), so a refused statement
//! learns nothing and spends nothing.
//!
//! Values are kept only as 64-bit keyed hashes (a key drawn at start),
//! never as they are.

use super::subjects::SubjectWindow;
use super::window::minute_now;
use super::{Limiter, minute_text, user_entry};
use crate::alerts::Alert;
use crate::policy::{OnExceed, Role};
use crate::session::SessionInfo;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::Ordering;

/// The sliding window, in minutes.
pub const WINDOW_MINUTES: u64 = 60;

/// One user's probed values, with the limit last applied.
#[derive(Default)]
pub(super) struct LookupState {
    window: SubjectWindow,
    role: String,
    /// The blocking limit (0: the role only alerts).
    limit: u64,
}

/// A probed value, as [`Limiter::lookups`] counts it.
pub enum Probe<'v> {
    /// A value pgwarden read: its kind and bytes.
    Value(&'v str, &'v [u8]),
    /// A value pgwarden cannot read before it runs: a new lookup.
    Unknown,
}

impl Limiter {
    /// The id of one probe: a keyed hash of kind and value, or a fresh id.
    fn probe_id(&self, p: &Probe<'_>) -> u64 {
        let mut h = self.probe_key.build_hasher();
        match p {
            Probe::Value(kind, value) => {
                kind.hash(&mut h);
                value.hash(&mut h);
            }
            Probe::Unknown => {
                u8::MAX.hash(&mut h);
                self.fresh_probes
                    .fetch_add(1, Ordering::Relaxed)
                    .hash(&mut h);
            }
        }
        h.finish()
    }

    /// A statement of `role` probes these values: count the new ones in
    /// the user's hour. With `on_exceed: block`, a statement that would
    /// take the hour past the limit is refused and counts nothing; the
    /// crossing raises one alert.
    pub fn lookups<'v>(
        &self,
        role: &Role,
        info: &SessionInfo,
        probes: impl Iterator<Item = Probe<'v>>,
    ) -> Result<(), String> {
        let Some(limit) = role.limits.lookups_per_hour else {
            return Ok(());
        };
        let mut ids: Vec<u64> = probes.map(|p| self.probe_id(&p)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        let block = role.limits.on_exceed == OnExceed::Block;
        let now = minute_now();
        let (used, new, frees) = {
            let mut s = user_entry(&self.lookups, &info.user);
            if s.role != role.name {
                s.role = role.name.clone();
            }
            s.limit = if block { limit } else { 0 };
            s.window.expire(now, WINDOW_MINUTES);
            let used = s.window.len() as u64;
            let new = ids.iter().filter(|&&id| !s.window.contains(id)).count() as u64;
            if block && used + new > limit {
                (used, new, s.window.frees_at(WINDOW_MINUTES))
            } else {
                for &id in &ids {
                    s.window.see(id, now, None);
                }
                let crossed = used < limit && used + new >= limit;
                if !crossed {
                    return Ok(());
                }
                (used + new, 0, None)
            }
        };
        let evidence = serde_json::json!({
            "limit": limit,
            "lookups_last_hour": used,
            "new_lookups": new,
        });
        let refused = new > 0;
        self.alerts.raise(Alert::of(
            "lookups_per_hour",
            info.login(),
            role,
            evidence,
            refused,
        ));
        if !refused {
            return Ok(());
        }
        let at = frees
            .map(|m| minute_text(m, "%H:%M UTC"))
            .unwrap_or_default();
        Err(format!(
            "permission denied by pgwarden: user {} has looked up {used} distinct values of \
             classified columns in the last hour and this statement looks up {new} more; the \
             lookups_per_hour limit of role {} is {limit}; new lookups are refused until {at}",
            info.user, role.name
        ))
    }

    /// The users whose lookup hour is spent.
    pub(super) fn lookup_blocks(&self) -> Vec<super::Block> {
        let now = minute_now();
        let mut out = Vec::new();
        for mut e in self.lookups.iter_mut() {
            if e.limit == 0 {
                continue;
            }
            e.window.expire(now, WINDOW_MINUTES);
            let n = e.window.len() as u64;
            if n >= e.limit {
                let frees = e.window.frees_at(WINDOW_MINUTES).unwrap_or(now);
                out.push(super::Block {
                    user: e.key().clone(),
                    role: e.role.clone(),
                    rule: "lookups_per_hour",
                    count: n,
                    limit: e.limit,
                    until: minute_text(frees, "%Y-%m-%dT%H:%M:00Z"),
                });
            }
        }
        out
    }

    /// Forget the lookups of `user`; whether there were any.
    pub(super) fn lift_lookups(&self, user: &str) -> bool {
        match self.lookups.get_mut(user) {
            Some(mut s) => {
                s.window.clear();
                true
            }
            None => false,
        }
    }
}
