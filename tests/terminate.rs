//! Terminate-mode authentication: pgwarden checks the client's SCRAM proof
//! (or md5 response) against the verifier read through `auth_query`, and
//! logs into the server with what the proof yields, never the password.

mod common;

use common::*;
use tokio_postgres::NoTls;
use tokio_postgres::config::{ChannelBinding, SslMode};

fn terminate_config(extra: &str) -> String {
    format!(
        "[auth]\nmode = \"terminate\"\nauth_query = \"SELECT rolname, rolpassword FROM public.pgwarden_auth($1)\"\n\
         [catalog]\nuser = \"{}\"\npassword = \"{}\"\ndatabase = \"postgres\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n{extra}",
        CATALOG_USER.0, CATALOG_USER.1
    )
}

#[tokio::test]
async fn scram_over_tls_on_both_legs() {
    let c = &fixture().certs;
    let proxy = start_proxy(&terminate_config(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nmode = \"require\"\n[upstream_tls]\nmode = \"verify-full\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
        c.cert.display(),
        c.key.display(),
        c.ca.display()
    )))
    .await;
    // tokio-postgres at its defaults (channel_binding = prefer): it announces
    // channel-binding support, which a relayed exchange cannot satisfy.
    let mut cfg = pg_config(&proxy, SCRAM_USER, "app");
    cfg.ssl_mode(SslMode::Require).host("localhost");
    let (client, conn) = cfg
        .connect(tls_connector())
        .await
        .expect("SCRAM login through TLS on both legs");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select current_user::text, ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), SCRAM_USER.0);
    assert!(row.get::<_, bool>(1), "upstream leg must be encrypted");

    // A client insisting on channel binding cannot pass a proxy: clear refusal.
    let mut cfg = pg_config(&proxy, SCRAM_USER, "app");
    cfg.ssl_mode(SslMode::Require)
        .host("localhost")
        .channel_binding(ChannelBinding::Require);
    assert!(cfg.connect(tls_connector()).await.is_err());
}

#[tokio::test]
async fn md5_and_scram_users_with_psql_and_wrong_passwords() {
    let proxy = start_proxy(&terminate_config("")).await;
    for user in [SCRAM_USER, MD5_USER] {
        let client = connect(&proxy, user).await;
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user.0);
    }
    let url = psql_url(&proxy, SCRAM_USER.0);
    assert_eq!(
        psql_ok(&url, SCRAM_USER.1, "select current_user").await,
        SCRAM_USER.0
    );

    // Wrong password and unknown login get the same answer.
    let wrong = pg_config(&proxy, (SCRAM_USER.0, "nope"), "app")
        .connect(NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(wrong.code().map(|c| c.code()), Some("28P01"));
    assert_eq!(
        error_text(&wrong),
        format!(
            "password authentication failed for user \"{}\"",
            SCRAM_USER.0
        )
    );
    let wrong_md5 = pg_config(&proxy, (MD5_USER.0, "nope"), "app")
        .connect(NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(wrong_md5.code().map(|c| c.code()), Some("28P01"));
    let ghost = pg_config(&proxy, ("no_such_user", "whatever"), "app")
        .connect(NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(ghost.code().map(|c| c.code()), Some("28P01"));
    assert_eq!(
        error_text(&ghost),
        "password authentication failed for user \"no_such_user\""
    );
    let text = metrics_text(&proxy).await;
    assert_eq!(metric(&text, "pgwarden_auth_failures_total"), 3.0, "{text}");
}

#[tokio::test]
async fn broken_catalog_account_fails_logins_clearly() {
    let proxy = start_proxy(
        "[auth]\nmode = \"terminate\"\n[catalog]\nuser = \"pgwarden_catalog\"\npassword = \"wrong\"\n",
    )
    .await;
    let err = connect_err(&proxy).await;
    assert_eq!(err.code().map(|c| c.code()), Some("57P03"), "{err:?}");
    assert!(error_text(&err).contains("cannot verify logins"), "{err:?}");
}

async fn connect_err(proxy: &pgwarden::Proxy) -> tokio_postgres::Error {
    pg_config(proxy, SCRAM_USER, "app")
        .connect(NoTls)
        .await
        .err()
        .expect("refused")
}
