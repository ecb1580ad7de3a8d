//! Column access through the proxy against the sample database: what each
//! role sees, and insider attempts to get around the rules through every
//! protocol path. Every byte the proxy sends back passes through a tap that
//! scans it for classified values (phones, ID numbers, bank cards, emails,
//! addresses, credit reports) the role may not see as stored.

mod common;

use common::{connect_employee, error_code, error_text};
use pgwarden::Proxy;
use pgwarden::config::Config;
use pgwarden::demo::{DATABASE, postgres::PgCluster, start_sample_cluster};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::{Client, SimpleQueryMessage};

struct Setup {
    cluster: PgCluster,
    /// Values no restricted role may see as stored.
    secrets: Secrets,
}

#[derive(Default)]
struct Secrets {
    /// Phones, ID numbers, bank cards: runs of digits (and X).
    digits: HashSet<String>,
    emails: HashSet<String>,
    /// A sample of addresses and credit reports, matched as substrings.
    texts: Vec<String>,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let cluster = start_sample_cluster().expect("sample cluster");
        let mut secrets = Secrets::default();
        let q = |sql: &str| -> Vec<String> {
            cluster
                .psql(
                    DATABASE,
                    &format!("\\pset format unaligned\n\\pset tuples_only on\n{sql}"),
                )
                .expect("reading secrets")
                .lines()
                .map(str::to_string)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Output format")
                        && !l.starts_with("Tuples only")
                })
                .collect()
        };
        for sql in [
            "SELECT phone FROM customers",
            "SELECT id_number FROM customers",
            "SELECT recipient_phone FROM shipments",
            "SELECT bank_card FROM credit_reports",
        ] {
            secrets.digits.extend(q(sql));
        }
        secrets
            .emails
            .extend(q("SELECT email FROM customers WHERE email IS NOT NULL"));
        secrets
            .texts
            .extend(q("SELECT address FROM customers ORDER BY id LIMIT 300"));
        secrets.texts.extend(q(
            "SELECT left(report, 40) FROM credit_reports ORDER BY id LIMIT 100",
        ));
        assert!(secrets.digits.len() > 5_000, "{}", secrets.digits.len());
        Setup { cluster, secrets }
    })
}

impl Secrets {
    /// Classified values found in `bytes`.
    fn found_in(&self, bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(bytes);
        let mut found = Vec::new();
        let mut run = String::new();
        for ch in text.chars().chain(std::iter::once(' ')) {
            if ch.is_ascii_digit() || ch == 'X' {
                run.push(ch);
            } else {
                if run.len() >= 11 && self.digits.contains(&run) {
                    found.push(run.clone());
                }
                // Also any 11-digit window (a phone inside a longer run).
                if run.len() > 11 {
                    for i in 0..=run.len() - 11 {
                        if self.digits.contains(&run[i..i + 11]) {
                            found.push(run[i..i + 11].to_string());
                        }
                    }
                }
                run.clear();
            }
        }
        for tok in text.split(|c: char| !(c.is_ascii_alphanumeric() || "._@-+".contains(c))) {
            if tok.contains('@') && self.emails.contains(tok) {
                found.push(tok.to_string());
            }
        }
        for t in &self.texts {
            if text.contains(t.as_str()) {
                found.push(t.clone());
            }
        }
        found
    }
}

/// Records every byte the proxy sends to the client.
#[derive(Clone, Default)]
struct Tap {
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    /// Listen on a free port and relay each connection to `target`.
    async fn start(target: std::net::SocketAddr) -> (Tap, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tap = Tap::default();
        let t = tap.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let t = t.clone();
                tokio::spawn(async move {
                    let server = TcpStream::connect(target).await.unwrap();
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        t.seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                    up.abort();
                });
            }
        });
        (tap, port)
    }

    fn bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

struct Env {
    proxy: Proxy,
    tap: Tap,
    port: u16,
}

async fn start() -> Env {
    start_with(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).await
}

async fn start_with(policies: &Path) -> Env {
    start_config(policies, "").await
}

async fn start_config(policies: &Path, extra: &str) -> Env {
    let s = setup();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\npolicies = \"{}\"\n\n[catalog]\nuser = \"pgwarden\"\npassword = \"pgwarden-catalog\"\n{extra}",
        s.cluster.addr(),
        policies.display()
    );
    let config = Config::parse(&text, Path::new("/tmp/enforcement.toml")).unwrap();
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let (tap, port) = Tap::start(proxy.addr).await;
    Env { proxy, tap, port }
}

impl Env {
    /// Connect through the tap (and so through the proxy).
    async fn connect(&self, user: &str) -> Client {
        connect_employee(self.port, user).await
    }

