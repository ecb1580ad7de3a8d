use super::*;
use std::path::PathBuf;

const CONTRACT: &str = include_str!("../../policies/example.yaml");

fn load(files: &[(&str, &str)]) -> Result<Policy, PolicyErrors> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(n, t)| (PathBuf::from(n), t.to_string()))
        .collect();
    load::load_sources(&sources)
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    load(files)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn contract_example_loads() {
    let p = load(&[("example.yaml", CONTRACT)]).unwrap();
    let customers = QualifiedTable::parse("public.customers").unwrap();
    assert_eq!(p.kind_of(&customers, "phone"), Some("phone"));
    assert_eq!(p.kind_of(&customers, "city"), None);
    let support = p.role_of("agent_li");
    assert_eq!(support.name, "support");
    assert_eq!(support.action("phone"), Action::Mask);
    assert_eq!(support.action("id_card"), Action::Deny);
    assert_eq!(support.lookup, Lookup::Equality);
    assert_eq!(support.limits.rows_per_query, Some(200));
    assert_eq!(support.limits.statement_timeout_ms, Some(30_000));
    assert_eq!(support.limits.lookups_per_hour, Some(300));
    assert_eq!(support.limits.on_exceed, OnExceed::Block);
    let analyst = p.role_of("analyst_wu");
    assert_eq!(analyst.action("person_name"), Action::Hash);
    assert_eq!(analyst.action("address"), Action::Deny);
    assert!(p.role_of("dba_zhang").is_full_access());
    assert!(!support.is_full_access());
    // Users in no role get the default section.
    assert_eq!(p.role_of("intern_sun").name, "default");
    assert_eq!(p.role_of("intern_sun").action("phone"), Action::Deny);
}

#[test]
fn kinds_not_listed_are_denied() {
    let p = load(&[(
        "a.yaml",
        "roles:\n  r:\n    users: [u]\n    access: {phone: allow}\n",
    )])
    .unwrap();
    assert_eq!(p.role_of("u").action("phone"), Action::Allow);
    assert_eq!(p.role_of("u").action("email"), Action::Deny);
    // No default section: deny everything.
    assert_eq!(p.role_of("nobody").action("phone"), Action::Deny);
}

#[test]
fn unknown_kind_and_action_name_line_and_key() {
    let e = errors(&[(
        "p.yaml",
        "classify:\n  public.customers:\n    phone: phnoe\nroles:\n  support:\n    users: [a]\n    access:\n      phone: maks\n",
    )]);
    assert!(
        e.iter()
            .any(|m| m
                .starts_with("p.yaml:3: classify.public.customers.phone: unknown kind `phnoe`")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("p.yaml:8: roles.support.access.phone: unknown action `maks`")),
        "{e:?}"
    );
}

#[test]
fn user_in_two_roles_across_files() {
    let e = errors(&[
        (
            "a.yaml",
            "roles:\n  support:\n    users: [li]\n    access: {'*': mask}\n",
        ),
        (
            "b.yaml",
            "roles:\n  analyst:\n    users:\n      - wu\n      - li\n    access: {'*': hash}\n",
        ),
    ]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "b.yaml:5: roles.analyst.users: user `li` is already in role `support` (a.yaml:3)"
        ),
        "{e:?}"
    );
}

#[test]
fn column_classified_twice_and_role_defined_twice() {
    let e = errors(&[
        (
            "a.yaml",
            "classify:\n  public.t:\n    c: phone\nroles:\n  r: {users: [x]}\n",
        ),
        (
            "b.yaml",
            "classify:\n  public.t:\n    c: email\nroles:\n  r: {users: [y]}\n",
        ),
    ]);
    assert!(
        e.iter().any(|m| m.contains(
            "b.yaml:3: classify.public.t.c: column classified twice (first at a.yaml:3)"
        )),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("b.yaml:5: roles.r: role defined twice (first at a.yaml:5)")),
        "{e:?}"
    );
}

#[test]
fn syntax_and_unknown_keys() {
    let e = errors(&[(
        "x.yaml",
        "roles:\n  r:\n    users: [a]\n    acess: {phone: allow}\n",
    )]);
    assert!(
        e[0].starts_with("x.yaml:4:") && e[0].contains("acess"),
        "{e:?}"
    );
    let e = errors(&[("y.yaml", "classify:\n  public.t: [oops\n")]);
    assert!(e[0].starts_with("y.yaml:"), "{e:?}");
    let e = errors(&[("z.yaml", "classify:\n  customers:\n    phone: phone\n")]);
    assert!(e[0].contains("expected schema.table"), "{e:?}");
    let e = errors(&[("w.yaml", "roles:\n  default:\n    users: [a]\n")]);
    assert!(e[0].contains("reserved"), "{e:?}");
    let e = errors(&[(
        "v.yaml",
        "roles:\n  r:\n    users: [a]\n    lookup: like\n    limits: {on_exceed: warn}\n",
    )]);
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn custom_kinds_with_masks() {
    let p = load(&[(
        "k.yaml",
        "kinds:\n  plate:\n    mask: {keep_first: 2, keep_last: 1}\n  salary:\n    mask: {replace: '[hidden]'}\nclassify:\n  public.cars:\n    plate: plate\n    pay: salary\n",
    )])
    .unwrap();
    assert_eq!(
        p.kinds["plate"].mask,
        MaskSpec::Keep {
            first: 2,
            last: 1,
            fill: '*'
        }
    );
    assert_eq!(p.kinds["salary"].mask, MaskSpec::Replace("[hidden]".into()));
    let e = errors(&[("k.yaml", "kinds:\n  phone:\n    mask: {replace: x}\n")]);
    assert!(e[0].contains("redefines a built-in kind"), "{e:?}");
}

#[test]
fn quoted_table_names() {
    let t = QualifiedTable::parse("\"My Schema\".\"a.b\"").unwrap();
    assert_eq!(t.schema, "My Schema");
    assert_eq!(t.table, "a.b");
    assert!(QualifiedTable::parse("a.b.c").is_none());
    assert!(QualifiedTable::parse("\"a.b").is_none());
}

#[test]
fn statement_timeouts_are_checked() {
    let p = load(&[(
        "a.yaml",
        "roles:\n  r:\n    users: [u]\n    access: {\"*\": mask}\n    limits: {statement_timeout_ms: 1500}\n",
    )])
    .unwrap();
    assert_eq!(p.role_of("u").limits.statement_timeout_ms, Some(1500));
    for bad in ["0", "3000000000"] {
        let e = errors(&[(
            "a.yaml",
            &format!(
                "roles:\n  r:\n    users: [u]\n    access: {{\"*\": mask}}\n    limits: {{statement_timeout_ms: {bad}}}\n"
            ),
        )]);
        assert!(
            e.iter().any(|m| m.contains("statement_timeout_ms")),
            "{bad}: {e:?}"
        );
    }
}
