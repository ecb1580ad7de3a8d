//! Statement-level rules for restricted roles.
//!
//! Reads (SELECT, VALUES, COPY TO STDOUT, cursors, SQL PREPARE/EXECUTE)
//! get a result plan. Writes (INSERT, UPDATE, DELETE, COPY FROM STDIN) may
//! not copy classified values anywhere: every value written must be free of
//! them. Session statements are allowed when they cannot change identity or
//! how SQL is read (transactions, SHOW, a list of settings). Everything else
//! (DDL, DO, CALL, SET ROLE, SET search_path, COPY to files or programs,
//! EXPLAIN of classified data, ...) is refused.

use super::flow::Flow;
use super::query::{Analyzer, fold, name_parts};
use super::scope::{Columns, Item, OutColumn, Scope};
use super::{Analyzed, CopyFormat, Effect, Env, Refusal, ResultPlan};
use crate::catalog::schema::RelKind;
use crate::policy::Action;
use sqlparser::ast::{
    self, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Expr, ObjectName, SelectItem,
    Statement, TableObject,
};
use std::sync::Arc;

type R<T> = Result<T, Refusal>;

/// Settings a restricted role may change: none alters identity, name
/// resolution or how SQL text is read.
const SETTABLE: &[&str] = &[
    "application_name",
    "client_min_messages",
    "datestyle",
    "intervalstyle",
    "timezone",
    "time zone",
    "extra_float_digits",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "transaction_isolation",
    "transaction_read_only",
    "work_mem",
    "maintenance_work_mem",
    "temp_buffers",
    "jit",
    "plan_cache_mode",
    "geqo",
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "effective_cache_size",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "bytea_output",
    "escape_string_warning",
    "synchronous_commit",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
];

/// Analyse one statement: what it returns, and the edits of its text.
pub fn analyze(st: &Statement, env: &Env) -> R<(Analyzed, Vec<crate::rewrite::Edit>)> {
    let mut a = Analyzer::new(env);
    let (result, effect) = run(&mut a, st)?;
    let edits = a.take_edits();
    let fetched = a.fetched.take();
    // Settings, COPY options and the like are read by value.
    let by_value = !matches!(
        st,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    );
    Ok((
        Analyzed {
            result,
            effect,
            single_relation: a.relations == 1,
            withholds_text: a.withholds_text,
            probes: std::mem::take(&mut a.probes).into(),
            lookup_values: a.lookup_values,
            touched: Arc::new(a.touched),
            fetched,
            reads_literals: a.reads_literals || by_value,
        },
        edits,
    ))
}

fn refuse(a: &Analyzer, what: &str) -> Refusal {
    Refusal::new(format!(
        "permission denied by pgwarden: {what} is refused for role {}",
        a.env.role.name
    ))
}

type Outcome = (Option<Arc<ResultPlan>>, Effect);