    /// Assert that nothing the role may not see came back.
    fn assert_no_leak(&self) {
        let bytes = self.tap.bytes();
        assert!(!bytes.is_empty());
        let found = setup().secrets.found_in(&bytes);
        assert!(
            found.is_empty(),
            "classified values reached the client: {:?}",
            &found[..found.len().min(5)]
        );
    }
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

fn is_masked_phone(s: &str) -> bool {
    s.len() == 11 && s[3..7] == *"****" && s[..3].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn support_sees_masks_in_both_protocols_and_binary_format() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    // Extended protocol; tokio-postgres asks for binary results.
    let row = c
        .query_one(
            "SELECT id, name, phone, city FROM customers WHERE id = $1",
            &[&7i32],
        )
        .await
        .unwrap();
    let phone: String = row.get(2);
    assert!(is_masked_phone(&phone), "{phone}");
    let name: String = row.get(1);
    assert!(name.ends_with('*'), "{name}");
    let city: String = row.get(3);
    assert!(!city.contains('*'));
    // Simple protocol.
    let rows = simple_rows(
        &c.simple_query("SELECT phone, email, address FROM customers WHERE id = 7")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some(phone.as_str()));
    assert!(rows[0][1].as_deref().unwrap_or("***").contains("***"));
    assert!(rows[0][2].as_deref().unwrap().ends_with("****"));
    // A column typed as something else is announced as text once masked.
    let row = c
        .query_one(
            "SELECT phone, id FROM customers WHERE phone = $1",
            &[&"nope"],
        )
        .await;
    assert!(row.is_err(), "no such phone: no row");
    env.assert_no_leak();
}

#[tokio::test]
async fn denied_columns_are_refused_and_the_session_stays_usable() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    for sql in [
        "SELECT id_number FROM customers WHERE id = 1",
        "SELECT * FROM customers WHERE id = 1",
        "SELECT c FROM customers c WHERE id = 1",
        "SELECT report FROM credit_reports LIMIT 1",
        "SELECT bank_card FROM credit_reports LIMIT 1",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(error_code(&e), "42501", "{sql}: {e}");
        assert!(
            error_text(&e).contains("denied to role support"),
            "{sql}: {}",
            error_text(&e)
        );
        let e = c.query(sql, &[]).await.expect_err(sql);
        assert_eq!(error_code(&e), "42501", "{sql} (extended): {e}");
    }
    let e = c
        .query("SELECT id_number FROM customers WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert!(
        error_text(&e).contains("public.customers.id_number"),
        "{}",
        error_text(&e)
    );
    // The session is still usable, inside a transaction too.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("SELECT id_number FROM customers")
        .await
        .unwrap_err();
    // PostgreSQL's own transaction state: the refusal aborted it.
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(error_code(&e), "25P02");
    c.simple_query("ROLLBACK").await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3000);
    env.assert_no_leak();
}

