//! A role's connect rules through real clients: a borrowed password from
//! the wrong network or without the employee's certificate is refused;
//! one login used from two client addresses (127.0.0.1 and 127.0.0.2)
//! raises an alert naming both, or refuses the newer connection; logins
//! outside a role's hours alert or are refused. Each refusal is a FATAL
//! 28000 error, a `connect_refused` record and an alert in the trail.

mod common;

use common::{connect_direct, fixture, unique};
use pgwarden::Proxy;
use pgwarden::audit::{Record, search};
use std::net::SocketAddr;
use std::path::Path;
use tokio_postgres::{Client, NoTls};

const PASSWORD: &str = "rules-secret";

/// Logins created for one test, each in a role of `policy` (which names
/// them as `{0}`, `{1}`, ...).
struct Env {
    proxy: Proxy,
    dir: tempfile::TempDir,
    users: Vec<String>,
}

async fn start(n_users: usize, policy: &str, extra: &str) -> Env {
    let direct = connect_direct().await;
    let users: Vec<String> = (0..n_users).map(|_| unique("emp")).collect();
    let mut text = policy.to_string();
    for (i, u) in users.iter().enumerate() {
        direct
            .batch_execute(&format!("CREATE ROLE {u} LOGIN PASSWORD '{PASSWORD}'"))
            .await
            .unwrap();
        text = text.replace(&format!("{{{i}}}"), u);
    }
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("rules.yaml"), text).unwrap();
    std::fs::write(dir.path().join("audit.key"), "connect rules key").unwrap();
    let config = common::config(&format!(
        "policies = \"{}\"\n{extra}\n[catalog]\nuser = \"{}\"\npassword = \"{}\"\n\
         [audit]\ndir = \"{}\"\nkey_file = \"{}\"\ndurability = \"async\"\n",
        policies.display(),
        common::CATALOG_USER.0,
        common::CATALOG_USER.1,
        dir.path().join("trail").display(),
        dir.path().join("audit.key").display(),
    ));
    let proxy = Proxy::start(config).await.expect("proxy starts");
    Env { proxy, dir, users }
}

impl Env {
    fn pg(&self, user: usize) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.proxy.addr.port())
            .user(&self.users[user])
            .password(PASSWORD)
            .dbname("app");
        c
    }

    /// Connect as `user` from the local address `from` (127.0.0.x).
    async fn connect_from(&self, user: usize, from: &str) -> Result<Client, tokio_postgres::Error> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(from.parse().unwrap(), 0))
            .unwrap();
        let tcp = socket.connect(self.proxy.addr).await.unwrap();
        let (client, conn) = self.pg(user).connect_raw(tcp, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn records(self) -> Vec<Record> {
        self.proxy.shutdown().await;
        let mut out = Vec::new();
        search::scan(&self.dir.path().join("trail"), |r, _| {
            out.push(r.clone());
            Ok(())
        })
        .unwrap();
        out
    }
}

fn refused(r: Result<Client, tokio_postgres::Error>, what: &str) -> tokio_postgres::Error {
    match r {
        Ok(_) => panic!("not refused: {what}"),
        Err(e) => e,
    }
}

fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (d.code().code().to_string(), d.message().to_string())
}

fn alerts<'a>(records: &'a [Record], rule: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.event == "alert" && r.rule.as_deref() == Some(rule))
        .collect()
}

