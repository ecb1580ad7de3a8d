use super::*;
use crate::catalog::schema::RelationRow;
use crate::policy::load::load_sources;
use std::collections::HashMap;
use std::path::PathBuf;

const POLICY: &str = include_str!("../../policies/example.yaml");
/// A role that hashes and may look up by equality.
const HASHER: &str = "roles:\n  hasher:\n    users: [hash_he]\n    access: {person_name: hash, phone: hash, \"*\": deny}\n    lookup: equality\n";

fn rows(
    schema: &str,
    table: &str,
    oid: u32,
    kind: &str,
    cols: &[&str],
    view: Option<&str>,
) -> Vec<RelationRow> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| RelationRow {
            oid,
            schema: schema.into(),
            name: table.into(),
            kind: kind.into(),
            attnum: i as i16 + 1,
            column: c.to_string(),
            type_oid: 25,
            type_name: "text".into(),
            view_sql: view.map(str::to_string),
        })
        .collect()
}

fn schema(with_archive: bool) -> Schema {
    let mut r = Vec::new();
    r.extend(rows(
        "public",
        "customers",
        1,
        "r",
        &[
            "id",
            "name",
            "phone",
            "id_number",
            "address",
            "email",
            "city",
        ],
        None,
    ));
    r.extend(rows(
        "public",
        "shipments",
        2,
        "r",
        &[
            "id",
            "customer_id",
            "recipient_name",
            "recipient_phone",
            "recipient_address",
            "status",
        ],
        None,
    ));
    r.extend(rows(
        "public",
        "credit_reports",
        3,
        "r",
        &["id", "customer_id", "bank_card", "report"],
        None,
    ));
    r.extend(rows(
        "public",
        "customer_contacts",
        4,
        "v",
        &["id", "name", "phone"],
        Some(" SELECT c.id,\n    c.name,\n    c.phone\n   FROM customers c\n  WHERE c.id_number IS NOT NULL;"),
    ));
    r.extend(rows(
        "public",
        "id_view",
        5,
        "v",
        &["id", "ident"],
        Some(" SELECT customers.id,\n    \"left\"(customers.id_number, 6) AS ident\n   FROM customers;"),
    ));
    r.extend(rows(
        "pg_catalog",
        "pg_class",
        6,
        "r",
        &["oid", "relname"],
        None,
    ));
    r.extend(rows(
        "pg_catalog",
        "pg_stats",
        7,
        "v",
        &["tablename", "most_common_vals"],
        None,
    ));
    r.extend(rows("public", "notes", 8, "r", &["id", "body"], None));
    r.extend(rows("archive", "notes", 9, "r", &["id", "body"], None));
    if with_archive {
        r.extend(rows(
            "archive",
            "customers",
            10,
            "r",
            &["id", "phone"],
            None,
        ));
    }
    Schema::from_rows(r)
}

#[derive(Default)]
struct Session {
    cursors: HashMap<String, Remembered>,
}

impl SessionLookup for Session {
    fn cursor(&self, name: &str) -> Option<Remembered> {
        self.cursors.get(name).cloned()
    }
    fn prepared(&self, _: &str) -> Option<Remembered> {
        None
    }
}

fn run_with(user: &str, sql: &str, session: &dyn SessionLookup) -> Result<Analysis, Refusal> {
    run_in(schema(false), user, sql, session)
}

fn run_in(
    schema: Schema,
    user: &str,
    sql: &str,
    session: &dyn SessionLookup,
) -> Result<Analysis, Refusal> {
    let policy = load_sources(&[
        (PathBuf::from("example.yaml"), POLICY.to_string()),
        (PathBuf::from("hasher.yaml"), HASHER.to_string()),
    ])
    .unwrap();
    let env = Env {
        policy: &policy,
        role: policy.role_of(user),
        schema: &schema,
        user,
        session,
        observe: false,
        text: None,
    };
    analyze(sql, &env)
}

fn run(user: &str, sql: &str) -> Result<Analysis, Refusal> {
    run_with(user, sql, &NoSession)
}