/// Insider attempts: each is refused or returns nothing classified.
const ATTEMPTS: &[&str] = &[
    // derived and laundered values
    "SELECT upper(phone), lower(email), phone || '' FROM customers LIMIT 50",
    "SELECT phone::bigint FROM customers LIMIT 50",
    "SELECT phone::varchar(7) FROM customers LIMIT 50",
    "SELECT substr(phone, 4, 4), left(phone, 7), right(phone, 8) FROM customers LIMIT 50",
    "SELECT replace(phone, '1', 'one'), reverse(phone), translate(phone, '0123456789', 'abcdefghij') FROM customers LIMIT 50",
    "SELECT json_build_object('p', phone), row_to_json(c) FROM customers c LIMIT 5",
    "SELECT to_json(phone), to_jsonb(ARRAY[phone]), ROW(phone, name) FROM customers LIMIT 50",
    "SELECT string_agg(phone, ',') FROM customers",
    "SELECT array_agg(recipient_phone) FROM shipments",
    "SELECT min(phone), max(phone) FROM customers",
    "SELECT xmlelement(name p, phone) FROM customers LIMIT 5",
    "SELECT encode(convert_to(phone, 'UTF8'), 'hex') FROM customers LIMIT 5",
    "SELECT CASE WHEN id > 0 THEN phone END FROM customers LIMIT 5",
    "SELECT coalesce(NULL, phone), nullif(phone, '') FROM customers LIMIT 5",
    "SELECT (SELECT string_agg(phone, ';') FROM customers)",
    "SELECT x FROM (SELECT phone || '#' AS x FROM customers) s LIMIT 5",
    "WITH t AS (SELECT reverse(phone) r FROM customers) SELECT r FROM t LIMIT 5",
    "SELECT p FROM customers, LATERAL (SELECT upper(phone) AS p) l LIMIT 5",
    "SELECT * FROM (VALUES (1)) v(a), LATERAL (SELECT phone FROM customers LIMIT 3) x",
    "SELECT unnest(ARRAY[phone, email]) FROM customers LIMIT 5",
    "SELECT phone FROM customers UNION SELECT recipient_phone FROM shipments",
    "SELECT id_number FROM customers",
    "SELECT left(id_number, 17) FROM customers",
    "SELECT md5(id_number) FROM customers",
    "SELECT count(*) FROM customers WHERE id_number LIKE '11%'",
    // oracles on masked values
    "SELECT id FROM customers WHERE phone LIKE '138%'",
    "SELECT id FROM customers WHERE substr(phone, 4, 1) = '5'",
    "SELECT id FROM customers WHERE phone > '15000000000'",
    "SELECT id FROM customers ORDER BY phone LIMIT 1",
    "SELECT id, row_number() OVER (ORDER BY phone) FROM customers",
    "SELECT 1 / (CASE WHEN substr(phone, 1, 1) = '1' THEN 0 ELSE 1 END) FROM customers",
    "SELECT id FROM customers LIMIT (SELECT length(phone) FROM customers LIMIT 1)",
    "SELECT count(*) FILTER (WHERE phone ~ '^13') FROM customers",
    "SELECT id FROM customers WHERE phone::bigint % 2 = 0",
    // errors that echo values
    "SELECT phone::int FROM customers LIMIT 1",
    "SELECT name::date FROM customers LIMIT 1",
    "SELECT to_number(email, '999') FROM customers LIMIT 1",
    "SELECT phone::regclass FROM customers LIMIT 1",
    "SELECT make_date(2020, 1, phone::int) FROM customers LIMIT 1",
    // copying classified data somewhere readable
    "CREATE TABLE leak AS SELECT phone FROM customers",
    "SELECT phone INTO leak2 FROM customers",
    "CREATE TEMP TABLE leak3 AS SELECT * FROM customers",
    "INSERT INTO shipments (tracking_no, customer_id, recipient_name, recipient_phone, recipient_address, weight_kg, status, shipped_at) SELECT 'x' || id, id, name, phone, address, 1, 'x', now() FROM customers LIMIT 1",
    "UPDATE customers SET city = phone WHERE id = 1",
    "UPDATE shipments s SET status = c.phone FROM customers c WHERE c.id = s.customer_id AND s.id = 1",
    "CREATE VIEW leakv AS SELECT phone FROM customers",
    "CREATE FUNCTION leakf() RETURNS SETOF text LANGUAGE sql AS 'SELECT phone FROM customers'",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT phone FROM customers LIMIT 1); END $$",
    "INSERT INTO customers (name, phone, id_number, address, city) VALUES ('a', 'b', 'c', 'd', 'e') RETURNING id_number",
    "DELETE FROM customers WHERE id = -1 RETURNING *",
    "COPY customers TO STDOUT",
    "COPY (SELECT phone FROM customers) TO '/tmp/leak.txt'",
    "COPY (SELECT phone FROM customers) TO PROGRAM 'cat > /tmp/leak'",
    "COPY (SELECT phone FROM customers) TO STDOUT WITH (FORMAT binary)",
    "CREATE RULE r AS ON SELECT TO shipments DO INSTEAD SELECT * FROM customers",
    "CREATE TRIGGER t BEFORE INSERT ON shipments FOR EACH ROW EXECUTE FUNCTION leakf()",
    // identity and parsing
    "SET ROLE dba_zhang",
    "SET SESSION AUTHORIZATION dba_zhang",
    "SET search_path = pg_temp, public",
    "SET standard_conforming_strings = off",
    "SELECT set_config('search_path', 'evil', false)",
    "RESET SESSION AUTHORIZATION; SELECT id_number FROM customers",
    // server functions that run SQL or read data
    "SELECT query_to_xml('SELECT phone FROM customers', true, true, '')",
    "SELECT table_to_xml('customers', true, true, '')",
    "SELECT cursor_to_xml('c', 10, true, true, '')",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_get(1)",
    "SELECT dblink('dbname=shop', 'SELECT phone FROM customers')",
    "SELECT * FROM pg_stats WHERE tablename = 'customers'",
    "SELECT most_common_vals::text FROM pg_catalog.pg_stats",
    "SELECT stxdndistinct FROM pg_statistic_ext_data",
    "SELECT query FROM pg_stat_activity",
    "SELECT pg_stat_get_activity(NULL)",
    "EXPLAIN SELECT * FROM customers WHERE phone = '13800000000'",
    "EXPLAIN ANALYZE SELECT phone FROM customers",
    // lexer tricks
    "SELECT 1 /* /* */ , phone FROM customers -- */",
    "SELECT $$x$$, phone FROM customers LIMIT 1",
    "SELECT E'\\x41', phone FROM customers LIMIT 1",
    "SELECT U&\"phone\" FROM customers LIMIT 1",
    "SELECT 'a'\n'b', phone FROM customers LIMIT 1",
    "SELECT 1 --x\r, phone FROM customers",
    "TABLE customers",
    // names and schemas
    "SELECT \"PHONE\" FROM customers",
    "SELECT phone FROM public.customers_nope",
    "SELECT shop.public.customers.phone FROM public.customers",
    "SELECT customers.phone::text FROM public.customers LIMIT 5",
];

#[tokio::test]
async fn insider_attempts_through_the_simple_protocol() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    let mut refused = 0;
    for sql in ATTEMPTS {
        if let Err(e) = c.simple_query(sql).await {
            // A server error is fine (its text is checked by the tap); a
            // broken connection is not.
            assert!(e.code().is_some(), "{sql}: {e}");
            refused += usize::from(error_code(&e) == "42501");
        }
        // A failed statement may leave a transaction open: reset.
        let _ = c.simple_query("ROLLBACK").await;
    }
    // The rest return redacted values, or server errors whose text is
    // withheld.
    assert!(
        refused >= 60,
        "only {refused} of {} refused",
        ATTEMPTS.len()
    );
    env.assert_no_leak();
    // The refusals were counted.
    let m = metrics(&env).await;
    assert!(
        m.contains("pgwarden_queries_total{decision=\"refuse\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn insider_attempts_through_the_extended_protocol() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    for sql in ATTEMPTS {
        if sql.contains(';') && !sql.contains("'") {
            continue; // one statement per Parse
        }
        let _ = c.query(*sql, &[]).await;
        let _ = c.simple_query("ROLLBACK").await;
    }
    env.assert_no_leak();
}

