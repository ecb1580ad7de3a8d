//! Value expressions: the flow of each, and the functions a restricted
//! role may call.

use super::flow::Flow;
use super::predicate::is_value;
use super::query::{Analyzer, R, fold, name_parts};
use super::scope::Scope;
use super::{Refusal, functions};
use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, WindowType,
};

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

impl<'e, 'a> Analyzer<'e, 'a> {
    // ----- expressions -----

    /// The flow of a value expression, checking the predicates, orderings
    /// and subqueries inside it.
    pub fn expr(&mut self, e: &Expr, scope: &Scope) -> R<Flow> {
        let f = self.expr_flow(e, scope)?;
        self.computed(&f)?;
        Ok(f)
    }

    pub(super) fn expr_flow(&mut self, e: &Expr, scope: &Scope) -> R<Flow> {
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
                            if is_value(&w.condition) && super::predicate::classified(o) {
                                self.probe(o, &w.condition, false);
                            }
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
                self.use_all(&scope.items);
                for it in &scope.items {
                    f.merge(self.referenced(it.whole_row())?);
                }
                f.derive()
            }
            Expr::QualifiedWildcard(name, _) => {
                let it = self.item_by_name(name, scope)?;
                let f = it.whole_row();
                self.use_all([it]);
                self.referenced(f)?
            }
            _ => return Err(self.unsupported("this expression")),
        })
    }

    /// The joint flow of several operands of one computation.
    pub(super) fn exprs<'x>(
        &mut self,
        items: impl IntoIterator<Item = &'x Expr>,
        scope: &Scope,
    ) -> R<Flow> {
        let mut f = Flow::default();
        for e in items {
            f.merge(self.expr(e, scope)?);
        }
        Ok(f.derive())
    }

    /// A column reference: `col`, `t.col`, `schema.t.col`, or a whole row
    /// (`t`).
    pub(super) fn column_ref(&mut self, ids: &[Ident], scope: &Scope) -> R<Flow> {
        let parts: Vec<String> = ids.iter().map(fold).collect();
        self.use_columns(scope, &parts);
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

    pub(super) fn unknown_column(&self, parts: &[String]) -> Refusal {
        Refusal::unknown(format!(
            "pgwarden does not know column {}; unknown columns are refused for role {}",
            parts.join("."),
            self.role()
        ))
    }

    pub(super) fn function_name(&self, name: &ObjectName) -> R<String> {
        let parts = name_parts(name).ok_or_else(|| self.unsupported("this function name"))?;
        match parts.as_slice() {
            [n] => Ok(n.clone()),
            [s, n] if s == "pg_catalog" => Ok(n.clone()),
            // The array expansion JDBC's metadata queries use, a plain SQL
            // function over its argument.
            [s, n] if s == "information_schema" && n == "_pg_expandarray" => Ok(parts.join(".")),
            _ if self.view_mode => Ok(parts.join(".")),
            _ => Err(Refusal::new(format!(
                "permission denied by pgwarden: function {name} is outside pg_catalog; \
                 role {} may call only pgwarden's list of built-in functions",
                self.role()
            ))),
        }
    }

    pub(super) fn function_args(&mut self, args: &[FunctionArg], scope: &Scope) -> R<Flow> {
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
                    let it = self.item_by_name(n, scope)?;
                    let w = it.whole_row();
                    self.use_all([it]);
                    f.merge(self.referenced(w)?);
                }
                FunctionArgExpr::WildcardWithOptions(_) => {
                    return Err(self.unsupported("wildcard options"));
                }
            }
        }
        Ok(f)
    }

    pub(super) fn function(&mut self, func: &ast::Function, scope: &Scope) -> R<Flow> {
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
}