/// Column actions of the only statement, as short names.
fn actions(user: &str, sql: &str) -> Vec<&'static str> {
    let a = run(user, sql).unwrap_or_else(|e| panic!("{sql}: refused: {e}"));
    assert_eq!(a.statements.len(), 1);
    match &a.statements[0].result {
        None => vec![],
        Some(p) => p
            .columns
            .iter()
            .map(|c| match c {
                ColumnAction::Pass => "pass",
                ColumnAction::Mask { .. } => "mask",
                ColumnAction::Hash => "hash",
                ColumnAction::Redact => "redact",
            })
            .collect(),
    }
}

fn refused(user: &str, sql: &str) -> String {
    match run(user, sql) {
        Ok(a) => panic!("{sql}: allowed: {a:?}"),
        Err(e) => e.message,
    }
}

const SUPPORT: &str = "agent_li";
const ANALYST: &str = "analyst_wu";

/// The text the server gets for `sql`.
fn server(user: &str, sql: &str) -> String {
    let a = run(user, sql).unwrap_or_else(|e| panic!("{sql}: refused: {e}"));
    a.server_text(sql)
        .unwrap()
        .unwrap_or_else(|| sql.to_string())
}

#[test]
fn masked_relations_are_read_through_their_masks() {
    let sql = "SELECT id, phone, name FROM customers WHERE id = 1";
    // The server masks: nothing is left for the result stage.
    assert_eq!(actions(SUPPORT, sql), Vec::<&str>::new());
    let text = server(SUPPORT, sql);
    assert!(
        text.starts_with(
            "SELECT id, phone, name FROM (SELECT \"id\", (CASE WHEN char_length(\"name\")"
        ),
        "{text}"
    );
    assert!(text.contains(" AS \"phone\""), "{text}");
    assert!(
        text.ends_with("FROM \"public\".\"customers\") AS \"customers\" WHERE id = 1"),
        "{text}"
    );
    // Only the columns the statement reads are selected.
    assert!(!text.contains("address"), "{text}");
    let text = server(SUPPORT, "SELECT count(*) FROM customers");
    assert!(
        text.contains("(SELECT  FROM \"public\".\"customers\")"),
        "{text}"
    );
    // Columns renamed by position keep every position (denied ones NULL).
    let text = server(SUPPORT, "SELECT p FROM customers AS c(a, b, p) WHERE a = 1");
    assert!(text.contains("NULL::text AS \"id_number\""), "{text}");
    // An alias stays the client's.
    let text = server(SUPPORT, "SELECT c.phone FROM public.customers AS c");
    assert!(
        text.ends_with("FROM \"public\".\"customers\") AS c"),
        "{text}"
    );
    // Unclassified relations and full reads of clean ones are untouched.
    assert_eq!(
        server(SUPPORT, "SELECT body FROM public.notes"),
        "SELECT body FROM public.notes"
    );
    // Hashed columns stay raw and are hashed on the way out.
    assert_eq!(
        actions(ANALYST, "SELECT name, phone FROM customers"),
        ["hash", "hash"]
    );
    // Views: the view's masked columns are masked over the view.
    let text = server(SUPPORT, "SELECT phone FROM customer_contacts");
    assert!(
        text.contains("FROM \"public\".\"customer_contacts\") AS \"customer_contacts\""),
        "{text}"
    );
}

#[test]
fn quoted_unknown_column_is_refused() {
    let m = refused(SUPPORT, "SELECT \"PHONE\" FROM customers");
    assert!(m.contains("does not know column"), "{m}");
}

#[test]
fn denied_columns_refused_everywhere() {
    for sql in [
        "SELECT id_number FROM customers",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT c FROM customers c",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT id FROM customers WHERE id_number = '1'",
        "SELECT count(*) FROM customers GROUP BY id_number",
        "SELECT id FROM customers ORDER BY id_number",
        "SELECT (SELECT id_number FROM customers LIMIT 1)",
        "SELECT report FROM credit_reports",
        "SELECT length(report) FROM credit_reports",
        "SELECT ident FROM id_view",
        "SELECT * FROM id_view",
        "WITH x AS (SELECT id_number FROM customers) SELECT 1 FROM x",
    ] {
        let m = refused(SUPPORT, sql);
        assert!(m.contains("denied to role support"), "{sql}: {m}");
    }
    let m = refused(ANALYST, "SELECT address FROM customers");
    assert!(
        m.contains("column public.customers.address (address) is denied to role analyst"),
        "{m}"
    );
}

