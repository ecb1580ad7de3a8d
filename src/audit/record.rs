//! One audit record: the JSON object written as one line of the trail.
//!
//! Field names are stable (documented in `docs/audit.md`). Fields that do
//! not apply to an event are left out rather than written as `null`. `ts`
//! and `seq` are set by the writer when the record is queued, and `mac`
//! when it is chained ([`super::chain`]).

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A classified column a statement read or wrote, with what the role's
/// rule did to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnUse {
    /// `schema.table`
    pub table: String,
    pub column: String,
    pub kind: String,
    /// `mask`, `hash` or `deny`.
    pub action: String,
}

/// One line of the trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    #[serde(default)]
    pub ts: String,
    /// Position in the trail, from 1, without gaps.
    #[serde(default)]
    pub seq: u64,
    /// `connect`, `auth_failed`, `query_start`, `query`, `disconnect`,
    /// `alert`, `policy_reload`, `start`, `stop`, `rotate`, `checkpoint`,
    /// `retention`, `recovered`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Client address and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// The SQL text as the client sent it (the whole message for a
    /// simple Query of several statements; see `statement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Which statement of a multi-statement simple Query (from 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<u32>,
    /// `simple` or `extended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Bind parameters of an extended-protocol statement: text, `\x` hex
    /// for binary values, or keyed hashes (`[audit] hash_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<Option<String>>>,
    /// Classified columns touched that the role may not see as stored.
    /// Shared: every execution of one statement lists the same columns.
    #[serde(default, skip_serializing_if = "no_columns")]
    pub columns: Arc<[ColumnUse]>,
    /// `forward`, `rewrite` or `refuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The CommandComplete tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Set when the statement (or login) failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Statements of a session (`disconnect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statements: Option<u64>,
    /// The rule an alert is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Event-specific details: an alert's evidence, a rotation's previous
    /// file, a checkpoint's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// HMAC-SHA256 of this record chained to the previous one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

fn no_columns(c: &Arc<[ColumnUse]>) -> bool {
    c.is_empty()
}

impl Record {
    pub fn new(event: &str) -> Record {
        Record {
            event: event.to_string(),
            ..Record::default()
        }
    }

    /// The time of the record, if it parses.
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.ts.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_are_left_out_and_round_trip() {
        let mut r = Record::new("query");
        r.seq = 3;
        r.user = Some("agent_li".into());
        r.rows = Some(0);
        r.columns = Arc::new([ColumnUse {
            table: "public.customers".into(),
            column: "phone".into(),
            kind: "phone".into(),
            action: "mask".into(),
        }]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("null"), "{json}");
        assert!(!json.contains("\"mac\""), "{json}");
        assert!(json.contains("\"rows\":0"), "{json}");
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
