//! Reading policies: every `*.yaml` file of the policies folder is parsed
//! into raw structures that keep each key's line, merged, and checked. All
//! problems are collected, each naming file, line and key, so one run of
//! `pgwarden policy check` shows everything to fix.

use super::error::{PolicyError, PolicyErrors};
use super::kind::{Action, BUILTIN_KINDS, KindDef, MaskSpec};
use super::{
    ConnectRules, Hours, Limits, Lookup, OnExceed, Policy, QualifiedTable, Role, SecondAddress,
    SubjectBudget,
};
use crate::fastmap::FastMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

type Key = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    classify: HashMap<Key, HashMap<Key, Key>>,
    #[serde(default)]
    subjects: HashMap<Key, Key>,
    #[serde(default)]
    kinds: HashMap<Key, RawKind>,
    #[serde(default)]
    roles: HashMap<Key, RawRole>,
    default: Option<Spanned<RawDefault>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    mask: Option<RawMask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMask {
    keep_first: Option<usize>,
    keep_last: Option<usize>,
    fill: Option<char>,
    replace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    users: Vec<Key>,
    #[serde(default)]
    access: HashMap<Key, Key>,
    lookup: Option<Key>,
    limits: Option<RawLimits>,
    connect: Option<RawConnect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefault {
    #[serde(default)]
    access: HashMap<Key, Key>,
    lookup: Option<Key>,
    limits: Option<RawLimits>,
    connect: Option<RawConnect>,
}

/// The rules a role and the default section share.
struct RawRules<'a> {
    access: &'a HashMap<Key, Key>,
    lookup: Option<&'a Key>,
    limits: Option<&'a RawLimits>,
    connect: Option<&'a RawConnect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    rows_per_query: Option<u64>,
    classified_rows_per_hour: Option<u64>,
    distinct_subjects: Option<RawSubjects>,
    lookups_per_hour: Option<u64>,
    statement_timeout_ms: Option<u64>,
    on_exceed: Option<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjects {
    window_minutes: Option<u32>,
    alert: Option<u64>,
    block: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnect {
    #[serde(default)]
    networks: Vec<Key>,
    client_cert: Option<Key>,
    hours: Option<RawHours>,
    second_address: Option<RawSecondAddress>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    days: Option<Vec<Key>>,
    from: Key,
    to: Key,
    time_zone: Option<Key>,
    on_exceed: Option<Key>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecondAddress {
    within_minutes: Option<u32>,
    on_exceed: Option<Key>,
}

/// Collects errors for one file.
struct Ctx<'a> {
    file: &'a Path,
    errors: &'a mut Vec<PolicyError>,
}

impl Ctx<'_> {
    fn err(&mut self, line: u64, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }
}

fn line(k: &Key) -> u64 {
    k.referenced.line()
}

/// Where something was first defined, for "defined twice" messages.
#[derive(Clone)]
struct Origin {
    file: PathBuf,
    line: u64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Load every `*.yaml` in `dir` (sorted by name) into one policy.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect(),
        Err(e) => {
            return Err(PolicyErrors(vec![PolicyError {
                file: dir.to_path_buf(),
                line: 0,
                key: String::new(),
                message: format!("cannot read the policies folder: {e}"),
            }]));
        }
    };
    files.sort();
    let mut sources = Vec::new();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => sources.push((f.clone(), text)),
            Err(e) => {
                return Err(PolicyErrors(vec![PolicyError {
                    file: f.clone(),
                    line: 0,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                }]));
            }
        }
    }
    load_sources(&sources)
}

