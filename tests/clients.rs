//! Real command-line clients through pgwarden: psql scripts and pgbench.

mod common;

use common::*;
use tokio::process::Command;

fn url(proxy: &pgwarden::Proxy, db: &str) -> String {
    format!(
        "postgresql://{}@127.0.0.1:{}/{db}",
        SCRAM_USER.0,
        proxy.addr.port()
    )
}

#[tokio::test]
async fn psql_script_with_copy_and_meta_commands() {
    let proxy = start_proxy("").await;
    let table = unique("psql_t");
    let script = format!(
        r#"\set ON_ERROR_STOP 1
create table {table} (id int primary key, note text);
copy {table} from stdin with (format csv);
1,"first, with comma"
2,second
\.
insert into {table} values (3, $$dollar 'quoted'$$) returning id;
begin;
update {table} set note = note || '!' where id = 2;
savepoint s1;
select 1/0;
rollback to s1;
commit;
\copy (select * from {table} order by id) to stdout with (format csv)
select count(*) as n from {table} \gset
\echo rows=:n
\d {table}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sql");
    std::fs::write(&path, script.replace("\\set ON_ERROR_STOP 1\n", "")).unwrap();
    let out = Command::new("psql")
        .args(["-X", "-q", "-f"])
        .arg(&path)
        .arg(url(&proxy, "app"))
        .env("PGPASSWORD", SCRAM_USER.1)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("1,\"first, with comma\""), "{stdout}");
    assert!(stdout.contains("2,second!"), "{stdout}");
    assert!(stdout.contains("3,dollar 'quoted'"), "{stdout}");
    assert!(stdout.contains("rows=3"), "{stdout}");
    assert!(
        stdout.contains("primary key") || stdout.contains("PRIMARY KEY"),
        "{stdout}"
    );
    // The deliberate division by zero was reported and did not stop the script.
    assert!(stderr.contains("division by zero"), "{stderr}");
}

#[tokio::test]
async fn pgbench_simple_extended_and_prepared() {
    let proxy = start_proxy("").await;
    let db = unique("bench");
    fixture()
        .cluster
        .psql(
            "postgres",
            &format!("create database {db} owner {}", SCRAM_USER.0),
        )
        .unwrap();
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(url(&proxy, &db))
        .env("PGPASSWORD", SCRAM_USER.1)
        .output()
        .await
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for mode in ["simple", "extended", "prepared"] {
        let out = Command::new("pgbench")
            .args(["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode])
            .arg(url(&proxy, &db))
            .env("PGPASSWORD", SCRAM_USER.1)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 200/200"),
            "{mode}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{mode}: {stdout}"
        );
    }
    // Every TPC-B transaction wrote one history row through the proxy.
    let client = connect(&proxy, SCRAM_USER).await;
    drop(client);
    let n = fixture()
        .cluster
        .psql(&db, "select count(*) from pgbench_history")
        .unwrap();
    assert_eq!(n.trim(), "600");
}
