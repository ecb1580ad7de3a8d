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

//!
//! The analyser's other parts: [`super::from`] (FROM items and the rewrite
//! of relations), [`super::expr`] (value expressions and functions) and
//! [`super::predicate`] (conditions and equality lookups).

use super::flow::{Flow, Source};
use super::scope::{Columns, Item, OutColumn, Scope};
use super::{Env, Refusal, Remembered, ResultPlan};
use crate::catalog::schema::fold_identifier;
use crate::policy::Lookup;
use crate::rewrite::Edit;
use crate::rewrite::relation::Substitution;
use sqlparser::ast::{
    self, Expr, GroupByExpr, Ident, ObjectName, ObjectNamePart, OrderBy, OrderByKind, Query,
    Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, SetOperator, SetQuantifier,
    TableAlias, Value, WindowSpec,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Rounds a recursive CTE is analysed for its flows to settle.
const RECURSION_ROUNDS: usize = 8;
/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes).
const MAX_IDENT_BYTES: usize = 63;
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
    pub(super) view_mode: bool,
    pub(super) view_depth: usize,
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
    /// Values classified columns are compared with, one lookup each.
    pub probes: Vec<super::probe::Probe>,
    /// Values written in the statement that lookups compare classified
    /// columns with, all lookups together.
    pub lookup_values: usize,
}

pub(super) type R<T> = Result<T, Refusal>;

/// Most columns a query may return: PostgreSQL's own limit on a target
/// list. Wider results are refused before `*` over self-joins can
/// double them level after level.
const MAX_COLUMNS: usize = 1664;

/// Most columns the relations of one FROM clause may hold together.
const MAX_FROM_COLUMNS: usize = 4 * MAX_COLUMNS;

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
            probes: Vec::new(),
            lookup_values: 0,
        }
    }

    /// The statement reads whole rows of these items: their rewrites
    /// select every column.
    pub(super) fn use_all<'i>(&mut self, items: impl IntoIterator<Item = &'i Item>) {
        for it in items {
            if let Some(s) = it.sub {
                self.substitutions[s].all = true;
            }
        }
    }

    /// The statement reads the columns a reference names.
    pub(super) fn use_columns(&mut self, scope: &Scope, parts: &[String]) {
        let mut found = Vec::new();
        scope.uses(parts, &mut found);
        for (s, col) in found {
            match col {
                Some(i) => {
                    if let Some(u) = self.substitutions[s].used.get_mut(i) {
                        *u = true;
                    }
                }
                None => self.substitutions[s].all = true,
            }
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
    pub(super) fn rewriting(&self) -> bool {
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
            probes: Arc::new([]),
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

    pub(super) fn role(&self) -> &str {
        &self.env.role.name
    }

    /// A refusal naming the rule, unless analysing a view definition.
    pub(super) fn rule(&self, message: String) -> R<()> {
        if self.view_mode || self.env.observe {
            Ok(())
        } else {
            Err(Refusal::new(format!(
                "permission denied by pgwarden: {message}"
            )))
        }
    }

    fn too_wide(&self, columns: usize) -> Refusal {
        Refusal::new(format!(
            "pgwarden cannot analyse a query over {columns} columns (at most {MAX_COLUMNS} in a \
             result, {MAX_FROM_COLUMNS} in one FROM clause); it is refused for role {}",
            self.role()
        ))
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
    pub(super) fn computed(&mut self, flow: &Flow) -> R<()> {
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
    pub(super) fn equality(
        &mut self,
        (a, a_value): (&Flow, bool),
        (b, b_value): (&Flow, bool),
    ) -> R<()> {
        if (!a.is_clean() && b_value) || (!b.is_clean() && a_value) {
            self.lookup_values += 1;
        }
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
    pub(super) fn grouping(&mut self, f: &Flow, what: &str) -> R<()> {
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
    pub(super) fn ordering(&mut self, f: &Flow, what: &str) -> R<()> {
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
    pub(super) fn clean(&mut self, e: &Expr, scope: &Scope, what: &str) -> R<()> {
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
        if out.columns.len() > MAX_COLUMNS {
            return Err(self.too_wide(out.columns.len()));
        }
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
    pub(super) fn recursive_cte(
        &mut self,
        name: &str,
        q: &Query,
        alias: &TableAlias,
        scope: &Scope,
    ) -> R<Columns> {
        // The first approximation: the non-recursive term alone (a
        // reference to the CTE in it is refused as unknown).
        let mut current: Option<Columns> = match &*q.body {
            SetExpr::SetOperation { left, .. } => {
                let s = Scope::child(scope);
                self.set_expr(left, &s).ok().map(|c| rename(c, alias))
            }
            _ => None,
        };
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

    pub(super) fn set_expr(&mut self, body: &SetExpr, parent: &Scope) -> R<Columns> {
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
                        o.flow.union(c.flow);
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
                            Some(c) => c.flow.union(f),
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

    pub(super) fn select(
        &mut self,
        s: &Select,
        parent: &Scope,
        order_by: Option<&OrderBy>,
    ) -> R<Columns> {
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
            let columns: usize = scope
                .items
                .iter()
                .map(|i| i.columns.as_ref().map_or(1, Vec::len))
                .sum();
            if columns > MAX_FROM_COLUMNS {
                return Err(self.too_wide(columns));
            }
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
    pub(super) fn order_by_outputs(&mut self, ob: &OrderBy, out: &Columns) -> R<()> {
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
    pub(super) fn output_or_expr(&mut self, e: &Expr, scope: &Scope, out: &Columns) -> R<Flow> {
        // PostgreSQL drops parentheses before it looks for a position or
        // an output name: `ORDER BY (2)` is `ORDER BY 2`.
        let mut e = e;
        while let Expr::Nested(inner) = e {
            e = inner;
        }
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
                self.use_columns(scope, std::slice::from_ref(&name));
                if let Some(f) = scope.column(&name) {
                    flow.merge(self.referenced(f)?);
                }
                return Ok(flow);
            }
        }
        self.expr(e, scope)
    }

    pub(super) fn group_expr(&mut self, e: &Expr, scope: &Scope, out: &Columns) -> R<()> {
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

    pub(super) fn window(&mut self, spec: &WindowSpec, scope: &Scope) -> R<()> {
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

    pub(super) fn wildcard_options(&self, o: &ast::WildcardAdditionalOptions) -> R<()> {
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
    pub(super) fn expand(&mut self, it: &Item, out: &mut Columns) -> R<()> {
        self.use_all([it]);
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

    pub(super) fn item_by_name<'s>(&self, name: &ObjectName, scope: &'s Scope) -> R<&'s Item> {
        let parts = name_parts(name).ok_or_else(|| self.unsupported("this name"))?;
        let found = match parts.as_slice() {
            [t] => scope.item(t),
            [s, t] => scope.item_of(s, t),
            _ => None,
        };
        found.ok_or_else(|| Refusal::unknown(format!("pgwarden does not know {name} here")))
    }
}

/// Apply `AS alias(c1, c2, ...)`: the first columns take the new names.
pub(super) fn rename(mut cols: Columns, alias: &TableAlias) -> Columns {
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
