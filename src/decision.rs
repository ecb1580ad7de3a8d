//! The policy decision for one request of a restricted session, handed from
//! the frontend direction (which analysed it) to the backend direction
//! (which rewrites its results).
//!
//! Full-access sessions carry no decision: their results pass untouched.

use crate::analysis::ResultPlan;
use crate::catalog::Schema;
use crate::policy::{Action, Policy, QualifiedTable};
use std::sync::Arc;

/// The view of one restricted session: its role and the schema and policy
/// its statements were analysed against.
#[derive(Debug)]
pub struct RoleView {
    pub policy: Arc<Policy>,
    pub schema: Arc<Schema>,
    pub role: String,
    /// A full-access role's view: statements are analysed only to record
    /// the classified columns they touch.
    pub observe: bool,
}

impl RoleView {
    /// The classified column a result field comes from, when the role may
    /// not see it as stored: its table and column name.
    /// The result field that holds a data subject's key (`subjects:` in
    /// the policy), from the RowDescription's table and column numbers.
    pub fn is_subject_column(&self, table_oid: u32, attnum: i16) -> bool {
        if table_oid == 0 || self.policy.subjects.is_empty() {
            return false;
        }
        self.schema
            .column_by_oid(table_oid, attnum)
            .is_some_and(|(rel, col)| self.policy.subjects.get(&rel.name) == Some(&col.name))
    }

    pub fn restricted_column(
        &self,
        table_oid: u32,
        attnum: i16,
    ) -> Option<(&QualifiedTable, &str)> {
        if table_oid == 0 {
            return None;
        }
        let (rel, col) = self.schema.column_by_oid(table_oid, attnum)?;
        let kind = self.policy.kind_of(&rel.name, &col.name)?;
        let role = self
            .policy
            .roles
            .iter()
            .find(|r| r.name == self.role)
            .unwrap_or(&self.policy.default);
        (role.action(kind) != Action::Allow).then_some((&rel.name, col.name.as_str()))
    }
}

/// What the backend direction does with the responses to one request.
#[derive(Debug)]
pub struct Decision {
    /// Result plans, one per statement of a simple Query (one for an
    /// Execute or Describe); `None` where rows pass unchanged.
    pub results: Vec<Option<Arc<ResultPlan>>>,
    /// Result formats the client asked for, one per column (extended
    /// protocol); empty means text.
    pub formats: Vec<i16>,
    /// The request involves classified columns: error and notice text is
    /// withheld.
    pub sensitive: bool,
    /// The request was refused; the error raised on pgwarden's behalf is
    /// shown without its context line.
    pub refusal: bool,
    pub view: Arc<RoleView>,
    /// The statement reached the server rewritten (relations read through
    /// their masks).
    pub rewritten: bool,
    /// A Describe of a prepared statement or portal: where to note the
    /// subject key column its RowDescription shows.
    pub subject: Option<crate::backend::tracker::SubjectSlot>,
}

impl Decision {
    /// The plan of the `index`-th result.
    pub fn plan(&self, index: usize) -> Option<&ResultPlan> {
        self.results.get(index).and_then(|p| p.as_deref())
    }

    /// `refuse`, `rewrite` or `forward`, for the `index`-th statement.
    pub fn outcome(&self, index: usize) -> &'static str {
        if self.refusal {
            "refuse"
        } else if self.rewritten || self.plan(index).is_some_and(ResultPlan::rewrites) {
            "rewrite"
        } else {
            "forward"
        }
    }
}
