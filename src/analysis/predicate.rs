//! Conditions (WHERE, ON, HAVING, CASE, FILTER) and equality lookups,
//! which move into the rewrite of the relation they look up.

use super::Refusal;
use super::flow::Flow;
use super::query::{Analyzer, R, fold};
use super::scope::Scope;
use crate::policy::Lookup;
use crate::rewrite::{Edit, Segment};
use sqlparser::ast::{self, Expr, Value};

/// Most values one equality lookup may compare a classified column with
/// (`IN` lists, arrays written in the statement).
pub const MAX_LOOKUP_VALUES: usize = 100;
impl<'e, 'a> Analyzer<'e, 'a> {
    // ----- predicates -----

    /// A WHERE clause: each condition of its top-level AND that is an
    /// equality lookup on a masked column moves into the rewrite of that
    /// column's relation (the only place a raw masked value is compared);
    /// the rest are predicates.
    pub fn where_clause(&mut self, w: &Expr, scope: &Scope) -> R<()> {
        let mut conds = Vec::new();
        conjuncts(w, &mut conds);
        for c in conds {
            if !self.push_lookup(c, scope)? {
                self.predicate(c, scope)?;
            }
        }
        Ok(())
    }

    /// Move `col = value`, `col IN (values)` or `col = ANY(value)` on a
    /// masked column of a rewritten relation of this query level into its
    /// rewrite, leaving `TRUE` in its place. `false`: not such a lookup.
    pub(super) fn push_lookup(&mut self, c: &Expr, scope: &Scope) -> R<bool> {
        use ast::BinaryOperator as Op;
        let (col, values, form): (&Expr, Vec<&Expr>, LookupForm) = match c {
            Expr::BinaryOp {
                left,
                op: Op::Eq,
                right,
            } if is_literal(right) => (&**left, vec![&**right], LookupForm::Eq),
            Expr::BinaryOp {
                left,
                op: Op::Eq,
                right,
            } if is_literal(left) => (&**right, vec![&**left], LookupForm::Eq),
            Expr::InList {
                expr,
                list,
                negated: false,
            } if !list.is_empty() && list.iter().all(is_literal) => {
                (&**expr, list.iter().collect(), LookupForm::In)
            }
            Expr::AnyOp {
                left,
                compare_op: Op::Eq,
                right,
                is_some: false,
            } if is_literal(right) => (&**left, vec![&**right], LookupForm::Any),
            _ => return Ok(false),
        };
        let ids: Vec<String> = match col {
            Expr::Identifier(i) => vec![fold(i)],
            Expr::CompoundIdentifier(ids) => ids.iter().map(fold).collect(),
            _ => return Ok(false),
        };
        let Some((item, flow)) = scope.local(&ids) else {
            return Ok(false);
        };
        let (Some(sub), false) = (item.sub, item.nullable) else {
            return Ok(false);
        };
        if !flow.is_bare_masked() {
            return Ok(false);
        }
        let col_name = ids.last().expect("a name");
        let Some(pos) = item
            .columns
            .iter()
            .flatten()
            .position(|c| &c.name == col_name)
        else {
            return Ok(false);
        };
        let s = flow.masked.first().expect("bare").clone();
        if self.env.role.lookup != Lookup::Equality {
            return self
                .rule(format!(
                    "column {s} may not be used in a predicate by role {} (it has no \
                     `lookup: equality` rule)",
                    self.role()
                ))
                .map(|()| false);
        }
        let count = match form {
            LookupForm::Any => self.array_values(values[0])?.unwrap_or(1),
            _ => values.len(),
        };
        if count > MAX_LOOKUP_VALUES {
            return Err(self.too_many_values(&flow));
        }
        self.lookup_values += count;
        for v in &values {
            self.probe(&flow, v, form == LookupForm::Any);
        }
        let text = self.env.text.expect("rewriting");
        let span = |e: &Expr| text.range(sqlparser::ast::Spanned::span(e));
        let first = span(values[0]);
        let last = span(values[values.len() - 1]);
        let whole_start = span(col)
            .map(|r| r.start)
            .zip(first.clone())
            .map(|(a, b)| a.min(b.start));
        let (Some(first), Some(last), Some(start)) = (first, last, whole_start) else {
            return Err(self.unsupported("this lookup"));
        };
        let col_end = span(col).map(|r| r.end).unwrap_or(0);
        let end = match form {
            LookupForm::Eq => last.end.max(col_end),
            LookupForm::In | LookupForm::Any => {
                close_paren(text.text(), last.end).ok_or_else(|| self.unsupported("this lookup"))?
            }
        };
        let raw = crate::rewrite::quote_ident(&self.substitutions[sub].columns[pos].0);
        let cond = match form {
            LookupForm::Eq => vec![Segment::Text(format!("{raw} = ")), Segment::Keep(first)],
            LookupForm::In => vec![
                Segment::Text(format!("{raw} IN (")),
                Segment::Keep(first.start..last.end),
                Segment::Text(")".into()),
            ],
            LookupForm::Any => vec![
                Segment::Text(format!("{raw} = ANY (")),
                Segment::Keep(first),
                Segment::Text(")".into()),
            ],
        };
        if !self.edits.iter().any(|e| e.range == (start..end)) {
            self.substitutions[sub].lookups.push(cond);
            self.edits.push(Edit {
                range: start..end,
                with: vec![Segment::Text("TRUE".into())],
            });
        }
        self.touched.insert(s);
        Ok(true)
    }