#[tokio::test]
async fn hidden_parts_never_come_back_through_copy_cursors_and_prepare() {
    let env = start().await;
    let c = env.connect("courier_zhao").await;
    // COPY in text and csv is rewritten.
    use futures_util::StreamExt;
    let stream = c
        .copy_out("COPY (SELECT id, recipient_phone, recipient_name FROM shipments WHERE id <= 100) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let text: String = chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100);
    assert!(
        lines
            .iter()
            .all(|l| is_masked_phone(l.split('\t').nth(1).unwrap())),
        "{}",
        lines[0]
    );
    // The whole table: cut at the role's rows_per_query (200), header aside.
    let stream = c
        .copy_out("COPY shipments (id, recipient_phone) TO STDOUT WITH (FORMAT csv, HEADER true)")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut text = String::new();
    let mut stopped = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    assert_eq!(error_code(&stopped.expect("cut at the limit")), "42501");
    assert_eq!(text.lines().next(), Some("id,recipient_phone"));
    assert_eq!(text.lines().count(), 201);
    // Cursors and SQL PREPARE / EXECUTE.
    let rows = simple_rows(
        &c.simple_query(
            "BEGIN; DECLARE cur CURSOR FOR SELECT id, phone FROM customers ORDER BY id; FETCH 5 FROM cur",
        )
        .await
        .unwrap(),
    );
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| is_masked_phone(r[1].as_deref().unwrap()))
    );
    let rows = simple_rows(&c.simple_query("FETCH 3 FROM cur").await.unwrap());
    assert!(
        rows.iter()
            .all(|r| is_masked_phone(r[1].as_deref().unwrap()))
    );
    c.simple_query("COMMIT").await.unwrap();
    let rows = simple_rows(
        &c.simple_query(
            "PREPARE p(int) AS SELECT name, phone FROM customers WHERE id = $1; EXECUTE p(3)",
        )
        .await
        .unwrap(),
    );
    assert!(is_masked_phone(rows[0][1].as_deref().unwrap()));
    // Extended protocol with portals and row limits (a cursor-like fetch).
    let tx = {
        let mut c2 = env.connect("courier_zhao").await;
        let tx = c2.transaction().await.unwrap();
        let stmt = tx
            .prepare("SELECT phone FROM customers ORDER BY id")
            .await
            .unwrap();
        let portal = tx.bind(&stmt, &[]).await.unwrap();
        let first = tx.query_portal(&portal, 10).await.unwrap();
        let second = tx.query_portal(&portal, 10).await.unwrap();
        assert_eq!(first.len() + second.len(), 20);
        for r in first.iter().chain(&second) {
            assert!(is_masked_phone(r.get::<_, &str>(0)));
        }
        tx.commit().await.unwrap();
        c2
    };
    drop(tx);
    // Pipelined queries answer in order, each with its own plan.
    let (a, b, d) = tokio::join!(
        c.query_one("SELECT phone FROM customers WHERE id = 1", &[]),
        c.query_one("SELECT city FROM customers WHERE id = 1", &[]),
        c.query_one("SELECT id_number FROM customers WHERE id = 1", &[]),
    );
    assert!(is_masked_phone(a.unwrap().get::<_, &str>(0)));
    assert!(!b.unwrap().get::<_, &str>(0).contains('*'));
    assert_eq!(error_code(&d.unwrap_err()), "42501");
    env.assert_no_leak();
}