#[test]
fn hashed_flows_through_subqueries_ctes_views_and_unions() {
    for (sql, want) in [
        (
            "SELECT x FROM (SELECT phone AS x FROM customers) s",
            vec!["hash"],
        ),
        (
            "WITH t(p) AS (SELECT phone FROM customers) SELECT p FROM t",
            vec!["hash"],
        ),
        (
            "SELECT phone FROM customers UNION ALL SELECT recipient_phone FROM shipments",
            vec!["hash"],
        ),
        (
            "SELECT (SELECT phone FROM customers WHERE id = 1)",
            vec!["hash"],
        ),
        (
            "SELECT t.p FROM customers c, LATERAL (SELECT c.phone AS p) t",
            vec!["hash"],
        ),
        (
            "WITH RECURSIVE r(p, n) AS (SELECT phone, 1 FROM customers UNION ALL SELECT p, n + 1 FROM r WHERE n < 3) SELECT p, n FROM r",
            vec!["hash", "pass"],
        ),
    ] {
        assert_eq!(actions(ANALYST, sql), want, "{sql}");
    }
    // Two kinds in one column, or positions lost: refused, never guessed.
    for sql in [
        "SELECT phone FROM customers UNION ALL SELECT name FROM customers",
        "SELECT * FROM (SELECT * FROM generate_series(1, 2) g UNION ALL SELECT phone FROM customers) s",
        "SELECT x FROM (SELECT 1, phone FROM customers UNION ALL SELECT * FROM generate_series(1,2) g) s(y, x)",
        // Values of the client's choice next to hashed ones: a pseudonym
        // dictionary, or an equality test by count.
        "SELECT phone FROM customers WHERE id = 1 UNION ALL SELECT '15510733112'",
        "SELECT count(DISTINCT p) FROM (SELECT phone p FROM customers UNION ALL SELECT 'x') x",
        "SELECT x FROM customers c, LATERAL (VALUES (c.phone), ('1')) v(x)",
        "WITH RECURSIVE r(p) AS (SELECT phone FROM customers UNION ALL SELECT '1' FROM r) SELECT p FROM r",
    ] {
        run(ANALYST, sql).expect_err(sql);
    }
}

#[test]
fn masked_values_may_be_computed_upon_by_the_server() {
    // Over masks, every computation is harmless: allowed, rewritten, and
    // nothing left for the result stage.
    for sql in [
        "SELECT upper(phone) FROM customers",
        "SELECT phone::varchar(5) FROM customers",
        "SELECT min(phone), string_agg(phone, ',') FROM customers",
        "SELECT row_to_json(c) FROM (SELECT id, phone FROM customers) c",
        "SELECT count(nullif(phone, '13812345678')) FROM customers",
        "SELECT generate_series(1, length(phone)) FROM customers",
        "SELECT id FROM customers ORDER BY phone LIMIT 1",
        "SELECT id FROM customers WHERE phone LIKE '138%'",
        "SELECT id FROM customers WHERE substr(phone, 4, 1) = '5'",
        "SELECT 1 / (CASE WHEN substr(phone, 1, 1) = '1' THEN 0 ELSE 1 END) FROM customers",
        "SELECT * FROM customer_contacts",
        "SELECT x FROM (SELECT phone AS x FROM customers) s",
    ] {
        assert_eq!(actions(SUPPORT, sql), Vec::<&str>::new(), "{sql}");
        assert!(server(SUPPORT, sql).contains("FROM \"public\"."), "{sql}");
    }
}

