use super::*;
use crate::catalog::schema::RelationRow;
use crate::policy::load::load_sources;
use std::collections::HashMap;
use std::path::PathBuf;

const POLICY: &str = include_str!("../../policies/example.yaml");

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
    let policy = load_sources(&[(PathBuf::from("example.yaml"), POLICY.to_string())]).unwrap();
    let env = Env {
        policy: &policy,
        role: policy.role_of(user),
        schema: &schema,
        user,
        session,
        observe: false,
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

#[test]
fn bare_columns_get_their_action() {
    assert_eq!(
        actions(
            SUPPORT,
            "SELECT id, phone, name FROM customers WHERE id = 1"
        ),
        ["pass", "mask", "mask"]
    );
    assert_eq!(
        actions(SUPPORT, "select city from customers"),
        Vec::<&str>::new()
    );
    assert_eq!(
        actions(ANALYST, "SELECT name, phone FROM customers"),
        ["hash", "hash"]
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
fn flows_through_subqueries_ctes_views_and_unions() {
    assert_eq!(
        actions(
            SUPPORT,
            "SELECT x FROM (SELECT phone AS x FROM customers) s"
        ),
        ["mask"]
    );
    assert_eq!(
        actions(
            SUPPORT,
            "WITH t(p) AS (SELECT phone FROM customers) SELECT p FROM t"
        ),
        ["mask"]
    );
    assert_eq!(
        actions(SUPPORT, "SELECT phone FROM customer_contacts"),
        ["mask"]
    );
    assert_eq!(
        actions(SUPPORT, "SELECT * FROM customer_contacts"),
        ["pass", "mask", "mask"]
    );
    assert_eq!(
        actions(
            SUPPORT,
            "SELECT phone FROM customers UNION ALL SELECT recipient_phone FROM shipments"
        ),
        ["mask"]
    );
    assert_eq!(
        actions(
            SUPPORT,
            "SELECT phone FROM customers UNION ALL SELECT name FROM customers"
        ),
        ["redact"],
        "two kinds in one column"
    );
    assert_eq!(
        actions(SUPPORT, "SELECT (SELECT phone FROM customers WHERE id = 1)"),
        ["mask"]
    );
    assert_eq!(
        actions(
            SUPPORT,
            "SELECT t.p FROM customers c, LATERAL (SELECT c.phone AS p) t"
        ),
        ["mask"]
    );
    assert_eq!(
        actions(
            SUPPORT,
            "WITH RECURSIVE r(p, n) AS (SELECT phone, 1 FROM customers UNION ALL SELECT p, n + 1 FROM r WHERE n < 3) SELECT p, n FROM r"
        ),
        ["mask", "pass"]
    );
}

#[test]
fn derived_values_are_redacted() {
    for sql in [
        "SELECT upper(phone) FROM customers",
        "SELECT phone::varchar(5) FROM customers",
        "SELECT phone || '' FROM customers",
        "SELECT min(phone) FROM customers",
        "SELECT string_agg(phone, ',') FROM customers",
        "SELECT json_build_object('p', phone) FROM customers",
        "SELECT ROW(phone, id) FROM customers",
        "SELECT ARRAY[phone] FROM customers",
        "SELECT coalesce(phone, 'x') FROM customers",
        "SELECT CASE WHEN id = 1 THEN phone END FROM customers",
        "SELECT substring(phone from 1 for 3) FROM customers",
        "SELECT phone LIKE '138%' FROM customers",
        "SELECT md5(phone) FROM customers",
        "SELECT lag(phone) OVER (PARTITION BY city ORDER BY id) FROM customers",
    ] {
        assert_eq!(actions(SUPPORT, sql), ["redact"], "{sql}");
    }
    // Hashing derived values would sort them into classes: redacted too.
    assert_eq!(
        actions(ANALYST, "SELECT phone LIKE '138%' FROM customers"),
        ["redact"]
    );
    assert_eq!(
        actions(ANALYST, "SELECT left(phone, 3) FROM customers"),
        ["redact"]
    );
    // Counts show no value.
    assert_eq!(
        actions(
            ANALYST,
            "SELECT count(phone), count(DISTINCT phone) FROM customers"
        ),
        Vec::<&str>::new()
    );
}

#[test]
fn lookup_equality_rules() {
    for sql in [
        "SELECT id FROM customers WHERE phone = '13812345678'",
        "SELECT id FROM customers WHERE phone = $1",
        "SELECT id FROM customers WHERE phone IN ('1', '2') AND city = 'x'",
        "SELECT id FROM customers WHERE phone = ANY($1)",
        "SELECT c.id FROM customers c JOIN shipments s ON s.recipient_phone = c.phone",
        "SELECT id FROM customers WHERE id IN (SELECT customer_id FROM shipments WHERE recipient_phone = '1')",
        "SELECT CASE phone WHEN '1' THEN 'a' ELSE 'b' END FROM customers",
        "SELECT exists(SELECT 1 FROM customers WHERE phone = '1')",
        "SELECT phone, count(*) FROM customers GROUP BY phone",
    ] {
        run(SUPPORT, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    for sql in [
        "SELECT id FROM customers WHERE phone LIKE '138%'",
        "SELECT id FROM customers WHERE phone > '138'",
        "SELECT id FROM customers WHERE substr(phone, 1, 3) = '138'",
        "SELECT id FROM customers WHERE phone::int8 = 1",
        "SELECT id FROM customers WHERE phone IS NULL",
        "SELECT id FROM customers WHERE length(name) = 2",
        "SELECT id FROM customers ORDER BY phone",
        "SELECT phone FROM customers ORDER BY 1",
        "SELECT phone AS p FROM customers ORDER BY p",
        "SELECT row_number() OVER (ORDER BY phone) FROM customers",
        "SELECT id FROM customers LIMIT (SELECT length(phone) FROM customers LIMIT 1)",
        "SELECT 1/(CASE WHEN substr(phone,1,1) = '1' THEN 0 ELSE 1 END) FROM customers",
        "SELECT id FROM customers WHERE phone BETWEEN '1' AND '2'",
        "SELECT id FROM customers WHERE phone ~ '^138'",
        "SELECT id FROM customers WHERE upper(phone) IN ('1')",
        "SELECT string_agg(id::text, ',' ORDER BY phone) FROM customers",
        "SELECT count(*) FILTER (WHERE phone LIKE '1%') FROM customers",
        "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM shipments s WHERE s.recipient_phone > c.phone)",
    ] {
        let m = refused(SUPPORT, sql);
        assert!(m.contains("permission denied by pgwarden"), "{sql}: {m}");
    }
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
        "INSERT INTO shipments (recipient_phone) SELECT phone FROM customers",
        "UPDATE customers SET city = phone",
        "UPDATE shipments s SET status = c.name FROM customers c WHERE c.id = s.customer_id",
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
        "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT binary)",
        "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT csv, DELIMITER '|')",
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
        "EXPLAIN SELECT city FROM customers",
        "COPY customers (id, city) TO STDOUT",
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
    assert!(a.unwrap().statements[0].result.is_some());
    // Two unclassified tables of one name: either reading is clean.
    run(SUPPORT, "SELECT body FROM notes").unwrap();
}

#[test]
fn lexer_disagreements_are_refused() {
    for sql in [
        "SELECT 1 /* /* nested */ */",
        "SELECT E'\\x41'",
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
}

#[test]
fn cursors_and_multi_statement_messages() {
    let a = run(
        SUPPORT,
        "BEGIN; DECLARE c CURSOR FOR SELECT phone FROM public.customers; FETCH 10 FROM c",
    );
    // A cursor declared earlier in the same message is known.
    let a = a.unwrap();
    assert_eq!(a.statements[2].result.as_ref().unwrap().columns.len(), 1);
    let a = run(
        SUPPORT,
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
    let f = run_with(SUPPORT, "FETCH 10 FROM c", &s).unwrap();
    assert_eq!(f.statements[0].result.as_ref().unwrap().columns.len(), 2);
    // A FETCH reads the cursor's classified columns and counts its rows
    // on the cursor.
    assert_eq!(f.statements[0].touched.len(), 1);
    assert!(Arc::ptr_eq(
        f.statements[0].fetched.as_ref().unwrap(),
        &cursor.fetched
    ));
    run_with(SUPPORT, "FETCH 10 FROM other", &s).unwrap_err();
    run(
        SUPPORT,
        "DECLARE b BINARY CURSOR FOR SELECT phone FROM public.customers",
    )
    .unwrap_err();
    let a = run(SUPPORT, "SELECT 1; SELECT phone FROM public.customers").unwrap();
    assert_eq!(a.statements.len(), 2);
    assert!(a.statements[0].result.is_none());
    assert!(a.statements[1].result.is_some());
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