/// Parse and merge policy texts; `(path, text)` pairs in merge order.
pub fn load_sources(sources: &[(PathBuf, String)]) -> Result<Policy, PolicyErrors> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (path, text) in sources {
        match parse_file(text) {
            Ok(raw) => parsed.push((path.clone(), raw)),
            Err((line, message)) => errors.push(PolicyError {
                file: path.clone(),
                line,
                key: String::new(),
                message,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let policy = merge(parsed, &mut errors);
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyErrors(errors))
    }
}

fn parse_file(text: &str) -> Result<RawFile, (u64, String)> {
    if text.trim().is_empty() {
        return Ok(RawFile::default());
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options::<RawFile>(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        // The first line of the message is the reason; the rest is a snippet.
        let message = e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .to_string();
        (line, message)
    })
}

fn merge(files: Vec<(PathBuf, RawFile)>, errors: &mut Vec<PolicyError>) -> Policy {
    let mut kinds: HashMap<String, KindDef> = BUILTIN_KINDS
        .iter()
        .map(|k| (k.to_string(), KindDef::builtin(k)))
        .collect();
    // Custom kinds first: classification and access may use them from any file.
    for (path, raw) in &files {
        let mut cx = Ctx { file: path, errors };
        for (name, def) in &raw.kinds {
            let key = format!("kinds.{}", name.value);
            if BUILTIN_KINDS.contains(&name.value.as_str()) {
                cx.err(line(name), key, "redefines a built-in kind");
                continue;
            }
            if kinds.contains_key(&name.value) {
                cx.err(line(name), key, "kind defined twice");
                continue;
            }
            match mask_spec(def.mask.as_ref()) {
                Ok(mask) => {
                    kinds.insert(
                        name.value.clone(),
                        KindDef {
                            name: name.value.clone(),
                            mask,
                        },
                    );
                }
                Err(m) => cx.err(line(name), format!("{key}.mask"), m),
            }
        }
    }
    let mut classify: FastMap<QualifiedTable, FastMap<String, String>> = FastMap::default();
    let mut classified_at: HashMap<(QualifiedTable, String), Origin> = HashMap::new();
    let mut roles: Vec<Role> = Vec::new();
    let mut role_at: HashMap<String, Origin> = HashMap::new();
    let mut user_role: HashMap<String, (String, Origin)> = HashMap::new();
    let mut default: Option<(Role, Origin)> = None;
    let mut subjects: FastMap<QualifiedTable, String> = FastMap::default();

    for (path, raw) in &files {
        let mut cx = Ctx { file: path, errors };
        for (table, columns) in &raw.classify {
            let tkey = format!("classify.{}", table.value);
            let Some(qt) = QualifiedTable::parse(&table.value) else {
                cx.err(
                    line(table),
                    tkey,
                    "expected schema.table, such as public.customers",
                );
                continue;
            };
            for (column, kind) in columns {
                let ckey = format!("{tkey}.{}", column.value);
                if !kinds.contains_key(&kind.value) {
                    cx.err(line(kind), ckey, unknown_kind(&kind.value, &kinds));
                    continue;
                }
                let here = Origin {
                    file: path.clone(),
                    line: line(column),
                };
                let id = (qt.clone(), column.value.clone());
                if let Some(first) = classified_at.get(&id) {
                    cx.err(
                        here.line,
                        ckey,
                        format!("column classified twice (first at {first})"),
                    );
                    continue;
                }
                classified_at.insert(id, here);
                classify
                    .entry(qt.clone())
                    .or_default()
                    .insert(column.value.clone(), kind.value.clone());
            }
        }
        for (table, column) in &raw.subjects {
            let key = format!("subjects.{}", table.value);
            let Some(qt) = QualifiedTable::parse(&table.value) else {
                cx.err(
                    line(table),
                    key,
                    "expected schema.table, such as public.customers",
                );
                continue;
            };
            if column.value.is_empty() {
                cx.err(line(column), key, "expected the subject key column");
                continue;
            }
            match subjects.entry(qt) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    cx.err(line(table), key, "subject key given twice")
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(column.value.clone());
                }
            }
        }
        for (name, raw_role) in &raw.roles {
            let rkey = format!("roles.{}", name.value);
            let here = Origin {
                file: path.clone(),
                line: line(name),
            };
            if name.value == "default" {
                cx.err(here.line, rkey, "`default` is reserved for users in no role: use the top-level `default:` section");
                continue;
            }
            if let Some(first) = role_at.get(&name.value) {
                cx.err(
                    here.line,
                    rkey,
                    format!("role defined twice (first at {first})"),
                );
                continue;
            }
            role_at.insert(name.value.clone(), here);
            let rules = RawRules {
                access: &raw_role.access,
                lookup: raw_role.lookup.as_ref(),
                limits: raw_role.limits.as_ref(),
                connect: raw_role.connect.as_ref(),
            };
            let mut role = build_role(&mut cx, &rkey, &name.value, rules, &kinds);
            for u in &raw_role.users {
                let at = Origin {
                    file: path.clone(),
                    line: line(u),
                };
                match user_role.get(&u.value) {
                    Some((other, first)) => cx.err(
                        at.line,
                        format!("{rkey}.users"),
                        format!("user `{}` is already in role `{other}` ({first}); a user may be in one role only", u.value),
                    ),
                    None => {
                        user_role.insert(u.value.clone(), (name.value.clone(), at));
                        role.users.push(u.value.clone());
                    }
                }
            }
            roles.push(role);
        }
        if let Some(d) = &raw.default {
            let here = Origin {
                file: path.clone(),
                line: d.referenced.line(),
            };
            if let Some((_, first)) = &default {
                cx.err(
                    here.line,
                    "default",
                    format!("default defined twice (first at {first})"),
                );
            } else {
                let rules = RawRules {
                    access: &d.value.access,
                    lookup: d.value.lookup.as_ref(),
                    limits: d.value.limits.as_ref(),
                    connect: d.value.connect.as_ref(),
                };
                let role = build_role(&mut cx, "default", "default", rules, &kinds);
                default = Some((role, here));
            }
        }
    }
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    let users = user_role.into_iter().map(|(u, (r, _))| (u, r)).collect();
    Policy {
        classify,
        subjects,
        kinds,
        roles,
        users,
        // No default section: users in no role are denied every kind.
        default: default
            .map(|(r, _)| r)
            .unwrap_or_else(Role::deny_all_default),
    }
}