fn run(a: &mut Analyzer, st: &Statement) -> R<Outcome> {
    let root = Scope::default();
    match st {
        Statement::Query(q) => {
            let out = a.query(q, &root)?;
            Ok((plan(a, &out, None)?, Effect::None))
        }
        Statement::Insert(ins) => insert(a, ins),
        Statement::Update(up) => update(a, up),
        Statement::Delete(del) => delete(a, del),
        Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => copy(a, source, *to, target, options, legacy_options),
        Statement::Declare { stmts } => {
            let [d] = stmts.as_slice() else {
                return Err(a.unsupported("this DECLARE"));
            };
            let (Some(q), [name]) = (&d.for_query, d.names.as_slice()) else {
                return Err(a.unsupported("this DECLARE"));
            };
            let out = a.query(q, &root)?;
            let p = plan(a, &out, None)?;
            if p.is_some() && d.binary == Some(true) {
                return Err(refuse(a, "a BINARY cursor over classified columns"));
            }
            Ok((
                None,
                Effect::DeclareCursor {
                    name: fold(name),
                    cursor: a.remembered(p),
                },
            ))
        }
        Statement::Fetch { name, into, .. } => {
            if into.is_some() {
                return Err(refuse(a, "FETCH INTO"));
            }
            match a.env.session.cursor(&fold(name)) {
                Some(c) => Ok((a.recall(c, true), Effect::None)),
                None => Err(Refusal::new(format!(
                    "permission denied by pgwarden: cursor {name} was not declared through \
                     pgwarden in this session"
                ))),
            }
        }
        Statement::Close { cursor } => Ok((
            None,
            Effect::CloseCursor(match cursor {
                ast::CloseCursor::All => None,
                ast::CloseCursor::Specific { name } => Some(fold(name)),
            }),
        )),
        Statement::Prepare {
            name, statement, ..
        } => {
            if !matches!(
                **statement,
                Statement::Query(_)
                    | Statement::Insert(_)
                    | Statement::Update(_)
                    | Statement::Delete(_)
            ) {
                return Err(refuse(a, "PREPARE of this statement"));
            }
            let (p, _) = run(a, statement)?;
            if a.probes
                .iter()
                .any(|p| matches!(p.value, super::Probed::ParamArray(_)))
            {
                // EXECUTE's arguments are not bound values pgwarden sees.
                return Err(refuse(
                    a,
                    "PREPARE of a lookup that compares a classified column with an array \
                     parameter (send it through the extended protocol, whose parameters are \
                     counted)",
                ));
            }
            // Constants are probed now; parameters by each EXECUTE.
            let (params, consts) = std::mem::take(&mut a.probes)
                .into_iter()
                .partition(|p| matches!(p.value, super::Probed::Param(_)));
            a.probes = consts;
            let params: Vec<_> = params;
            Ok((
                None,
                Effect::Prepare {
                    name: fold(name),
                    statement: super::Remembered {
                        probes: params.into(),
                        ..a.remembered(p)
                    },
                },
            ))
        }
        Statement::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            into,
            using,
            ..
        } if into.is_empty() && using.is_empty() => {
            for e in parameters {
                let f = a.expr(e, &root)?;
                if !f.is_clean() {
                    return Err(refuse(a, "passing classified values to EXECUTE"));
                }
            }
            let n = name_parts(name)
                .and_then(|p| p.into_iter().next())
                .unwrap_or_default();
            match a.env.session.prepared(&n) {
                Some(p) => {
                    a.probe_arguments(&p.probes.clone(), parameters)?;
                    Ok((a.recall(p, false), Effect::None))
                }
                None => Err(Refusal::new(format!(
                    "permission denied by pgwarden: prepared statement {name} was not prepared \
                     through pgwarden in this session"
                ))),
            }
        }
        Statement::Deallocate { name, .. } => Ok((
            None,
            Effect::Deallocate(
                (!(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")))
                    .then(|| fold(name)),
            ),
        )),
        Statement::Discard { object_type } => Ok((
            None,
            if matches!(object_type, ast::DiscardObject::ALL) {
                Effect::DiscardAll
            } else {
                Effect::None
            },
        )),
        Statement::StartTransaction { statements, .. } if statements.is_empty() => {
            Ok((None, Effect::None))
        }
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::ShowVariable { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::NOTIFY { .. } => Ok((None, Effect::None)),
        Statement::Set(set) => {
            set_statement(a, set)?;
            Ok((None, Effect::None))
        }
        // RESET returns a setting to the default the session started with.
        Statement::Reset(_) => Ok((None, Effect::None)),
        Statement::Explain { statement, .. } => {
            let mut inner = Analyzer::new(a.env);
            run(&mut inner, statement)?;
            if let Some(s) = inner.touched.iter().next() {
                return Err(Refusal::new(format!(
                    "permission denied by pgwarden: EXPLAIN of a statement over classified column \
                     {s} is refused for role {} (plans reveal value statistics)",
                    a.env.role.name
                )));
            }
            if inner.withholds_text {
                return Err(refuse(
                    a,
                    "EXPLAIN of a statement over a relation with classified columns",
                ));
            }
            Ok((None, Effect::None))
        }
        _ => Err(refuse(a, &format!("this statement type ({})", kind_of(st)))),
    }
}

/// A short name of a statement type for messages.
fn kind_of(st: &Statement) -> String {
    let text = st.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(40)
        .collect()
}

/// The result plan of output columns; `None` when nothing is rewritten.
fn plan(a: &Analyzer, out: &Columns, copy: Option<CopyFormat>) -> R<Option<Arc<ResultPlan>>> {
    if out.columns.iter().all(|c| c.flow.is_clean()) {
        return Ok(None);
    }
    if let Some(s) = out
        .columns
        .iter()
        .find(|c| !c.flow.is_clean() && !c.flow.is_bare())
        .and_then(|c| c.flow.first())
    {
        return Err(Refusal::new(format!(
            "permission denied by pgwarden: a result column computed from column {s} is refused \
             for role {} (it may read that column only as stored)",
            a.env.role.name
        )));
    }
    if !out.exact {
        return Err(a.unsupported("`*` of unknown width next to classified columns"));
    }
    let p = ResultPlan {
        columns: out
            .columns
            .iter()
            .map(|c| c.flow.action(a.env.policy))
            .collect(),
        copy,
    };
    Ok(p.rewrites().then(|| Arc::new(p)))
}

/// The target relation of a write, as a FROM item named `alias`.
fn target_item(a: &mut Analyzer, name: &ObjectName, alias: Option<String>) -> R<Item> {
    let parts = name_parts(name).ok_or_else(|| a.unsupported("this name"))?;
    let rel = a.resolve(&parts, name)?;
    if !matches!(rel.kind, RelKind::Table | RelKind::PartitionedTable) {
        return Err(refuse(
            a,
            &format!("writing to or copying {} (not a table)", rel.name),
        ));
    }
    let mut item = a.relation_item(name, None, &Scope::default(), false)?;
    if let Some(al) = alias {
        item.alias = al;
    }
    Ok(item)
}

/// Values written must carry no classified data.
fn written(a: &mut Analyzer, f: &Flow, what: &str) -> R<()> {
    match f.first() {
        None => Ok(()),
        Some(s) => Err(Refusal::new(format!(
            "permission denied by pgwarden: {what} would copy classified column {s}; \
             refused for role {}",
            a.env.role.name
        ))),
    }
}

/// Record writes to classified columns of `item` (for the audit trail).
/// Writing a column the role sees only as pseudonyms would let it
/// pseudonymise values of its choice (write, then read back): refused.
fn touch_columns(a: &mut Analyzer, item: &Item, names: Option<&[String]>) -> R<()> {
    for c in item.columns.iter().flatten() {
        if names.is_none_or(|n| n.contains(&c.name)) {
            if let Some(s) = c.flow.sources.iter().find(|s| s.action == Action::Hash) {
                return Err(Refusal::new(format!(
                    "permission denied by pgwarden: writing column {s} is refused for role {}, \
                     which sees it only as pseudonyms (written values could be read back as \
                     pseudonyms of the writer's choice)",
                    a.env.role.name
                )));
            }
            a.touched.extend(c.flow.sources.iter().cloned());
        }
    }
    Ok(())
}

fn returning(a: &mut Analyzer, r: &Option<Vec<SelectItem>>, scope: &Scope) -> R<Outcome> {
    match r {
        None => Ok((None, Effect::None)),
        Some(items) => {
            let out = a.projection(items, scope)?;
            Ok((plan(a, &out, None)?, Effect::None))
        }
    }
}

fn insert(a: &mut Analyzer, ins: &ast::Insert) -> R<Outcome> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(a.unsupported("INSERT into a function"));
    };
    if !ins.assignments.is_empty()
        || ins.partitioned.is_some()
        || ins.replace_into
        || ins.or.is_some()
    {
        return Err(a.unsupported("this INSERT form"));
    }
    let alias = ins.table_alias.as_ref().map(|t| fold(&t.alias));
    let item = target_item(a, name, alias)?;
    let cols: Option<Vec<String>> = if ins.columns.is_empty() {
        None
    } else {
        Some(
            ins.columns
                .iter()
                .filter_map(|c| name_parts(c).and_then(|p| p.last().cloned()))
                .collect(),
        )
    };
    touch_columns(a, &item, cols.as_deref())?;
    let root = Scope::default();
    if let Some(src) = &ins.source {
        let out = a.query(src, &root)?;
        for c in &out.columns {
            written(a, &c.flow, "INSERT ... SELECT")?;
        }
    }
    let mut scope = Scope::default();
    scope.items.push(item.clone());
    if let Some(on) = &ins.on {
        match on {
            ast::OnInsert::OnConflict(oc) => {
                if let ast::OnConflictAction::DoUpdate(du) = &oc.action {
                    let mut excluded = item.clone();
                    excluded.alias = "excluded".into();
                    excluded.relation = None;
                    scope.items.push(excluded);
                    for asg in &du.assignments {
                        let f = a.expr(&asg.value, &scope)?;
                        written(a, &f, "ON CONFLICT DO UPDATE")?;
                    }
                    if let Some(w) = &du.selection {
                        a.predicate(w, &scope)?;
                    }
                    scope.items.pop();
                }
            }
            _ => return Err(a.unsupported("this INSERT form")),
        }
    }
    returning(a, &ins.returning, &scope)
}

