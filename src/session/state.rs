//! Per-connection protocol state kept by the frontend direction: prepared
//! statements and portals by name with their SQL and result plans, open
//! cursors and SQL prepared statements.
//!
//! Analysis looks up what an Execute, FETCH or EXECUTE will return here.
//! Maps are capped so a client cannot grow them without end.

use crate::analysis::{Effect, Remembered, ResultPlan, SessionLookup};
use crate::backend::tracker::Reads;
use crate::decision::RoleView;
use std::collections::HashMap;
use std::sync::Arc;

/// Most entries kept in each map; PostgreSQL drops portals and cursors at
/// transaction end, which the frontend cannot always see, so the cap also
/// bounds stale entries.
const MAX_ENTRIES: usize = 100_000;

/// A statement prepared with Parse.
#[derive(Debug, Clone)]
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
}

/// A portal created with Bind.
#[derive(Debug, Clone)]
pub struct Portal {
    pub statement: Prepared,
    /// Result formats the client asked for, one per rewritten-plan column.
    pub formats: Vec<i16>,
    /// Bind parameters as the audit trail records them.
    pub params: Option<Arc<[Option<String>]>>,
    /// The result format codes sent to the server with the Bind (the
    /// protocol's form: none, one for all, or one per column).
    pub sent_formats: Arc<[i16]>,
    /// Rows its Executes returned so far: they count towards one
    /// per-statement limit.
    pub fetched: Arc<std::sync::atomic::AtomicU64>,
}

impl Portal {
    /// What an Execute of this portal reads: its statement's reads,
    /// counting rows on the portal.
    pub fn reads(&self) -> Reads {
        Reads {
            fetched: Some(self.fetched.clone()),
            formats: Some(self.sent_formats.clone()),
            ..self.statement.reads.clone()
        }
    }
}

#[derive(Debug, Default)]
pub struct SessionState {
    /// Prepared statements (Parse), "" for the unnamed one.
    pub statements: HashMap<String, Prepared>,
    /// Portals (Bind), "" for the unnamed one.
    pub portals: HashMap<String, Portal>,
    /// Cursors opened with DECLARE.
    pub cursors: HashMap<String, Remembered>,
    /// Statements prepared with SQL PREPARE.
    pub sql_prepared: HashMap<String, Remembered>,
}

fn insert_capped<V>(map: &mut HashMap<String, V>, name: String, v: V) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(&name) {
        map.clear();
    }
    map.insert(name, v);
}

impl SessionState {
    pub fn parse(&mut self, name: Option<String>, p: Prepared) {
        insert_capped(&mut self.statements, name.unwrap_or_default(), p);
    }

    /// Bind creates a portal from a statement; returns it if known.
    pub fn bind(
        &mut self,
        portal: Option<String>,
        statement: Option<&str>,
        formats: Vec<i16>,
        sent_formats: Arc<[i16]>,
        params: Option<Arc<[Option<String>]>>,
    ) -> Option<&Portal> {
        let p = self.statements.get(statement.unwrap_or(""))?.clone();
        let name = portal.unwrap_or_default();
        insert_capped(
            &mut self.portals,
            name.clone(),
            Portal {
                statement: p,
                formats,
                sent_formats,
                params,
                fetched: Arc::default(),
            },
        );
        self.portals.get(&name)
    }

    pub fn portal(&self, portal: Option<&str>) -> Option<&Portal> {
        self.portals.get(portal.unwrap_or(""))
    }

    /// Close (`S` statement or `P` portal).
    pub fn close(&mut self, target: u8, name: Option<&str>) {
        let name = name.unwrap_or("");
        if target == b'S' {
            self.statements.remove(name);
        } else {
            self.portals.remove(name);
        }
    }

    /// Apply what a statement did to session state.
    pub fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::None => {}
            Effect::DeclareCursor { name, cursor } => {
                insert_capped(&mut self.cursors, name.clone(), cursor.clone())
            }
            Effect::CloseCursor(Some(n)) => {
                self.cursors.remove(n);
            }
            Effect::CloseCursor(None) => self.cursors.clear(),
            Effect::Prepare { name, statement } => {
                insert_capped(&mut self.sql_prepared, name.clone(), statement.clone())
            }
            Effect::Deallocate(Some(n)) => {
                self.sql_prepared.remove(n);
            }
            Effect::Deallocate(None) => self.sql_prepared.clear(),
            Effect::DiscardAll => {
                self.cursors.clear();
                self.sql_prepared.clear();
                self.statements.clear();
                self.portals.clear();
            }
        }
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

    fn prepared(sql: &str) -> Prepared {
        Prepared {
            sql: sql.into(),
            plan: None,
            sensitive: false,
            view: None,
            reads: Reads::default(),
        }
    }

    #[test]
    fn statement_portal_lifecycle() {
        let mut s = SessionState::default();
        s.parse(Some("s1".into()), prepared("select 1"));
        assert_eq!(
            s.bind(Some("p1".into()), Some("s1"), vec![], Arc::default(), None)
                .map(|p| p.statement.sql.clone())
                .as_deref(),
            Some("select 1")
        );
        assert!(s.portal(Some("p1")).is_some());
        assert!(
            s.bind(None, Some("nope"), vec![], Arc::default(), None)
                .is_none()
        );
        s.close(b'S', Some("s1"));
        assert!(s.statements.is_empty());
        s.close(b'P', Some("p1"));
        assert!(s.portals.is_empty());
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