#[tokio::test]
async fn errors_of_classified_statements_hide_their_values() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    // tokio-postgres leaves standard settings: a failing cast is an error
    // whose server text would print the phone.
    // (The server casts the mask: the error is the same whatever the
    // hidden digits are.)
    let e = c
        .simple_query("SELECT phone::int FROM customers WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "22P02");
    assert!(error_text(&e).contains("withheld"), "{}", error_text(&e));
    let e = c
        .query("SELECT name::date FROM customers WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("withheld"), "{}", error_text(&e));
    // Any statement over a table with classified columns loses its error
    // text, whatever columns it names (a constraint violation prints the
    // whole row).
    let e = c
        .simple_query("SELECT id FROM customers WHERE id = 'x'")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "22P02");
    assert!(error_text(&e).contains("withheld"), "{}", error_text(&e));
    let e = c
        .query("UPDATE customers SET city = NULL WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("withheld"), "{}", error_text(&e));
    // Errors of statements without classified columns keep their text.
    let e = c.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(error_text(&e), "division by zero");
    env.assert_no_leak();
}

#[tokio::test]
async fn lookup_by_equality_works_and_other_predicates_do_not() {
    let env = start().await;
    let server_port = setup()
        .cluster
        .addr()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let direct = connect_employee(server_port, "dba_zhang").await;
    let phone: String = direct
        .query_one("SELECT phone FROM customers WHERE id = 42", &[])
        .await
        .unwrap()
        .get(0);
    let c = env.connect("agent_li").await;
    // The support agent can find a customer by the number they were given.
    let row = c
        .query_one(
            "SELECT id, phone FROM customers WHERE phone = $1",
            &[&phone],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(
        row.get::<_, &str>(1),
        format!("{}****{}", &phone[..3], &phone[7..])
    );
    let rows = c
        .query(
            "SELECT s.id FROM shipments s JOIN customers c ON c.phone = s.recipient_phone WHERE c.id = 42",
            &[],
        )
        .await
        .unwrap();
    let _ = rows;
    // Other predicates see the mask: a prefix the mask shows matches, one
    // that reaches into the hidden digits never does.
    let shown = format!("{}%", &phone[..3]);
    let rows = c
        .query("SELECT id FROM customers WHERE phone LIKE $1", &[&shown])
        .await
        .unwrap();
    assert!(!rows.is_empty());
    let hidden = format!("{}%", &phone[..5]);
    let rows = c
        .query("SELECT id FROM customers WHERE phone LIKE $1", &[&hidden])
        .await
        .unwrap();
    assert!(rows.is_empty());
    // A lookup the rewrite cannot hold is refused, never run on masks.
    let e = c
        .query(
            "SELECT id FROM customers WHERE phone = $1 OR city = 'x'",
            &[&phone],
        )
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("lookup"), "{}", error_text(&e));
    // The analyst has no lookup rule: no predicate at all.
    let a = env.connect("analyst_wu").await;
    let e = a
        .query("SELECT id FROM customers WHERE phone = $1", &[&phone])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("lookup"), "{}", error_text(&e));
}

/// Texts that differ only in constants share an analysis, but never when
/// a constant changes what the statement does (a column position).
#[tokio::test]
async fn shape_mates_do_not_share_a_decision_a_constant_changes() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    for id in [3, 4, 5] {
        let rows = simple_rows(
            &c.simple_query(&format!("SELECT id, phone FROM customers WHERE id = {id}"))
                .await
                .unwrap(),
        );
        assert_eq!(rows[0][0].as_deref(), Some(id.to_string().as_str()));
        assert!(is_masked_phone(rows[0][1].as_deref().unwrap()), "{rows:?}");
    }
    // The analyst's hashed phone: ordering by the id (position 1) is
    // fine; by the phone (position 2) it is an oracle, though the text
    // differs by one digit.
    let a = env.connect("analyst_wu").await;
    a.simple_query("SELECT id, phone FROM customers ORDER BY 1 LIMIT 3")
        .await
        .unwrap();
    let e = a
        .simple_query("SELECT id, phone FROM customers ORDER BY 2 LIMIT 3")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501", "{}", error_text(&e));
    // A setting read by value: a harmless value, then a refused one.
    c.simple_query("SET client_encoding = 'UTF8'")
        .await
        .unwrap();
    let e = c
        .simple_query("SET client_encoding = 'LATIN1'")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501", "{}", error_text(&e));
}

