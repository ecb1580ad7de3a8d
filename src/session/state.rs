//! Per-connection protocol state kept by the frontend direction: prepared
//! statements and portals by name with their SQL and result plans, open
//! cursors and SQL prepared statements.
//!
//! Analysis looks up what an Execute, FETCH or EXECUTE will return here.
//! Maps are capped so a client cannot grow them without end.
//!
//! What a name means follows the server, not the client's requests: a
//! Parse, Bind, PREPARE or DECLARE of a restricted session takes effect
//! at once, as the messages after it in the same Sync block (or the same
//! Query) run only if it succeeded, but stays [`Tentative`] until the
//! server confirms it. When the server rejects or skips it (a name already
//! in use, an error earlier in the pipeline, an aborted transaction), the
//! name it set means nothing any more: its later use is refused, never
//! run with a plan the server does not hold.

use crate::analysis::{Analyzed, Effect, Remembered, ResultPlan, SessionLookup};
use crate::backend::tracker::{Confirm, Params, Reads};
use crate::decision::RoleView;
use crate::fastmap::FastMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// Most entries kept in each map; PostgreSQL drops portals and cursors at
/// transaction end, which the frontend cannot always see, so the cap also
/// bounds stale entries.
const MAX_ENTRIES: usize = 100_000;

/// A statement prepared with Parse.
#[derive(Debug)]
pub struct Prepared {
    pub sql: Arc<str>,
    /// How its rows are rewritten (restricted sessions).
    pub plan: Option<Arc<ResultPlan>>,
    pub sensitive: bool,
    /// The policy and schema it was analysed under (restricted sessions):
    /// after a policy reload or schema refresh it is analysed again.
    pub view: Option<Arc<RoleView>>,
    /// What it reads (for limits and the audit trail).
    pub reads: Reads,
    /// The text the server prepared in place of `sql`, when rewritten.
    pub server_sql: Option<Arc<str>>,
    /// What an Execute of it does to session state (a DECLARE or PREPARE
    /// sent through the protocol), applied when it runs.
    pub effect: Effect,
    /// Values its lookups compare classified columns with: constants in
    /// its text, bind parameters (counted at each Bind).
    pub probes: Arc<[crate::analysis::Probe]>,
    /// Values its lookups compare classified columns with, written in it.
    pub lookup_values: usize,
    /// What each Execute of a statement without classified columns reads:
    /// shared by all of them, as nothing is counted per portal.
    unclassified_reads: Option<Arc<[Reads]>>,
}

impl Prepared {
    pub fn new(
        sql: Arc<str>,
        plan: Option<Arc<ResultPlan>>,
        sensitive: bool,
        view: Option<Arc<RoleView>>,
        reads: Reads,
    ) -> Arc<Prepared> {
        let unclassified_reads = reads.touched.is_empty().then(|| Arc::from([reads.clone()]));
        Arc::new(Prepared {
            sql,
            plan,
            sensitive,
            view,
            reads,
            server_sql: None,
            effect: Effect::None,
            probes: Arc::new([]),
            lookup_values: 0,
            unclassified_reads,
        })
    }

    /// A restricted session's statement as analysed under `view` (`st`:
    /// its one statement, if any), prepared on the server as `server_sql`
    /// (its rewrite, when there is one).
    pub fn analysed(
        sql: Arc<str>,
        st: Option<&Analyzed>,
        sensitive: bool,
        view: Arc<RoleView>,
        server_sql: Option<Arc<str>>,
    ) -> Arc<Prepared> {
        let reads = st.map(Reads::from).unwrap_or_default();
        let unclassified_reads = reads.touched.is_empty().then(|| Arc::from([reads.clone()]));
        Arc::new(Prepared {
            sql,
            plan: st.and_then(|s| s.result.clone()),
            sensitive,
            view: Some(view),
            reads,
            server_sql,
            effect: st.map(|s| s.effect.clone()).unwrap_or(Effect::None),
            probes: st.map(|s| s.probes.clone()).unwrap_or_default(),
            lookup_values: st.map_or(0, |s| s.lookup_values),
            unclassified_reads,
        })
    }

