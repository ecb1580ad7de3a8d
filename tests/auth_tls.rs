//! Authentication relay (SCRAM, md5, cleartext), TLS on both legs, and
//! cancel requests through pgwarden.

mod common;

use common::*;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

#[tokio::test]
async fn scram_md5_and_cleartext_logins_relay() {
    let proxy = start_proxy("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    for user in [SCRAM_USER, MD5_USER, PLAIN_USER] {
        let client = connect(&proxy, user).await;
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user.0);
    }
    let err = pg_config(&proxy, (SCRAM_USER.0, "wrong"), "app")
        .connect(NoTls)
        .await
        .err()
        .expect("wrong password refused");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");
    let err = pg_config(&proxy, (MD5_USER.0, "wrong"), "app")
        .connect(NoTls)
        .await
        .err()
        .expect("wrong md5 password refused");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");
    // The session counts its failure as it ends, which may be just after
    // the client read the error.
    let mut text = metrics_text(&proxy).await;
    for _ in 0..100 {
        if metric(&text, "pgwarden_auth_failures_total") >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = metrics_text(&proxy).await;
    }
    assert_eq!(metric(&text, "pgwarden_auth_failures_total"), 2.0, "{text}");
}

#[tokio::test]
async fn psql_logs_in_with_scram_at_default_settings() {
    let proxy = start_proxy("").await;
    let url = psql_url(&proxy, SCRAM_USER.0);
    assert_eq!(
        psql_ok(&url, SCRAM_USER.1, "select current_user, 6 * 7").await,
        "alice|42"
    );
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-c", "select 1"])
        .arg(psql_url(&proxy, SCRAM_USER.0))
        .env("PGPASSWORD", "nope")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
}

fn client_tls_config(mode: &str) -> String {
    let c = &fixture().certs;
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nmode = \"{mode}\"\n",
        c.cert.display(),
        c.key.display()
    )
}

#[tokio::test]
async fn client_tls_with_rustls_and_psql() {
    let proxy = start_proxy(&client_tls_config("require")).await;
    let mut cfg = pg_config(&proxy, SCRAM_USER, "app");
    cfg.ssl_mode(SslMode::Require).host("localhost");
    let (client, conn) = cfg.connect(tls_connector()).await.expect("TLS login");
    tokio::spawn(conn);
    let v: i32 = client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);

    // Plain connections are refused in require mode, with a clear error.
    let err = pg_config(&proxy, SCRAM_USER, "app")
        .connect(NoTls)
        .await
        .err()
        .expect("plain refused");
    assert!(error_text(&err).contains("requires TLS"), "{err:?}");

    // psql with sslmode=verify-full against the test CA.
    let url = format!(
        "postgresql://{}@localhost:{}/app?sslmode=verify-full&sslrootcert={}",
        SCRAM_USER.0,
        proxy.addr.port(),
        fixture().certs.ca.display()
    );
    assert_eq!(
        psql_ok(&url, SCRAM_USER.1, "select 'tls ok'").await,
        "tls ok"
    );
}

#[tokio::test]
async fn client_tls_allow_serves_both() {
    let proxy = start_proxy(&client_tls_config("allow")).await;
    let client = connect(&proxy, MD5_USER).await;
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let mut cfg = pg_config(&proxy, MD5_USER, "app");
    cfg.ssl_mode(SslMode::Require).host("localhost");
    let (client, conn) = cfg.connect(tls_connector()).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(
        client
            .query_one("select 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

async fn server_sees_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn upstream_tls_modes() {
    let ca = fixture().certs.ca.display().to_string();
    // verify-full against the test CA, with the server name in the cert.
    let proxy = start_proxy(&format!(
        "[upstream_tls]\nmode = \"verify-full\"\nca_file = \"{ca}\"\nserver_name = \"localhost\"\n"
    ))
    .await;
    // md5 relays over an encrypted upstream leg.
    let client = connect(&proxy, MD5_USER).await;
    assert!(server_sees_ssl(&client).await);
    drop(client);
    proxy.shutdown().await;

    // require: encrypted without chain checks.
    let proxy = start_proxy("[upstream_tls]\nmode = \"require\"\n").await;
    let client = connect(&proxy, SCRAM_USER).await;
    assert!(server_sees_ssl(&client).await);

    // verify-full with the wrong name fails closed with a clear error.
    let proxy = start_proxy(&format!("[upstream_tls]\nmode = \"verify-full\"\nca_file = \"{ca}\"\nserver_name = \"db.example.org\"\n")).await;
    let err = pg_config(&proxy, SCRAM_USER, "app")
        .connect(NoTls)
        .await
        .err()
        .expect("bad name refused");
    assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");

    // Plain upstream: the server sees no TLS.
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    assert!(!server_sees_ssl(&client).await);
}

#[tokio::test]
async fn cancel_request_reaches_the_right_backend() {
    let proxy = start_proxy("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let bystander = connect(&proxy, SCRAM_USER).await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        // Cancel once the sleep is running on the server.
        let admin = connect_direct().await;
        for _ in 0..200 {
            let n: i64 = admin
                .query_one("select count(*) from pg_stat_activity where query = 'select pg_sleep(29)' and state = 'active'", &[])
                .await
                .unwrap()
                .get(0);
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        token.cancel_query(NoTls).await
    });
    let started = std::time::Instant::now();
    let err = client.query("select pg_sleep(29)", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014");
    assert!(started.elapsed() < Duration::from_secs(20));
    canceller.await.unwrap().unwrap();
    // The other session was not touched, and the cancelled one still works.
    assert_eq!(
        bystander
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    assert_eq!(
        client
            .query_one("select 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    let text = metrics_text(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "pgwarden_cancel_requests_total{outcome=\"forwarded\"}"
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn pg_cancel_backend_with_the_pid_the_client_sees() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let admin = connect(&proxy, SCRAM_USER).await;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let sleeper = tokio::spawn(async move { client.query("select pg_sleep(30)", &[]).await });
    // Wait until the sleep is running, then cancel it by pid from another session.
    for _ in 0..100 {
        let active: bool = admin
            .query_one("select exists(select 1 from pg_stat_activity where pid = $1 and query like '%pg_sleep(30)%' and state = 'active')", &[&pid])
            .await
            .unwrap()
            .get(0);
        if active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok: bool = admin
        .query_one("select pg_cancel_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ok);
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014");
}

#[tokio::test]
async fn psql_ctrl_c_cancels_through_the_proxy() {
    let proxy = start_proxy("").await;
    let child = tokio::process::Command::new("psql")
        .args(["-X", "-c", "select pg_sleep(31)"])
        .arg(psql_url(&proxy, SCRAM_USER.0))
        .env("PGPASSWORD", SCRAM_USER.1)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let admin = connect(&proxy, SCRAM_USER).await;
    for _ in 0..100 {
        let n: i64 = admin
            .query_one("select count(*) from pg_stat_activity where query = 'select pg_sleep(31)' and state = 'active'", &[])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGINT is what Ctrl-C sends; psql answers with a CancelRequest.
    let pid = child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("psql stops")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn forged_cancel_keys_are_ignored() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // A cancel request with the right pid but a guessed secret.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(&pgwarden::cancel::encode_cancel_request(pid, &[1, 2, 3, 4]))
        .await
        .unwrap();
    drop(s);
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        client.query_one("select pg_sleep(1)::text", &[]),
    )
    .await;
    assert!(r.expect("not cancelled, completes").is_ok());
}
