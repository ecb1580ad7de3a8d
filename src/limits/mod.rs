//! Volume limits per role: `rows_per_query` (a cap on the classified rows
//! one statement may return) and `classified_rows_per_hour` (a sliding
//! window per user, across all their sessions).
//!
//! The frontend asks [`Limiter::admit`] before a classified statement of a
//! limited role runs: with `on_exceed: block` and the hour spent, it is
//! refused. The backend asks [`Limiter::cap`] when rows start flowing: the
//! statement is cut at the smaller of `rows_per_query` and what the hour
//! has left. Completed statements add their classified rows with
//! [`Limiter::record`]. Every crossing raises an alert once.

pub mod window;

use crate::alerts::{Alert, Alerts};
use crate::policy::{OnExceed, Role};
use crate::session::SessionInfo;
use dashmap::DashMap;
use std::sync::Arc;
use window::{Window, minute_now};

/// How many classified rows a statement may return, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub rows: u64,
    pub rule: &'static str,
    /// Cut the result there (`on_exceed: block`), or only alert.
    pub block: bool,
}

#[derive(Default)]
struct UserState {
    window: Window,
    /// An alert was raised for this crossing of the hourly limit.
    alerted: bool,
}

pub struct Limiter {
    users: DashMap<String, UserState>,
    pub alerts: Arc<Alerts>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("users", &self.users.len())
            .finish()
    }
}

impl Limiter {
    pub fn new(alerts: Arc<Alerts>) -> Limiter {
        Limiter {
            users: DashMap::new(),
            alerts,
        }
    }

    fn hour_spent(&self, user: &str, limit: u64) -> Option<(u64, u64)> {
        let now = minute_now();
        let s = self.users.get(user)?;
        let used = s.window.sum(now);
        (used >= limit).then(|| {
            let frees = s.window.frees_at(now, used + 1 - limit).unwrap_or(now + 60);
            (used, frees)
        })
    }

    /// Whether a statement touching classified columns may start. With
    /// `on_exceed: block` and the hourly window spent: the refusal.
    pub fn admit(&self, role: &Role, info: &SessionInfo) -> Result<(), String> {
        let Some(limit) = role.limits.classified_rows_per_hour else {
            return Ok(());
        };
        if role.limits.on_exceed != OnExceed::Block {
            return Ok(());
        }
        let Some((used, frees)) = self.hour_spent(&info.user, limit) else {
            return Ok(());
        };
        let at = jiff::Timestamp::from_second((frees * 60) as i64)
            .map(|t| t.strftime("%H:%M UTC").to_string())
            .unwrap_or_default();
        self.hourly_alert(
            role,
            info,
            serde_json::json!({ "limit": limit, "rows_last_hour": used, "refused_until": at }),
            true,
        );
        Err(format!(
            "permission denied by pgwarden: user {} has read {used} classified rows in the last hour, \
             the classified_rows_per_hour limit of role {} is {limit}; classified queries are refused until {at}",
            &info.user, role.name
        ))
    }

    /// The cap on the classified rows of one result, if any; `already`:
    /// rows earlier FETCHes or Executes of the same cursor or portal
    /// returned.
    pub fn cap(&self, role: &Role, user: &str, already: u64) -> Option<Cap> {
        let l = &role.limits;
        let block = l.on_exceed == OnExceed::Block;
        let mut cap = l.rows_per_query.map(|rows| Cap {
            rows: rows.saturating_sub(already),
            rule: "rows_per_query",
            block,
        });
        if let (Some(limit), true) = (l.classified_rows_per_hour, block) {
            let used = self
                .users
                .get(user)
                .map(|s| s.window.sum(minute_now()))
                .unwrap_or(0);
            let left = limit.saturating_sub(used);
            if cap.is_none_or(|c| left < c.rows) {
                cap = Some(Cap {
                    rows: left,
                    rule: "classified_rows_per_hour",
                    block,
                });
            }
        }
        cap
    }

    /// Add the classified rows a statement returned; alert when this
    /// crosses the hourly limit (once per crossing).
    pub fn record(&self, role: &Role, info: &SessionInfo, rows: u64) {
        let Some(limit) = role.limits.classified_rows_per_hour else {
            return;
        };
        let now = minute_now();
        let crossed = {
            let mut s = self.users.entry(info.user.clone()).or_default();
            s.window.add(now, rows);
            let used = s.window.sum(now);
            if used < limit {
                s.alerted = false;
                None
            } else if !s.alerted {
                s.alerted = true;
                Some(used)
            } else {
                None
            }
        };
        if let Some(used) = crossed {
            self.hourly_alert(
                role,
                info,
                serde_json::json!({ "limit": limit, "rows_last_hour": used }),
                role.limits.on_exceed == OnExceed::Block,
            );
        }
    }

    fn hourly_alert(
        &self,
        role: &Role,
        info: &SessionInfo,
        evidence: serde_json::Value,
        blocked: bool,
    ) {
        self.alerts.raise(Alert::of(
            "classified_rows_per_hour",
            info,
            role,
            evidence,
            blocked,
        ));
    }
}
