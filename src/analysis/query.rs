//! Queries and expressions: the flow of every output column, and the rules
//! on every other use of a classified column.
//!
//! Uses of a classified (masked or hashed) column outside the output are
//! judged by where they occur:
//! - predicates (WHERE, JOIN ON/USING, HAVING, CASE conditions, FILTER):
//!   with `lookup: equality` only `col = value`, `col IN (values)`,
//!   `col = ANY(values)` or `col = other_col`, with the column bare;
//!   without `lookup`, not at all;
//! - grouping (GROUP BY, DISTINCT, PARTITION BY, UNION, INTERSECT, EXCEPT):
//!   equality comparisons, so allowed bare with `lookup: equality`;
//! - ordering (ORDER BY, window and aggregate ordering) and LIMIT/OFFSET:
//!   never, since the order or count of rows reveals the hidden value.
//!
//! Denied columns are refused wherever they are referenced, including
//! through `*`, `t.*` and whole-row references.

use super::flow::{Flow, Source};
use super::scope::{Columns, Item, OutColumn, Scope};
use super::{Env, Refusal, Remembered, ResultPlan, functions};
use crate::catalog::schema::{RelKind, Relation, fold_identifier};
use crate::policy::{Action, Lookup, QualifiedTable};
use crate::rewrite::relation::{ColumnSub, Substitution};
use crate::rewrite::{Edit, Segment};
use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, OrderBy, OrderByKind, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, SetOperator, SetQuantifier, TableAlias,
    TableFactor, TableWithJoins, Value, WindowSpec, WindowType,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Most values one equality lookup may compare a classified column with
/// (`IN` lists, arrays written in the statement).
pub const MAX_LOOKUP_VALUES: usize = 100;
/// Rounds a recursive CTE is analysed for its flows to settle.
const RECURSION_ROUNDS: usize = 8;
/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_IDENT_BYTES: usize = 63;
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
/// Identifiers PostgreSQL reads as SQL-standard functions.
const KEYWORD_VALUES: &[&str] = &[
    "current_user",
    "session_user",
    "current_role",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_catalog",
    "current_schema",
    "user",
];

