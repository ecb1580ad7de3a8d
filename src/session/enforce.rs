//! Policy decisions on the frontend side of a restricted session.
//!
//! For each statement the session asks [`Enforcer::view`] whether its login
//! is restricted (any role whose access is not all `allow`); if so the
//! statement is analysed ([`crate::analysis`]) against the schema of its
//! database, with results cached per SQL text. A refused statement is
//! never forwarded: in its place the server is asked to raise the refusal
//! itself (a `DO` block raising SQLSTATE 42501), so transaction state,
//! pipelining and the skip-to-Sync of the extended protocol stay exactly as
//! PostgreSQL would leave them.

use super::SessionInfo;
use super::state::SessionState;
use crate::analysis::{self, Analysis, Env, Refusal, Source};
use crate::context::ProxyContext;
use crate::decision::RoleView;
use crate::frame::{begin_message, end_message};
use crate::policy::{Action, Policy, Role};
use bytes::{BufMut, BytesMut};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Most analyses cached per session.
const CACHE_ENTRIES: usize = 1024;
/// A statement naming an unknown relation re-reads the schema at most this
/// often per session.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The session's standing for the next statement.
pub enum Standing {
    /// All `allow`: forwarded untouched.
    FullAccess,
    Restricted(Arc<RoleView>),
    /// Restricted, but nothing can be analysed (no schema, unsafe session
    /// settings): every statement is refused with this message.
    Blocked(String),
}

#[derive(Default)]
pub struct Enforcer {
    view: Option<Arc<RoleView>>,
    cache: HashMap<Arc<str>, Result<Arc<Analysis>, Refusal>>,
    /// Analyses that hold for every text of their shape (literals blanked).
    shapes: HashMap<String, Arc<Analysis>>,
    last_reload: Option<Instant>,
    /// The policy last seen, its generation, and whether it gave this
    /// login full access.
    full_access: Option<(u64, Arc<Policy>, bool)>,
}

impl Enforcer {
    /// The role view the last restricted statement was analysed against.
    pub fn current_view(&self) -> Option<Arc<RoleView>> {
        self.view.clone()
    }

    /// Whether the policy in force is known, without waiting, to give this
    /// login full access.
    pub fn known_full_access(&self, ctx: &ProxyContext) -> bool {
        matches!(&self.full_access, Some((g, _, true)) if *g == ctx.policy.generation())
    }