/// Simple-protocol lookups of one shape run through a server-side
/// prepared statement of their rewrite once the server has it: the same
/// rows as the simple protocol gives, the constants sent as parameters.
/// Shapes the server cannot prepare, a client's DEALLOCATE ALL and an
/// aborted transaction leave the statements working.
#[tokio::test]
async fn simple_lookups_run_prepared_with_the_same_results() {
    let env = start().await;
    let c = env.connect("agent_li").await;
    let server_sees = || {
        setup()
            .cluster
            .psql(
                DATABASE,
                "SELECT query FROM pg_stat_activity WHERE usename = 'agent_li'",
            )
            .unwrap()
    };
    let extended = c
        .prepare("SELECT id, name, phone, city FROM customers WHERE id = $1")
        .await
        .unwrap();
    for id in 11..17i32 {
        let sql = format!("SELECT id, name, phone, city FROM customers WHERE id = {id}");
        let simple = simple_rows(&c.simple_query(&sql).await.unwrap());
        let ext: Vec<Vec<Option<String>>> = c
            .query(&extended, &[&id])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                vec![
                    Some(r.get::<_, i32>(0).to_string()),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                ]
            })
            .collect();
        assert_eq!(simple, ext, "{sql}");
        assert!(is_masked_phone(simple[0][2].as_deref().unwrap()));
    }
    // The last simple lookups reached the server as a prepared statement.
    let seen = c
        .simple_query("SELECT id, name, phone, city FROM customers WHERE id = 17")
        .await
        .unwrap();
    assert_eq!(simple_rows(&seen).len(), 1);
    let text = server_sees();
    assert!(text.contains("$1") && !text.contains("17"), "{text}");
    // Lookups by phone move into the rewrite as parameters.
    let mut phones: Vec<String> = setup()
        .secrets
        .digits
        .iter()
        .filter(|d| d.len() == 11 && d.starts_with('1'))
        .cloned()
        .collect();
    phones.sort();
    phones.truncate(4);
    assert_eq!(phones.len(), 4);
    for p in &phones {
        let rows = simple_rows(
            &c.simple_query(&format!(
                "SELECT name, phone FROM customers WHERE phone = '{p}'"
            ))
            .await
            .unwrap(),
        );
        assert_eq!(rows.len(), 1, "{p}");
        assert_eq!(rows[0][1].as_deref().map(|m| &m[7..]), Some(&p[7..]));
    }
    // A constant whose type the server cannot infer as a parameter: the
    // shape stays on the simple protocol, unharmed.
    for id in 21..25 {
        let rows = simple_rows(
            &c.simple_query(&format!(
                "SELECT id, 'x' IS NULL FROM customers WHERE id = {id}"
            ))
            .await
            .unwrap(),
        );
        assert_eq!(rows, vec![vec![Some(id.to_string()), Some("f".into())]]);
    }
    // Inside a transaction block pgwarden prepares nothing: a Parse the
    // server refused would abort the client's transaction.
    c.simple_query("BEGIN").await.unwrap();
    let rows = simple_rows(
        &c.simple_query("SELECT id, 'y' IS NULL FROM customers WHERE id = 26")
            .await
            .unwrap(),
    );
    assert_eq!(rows, vec![vec![Some("26".into()), Some("f".into())]]);
    c.simple_query("SELECT 1").await.unwrap();
    c.simple_query("COMMIT").await.unwrap();
    // Shapes that differ only in a constant's type keep their own types.
    for _ in 0..3 {
        let rows = simple_rows(
            &c.simple_query("SELECT id, 123456 AS code FROM customers WHERE id = 27")
                .await
                .unwrap(),
        );
        assert_eq!(rows[0][1].as_deref(), Some("123456"));
    }
    for _ in 0..3 {
        let rows = simple_rows(
            &c.simple_query("SELECT id, '0012' AS code FROM customers WHERE id = 27")
                .await
                .unwrap(),
        );
        assert_eq!(rows[0][1].as_deref(), Some("0012"));
    }
    // The client drops every prepared statement: pgwarden follows.
    c.simple_query("DEALLOCATE ALL").await.unwrap();
    for id in 31..34 {
        let rows = simple_rows(
            &c.simple_query(&format!(
                "SELECT id, name, phone, city FROM customers WHERE id = {id}"
            ))
            .await
            .unwrap(),
        );
        assert_eq!(rows[0][0].as_deref(), Some(id.to_string().as_str()));
    }
    // In an aborted transaction the statement fails as it would anyway;
    // after it, lookups work again.
    c.simple_query("BEGIN").await.unwrap();
    assert!(c.simple_query("SELECT 1/0").await.is_err());
    let e = c
        .simple_query("SELECT id, name, phone, city FROM customers WHERE id = 40")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "25P02");
    c.simple_query("ROLLBACK").await.unwrap();
    for id in 41..44 {
        let rows = simple_rows(
            &c.simple_query(&format!(
                "SELECT id, name, phone, city FROM customers WHERE id = {id}"
            ))
            .await
            .unwrap(),
        );
        assert_eq!(rows[0][0].as_deref(), Some(id.to_string().as_str()));
    }
    env.assert_no_leak();
}

/// A statement prepared under one policy is analysed again under the next:
/// a column denied by a reload cannot be read through an old statement.
#[tokio::test]
async fn prepared_statements_follow_a_policy_reload() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example.yaml");
    let text = std::fs::read_to_string(example).unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, &text).unwrap();
    let env = start_with(dir.path()).await;
    let c = env.connect("agent_li").await;
    let st = c
        .prepare("SELECT id, phone FROM customers WHERE id = $1")
        .await
        .unwrap();
    let row = c.query_one(&st, &[&7i32]).await.unwrap();
    assert!(is_masked_phone(row.get::<_, &str>(1)));

    // Support may no longer see phones at all.
    std::fs::write(
        &path,
        text.replacen("      phone: mask", "      phone: deny", 1),
    )
    .unwrap();
    env.proxy.context.policy.reload().unwrap();
    let e = c.query_one(&st, &[&7i32]).await.unwrap_err();
    assert_eq!(error_code(&e), "42501", "{}", error_text(&e));
    assert!(error_text(&e).contains("phone"), "{}", error_text(&e));
    // The session stays usable, and a fresh statement is refused too.
    c.simple_query("SELECT 1").await.unwrap();
    let e = c
        .query("SELECT phone FROM customers WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501");
    env.assert_no_leak();
}

fn example_policies() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn trail_records(dir: &Path) -> Vec<pgwarden::audit::Record> {
    let mut out = Vec::new();
    pgwarden::audit::search::scan(dir, |r, _| {
        out.push(r.clone());
        Ok(())
    })
    .unwrap();
    out
}

