//! `pgwarden audit search` and `pgwarden audit report`: read the trail
//! back, one line at a time (nothing is loaded whole), oldest first.

use super::files;
use super::record::Record;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// Which records to show. Every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub role: Option<String>,
    /// Client address, with or without the port.
    pub client: Option<String>,
    pub session: Option<String>,
    pub since: Option<jiff::Timestamp>,
    pub until: Option<jiff::Timestamp>,
    /// `table` or `schema.table`.
    pub table: Option<String>,
    pub column: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub event: Option<String>,
    /// Case-insensitive text in the SQL, message or detail.
    pub text: Option<String>,
}

/// A time given on the command line: RFC 3339, or a date (midnight UTC).
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::Date>()
        .map_err(|e| format!("{s}: not an RFC 3339 time or a date: {e}"))
        .and_then(|d| {
            jiff::tz::TimeZone::UTC
                .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
                .map_err(|e| e.to_string())
        })
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        if !eq(&self.user, &r.user)
            || !eq(&self.role, &r.role)
            || !eq(&self.session, &r.session)
            || !eq(&self.decision, &r.decision)
        {
            return false;
        }
        if self.event.as_ref().is_some_and(|e| *e != r.event) {
            return false;
        }
        if let Some(c) = &self.client {
            let have = r.client.as_deref().unwrap_or("");
            let host = have.rsplit_once(':').map_or(have, |(h, _)| h);
            if have != c && host != c && host.trim_matches(['[', ']']) != c {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = r.timestamp() else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        if self.table.is_some() || self.column.is_some() || self.kind.is_some() {
            let hit = r.columns.iter().any(|c| {
                self.table.as_ref().is_none_or(|t| {
                    c.table == *t || c.table.rsplit_once('.').is_some_and(|(_, n)| n == t)
                }) && self.column.as_ref().is_none_or(|k| c.column == *k)
                    && self.kind.as_ref().is_none_or(|k| c.kind == *k)
            });
            if !hit {
                return false;
            }
        }
        if let Some(t) = &self.text {
            let t = t.to_lowercase();
            let hay = [r.sql.as_deref(), r.message.as_deref(), r.rule.as_deref()];
            let in_detail = r
                .detail
                .as_ref()
                .is_some_and(|d| d.to_string().to_lowercase().contains(&t));
            if !in_detail && !hay.iter().flatten().any(|h| h.to_lowercase().contains(&t)) {
                return false;
            }
        }
        true
    }
}

/// Call `each` with every record of the trail in order, with its raw line.
/// Lines that do not parse are skipped (`audit verify` reports them).
pub fn scan(
    dir: &Path,
    mut each: impl FnMut(&Record, &str) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for path in files::list(dir)? {
        let mut reader = BufReader::new(std::fs::File::open(&path)?);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let text = line.trim_end_matches('\n');
            if let Ok(r) = serde_json::from_str::<Record>(text) {
                each(&r, text)?;
            }
        }
    }
    Ok(())
}

/// One readable line per record.
pub fn format_row(r: &Record) -> String {
    let mut s = format!("{} #{} {}", r.ts, r.seq, r.event);
    let mut field = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            s.push_str(&format!(" {name}={v}"));
        }
    };
    field("user", r.user.clone());
    field("role", r.role.clone());
    field("client", r.client.clone());
    field("db", r.database.clone());
    field("decision", r.decision.clone());
    field("rows", r.rows.map(|n| n.to_string()));
    field("ms", r.duration_ms.map(|d| format!("{d:.2}")));
    field("sqlstate", r.sqlstate.clone());
    field("rule", r.rule.clone());
    if !r.columns.is_empty() {
        let cols: Vec<String> = r
            .columns
            .iter()
            .map(|c| format!("{}.{}:{}:{}", c.table, c.column, c.kind, c.action))
            .collect();
        field("columns", Some(cols.join(",")));
    }
    if let Some(sql) = &r.sql {
        let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        s.push_str(&format!(" sql={one_line:?}"));
    }
    if let Some(m) = &r.message {
        s.push_str(&format!(" message={m:?}"));
    }
    if let Some(d) = &r.detail {
        s.push_str(&format!(" detail={d}"));
    }
    s
}

/// Print matching records; returns how many matched.
pub fn search(
    dir: &Path,
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
) -> std::io::Result<u64> {
    let mut n = 0;
    scan(dir, |r, line| {
        if filter.matches(r) {
            n += 1;
            if json {
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "{}", format_row(r))?;
            }
        }
        Ok(())
    })?;
    Ok(n)
}

/// One user's day in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DayOfUser {
    pub day: String,
    pub user: String,
    pub role: String,
    pub sessions: u64,
    pub statements: u64,
    /// Statements that touched classified columns.
    pub classified_statements: u64,
    /// Rows returned by statements touching each kind.
    pub classified_rows: BTreeMap<String, u64>,
    pub refusals: u64,
    pub errors: u64,
    pub alerts: u64,
    pub auth_failures: u64,
    pub clients: Vec<String>,
}

/// Per user and day: statements, classified rows by kind, refusals,
/// alerts. Only records matching `filter` count.
pub fn report(dir: &Path, filter: &Filter) -> std::io::Result<Vec<DayOfUser>> {
    let mut days: BTreeMap<(String, String), DayOfUser> = BTreeMap::new();
    scan(dir, |r, _| {
        if !filter.matches(r) {
            return Ok(());
        }
        let Some(user) = &r.user else { return Ok(()) };
        let day = r.ts.get(..10).unwrap_or("").to_string();
        let d = days
            .entry((day.clone(), user.clone()))
            .or_insert_with(|| DayOfUser {
                day,
                user: user.clone(),
                ..DayOfUser::default()
            });
        if let Some(role) = &r.role {
            d.role = role.clone();
        }
        if let Some(c) = &r.client {
            let host = c
                .rsplit_once(':')
                .map_or(c.as_str(), |(h, _)| h)
                .to_string();
            if !d.clients.contains(&host) {
                d.clients.push(host);
            }
        }
        match r.event.as_str() {
            "connect" => d.sessions += 1,
            "auth_failed" => d.auth_failures += 1,
            "alert" => d.alerts += 1,
            "query" => {
                d.statements += 1;
                if r.decision.as_deref() == Some("refuse") {
                    d.refusals += 1;
                } else if r.sqlstate.is_some() {
                    d.errors += 1;
                }
                if !r.columns.is_empty() {
                    d.classified_statements += 1;
                    let mut kinds: Vec<&str> = r.columns.iter().map(|c| c.kind.as_str()).collect();
                    kinds.sort();
                    kinds.dedup();
                    for k in kinds {
                        *d.classified_rows.entry(k.to_string()).or_default() += r.rows.unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(days.into_values().collect())
}

/// The report as a readable table.
pub fn format_report(days: &[DayOfUser]) -> String {
    let mut s = String::from(
        "day         user              role          sessions statements classified refused errors alerts auth_failed  classified rows by kind; clients\n",
    );
    for d in days {
        let kinds: Vec<String> = d
            .classified_rows
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        s.push_str(&format!(
            "{:<11} {:<17} {:<13} {:>8} {:>10} {:>10} {:>7} {:>6} {:>6} {:>11}  {}; {}\n",
            d.day,
            d.user,
            d.role,
            d.sessions,
            d.statements,
            d.classified_statements,
            d.refusals,
            d.errors,
            d.alerts,
            d.auth_failures,
            if kinds.is_empty() {
                "-".to_string()
            } else {
                kinds.join(" ")
            },
            d.clients.join(" ")
        ));
    }
    s
}
