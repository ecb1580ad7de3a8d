//! Query analysis: what a statement reads of classified columns, and
//! whether a restricted role may run it.
//!
//! For every statement the analyser computes, per output column, which
//! classified columns flow into it ([`Flow`]: bare, or derived by some
//! expression), and checks every other use of classified columns
//! (predicates, joins, grouping, ordering, limits) against the role's rules.
//! The outcome is either a [`Refusal`] naming the column or construct and
//! the rule, or an [`Analysis`] with one [`Analyzed`] per statement: the
//! [`ResultPlan`] the result-rewriting stage applies to rows, the effect on
//! session state (cursors, SQL prepared statements) and the classified
//! columns touched (for the audit trail).
//!
//! The analyser fails closed: text the two lexers could read differently
//! ([`lexcheck`]), a parse failure, a statement type, function or construct
//! it does not know, an unknown relation or column: each is a refusal. Only
//! restricted roles are analysed; full-access roles never reach here.

pub mod depth;
pub mod lexcheck;
pub mod shape;

mod expr;
mod flow;
mod from;
mod functions;
pub mod literals;
mod predicate;
mod probe;
mod query;
mod scope;
mod statement;

#[cfg(test)]
mod tests;

pub use flow::{Flow, Source};
pub use predicate::MAX_LOOKUP_VALUES;
pub use probe::{Probe, Probed, constant};
pub use shape::shape;

use crate::catalog::Schema;
use crate::policy::{MaskSpec, Policy, Role};
use crate::rewrite::{Offsets, Rewrite};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Deepest nesting the parser accepts; deeper statements are refused.
const RECURSION_LIMIT: usize = 64;

/// What the analyser may consult.
pub struct Env<'a> {
    pub policy: &'a Policy,
    pub role: &'a Role,
    pub schema: &'a Schema,
    /// The login, for `$user` in the search path.
    pub user: &'a str,
    /// Plans of cursors and SQL prepared statements of this session.
    pub session: &'a dyn SessionLookup,
    /// Only observe which classified columns are touched (for the trail
    /// of a full-access role): no rule refuses, only what cannot be
    /// analysed fails.
    pub observe: bool,
    /// The statement text, for rewriting it ([`analyze`] sets it).
    pub text: Option<&'a crate::rewrite::Offsets<'a>>,
}

/// Cursors and SQL prepared statements the session remembers by name;
/// `None`: unknown (refused).
pub trait SessionLookup {
    fn cursor(&self, name: &str) -> Option<Remembered>;
    fn prepared(&self, name: &str) -> Option<Remembered>;
}

/// A session with no cursors or prepared statements.
pub struct NoSession;

impl SessionLookup for NoSession {
    fn cursor(&self, _: &str) -> Option<Remembered> {
        None
    }
    fn prepared(&self, _: &str) -> Option<Remembered> {
        None
    }
}

/// A cursor (DECLARE) or SQL prepared statement (PREPARE): what the
/// FETCH or EXECUTE that reads it later returns.
#[derive(Debug, Clone, Default)]
pub struct Remembered {
    /// How its rows are rewritten; `None` when they pass unchanged.
    pub plan: Option<Arc<ResultPlan>>,
    /// Classified columns its query reads.
    pub touched: Arc<BTreeSet<Source>>,
    /// Its query reads one table reference.
    pub single_relation: bool,
    /// Rows fetched from it so far (cursors): every FETCH of one cursor
    /// counts towards the same per-statement limit.
    pub fetched: Arc<AtomicU64>,
    /// Lookups on its bind parameters (SQL prepared statements): probed
    /// by each EXECUTE's arguments.
    pub probes: Arc<[Probe]>,
}

impl PartialEq for Remembered {
    fn eq(&self, other: &Self) -> bool {
        self.plan == other.plan
            && self.touched == other.touched
            && self.single_relation == other.single_relation
            && Arc::ptr_eq(&self.fetched, &other.fetched)
            && self.probes == other.probes
    }
}

