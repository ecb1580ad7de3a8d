//! Per-connection protocol state kept by the frontend direction: prepared
//! statements and portals by name with their SQL, and open SQL cursors.
//!
//! Later stages (analysis, policy, audit) look up what an Execute or FETCH
//! will run here. Maps are capped so a client cannot grow them without end.

use std::collections::HashMap;
use std::sync::Arc;

/// Most entries kept in each map; PostgreSQL drops portals and cursors at
/// transaction end, which the frontend cannot always see, so the cap also
/// bounds stale entries.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct SessionState {
    /// Prepared statements (Parse or SQL PREPARE), "" for the unnamed one.
    pub statements: HashMap<String, Arc<str>>,
    /// Portals (Bind), "" for the unnamed one: the SQL they run.
    pub portals: HashMap<String, Arc<str>>,
    /// Cursors opened with DECLARE: name -> query.
    pub cursors: HashMap<String, Arc<str>>,
}

fn insert_capped(map: &mut HashMap<String, Arc<str>>, name: String, sql: Arc<str>) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(&name) {
        map.clear();
    }
    map.insert(name, sql);
}

impl SessionState {
    pub fn parse(&mut self, name: Option<String>, sql: Arc<str>) {
        insert_capped(&mut self.statements, name.unwrap_or_default(), sql);
    }

    /// Bind creates a portal from a statement; returns its SQL if known.
    pub fn bind(&mut self, portal: Option<String>, statement: Option<String>) -> Option<Arc<str>> {
        let sql = self
            .statements
            .get(statement.as_deref().unwrap_or(""))
            .cloned();
        if let Some(sql) = &sql {
            insert_capped(&mut self.portals, portal.unwrap_or_default(), sql.clone());
        }
        sql
    }

    pub fn portal_sql(&self, portal: Option<&str>) -> Option<Arc<str>> {
        self.portals.get(portal.unwrap_or("")).cloned()
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

    pub fn declare_cursor(&mut self, name: String, sql: Arc<str>) {
        insert_capped(&mut self.cursors, name, sql);
    }

    pub fn close_cursor(&mut self, name: Option<&str>) {
        match name {
            Some(n) => {
                self.cursors.remove(n);
            }
            None => self.cursors.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_portal_lifecycle() {
        let mut s = SessionState::default();
        s.parse(Some("s1".into()), "select 1".into());
        assert_eq!(
            s.bind(Some("p1".into()), Some("s1".into())).as_deref(),
            Some("select 1")
        );
        assert_eq!(s.portal_sql(Some("p1")).as_deref(), Some("select 1"));
        assert!(s.bind(None, Some("nope".into())).is_none());
        s.close(b'S', Some("s1"));
        assert!(s.statements.is_empty());
        s.close(b'P', Some("p1"));
        assert!(s.portals.is_empty());
    }
}
