//! Bulk-export limits against the sample database: the courier case (a
//! support account exporting the shipments table) is cut at
//! `rows_per_query`, by SELECT and by COPY; the bank case (one-by-one
//! lookups) is refused once `classified_rows_per_hour` is spent; each
//! raises an alert in the trail, the metrics and a webhook.

mod common;

use common::{connect_employee, error_code, error_text};
use pgwarden::Proxy;
use pgwarden::audit::{Record, search};
use pgwarden::config::Config;
use pgwarden::demo::{postgres::PgCluster, start_sample_cluster};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use tokio_postgres::{Client, SimpleQueryMessage};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| start_sample_cluster().expect("sample cluster"))
}

const POLICY: &str = r#"
classify:
  public.customers:
    name: person_name
    phone: phone
    id_number: id_card
    address: address
  public.shipments:
    recipient_name: person_name
    recipient_phone: phone
    recipient_address: address
  public.credit_reports:
    report: credit_report
subjects:
  public.customers: id
  public.credit_reports: customer_id
roles:
  contractor:
    users: [intern_sun]
    access: {person_name: mask, credit_report: allow, "*": deny}
    lookup: equality
    limits:
      distinct_subjects: {window_minutes: 60, alert: 50, block: 100}
  support:
    users: [courier_zhao]
    access: {person_name: mask, phone: mask, address: mask, "*": deny}
    lookup: equality
    limits:
      rows_per_query: 200
      on_exceed: block
  desk:
    users: [agent_li]
    access: {person_name: mask, phone: mask, address: mask, "*": deny}
    lookup: equality
    limits:
      statement_timeout_ms: 500
      lookups_per_hour: 30
      on_exceed: block
  analyst:
    users: [analyst_wu]
    access: {person_name: mask, phone: mask, address: mask, credit_report: allow, "*": deny}
    lookup: equality
    limits:
      classified_rows_per_hour: 1000
      on_exceed: block
  dba:
    users: [dba_zhang]
    access: {"*": allow}
"#;

const ADMIN_TOKEN: &str = "on-call-token-0123456789";

/// One HTTP request to the admin endpoint: status and body.
async fn admin(proxy: &Proxy, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.admin_addr.unwrap())
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// What the webhook receiver got.
type Hooked = Arc<Mutex<Vec<serde_json::Value>>>;