/// The trail says which classified columns a statement touched, with
/// kind and action, and what pgwarden decided.
#[tokio::test]
async fn the_trail_records_columns_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail");
    let env = start_config(
        &example_policies(),
        &format!("[audit]\ndir = \"{}\"\n", trail.display()),
    )
    .await;
    let c = env.connect("agent_li").await;
    c.simple_query("SELECT name, phone FROM customers WHERE id = 3")
        .await
        .unwrap();
    c.simple_query("SELECT id_number FROM customers WHERE id = 3")
        .await
        .unwrap_err();
    c.query("SELECT phone FROM customers WHERE id = $1", &[&4i32])
        .await
        .unwrap();
    let d = env.connect("dba_zhang").await;
    d.simple_query("SELECT id_number FROM customers WHERE id = 3")
        .await
        .unwrap();
    d.query("SELECT name FROM customers WHERE id = $1", &[&5i32])
        .await
        .unwrap();
    // What the analysis cannot follow still runs for full access.
    d.simple_query("SELECT 1 FROM pgwarden_no_such_table")
        .await
        .unwrap_err();
    env.proxy.shutdown().await;
    let all = trail_records(&trail);
    let find = |user: &str, sql: &str| {
        let v: Vec<_> = all
            .iter()
            .filter(|r| {
                r.event == "query"
                    && r.user.as_deref() == Some(user)
                    && r.sql.as_deref() == Some(sql)
            })
            .collect();
        assert_eq!(v.len(), 1, "{user}: {sql}: {v:?}");
        v[0].clone()
    };
    let r = find("agent_li", "SELECT name, phone FROM customers WHERE id = 3");
    assert_eq!(r.decision.as_deref(), Some("rewrite"));
    assert_eq!(r.role.as_deref(), Some("support"));
    assert_eq!(r.rows, Some(1));
    let cols: Vec<_> = r
        .columns
        .iter()
        .map(|c| (c.column.as_str(), c.kind.as_str(), c.action.as_str()))
        .collect();
    assert!(cols.contains(&("phone", "phone", "mask")), "{cols:?}");
    assert!(cols.contains(&("name", "person_name", "mask")), "{cols:?}");
    assert_eq!(r.columns[0].table, "public.customers");
    let r = find("agent_li", "SELECT id_number FROM customers WHERE id = 3");
    assert_eq!(r.decision.as_deref(), Some("refuse"));
    assert_eq!(r.sqlstate.as_deref(), Some("42501"));
    assert!(r.message.as_deref().unwrap().contains("id_number"), "{r:?}");
    let r = find("agent_li", "SELECT phone FROM customers WHERE id = $1");
    assert_eq!(r.params, Some(vec![Some("\\x00000004".to_string())]));
    assert_eq!(r.decision.as_deref(), Some("rewrite"));
    // Full access is recorded with the classified columns it read.
    let r = find("dba_zhang", "SELECT id_number FROM customers WHERE id = 3");
    assert_eq!(r.decision.as_deref(), Some("forward"));
    assert_eq!(r.role.as_deref(), Some("dba"));
    assert_eq!(r.columns.len(), 1, "{r:?}");
    assert_eq!(
        (
            r.columns[0].column.as_str(),
            r.columns[0].kind.as_str(),
            r.columns[0].action.as_str()
        ),
        ("id_number", "id_card", "allow")
    );
    let r = find("dba_zhang", "SELECT name FROM customers WHERE id = $1");
    assert_eq!(r.columns.len(), 1, "{r:?}");
    assert_eq!(r.columns[0].kind, "person_name");
    let r = find("dba_zhang", "SELECT 1 FROM pgwarden_no_such_table");
    assert_eq!(r.sqlstate.as_deref(), Some("42P01"));
    assert!(r.columns.is_empty());
}

/// When the trail cannot be written, restricted roles are refused and
/// full access goes on; writing resumes by itself.
#[tokio::test]
async fn restricted_roles_stop_while_the_trail_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("trail");
    std::fs::create_dir_all(&trail).unwrap();
    // The trail's first file is a full disk.
    let first = trail.join("audit-00000000000000000001.jsonl");
    std::os::unix::fs::symlink("/dev/full", &first).unwrap();
    let env = start_config(
        &example_policies(),
        &format!(
            "[audit]\ndir = \"{}\"\nkey_file = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            trail.display(),
            {
                let k = dir.path().join("k");
                std::fs::write(&k, "key").unwrap();
                k.display().to_string()
            }
        ),
    )
    .await;
    let audit = env.proxy.context.audit.clone().unwrap();
    for _ in 0..100 {
        if !audit.healthy() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let c = env.connect("agent_li").await;
    let e = c
        .simple_query("SELECT phone FROM customers WHERE id = 3")
        .await
        .unwrap_err();
    assert!(
        error_text(&e).contains("audit trail cannot be written"),
        "{}",
        error_text(&e)
    );
    // The session stays usable; full access is not stopped.
    let d = env.connect("dba_zhang").await;
    d.simple_query("SELECT phone FROM customers WHERE id = 3")
        .await
        .unwrap();
    // The disk is back: writing resumes and so does the support agent.
    std::fs::remove_file(&first).unwrap();
    for _ in 0..100 {
        if audit.healthy() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audit.healthy());
    let rows = c
        .simple_query("SELECT phone FROM customers WHERE id = 3")
        .await
        .unwrap();
    assert!(!simple_rows(&rows).is_empty());
    env.proxy.shutdown().await;
    // The full-access statement made while failing was kept and written.
    let all = trail_records(&trail);
    assert!(
        all.iter()
            .any(|r| r.user.as_deref() == Some("dba_zhang") && r.event == "query")
    );
    let key = pgwarden::audit::chain::ChainKey::from_audit_key(b"key");
    pgwarden::audit::verify::verify(&trail, &key).unwrap();
}