    /// The number of values of an array a lookup compares with, when they
    /// are written in the statement (`ARRAY[...]`, `'{...}'`); `Some(1)`
    /// for a bind parameter (counted value by value when bound); `None`:
    /// not a value.
    pub(super) fn array_values(&mut self, e: &Expr) -> R<Option<usize>> {
        Ok(match e {
            Expr::Nested(x) => self.array_values(x)?,
            Expr::Array(a) if a.elem.iter().all(is_literal) => Some(a.elem.len()),
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => {
                    if p.strip_prefix('$')
                        .and_then(|n| n.parse::<usize>().ok())
                        .is_none()
                    {
                        return Err(self.unsupported("this parameter"));
                    }
                    Some(1)
                }
                Value::SingleQuotedString(t) => {
                    self.reads_literals = true;
                    Some(t.matches(',').count() + 1)
                }
                _ => None,
            },
            Expr::Cast { expr, .. } => self.array_values(expr)?,
            _ => None,
        })
    }

    /// `a = b`: a classified side compared with a value probes it.
    pub(super) fn probes_of(&mut self, (a, a_expr): (&Flow, &Expr), (b, b_expr): (&Flow, &Expr)) {
        if classified(a) && is_value(b_expr) {
            self.probe(a, b_expr, false);
        }
        if classified(b) && is_value(a_expr) {
            self.probe(b, a_expr, false);
        }
    }

    pub(super) fn too_many_values(&self, f: &Flow) -> Refusal {
        let s = f
            .all_sources()
            .next()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Refusal::new(format!(
            "permission denied by pgwarden: a lookup on column {s} compares it with more than \
             {MAX_LOOKUP_VALUES} values; role {} may look up at most {MAX_LOOKUP_VALUES} at once",
            self.role()
        ))
    }

    /// A condition (WHERE, ON, HAVING, CASE WHEN, FILTER).
    pub fn predicate(&mut self, e: &Expr, scope: &Scope) -> R<()> {
        use ast::BinaryOperator as Op;
        match e {
            Expr::BinaryOp {
                left,
                op: Op::And | Op::Or,
                right,
            } => {
                self.predicate(left, scope)?;
                self.predicate(right, scope)
            }
            Expr::UnaryOp {
                op: ast::UnaryOperator::Not,
                expr,
            } => self.predicate(expr, scope),
            Expr::Nested(x) => self.predicate(x, scope),
            Expr::BinaryOp {
                left,
                op: Op::Eq,
                right,
            } => {
                let l = self.expr(left, scope)?;
                let r = self.expr(right, scope)?;
                self.probes_of((&l, left), (&r, right));
                self.equality((&l, is_value(left)), (&r, is_value(right)))
            }
            Expr::AnyOp {
                left,
                compare_op: Op::Eq,
                right,
                ..
            } => {
                let l = self.expr(left, scope)?;
                let r = self.expr(right, scope)?;
                let values = self.array_values(right)?;
                if values.is_some() && classified(&l) {
                    self.probe(&l, right, true);
                }
                if values.is_some_and(|n| n > MAX_LOOKUP_VALUES) && !l.is_clean() {
                    return Err(self.too_many_values(&l));
                }
                if !l.is_clean() {
                    // An array written in the statement: each value counts.
                    self.lookup_values += values.unwrap_or(1).saturating_sub(1);
                }
                self.equality((&l, is_value(left)), (&r, values.is_some()))
            }
            Expr::InList { expr, list, .. } => {
                let l = self.expr(expr, scope)?;
                if list.len() > MAX_LOOKUP_VALUES && (!l.is_clean() || l.is_bare_masked()) {
                    return Err(self.too_many_values(&l));
                }
                for x in list {
                    // Each member is compared on its own.
                    let f = self.expr(x, scope)?;
                    self.probes_of((&l, expr), (&f, x));
                    self.equality((&l, is_value(expr)), (&f, is_value(x)))?;
                }
                Ok(())
            }
            Expr::InSubquery { expr, subquery, .. } => {
                let l = self.expr(expr, scope)?;
                let out = self.query(subquery, scope)?;
                let mut r = Flow::default();
                for c in out.columns {
                    r.merge(c.flow);
                }
                self.equality((&l, is_value(expr)), (&r, false))
            }
            Expr::Exists { subquery, .. } => {
                self.query(subquery, scope)?;
                Ok(())
            }
            _ => {
                let f = self.expr(e, scope)?;
                match f.first() {
                    None => Ok(()),
                    Some(s) => {
                        let msg = if self.env.role.lookup == Lookup::Equality {
                            format!(
                                "column {s} may appear in a predicate only bare, compared with = or IN \
                                 (lookup: equality of role {}); this predicate is refused",
                                self.role()
                            )
                        } else {
                            format!(
                                "column {s} may not be used in a predicate by role {} \
                                 (it has no `lookup: equality` rule)",
                                self.role()
                            )
                        };
                        self.rule(msg)
                    }
                }
            }
        }
    }
}

