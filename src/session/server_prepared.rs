//! Server-side prepared statements pgwarden keeps for a restricted
//! session's simple-protocol SELECTs.
//!
//! The rewrite of a restricted statement puts mask expressions in it,
//! which the server would parse and plan again for every lookup sent as
//! a simple Query. pgwarden prepares the rewrite of each shape once per
//! session instead (its constants as parameters, see
//! [`crate::analysis::literals`]) and runs later texts of the shape with
//! Bind, Describe, Execute and Sync, whose replies the client reads as
//! its Query's.
//!
//! The first text of a shape runs as a simple Query; pgwarden then sends
//! the Parse with a Sync of its own, both answered out of the client's
//! sight. Only once the server confirmed the Parse are texts of the shape
//! run through it. A Parse the server refuses (a constant whose type the
//! server cannot infer as a parameter, an aborted transaction) leaves the
//! shape on the simple protocol: tried twice, then never again in the
//! session. A run that fails (an error in the statement, a plan the
//! server can no longer use after DDL) makes the next text of the shape
//! prepare it afresh. Statement names are `pgwarden_<n>`; a client's
//! `DEALLOCATE`, `DISCARD ALL` or Close of one is followed.

use crate::backend::tracker::Confirm;
use crate::fastmap::FastMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// Most statements kept per session; the oldest is closed for a new one.
pub const MAX_STATEMENTS: usize = 64;

/// Parse failures after which a shape stays on the simple protocol.
const MAX_FAILURES: u8 = 2;

/// What to do with a text whose prepared form is known.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Run it through prepared statement `name`.
    Run(String),
    /// Send it as a simple Query, then prepare it as `name`, closing
    /// `close` first (a statement replaced, or the oldest, to make room).
    QueryThenPrepare { name: String, close: Vec<String> },
    /// Send it as a simple Query.
    Query,
}

#[derive(Debug)]
struct Entry {
    name: String,
    /// The server's answer to the Parse.
    parsed: Arc<Confirm>,
    /// The answer to the last run through it.
    last_run: Option<Arc<Confirm>>,
    failures: u8,
}

/// The key of a prepared form: its text and parameter types (texts of
/// two shapes can differ only in a constant's type: `123456` and
/// `'0012'`).
pub fn key(text: &str, type_oids: &[u32]) -> String {
    let mut k = String::with_capacity(text.len() + 4 * type_oids.len() + 1);
    k.push_str(text);
    k.push('\0');
    for t in type_oids {
        k.push_str(&t.to_string());
        k.push(',');
    }
    k
}

#[derive(Debug, Default)]
pub struct ServerPrepared {
    /// By the parameterised server text (hashed on every lookup: the
    /// fast hasher).
    entries: FastMap<Arc<str>, Entry>,
    order: VecDeque<Arc<str>>,
    next: u64,
}

impl ServerPrepared {
    /// What to do with `text` (a parameterised rewrite with its parameter
    /// types: [`key`]); `may_prepare`: a Parse of pgwarden's may follow
    /// the Query now (it would abort an open transaction if it failed).
    pub fn plan(&mut self, text: &str, may_prepare: bool) -> Plan {
        let Some(e) = self.entries.get_mut(text) else {
            if !may_prepare {
                return Plan::Query;
            }
            return self.new_entry(text.into(), 0, Vec::new());
        };
        let ready = matches!(e.parsed.outcome(), Some(o) if o.done);
        let run_failed = e
            .last_run
            .as_ref()
            .is_some_and(|r| r.outcome().is_some_and(|o| !o.done));
        if !may_prepare && (!ready || run_failed) {
            return Plan::Query;
        }
        if run_failed {
            // The last run failed: prepare it afresh (the old statement
            // is closed, so failures cannot pile statements up).
            let failures = e.failures;
            let old = self.remove(text).into_iter().collect();
            return self.new_entry(text.into(), failures, old);
        }
        match e.parsed.outcome() {
            None => Plan::Query,
            Some(o) if o.done => Plan::Run(e.name.clone()),
            Some(_) if e.failures + 1 >= MAX_FAILURES => Plan::Query,
            Some(_) => {
                let failures = e.failures + 1;
                self.remove(text);
                self.new_entry(text.into(), failures, Vec::new())
            }
        }
    }