    /// Decide how the next statement of `info`'s login is treated.
    pub async fn standing(&mut self, ctx: &ProxyContext, info: &SessionInfo) -> Standing {
        let generation = ctx.policy.generation();
        let policy = match &self.full_access {
            Some((g, _, true)) if *g == generation => return Standing::FullAccess,
            Some((g, p, false)) if *g == generation => p.clone(),
            _ => {
                let policy = ctx.policy.current();
                let full = policy.role_of(&info.user).is_full_access();
                self.full_access = Some((generation, policy.clone(), full));
                if full {
                    return Standing::FullAccess;
                }
                policy
            }
        };
        if ctx.audit.as_ref().is_some_and(|a| !a.healthy()) {
            return Standing::Blocked(
                "permission denied by pgwarden: the audit trail cannot be written right now, so \
                 statements of restricted roles are refused until it can"
                    .into(),
            );
        }
        if let Some(bad) = unsafe_settings(info) {
            return Standing::Blocked(bad);
        }
        let schema = match ctx.catalog.schema(&info.database).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, database = %info.database, "cannot read the schema for a restricted session");
                return Standing::Blocked(format!(
                    "permission denied by pgwarden: it cannot read the schema of database {} \
                     right now, so statements of restricted roles are refused",
                    info.database
                ));
            }
        };
        Standing::Restricted(self.view_of(info, policy, schema))
    }

    /// The view of `policy` and `schema`, kept while both stay the same
    /// (and with it the analysis caches).
    fn view_of(
        &mut self,
        info: &SessionInfo,
        policy: Arc<Policy>,
        schema: Arc<crate::catalog::Schema>,
    ) -> Arc<RoleView> {
        let current = self
            .view
            .as_ref()
            .filter(|v| Arc::ptr_eq(&v.policy, &policy) && Arc::ptr_eq(&v.schema, &schema));
        match current {
            Some(v) => v.clone(),
            None => {
                self.cache.clear();
                self.shapes.clear();
                let role = policy.role_of(&info.user);
                let v = Arc::new(RoleView {
                    role: role.name.clone(),
                    observe: role.is_full_access(),
                    policy,
                    schema,
                });
                self.view = Some(v.clone());
                v
            }
        }
    }

    /// For a full-access session with an audit trail and classified
    /// columns: the view its statements are analysed against, only to
    /// record the classified columns they touch (never to refuse them).
    /// `None` when there is nothing to record or the schema cannot be read.
    pub async fn audit_view(
        &mut self,
        ctx: &ProxyContext,
        info: &SessionInfo,
    ) -> Option<Arc<RoleView>> {
        ctx.audit.as_ref()?;
        let policy = ctx.policy.current();
        if policy.classify.is_empty() {
            return None;
        }
        let schema = ctx.catalog.schema(&info.database).await.ok()?;
        Some(self.view_of(info, policy, schema))
    }

    /// Analyse `sql` for a restricted session, cached by text (and by shape
    /// when the analysis does not depend on literal values) unless it
    /// depends on the session's cursors or prepared statements.
    pub async fn analyze(
        &mut self,
        ctx: &ProxyContext,
        info: &SessionInfo,
        view: &Arc<RoleView>,
        state: &SessionState,
        sql: &Arc<str>,
    ) -> Result<Arc<Analysis>, Refusal> {
        if let Some(hit) = self.cache.get(sql) {
            return hit.clone();
        }
        let cacheable = !depends_on_session(sql);
        let shape = if cacheable {
            analysis::shape(sql)
        } else {
            None
        };
        if let Some(hit) = shape.as_ref().and_then(|s| self.shapes.get(s)) {
            // The text passed the lexical checks its shape-mate passed only
            // if it passes them itself.
            analysis::lexcheck::check(sql)?;
            return Ok(hit.clone());
        }
        let mut result = run(view, info, state, sql);
        if let Err(r) = &result {
            let due = self.last_reload.is_none_or(|t| t.elapsed() >= RELOAD_EVERY);
            if r.unknown_name && due {
                // Perhaps created since the schema was read: read it again.
                self.last_reload = Some(Instant::now());
                ctx.catalog.invalidate(&info.database);
                if let Standing::Restricted(v) = self.standing(ctx, info).await {
                    result = run(&v, info, state, sql);
                }
            }
        }
        if let (Some(shape), Ok(a)) = (shape, &result) {
            if a.literal_free() {
                if self.shapes.len() >= CACHE_ENTRIES {
                    self.shapes.clear();
                }
                self.shapes.insert(shape, a.clone());
                return result;
            }
        }
        if cacheable {
            if self.cache.len() >= CACHE_ENTRIES {
                self.cache.clear();
            }
            self.cache.insert(sql.clone(), result.clone());
        }
        result
    }
}

fn run(
    view: &RoleView,
    info: &SessionInfo,
    state: &SessionState,
    sql: &str,
) -> Result<Arc<Analysis>, Refusal> {
    let real = view.policy.role_of(&info.user);
    let env = Env {
        policy: &view.policy,
        role: real,
        schema: &view.schema,
        user: &info.user,
        session: state,
        observe: false,
        text: None,
    };
    // Observing, every classified column is followed as if masked (an
    // allowed one leaves no trace in the analysis); the real actions are
    // put back on the columns found.
    let observer = Role {
        wildcard: Some(Action::Mask),
        access: Default::default(),
        lookup: crate::policy::Lookup::Equality,
        ..real.clone()
    };
    let observe = Env {
        role: &observer,
        observe: true,
        ..env
    };
    let with_real_actions = |set: &BTreeSet<Source>| -> BTreeSet<Source> {
        set.iter()
            .map(|s| Source {
                action: real.action(&s.kind),
                ..s.clone()
            })
            .collect()
    };
    if view.observe {
        let mut a = analysis::analyze(sql, &observe)?;
        for st in &mut a.statements {
            st.touched = Arc::new(with_real_actions(&st.touched));
        }
        return Ok(Arc::new(a));
    }
    let mut a = analysis::analyze(sql, &env)?;
    let allows_some =
        real.wildcard == Some(Action::Allow) || real.access.values().any(|a| *a == Action::Allow);
    if allows_some {
        // Allowed classified columns count too (for the trail and the
        // volume limits): found by a second, observing analysis.
        if let Ok(o) = analysis::analyze(sql, &observe) {
            for (st, seen) in a.statements.iter_mut().zip(&o.statements) {
                let allowed: Vec<Source> = with_real_actions(&seen.touched)
                    .into_iter()
                    .filter(|s| s.action == Action::Allow)
                    .collect();
                if !allowed.is_empty() {
                    let mut set = (*st.touched).clone();
                    set.extend(allowed);
                    st.touched = Arc::new(set);
                }
            }
        }
    }
    Ok(Arc::new(a))
}

