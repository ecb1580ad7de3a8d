//! Equality lookups as probes. Each value a classified column is compared
//! with is one guess at a value the role may not see: ten thousand
//! candidates for the hidden digits of `138****5678` are ten thousand
//! lookups, counted against the role's `lookups_per_hour`.
//!
//! The analysis records where each compared value is: a constant's place
//! in the text (the same in every text of a shape, so a cached analysis
//! serves them all) or a bind parameter. The session reads the values
//! when the statement runs ([`constant`] here, bound values at Bind).

use super::Refusal;
use super::flow::Flow;
use super::query::Analyzer;
use crate::policy::Action;
use sqlparser::ast::{Expr, Spanned, Value};
use std::ops::Range;

/// One compared value and the kind of column it probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The classification kind (`phone`): the same number probed in two
    /// tables is one lookup.
    pub kind: String,
    pub value: Probed,
}

/// Where a probed value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// A constant in the statement text, at this byte range.
    Const(Range<usize>),
    /// A constant array (`'{a,b}'`) at this range: each element.
    ConstArray(Range<usize>),
    /// Bind parameter n (from 1).
    Param(usize),
    /// Bind parameter n holding an array: each element.
    ParamArray(usize),
    /// A value pgwarden cannot read before it runs: a new lookup each time.
    Unknown,
}

impl<'e, 'a> Analyzer<'e, 'a> {
    /// `col` (a classified value) is compared with `value`, a literal, a
    /// bind parameter or (`array`) an array of them: record each value as
    /// a probe of the kind of column it is compared with. Columns the role
    /// may read in clear are not probed.
    pub(super) fn probe(&mut self, col: &Flow, value: &Expr, array: bool) {
        let Some(kind) = col
            .all_sources()
            .find(|s| s.action != Action::Allow)
            .map(|s| s.kind.clone())
        else {
            return;
        };
        match strip(value) {
            Expr::Array(a) => {
                for e in &a.elem {
                    let value = self.probed(e, false);
                    self.probes.push(Probe {
                        kind: kind.clone(),
                        value,
                    });
                }
            }
            e => {
                let value = self.probed(e, array);
                self.probes.push(Probe { kind, value });
            }
        }
    }

    /// Where the value of `e` is.
    pub(super) fn probed(&self, e: &Expr, array: bool) -> Probed {
        let e = strip(e);
        let range = || {
            self.env
                .text
                .and_then(|t| t.range(e.span()))
                .filter(|r| !r.is_empty())
        };
        match e {
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => match p.strip_prefix('$').and_then(|n| n.parse().ok()) {
                    Some(n) if array => Probed::ParamArray(n),
                    Some(n) => Probed::Param(n),
                    None => Probed::Unknown,
                },
                Value::SingleQuotedString(_) | Value::Number(..) => match range() {
                    Some(r) if array => Probed::ConstArray(r),
                    Some(r) => Probed::Const(r),
                    None => Probed::Unknown,
                },
                _ => Probed::Unknown,
            },
            _ => Probed::Unknown,
        }
    }

    /// Statement-level: the probes of a SQL prepared statement's
    /// parameters, as its EXECUTE's arguments give them.
    pub(super) fn probe_arguments(
        &mut self,
        params: &[Probe],
        args: &[Expr],
    ) -> Result<(), Refusal> {
        for p in params {
            let value = match p.value {
                Probed::Param(n) => match n.checked_sub(1).and_then(|i| args.get(i)) {
                    Some(e) => self.probed(e, false),
                    None => Probed::Unknown,
                },
                Probed::ParamArray(_) => {
                    return Err(self.unsupported("EXECUTE of an array lookup"));
                }
                _ => continue,
            };
            self.probes.push(Probe {
                kind: p.kind.clone(),
                value,
            });
        }
        Ok(())
    }
}

/// The value itself under parentheses and casts.
fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(x) => strip(x),
        Expr::Cast { expr, .. } => strip(expr),
        e => e,
    }
}

/// The value of the constant `token` (a number, or a standard string
/// constant whose doubled quotes are undone); any other form of constant
/// is taken as written, so the same value written two ways may count
/// twice, never less.
pub fn constant(token: &str) -> std::borrow::Cow<'_, str> {
    match token.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(body) if body.contains("''") => body.replace("''", "'").into(),
        Some(body) => body.into(),
        None => token.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::constant;

    #[test]
    fn constants_are_read_as_the_server_reads_them() {
        assert_eq!(constant("'13812345678'"), "13812345678");
        assert_eq!(constant("'it''s'"), "it's");
        assert_eq!(constant("42"), "42");
        assert_eq!(constant("E'a\\'b'"), "E'a\\'b'");
    }
}