fn unknown_kind(kind: &str, kinds: &HashMap<String, KindDef>) -> String {
    let mut known: Vec<&str> = kinds.keys().map(String::as_str).collect();
    known.sort();
    format!(
        "unknown kind `{kind}` (known kinds: {}; declare others under `kinds:`)",
        known.join(", ")
    )
}

fn mask_spec(m: Option<&RawMask>) -> Result<MaskSpec, String> {
    let Some(m) = m else {
        return Ok(MaskSpec::Replace("***".to_string()));
    };
    match (&m.replace, m.keep_first, m.keep_last) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            Err("give either `replace` or `keep_first`/`keep_last`, not both".into())
        }
        (Some(r), None, None) => Ok(MaskSpec::Replace(r.clone())),
        (None, first, last) => Ok(MaskSpec::Keep {
            first: first.unwrap_or(0),
            last: last.unwrap_or(0),
            fill: m.fill.unwrap_or('*'),
        }),
    }
}

fn build_role(
    cx: &mut Ctx<'_>,
    key: &str,
    name: &str,
    rules: RawRules<'_>,
    kinds: &HashMap<String, KindDef>,
) -> Role {
    let mut role = Role::named(name);
    for (kind, action) in rules.access {
        let akey = format!("{key}.access.{}", kind.value);
        let Some(a) = Action::parse(&action.value) else {
            cx.err(
                line(action),
                akey,
                format!(
                    "unknown action `{}` (allow | mask | hash | deny)",
                    action.value
                ),
            );
            continue;
        };
        if kind.value == "*" {
            role.wildcard = Some(a);
        } else if kinds.contains_key(&kind.value) {
            role.access.insert(kind.value.clone(), a);
        } else {
            cx.err(line(kind), akey, unknown_kind(&kind.value, kinds));
        }
    }
    if let Some(l) = rules.lookup {
        match l.value.as_str() {
            "equality" => role.lookup = Lookup::Equality,
            "none" => role.lookup = Lookup::None,
            other => cx.err(
                line(l),
                format!("{key}.lookup"),
                format!("unknown lookup `{other}` (equality | none)"),
            ),
        }
    }
    if let Some(c) = rules.connect {
        role.connect = connect_rules(cx, key, c);
    }
    if let Some(lim) = rules.limits {
        for (n, v) in [
            ("rows_per_query", lim.rows_per_query),
            ("classified_rows_per_hour", lim.classified_rows_per_hour),
            ("lookups_per_hour", lim.lookups_per_hour),
            ("statement_timeout_ms", lim.statement_timeout_ms),
        ] {
            if v == Some(0) {
                cx.err(
                    0,
                    format!("{key}.limits.{n}"),
                    "must be at least 1 (leave it out for no limit)",
                );
            }
        }
        if lim
            .statement_timeout_ms
            .is_some_and(|ms| ms > i32::MAX as u64)
        {
            cx.err(
                0,
                format!("{key}.limits.statement_timeout_ms"),
                format!("must be at most {} (PostgreSQL's limit)", i32::MAX),
            );
        }
        let on_exceed = on_exceed(
            cx,
            &format!("{key}.limits.on_exceed"),
            lim.on_exceed.as_ref(),
            OnExceed::Block,
        );
        let distinct_subjects = lim
            .distinct_subjects
            .as_ref()
            .and_then(|d| subject_budget(cx, &format!("{key}.limits.distinct_subjects"), d));
        role.limits = Limits {
            rows_per_query: lim.rows_per_query,
            classified_rows_per_hour: lim.classified_rows_per_hour,
            distinct_subjects,
            lookups_per_hour: lim.lookups_per_hour,
            statement_timeout_ms: lim.statement_timeout_ms,
            on_exceed,
        };
    }
    role
}

fn on_exceed(cx: &mut Ctx<'_>, key: &str, value: Option<&Key>, default: OnExceed) -> OnExceed {
    let Some(o) = value else { return default };
    match o.value.as_str() {
        "block" => OnExceed::Block,
        "alert" => OnExceed::Alert,
        other => {
            cx.err(
                line(o),
                key,
                format!("unknown value `{other}` (block | alert)"),
            );
            default
        }
    }
}

/// Longest sliding window of a subject budget: one day.
const MAX_WINDOW_MINUTES: u32 = 24 * 60;

