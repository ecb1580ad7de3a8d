//! FROM: tables, views, CTEs, subqueries and functions as row sources,
//! joins, and the rewrite of relations with classified columns the role
//! may see only masked ([`crate::rewrite::relation`]).

use super::flow::{Flow, Source};
use super::query::{Analyzer, R, fold, name_parts, rename};
use super::scope::{Columns, Item, OutColumn, Scope};
use super::{Refusal, functions};
use crate::catalog::schema::{RelKind, Relation};
use crate::policy::{Action, QualifiedTable};
use crate::rewrite::relation::{ColumnSub, Substitution};
use sqlparser::ast::{
    self, JoinConstraint, JoinOperator, ObjectName, TableAlias, TableFactor, TableWithJoins,
};
use std::collections::BTreeSet;

/// Deepest nesting of views analysed through one another.
const MAX_VIEW_DEPTH: usize = 8;
/// Schemas whose relations hold no customer data.
const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];
/// System relations a restricted role may not read: sampled column values
/// (statistics), other sessions' SQL text, large objects, password hashes.
const DENIED_SYSTEM_RELATIONS: &[&str] = &[
    "pg_statistic",
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic_ext_data",
    "pg_stat_activity",
    "pg_stat_statements",
    "pg_stat_statements_info",
    "pg_largeobject",
    "pg_authid",
    "pg_shadow",
    "pg_user_mappings",
];
impl<'e, 'a> Analyzer<'e, 'a> {
    // ----- FROM -----