async fn webhook() -> (std::net::SocketAddr, Hooked) {
    let got: Hooked = Arc::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/alert",
        axum::routing::post(move |body: String| {
            let state = state.clone();
            async move {
                state
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

struct Env {
    proxy: Proxy,
    dir: tempfile::TempDir,
    hooked: Hooked,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("limits.yaml"), POLICY).unwrap();
    std::fs::write(dir.path().join("audit.key"), "limits test key").unwrap();
    let (hook, hooked) = webhook().await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\npolicies = \"{}\"\n\
         [catalog]\nuser = \"pgwarden\"\npassword = \"pgwarden-catalog\"\n\
         [audit]\ndir = \"{}\"\nkey_file = \"{}\"\ndurability = \"async\"\n\
         [[alerts.webhook]]\nurl = \"http://{hook}/alert\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        cluster().addr(),
        policies.display(),
        dir.path().join("trail").display(),
        dir.path().join("audit.key").display(),
        dir.path().join("admin.token").display(),
    );
    std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
    let config = Config::parse(&text, Path::new("/tmp/limits.toml")).unwrap();
    let proxy = Proxy::start(config).await.expect("proxy starts");
    Env { proxy, dir, hooked }
}

impl Env {
    async fn connect(&self, user: &str) -> Client {
        connect_employee(self.proxy.addr.port(), user).await
    }

    /// Wait until the webhook got an alert of `rule`.
    async fn hooked(&self, rule: &str) -> serde_json::Value {
        for _ in 0..200 {
            if let Some(v) = self
                .hooked
                .lock()
                .unwrap()
                .iter()
                .find(|v| v["rule"] == rule)
            {
                return v.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("no {rule} alert reached the webhook");
    }
}

fn records(dir: &tempfile::TempDir) -> Vec<Record> {
    let mut out = Vec::new();
    search::scan(&dir.path().join("trail"), |r, _| {
        out.push(r.clone());
        Ok(())
    })
    .unwrap();
    out
}

fn rows(msgs: &[SimpleQueryMessage]) -> usize {
    msgs.iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count()
}

/// Read a simple query's rows as they stream, up to its end or its first
/// error: the rows received, and the error.
async fn stream_rows(c: &Client, sql: &str) -> (usize, Option<tokio_postgres::Error>) {
    let stream = c.simple_query_raw(sql).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut got = 0;
    while let Some(m) = futures_util::StreamExt::next(&mut stream).await {
        match m {
            Ok(SimpleQueryMessage::Row(_)) => got += 1,
            Ok(_) => {}
            // The stream yields errors forever after the first.
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// The courier case: a support account selects the whole shipments table
/// (20,000 rows). It gets 200 rows, then an error naming the rule; the
/// server-side query is cancelled, the session stays usable, and the
/// trail, the metrics and the webhook have the alert.
#[tokio::test]
async fn a_bulk_select_is_cut_at_rows_per_query() {
    let env = start().await;
    let c = env.connect("courier_zhao").await;
    let sql = "SELECT recipient_name, recipient_phone, recipient_address FROM shipments";
    let (got, failed) = stream_rows(&c, sql).await;
    let e = failed.expect("the export was stopped");
    assert_eq!(got, 200, "rows before the limit");
    assert_eq!(error_code(&e), "42501");
    assert!(
        error_text(&e).contains("rows_per_query"),
        "{}",
        error_text(&e)
    );
    // The session goes on, and a small classified query still works.
    let ok = c
        .simple_query("SELECT recipient_phone FROM shipments WHERE id = 7")
        .await
        .unwrap();
    assert_eq!(rows(&ok), 1);
    // Queries without classified columns are not limited.
    let ids = c.simple_query("SELECT id FROM shipments").await.unwrap();
    assert_eq!(rows(&ids), 20_000);
    // The server-side query was cancelled, not left running.
    let d = env.connect("dba_zhang").await;
    let busy = d
        .simple_query(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT recipient_name%' AND state = 'active'",
        )
        .await
        .unwrap();
    let SimpleQueryMessage::Row(r) = &busy[1] else {
        panic!("{busy:?}")
    };
    assert_eq!(r.get(0), Some("0"));

    let alert = env.hooked("rows_per_query").await;
    assert_eq!(alert["event"], "alert");
    assert_eq!(alert["user"], "courier_zhao");
    assert_eq!(alert["detail"]["limit"], 200);
    assert_eq!(alert["detail"]["blocked"], true);
    drop(c);
    drop(d);
    let metrics = String::from_utf8(env.proxy.context.metrics.render()).unwrap();
    assert!(
        metrics.contains("pgwarden_alerts_total{rule=\"rows_per_query\"} 1"),
        "{metrics}"
    );
    env.proxy.shutdown().await;
    let all = records(&env.dir);
    let alerts: Vec<_> = all.iter().filter(|r| r.event == "alert").collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule.as_deref(), Some("rows_per_query"));
    let q: Vec<_> = all
        .iter()
        .filter(|r| r.event == "query" && r.sql.as_deref() == Some(sql))
        .collect();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].rows, Some(200));
    assert_eq!(q[0].sqlstate.as_deref(), Some("42501"));
    assert_eq!(q[0].rule.as_deref(), Some("rows_per_query"));
}

/// COPY TO STDOUT of the same table is cut the same way.
#[tokio::test]
async fn a_copy_out_is_cut_at_rows_per_query() {
    let env = start().await;
    let c = env.connect("courier_zhao").await;
    let stream = c
        .copy_out("COPY (SELECT recipient_name, recipient_phone FROM shipments) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut lines = 0;
    let mut failed = None;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(b) => lines += b.iter().filter(|&&c| c == b'\n').count(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("the COPY was stopped");
    assert_eq!(lines, 200);
    assert_eq!(error_code(&e), "42501");
    let ok = c
        .simple_query("SELECT recipient_phone FROM shipments WHERE id = 9")
        .await
        .unwrap();
    assert_eq!(rows(&ok), 1);
    env.hooked("rows_per_query").await;
    drop(c);
    env.proxy.shutdown().await;
}

/// The bank case: 1,500 one-by-one lookups of credit reports with an
/// hourly limit of 1,000 classified rows. The first 1,000 pass; from then
/// on every classified lookup is refused with an error naming the rule,
/// and one alert is raised (not one per query).
#[tokio::test]
async fn one_by_one_lookups_stop_at_the_hourly_limit() {
    let env = start().await;
    let c = env.connect("analyst_wu").await;
    let lookup = c
        .prepare("SELECT report FROM credit_reports WHERE id = $1")
        .await
        .unwrap();
    let mut served = 0;
    let mut refused = 0;
    for i in 0..1_500i32 {
        let id = i % 1_500 + 1;
        match c.query(&lookup, &[&id]).await {
            Ok(r) => {
                assert_eq!(r.len(), 1);
                served += 1;
            }
            Err(e) => {
                assert_eq!(error_code(&e), "42501");
                assert!(
                    error_text(&e).contains("classified_rows_per_hour"),
                    "{}",
                    error_text(&e)
                );
                refused += 1;
            }
        }
    }
    assert_eq!(served, 1_000);
    assert_eq!(refused, 500);
    // Simple-protocol lookups are refused too, and so is a second session.
    let c2 = env.connect("analyst_wu").await;
    let e = c2
        .simple_query("SELECT report FROM credit_reports WHERE id = 3")
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501");
    // Statements without classified columns still run.
    c2.simple_query("SELECT count(*) FROM credit_reports")
        .await
        .unwrap();
    let alert = env.hooked("classified_rows_per_hour").await;
    assert_eq!(alert["user"], "analyst_wu");
    drop(c);
    drop(c2);
    env.proxy.shutdown().await;
    let alerts: Vec<_> = records(&env.dir)
        .into_iter()
        .filter(|r| r.event == "alert")
        .collect();
    assert_eq!(alerts.len(), 1, "one incident, one alert: {alerts:?}");
    assert_eq!(alerts[0].rule.as_deref(), Some("classified_rows_per_hour"));
}

/// Rows read a slice at a time add up: FETCHes from one cursor, and
/// Executes of one portal (`max_rows`), count towards one
/// `rows_per_query`; SQL PREPARE/EXECUTE is limited like the SELECT.
#[tokio::test]
async fn cursors_portals_and_sql_execute_add_up_to_the_limit() {
    let env = start().await;
    let mut c = env.connect("courier_zhao").await;
    c.batch_execute(
        "BEGIN; DECLARE c CURSOR FOR SELECT recipient_name, recipient_phone FROM shipments",
    )
    .await
    .unwrap();
    let first = c.simple_query("FETCH 150 FROM c").await.unwrap();
    assert_eq!(rows(&first), 150);
    let e = c.simple_query("FETCH 150 FROM c").await.unwrap_err();
    assert_eq!(error_code(&e), "42501");
    assert!(
        error_text(&e).contains("rows_per_query"),
        "{}",
        error_text(&e)
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // A fresh cursor starts from zero.
    c.batch_execute("BEGIN; DECLARE d CURSOR FOR SELECT recipient_phone FROM shipments")
        .await
        .unwrap();
    assert_eq!(
        rows(&c.simple_query("FETCH 120 FROM d").await.unwrap()),
        120
    );
    c.batch_execute("ROLLBACK").await.unwrap();

    // Executes of one portal, 150 rows at a time.
    let tx = c.transaction().await.unwrap();
    let st = tx
        .prepare("SELECT recipient_phone FROM shipments")
        .await
        .unwrap();
    let portal = tx.bind(&st, &[]).await.unwrap();
    assert_eq!(tx.query_portal(&portal, 150).await.unwrap().len(), 150);
    let e = tx.query_portal(&portal, 150).await.unwrap_err();
    assert_eq!(error_code(&e), "42501");
    tx.rollback().await.unwrap();

    // SQL-level PREPARE and EXECUTE.
    c.batch_execute("PREPARE p AS SELECT recipient_address FROM shipments")
        .await
        .unwrap();
    let (got, failed) = stream_rows(&c, "EXECUTE p").await;
    assert_eq!(got, 200);
    assert_eq!(error_code(&failed.expect("EXECUTE was stopped")), "42501");
    drop(c);
    env.proxy.shutdown().await;
    // The FETCH that was cut is recorded with what it delivered, and its
    // classified columns.
    let all = records(&env.dir);
    let fetches: Vec<_> = all
        .iter()
        .filter(|r| r.event == "query" && r.sql.as_deref() == Some("FETCH 150 FROM c"))
        .collect();
    assert_eq!(fetches.len(), 2);
    assert_eq!(fetches[1].rows, Some(50));
    assert_eq!(fetches[1].rule.as_deref(), Some("rows_per_query"));
    assert!(!fetches[0].columns.is_empty());
}

/// The bank case counted by customers: looking up the same customer again
/// and again counts once; different customers count one each, one-row
/// lookup or not. An alert at 50 customers, a block at 100: rows of the
/// 101st customer are refused (known ones stay visible), and a result
/// whose rows cannot be tied to a customer counts every row as a new one.
#[tokio::test]
async fn distinct_customers_are_counted_alerted_and_blocked() {
    let env = start().await;
    let dba = env.connect("dba_zhang").await;
    let ids: Vec<i32> = dba
        .query(
            "SELECT DISTINCT customer_id FROM credit_reports ORDER BY 1 LIMIT 150",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 150);
    let c = env.connect("intern_sun").await;
    let lookup = c
        .prepare("SELECT customer_id, report FROM credit_reports WHERE customer_id = $1")
        .await
        .unwrap();
    // The same customer 300 times: one subject.
    for _ in 0..300 {
        assert!(!c.query(&lookup, &[&ids[0]]).await.unwrap().is_empty());
    }
    let mut served = 1;
    let mut refused = 0;
    for id in &ids[1..] {
        match c.query(&lookup, &[id]).await {
            Ok(r) => {
                assert!(!r.is_empty());
                served += 1;
            }
            Err(e) => {
                assert_eq!(error_code(&e), "42501");
                assert!(
                    error_text(&e).contains("distinct_subjects"),
                    "{}",
                    error_text(&e)
                );
                refused += 1;
            }
        }
    }
    assert_eq!((served, refused), (100, 50));
    // A customer already seen is still shown, by simple query too.
    let known = c
        .simple_query(&format!(
            "SELECT customer_id, report FROM credit_reports WHERE customer_id = {}",
            ids[7]
        ))
        .await
        .unwrap();
    assert!(rows(&known) >= 1);
    // Without the subject key in the result, each row counts as new.
    let e = c
        .simple_query(&format!(
            "SELECT report FROM credit_reports WHERE customer_id = {}",
            ids[7]
        ))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501");
    // Pairing a known key with other rows does not help either.
    let e = c
        .simple_query(&format!(
            "SELECT k.customer_id, r.report FROM credit_reports r, credit_reports k \
             WHERE k.customer_id = {} AND r.id = k.id",
            ids[7]
        ))
        .await
        .unwrap_err();
    assert_eq!(error_code(&e), "42501");
    // On call: the block is listed (only with the token), and lifted.
    let (status, _) = admin(&env.proxy, "GET", "/blocks", "wrong-token", "").await;
    assert_eq!(status, 401);
    let (status, body) = admin(&env.proxy, "GET", "/blocks", ADMIN_TOKEN, "").await;
    assert_eq!(status, 200);
    let blocks: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(
        blocks.iter().any(|b| b["user"] == "intern_sun"
            && b["rule"] == "distinct_subjects"
            && b["count"] == 100
            && b["limit"] == 100),
        "{blocks:?}"
    );
    let (status, body) = admin(
        &env.proxy,
        "POST",
        "/blocks/lift",
        ADMIN_TOKEN,
        r#"{"user": "intern_sun", "rule": "distinct_subjects"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("distinct_subjects"), "{body}");
    let (_, body) = admin(&env.proxy, "GET", "/blocks", ADMIN_TOKEN, "").await;
    assert_eq!(body, "[]");
    // A new customer is shown again.
    assert!(!c.query(&lookup, &[&ids[149]]).await.unwrap().is_empty());
    drop(c);
    drop(dba);
    env.proxy.shutdown().await;
    let alerts: Vec<_> = records(&env.dir)
        .into_iter()
        .filter(|r| r.event == "alert" && r.rule.as_deref() == Some("distinct_subjects"))
        .collect();
    assert_eq!(alerts.len(), 2, "one at 50, one at the block: {alerts:?}");
    let first = alerts[0].detail.as_ref().unwrap();
    assert_eq!(first["subjects"], 50);
    assert_eq!(first["blocked"], false);
    assert_eq!(alerts[1].detail.as_ref().unwrap()["blocked"], true);
    let lifted: Vec<_> = records(&env.dir)
        .into_iter()
        .filter(|r| r.event == "block_lifted")
        .collect();
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0].user.as_deref(), Some("intern_sun"));
}

/// The patient insider: the mask shows `138****5678`, so ten thousand
/// guesses find the hidden digits. Each distinct value compared with a
/// classified column counts against `lookups_per_hour` (30 here), in
/// every protocol path, all sessions together: the same customer looked
/// up again costs nothing, the 31st guess is refused before it runs,
/// and one alert goes out.
#[tokio::test]
async fn guesses_at_hidden_digits_stop_at_the_lookup_budget() {
    let env = start().await;
    let dba = env.connect("dba_zhang").await;
    let phones: Vec<String> = dba
        .query("SELECT phone FROM customers ORDER BY id LIMIT 40", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let c = env.connect("agent_li").await;
    let lookup = c
        .prepare("SELECT name FROM customers WHERE phone = $1")
        .await
        .unwrap();
    // One customer, many times, by both protocols: one lookup.
    for _ in 0..50 {
        assert_eq!(c.query(&lookup, &[&phones[0]]).await.unwrap().len(), 1);
        let q = format!("SELECT name FROM customers WHERE phone = '{}'", phones[0]);
        assert_eq!(rows(&c.simple_query(&q).await.unwrap()), 1);
    }
    // 1 + 9 by bound parameters, 10 by literals, 5 in an IN list, 3 in a
    // bound array, 2 in an array constant: 30 distinct values.
    for p in &phones[1..10] {
        c.query(&lookup, &[p]).await.unwrap();
    }
    for p in &phones[10..20] {
        let q = format!("SELECT name FROM customers WHERE phone = '{p}'");
        c.simple_query(&q).await.unwrap();
    }
    let list = phones[20..25]
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let q = format!("SELECT name FROM customers WHERE phone IN ({list})");
    assert_eq!(rows(&c.simple_query(&q).await.unwrap()), 5);
    let any = c
        .query(
            "SELECT name FROM customers WHERE phone = ANY($1)",
            &[&phones[25..28].to_vec()],
        )
        .await
        .unwrap();
    assert_eq!(any.len(), 3);
    // An array constant in a form the server reads past leading spaces.
    let q = format!(
        "SELECT name FROM customers WHERE phone = ANY(' [1:2]={{{},{}}}')",
        phones[28], phones[29]
    );
    assert_eq!(rows(&c.simple_query(&q).await.unwrap()), 2);
    // The 31st value is refused wherever it comes from, and costs nothing.
    let refused = |e: tokio_postgres::Error| {
        assert_eq!(error_code(&e), "42501", "{}", error_text(&e));
        assert!(
            error_text(&e).contains("lookups_per_hour"),
            "{}",
            error_text(&e)
        );
    };
    refused(c.query(&lookup, &[&phones[30]]).await.unwrap_err());
    let q = format!("SELECT name FROM customers WHERE phone = '{}'", phones[31]);
    refused(c.simple_query(&q).await.unwrap_err());
    let c2 = env.connect("agent_li").await;
    let q = format!(
        "PREPARE p(text) AS SELECT name FROM customers WHERE phone = $1; EXECUTE p('{}')",
        phones[32]
    );
    refused(c2.simple_query(&q).await.unwrap_err());
    refused(
        c2.query(
            "SELECT name FROM customers WHERE phone = ANY($1)",
            &[&vec![phones[0].clone(), phones[33].clone()]],
        )
        .await
        .unwrap_err(),
    );
    // Values already looked up still work, in a second session too, and
    // so do statements that look nothing up.
    assert_eq!(
        c2.query(&lookup_in(&c2).await, &[&phones[7]])
            .await
            .unwrap()
            .len(),
        1
    );
    let q = format!(
        "SELECT name FROM customers WHERE phone IN ('{}', '{}')",
        phones[3], phones[12]
    );
    assert_eq!(rows(&c2.simple_query(&q).await.unwrap()), 2);
    c2.simple_query("SELECT name FROM customers WHERE id = 5")
        .await
        .unwrap();
    // On call: the block is listed and lifted.
    let (_, body) = admin(&env.proxy, "GET", "/blocks", ADMIN_TOKEN, "").await;
    let blocks: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert!(
        blocks.iter().any(|b| b["user"] == "agent_li"
            && b["rule"] == "lookups_per_hour"
            && b["count"] == 30
            && b["limit"] == 30),
        "{blocks:?}"
    );
    let (status, body) = admin(
        &env.proxy,
        "POST",
        "/blocks/lift",
        ADMIN_TOKEN,
        r#"{"user": "agent_li", "rule": "lookups_per_hour"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("lookups_per_hour"), "{body}");
    assert_eq!(c.query(&lookup, &[&phones[30]]).await.unwrap().len(), 1);
    let alert = env.hooked("lookups_per_hour").await;
    assert_eq!(alert["user"], "agent_li");
    drop((c, c2, dba));
    env.proxy.shutdown().await;
    let alerts: Vec<_> = records(&env.dir)
        .into_iter()
        .filter(|r| r.event == "alert" && r.rule.as_deref() == Some("lookups_per_hour"))
        .collect();
    assert_eq!(
        alerts.len(),
        2,
        "the crossing, then the first refusal: {alerts:?}"
    );
    assert_eq!(alerts[0].detail.as_ref().unwrap()["blocked"], false);
    assert_eq!(alerts[0].detail.as_ref().unwrap()["lookups_last_hour"], 30);
    assert_eq!(alerts[1].detail.as_ref().unwrap()["blocked"], true);
}

async fn lookup_in(c: &Client) -> tokio_postgres::Statement {
    c.prepare("SELECT name FROM customers WHERE phone = $1")
        .await
        .unwrap()
}

/// The role's statement timeout is set at login and holds: the role may
/// lower it, never raise or lift it, not even with its own startup
/// options.
#[tokio::test]
async fn the_roles_statement_timeout_holds() {
    let env = start().await;
    let show = |msgs: Vec<SimpleQueryMessage>| -> String {
        msgs.into_iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    };
    let c = env.connect("agent_li").await;
    assert_eq!(
        show(c.simple_query("SHOW statement_timeout").await.unwrap()),
        "500ms"
    );
    let e = c
        .simple_query("SELECT count(*) FROM generate_series(1, 500000000)")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    for sql in [
        "SET statement_timeout = 0",
        "SET statement_timeout = '10min'",
        "SET statement_timeout TO 501",
        "SET LOCAL statement_timeout = '1h'",
        "SET statement_timeout = 'forever'",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e}");
    }
    c.simple_query("SET statement_timeout = '100ms'")
        .await
        .unwrap();
    assert_eq!(
        show(c.simple_query("SHOW statement_timeout").await.unwrap()),
        "100ms"
    );
    c.simple_query("RESET statement_timeout").await.unwrap();
    assert_eq!(
        show(c.simple_query("SHOW statement_timeout").await.unwrap()),
        "500ms"
    );
    // The client's own startup options lose to the role's.
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(env.proxy.addr.port())
        .user("agent_li")
        .password("agent_li")
        .dbname(pgwarden::demo::DATABASE)
        .options("-c statement_timeout=0")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        show(c.simple_query("SHOW statement_timeout").await.unwrap()),
        "500ms"
    );
    // Full access: untouched.
    let d = env.connect("dba_zhang").await;
    assert_eq!(
        show(d.simple_query("SHOW statement_timeout").await.unwrap()),
        "0"
    );
}