impl Eq for Remembered {}

/// Why a statement may not run, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The statement named a relation or column the cached catalog does
    /// not know: worth re-reading the schema and analysing again.
    pub unknown_name: bool,
}

impl Refusal {
    pub fn new(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            unknown_name: false,
        }
    }

    fn unknown(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            unknown_name: true,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What happens to one output column on the way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnAction {
    /// Sent as stored.
    Pass,
    /// The kind's mask of the value.
    Mask { kind: String, spec: MaskSpec },
    /// The keyed pseudonym of the value.
    Hash,
    /// Derived from classified values: replaced by a fixed marker.
    Redact,
}

impl ColumnAction {
    pub fn rewrites(&self) -> bool {
        !matches!(self, ColumnAction::Pass)
    }
}

/// The text form of COPY TO STDOUT data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv { header: bool },
}

/// How the rows of one result are rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultPlan {
    pub columns: Vec<ColumnAction>,
    /// Set for COPY TO STDOUT: rows arrive as CopyData in this format.
    pub copy: Option<CopyFormat>,
}

impl ResultPlan {
    /// Whether any column is rewritten.
    pub fn rewrites(&self) -> bool {
        self.columns.iter().any(ColumnAction::rewrites)
    }
}

/// A change to session state a statement makes when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    DeclareCursor {
        name: String,
        cursor: Remembered,
    },
    /// `CLOSE name`, or `CLOSE ALL` (`None`).
    CloseCursor(Option<String>),
    Prepare {
        name: String,
        statement: Remembered,
    },
    /// `DEALLOCATE name`, or `DEALLOCATE ALL` (`None`).
    Deallocate(Option<String>),
    /// `DISCARD ALL`: cursors and prepared statements are gone.
    DiscardAll,
}

/// One analysed statement.
#[derive(Debug, Clone)]
pub struct Analyzed {
    /// How its rows are rewritten; `None` when they pass unchanged.
    pub result: Option<Arc<ResultPlan>>,
    pub effect: Effect,
    /// Classified columns it reads or writes (with the role's action).
    pub touched: Arc<BTreeSet<Source>>,
    /// It reads one table reference, so a subject key column in its
    /// result names the subject of each row.
    pub single_relation: bool,
    /// A FETCH: the row count of the cursor it reads.
    pub fetched: Option<Arc<AtomicU64>>,
    /// The analysis depends on the value of a constant in the text (a
    /// column position, a setting, a COPY option): it may not be reused
    /// for other texts of the same [`shape`].
    pub reads_literals: bool,
    /// It reads or writes a relation with classified columns the role may
    /// not see as stored: error and notice text is withheld.
    pub withholds_text: bool,
    /// Values its lookups compare classified columns with, one lookup
    /// each: constants in its text, bind parameters (counted at each Bind).
    pub probes: Arc<[Probe]>,
    /// Values written in it that its lookups compare classified columns
    /// with, all lookups together.
    pub lookup_values: usize,
}

/// All statements of one message.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub statements: Vec<Analyzed>,
    /// The text the server gets in place of the client's; `None`: the
    /// client's text as it is.
    pub rewrite: Option<Arc<Rewrite>>,
    /// A rewritten plain query: the constants that may become parameters
    /// when it runs as a server-side prepared statement
    /// ([`literals::parameters`]); `None`: it runs as sent.
    pub literals: Option<Arc<[literals::Literal]>>,
}

impl Analysis {
    /// Whether any statement touches a classified column.
    pub fn sensitive(&self) -> bool {
        self.statements.iter().any(|s| !s.touched.is_empty())
    }

    /// Whether error and notice text of this message is withheld.
    pub fn withholds_text(&self) -> bool {
        self.sensitive() || self.statements.iter().any(|s| s.withholds_text)
    }