fn update(a: &mut Analyzer, up: &ast::Update) -> R<Outcome> {
    if up.or.is_some() || !up.order_by.is_empty() || up.limit.is_some() || up.output.is_some() {
        return Err(a.unsupported("this UPDATE form"));
    }
    let ast::TableFactor::Table { name, alias, .. } = &up.table.relation else {
        return Err(a.unsupported("this UPDATE target"));
    };
    if !up.table.joins.is_empty() {
        return Err(a.unsupported("this UPDATE target"));
    }
    let item = target_item(a, name, alias.as_ref().map(|al| fold(&al.name)))?;
    let mut scope = Scope::default();
    scope.items.push(item.clone());
    if let Some(from) = &up.from {
        let (ast::UpdateTableFromKind::AfterSet(list) | ast::UpdateTableFromKind::BeforeSet(list)) =
            from;
        for twj in list {
            a.join_tree(twj, &mut scope)?;
        }
    }
    let mut targets = Vec::new();
    for asg in &up.assignments {
        let f = a.expr(&asg.value, &scope)?;
        written(a, &f, "UPDATE ... SET")?;
        match &asg.target {
            ast::AssignmentTarget::ColumnName(n) => {
                targets.extend(name_parts(n).and_then(|p| p.last().cloned()))
            }
            ast::AssignmentTarget::Tuple(ns) => targets.extend(
                ns.iter()
                    .filter_map(|n| name_parts(n).and_then(|p| p.last().cloned())),
            ),
        }
    }
    touch_columns(a, &item, Some(&targets))?;
    if let Some(w) = &up.selection {
        a.where_clause(w, &scope)?;
    }
    returning(a, &up.returning, &scope)
}

