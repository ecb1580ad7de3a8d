//! The schema of one database as pgwarden sees it: relations (tables,
//! views, materialized views, partitioned and foreign tables) with their
//! columns, looked up by name the way PostgreSQL does (search_path,
//! case-folded unquoted identifiers) or by the `table_oid`/`attnum` pair
//! that RowDescription carries.

use crate::fastmap::FastMap;
use crate::policy::QualifiedTable;

/// What kind of relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelKind {
    Table,
    View,
    MaterializedView,
    PartitionedTable,
    ForeignTable,
}

impl RelKind {
    fn from_relkind(k: &str) -> Option<RelKind> {
        Some(match k {
            "r" => RelKind::Table,
            "v" => RelKind::View,
            "m" => RelKind::MaterializedView,
            "p" => RelKind::PartitionedTable,
            "f" => RelKind::ForeignTable,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub attnum: i16,
    pub name: String,
    pub type_oid: u32,
    pub type_name: String,
}

#[derive(Debug, Clone)]
pub struct Relation {
    pub oid: u32,
    pub name: QualifiedTable,
    pub kind: RelKind,
    pub columns: Vec<Column>,
    /// The defining query of a view or materialized view.
    pub view_sql: Option<String>,
}

impl Relation {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One row of `queries/relations.sql`.
pub struct RelationRow {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub attnum: i16,
    pub column: String,
    pub type_oid: u32,
    pub type_name: String,
    pub view_sql: Option<String>,
}

/// All relations of a database.
#[derive(Debug, Default, Clone)]
pub struct Schema {
    relations: FastMap<QualifiedTable, Relation>,
    by_oid: FastMap<u32, QualifiedTable>,
    /// Relation name -> the schemas that have one of that name.
    by_name: FastMap<String, Vec<String>>,
}

/// PostgreSQL's folding of an identifier as written: unquoted names are
/// lower-cased (ASCII only, like the server), quoted ones kept.
pub fn fold_identifier(ident: &str, quoted: bool) -> String {
    if quoted {
        ident.to_string()
    } else {
        ident.to_ascii_lowercase()
    }
}

impl Schema {
    /// Build from catalog rows ordered by oid and attnum.
    pub fn from_rows(rows: impl IntoIterator<Item = RelationRow>) -> Schema {
        let mut s = Schema::default();
        for r in rows {
            let Some(kind) = RelKind::from_relkind(&r.kind) else {
                continue;
            };
            let name = QualifiedTable {
                schema: r.schema,
                table: r.name,
            };
            if !s.relations.contains_key(&name) {
                s.by_name
                    .entry(name.table.clone())
                    .or_default()
                    .push(name.schema.clone());
            }
            let rel = s.relations.entry(name.clone()).or_insert_with(|| Relation {
                oid: r.oid,
                name: name.clone(),
                kind,
                columns: Vec::new(),
                view_sql: r.view_sql,
            });
            rel.columns.push(Column {
                attnum: r.attnum,
                name: r.column,
                type_oid: r.type_oid,
                type_name: r.type_name,
            });
            s.by_oid.insert(r.oid, name);
        }
        s
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    pub fn get(&self, name: &QualifiedTable) -> Option<&Relation> {
        self.relations.get(name)
    }

    /// Every relation called `name`, in any schema.
    pub fn named(&self, name: &str) -> Vec<&Relation> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|schema| {
                self.relations.get(&QualifiedTable {
                    schema: schema.clone(),
                    table: name.to_string(),
                })
            })
            .collect()
    }

    pub fn by_oid(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(self.by_oid.get(&oid)?)
    }

    /// The relation and column a RowDescription field comes from.
    pub fn column_by_oid(&self, table_oid: u32, attnum: i16) -> Option<(&Relation, &Column)> {
        let rel = self.by_oid(table_oid)?;
        Some((rel, rel.columns.iter().find(|c| c.attnum == attnum)?))
    }

    /// Resolve an already-folded, possibly schema-qualified name. An
    /// unqualified name is looked up along `search_path` (already expanded:
    /// `$user` replaced by the login), after `pg_temp` objects, which this
    /// catalog does not hold: callers must treat sessions that created
    /// temporary objects as unresolvable.
    pub fn resolve(
        &self,
        schema: Option<&str>,
        name: &str,
        search_path: &[String],
    ) -> Option<&Relation> {
        match schema {
            Some(s) => self.get(&QualifiedTable {
                schema: s.to_string(),
                table: name.to_string(),
            }),
            None => search_path.iter().find_map(|s| {
                self.get(&QualifiedTable {
                    schema: s.clone(),
                    table: name.to_string(),
                })
            }),
        }
    }
}

/// Expand a `search_path` setting (`"$user", public`) for `user`.
pub fn expand_search_path(setting: &str, user: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (quoted, raw) = match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(inner) => (true, inner.replace("\"\"", "\"")),
                None => (false, s.to_string()),
            };
            if raw == "$user" {
                user.to_string()
            } else {
                fold_identifier(&raw, quoted)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(oid: u32, schema: &str, name: &str, kind: &str, attnum: i16, col: &str) -> RelationRow {
        RelationRow {
            oid,
            schema: schema.into(),
            name: name.into(),
            kind: kind.into(),
            attnum,
            column: col.into(),
            type_oid: 25,
            type_name: "text".into(),
            view_sql: (kind == "v").then(|| "SELECT 1".to_string()),
        }
    }

    #[test]
    fn resolves_like_postgres() {
        let s = Schema::from_rows([
            row(1, "public", "customers", "r", 1, "id"),
            row(1, "public", "customers", "r", 2, "phone"),
            row(2, "alice", "customers", "r", 1, "id"),
            row(3, "public", "Mixed", "v", 1, "x"),
        ]);
        assert_eq!(s.len(), 3);
        let path = expand_search_path("\"$user\", public", "alice");
        assert_eq!(path, vec!["alice", "public"]);
        // The user's own schema shadows public, as in PostgreSQL.
        assert_eq!(s.resolve(None, "customers", &path).unwrap().oid, 2);
        assert_eq!(
            s.resolve(Some("public"), "customers", &path).unwrap().oid,
            1
        );
        assert_eq!(
            s.resolve(
                None,
                &fold_identifier("CUSTOMERS", false),
                &["public".into()]
            )
            .unwrap()
            .oid,
            1
        );
        assert!(
            s.resolve(None, &fold_identifier("Mixed", false), &path)
                .is_none()
        );
        assert_eq!(
            s.resolve(None, &fold_identifier("Mixed", true), &path)
                .unwrap()
                .kind,
            RelKind::View
        );
        let (rel, col) = s.column_by_oid(1, 2).unwrap();
        assert_eq!(
            (rel.name.table.as_str(), col.name.as_str()),
            ("customers", "phone")
        );
        assert!(s.column_by_oid(1, 9).is_none());
    }

    #[test]
    fn search_path_forms() {
        assert_eq!(
            expand_search_path("Public, \"My Schema\"", "u"),
            vec!["public", "My Schema"]
        );
        assert!(expand_search_path("", "u").is_empty());
    }
}