#[tokio::test]
async fn analyst_pseudonyms_are_stable_and_full_access_is_untouched() {
    let env = start().await;
    let a1 = env.connect("analyst_wu").await;
    let a2 = env.connect("analyst_wu").await;
    let p1: String = a1
        .query_one("SELECT phone FROM customers WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    let p2: String = a2
        .query_one("SELECT phone FROM customers WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(p1, p2);
    assert!(p1.starts_with("h:") && p1.len() == 22, "{p1}");
    // Same value, same pseudonym: shipments to the customer's own phone.
    let rows = simple_rows(
        &a1.simple_query(
            "SELECT c.phone, s.recipient_phone FROM customers c JOIN shipments s ON s.customer_id = c.id WHERE c.id = 5",
        )
        .await
        .unwrap(),
    );
    assert!(rows.iter().any(|r| r[0] == r[1]) || rows.is_empty());
    let e = a1
        .simple_query("SELECT address FROM customers LIMIT 1")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501");
    env.assert_no_leak();

    // The dba sees values as stored, by any path, including what is refused
    // to others.
    let d = env.connect("dba_zhang").await;
    let rows = simple_rows(
        &d.simple_query("SELECT phone, id_number FROM customers WHERE id = 5")
            .await
            .unwrap(),
    );
    let phone = rows[0][0].clone().unwrap();
    assert!(phone.bytes().all(|b| b.is_ascii_digit()) && phone.len() == 11);
    assert!(setup().secrets.digits.contains(&phone));
    d.simple_query(
        "SELECT upper(phone) FROM customers WHERE phone LIKE '1%' ORDER BY phone LIMIT 1",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn users_in_no_role_see_nothing_classified() {
    let env = start().await;
    let c = env.connect("intern_sun").await;
    let rows = simple_rows(
        &c.simple_query("SELECT city, count(*) FROM customers GROUP BY city")
            .await
            .unwrap(),
    );
    assert!(!rows.is_empty());
    for sql in [
        "SELECT name FROM customers LIMIT 1",
        "SELECT phone FROM customers LIMIT 1",
        "SELECT recipient_address FROM shipments LIMIT 1",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(error_code(&e), "42501", "{sql}");
    }
    env.assert_no_leak();
}

#[tokio::test]
async fn psql_scripts_are_enforced() {
    let env = start().await;
    let bindir = pgwarden::demo::postgres::find_bindir().unwrap();
    let psql = bindir.join("psql");
    let out = tokio::process::Command::new(&psql)
        .arg(format!(
            "postgresql://agent_li:agent_li@127.0.0.1:{}/{DATABASE}",
            env.port
        ))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
        .arg("-c")
        .arg("SELECT phone FROM customers WHERE id = 9")
        .arg("-c")
        .arg("SELECT id_number FROM customers WHERE id = 9")
        .arg("-c")
        .arg("\\copy (SELECT id, phone FROM customers WHERE id < 5) TO STDOUT")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stdout.lines().next().unwrap_or("");
    assert!(is_masked_phone(first), "{stdout}\n{stderr}");
    assert!(stderr.contains("denied to role support"), "{stderr}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    env.assert_no_leak();
}

/// psql's describe commands and drivers' type lookups, as a support agent
/// runs them, work.
#[tokio::test]
async fn psql_describe_commands_work_for_restricted_roles() {
    let env = start().await;
    let bindir = pgwarden::demo::postgres::find_bindir().unwrap();
    let psql = bindir.join("psql");
    for (cmd, want) in [
        ("\\dt", "customers"),
        ("\\d customers", "customers_pkey"),
        ("\\d+ customers", "Access method"),
        ("\\di", "customers_pkey"),
        ("\\dn", "public"),
        ("\\d+ shipments", "shipments_customer_id_fkey"),
        ("\\l", DATABASE),
        ("\\dp customers", "customers"),
        ("\\db", "pg_default"),
        ("\\du", "agent_li"),
        ("\\dx", "plpgsql"),
    ] {
        let out = tokio::process::Command::new(&psql)
            .arg(format!(
                "postgresql://agent_li:agent_li@127.0.0.1:{}/{DATABASE}",
                env.port
            ))
            .args(["-X", "-c", cmd])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(want),
            "{cmd}: {stdout}\n{stderr}"
        );
    }
    // psycopg's type lookups.
    let c = env.connect("agent_li").await;
    let row = c
        .query_one(
            "SELECT to_regtype('int4')::oid::int8, to_regclass('customers') IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 23);
    assert!(row.get::<_, bool>(1));
    env.assert_no_leak();
}

async fn metrics(env: &Env) -> String {
    let _ = env;
    let reg = &env.proxy.context.metrics.registry;
    let mut buf = String::new();
    let enc = prometheus::TextEncoder::new();
    enc.encode_utf8(&reg.gather(), &mut buf).unwrap();
    buf
}