#[test]
fn raw_values_are_never_computed_upon() {
    for (user, sql) in [
        (ANALYST, "SELECT upper(phone) FROM customers"),
        (ANALYST, "SELECT phone LIKE '138%' FROM customers"),
        (ANALYST, "SELECT left(phone, 3) FROM customers"),
        (ANALYST, "SELECT count(nullif(phone, '1')) FROM customers"),
        (
            ANALYST,
            "SELECT num_nulls(nullif(phone, '1')) FROM customers",
        ),
        (
            ANALYST,
            "SELECT generate_series(1, length(phone)) FROM customers",
        ),
        (
            ANALYST,
            "SELECT x FROM customers, generate_series(1, length(phone)) x",
        ),
        (ANALYST, "SELECT ROW(phone, id) FROM customers"),
        (ANALYST, "SELECT c FROM customers c"),
        (
            ANALYST,
            "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT binary)",
        ),
        (
            ANALYST,
            "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT csv, DELIMITER '|')",
        ),
        (
            ANALYST,
            "SELECT CASE WHEN id = 1 THEN phone END FROM customers",
        ),
        (
            SUPPORT,
            "UPDATE customers SET city = 'x' WHERE substr(phone, 4, 1) = '5'",
        ),
        (
            SUPPORT,
            "UPDATE customers SET city = 'x' WHERE id = 1 RETURNING upper(phone)",
        ),
        (SUPPORT, "DELETE FROM customers WHERE phone LIKE '1%'"),
        (
            "hash_he",
            "SELECT id FROM customers WHERE phone = (SELECT g::text FROM generate_series(1, 2) g LIMIT 1)",
        ),
        (
            "hash_he",
            "SELECT count(*) FROM customers c, generate_series(1, 9) g WHERE c.phone = g::text",
        ),
        (
            "hash_he",
            "SELECT id FROM customers WHERE phone IN (SELECT g::text FROM generate_series(1, 9) g)",
        ),
        ("hash_he", "SELECT id FROM customers ORDER BY phone"),
        ("hash_he", "SELECT id, phone FROM customers ORDER BY 2"),
        (
            "hash_he",
            "SELECT id, phone FROM customers ORDER BY (2) DESC",
        ),
        (
            "hash_he",
            "SELECT id, phone AS p FROM customers ORDER BY ((p))",
        ),
        (
            "hash_he",
            "SELECT id FROM customers LIMIT (SELECT count(*) FROM customers WHERE phone IS NULL)",
        ),
    ] {
        let m = refused(user, sql);
        assert!(m.contains("permission denied by pgwarden"), "{sql}: {m}");
    }
    // Counts of values as stored show no value; equality and grouping
    // show what the pseudonyms show.
    // Writing a hashed column would pseudonymise values of the writer's
    // choice.
    for sql in [
        "INSERT INTO customers (id, phone) VALUES (1, '1')",
        "UPDATE customers SET phone = '1' WHERE id = 1",
        "COPY customers FROM STDIN",
    ] {
        let m = refused("hash_he", sql);
        assert!(m.contains("pseudonyms"), "{sql}: {m}");
    }
    run(
        "hash_he",
        "INSERT INTO customers (id, city) VALUES (1, 'x')",
    )
    .unwrap();
    for sql in [
        "SELECT count(phone), count(DISTINCT phone) FROM customers",
        "SELECT phone, count(*) FROM customers GROUP BY phone",
        "SELECT id FROM customers WHERE phone = '13812345678'",
        "SELECT c.id FROM customers c JOIN shipments s ON s.recipient_phone = c.phone",
    ] {
        run("hash_he", sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[test]
fn lookups_move_into_the_rewrite() {
    let text = server(
        SUPPORT,
        "SELECT id, phone FROM customers WHERE phone = '13812345678' AND city = 'x'",
    );
    assert!(
        text.contains("FROM \"public\".\"customers\" WHERE (\"phone\" = '13812345678')) AS \"customers\" WHERE TRUE AND city = 'x'"),
        "{text}"
    );
    let text = server(
        SUPPORT,
        "SELECT c.id FROM customers c WHERE c.phone IN ('1', $2 ) AND c.id = $1",
    );
    assert!(
        text.contains("WHERE (\"phone\" IN ('1', $2))) c WHERE TRUE AND c.id = $1"),
        "{text}"
    );
    let text = server(
        SUPPORT,
        "SELECT id FROM customers WHERE (phone = ANY($1 /* x */) )",
    );
    assert!(
        text.contains("WHERE (\"phone\" = ANY ($1))) AS \"customers\" WHERE (TRUE )"),
        "{text}"
    );
    for sql in [
        "SELECT id FROM customers WHERE '1' = phone",
        "SELECT id FROM customers WHERE id IN (SELECT customer_id FROM shipments WHERE recipient_phone = '1')",
        "SELECT exists(SELECT 1 FROM customers WHERE phone = '1')",
        "SELECT phone, count(*) FROM customers GROUP BY phone",
        "SELECT c.id FROM customers c JOIN shipments s ON s.recipient_phone = c.phone",
        "UPDATE customers SET city = 'x' WHERE phone = '1'",
        "DELETE FROM customers WHERE phone = $1",
    ] {
        run(SUPPORT, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // A lookup that cannot move is refused, never run against the mask.
    for sql in [
        "SELECT id FROM customers WHERE phone = '1' OR city = 'x'",
        "SELECT id FROM customers WHERE NOT (phone = '1')",
        "SELECT s.id FROM shipments s LEFT JOIN customers c ON c.id = s.customer_id WHERE c.phone = '1'",
        "SELECT CASE phone WHEN '1' THEN 'a' ELSE 'b' END FROM customers",
        "SELECT id FROM customers WHERE phone = '1'::text",
    ] {
        let m = refused(SUPPORT, sql);
        assert!(m.contains("lookup"), "{sql}: {m}");
    }
    // Bounded candidate lists.
    let many = (0..101)
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let m = refused(
        SUPPORT,
        &format!("SELECT id FROM customers WHERE phone IN ({many})"),
    );
    assert!(m.contains("more than 100 values"), "{m}");
    let arr = (0..101)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let m = refused(
        SUPPORT,
        &format!("SELECT id FROM customers WHERE phone = ANY('{{{arr}}}')"),
    );
    assert!(m.contains("more than 100 values"), "{m}");
    // Without lookup, no predicate at all.
    for sql in [
        "SELECT id FROM customers WHERE name = 'x'",
        "SELECT name, count(*) FROM customers GROUP BY name",
        "SELECT DISTINCT name FROM customers",
        "SELECT name FROM customers INTERSECT SELECT 'x'",
    ] {
        let m = refused(ANALYST, sql);
        assert!(m.contains("lookup"), "{sql}: {m}");
    }
}

/// What each lookup of `sql` probes: (kind, the constant as written, or
/// the parameter's place).
fn probes(user: &str, sql: &str) -> Vec<(String, String)> {
    let a = run(user, sql).unwrap_or_else(|e| panic!("{sql}: refused: {e}"));
    a.statements
        .iter()
        .flat_map(|s| s.probes.iter())
        .map(|p| {
            let v = match &p.value {
                super::Probed::Const(r) => sql[r.clone()].to_string(),
                super::Probed::ConstArray(r) => format!("array {}", &sql[r.clone()]),
                super::Probed::Param(n) => format!("${n}"),
                super::Probed::ParamArray(n) => format!("array ${n}"),
                super::Probed::Unknown => "?".into(),
            };
            (p.kind.clone(), v)
        })
        .collect()
}

#[test]
fn lookups_record_each_value_they_probe() {
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        probes(
            SUPPORT,
            "SELECT id FROM customers WHERE phone = '138' AND city = 'x'"
        ),
        vec![p("phone", "'138'")]
    );
    assert_eq!(
        probes(
            SUPPORT,
            "SELECT id FROM customers WHERE phone IN ('1', $2) AND name = 7"
        ),
        vec![p("phone", "'1'"), p("phone", "$2"), p("person_name", "7")]
    );
    assert_eq!(
        probes(SUPPORT, "SELECT id FROM customers WHERE phone = ANY($1)"),
        vec![p("phone", "array $1")]
    );
    assert_eq!(
        probes(
            SUPPORT,
            "SELECT id FROM customers WHERE phone = ANY('{1,2}')"
        ),
        vec![p("phone", "array '{1,2}'")]
    );
    // Writes compare raw values: their WHERE probes as well.
    assert_eq!(
        probes(SUPPORT, "UPDATE customers SET city = 'x' WHERE phone = '9'"),
        vec![p("phone", "'9'")]
    );
    // Unclassified comparisons probe nothing.
    assert!(
        probes(
            SUPPORT,
            "SELECT id FROM customers WHERE city = 'x' AND id = 3"
        )
        .is_empty()
    );
    // A SQL prepared statement probes with each EXECUTE's arguments.
    let sql = "PREPARE q(text) AS SELECT id FROM customers WHERE phone = $1 AND name = 'n'; \
               EXECUTE q('555'); EXECUTE q(upper('x'))";
    assert_eq!(
        probes(SUPPORT, sql),
        vec![
            p("person_name", "'n'"),
            p("phone", "'555'"),
            p("phone", "?")
        ]
    );
}

#[test]
fn errors_of_statements_over_classified_relations_are_withheld() {
    for sql in [
        "INSERT INTO customers (id) VALUES (1)",
        "SELECT id FROM customers",
        "UPDATE customers SET city = 'x' WHERE id = 1",
    ] {
        let a = run(SUPPORT, sql).unwrap();
        assert!(a.withholds_text(), "{sql}");
    }
    assert!(
        !run(SUPPORT, "SELECT body FROM public.notes")
            .unwrap()
            .withholds_text()
    );
}

#[test]
fn functions_outside_the_list_are_refused() {
    for sql in [
        "SELECT query_to_xml('select * from customers', true, true, '')",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT lo_get(1)",
        "SELECT set_config('search_path', 'x', false)",
        "SELECT dblink('dbname=x', 'select 1')",
        "SELECT public.my_func(phone) FROM customers",
        "SELECT * FROM dblink('x', 'select phone from customers') AS t(p text)",
        "SELECT pg_catalog.query_to_xml('x', true, true, '')",
    ] {
        let m = refused(SUPPORT, sql);
        assert!(m.contains("function"), "{sql}: {m}");
    }
}

#[test]
fn statements_that_copy_or_change_identity_are_refused() {
    for sql in [
        "CREATE TABLE t AS SELECT phone FROM customers",
        "SELECT phone INTO t FROM customers",
        "UPDATE customers SET city = phone",
        "EXPLAIN SELECT city FROM customers",
        "CREATE VIEW v AS SELECT phone FROM customers",
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'select phone from customers'",
        "SET ROLE dba",
        "SET SESSION AUTHORIZATION dba_zhang",
        "SET search_path = archive, public",
        "SET standard_conforming_strings = off",
        "SET client_encoding = 'SQL_ASCII'",
        "COPY customers TO '/tmp/x'",
        "COPY (SELECT phone FROM customers) TO PROGRAM 'cat'",
        "COPY customers TO STDOUT",
        "EXPLAIN SELECT id FROM customers WHERE phone = '1'",
        "SELECT * FROM pg_stats",
        "SELECT most_common_vals FROM pg_catalog.pg_stats",
        "DELETE FROM customers WHERE phone LIKE '1%'",
        "INSERT INTO customers (id, phone) VALUES (1, '1') RETURNING id_number",
        "WITH d AS (DELETE FROM customers RETURNING phone) SELECT * FROM d",
        "SELECT * FROM customers_typo",
        "GRANT SELECT ON customers TO public",
        "ALTER TABLE customers ADD COLUMN x int",
        "TRUNCATE customers",
    ] {
        run(SUPPORT, sql).expect_err(sql);
    }
}

#[test]
fn allowed_statements() {
    for sql in [
        "BEGIN",
        "COMMIT",
        "SET application_name = 'x'",
        "SET TIME ZONE 'UTC'",
        "SET extra_float_digits = 3",
        "SHOW search_path",
        "RESET ALL",
        "UPDATE customers SET phone = '1' WHERE id = 1",
        "INSERT INTO customers (id, phone) VALUES (1, '1')",
        "DELETE FROM customers WHERE phone = '1'",
        "SELECT relname FROM pg_class",
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT 1",
        "SELECT now(), version(), current_user",
        "COPY customers (id, city) TO STDOUT",
        "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT binary)",
        "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT csv, DELIMITER '|')",
        // Copies of masked values: the server only ever sees masks.
        "INSERT INTO shipments (recipient_phone) SELECT phone FROM customers",
        "UPDATE shipments s SET status = c.name FROM customers c WHERE c.id = s.customer_id",
        "COPY shipments FROM STDIN",
        "LISTEN x",
        "SELECT * FROM generate_series(1, 3) g",
        "SELECT * FROM public.notes",
    ] {
        run(SUPPORT, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let a = run(
        SUPPORT,
        "COPY customers (id, phone) TO STDOUT WITH (FORMAT csv, HEADER true)",
    )
    .unwrap();
    let p = a.statements[0].result.as_ref().unwrap();
    assert_eq!(p.copy, Some(CopyFormat::Csv { header: true }));
    assert_eq!(p.columns[0], ColumnAction::Pass);
    // Writing a value is allowed, and recorded as touching the column.
    let a = run(SUPPORT, "UPDATE customers SET phone = '1' WHERE id = 1").unwrap();
    assert!(a.sensitive());
    let a = run(SUPPORT, "RETURNING_IS_NOT_SQL").unwrap_err();
    assert!(a.message.contains("cannot analyse"));
    assert_eq!(
        run(
            SUPPORT,
            "INSERT INTO customers (id, phone) VALUES (1, '1') RETURNING phone"
        )
        .unwrap()
        .statements[0]
            .result
            .as_ref()
            .unwrap()
            .columns
            .len(),
        1
    );
}

#[test]
fn ambiguous_names_and_schemas() {
    // customers exists in public and archive: unqualified is ambiguous.
    let m = refused(SUPPORT, "SELECT phone FROM customers_x");
    assert!(m.contains("does not know relation"), "{m}");
    let m = run_in(
        schema(true),
        SUPPORT,
        "SELECT id FROM customers",
        &NoSession,
    )
    .unwrap_err();
    assert!(m.message.contains("several schemas"), "{m}");
    let a = run_in(
        schema(true),
        SUPPORT,
        "SELECT phone FROM archive.customers",
        &NoSession,
    );
    assert!(a.unwrap().statements[0].result.is_none());
    let a = run_in(
        schema(true),
        SUPPORT,
        "SELECT phone FROM public.customers",
        &NoSession,
    );
    assert!(a.unwrap().rewrite.is_some());
    // Two unclassified tables of one name: either reading is clean.
    run(SUPPORT, "SELECT body FROM notes").unwrap();
}

#[test]
fn lexer_disagreements_are_refused() {
    for sql in [
        "SELECT 1 /* /* nested */ */",
        "SELECT E'\\x41'",
        "SELECT E'\\'' ,phone FROM customers --'",
        "SELECT E'\\\\'",
        "SELECT $$phone$$",
        "SELECT $tag$x$tag$",
        "SELECT U&\"d\\0061t\" FROM customers",
        "SELECT U&'x'",
        "SELECT 'a'\n'b'",
        "SELECT 1 --x\r, phone FROM customers",
        "SELECT\u{a0}phone FROM customers",
        "SELECT a$1 FROM x",
    ] {
        let m = refused(SUPPORT, sql);
        assert!(m.contains("read the statement differently"), "{sql:?}: {m}");
    }
    // Plain parameters and comments are fine.
    run(
        SUPPORT,
        "SELECT id FROM public.customers WHERE id = $1 -- c\r\n",
    )
    .unwrap();
    run(SUPPORT, "SELECT /* c */ id FROM public.customers").unwrap();
    // psql's catalog queries join lists with E'\n'.
    run(
        SUPPORT,
        "SELECT array_to_string(ARRAY['a', 'b'], E'\\n\\t')",
    )
    .unwrap();
}

#[test]
fn doubling_self_joins_stop_at_the_column_limit() {
    let mut sql = String::from("WITH a0 AS (SELECT id, name FROM customers WHERE id = 1)");
    for k in 1..=22 {
        sql.push_str(&format!(
            ", a{k} AS (SELECT * FROM a{} x, a{} y)",
            k - 1,
            k - 1
        ));
    }
    sql.push_str(" SELECT count(*) FROM a22");
    let m = refused(SUPPORT, &sql);
    assert!(m.contains("columns"), "{m}");
    let many = (0..20)
        .map(|i| format!("customers c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    run(SUPPORT, &format!("SELECT count(*) FROM {many}")).unwrap();
}

#[test]
fn cursors_and_multi_statement_messages() {
    let a = run(
        ANALYST,
        "BEGIN; DECLARE c CURSOR FOR SELECT phone FROM public.customers; FETCH 10 FROM c",
    );
    // A cursor declared earlier in the same message is known.
    let a = a.unwrap();
    assert_eq!(a.statements[2].result.as_ref().unwrap().columns.len(), 1);
    let a = run(
        ANALYST,
        "DECLARE c CURSOR FOR SELECT id, phone FROM public.customers",
    )
    .unwrap();
    let Effect::DeclareCursor { name, cursor } = &a.statements[0].effect else {
        panic!("no effect");
    };
    assert_eq!(name, "c");
    assert!(cursor.single_relation);
    let mut s = Session::default();
    s.cursors.insert("c".into(), cursor.clone());
    let f = run_with(ANALYST, "FETCH 10 FROM c", &s).unwrap();
    assert_eq!(f.statements[0].result.as_ref().unwrap().columns.len(), 2);
    // A FETCH reads the cursor's classified columns and counts its rows
    // on the cursor.
    assert_eq!(f.statements[0].touched.len(), 1);
    assert!(Arc::ptr_eq(
        f.statements[0].fetched.as_ref().unwrap(),
        &cursor.fetched
    ));
    run_with(ANALYST, "FETCH 10 FROM other", &s).unwrap_err();
    run(
        ANALYST,
        "DECLARE b BINARY CURSOR FOR SELECT phone FROM public.customers",
    )
    .unwrap_err();
    let a = run(ANALYST, "SELECT 1; SELECT phone FROM public.customers").unwrap();
    assert_eq!(a.statements.len(), 2);
    assert!(a.statements[0].result.is_none());
    assert!(a.statements[1].result.is_some());
    // Both statements' rewrites apply to the one text.
    let sql = "SELECT phone FROM customers; SELECT name FROM customers c";
    let text = server(SUPPORT, sql);
    assert_eq!(
        text.matches("FROM \"public\".\"customers\")").count(),
        2,
        "{text}"
    );
    run(SUPPORT, "SELECT 1; SELECT id_number FROM public.customers").unwrap_err();
}

#[test]
fn analyses_that_read_constants_say_so() {
    let free = |sql: &str| run(SUPPORT, sql).unwrap().literal_free();
    assert!(free(
        "SELECT id, phone FROM customers WHERE id = 5 LIMIT 10"
    ));
    assert!(free("UPDATE notes SET body = 'x' WHERE id = 3"));
    assert!(!free("SELECT id, phone FROM customers ORDER BY 1"));
    assert!(!free("SELECT city, count(*) FROM customers GROUP BY 1"));
    assert!(!free("SET statement_timeout = 5"));
    assert!(!free("SELECT 1; SET statement_timeout = 5"));
}

#[test]
fn single_relation_reads_are_told_apart() {
    let single = |sql: &str| run(SUPPORT, sql).unwrap().statements[0].single_relation;
    assert!(single("SELECT id, phone FROM customers WHERE id = 5"));
    assert!(single(
        "SELECT id, phone FROM (SELECT id, phone FROM customers) s"
    ));
    // Two references to one table can pair any key with any row.
    assert!(!single(
        "SELECT c2.id, c.phone FROM customers c, customers c2 WHERE c2.id = 1"
    ));
    assert!(!single(
        "SELECT id, phone FROM customers, generate_series(1, 3) g"
    ));
    assert!(!single(
        "SELECT id, phone FROM customers WHERE id IN (SELECT id FROM customers WHERE city = 'x')"
    ));
    assert!(!single("SELECT 1"));
}