#[tokio::test]
async fn a_login_from_outside_the_role_networks_is_refused() {
    let env = start(
        2,
        r#"
roles:
  branch:
    users: ["{0}"]
    access: {"*": deny}
    connect:
      networks: [10.20.0.0/16, 127.0.0.2]
  office:
    users: ["{1}"]
    access: {"*": deny}
    connect:
      networks: [127.0.0.0/8]
"#,
        "",
    )
    .await;
    let e = refused(env.connect_from(0, "127.0.0.1").await, "refused");
    let (code, message) = db_error(&e);
    assert_eq!(code, "28000");
    assert!(
        message.contains("may not connect from 127.0.0.1"),
        "{message}"
    );
    assert!(message.contains("10.20.0.0/16"), "{message}");
    // From an allowed address the same password works.
    let c = env
        .connect_from(0, "127.0.0.2")
        .await
        .expect("allowed address");
    c.simple_query("SELECT 1").await.unwrap();
    let o = env
        .connect_from(1, "127.0.0.1")
        .await
        .expect("in its network");
    drop((c, o));
    let user = env.users[0].clone();
    let records = env.records().await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.event == "connect_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].user.as_deref(), Some(user.as_str()));
    assert_eq!(refused[0].rule.as_deref(), Some("network"));
    let a = alerts(&records, "network");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].detail.as_ref().unwrap()["address"], "127.0.0.1");
    // No session was recorded for the refused login.
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event == "connect" && r.user.as_deref() == Some(user.as_str()))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_role_bound_to_certificates_needs_the_employee_own_certificate() {
    let certs = &fixture().certs;
    let env = start(
        2,
        r#"
roles:
  tellers:
    users: ["{0}", "{1}"]
    access: {"*": deny}
    connect:
      client_cert: required
"#,
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            certs.cert.display(),
            certs.key.display(),
            certs.ca.display()
        ),
    )
    .await;
    let (me, other) = (env.users[0].clone(), env.users[1].clone());
    let mut cfg = env.pg(0);
    cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    // The password alone: refused.
    let e = cfg
        .connect(common::tls_connector())
        .await
        .err()
        .expect("no certificate");
    let (code, message) = db_error(&e);
    assert_eq!(code, "28000");
    assert!(message.contains("none was presented"), "{message}");
    // A colleague's certificate: refused, naming whose it is.
    let (cert, key) = common::client_cert(&other);
    let e = cfg
        .connect(common::tls_connector_with(Some((&cert, &key))))
        .await
        .err()
        .expect("someone else's certificate");
    assert!(db_error(&e).1.contains(&format!("issued to {other}")));
    // Their own certificate and password: in.
    let (cert, key) = common::client_cert(&me);
    let (c, conn) = cfg
        .connect(common::tls_connector_with(Some((&cert, &key))))
        .await
        .expect("own certificate");
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let records = env.records().await;
    assert_eq!(alerts(&records, "client_cert").len(), 1, "one incident");
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event == "connect_refused" && r.rule.as_deref() == Some("client_cert"))
            .count(),
        2
    );
}

#[tokio::test]
async fn one_account_from_two_addresses_alerts_naming_both() {
    let env = start(
        2,
        r#"
roles:
  support:
    users: ["{0}"]
    access: {"*": deny}
    connect:
      second_address: {within_minutes: 30}
  strict:
    users: ["{1}"]
    access: {"*": deny}
    connect:
      second_address: {on_exceed: block}
"#,
        "",
    )
    .await;
    // Alert mode: both connections work, one alert names both addresses.
    let a = env.connect_from(0, "127.0.0.1").await.unwrap();
    let a2 = env.connect_from(0, "127.0.0.1").await.unwrap();
    let b = env.connect_from(0, "127.0.0.2").await.expect("alert only");
    b.simple_query("SELECT 1").await.unwrap();
    drop((a, a2, b));
    // Block mode: the newer connection from another address is refused
    // while the first is open, and allowed once it has left.
    let first = env.connect_from(1, "127.0.0.1").await.unwrap();
    let e = refused(env.connect_from(1, "127.0.0.2").await, "blocked");
    let (code, message) = db_error(&e);
    assert_eq!(code, "28000");
    assert!(message.contains("is connected from 127.0.0.1"), "{message}");
    first.simple_query("SELECT 1").await.unwrap();
    drop(first);
    let mut later = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Ok(c) = env.connect_from(1, "127.0.0.2").await {
            later = Some(c);
            break;
        }
    }
    assert!(later.is_some(), "allowed once the first session ended");
    drop(later);
    let (alerting, strict) = (env.users[0].clone(), env.users[1].clone());
    let records = env.records().await;
    let a = alerts(&records, "second_address");
    let mine: Vec<_> = a
        .iter()
        .filter(|r| r.user.as_deref() == Some(alerting.as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "{a:?}");
    let detail = mine[0].detail.as_ref().unwrap();
    assert_eq!(detail["address"], "127.0.0.2");
    assert_eq!(detail["other_address"], "127.0.0.1");
    assert_eq!(detail["blocked"], false);
    let blocked: Vec<_> = a
        .iter()
        .filter(|r| r.user.as_deref() == Some(strict.as_str()))
        .collect();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].detail.as_ref().unwrap()["blocked"], true);
}