fn delete(a: &mut Analyzer, del: &ast::Delete) -> R<Outcome> {
    if !del.tables.is_empty()
        || !del.order_by.is_empty()
        || del.limit.is_some()
        || del.output.is_some()
    {
        return Err(a.unsupported("this DELETE form"));
    }
    let (ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from)) = &del.from;
    let [target] = from.as_slice() else {
        return Err(a.unsupported("this DELETE form"));
    };
    let ast::TableFactor::Table { name, alias, .. } = &target.relation else {
        return Err(a.unsupported("this DELETE target"));
    };
    if !target.joins.is_empty() {
        return Err(a.unsupported("this DELETE target"));
    }
    let item = target_item(a, name, alias.as_ref().map(|al| fold(&al.name)))?;
    let mut scope = Scope::default();
    scope.items.push(item);
    for twj in del.using.iter().flatten() {
        a.join_tree(twj, &mut scope)?;
    }
    if let Some(w) = &del.selection {
        a.where_clause(w, &scope)?;
    }
    returning(a, &del.returning, &scope)
}

fn copy(
    a: &mut Analyzer,
    source: &CopySource,
    to: bool,
    target: &CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> R<Outcome> {
    match target {
        CopyTarget::Stdin | CopyTarget::Stdout => {}
        CopyTarget::File { .. } | CopyTarget::Program { .. } => {
            return Err(refuse(a, "COPY to or from a file or program"));
        }
    }
    let root = Scope::default();
    let out = match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            let item = target_item(a, table_name, None)?;
            let names: Vec<String> = columns.iter().map(fold).collect();
            let cols: Vec<OutColumn> = item
                .columns
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| names.is_empty() || names.contains(&c.name))
                .collect();
            if !to {
                touch_columns(a, &item, (!names.is_empty()).then_some(names.as_slice()))?;
                return Ok((None, Effect::None));
            }
            let mut out = Columns {
                columns: Vec::new(),
                exact: true,
            };
            // COPY t (b, a) sends the columns in the order listed.
            let ordered: Vec<OutColumn> = if names.is_empty() {
                cols
            } else {
                names
                    .iter()
                    .filter_map(|n| cols.iter().find(|c| &c.name == n).cloned())
                    .collect()
            };
            for c in ordered {
                let flow = a.referenced(c.flow)?;
                out.columns.push(OutColumn { name: c.name, flow });
            }
            out
        }
        CopySource::Query(q) => a.query(q, &root)?,
    };
    if !to {
        return Err(a.unsupported("COPY (query) FROM"));
    }
    let mut format = CopyFormat::Text;
    let mut binary = false;
    let mut header = false;
    let mut custom = false;
    for o in options {
        match o {
            CopyOption::Format(f) => match fold(f).as_str() {
                "text" => format = CopyFormat::Text,
                "csv" => format = CopyFormat::Csv { header: false },
                "binary" => binary = true,
                _ => custom = true,
            },
            CopyOption::Header(h) => header = *h,
            _ => custom = true,
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => binary = true,
            CopyLegacyOption::Csv(sub) => {
                format = CopyFormat::Csv { header: false };
                for s in sub {
                    match s {
                        ast::CopyLegacyCsvOption::Header => header = true,
                        _ => custom = true,
                    }
                }
            }
            CopyLegacyOption::Header => header = true,
            _ => custom = true,
        }
    }
    if let CopyFormat::Csv { .. } = format {
        format = CopyFormat::Csv { header };
    }
    let p = plan(a, &out, Some(format))?;
    if p.is_some() && (binary || custom) {
        return Err(refuse(
            a,
            "COPY of classified columns in binary format or with custom delimiters, quotes or null strings",
        ));
    }
    Ok((p, Effect::None))
}