    pub fn join_tree(&mut self, twj: &TableWithJoins, scope: &mut Scope) -> R<()> {
        let first = scope.items.len();
        self.table_factor(&twj.relation, scope)?;
        for j in &twj.joins {
            let before = scope.items.len();
            self.table_factor(&j.relation, scope)?;
            let (left_nullable, right_nullable) = match &j.join_operator {
                JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => (false, true),
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => (true, false),
                JoinOperator::FullOuter(_) => (true, true),
                _ => (false, false),
            };
            for it in &mut scope.items[first..before] {
                it.nullable |= left_nullable;
            }
            for it in &mut scope.items[before..] {
                it.nullable |= right_nullable;
            }
            let constraint = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c) => c,
                _ => return Err(self.unsupported("this kind of join")),
            };
            match constraint {
                JoinConstraint::On(e) => self.predicate(e, scope)?,
                JoinConstraint::Using(cols) => {
                    scope.merged_columns = true;
                    self.use_all(&scope.items);
                    for c in cols {
                        let parts = name_parts(c).ok_or_else(|| self.unsupported("USING"))?;
                        let [name] = parts.as_slice() else {
                            return Err(self.unsupported("USING"));
                        };
                        self.join_columns(scope, before, name)?;
                    }
                }
                JoinConstraint::Natural => {
                    scope.merged_columns = true;
                    self.use_all(&scope.items);
                    let right: Vec<String> = scope.items[before..]
                        .iter()
                        .flat_map(|i| i.columns.iter().flatten().map(|c| c.name.clone()))
                        .collect();
                    if scope.items[before..].iter().any(|i| i.columns.is_none())
                        || scope.items[..before].iter().any(|i| i.columns.is_none())
                    {
                        return Err(self.unsupported("NATURAL JOIN with a function"));
                    }
                    for name in right {
                        self.join_columns(scope, before, &name)?;
                    }
                }
                JoinConstraint::None => {}
            }
        }
        Ok(())
    }

    /// `left.name = right.name` for USING / NATURAL joins.
    pub(super) fn join_columns(&mut self, scope: &Scope, split: usize, name: &str) -> R<()> {
        let side = |items: &[Item]| {
            let mut f: Option<Flow> = None;
            for it in items {
                if let Some(x) = it.column(name) {
                    f.get_or_insert_with(Flow::default).merge(x);
                }
            }
            f
        };
        let (Some(l), Some(r)) = (side(&scope.items[..split]), side(&scope.items[split..])) else {
            return Ok(()); // Not a common column: PostgreSQL rejects USING.
        };
        let l = self.referenced(l)?;
        let r = self.referenced(r)?;
        self.equality((&l, false), (&r, false))
    }

    pub(super) fn table_factor(&mut self, tf: &TableFactor, scope: &mut Scope) -> R<()> {
        let item = match tf {
            TableFactor::Table {
                name,
                alias,
                args,
                version,
                ..
            } => {
                if version.is_some() {
                    return Err(self.unsupported("time travel"));
                }
                if let Some(a) = args {
                    let args = self.function_args(&a.args, scope)?;
                    return self.table_function(name, args, alias.as_ref(), scope);
                }
                self.relation_item(name, alias.as_ref(), scope, true)?
            }
            TableFactor::Function {
                name, args, alias, ..
            } => {
                let args = self.function_args(args, scope)?;
                return self.table_function(name, args, alias.as_ref(), scope);
            }
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                let mut f = Flow::default();
                for e in array_exprs {
                    f.merge(self.expr(e, scope)?);
                }
                self.relations += 1;
                let f = f.derive();
                self.computed(&f)?;
                opaque_item("unnest", f, alias.as_ref())
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let out = if *lateral {
                    self.query(subquery, scope)?
                } else {
                    let outer = Scope {
                        parent: scope.parent,
                        ..Scope::default()
                    };
                    self.query(subquery, &outer)?
                };
                let Some(alias) = alias else {
                    return Err(self.unsupported("a subquery without alias"));
                };
                columns_item(fold(&alias.name), rename(out, alias))
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    return Err(self.unsupported("an aliased join"));
                }
                return self.join_tree(table_with_joins, scope);
            }
            _ => return Err(self.unsupported("this FROM item")),
        };
        scope.items.push(item);
        Ok(())
    }

    pub(super) fn table_function(
        &mut self,
        name: &ObjectName,
        args: Flow,
        alias: Option<&TableAlias>,
        scope: &mut Scope,
    ) -> R<()> {
        let fname = self.function_name(name)?;
        if !functions::allowed_in_from(&fname) {
            let msg = format!(
                "function {fname} is not on the list of functions role {} may call in FROM",
                self.role()
            );
            self.rule(msg)?;
        }
        self.relations += 1;
        let args = args.derive();
        self.computed(&args)?;
        scope.items.push(opaque_item(&fname, args, alias));
        Ok(())
    }

    /// A relation named in FROM: a CTE, or a table or view of the catalog.
    /// With `substitute`, a relation in FROM whose classified columns the
    /// role may not see as stored is rewritten as a subquery
    /// ([`crate::rewrite::relation`]); write targets are not.
    pub fn relation_item(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        scope: &Scope,
        substitute: bool,
    ) -> R<Item> {
        let parts = name_parts(name).ok_or_else(|| self.unsupported("this name"))?;
        self.relations += 1;
        if let [n] = parts.as_slice() {
            if let Some(cte) = scope.cte(n) {
                let cols = match alias {
                    Some(a) => rename(cte.clone(), a),
                    None => cte.clone(),
                };
                let name = alias.map(|a| fold(&a.name)).unwrap_or_else(|| n.clone());
                return Ok(columns_item(name, cols));
            }
        }
        let rel = self.resolve(&parts, name)?;
        let mut columns = self.relation_columns(rel)?;
        let classified = columns.iter().any(|c| !c.flow.is_clean());
        self.withholds_text |= classified;
        let mut sub = None;
        if classified && substitute && self.rewriting() {
            sub = Some(self.substitute(rel, name, alias, &mut columns)?);
        }
        let cols = Columns {
            columns,
            exact: true,
        };
        let cols = match alias {
            Some(a) => rename(cols, a),
            None => cols,
        };
        Ok(Item {
            alias: alias
                .map(|a| fold(&a.name))
                .unwrap_or_else(|| rel.name.table.clone()),
            relation: Some(rel.name.clone()),
            columns: Some(cols.columns),
            opaque: Flow::default(),
            sub,
            nullable: false,
        })
    }

    /// Rewrite a relation read in FROM as a subquery that masks, hides and
    /// redacts its columns for the role; `columns` become the flows of the
    /// subquery's columns. Returns the substitution's number.
    pub(super) fn substitute(
        &mut self,
        rel: &Relation,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        columns: &mut [OutColumn],
    ) -> R<usize> {
        let range = self
            .env
            .text
            .and_then(|t| t.range(sqlparser::ast::Spanned::span(name)))
            .ok_or_else(|| self.unsupported("this relation name"))?;
        let mut subs = Vec::with_capacity(columns.len());
        for (c, col) in columns.iter_mut().zip(&rel.columns) {
            // text and varchar need no cast to be masked.
            let text = matches!(col.type_oid, 25 | 1043);
            let f = std::mem::take(&mut c.flow);
            let (how, flow) = if f.is_clean() {
                (ColumnSub::Raw, f)
            } else if f.denied().is_some() {
                (ColumnSub::Hidden, f)
            } else if f.is_bare() {
                let s = f.first().expect("bare");
                match s.action {
                    Action::Hash => (ColumnSub::Raw, f),
                    _ => {
                        let how = match self.env.policy.kinds.get(&s.kind) {
                            Some(def) => ColumnSub::Mask(def.mask.clone(), text),
                            None => ColumnSub::Redacted,
                        };
                        (how, f.server_masked(false))
                    }
                }
            } else {
                (ColumnSub::Redacted, f.server_masked(true))
            };
            subs.push((c.name.clone(), how));
            c.flow = flow;
        }
        // A recursive CTE is analysed more than once: one rewrite each.
        if let Some(i) = self.substitutions.iter().position(|s| s.range == range) {
            return Ok(i);
        }
        let used = vec![false; subs.len()];
        self.substitutions.push(Substitution {
            range,
            relation: rel.name.clone(),
            columns: subs,
            alias: alias.is_none().then(|| rel.name.table.clone()),
            lookups: Vec::new(),
            used,
            // Columns renamed by position: every position must stay.
            all: alias.is_some_and(|a| !a.columns.is_empty()),
        });
        Ok(self.substitutions.len() - 1)
    }

    /// Find a relation the way PostgreSQL would, or refuse when the answer
    /// could depend on a search path pgwarden cannot see.
    pub fn resolve(&self, parts: &[String], name: &ObjectName) -> R<&'e Relation> {
        let schema = self.env.schema;
        let rel = match parts {
            [s, t] => schema.get(&QualifiedTable {
                schema: s.clone(),
                table: t.clone(),
            }),
            [t] => {
                let candidates = schema.named(t);
                let sys = candidates
                    .iter()
                    .find(|r| r.name.schema == "pg_catalog")
                    .copied();
                match (sys, candidates.as_slice()) {
                    // pg_catalog comes first in every search path.
                    (Some(r), _) => Some(r),
                    (None, [one]) => Some(*one),
                    (None, []) => None,
                    (None, many) => {
                        if many.iter().any(|r| !self.is_plain(r)) {
                            return Err(Refusal::new(format!(
                                "permission denied by pgwarden: {t} exists in several schemas \
                                 ({}); qualify it with its schema",
                                many.iter()
                                    .map(|r| r.name.schema.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )));
                        }
                        let path = crate::catalog::schema::expand_search_path(
                            "\"$user\", public",
                            self.env.user,
                        );
                        schema.resolve(None, t, &path).or(Some(many[0]))
                    }
                }
            }
            _ => None,
        };
        let rel = rel.ok_or_else(|| {
            Refusal::unknown(format!(
                "pgwarden does not know relation {name}; unknown relations are refused for role {}",
                self.role()
            ))
        })?;
        if SYSTEM_SCHEMAS.contains(&rel.name.schema.as_str())
            && DENIED_SYSTEM_RELATIONS.contains(&rel.name.table.as_str())
        {
            return Err(Refusal::new(format!(
                "permission denied by pgwarden: {} holds sampled values or other sessions' \
                 data and is refused for role {}",
                rel.name,
                self.role()
            )));
        }
        Ok(rel)
    }

    /// A table with no classified column, or a system relation.
    pub(super) fn is_plain(&self, r: &Relation) -> bool {
        SYSTEM_SCHEMAS.contains(&r.name.schema.as_str())
            || (r.kind != RelKind::View
                && r.kind != RelKind::MaterializedView
                && !self.env.policy.classify.contains_key(&r.name))
    }

    /// The columns of a relation with their flows; views carry what they
    /// select.
    pub(super) fn relation_columns(&mut self, rel: &Relation) -> R<Vec<OutColumn>> {
        let policy = self.env.policy;
        let mut cols: Vec<OutColumn> = rel
            .columns
            .iter()
            .map(|c| OutColumn {
                name: c.name.clone(),
                flow: match policy.kind_of(&rel.name, &c.name) {
                    Some(kind) => {
                        let action = self.env.role.action(kind);
                        if action == Action::Allow {
                            Flow::default()
                        } else {
                            Flow::source(Source {
                                table: rel.name.clone(),
                                column: c.name.clone(),
                                kind: kind.to_string(),
                                action,
                            })
                        }
                    }
                    None => Flow::default(),
                },
            })
            .collect();
        let is_view = matches!(rel.kind, RelKind::View | RelKind::MaterializedView);
        if is_view && !SYSTEM_SCHEMAS.contains(&rel.name.schema.as_str()) {
            let flows = self.view_flows(rel)?;
            if flows.len() != cols.len() {
                return Err(self.unsupported(&format!("the definition of view {}", rel.name)));
            }
            for (c, f) in cols.iter_mut().zip(flows) {
                c.flow.merge(f);
            }
        }
        Ok(cols)
    }

    pub(super) fn view_flows(&mut self, rel: &Relation) -> R<Vec<Flow>> {
        let fail = || {
            Refusal::new(format!(
                "pgwarden cannot analyse the definition of view {}; reading it is refused for role {}",
                rel.name, self.env.role.name
            ))
        };
        if self.view_depth >= MAX_VIEW_DEPTH {
            return Err(fail());
        }
        let sql = rel.view_sql.as_deref().ok_or_else(fail)?;
        let stmts = super::parse(sql).map_err(|_| fail())?;
        let [ast::Statement::Query(q)] = stmts.as_slice() else {
            return Err(fail());
        };
        let mut inner = Analyzer {
            env: self.env,
            touched: BTreeSet::new(),
            view_mode: true,
            view_depth: self.view_depth + 1,
            // The view's text is the catalog's, not the client's.
            reads_literals: false,
            relations: 0,
            fetched: None,
            substitutions: Vec::new(),
            edits: Vec::new(),
            withholds_text: false,
            probes: Vec::new(),
            lookup_values: 0,
        };
        let out = inner.query(q, &Scope::default()).map_err(|_| fail())?;
        // A view of several relations may repeat the rows of each.
        self.relations += inner.relations;
        if !out.exact {
            return Err(fail());
        }
        Ok(out.columns.into_iter().map(|c| c.flow).collect())
    }
}