/// Hours that exclude now (or include it), in UTC.
fn hours_around_now(include: bool) -> (String, String) {
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let h = i32::from(now.hour());
    let (from, to) = if include {
        (h + 23, h + 1)
    } else {
        (h + 2, h + 3)
    };
    (format!("{:02}:00", from % 24), format!("{:02}:00", to % 24))
}

#[tokio::test]
async fn logins_outside_the_role_hours_alert_or_are_refused() {
    let (out_from, out_to) = hours_around_now(false);
    let (in_from, in_to) = hours_around_now(true);
    let env = start(
        4,
        &format!(
            r#"
roles:
  day_shift:
    users: ["{{0}}"]
    access: {{"*": deny}}
    connect:
      hours: {{from: "{out_from}", to: "{out_to}", time_zone: UTC}}
  watched:
    users: ["{{1}}"]
    access: {{"*": deny}}
    connect:
      hours: {{from: "{out_from}", to: "{out_to}", time_zone: UTC, on_exceed: alert}}
  on_duty:
    users: ["{{2}}"]
    access: {{"*": deny}}
    connect:
      hours: {{days: [mon-sun], from: "{in_from}", to: "{in_to}", time_zone: Asia/Shanghai}}
  utc_duty:
    users: ["{{3}}"]
    access: {{"*": deny}}
    connect:
      hours: {{days: [mon-sun], from: "{in_from}", to: "{in_to}", time_zone: UTC}}
"#
        ),
        "",
    )
    .await;
    let e = refused(env.connect_from(0, "127.0.0.1").await, "off hours");
    let (code, message) = db_error(&e);
    assert_eq!(code, "28000");
    assert!(message.contains("may connect only every day"), "{message}");
    let w = env.connect_from(1, "127.0.0.1").await.expect("alert only");
    drop(w);
    // The time zone is the role's: hours around now in UTC are other hours
    // in Shanghai (UTC+8), so this login is outside them too.
    let e = env.connect_from(2, "127.0.0.1").await.err();
    assert!(e.is_some(), "08:00 apart from UTC");
    let ok = env
        .connect_from(3, "127.0.0.1")
        .await
        .expect("within hours");
    ok.simple_query("SELECT 1").await.unwrap();
    drop(ok);
    let (blocked, watched) = (env.users[0].clone(), env.users[1].clone());
    let records = env.records().await;
    let a = alerts(&records, "off_hours");
    let of = |u: &str| {
        a.iter()
            .find(|r| r.user.as_deref() == Some(u))
            .unwrap_or_else(|| panic!("no alert for {u}: {a:?}"))
            .detail
            .clone()
            .unwrap()
    };
    assert_eq!(of(&blocked)["blocked"], true);
    assert_eq!(of(&watched)["blocked"], false);
}

#[test]
fn policy_check_names_bad_connect_rules() {
    let policy = r#"
roles:
  a:
    users: [x]
    access: {"*": deny}
    connect:
      networks: [10.0.0.0/33]
      client_cert: maybe
      hours: {days: [mon-xyz], from: "25:00", to: "08:00", time_zone: Mars/Olympus}
    limits:
      distinct_subjects: {alert: 500, block: 100}
"#;
    let err = pgwarden::policy::load::load_sources(&[(
        Path::new("/etc/pgwarden/policies/a.yaml").to_path_buf(),
        policy.to_string(),
    )])
    .unwrap_err()
    .to_string();
    for needle in [
        "roles.a.connect.networks",
        "roles.a.connect.client_cert",
        "roles.a.connect.hours.days",
        "roles.a.connect.hours.from",
        "roles.a.connect.hours.time_zone",
        "roles.a.limits.distinct_subjects.alert",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
}
