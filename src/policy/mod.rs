//! Policies: which columns hold personal data, and what each role may see.
//!
//! Loaded from the YAML files of the `policies` folder ([`load`]) into an
//! immutable [`Policy`]; a [`PolicyStore`] holds the one in force and swaps
//! it on reload only when the new one is valid. Query analysis asks the
//! policy for the kind of a column and for a role's action on a kind.
//! Anything a policy does not say is denied: a kind with no entry and no
//! `"*"` is `deny`, and users in no role get the `default` section (or
//! deny everything when there is none).

pub mod error;
pub mod kind;
pub mod load;

pub use error::{PolicyError, PolicyErrors};
pub use kind::{Action, KindDef, MaskSpec};

use crate::fastmap::FastMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A table as `schema.table`, with PostgreSQL's identifiers as stored in the
/// catalog (case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedTable {
    pub schema: String,
    pub table: String,
}

impl QualifiedTable {
    /// `schema.table`, each part optionally double-quoted.
    pub fn parse(s: &str) -> Option<QualifiedTable> {
        let parts = split_qualified(s)?;
        match parts.as_slice() {
            [schema, table] if !schema.is_empty() && !table.is_empty() => Some(QualifiedTable {
                schema: schema.clone(),
                table: table.clone(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for QualifiedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Split `a.b` / `"a.x"."b"` into parts; `None` for unbalanced quotes.
fn split_qualified(s: &str) -> Option<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut()?.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut()?.push(c),
        }
    }
    (!quoted).then_some(parts)
}

/// How classified columns may appear in predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lookup {
    /// Not at all.
    #[default]
    None,
    /// Only as `=` or `IN` against values.
    Equality,
}

/// What happens when a limit is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExceed {
    #[default]
    Block,
    Alert,
}

/// Volume limits of a role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub rows_per_query: Option<u64>,
    pub classified_rows_per_hour: Option<u64>,
    pub distinct_subjects: Option<SubjectBudget>,
    /// Distinct values one user may compare classified columns with in a
    /// sliding hour (equality lookups), all sessions together.
    pub lookups_per_hour: Option<u64>,
    /// The server's `statement_timeout` for the role's sessions, in
    /// milliseconds: set by pgwarden at login; the role may lower it, never
    /// raise or lift it.
    pub statement_timeout_ms: Option<u64>,
    pub on_exceed: OnExceed,
}

/// How many distinct data subjects (customers, account holders) one user
/// may see in a sliding window: alert at one count, block at another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectBudget {
    pub window_minutes: u32,
    pub alert: Option<u64>,
    pub block: Option<u64>,
}

/// Where, how and when a role's users may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRules {
    /// Source networks logins must come from; empty: any.
    pub networks: Vec<ipnet::IpNet>,
    /// A TLS client certificate, verified against `[tls] client_ca`, whose
    /// CN is the login.
    pub client_cert: bool,
    /// Allowed hours and days.
    pub hours: Option<Hours>,
    /// One login from two client addresses at once or within a time.
    pub second_address: Option<SecondAddress>,
}

/// A role's working hours in a time zone.
#[derive(Debug, Clone)]
pub struct Hours {
    /// Allowed days, Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight; `from > to` spans midnight.
    pub from: u16,
    pub to: u16,
    pub time_zone: jiff::tz::TimeZone,
    pub time_zone_name: String,
    pub on_exceed: OnExceed,
}

impl PartialEq for Hours {
    fn eq(&self, o: &Self) -> bool {
        (
            self.days,
            self.from,
            self.to,
            &self.time_zone_name,
            self.on_exceed,
        ) == (o.days, o.from, o.to, &o.time_zone_name, o.on_exceed)
    }
}

impl Eq for Hours {}

/// The second-address rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecondAddress {
    /// A login from another address this soon after the last session
    /// from the first one ended also counts (0: only while it is open).
    pub within_minutes: u32,
    /// `block` refuses the newer connection; `alert` (default) lets it in.
    pub on_exceed: OnExceed,
}