/// How an equality lookup compares its column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LookupForm {
    /// `col = value`
    Eq,
    /// `col IN (values)`
    In,
    /// `col = ANY(array)`
    Any,
}

/// The conditions of a top-level AND, through parentheses.
pub(super) fn conjuncts<'x>(e: &'x Expr, out: &mut Vec<&'x Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(x) => conjuncts(x, out),
        _ => out.push(e),
    }
}

/// A value of a classified column, raw or masked: comparing it with a
/// value is a lookup.
pub(super) fn classified(f: &Flow) -> bool {
    !f.is_clean() || f.is_bare_masked()
}

/// A literal or a bind parameter as written: a lookup may move it.
pub(super) fn is_literal(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(
        v.value,
        Value::SingleQuotedString(_) | Value::Number(..) | Value::Placeholder(_)
    ))
}

/// A literal or a bind parameter, perhaps cast or in parentheses.
pub(super) fn is_value(e: &Expr) -> bool {
    match e {
        Expr::Nested(x) => is_value(x),
        Expr::Cast { expr, .. } => is_value(expr),
        Expr::TypedString(_) => true,
        e => is_literal(e),
    }
}

/// The offset just past the `)` that follows `from` in `sql`, skipping
/// whitespace and comments.
pub(super) fn close_paren(sql: &str, from: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut i = from;
    loop {
        match b.get(i)? {
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i += b[i..].iter().position(|&c| c == b'\n')?;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2 + b[i + 2..].windows(2).position(|w| w == b"*/")? + 2;
            }
            b')' => return Some(i + 1),
            _ => return None,
        }
    }
}
