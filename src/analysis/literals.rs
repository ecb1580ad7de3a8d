//! The constants of a statement that may become bind parameters.
//!
//! A restricted SELECT sent by the simple protocol reaches the server as
//! its rewrite, whose mask expressions the server would parse and plan
//! again for every lookup. Sent instead as a server-side prepared
//! statement with the constants as parameters, it is parsed and planned
//! once per session and shape (see `session::prepared`). Only constants
//! a parameter stands for exactly are taken: standard string constants
//! (sent as parameters of unspecified type, which the server infers from
//! their place as it does for the literal) and integers that fit `int4`
//! (the type the server gives such a literal). Everything else stays
//! written in the text: constants under `INTERVAL` or a typed string
//! (where the grammar wants a literal), and anything inside ORDER BY,
//! GROUP BY or DISTINCT ON (where an integer names an output column).

use crate::rewrite::Offsets;
use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, OrderByKind, Query, Select, SetExpr, Spanned, Statement, Value,
    Visit, Visitor,
};
use std::ops::{ControlFlow, Range};

/// A constant a parameter may stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// Its bytes in the text (the same in every text of a shape).
    pub range: Range<usize>,
    /// An integer (`int4`); otherwise a standard string constant.
    pub int: bool,
}

/// The constants of `st` that may become parameters, or `None` when the
/// statement is not one pgwarden runs as a prepared statement: anything
/// but a plain query, `SELECT ... INTO`, a data-modifying WITH, a text
/// with `$n` already in it (a simple Query may not have parameters).
pub fn parameters(st: &Statement, offsets: &Offsets<'_>) -> Option<Vec<Literal>> {
    let Statement::Query(q) = st else {
        return None;
    };
    if !plain(q) {
        return None;
    }
    let mut c = Collect {
        offsets,
        literals: Vec::new(),
        positional: Vec::new(),
        literal_only: 0,
    };
    if st.visit(&mut c).is_break() {
        return None;
    }
    let Collect {
        mut literals,
        positional,
        ..
    } = c;
    literals.retain(|l| {
        !positional
            .iter()
            .any(|p| p.start <= l.range.start && l.range.end <= p.end)
    });
    literals.sort_by_key(|l| l.range.start);
    literals.dedup();
    Some(literals)
}

/// A query that only reads: no `INTO`, no data-modifying WITH, no
/// locking clause other queries would wait on differently.
fn plain(q: &Query) -> bool {
    let with_ok = q
        .with
        .as_ref()
        .is_none_or(|w| w.cte_tables.iter().all(|c| plain(&c.query)));
    with_ok && body_plain(&q.body)
}

fn body_plain(b: &SetExpr) -> bool {
    match b {
        SetExpr::Select(s) => s.into.is_none(),
        SetExpr::Query(q) => plain(q),
        SetExpr::SetOperation { left, right, .. } => body_plain(left) && body_plain(right),
        SetExpr::Values(_) => true,
        _ => false,
    }
}

struct Collect<'o, 's> {
    offsets: &'o Offsets<'s>,
    literals: Vec<Literal>,
    /// Ranges whose constants stay written (ORDER BY, GROUP BY, DISTINCT ON).
    positional: Vec<Range<usize>>,
    /// Inside an INTERVAL or typed string.
    literal_only: usize,
}

impl Collect<'_, '_> {
    fn keep(&mut self, e: &Expr) -> ControlFlow<()> {
        match self.offsets.range(e.span()) {
            Some(r) => {
                self.positional.push(r);
                ControlFlow::Continue(())
            }
            // Without its place, nothing in the statement may move.
            None => ControlFlow::Break(()),
        }
    }
}

fn grammar_wants_a_literal(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Interval(_) | Expr::TypedString(_) | Expr::Prefixed { .. }
    )
}