    /// What an Execute of a portal bound with `sent_formats` reads: rows
    /// of classified columns count per portal, towards one per-statement
    /// limit, and their subject key may come in binary.
    fn portal_reads(&self, sent_formats: impl Iterator<Item = i16>) -> Arc<[Reads]> {
        if let Some(shared) = &self.unclassified_reads {
            return shared.clone();
        }
        Arc::from([Reads {
            fetched: Some(Arc::default()),
            formats: Some(sent_formats.collect()),
            ..self.reads.clone()
        }])
    }
}

/// A portal created with Bind.
#[derive(Debug)]
pub struct Portal {
    pub statement: Arc<Prepared>,
    /// Result formats the client asked for, one per rewritten-plan column.
    pub formats: Vec<i16>,
    /// Bind parameters as the audit trail records them.
    pub params: Option<Params>,
    /// What an Execute of it reads (see [`Prepared::portal_reads`]).
    pub reads: Arc<[Reads]>,
    /// Tells this Bind's portal from an earlier one of the same name.
    id: u64,
}

/// Prepared statements or portals by name. The unnamed one, which most
/// drivers use for every portal, is kept apart and found without hashing.
#[derive(Debug)]
pub struct Named<V> {
    unnamed: Option<V>,
    named: FastMap<String, V>,
}

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named {
            unnamed: None,
            named: FastMap::default(),
        }
    }
}