fn subject_budget(cx: &mut Ctx<'_>, key: &str, d: &RawSubjects) -> Option<SubjectBudget> {
    let window_minutes = d.window_minutes.unwrap_or(60);
    let mut ok = true;
    if !(1..=MAX_WINDOW_MINUTES).contains(&window_minutes) {
        cx.err(
            0,
            format!("{key}.window_minutes"),
            format!("must be between 1 and {MAX_WINDOW_MINUTES}"),
        );
        ok = false;
    }
    if d.alert.is_none() && d.block.is_none() {
        cx.err(0, key, "give `alert`, `block` or both");
        ok = false;
    }
    for (n, v) in [("alert", d.alert), ("block", d.block)] {
        if v == Some(0) {
            cx.err(0, format!("{key}.{n}"), "must be at least 1");
            ok = false;
        }
    }
    if let (Some(a), Some(b)) = (d.alert, d.block) {
        if a > b {
            cx.err(0, format!("{key}.alert"), "must not be above `block`");
            ok = false;
        }
    }
    ok.then_some(SubjectBudget {
        window_minutes,
        alert: d.alert,
        block: d.block,
    })
}

fn connect_rules(cx: &mut Ctx<'_>, key: &str, c: &RawConnect) -> ConnectRules {
    let mut rules = ConnectRules::default();
    for n in &c.networks {
        let text = n.value.trim();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => rules.networks.push(net.trunc()),
            Err(_) => cx.err(
                line(n),
                format!("{key}.connect.networks"),
                format!("`{text}` is not an address or network (such as 10.20.0.0/16)"),
            ),
        }
    }
    if let Some(cc) = &c.client_cert {
        match cc.value.as_str() {
            "required" => rules.client_cert = true,
            "optional" => rules.client_cert = false,
            other => cx.err(
                line(cc),
                format!("{key}.connect.client_cert"),
                format!("unknown value `{other}` (required | optional)"),
            ),
        }
    }
    if let Some(h) = &c.hours {
        rules.hours = hours(cx, &format!("{key}.connect.hours"), h);
    }
    if let Some(s) = &c.second_address {
        rules.second_address = Some(SecondAddress {
            within_minutes: s.within_minutes.unwrap_or(0).min(MAX_WINDOW_MINUTES),
            on_exceed: on_exceed(
                cx,
                &format!("{key}.connect.second_address.on_exceed"),
                s.on_exceed.as_ref(),
                OnExceed::Alert,
            ),
        });
    }
    rules
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(name: &str) -> Option<usize> {
    DAYS.iter().position(|d| name.eq_ignore_ascii_case(d))
}

/// `HH:MM` as minutes after midnight; `24:00` ends a day.
fn clock(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn hours(cx: &mut Ctx<'_>, key: &str, h: &RawHours) -> Option<Hours> {
    let mut days = [true; 7];
    let mut ok = true;
    if let Some(list) = &h.days {
        days = [false; 7];
        for d in list {
            let range = match d.value.split_once('-') {
                Some((a, b)) => day(a).zip(day(b)),
                None => day(&d.value).map(|x| (x, x)),
            };
            match range {
                Some((a, b)) if a <= b => days[a..=b].iter_mut().for_each(|x| *x = true),
                _ => {
                    cx.err(
                        line(d),
                        format!("{key}.days"),
                        format!(
                            "`{}` is not a day or range of days (mon..sun, such as mon-fri)",
                            d.value
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    let mut at = |k: &Key, name: &str| {
        let v = clock(&k.value);
        if v.is_none() {
            cx.err(
                line(k),
                format!("{key}.{name}"),
                format!("`{}` is not a time of day (HH:MM)", k.value),
            );
        }
        v
    };
    let (from, to) = (at(&h.from, "from"), at(&h.to, "to"));
    let tz_name = h
        .time_zone
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_else(|| "UTC".into());
    let tz = match jiff::tz::TimeZone::get(&tz_name) {
        Ok(tz) => Some(tz),
        Err(_) => {
            cx.err(
                h.time_zone.as_ref().map(line).unwrap_or(0),
                format!("{key}.time_zone"),
                format!("unknown time zone `{tz_name}` (an IANA name such as Asia/Shanghai)"),
            );
            None
        }
    };
    let on_exceed = on_exceed(
        cx,
        &format!("{key}.on_exceed"),
        h.on_exceed.as_ref(),
        OnExceed::Block,
    );
    let (from, to, time_zone) = (from?, to?, tz?);
    if from == to {
        cx.err(
            line(&h.from),
            format!("{key}.to"),
            "`from` and `to` are the same time",
        );
        return None;
    }
    ok.then_some(Hours {
        days,
        from,
        to,
        time_zone,
        time_zone_name: tz_name,
        on_exceed,
    })
}
