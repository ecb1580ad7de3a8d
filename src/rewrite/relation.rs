//! A relation as a restricted role reads it: a subquery over the relation
//! that masks what the role may see only masked, hides what it may not see
//! at all, and holds the role's equality lookups on the raw values.

use super::masks::{REDACTED_SQL, mask_sql};
use super::{Segment, quote_ident};
use crate::policy::{MaskSpec, QualifiedTable};
use std::ops::Range;

/// What one column of a substituted relation becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSub {
    /// As stored: unclassified, allowed, or hashed by pgwarden on the way
    /// out (the analysis keeps such values bare).
    Raw,
    /// The SQL form of the kind's mask; `true`: the column is of type
    /// text or varchar already.
    Mask(MaskSpec, bool),
    /// A denied column: NULL (the analysis refuses any reference to it).
    Hidden,
    /// A view column computed from classified values: a fixed marker.
    Redacted,
}

/// One reference to a relation in FROM, replaced by a subquery.
#[derive(Debug, Clone)]
pub struct Substitution {
    /// The bytes of the relation's name in the client's text.
    pub range: Range<usize>,
    pub relation: QualifiedTable,
    pub columns: Vec<(String, ColumnSub)>,
    /// `AS name` to append: the client gave no alias, and the subquery
    /// must answer to the relation's name.
    pub alias: Option<String>,
    /// Conditions on raw values (equality lookups), ANDed in the
    /// subquery's WHERE.
    pub lookups: Vec<Vec<Segment>>,
    /// The columns the statement reads (by position): only those are
    /// selected, so the server parses and plans no mask it does not use.
    /// A column left out by mistake is an error on the server, never a
    /// raw value.
    pub used: Vec<bool>,
    /// The statement reads whole rows (`*`, a row value, an alias column
    /// list, USING or NATURAL): every column is selected.
    pub all: bool,
}

impl Substitution {
    /// The text that replaces the relation's name.
    pub fn segments(&self) -> Vec<Segment> {
        let mut head = String::from("(SELECT ");
        let selected = self
            .columns
            .iter()
            .zip(self.used.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, used)| self.all || **used)
            .map(|(c, _)| c);
        for (i, (name, sub)) in selected.enumerate() {
            if i > 0 {
                head.push_str(", ");
            }
            let col = quote_ident(name);
            match sub {
                ColumnSub::Raw => head.push_str(&col),
                ColumnSub::Mask(spec, text) => {
                    head.push_str(&mask_sql(spec, &col, *text));
                    head.push_str(" AS ");
                    head.push_str(&col);
                }
                ColumnSub::Hidden => {
                    head.push_str("NULL::text AS ");
                    head.push_str(&col);
                }
                ColumnSub::Redacted => {
                    head.push_str(REDACTED_SQL);
                    head.push_str(" AS ");
                    head.push_str(&col);
                }
            }
        }
        head.push_str(" FROM ");
        head.push_str(&quote_ident(&self.relation.schema));
        head.push('.');
        head.push_str(&quote_ident(&self.relation.table));
        let mut out = vec![Segment::Text(head)];
        for (i, l) in self.lookups.iter().enumerate() {
            out.push(Segment::Text(
                if i == 0 { " WHERE (" } else { " AND (" }.into(),
            ));
            out.extend(l.iter().cloned());
            out.push(Segment::Text(")".into()));
        }
        let mut tail = String::from(")");
        if let Some(a) = &self.alias {
            tail.push_str(" AS ");
            tail.push_str(&quote_ident(a));
        }
        out.push(Segment::Text(tail));
        out
    }
}