fn setting_allowed(name: &str, value: Option<&Expr>, timeout_ms: Option<u64>) -> bool {
    let v = value.map(|e| e.to_string().trim_matches('\'').to_ascii_lowercase());
    match name {
        // The role's timeout may be lowered, never raised or lifted.
        "statement_timeout" if timeout_ms.is_some() => match v.as_deref() {
            None | Some("default") => true,
            Some(v) => duration_ms(v).is_some_and(|ms| ms > 0 && Some(ms) <= timeout_ms),
        },
        "client_encoding" | "names" => {
            matches!(
                v.as_deref(),
                Some("utf8" | "utf-8" | "unicode" | "default") | None
            )
        }
        "standard_conforming_strings" => {
            matches!(v.as_deref(), Some("on" | "true" | "default") | None)
        }
        n if n.starts_with("enable_") => true,
        n => SETTABLE.contains(&n),
    }
}

/// A duration setting's value in milliseconds: a number (milliseconds)
/// or a number with a unit (`ms`, `s`, `min`, `h`, `d`), as PostgreSQL
/// reads `statement_timeout`.
fn duration_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    let ms = (n * scale).round();
    (ms.is_finite() && ms >= 0.0 && ms <= i32::MAX as f64).then_some(ms as u64)
}

fn set_statement(a: &Analyzer, set: &ast::Set) -> R<()> {
    use ast::Set as S;
    let timeout = a.env.role.limits.statement_timeout_ms;
    let check = |name: &ObjectName, values: &[Expr]| -> R<()> {
        let n = name_parts(name).map(|p| p.join(".")).unwrap_or_default();
        if setting_allowed(&n, values.first(), timeout) {
            Ok(())
        } else {
            Err(refuse(a, &format!("SET {n}")))
        }
    };
    match set {
        S::SingleAssignment {
            variable, values, ..
        } => check(variable, values),
        S::MultipleAssignments { assignments } => {
            for asg in assignments {
                check(&asg.name, std::slice::from_ref(&asg.value))?;
            }
            Ok(())
        }
        S::SetTimeZone { .. } | S::SetTransaction { .. } => Ok(()),
        S::SetNames { charset_name, .. } => {
            if setting_allowed(
                "names",
                Some(&Expr::Identifier(charset_name.clone())),
                timeout,
            ) {
                Ok(())
            } else {
                Err(refuse(a, "SET NAMES other than UTF8"))
            }
        }
        S::SetNamesDefault {} => Ok(()),
        S::SetRole { .. } => Err(refuse(a, "SET ROLE")),
        S::SetSessionAuthorization(_) => Err(refuse(a, "SET SESSION AUTHORIZATION")),
        _ => Err(refuse(a, "this SET")),
    }
}