/// FETCH, EXECUTE and statements after a DECLARE or PREPARE in the same
/// text read session state: their analysis is not cached by text alone.
fn depends_on_session(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    ["fetch", "execute", "declare", "prepare", "move"]
        .iter()
        .any(|k| lower.contains(k))
}

/// Session settings under which pgwarden's reading of SQL text or values
/// could differ from the server's.
fn unsafe_settings(info: &SessionInfo) -> Option<String> {
    if info.text_as_read() {
        return None;
    }
    let enc = info.parameter("client_encoding").unwrap_or_default();
    if !enc.eq_ignore_ascii_case("UTF8") {
        return Some(format!(
            "permission denied by pgwarden: client_encoding {enc} is refused for restricted \
             roles; connect with client_encoding UTF8"
        ));
    }
    let scs = info
        .parameter("standard_conforming_strings")
        .unwrap_or_default();
    if scs != "on" {
        return Some(
            "permission denied by pgwarden: standard_conforming_strings must be on for \
             restricted roles"
                .into(),
        );
    }
    None
}

/// SQL that makes the server raise `message` as SQLSTATE 42501.
pub fn refusal_sql(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| match c {
            '\'' => '"',
            '\\' | '$' => ' ',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect();
    format!(
        "DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = '{clean}'; END$pgwarden$"
    )
}

fn put_frame(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = begin_message(out, tag);
    body(out);
    end_message(out, start);
}

/// A simple Query raising the refusal.
pub fn refusal_query(message: &str, out: &mut BytesMut) {
    let sql = refusal_sql(message);
    put_frame(out, b'Q', |b| {
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
    });
}

/// Parse, Bind and Execute of the unnamed statement raising the refusal,
/// in place of a refused Parse.
pub fn refusal_extended(message: &str, out: &mut BytesMut) {
    let sql = refusal_sql(message);
    put_frame(out, b'P', |b| {
        b.put_u8(0);
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
        b.put_i16(0);
    });
    put_frame(out, b'B', |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
    put_frame(out, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
}

/// A simple Query of `sql` (a rewritten statement).
pub fn query_message(sql: &str, out: &mut BytesMut) {
    put_frame(out, b'Q', |b| {
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
    });
}

/// A Parse of `sql` (a rewritten statement) as statement `name`.
pub fn parse_message(name: &str, sql: &str, type_oids: &[u32], out: &mut BytesMut) {
    put_frame(out, b'P', |b| {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
        b.put_i16(type_oids.len() as i16);
        for t in type_oids {
            b.put_u32(*t);
        }
    });
}

/// Bind of the unnamed portal to statement `name` with text parameters
/// and text results, then Describe, Execute (all rows) and Sync: a
/// prepared statement run as one simple Query would be.
pub fn run_prepared_messages(name: &str, values: &[impl AsRef<str>], out: &mut BytesMut) {
    put_frame(out, b'B', |b| {
        b.put_u8(0);
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(values.len() as i16);
        for v in values {
            let v = v.as_ref().as_bytes();
            b.put_i32(v.len() as i32);
            b.put_slice(v);
        }
        b.put_i16(0);
    });
    put_frame(out, b'D', |b| b.put_slice(b"P\0"));
    put_frame(out, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    sync_message(out);
}

/// Close of prepared statement `name`.
pub fn close_statement_message(name: &str, out: &mut BytesMut) {
    put_frame(out, b'C', |b| {
        b.put_u8(b'S');
        b.put_slice(name.as_bytes());
        b.put_u8(0);
    });
}

pub fn sync_message(out: &mut BytesMut) {
    put_frame(out, b'S', |_| {});
}

/// Log a refusal.
pub fn log_refusal(info: &SessionInfo, sql: &str, r: &Refusal) {
    info!(session = %info.id, user = %info.user, sql = %sql, reason = %r.message, "statement refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_text_cannot_break_out() {
        let s = refusal_sql("column x' ; drop table t; -- $pgwarden$ \\ 张");
        assert!(s.ends_with("END$pgwarden$"));
        assert_eq!(s.matches("$pgwarden$").count(), 2);
        assert_eq!(s.matches('\'').count(), 4);
        assert!(!s.contains('\\'));
    }
}