    /// The text the server gets in place of `sql` (a text of the shape
    /// analysed); `None`: `sql` as it is. A rewrite that does not fit the
    /// text is a refusal, never the unrewritten text.
    pub fn server_text(&self, sql: &str) -> Result<Option<String>, Refusal> {
        match &self.rewrite {
            None => Ok(None),
            Some(r) => r.apply(sql).map(Some).ok_or_else(|| {
                Refusal::new("pgwarden cannot rewrite this statement; it is refused")
            }),
        }
    }

    /// Whether this analysis holds for every text of the same [`shape`].
    pub fn literal_free(&self) -> bool {
        self.statements.iter().all(|s| !s.reads_literals)
    }
}

/// Parse SQL text with the PostgreSQL dialect and pgwarden's nesting
/// limits (parentheses and subqueries; operator chains, [`depth`]).
fn parse(sql: &str) -> Result<Vec<sqlparser::ast::Statement>, sqlparser::parser::ParserError> {
    if depth::estimate(sql).is_some_and(|d| d > depth::MAX_DEPTH) {
        return Err(sqlparser::parser::ParserError::RecursionLimitExceeded);
    }
    Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
}

/// Analyse `sql` (one or more statements) for a restricted role.
pub fn analyze(sql: &str, env: &Env) -> Result<Analysis, Refusal> {
    lexcheck::check(sql)?;
    let statements = parse(sql).map_err(|e| {
        Refusal::new(format!(
            "pgwarden cannot analyse this statement ({e}); statements it cannot \
                 analyse are refused for role {}",
            env.role.name
        ))
    })?;
    let mut out = Analysis::default();
    let mut overlay = Overlay {
        base: env.session,
        cursors: Vec::new(),
        prepared: Vec::new(),
    };
    let offsets = Offsets::new(sql);
    let mut edits = Vec::new();
    for st in &statements {
        let (analyzed, mut e) = statement::analyze(
            st,
            &Env {
                session: &overlay,
                text: Some(&offsets),
                ..*env
            },
        )?;
        edits.append(&mut e);
        overlay.apply(&analyzed.effect);
        out.statements.push(analyzed);
    }
    let probed: usize = out.statements.iter().map(|s| s.lookup_values).sum();
    if probed > MAX_LOOKUP_VALUES && !env.observe {
        return Err(Refusal::new(format!(
            "permission denied by pgwarden: the lookups of this statement compare classified \
             columns with {probed} values together; role {} may look up at most \
             {MAX_LOOKUP_VALUES} at once",
            env.role.name
        )));
    }
    if !edits.is_empty() {
        let r = Rewrite::from_edits(edits, sql.len()).ok_or_else(|| {
            Refusal::new(format!(
                "pgwarden cannot rewrite this statement for role {}; statements it cannot \
                 rewrite are refused",
                env.role.name
            ))
        })?;
        out.rewrite = Some(Arc::new(r));
        if let [st] = statements.as_slice() {
            out.literals = literals::parameters(st, &offsets).map(Arc::from);
        }
    }
    Ok(out)
}

/// Session state as earlier statements of the same message leave it.
struct Overlay<'a> {
    base: &'a dyn SessionLookup,
    cursors: Vec<(String, Remembered)>,
    prepared: Vec<(String, Remembered)>,
}

impl Overlay<'_> {
    fn apply(&mut self, e: &Effect) {
        match e {
            Effect::DeclareCursor { name, cursor } => {
                self.cursors.push((name.clone(), cursor.clone()))
            }
            Effect::Prepare { name, statement } => {
                self.prepared.push((name.clone(), statement.clone()))
            }
            _ => {}
        }
    }
}

impl SessionLookup for Overlay<'_> {
    fn cursor(&self, name: &str) -> Option<Remembered> {
        match self.cursors.iter().rev().find(|(n, _)| n == name) {
            Some((_, p)) => Some(p.clone()),
            None => self.base.cursor(name),
        }
    }
    fn prepared(&self, name: &str) -> Option<Remembered> {
        match self.prepared.iter().rev().find(|(n, _)| n == name) {
            Some((_, p)) => Some(p.clone()),
            None => self.base.prepared(name),
        }
    }
}
