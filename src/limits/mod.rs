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

pub mod lookups;
pub mod subjects;
pub mod window;

use crate::alerts::{Alert, Alerts};
use crate::fastmap::FastDashMap;
use crate::policy::{OnExceed, Role};
use crate::session::SessionInfo;
use std::sync::Arc;
use subjects::{Seen, SubjectWindow};
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
    /// The role and limit the window was last checked against.
    role: String,
    limit: u64,
}

/// The distinct subjects of one user, with the budget last applied.
#[derive(Default)]
struct SubjectState {
    window: SubjectWindow,
    role: String,
    budget: Option<crate::policy::SubjectBudget>,
}

pub struct Limiter {
    users: FastDashMap<String, UserState>,
    subjects: FastDashMap<String, SubjectState>,
    lookups: FastDashMap<String, lookups::LookupState>,
    /// The key of probed values' hashes, drawn at start.
    probe_key: std::collections::hash_map::RandomState,
    /// Ids for probes whose value is not known.
    fresh_probes: std::sync::atomic::AtomicU64,
    pub alerts: Arc<Alerts>,
}

/// A user refused by a spent window, as `pgwarden admin blocks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Block {
    pub user: String,
    pub role: String,
    pub rule: &'static str,
    /// Rows or distinct subjects in the window, and the limit.
    pub count: u64,
    pub limit: u64,
    /// When the window has room again (RFC 3339).
    pub until: String,
}

fn minute_text(minute: u64, format: &str) -> String {
    jiff::Timestamp::from_second((minute * 60) as i64)
        .map(|t| t.strftime(format).to_string())
        .unwrap_or_default()
}

/// The state of `user`, created empty on first use. Looked up before
/// inserting, so the name is copied only the first time, not on every row
/// or statement.
fn user_entry<'a, V: Default>(
    map: &'a FastDashMap<String, V>,
    user: &str,
) -> dashmap::mapref::one::RefMut<'a, String, V> {
    match map.get_mut(user) {
        Some(s) => s,
        None => map.entry(user.to_string()).or_default(),
    }
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
            users: FastDashMap::default(),
            subjects: FastDashMap::default(),
            lookups: FastDashMap::default(),
            probe_key: Default::default(),
            fresh_probes: Default::default(),
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
        let at = minute_text(frees, "%H:%M UTC");
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
            let mut s = user_entry(&self.users, &info.user);
            s.window.add(now, rows);
            if s.role != role.name {
                s.role = role.name.clone();
            }
            // Only a blocking window shows up as a block.
            s.limit = if role.limits.on_exceed == OnExceed::Block {
                limit
            } else {
                0
            };
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

    /// Whether a result of this role counts distinct subjects.
    pub fn counts_subjects(role: &Role) -> bool {
        role.limits.distinct_subjects.is_some()
    }

    /// A row of a classified result showed `subject` to the user: count
    /// it, alert at the role's alert threshold (once per crossing), and
    /// past its block threshold refuse rows of new subjects.
    pub fn see_subject(&self, role: &Role, info: &SessionInfo, subject: u64) -> Result<(), String> {
        let Some(budget) = role.limits.distinct_subjects else {
            return Ok(());
        };
        let now = minute_now();
        let window = u64::from(budget.window_minutes);
        let (seen, alert_now, frees) = {
            let mut s = user_entry(&self.subjects, &info.user);
            if s.role != role.name {
                s.role = role.name.clone();
            }
            s.budget = Some(budget);
            s.window.expire(now, window);
            let seen = s.window.see(subject, now, budget.block);
            let mut alert_now = false;
            if let Seen::New(n) = seen {
                match budget.alert {
                    Some(a) if n as u64 >= a && !s.window.alerted => {
                        s.window.alerted = true;
                        alert_now = true;
                    }
                    Some(a) if (n as u64) < a => s.window.alerted = false,
                    _ => {}
                }
            }
            let frees = match seen {
                Seen::Refused(_) => s.window.frees_at(window),
                _ => None,
            };
            (seen, alert_now, frees)
        };
        let evidence = |n: usize| {
            serde_json::json!({
                "subjects": n,
                "window_minutes": budget.window_minutes,
                "alert": budget.alert,
                "block": budget.block,
            })
        };
        match seen {
            Seen::Again => Ok(()),
            Seen::New(n) => {
                if alert_now {
                    self.alerts.raise(Alert::of(
                        "distinct_subjects",
                        info.login(),
                        role,
                        evidence(n),
                        false,
                    ));
                }
                Ok(())
            }
            Seen::Refused(n) => {
                self.alerts.raise(Alert::of(
                    "distinct_subjects",
                    info.login(),
                    role,
                    evidence(n),
                    true,
                ));
                let until = frees
                    .map(|m| minute_text(m, "%H:%M UTC"))
                    .unwrap_or_default();
                Err(format!(
                    "permission denied by pgwarden: user {} has seen {n} distinct data subjects in the last {} minutes, \
                     the distinct_subjects block limit of role {}; rows of other subjects are refused until {until}",
                    info.user, budget.window_minutes, role.name
                ))
            }
        }
    }

    /// Users whose hourly window or subject budget is spent now.
    pub fn blocks(&self) -> Vec<Block> {
        let now = minute_now();
        let mut out = Vec::new();
        for e in self.users.iter() {
            let used = e.window.sum(now);
            if e.limit > 0 && used >= e.limit {
                let frees = e
                    .window
                    .frees_at(now, used + 1 - e.limit)
                    .unwrap_or(now + 60);
                out.push(Block {
                    user: e.key().clone(),
                    role: e.role.clone(),
                    rule: "classified_rows_per_hour",
                    count: used,
                    limit: e.limit,
                    until: minute_text(frees, "%Y-%m-%dT%H:%M:00Z"),
                });
            }
        }
        for mut e in self.subjects.iter_mut() {
            let Some(b) = e.budget else { continue };
            let Some(limit) = b.block else { continue };
            e.window.expire(now, u64::from(b.window_minutes));
            let n = e.window.len() as u64;
            if n >= limit {
                let frees = e
                    .window
                    .frees_at(u64::from(b.window_minutes))
                    .unwrap_or(now);
                out.push(Block {
                    user: e.key().clone(),
                    role: e.role.clone(),
                    rule: "distinct_subjects",
                    count: n,
                    limit,
                    until: minute_text(frees, "%Y-%m-%dT%H:%M:00Z"),
                });
            }
        }
        out.extend(self.lookup_blocks());
        out.sort_by(|a, b| (&a.user, a.rule).cmp(&(&b.user, b.rule)));
        out
    }

    /// Lift the blocks of `user` (one rule, or all): their windows start
    /// afresh. Returns the rules lifted.
    pub fn lift(&self, user: &str, rule: Option<&str>) -> Vec<&'static str> {
        let mut lifted = Vec::new();
        if rule.is_none_or(|r| r == "classified_rows_per_hour") {
            if let Some(mut s) = self.users.get_mut(user) {
                s.window = Window::default();
                s.alerted = false;
                lifted.push("classified_rows_per_hour");
            }
        }
        if rule.is_none_or(|r| r == "distinct_subjects") {
            if let Some(mut s) = self.subjects.get_mut(user) {
                s.window.clear();
                lifted.push("distinct_subjects");
            }
        }
        if rule.is_none_or(|r| r == "lookups_per_hour") && self.lift_lookups(user) {
            lifted.push("lookups_per_hour");
        }
        lifted
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
            info.login(),
            role,
            evidence,
            blocked,
        ));
    }
}