/// PostgreSQL's reading of an identifier: case-folded unless quoted, and
/// cut to 63 bytes.
pub fn fold(ident: &Ident) -> String {
    let mut s = fold_identifier(&ident.value, ident.quote_style.is_some());
    if s.len() > MAX_IDENT_BYTES {
        let mut cut = MAX_IDENT_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The folded parts of a name.
pub fn name_parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(fold(i)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// Walks one statement.
pub struct Analyzer<'e, 'a> {
    pub env: &'e Env<'a>,
    /// Classified columns referenced anywhere.
    pub touched: BTreeSet<Source>,
    /// Analysing a view's definition: only flows matter, the role's rules
    /// apply to the statement that reads the view.
    view_mode: bool,
    view_depth: usize,
    /// The analysis looked at a constant's value (a column position), so
    /// it holds for this exact text only, not for its shape.
    pub reads_literals: bool,
    /// Row sources read: table and view references, CTE references,
    /// functions in FROM.
    pub relations: u32,
    /// A FETCH: the row count of its cursor.
    pub fetched: Option<Arc<AtomicU64>>,
    /// Relations read in FROM, rewritten as subqueries.
    pub substitutions: Vec<Substitution>,
    /// Other edits of the statement text (lookups moved into a rewrite).
    pub edits: Vec<Edit>,
    /// The statement reads or writes a relation with classified columns
    /// the role may not see as stored: server errors and notices lose
    /// their text, whatever columns the statement names.
    pub withholds_text: bool,
    /// Bind parameters holding the arrays of lookups on classified columns.
    pub lookup_arrays: Vec<usize>,
}

type R<T> = Result<T, Refusal>;

impl<'e, 'a> Analyzer<'e, 'a> {
    pub fn new(env: &'e Env<'a>) -> Self {
        Analyzer {
            env,
            touched: BTreeSet::new(),
            view_mode: false,
            view_depth: 0,
            reads_literals: false,
            relations: 0,
            fetched: None,
            substitutions: Vec::new(),
            edits: Vec::new(),
            withholds_text: false,
            lookup_arrays: Vec::new(),
        }
    }

    /// The text edits of the statement: each rewritten relation and each
    /// lookup moved into one.
    pub fn take_edits(&mut self) -> Vec<Edit> {
        let mut edits = std::mem::take(&mut self.edits);
        for s in self.substitutions.drain(..) {
            edits.push(Edit {
                range: s.range.clone(),
                with: s.segments(),
            });
        }
        edits
    }

    /// Whether the statement text can be rewritten here: not inside a
    /// view's definition, and not for a full-access role.
    fn rewriting(&self) -> bool {
        !self.view_mode && !self.env.observe && self.env.text.is_some()
    }

    /// What a cursor or SQL prepared statement over the query just
    /// analysed remembers.
    pub fn remembered(&self, plan: Option<Arc<ResultPlan>>) -> Remembered {
        Remembered {
            plan,
            touched: Arc::new(self.touched.clone()),
            single_relation: self.relations == 1,
            fetched: Arc::default(),
        }
    }

    /// A FETCH (`cursor`) or EXECUTE reads what was remembered: its
    /// classified columns count as touched here; its result plan.
    pub fn recall(&mut self, r: Remembered, cursor: bool) -> Option<Arc<ResultPlan>> {
        self.touched.extend(r.touched.iter().cloned());
        self.relations += if r.single_relation { 1 } else { 2 };
        if cursor {
            self.fetched = Some(r.fetched);
        }
        r.plan
    }

    fn role(&self) -> &str {
        &self.env.role.name
    }

    /// A refusal naming the rule, unless analysing a view definition.
    fn rule(&self, message: String) -> R<()> {
        if self.view_mode || self.env.observe {
            Ok(())
        } else {
            Err(Refusal::new(format!(
                "permission denied by pgwarden: {message}"
            )))
        }
    }

    pub fn unsupported(&self, what: &str) -> Refusal {
        Refusal::new(format!(
            "pgwarden cannot analyse {what}; constructs it cannot analyse are refused for role {}",
            self.role()
        ))
    }

    /// Record a referenced flow; refuse it if it carries a denied column.
    pub fn referenced(&mut self, flow: Flow) -> R<Flow> {
        if let Some(d) = flow.denied() {
            let msg = format!(
                "column {}.{} ({}) is denied to role {}",
                d.table,
                d.column,
                d.kind,
                self.role()
            );
            self.rule(msg)?;
        }
        self.computed(&flow)?;
        self.touched.extend(flow.all_sources().cloned());
        Ok(flow)
    }

    /// Refuse a value computed from raw classified values (hashed, denied,
    /// or masked columns of a written table): such values may only be
    /// read as stored, compared for equality and grouped.
    fn computed(&mut self, flow: &Flow) -> R<()> {
        if !flow.derived {
            return Ok(());
        }
        match flow.sources.first() {
            None => Ok(()),
            Some(s) => {
                let msg = format!(
                    "column {s} may be read only as stored by role {}; functions, operators, \
                     casts and expressions over it are refused",
                    self.role()
                );
                self.rule(msg)
            }
        }
    }

    // ----- rules on uses outside the output -----

    /// `a = b` (or IN, = ANY) in a predicate; `*_value`: that side is a
    /// literal or a bind parameter.
    fn equality(&mut self, (a, a_value): (&Flow, bool), (b, b_value): (&Flow, bool)) -> R<()> {
        for (f, other_value) in [(a, b_value), (b, a_value)] {
            if f.is_bare_masked() && other_value {
                let s = f.masked.first().expect("bare");
                let msg = if self.env.role.lookup == Lookup::Equality {
                    format!(
                        "an equality lookup on column {s} must be a condition of its own in the \
                         WHERE clause of the query that reads its table (not under OR or NOT, not on \
                         the nullable side of an outer join); role {} sees this column only masked",
                        self.role()
                    )
                } else {
                    format!(
                        "column {s} may not be used in a predicate by role {} (it has no \
                         `lookup: equality` rule)",
                        self.role()
                    )
                };
                return self.rule(msg);
            }
        }
        if a.is_clean() && b.is_clean() {
            return Ok(());
        }
        let src = a.first().or(b.first()).expect("not clean");
        if self.env.role.lookup != Lookup::Equality {
            return self.rule(format!(
                "column {src} may not be used in a predicate by role {} (it has no `lookup: equality` rule)",
                self.role()
            ));
        }
        for f in [a, b] {
            if !f.is_clean() && !f.is_bare() {
                let s = f.first().expect("not clean");
                return self.rule(format!(
                    "column {s} may appear in a predicate only bare, compared with = or IN \
                     (lookup: equality of role {}); functions, casts and operators over it are refused",
                    self.role()
                ));
            }
        }
        for (f, other, other_value) in [(a, b, b_value), (b, a, a_value)] {
            if !f.is_clean() && !other_value && other.is_clean() {
                let s = f.first().expect("not clean");
                return self.rule(format!(
                    "column {s} may be compared only with a literal, a bind parameter or another \
                     classified column as stored (lookup: equality of role {}); comparing it with \
                     a computed value is a search and is refused",
                    self.role()
                ));
            }
        }
        Ok(())
    }

    /// A value used for grouping or de-duplication.
    fn grouping(&mut self, f: &Flow, what: &str) -> R<()> {
        if f.is_clean() {
            return Ok(());
        }
        let s = f.first().expect("not clean");
        if self.env.role.lookup == Lookup::Equality && f.is_bare() {
            return Ok(());
        }
        self.rule(format!(
            "{what} by column {s} is refused for role {} (allowed only bare, with lookup: equality)",
            self.role()
        ))
    }

    /// A value used for ordering, limits or offsets.
    fn ordering(&mut self, f: &Flow, what: &str) -> R<()> {
        match f.first() {
            None => Ok(()),
            Some(s) => {
                let msg = format!(
                    "{what} by column {s} reveals its hidden value and is refused for role {}",
                    self.role()
                );
                self.rule(msg)
            }
        }
    }

    /// An expression that must not involve classified columns at all.
    fn clean(&mut self, e: &Expr, scope: &Scope, what: &str) -> R<()> {
        let f = self.expr(e, scope)?;
        self.ordering(&f, what)
    }

    // ----- queries -----

    /// A query (WITH, body, ORDER BY, LIMIT) seen from `parent`.
    pub fn query(&mut self, q: &Query, parent: &Scope) -> R<Columns> {
        if q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return Err(self.unsupported("this query clause"));
        }
        let mut qscope = Scope::child(parent);
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = fold(&cte.alias.name);
                let cols = if with.recursive {
                    self.recursive_cte(&name, &cte.query, &cte.alias, &qscope)?
                } else {
                    let out = self.query(&cte.query, &qscope)?;
                    rename(out, &cte.alias)
                };
                qscope.ctes.push((name, cols));
            }
        }
        let out = match &*q.body {
            SetExpr::Select(s) => self.select(s, &qscope, q.order_by.as_ref())?,
            body => {
                let out = self.set_expr(body, &qscope)?;
                if let Some(ob) = &q.order_by {
                    self.order_by_outputs(ob, &out)?;
                }
                out
            }
        };
        if let Some(lc) = &q.limit_clause {
            match lc {
                ast::LimitClause::LimitOffset {
                    limit,
                    offset,
                    limit_by,
                } => {
                    if !limit_by.is_empty() {
                        return Err(self.unsupported("LIMIT BY"));
                    }
                    if let Some(l) = limit {
                        self.clean(l, &qscope, "LIMIT")?;
                    }
                    if let Some(o) = offset {
                        self.clean(&o.value, &qscope, "OFFSET")?;
                    }
                }
                ast::LimitClause::OffsetCommaLimit { .. } => {
                    return Err(self.unsupported("LIMIT a, b"));
                }
            }
        }
        if let Some(f) = &q.fetch {
            if let Some(n) = &f.quantity {
                self.clean(n, &qscope, "FETCH FIRST")?;
            }
        }
        Ok(out)
    }

    /// A recursive CTE: analysed until the flows of its columns settle.
    fn recursive_cte(
        &mut self,
        name: &str,
        q: &Query,
        alias: &TableAlias,
        scope: &Scope,
    ) -> R<Columns> {
        let mut current: Option<Columns> = None;
        let mut settled = false;
        for _ in 0..RECURSION_ROUNDS {
            let mut s = Scope::child(scope);
            s.ctes.push((
                name.to_string(),
                current.clone().unwrap_or(Columns {
                    columns: Vec::new(),
                    exact: false,
                }),
            ));
            let out = rename(self.query(q, &s)?, alias);
            settled = current.as_ref().is_some_and(|c| {
                c.exact == out.exact
                    && c.columns.len() == out.columns.len()
                    && c.columns
                        .iter()
                        .zip(&out.columns)
                        .all(|(a, b)| a.flow == b.flow)
            });
            current = Some(out);
            if settled {
                break;
            }
        }
        match current {
            Some(c) if settled => Ok(c),
            _ => Err(self.unsupported("this recursive query (its flows do not settle)")),
        }
    }

    fn set_expr(&mut self, body: &SetExpr, parent: &Scope) -> R<Columns> {
        match body {
            SetExpr::Select(s) => self.select(s, parent, None),
            SetExpr::Query(q) => self.query(q, parent),
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let l = self.set_expr(left, parent)?;
                let r = self.set_expr(right, parent)?;
                if l.exact && r.exact && l.columns.len() != r.columns.len() {
                    return Err(self.unsupported("set operations of different widths"));
                }
                let mut out = l;
                if out.exact && r.exact {
                    for (o, c) in out.columns.iter_mut().zip(r.columns) {
                        o.flow.merge(c.flow);
                    }
                } else {
                    // Positions unknown on one side: every column may hold
                    // any value of either side.
                    let mut all = Flow::default();
                    for c in out.columns.iter().chain(&r.columns) {
                        all.merge(c.flow.clone());
                    }
                    let all = all.derive();
                    if r.columns.len() > out.columns.len() {
                        out.columns
                            .extend(r.columns[out.columns.len()..].iter().cloned());
                    }
                    for c in &mut out.columns {
                        c.flow = all.clone();
                    }
                    out.exact = false;
                }
                let distinct = !(matches!(op, SetOperator::Union)
                    && matches!(set_quantifier, SetQuantifier::All));
                if distinct {
                    for c in out.columns.clone() {
                        self.grouping(&c.flow, &format!("{op}"))?;
                    }
                }
                Ok(out)
            }
            SetExpr::Values(v) => {
                let mut cols: Vec<OutColumn> = Vec::new();
                for row in &v.rows {
                    for (i, e) in row.iter().enumerate() {
                        let f = self.expr(e, parent)?;
                        match cols.get_mut(i) {
                            Some(c) => c.flow.merge(f),
                            None => cols.push(OutColumn {
                                name: format!("column{}", i + 1),
                                flow: f,
                            }),
                        }
                    }
                }
                Ok(Columns {
                    columns: cols,
                    exact: true,
                })
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                Err(Refusal::new(format!(
                    "permission denied by pgwarden: data-modifying statements inside a query are \
                     refused for role {}",
                    self.role()
                )))
            }
            SetExpr::Table(_) => Err(self.unsupported("TABLE")),
        }
    }

    fn select(&mut self, s: &Select, parent: &Scope, order_by: Option<&OrderBy>) -> R<Columns> {
        if s.into.is_some() {
            return Err(Refusal::new(format!(
                "permission denied by pgwarden: SELECT INTO creates a table and is refused for role {}",
                self.role()
            )));
        }
        if s.top.is_some()
            || s.exclude.is_some()
            || !s.lateral_views.is_empty()
            || s.prewhere.is_some()
            || !s.connect_by.is_empty()
            || !s.cluster_by.is_empty()
            || !s.distribute_by.is_empty()
            || !s.sort_by.is_empty()
            || s.qualify.is_some()
            || s.value_table_mode.is_some()
            || s.select_modifiers.is_some()
            || !s.optimizer_hints.is_empty()
            || !matches!(s.flavor, ast::SelectFlavor::Standard)
        {
            return Err(self.unsupported("this SELECT clause"));
        }
        let mut scope = Scope::child(parent);
        for twj in &s.from {
            self.join_tree(twj, &mut scope)?;
        }
        let out = self.projection(&s.projection, &scope)?;
        if let Some(w) = &s.selection {
            self.where_clause(w, &scope)?;
        }
        match &s.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(self.unsupported("GROUP BY modifiers"));
                }
                for e in exprs {
                    self.group_expr(e, &scope, &out)?;
                }
            }
            GroupByExpr::All(_) => return Err(self.unsupported("GROUP BY ALL")),
        }
        if let Some(h) = &s.having {
            self.predicate(h, &scope)?;
        }
        for w in &s.named_window {
            if let ast::NamedWindowExpr::WindowSpec(spec) = &w.1 {
                self.window(spec, &scope)?;
            }
        }
        match &s.distinct {
            None | Some(ast::Distinct::All) => {}
            Some(ast::Distinct::Distinct) => {
                for c in &out.columns {
                    self.grouping(&c.flow, "DISTINCT")?;
                }
            }
            Some(ast::Distinct::On(exprs)) => {
                for e in exprs {
                    let f = self.output_or_expr(e, &scope, &out)?;
                    self.grouping(&f, "DISTINCT ON")?;
                }
            }
        }
        if let Some(ob) = order_by {
            match &ob.kind {
                OrderByKind::Expressions(list) => {
                    for o in list {
                        if o.with_fill.is_some() {
                            return Err(self.unsupported("WITH FILL"));
                        }
                        let f = self.output_or_expr(&o.expr, &scope, &out)?;
                        self.ordering(&f, "ORDER BY")?;
                    }
                }
                OrderByKind::All(_) => return Err(self.unsupported("ORDER BY ALL")),
            }
            if ob.interpolate.is_some() {
                return Err(self.unsupported("INTERPOLATE"));
            }
        }
        Ok(out)
    }

    /// ORDER BY after a set operation: output names and positions only.
    fn order_by_outputs(&mut self, ob: &OrderBy, out: &Columns) -> R<()> {
        let OrderByKind::Expressions(list) = &ob.kind else {
            return Err(self.unsupported("ORDER BY ALL"));
        };
        let empty = Scope::default();
        for o in list {
            let f = self.output_or_expr(&o.expr, &empty, out)?;
            self.ordering(&f, "ORDER BY")?;
        }
        Ok(())
    }

    /// An expression in GROUP BY / ORDER BY / DISTINCT ON, which may name
    /// an output column by position or name.
    fn output_or_expr(&mut self, e: &Expr, scope: &Scope, out: &Columns) -> R<Flow> {
        if let Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                self.reads_literals = true;
                let idx: usize = n.parse().unwrap_or(0);
                if !out.exact {
                    return Err(self.unsupported("a column position over `*` of unknown width"));
                }
                return match out.columns.get(idx.wrapping_sub(1)) {
                    Some(c) => Ok(c.flow.clone()),
                    None => Ok(Flow::default()), // PostgreSQL rejects it.
                };
            }
        }
        if let Expr::Identifier(id) = e {
            // An output name, an input column, or both: take both.
            let name = fold(id);
            let mut outputs = out.columns.iter().filter(|c| c.name == name).peekable();
            if outputs.peek().is_some() {
                let mut flow = Flow::default();
                for c in outputs {
                    flow.merge(c.flow.clone());
                }
                if let Some(f) = scope.column(&name) {
                    flow.merge(self.referenced(f)?);
                }
                return Ok(flow);
            }
        }
        self.expr(e, scope)
    }

    fn group_expr(&mut self, e: &Expr, scope: &Scope, out: &Columns) -> R<()> {
        match e {
            Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
                for set in sets {
                    for x in set {
                        self.group_expr(x, scope, out)?;
                    }
                }
                Ok(())
            }
            Expr::Tuple(items) => {
                for x in items {
                    self.group_expr(x, scope, out)?;
                }
                Ok(())
            }
            _ => {
                let f = self.output_or_expr(e, scope, out)?;
                self.grouping(&f, "GROUP BY")
            }
        }
    }

    fn window(&mut self, spec: &WindowSpec, scope: &Scope) -> R<()> {
        for p in &spec.partition_by {
            let f = self.expr(p, scope)?;
            self.grouping(&f, "PARTITION BY")?;
        }
        for o in &spec.order_by {
            let f = self.expr(&o.expr, scope)?;
            self.ordering(&f, "window ORDER BY")?;
        }
        if let Some(frame) = &spec.window_frame {
            for b in [Some(&frame.start_bound), frame.end_bound.as_ref()]
                .into_iter()
                .flatten()
            {
                if let ast::WindowFrameBound::Preceding(Some(e))
                | ast::WindowFrameBound::Following(Some(e)) = b
                {
                    self.clean(e, scope, "a window frame")?;
                }
            }
        }
        Ok(())
    }

    /// The select list (or RETURNING list) over `scope`.
    pub fn projection(&mut self, items: &[SelectItem], scope: &Scope) -> R<Columns> {
        let mut out = Columns {
            columns: Vec::new(),
            exact: true,
        };
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let flow = self.expr(e, scope)?;
                    out.columns.push(OutColumn {
                        name: expr_name(e),
                        flow,
                    });
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let flow = self.expr(expr, scope)?;
                    out.columns.push(OutColumn {
                        name: fold(alias),
                        flow,
                    });
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(self.unsupported("multiple aliases"));
                }
                SelectItem::Wildcard(opts) => {
                    self.wildcard_options(opts)?;
                    for it in &scope.items {
                        self.expand(it, &mut out)?;
                    }
                    if scope.merged_columns && out.columns.iter().any(|c| !c.flow.is_clean()) {
                        return Err(self.unsupported(
                            "`*` over a USING or NATURAL join next to classified columns",
                        ));
                    }
                }
                SelectItem::QualifiedWildcard(kind, opts) => {
                    self.wildcard_options(opts)?;
                    let SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                        return Err(self.unsupported("(expression).*"));
                    };
                    let it = self.item_by_name(name, scope)?.clone();
                    self.expand(&it, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn wildcard_options(&self, o: &ast::WildcardAdditionalOptions) -> R<()> {
        if o.opt_ilike.is_some()
            || o.opt_exclude.is_some()
            || o.opt_except.is_some()
            || o.opt_replace.is_some()
            || o.opt_rename.is_some()
            || o.opt_alias.is_some()
        {
            return Err(self.unsupported("wildcard options"));
        }
        Ok(())
    }

    /// `*` over one FROM item.
    fn expand(&mut self, it: &Item, out: &mut Columns) -> R<()> {
        match &it.columns {
            Some(cols) => {
                for c in cols {
                    let flow = self.referenced(c.flow.clone())?;
                    out.columns.push(OutColumn {
                        name: c.name.clone(),
                        flow,
                    });
                }
            }
            None => {
                let flow = self.referenced(it.opaque.clone())?;
                if !flow.is_clean() {
                    return Err(self.unsupported("`*` over a function of classified columns"));
                }
                out.exact = false;
            }
        }
        Ok(())
    }

    fn item_by_name<'s>(&self, name: &ObjectName, scope: &'s Scope) -> R<&'s Item> {
        let parts = name_parts(name).ok_or_else(|| self.unsupported("this name"))?;
        let found = match parts.as_slice() {
            [t] => scope.item(t),
            [s, t] => scope.item_of(s, t),
            _ => None,
        };
        found.ok_or_else(|| Refusal::unknown(format!("pgwarden does not know {name} here")))
    }

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
    fn join_columns(&mut self, scope: &Scope, split: usize, name: &str) -> R<()> {
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

    fn table_factor(&mut self, tf: &TableFactor, scope: &mut Scope) -> R<()> {
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

    fn table_function(
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
    fn substitute(
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
        for c in columns.iter_mut() {
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
                            Some(def) => ColumnSub::Mask(def.mask.clone()),
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
        self.substitutions.push(Substitution {
            range,
            relation: rel.name.clone(),
            columns: subs,
            alias: alias.is_none().then(|| rel.name.table.clone()),
            lookups: Vec::new(),
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
    fn is_plain(&self, r: &Relation) -> bool {
        SYSTEM_SCHEMAS.contains(&r.name.schema.as_str())
            || (r.kind != RelKind::View
                && r.kind != RelKind::MaterializedView
                && !self.env.policy.classify.contains_key(&r.name))
    }

    /// The columns of a relation with their flows; views carry what they
    /// select.
    fn relation_columns(&mut self, rel: &Relation) -> R<Vec<OutColumn>> {
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

    fn view_flows(&mut self, rel: &Relation) -> R<Vec<Flow>> {
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
            lookup_arrays: Vec::new(),
        };
        let out = inner.query(q, &Scope::default()).map_err(|_| fail())?;
        // A view of several relations may repeat the rows of each.
        self.relations += inner.relations;
        if !out.exact {
            return Err(fail());
        }
        Ok(out.columns.into_iter().map(|c| c.flow).collect())
    }

    // ----- expressions -----

    /// The flow of a value expression, checking the predicates, orderings
    /// and subqueries inside it.
    pub fn expr(&mut self, e: &Expr, scope: &Scope) -> R<Flow> {
        let f = self.expr_flow(e, scope)?;
        self.computed(&f)?;
        Ok(f)
    }

    fn expr_flow(&mut self, e: &Expr, scope: &Scope) -> R<Flow> {
        Ok(match e {
            Expr::Identifier(id) => self.column_ref(std::slice::from_ref(id), scope)?,
            Expr::CompoundIdentifier(ids) => self.column_ref(ids, scope)?,
            Expr::Value(_) | Expr::TypedString(_) => Flow::default(),
            Expr::Nested(x) => self.expr(x, scope)?,
            Expr::Cast {
                expr, format: None, ..
            } => self.expr(expr, scope)?.derive(),
            Expr::Collate { expr, .. } => self.expr(expr, scope)?.derive(),
            Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x)
            | Expr::UnaryOp { expr: x, .. }
            | Expr::Extract { expr: x, .. }
            | Expr::Ceil { expr: x, .. }
            | Expr::Floor { expr: x, .. }
            | Expr::IsJson { expr: x, .. }
            | Expr::JsonAccess { value: x, .. } => self.expr(x, scope)?.derive(),
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                self.exprs([&**a, &**b], scope)?
            }
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => self.exprs([&**timestamp, &**time_zone], scope)?,
            Expr::BinaryOp { left, op, right } => {
                if let ast::BinaryOperator::PGCustomBinaryOperator(path) = op {
                    if path.len() != 2 || !path[0].eq_ignore_ascii_case("pg_catalog") {
                        return Err(self.unsupported("operators outside pg_catalog"));
                    }
                }
                self.exprs([&**left, &**right], scope)?
            }
            Expr::Like {
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::SimilarTo {
                expr,
                pattern,
                escape_char,
                ..
            } => {
                let mut f = self.exprs([&**expr, &**pattern], scope)?;
                if let Some(x) = escape_char {
                    f = f.join(self.expr(x, scope)?);
                }
                f
            }
            Expr::RLike { expr, pattern, .. } => self.exprs([&**expr, &**pattern], scope)?,
            Expr::AnyOp { left, right, .. } | Expr::AllOp { left, right, .. } => {
                self.exprs([&**left, &**right], scope)?
            }
            Expr::Between {
                expr, low, high, ..
            } => self.exprs([&**expr, &**low, &**high], scope)?,
            Expr::InList { expr, list, .. } => {
                let mut f = self.expr(expr, scope)?;
                for x in list {
                    f.merge(self.expr(x, scope)?);
                }
                f.derive()
            }
            Expr::InSubquery { expr, subquery, .. } => {
                let mut f = self.expr(expr, scope)?;
                for c in self.query(subquery, scope)?.columns {
                    f.merge(c.flow);
                }
                f.derive()
            }
            Expr::Position { expr, r#in } => self.exprs([&**expr, &**r#in], scope)?,
            Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut f = self.expr(expr, scope)?;
                for x in [substring_from, substring_for].into_iter().flatten() {
                    f.merge(self.expr(x, scope)?);
                }
                f.derive()
            }
            Expr::Trim {
                expr,
                trim_what,
                trim_characters,
                ..
            } => {
                let mut f = self.expr(expr, scope)?;
                if let Some(x) = trim_what {
                    f.merge(self.expr(x, scope)?);
                }
                for x in trim_characters.iter().flatten() {
                    f.merge(self.expr(x, scope)?);
                }
                f.derive()
            }
            Expr::Overlay {
                expr,
                overlay_what,
                overlay_from,
                overlay_for,
            } => {
                let mut f = self.exprs([&**expr, &**overlay_what, &**overlay_from], scope)?;
                if let Some(x) = overlay_for {
                    f = f.join(self.expr(x, scope)?);
                }
                f
            }
            Expr::Function(func) => self.function(func, scope)?,
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let mut f = Flow::default();
                let op = match operand {
                    Some(o) => Some(self.expr(o, scope)?),
                    None => None,
                };
                for w in conditions {
                    match &op {
                        Some(o) => {
                            let v = self.expr(&w.condition, scope)?;
                            self.equality((o, false), (&v, is_value(&w.condition)))?;
                        }
                        None => self.predicate(&w.condition, scope)?,
                    }
                    f.merge(self.expr(&w.result, scope)?);
                }
                if let Some(x) = else_result {
                    f.merge(self.expr(x, scope)?);
                }
                f.derive()
            }
            Expr::Exists { subquery, .. } => {
                self.query(subquery, scope)?;
                Flow::default()
            }
            Expr::Subquery(q) => {
                let out = self.query(q, scope)?;
                let mut f = Flow::default();
                for c in out.columns {
                    f.merge(c.flow);
                }
                if !out.exact {
                    f = f.derive();
                }
                f
            }
            Expr::Tuple(items) => self.exprs(items.iter(), scope)?,
            Expr::Array(a) => self.exprs(a.elem.iter(), scope)?,
            Expr::Interval(i) => self.expr(&i.value, scope)?.derive(),
            Expr::CompoundFieldAccess { root, access_chain } => {
                let mut f = self.expr(root, scope)?;
                for a in access_chain {
                    if let ast::AccessExpr::Subscript(s) = a {
                        match s {
                            ast::Subscript::Index { index } => f.merge(self.expr(index, scope)?),
                            ast::Subscript::Slice {
                                lower_bound,
                                upper_bound,
                                stride,
                            } => {
                                for x in [lower_bound, upper_bound, stride].into_iter().flatten() {
                                    f.merge(self.expr(x, scope)?);
                                }
                            }
                        }
                    }
                }
                f.derive()
            }
            Expr::Wildcard(_) => {
                let mut f = Flow::default();
                for it in &scope.items {
                    f.merge(self.referenced(it.whole_row())?);
                }
                f.derive()
            }
            Expr::QualifiedWildcard(name, _) => {
                let it = self.item_by_name(name, scope)?;
                let f = it.whole_row();
                self.referenced(f)?
            }
            _ => return Err(self.unsupported("this expression")),
        })
    }

    /// The joint flow of several operands of one computation.
    fn exprs<'x>(&mut self, items: impl IntoIterator<Item = &'x Expr>, scope: &Scope) -> R<Flow> {
        let mut f = Flow::default();
        for e in items {
            f.merge(self.expr(e, scope)?);
        }
        Ok(f.derive())
    }

    /// A column reference: `col`, `t.col`, `schema.t.col`, or a whole row
    /// (`t`).
    fn column_ref(&mut self, ids: &[Ident], scope: &Scope) -> R<Flow> {
        let parts: Vec<String> = ids.iter().map(fold).collect();
        let flow = match parts.as_slice() {
            [c] => match scope.column(c) {
                Some(f) => f,
                None => match scope.item(c) {
                    Some(it) => it.whole_row(),
                    None if KEYWORD_VALUES.contains(&c.as_str())
                        && ids[0].quote_style.is_none() =>
                    {
                        Flow::default()
                    }
                    None => return Err(self.unknown_column(&parts)),
                },
            },
            [t, c] => match scope.item(t) {
                Some(it) => it.column(c).ok_or_else(|| self.unknown_column(&parts))?,
                None => return Err(self.unknown_column(&parts)),
            },
            [s, t, c] => match scope.item_of(s, t) {
                Some(it) => it.column(c).ok_or_else(|| self.unknown_column(&parts))?,
                None => return Err(self.unknown_column(&parts)),
            },
            _ => return Err(self.unsupported("this column reference")),
        };
        self.referenced(flow)
    }

    fn unknown_column(&self, parts: &[String]) -> Refusal {
        Refusal::unknown(format!(
            "pgwarden does not know column {}; unknown columns are refused for role {}",
            parts.join("."),
            self.role()
        ))
    }

    fn function_name(&self, name: &ObjectName) -> R<String> {
        let parts = name_parts(name).ok_or_else(|| self.unsupported("this function name"))?;
        match parts.as_slice() {
            [n] => Ok(n.clone()),
            [s, n] if s == "pg_catalog" => Ok(n.clone()),
            _ if self.view_mode => Ok(parts.join(".")),
            _ => Err(Refusal::new(format!(
                "permission denied by pgwarden: function {name} is outside pg_catalog; \
                 role {} may call only pgwarden's list of built-in functions",
                self.role()
            ))),
        }
    }

    fn function_args(&mut self, args: &[FunctionArg], scope: &Scope) -> R<Flow> {
        let mut f = Flow::default();
        for a in args {
            let arg = match a {
                FunctionArg::Unnamed(x) => x,
                FunctionArg::Named { arg, .. } | FunctionArg::ExprNamed { arg, .. } => arg,
            };
            match arg {
                FunctionArgExpr::Expr(e) => f.merge(self.expr(e, scope)?),
                FunctionArgExpr::Wildcard => {}
                FunctionArgExpr::QualifiedWildcard(n) => {
                    let w = self.item_by_name(n, scope)?.whole_row();
                    f.merge(self.referenced(w)?);
                }
                FunctionArgExpr::WildcardWithOptions(_) => {
                    return Err(self.unsupported("wildcard options"));
                }
            }
        }
        Ok(f)
    }

    fn function(&mut self, func: &ast::Function, scope: &Scope) -> R<Flow> {
        let name = self.function_name(&func.name)?;
        if !self.view_mode && !functions::allowed(&name) {
            return Err(Refusal::new(format!(
                "permission denied by pgwarden: function {name} is not on the list of \
                 functions role {} may call",
                self.role()
            )));
        }
        if !matches!(func.parameters, FunctionArguments::None) {
            return Err(self.unsupported("parametric functions"));
        }
        let mut f = match &func.args {
            FunctionArguments::None => Flow::default(),
            FunctionArguments::Subquery(q) => {
                let mut f = Flow::default();
                for c in self.query(q, scope)?.columns {
                    f.merge(c.flow);
                }
                f
            }
            FunctionArguments::List(list) => {
                let mut f = self.function_args(&list.args, scope)?;
                for c in &list.clauses {
                    match c {
                        ast::FunctionArgumentClause::OrderBy(obs) => {
                            for o in obs {
                                let of = self.expr(&o.expr, scope)?;
                                self.ordering(&of, "aggregate ORDER BY")?;
                            }
                        }
                        ast::FunctionArgumentClause::Limit(e) => {
                            f.merge(self.expr(e, scope)?);
                        }
                        _ => return Err(self.unsupported("this function clause")),
                    }
                }
                f
            }
        };
        for o in &func.within_group {
            let of = self.expr(&o.expr, scope)?;
            self.ordering(&of, "WITHIN GROUP ordering")?;
            f.merge(of);
        }
        if let Some(filter) = &func.filter {
            self.predicate(filter, scope)?;
        }
        if let Some(WindowType::WindowSpec(spec)) = &func.over {
            self.window(spec, scope)?;
        }
        if functions::is_count(&name) {
            return Ok(Flow::default());
        }
        Ok(f.derive())
    }

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
    fn push_lookup(&mut self, c: &Expr, scope: &Scope) -> R<bool> {
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
    /// for a bind parameter (counted when bound); `None`: not a value.
    fn array_values(&mut self, e: &Expr) -> R<Option<usize>> {
        Ok(match e {
            Expr::Nested(x) => self.array_values(x)?,
            Expr::Array(a) if a.elem.iter().all(is_literal) => Some(a.elem.len()),
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => {
                    // Counted value by value when bound.
                    match p.strip_prefix('$').and_then(|n| n.parse().ok()) {
                        Some(n) => self.lookup_arrays.push(n),
                        None => return Err(self.unsupported("this parameter")),
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

    fn too_many_values(&self, f: &Flow) -> Refusal {
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
                let arrays = self.lookup_arrays.len();
                let values = self.array_values(right)?;
                if l.is_clean() && !l.is_bare_masked() {
                    // Not a lookup on a classified column: nothing to count.
                    self.lookup_arrays.truncate(arrays);
                }
                if values.is_some_and(|n| n > MAX_LOOKUP_VALUES) && !l.is_clean() {
                    return Err(self.too_many_values(&l));
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

/// An item whose columns come from a function.
fn opaque_item(fname: &str, flow: Flow, alias: Option<&TableAlias>) -> Item {
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
fn columns_item(alias: String, cols: Columns) -> Item {
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

/// Apply `AS alias(c1, c2, ...)`: the first columns take the new names.
fn rename(mut cols: Columns, alias: &TableAlias) -> Columns {
    for (c, a) in cols.columns.iter_mut().zip(&alias.columns) {
        c.name = fold(&a.name);
    }
    cols
}

/// The name PostgreSQL gives an unaliased output column.
fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => fold(i),
        Expr::CompoundIdentifier(ids) => ids.last().map(fold).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| match p {
                ObjectNamePart::Identifier(i) => Some(fold(i)),
                ObjectNamePart::Function(_) => None,
            })
            .unwrap_or_else(|| "?column?".into()),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => expr_name(expr),
        _ => "?column?".into(),
    }
}

/// How an equality lookup compares its column.
#[derive(Clone, Copy)]
enum LookupForm {
    /// `col = value`
    Eq,
    /// `col IN (values)`
    In,
    /// `col = ANY(array)`
    Any,
}

/// The conditions of a top-level AND, through parentheses.
fn conjuncts<'x>(e: &'x Expr, out: &mut Vec<&'x Expr>) {
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

/// A literal or a bind parameter as written: a lookup may move it.
fn is_literal(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(
        v.value,
        Value::SingleQuotedString(_) | Value::Number(..) | Value::Placeholder(_)
    ))
}

/// A literal or a bind parameter, perhaps cast or in parentheses.
fn is_value(e: &Expr) -> bool {
    match e {
        Expr::Nested(x) => is_value(x),
        Expr::Cast { expr, .. } => is_value(expr),
        Expr::TypedString(_) => true,
        e => is_literal(e),
    }
}

/// The offset just past the `)` that follows `from` in `sql`, skipping
/// whitespace and comments.
fn close_paren(sql: &str, from: usize) -> Option<usize> {
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