    /// The confirmation of the Parse of the statement `plan` just named.
    pub fn parsed(&self, text: &str) -> Option<Arc<Confirm>> {
        self.entries.get(text).map(|e| e.parsed.clone())
    }

    /// A run of `text` through its statement was sent.
    pub fn ran(&mut self, text: &str, confirm: Arc<Confirm>) {
        if let Some(e) = self.entries.get_mut(text) {
            e.last_run = Some(confirm);
        }
    }

    fn new_entry(&mut self, text: Arc<str>, failures: u8, mut close: Vec<String>) -> Plan {
        if self.entries.len() >= MAX_STATEMENTS {
            close.extend(self.order.front().cloned().and_then(|t| self.remove(&t)));
        }
        self.next += 1;
        let name = format!("pgwarden_{}", self.next);
        self.order.push_back(text.clone());
        self.entries.insert(
            text,
            Entry {
                name: name.clone(),
                parsed: Arc::new(Confirm::default()),
                last_run: None,
                failures,
            },
        );
        Plan::QueryThenPrepare { name, close }
    }

    /// Forget the entry of `text`; its statement name.
    fn remove(&mut self, text: &str) -> Option<String> {
        let e = self.entries.remove(text)?;
        self.order.retain(|t| &**t != text);
        Some(e.name)
    }

    /// The client closed or deallocated statement `name`.
    pub fn forget(&mut self, name: &str) {
        let text = self
            .entries
            .iter()
            .find(|(_, e)| e.name == name)
            .map(|(t, _)| t.clone());
        if let Some(t) = text {
            self.remove(&t);
        }
    }

    /// Every prepared statement of the session is gone.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(c: &Confirm, done: bool) {
        c.resolve(done, 0);
    }

    #[test]
    fn a_shape_runs_prepared_once_the_server_confirmed_it() {
        let mut s = ServerPrepared::default();
        let Plan::QueryThenPrepare { name, close } = s.plan("q", true) else {
            panic!()
        };
        assert!(close.is_empty());
        // Not while a transaction is open.
        assert_eq!(s.plan("other", false), Plan::Query);
        assert!(s.parsed("other").is_none());
        // Unanswered: simple Query meanwhile.
        assert_eq!(s.plan("q", true), Plan::Query);
        answer(&s.parsed("q").unwrap(), true);
        assert_eq!(s.plan("q", true), Plan::Run(name.clone()));
        // A failed run prepares it again under a new name.
        let run = Arc::new(Confirm::default());
        s.ran("q", run.clone());
        answer(&run, false);
        let Plan::QueryThenPrepare { name: again, close } = s.plan("q", true) else {
            panic!()
        };
        assert_ne!(again, name);
        assert_eq!(close, vec![name.clone()]);
        // A refused Parse: once more, then never.
        answer(&s.parsed("q").unwrap(), false);
        assert!(matches!(s.plan("q", true), Plan::QueryThenPrepare { .. }));
        answer(&s.parsed("q").unwrap(), false);
        assert_eq!(s.plan("q", true), Plan::Query);
        assert_eq!(s.plan("q", true), Plan::Query);
        // The client deallocating it is followed.
        let Plan::QueryThenPrepare { name, .. } = s.plan("r", true) else {
            panic!()
        };
        answer(&s.parsed("r").unwrap(), true);
        s.forget(&name);
        assert!(matches!(s.plan("r", true), Plan::QueryThenPrepare { .. }));
    }

    #[test]
    fn the_oldest_statement_makes_room() {
        let mut s = ServerPrepared::default();
        for i in 0..MAX_STATEMENTS {
            s.plan(&format!("q{i}"), true);
        }
        let Plan::QueryThenPrepare { close, .. } = s.plan("new", true) else {
            panic!()
        };
        assert_eq!(close, vec!["pgwarden_1".to_string()]);
        assert_eq!(s.entries.len(), MAX_STATEMENTS);
    }
}
