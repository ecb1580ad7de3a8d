//! What a session writes to the audit trail: the records of its
//! connection, each statement and its end, built from the session's
//! identity and the statement the tracker completed.

use super::SessionInfo;
use crate::analysis::Source;
use crate::audit::{ColumnUse, Record};
use crate::backend::tracker::{Completed, Params, Statement};
use crate::context::ProxyContext;
use crate::frontend::extended::Bind;
use crate::masking::hash::HashKey;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The `columns` of the last statement recorded, kept while its analysis
/// is: executions of one prepared statement (or one cached shape) share
/// the set of columns they touch, and so share its audit form.
#[derive(Default)]
pub struct Columns(Option<Listed>);

/// A set of touched columns (held, so its address stays its own) and
/// its audit form.
struct Listed {
    touched: Arc<BTreeSet<Source>>,
    columns: Arc<[ColumnUse]>,
}

impl Columns {
    fn of(&mut self, touched: &Arc<BTreeSet<Source>>) -> Arc<[ColumnUse]> {
        match &self.0 {
            Some(l) if Arc::ptr_eq(&l.touched, touched) => l.columns.clone(),
            _ => {
                let c: Arc<[ColumnUse]> = touched
                    .iter()
                    .map(|s| ColumnUse {
                        table: s.table.to_string(),
                        column: s.column.clone(),
                        kind: s.kind.clone(),
                        action: s.action.to_string(),
                    })
                    .collect();
                self.0 = Some(Listed {
                    touched: touched.clone(),
                    columns: c.clone(),
                });
                c
            }
        }
    }
}

/// A record of `event` carrying the session's identity.
pub fn session_record(ctx: &ProxyContext, info: &SessionInfo, event: &str) -> Record {
    let policy = ctx.policy.current();
    let mut r = Record::new(event);
    r.session = Some(info.id_text.clone());
    r.user = Some(info.user.clone());
    r.role = Some(policy.role_of(&info.user).name.clone());
    r.client = Some(info.client_text.clone());
    r.database = Some(info.database.clone());
    if !info.application_name.is_empty() {
        r.application_name = Some(info.application_name.clone());
    }
    r
}

/// The `query_start` (results about to flow before completion) or
/// `query` (completed) record of the `index`-th statement of `st`.
fn statement_record(
    ctx: &ProxyContext,
    info: &SessionInfo,
    columns: &mut Columns,
    event: &str,
    st: &Statement,
    index: usize,
) -> Record {
    let mut r = session_record(ctx, info, event);
    r.sql = Some(st.sql.to_string());
    r.protocol = Some(if st.extended { "extended" } else { "simple" }.into());
    if !st.extended && index > 0 {
        r.statement = Some(index as u32);
    }
    r.params = st.params.as_ref().map(|p| p.to_vec());
    r.decision = Some(st.outcome(index).into());
    if let Some(t) = st.touched(index) {
        r.columns = columns.of(t);
    }
    if let Some(m) = &st.refusal {
        r.message = Some(m.to_string());
    }
    r
}

/// Results of `st` start flowing before it completed.
pub fn started(
    ctx: &ProxyContext,
    info: &SessionInfo,
    columns: &mut Columns,
    st: &Statement,
    index: usize,
) -> Record {
    statement_record(ctx, info, columns, "query_start", st, index)
}

/// A statement completed (or failed).
pub fn completed(
    ctx: &ProxyContext,
    info: &SessionInfo,
    columns: &mut Columns,
    done: &Completed<'_>,
) -> Record {
    let mut r = statement_record(ctx, info, columns, "query", &done.statement, done.index);
    r.tag = done.tag.map(str::to_string);
    r.rows = Some(done.rows);
    r.bytes = Some(done.bytes);
    r.duration_ms = Some((done.duration.as_secs_f64() * 1e6).round() / 1e3);
    r.sqlstate = done.sqlstate.clone();
    r
}

/// Bind parameters as recorded: text as sent (binary values too when they
/// are printable UTF-8, as binary `text` values are), other binary values
/// as `\x` hex, or
/// (`[audit] hash_parameters`) the keyed pseudonym of the bytes, the same
/// the `hash` action shows, so a looked-up value can be matched.
pub fn bind_params(b: &Bind<'_>, hash: Option<&HashKey>) -> Params {
    b.params()
        .enumerate()
        .map(|(i, p)| {
            let p = p?;
            if let Some(k) = hash {
                return Some(k.pseudonym(p));
            }
            let printable = |s: &str| {
                !s.chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            };
            Some(match (b.param_format(i), std::str::from_utf8(p)) {
                (0, Ok(s)) => s.to_string(),
                (_, Ok(s)) if printable(s) => s.to_string(),
                _ => {
                    let mut s = String::from("\\x");
                    crate::hex::push(&mut s, p);
                    s
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, QualifiedTable};

    fn touched(column: &str) -> Arc<BTreeSet<Source>> {
        Arc::new(BTreeSet::from([Source {
            table: QualifiedTable {
                schema: "public".into(),
                table: "customers".into(),
            },
            column: column.into(),
            kind: "phone".into(),
            action: Action::Mask,
        }]))
    }

    #[test]
    fn columns_are_listed_once_per_analysis() {
        let mut cache = Columns::default();
        let phone = touched("phone");
        let first = cache.of(&phone);
        assert_eq!(
            first[..],
            [ColumnUse {
                table: "public.customers".into(),
                column: "phone".into(),
                kind: "phone".into(),
                action: "mask".into(),
            }]
        );
        // The same analysis again: the same list, not a copy.
        assert!(Arc::ptr_eq(&first, &cache.of(&phone)));
        // Another analysis, even with equal content, is listed anew.
        let other = cache.of(&touched("mobile"));
        assert_eq!(other[0].column, "mobile");
        assert!(!Arc::ptr_eq(&first, &cache.of(&touched("phone"))));
    }
}