/// A role: its users and what it may see of each kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub users: Vec<String>,
    pub access: FastMap<String, Action>,
    /// The `"*"` entry: the action for kinds not listed.
    pub wildcard: Option<Action>,
    pub lookup: Lookup,
    pub limits: Limits,
    pub connect: ConnectRules,
}

impl Role {
    pub fn named(name: &str) -> Role {
        Role {
            name: name.to_string(),
            users: Vec::new(),
            access: FastMap::default(),
            wildcard: None,
            lookup: Lookup::None,
            limits: Limits::default(),
            connect: ConnectRules::default(),
        }
    }

    /// The default role when a policy has no `default` section.
    pub fn deny_all_default() -> Role {
        let mut r = Role::named("default");
        r.wildcard = Some(Action::Deny);
        r
    }

    /// The action for `kind`: its entry, else `"*"`, else deny.
    pub fn action(&self, kind: &str) -> Action {
        self.access
            .get(kind)
            .copied()
            .or(self.wildcard)
            .unwrap_or(Action::Deny)
    }

    /// A full-access role allows every kind; it is never blocked by
    /// analysis gaps, only logged.
    pub fn is_full_access(&self) -> bool {
        self.wildcard == Some(Action::Allow) && self.access.values().all(|a| *a == Action::Allow)
    }
}

/// The policies in force.
#[derive(Debug, Clone)]
pub struct Policy {
    /// table -> column -> kind.
    pub classify: FastMap<QualifiedTable, FastMap<String, String>>,
    /// table -> the column that names each row's data subject.
    pub subjects: FastMap<QualifiedTable, String>,
    /// Built-in and declared kinds.
    pub kinds: HashMap<String, KindDef>,
    /// Roles, sorted by name.
    pub roles: Vec<Role>,
    /// login -> role name.
    pub users: FastMap<String, String>,
    /// What users in no role get.
    pub default: Role,
}

impl Policy {
    /// A policy with nothing classified: everything passes as stored. Used
    /// when no `policies` folder is configured.
    pub fn empty() -> Policy {
        let mut default = Role::named("default");
        default.wildcard = Some(Action::Allow);
        Policy {
            classify: FastMap::default(),
            subjects: FastMap::default(),
            kinds: HashMap::new(),
            roles: Vec::new(),
            users: FastMap::default(),
            default,
        }
    }

    /// The role of a login.
    pub fn role_of(&self, user: &str) -> &Role {
        self.users
            .get(user)
            .and_then(|r| self.roles.iter().find(|role| &role.name == r))
            .unwrap_or(&self.default)
    }

    /// The kind of a column, if classified.
    pub fn kind_of(&self, table: &QualifiedTable, column: &str) -> Option<&str> {
        self.classify.get(table)?.get(column).map(String::as_str)
    }

    /// Number of classified columns.
    pub fn classified_columns(&self) -> usize {
        self.classify.values().map(HashMap::len).sum()
    }
}

/// The policy in force, swapped atomically on reload.
pub struct PolicyStore {
    dir: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
    /// Bumped after each swap, so a session holding the policy of the
    /// generation it read needs no lock while the generation is unchanged.
    generation: AtomicU64,
}

impl PolicyStore {
    /// Load the folder (or use an empty policy when there is none).
    pub fn open(dir: Option<&Path>) -> Result<PolicyStore, PolicyErrors> {
        let policy = match dir {
            Some(d) => load::load_dir(d)?,
            None => Policy::empty(),
        };
        Ok(PolicyStore {
            dir: dir.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(policy)),
            generation: AtomicU64::new(0),
        })
    }

    /// The generation of the policy in force: read it before
    /// [`Self::current`], and the policy read is at least that new.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-read the folder; on errors the policy in force stays.
    pub fn reload(&self) -> Result<Arc<Policy>, PolicyErrors> {
        let Some(dir) = &self.dir else {
            return Ok(self.current());
        };
        let policy = Arc::new(load::load_dir(dir)?);
        match self.current.write() {
            Ok(mut p) => *p = policy.clone(),
            Err(poisoned) => *poisoned.into_inner() = policy.clone(),
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(policy)
    }
}

#[cfg(test)]
mod tests;
