//! Names visible to an expression: the FROM items of the query level being
//! analysed and of the levels around it (correlated subqueries), and the
//! common table expressions in force.

use super::Flow;
use crate::policy::QualifiedTable;

/// One output column of a relation, subquery or CTE.
#[derive(Debug, Clone)]
pub struct OutColumn {
    pub name: String,
    pub flow: Flow,
}

/// Output columns of a query. `exact` is false when a `*` expanded over a
/// relation whose columns are unknown, so positions are not known.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub columns: Vec<OutColumn>,
    pub exact: bool,
}

/// A FROM item.
#[derive(Debug, Clone)]
pub struct Item {
    /// The name it is referenced by: its alias, else the relation's name.
    pub alias: String,
    /// The relation when it is one from the catalog (for `schema.table.col`).
    pub relation: Option<QualifiedTable>,
    /// `None`: columns not known (a function's output); each then carries
    /// `opaque`, the flow of the function's arguments.
    pub columns: Option<Vec<OutColumn>>,
    pub opaque: Flow,
    /// The relation is rewritten as the analyser's substitution number
    /// `sub` (equality lookups on its masked columns move into it).
    pub sub: Option<usize>,
    /// On the nullable side of an outer join: a WHERE condition on it may
    /// not move into its rewrite.
    pub nullable: bool,
}

impl Item {
    /// The flow of column `name`, if this item has it.
    pub fn column(&self, name: &str) -> Option<Flow> {
        let Some(cols) = self.columns.as_ref() else {
            return Some(self.opaque.clone());
        };
        let mut found: Option<Flow> = None;
        for c in cols.iter().filter(|c| c.name == name) {
            found
                .get_or_insert_with(Flow::default)
                .merge(c.flow.clone());
        }
        found
    }

    /// The whole row as one value.
    pub fn whole_row(&self) -> Flow {
        let mut f = self.opaque.clone();
        for c in self.columns.iter().flatten() {
            f.merge(c.flow.clone());
        }
        f.derive()
    }
}

/// One query level; `parent` is the enclosing level, if any.
#[derive(Debug, Default)]
pub struct Scope<'p> {
    pub items: Vec<Item>,
    pub ctes: Vec<(String, Columns)>,
    pub parent: Option<&'p Scope<'p>>,
    /// A USING or NATURAL join merged columns: `*` no longer lists each
    /// item's columns in order.
    pub merged_columns: bool,
}

impl<'p> Scope<'p> {
    pub fn child(parent: &'p Scope<'p>) -> Scope<'p> {
        Scope {
            parent: Some(parent),
            ..Scope::default()
        }
    }

    /// A CTE visible from here by (folded) name.
    pub fn cte(&self, name: &str) -> Option<&Columns> {
        self.ctes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .or_else(|| self.parent.and_then(|p| p.cte(name)))
    }

    /// Resolve an unqualified column, innermost level first. Within a
    /// level every item that has it contributes (PostgreSQL would call it
    /// ambiguous; merging is the safe reading). An item of unknown columns
    /// may have any name: its flow joins whatever else matches, here or in
    /// an enclosing level.
    pub fn column(&self, name: &str) -> Option<Flow> {
        let mut found: Option<Flow> = None;
        let mut known = false;
        for it in &self.items {
            if let Some(f) = it.column(name) {
                known |= it.columns.is_some();
                found.get_or_insert_with(Flow::default).merge(f);
            }
        }
        if known {
            return found;
        }
        match (found, self.parent.and_then(|p| p.column(name))) {
            (Some(mut a), Some(b)) => {
                a.merge(b);
                Some(a)
            }
            (a, b) => a.or(b),
        }
    }

    /// The item of this level (not an enclosing one) that an unqualified
    /// or qualified column reference names, with the column's flow; `None`
    /// when it is not exactly one item of this level.
    pub fn local(&self, parts: &[String]) -> Option<(&Item, Flow)> {
        match parts {
            [c] => {
                let mut found = self
                    .items
                    .iter()
                    .filter(|it| it.columns.is_none() || it.column(c).is_some());
                let it = found.next()?;
                if found.next().is_some() || it.columns.is_none() {
                    return None;
                }
                Some((it, it.column(c)?))
            }
            [t, c] => {
                let it = self.items.iter().find(|i| i.alias == *t)?;
                it.columns.as_ref()?;
                Some((it, it.column(c)?))
            }
            _ => None,
        }
    }

    /// The rewritten relations a column reference may read, at any level
    /// (more than PostgreSQL would pick is harmless): (substitution,
    /// column position), or (substitution, `None`) for a whole row.
    pub fn uses(&self, parts: &[String], out: &mut Vec<(usize, Option<usize>)>) {
        let column = |it: &Item, c: &str| {
            let i = it.columns.as_ref()?.iter().position(|x| x.name == c)?;
            Some((it.sub?, Some(i)))
        };
        match parts {
            [c] => {
                for it in &self.items {
                    out.extend(column(it, c));
                    if it.alias == *c {
                        out.extend(it.sub.map(|s| (s, None)));
                    }
                }
            }
            [t, c] => {
                for it in self.items.iter().filter(|i| i.alias == *t) {
                    out.extend(column(it, c));
                }
            }
            [s, t, c] => {
                for it in self.items.iter().filter(|i| {
                    i.alias == *t
                        && i.relation
                            .as_ref()
                            .is_some_and(|r| r.schema == *s && r.table == *t)
                }) {
                    out.extend(column(it, c));
                }
            }
            _ => {}
        }
        if let Some(p) = self.parent {
            p.uses(parts, out);
        }
    }

    /// An item by the name it is referenced by, innermost level first.
    pub fn item(&self, alias: &str) -> Option<&Item> {
        self.items
            .iter()
            .find(|i| i.alias == alias)
            .or_else(|| self.parent.and_then(|p| p.item(alias)))
    }

    /// An item of relation `schema.table` referenced without alias.
    pub fn item_of(&self, schema: &str, table: &str) -> Option<&Item> {
        self.items
            .iter()
            .find(|i| {
                i.relation
                    .as_ref()
                    .is_some_and(|r| r.schema == schema && r.table == table && i.alias == table)
            })
            .or_else(|| self.parent.and_then(|p| p.item_of(schema, table)))
    }
}
