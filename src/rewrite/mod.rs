//! The rewrite stage: the text a restricted statement reaches the server as.
//!
//! A restricted role never makes the server compute over a value it may see
//! only masked. Every table or view it reads in FROM that has such columns
//! is replaced, in the statement text, by a subquery that selects each
//! column through the SQL form of its mask ([`masks`]), and the only raw
//! comparison left, an equality lookup against a literal or a bind
//! parameter (`lookup: equality`), moves into that subquery's WHERE
//! ([`relation`]). Functions, counts, joins, sorts, set-returning
//! functions and errors then see masks, whatever the statement does with
//! them: the server computes the noninterference the analysis would
//! otherwise have to prove flow by flow.
//!
//! The rewrite is a list of [`Segment`]s: ranges of the client's own text
//! and text pgwarden inserts. Texts of one shape (see
//! [`crate::analysis::shape`]) have their tokens at the same byte offsets,
//! so one rewrite serves every text of a shape.

pub mod masks;
pub mod params;
pub mod relation;

use std::ops::Range;

/// A piece of the rewritten text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes of the client's text.
    Keep(Range<usize>),
    /// Text pgwarden inserts.
    Text(String),
}

/// An edit of the client's text: `range` is replaced by `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub with: Vec<Segment>,
}

/// The statement text as the server gets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    segments: Vec<Segment>,
}

impl Rewrite {
    /// The rewrite applying `edits` to a text of `len` bytes; `None` when
    /// two edits overlap (the caller refuses the statement).
    pub fn from_edits(mut edits: Vec<Edit>, len: usize) -> Option<Rewrite> {
        edits.sort_by_key(|e| (e.range.start, e.range.end));
        let mut segments = Vec::new();
        let mut at = 0;
        for e in edits {
            if e.range.start < at || e.range.end > len || e.range.start > e.range.end {
                return None;
            }
            if e.range.start > at {
                segments.push(Segment::Keep(at..e.range.start));
            }
            segments.extend(e.with);
            at = e.range.end;
        }
        if at < len {
            segments.push(Segment::Keep(at..len));
        }
        Some(Rewrite { segments })
    }

    /// The rewritten form of `sql`, a text of the shape the rewrite was
    /// made for.
    pub fn apply(&self, sql: &str) -> Option<String> {
        let mut out = String::with_capacity(sql.len() + 256);
        for s in &self.segments {
            match s {
                Segment::Keep(r) => out.push_str(sql.get(r.clone())?),
                Segment::Text(t) => out.push_str(t),
            }
        }
        Some(out)
    }
}

/// Byte offsets of sqlparser's line/column locations in one text.
pub struct Offsets<'s> {
    sql: &'s str,
    /// Byte offset of the start of each line.
    lines: Vec<usize>,
}

impl<'s> Offsets<'s> {
    pub fn new(sql: &'s str) -> Offsets<'s> {
        let mut lines = vec![0];
        lines.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { sql, lines }
    }

    /// The byte offset of a 1-based line and character column.
    pub fn at(&self, loc: sqlparser::tokenizer::Location) -> Option<usize> {
        let line = usize::try_from(loc.line).ok()?.checked_sub(1)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let start = *self.lines.get(line)?;
        let rest = &self.sql[start..];
        match rest.char_indices().nth(col) {
            Some((i, _)) => Some(start + i),
            None if rest.chars().count() == col => Some(self.sql.len()),
            None => None,
        }
    }

    /// The byte range a span covers (its end location is one past the
    /// last character).
    pub fn range(&self, span: sqlparser::tokenizer::Span) -> Option<Range<usize>> {
        let (s, e) = (self.at(span.start)?, self.at(span.end)?);
        (s <= e).then_some(s..e)
    }

    pub fn text(&self) -> &'s str {
        self.sql
    }
}

/// `"name"`: a double-quoted identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`: a standard string constant (standard_conforming_strings is on
/// in every restricted session).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::{Expr, SetExpr, Spanned, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    #[test]
    fn spans_map_to_the_bytes_of_their_tokens() {
        let sql =
            "SELECT 张, phone\n FROM public.customers c WHERE phone = '1张8' AND x IN (1, $2)";
        let st = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let Statement::Query(q) = &st[0] else {
            panic!()
        };
        let SetExpr::Select(s) = &*q.body else {
            panic!()
        };
        let o = Offsets::new(sql);
        let from = &s.from[0].relation;
        let sqlparser::ast::TableFactor::Table { name, .. } = from else {
            panic!()
        };
        assert_eq!(&sql[o.range(name.span()).unwrap()], "public.customers");
        let Some(Expr::BinaryOp { left, right, .. }) = &s.selection else {
            panic!()
        };
        let Expr::BinaryOp {
            left: l2,
            right: r2,
            ..
        } = &**left
        else {
            panic!()
        };
        assert_eq!(&sql[o.range(l2.span()).unwrap()], "phone");
        assert_eq!(&sql[o.range(r2.span()).unwrap()], "'1张8'");
        let Expr::InList { list, .. } = &**right else {
            panic!()
        };
        assert_eq!(&sql[o.range(list[1].span()).unwrap()], "$2");
    }

    #[test]
    fn edits_splice_the_original_text() {
        let sql = "SELECT a FROM t WHERE b = 1";
        let r = Rewrite::from_edits(
            vec![
                Edit {
                    range: 22..27,
                    with: vec![Segment::Text("TRUE".into())],
                },
                Edit {
                    range: 14..15,
                    with: vec![
                        Segment::Text("(SELECT a FROM t WHERE ".into()),
                        Segment::Keep(22..27),
                        Segment::Text(") AS t".into()),
                    ],
                },
            ],
            sql.len(),
        )
        .unwrap();
        assert_eq!(
            r.apply(sql).unwrap(),
            "SELECT a FROM (SELECT a FROM t WHERE b = 1) AS t WHERE TRUE"
        );
        assert!(
            Rewrite::from_edits(
                vec![
                    Edit {
                        range: 1..5,
                        with: vec![]
                    },
                    Edit {
                        range: 4..6,
                        with: vec![]
                    }
                ],
                10
            )
            .is_none()
        );
    }
}