impl<V> Named<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }

    /// Set `name` to `v`, copying the name only when it is new.
    pub fn put(&mut self, name: &str, v: V) {
        if name.is_empty() {
            self.unnamed = Some(v);
            return;
        }
        match self.named.get_mut(name) {
            Some(slot) => *slot = v,
            None => insert_capped(&mut self.named, name.to_owned(), v),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.named.remove(name);
        }
    }

    pub fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }

    pub fn clear_named(&mut self) {
        self.named.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.unnamed.is_none() && self.named.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct SessionState {
    /// Prepared statements (Parse), "" for the unnamed one.
    pub statements: Named<Arc<Prepared>>,
    /// Portals (Bind), "" for the unnamed one.
    pub portals: Named<Portal>,
    /// Cursors opened with DECLARE.
    pub cursors: FastMap<String, Remembered>,
    /// Statements prepared with SQL PREPARE.
    pub sql_prepared: FastMap<String, Remembered>,
    /// Statements pgwarden prepared for simple-protocol SELECTs.
    pub server: crate::session::server_prepared::ServerPrepared,
    /// Requests sent that the server answers with a ReadyForQuery.
    pub sent_cycles: u64,
    /// An extended-protocol message came since the last Sync: the
    /// client's batch is open.
    pub extended_open: bool,
    /// Changes the server has not confirmed yet, oldest first.
    tentative: VecDeque<Tentative>,
    /// The current Sync block (or simple Query), counted from 0.
    block: u64,
    portal_ids: u64,
}

/// A change of what names mean, awaiting the server's answer.
#[derive(Debug)]
struct Tentative {
    change: Change,
    confirm: Arc<Confirm>,
    block: u64,
}

#[derive(Debug)]
enum Change {
    Statement {
        name: String,
        set: Arc<Prepared>,
    },
    Portal {
        name: String,
        id: u64,
    },
    /// The effects of a simple Query's statements, in order.
    Query(Vec<Effect>),
}

/// A name a request uses.
#[derive(Debug, Clone, Copy)]
pub enum Use<'n> {
    Statement(&'n str),
    Portal(&'n str),
    /// Cursors and SQL prepared statements (any of them).
    Sql,
}

impl Change {
    fn touches(&self, u: Use<'_>) -> bool {
        match (self, u) {
            (Change::Statement { name, .. }, Use::Statement(n)) => name == n,
            (Change::Portal { name, .. }, Use::Portal(n)) => name == n,
            (Change::Query(_), Use::Sql) => true,
            _ => false,
        }
    }
}

fn insert_capped<V>(map: &mut FastMap<String, V>, name: String, v: V) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(&name) {
        map.clear();
    }
    map.insert(name, v);
}

impl SessionState {
    /// Follow whether the client's extended-protocol batch is open.
    pub fn note_message(&mut self, msg: &crate::frontend::FrontendMessage<'_>) {
        use crate::frontend::FrontendMessage as M;
        match msg {
            M::Parse(_) | M::Bind(_) | M::Describe(_) | M::Execute(_) | M::Close(_) | M::Flush => {
                self.extended_open = true
            }
            M::Sync => self.extended_open = false,
            _ => {}
        }
    }

    /// The server keeps SQL and protocol prepared statements in one
    /// namespace, and cursors and portals in another: a name made or
    /// dropped in one is made or dropped in the other too.
    pub fn parse(&mut self, name: &str, p: Arc<Prepared>) {
        self.statements.put(name, p);
        self.sql_prepared.remove(name);
    }

    /// Bind creates a portal from a statement; returns it if known.
    /// `sent_formats` are the result format codes the Bind forwarded to
    /// the server asks for.
    pub fn bind(
        &mut self,
        portal: &str,
        statement: &str,
        formats: Vec<i16>,
        sent_formats: impl Iterator<Item = i16>,
        params: Option<Params>,
    ) -> Option<&Portal> {
        let statement = self.statements.get(statement)?.clone();
        let reads = statement.portal_reads(sent_formats);
        self.portal_ids += 1;
        self.cursors.remove(portal);
        self.portals.put(
            portal,
            Portal {
                statement,
                formats,
                params,
                reads,
                id: self.portal_ids,
            },
        );
        self.portals.get(portal)
    }

    /// A Sync or a simple Query starts a new block: after an error the
    /// server skips only to the end of the block it is in.
    pub fn next_block(&mut self) {
        self.block += 1;
    }

    /// The Parse of `name` just put in place awaits `confirm`.
    pub fn parse_tentative(&mut self, name: &str, confirm: Arc<Confirm>) {
        if let Some(set) = self.statements.get(name).cloned() {
            self.push_tentative(
                Change::Statement {
                    name: name.to_string(),
                    set,
                },
                confirm,
            );
        }
    }

    /// The Bind of portal `name` just put in place awaits `confirm`.
    pub fn bind_tentative(&mut self, name: &str, confirm: Arc<Confirm>) {
        if let Some(p) = self.portals.get(name) {
            let id = p.id;
            self.push_tentative(
                Change::Portal {
                    name: name.to_string(),
                    id,
                },
                confirm,
            );
        }
    }

    /// The effects of a simple Query's statements, applied, await
    /// `confirm`.
    pub fn query_tentative(&mut self, effects: Vec<Effect>, confirm: Arc<Confirm>) {
        if effects
            .iter()
            .any(|e| matches!(e, Effect::DeclareCursor { .. } | Effect::Prepare { .. }))
        {
            self.push_tentative(Change::Query(effects), confirm);
        }
    }

    fn push_tentative(&mut self, change: Change, confirm: Arc<Confirm>) {
        if self.tentative.len() >= MAX_ENTRIES {
            // A client that never reads its answers: forget everything
            // rather than trust anything (pgwarden's own statements are
            // still on the server).
            self.drop_names();
            self.tentative.clear();
        }
        self.tentative.push_back(Tentative {
            change,
            confirm,
            block: self.block,
        });
    }

    /// Take the server's answers so far into account, oldest first: a
    /// change it failed or skipped no longer holds.
    pub fn settle(&mut self) {
        while let Some(outcome) = self.tentative.front().and_then(|t| t.confirm.outcome()) {
            let t = self.tentative.pop_front().expect("front");
            if outcome.done {
                continue;
            }
            match t.change {
                Change::Statement { name, set } => {
                    if self
                        .statements
                        .get(&name)
                        .is_some_and(|p| Arc::ptr_eq(p, &set))
                    {
                        self.statements.remove(&name);
                    }
                }
                Change::Portal { name, id } => {
                    if self.portals.get(&name).is_some_and(|p| p.id == id) {
                        self.portals.remove(&name);
                    }
                }
                Change::Query(effects) => {
                    for e in effects.iter().skip(outcome.succeeded) {
                        match e {
                            Effect::DeclareCursor { name, cursor }
                                if self.cursors.get(name) == Some(cursor) =>
                            {
                                self.cursors.remove(name);
                            }
                            Effect::Prepare { name, statement }
                                if self.sql_prepared.get(name) == Some(statement) =>
                            {
                                self.sql_prepared.remove(name);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// The confirmation to wait for before `u` can be trusted: a change
    /// of it made in an earlier block that the server has not answered.
    /// (Within the block, a failure would make the server skip the use.)
    pub fn unanswered(&self, u: Use<'_>) -> Option<Arc<Confirm>> {
        self.tentative
            .iter()
            .find(|t| t.block < self.block && t.confirm.outcome().is_none() && t.change.touches(u))
            .map(|t| t.confirm.clone())
    }

    pub fn portal(&self, portal: &str) -> Option<&Portal> {
        self.portals.get(portal)
    }

    /// Close (`S` statement or `P` portal).
    pub fn close(&mut self, target: u8, name: &str) {
        if target == b'S' {
            self.statements.remove(name);
            self.sql_prepared.remove(name);
            self.server.forget(name);
        } else {
            self.portals.remove(name);
            self.cursors.remove(name);
        }
    }

    /// Apply what a statement did to session state.
    pub fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::None => {}
            Effect::DeclareCursor { name, cursor } => {
                self.portals.remove(name);
                insert_capped(&mut self.cursors, name.clone(), cursor.clone())
            }
            Effect::CloseCursor(Some(n)) => {
                self.cursors.remove(n);
                self.portals.remove(n);
            }
            Effect::CloseCursor(None) => {
                self.cursors.clear();
                self.portals.clear();
            }
            Effect::Prepare { name, statement } => {
                self.statements.remove(name);
                insert_capped(&mut self.sql_prepared, name.clone(), statement.clone())
            }
            Effect::Deallocate(Some(n)) => {
                self.sql_prepared.remove(n);
                self.statements.remove(n);
                self.server.forget(n);
            }
            Effect::Deallocate(None) => {
                // The unnamed statement is not among them.
                self.sql_prepared.clear();
                self.statements.clear_named();
                self.server.clear();
            }
            Effect::DiscardAll => {
                self.drop_names();
                self.server.clear();
            }
        }
    }

    /// Forget every cursor, statement and portal of the client.
    fn drop_names(&mut self) {
        self.cursors.clear();
        self.sql_prepared.clear();
        self.statements.clear();
        self.portals.clear();
    }
}

impl SessionLookup for SessionState {
    fn cursor(&self, name: &str) -> Option<Remembered> {
        self.cursors.get(name).cloned()
    }

    fn prepared(&self, name: &str) -> Option<Remembered> {
        self.sql_prepared.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(sql: &str) -> Arc<Prepared> {
        Prepared::new(sql.into(), None, false, None, Reads::default())
    }

    #[test]
    fn statement_portal_lifecycle() {
        let mut s = SessionState::default();
        s.parse("s1", prepared("select 1"));
        assert_eq!(
            s.bind("p1", "s1", vec![], [].into_iter(), None)
                .map(|p| p.statement.sql.clone())
                .as_deref(),
            Some("select 1")
        );
        assert!(s.portal("p1").is_some());
        assert!(s.bind("", "nope", vec![], [].into_iter(), None).is_none());
        s.close(b'S', "s1");
        assert!(s.statements.is_empty());
        s.close(b'P', "p1");
        assert!(s.portals.is_empty());
    }

    /// Portals of a statement reading classified columns count their rows
    /// each on its own; others share their statement's reads.
    #[test]
    fn classified_portals_count_rows_apart() {
        use crate::policy::{Action, QualifiedTable};
        let mut s = SessionState::default();
        s.parse("plain", prepared("select 1"));
        let touched = crate::analysis::Source {
            table: QualifiedTable {
                schema: "public".into(),
                table: "customers".into(),
            },
            column: "phone".into(),
            kind: "phone".into(),
            action: Action::Mask,
        };
        let reads = Reads {
            touched: Arc::new([touched].into()),
            ..Reads::default()
        };
        s.parse(
            "classified",
            Prepared::new("select phone".into(), None, true, None, reads),
        );
        let plain = |s: &mut SessionState, portal: &str| {
            s.bind(portal, "plain", vec![], [1].into_iter(), None)
                .map(|p| p.reads.clone())
                .unwrap()
        };
        let (a, b) = (plain(&mut s, "a"), plain(&mut s, "b"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a[0].fetched.is_none());

        let classified = |s: &mut SessionState, portal: &str| {
            s.bind(portal, "classified", vec![], [1, 0].into_iter(), None)
                .map(|p| p.reads.clone())
                .unwrap()
        };
        let (a, b) = (classified(&mut s, "a"), classified(&mut s, "b"));
        let (fa, fb) = (a[0].fetched.clone().unwrap(), b[0].fetched.clone().unwrap());
        assert!(!Arc::ptr_eq(&fa, &fb));
        assert_eq!(a[0].formats.as_deref(), Some(&[1, 0][..]));
        assert!(a[0].binary(0) && !a[0].binary(1));
    }

    /// A Parse the server rejects or skips leaves its name meaning
    /// nothing; one it confirms stands.
    #[test]
    fn names_follow_the_servers_answers() {
        use crate::backend::tracker::{Pending, Statement, Tracker};
        let mut s = SessionState::default();
        let mut t = Tracker::default();
        let parse = |s: &mut SessionState, t: &mut Tracker, name: &str, sql: &str| {
            s.parse(name, prepared(sql));
            let c = Arc::new(Confirm::default());
            s.parse_tentative(name, c.clone());
            t.push(Pending::Parse(Statement::confirmed(
                sql.into(),
                true,
                None,
                None,
                c,
            )));
            t.push(Pending::Sync);
            s.next_block();
        };
        parse(&mut s, &mut t, "s1", "select secret");
        // Not answered yet: a use in a later block must wait.
        assert!(s.unanswered(Use::Statement("s1")).is_some());
        t.observe(b'1', 5, None, None);
        t.observe(b'Z', 6, None, None);
        s.settle();
        assert!(s.unanswered(Use::Statement("s1")).is_none());
        // A second Parse of the name: the server says 42P05.
        parse(&mut s, &mut t, "s1", "select decoy");
        t.observe(b'E', 50, Some("42P05"), None);
        t.observe(b'Z', 6, None, None);
        s.settle();
        assert!(s.statements.get("s1").is_none());
        // A confirmed Parse stands.
        parse(&mut s, &mut t, "s2", "select 2");
        t.observe(b'1', 5, None, None);
        t.observe(b'Z', 6, None, None);
        s.settle();
        assert_eq!(s.statements.get("s2").map(|p| &*p.sql), Some("select 2"));
    }

    #[test]
    fn effects_track_cursors_and_sql_prepared() {
        let mut s = SessionState::default();
        s.apply(&Effect::DeclareCursor {
            name: "c".into(),
            cursor: Remembered::default(),
        });
        assert_eq!(s.cursor("c").map(|c| c.plan), Some(None));
        s.apply(&Effect::CloseCursor(None));
        assert_eq!(s.cursor("c"), None);
        s.apply(&Effect::Prepare {
            name: "p".into(),
            statement: Remembered::default(),
        });
        assert!(s.prepared("p").is_some());
        s.apply(&Effect::DiscardAll);
        assert!(s.prepared("p").is_none());
    }
}