impl Visitor for Collect<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(o) = &q.order_by {
            match &o.kind {
                OrderByKind::Expressions(items) => {
                    for i in items {
                        self.keep(&i.expr)?;
                    }
                }
                OrderByKind::All(_) => return ControlFlow::Break(()),
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        match &s.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                for e in exprs {
                    self.keep(e)?;
                }
            }
            GroupByExpr::All(_) => return ControlFlow::Break(()),
        }
        if let Some(Distinct::On(exprs)) = &s.distinct {
            for e in exprs {
                self.keep(e)?;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if grammar_wants_a_literal(e) {
            self.literal_only += 1;
            return ControlFlow::Continue(());
        }
        let Expr::Value(v) = e else {
            return ControlFlow::Continue(());
        };
        let int = match &v.value {
            Value::Placeholder(_) => return ControlFlow::Break(()),
            Value::SingleQuotedString(_) => false,
            Value::Number(..) => true,
            _ => return ControlFlow::Continue(()),
        };
        if self.literal_only > 0 {
            return ControlFlow::Continue(());
        }
        let Some(range) = self.offsets.range(e.span()) else {
            return ControlFlow::Break(());
        };
        self.literals.push(Literal { range, int });
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if grammar_wants_a_literal(e) {
            self.literal_only -= 1;
        }
        ControlFlow::Continue(())
    }
}

/// The value a parameter for `lit` carries in `sql` (a text of the shape
/// analysed), or `None` when this text's constant must stay written: a
/// string with a backslash or made of several quoted parts, an integer
/// beyond `int4`.
pub fn value<'s>(sql: &'s str, lit: &Literal) -> Option<std::borrow::Cow<'s, str>> {
    let token = sql.get(lit.range.clone())?;
    if lit.int {
        if !token.bytes().all(|b| b.is_ascii_digit()) || token.parse::<i32>().is_err() {
            return None;
        }
        return Some(token.into());
    }
    let body = token.strip_prefix('\'')?.strip_suffix('\'')?;
    if body.contains('\\') || !quotes_doubled(body) {
        return None;
    }
    Some(super::constant(token))
}

/// Every quote in `body` is one of a doubled pair (one string constant,
/// not several written next to each other).
fn quotes_doubled(body: &str) -> bool {
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' {
            if b.get(i + 1) != Some(&b'\'') {
                return false;
            }
            i += 1;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn taken(sql: &str) -> Option<Vec<String>> {
        let st = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let offsets = Offsets::new(sql);
        let lits = parameters(&st[0], &offsets)?;
        Some(
            lits.iter()
                .map(|l| match value(sql, l) {
                    Some(v) => format!("{}{v}", if l.int { "i:" } else { "s:" }),
                    None => format!("kept {}", &sql[l.range.clone()]),
                })
                .collect(),
        )
    }

    #[test]
    fn constants_a_parameter_stands_for_exactly() {
        assert_eq!(
            taken("SELECT name FROM customers WHERE phone = '138''0' AND id = 42 LIMIT 10"),
            Some(vec!["s:138'0".into(), "i:42".into(), "i:10".into()])
        );
        // Positions, intervals, typed strings and other constants stay.
        assert_eq!(
            taken(
                "SELECT DISTINCT ON (2) a, b FROM t WHERE d > now() - INTERVAL '1 day' \
                 AND e = DATE '2020-01-01' AND f = 1.5 AND g = E'x' AND h = 3000000000 \
                 GROUP BY 1, a ORDER BY 2, a || 'x'"
            ),
            Some(vec!["kept 1.5".into(), "kept 3000000000".into()])
        );
        assert_eq!(
            taken("SELECT a FROM t WHERE b = 'a\\b'"),
            Some(vec!["kept 'a\\b'".into()])
        );
        // Not a plain read, or a text with parameters already.
        assert_eq!(taken("SELECT a INTO x FROM t WHERE b = 'y'"), None);
        assert_eq!(
            taken("WITH d AS (DELETE FROM t RETURNING a) SELECT a FROM d"),
            None
        );
        assert_eq!(taken("SELECT a FROM t WHERE b = $1"), None);
        assert_eq!(taken("UPDATE t SET a = 'x'"), None);
        assert_eq!(
            taken("SELECT 1 FROM t FOR UPDATE").map(|v| v.len()),
            Some(1)
        );
    }
}