/// An item whose columns come from a function.
pub(super) fn opaque_item(fname: &str, flow: Flow, alias: Option<&TableAlias>) -> Item {
    match alias {
        Some(a) if !a.columns.is_empty() => Item {
            alias: fold(&a.name),
            relation: None,
            columns: Some(
                a.columns
                    .iter()
                    .map(|c| OutColumn {
                        name: fold(&c.name),
                        flow: flow.clone(),
                    })
                    .collect(),
            ),
            opaque: Flow::default(),
            sub: None,
            nullable: false,
        },
        Some(a) => Item {
            alias: fold(&a.name),
            relation: None,
            columns: None,
            opaque: flow,
            sub: None,
            nullable: false,
        },
        None => Item {
            alias: fname.to_string(),
            relation: None,
            columns: None,
            opaque: flow,
            sub: None,
            nullable: false,
        },
    }
}

/// An item over a subquery's or CTE's columns. When their positions are
/// not known (a `*` of unknown width inside), every column of the item
/// carries the flows of all of them, computed: nothing is lost.
pub(super) fn columns_item(alias: String, cols: Columns) -> Item {
    let opaque = if cols.exact {
        Flow::default()
    } else {
        let mut f = Flow::default();
        for c in &cols.columns {
            f.merge(c.flow.clone());
        }
        f.derive()
    };
    Item {
        alias,
        relation: None,
        columns: cols.exact.then_some(cols.columns),
        opaque,
        sub: None,
        nullable: false,
    }
}
