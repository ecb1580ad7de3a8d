//! What database tools send to learn a schema works for restricted roles
//! wherever it reveals no classified value: pgjdbc's DatabaseMetaData (as
//! DBeaver and JVM ORMs call it) and SQLAlchemy's inspector over psycopg 3
//! (as Alembic and admin tools call it), against the sample database with
//! the example policy; the lookups they make next show masks. psql's
//! describe commands are in tests/enforcement.rs.
//!
//! pgjdbc comes from Debian's libpostgresql-jdbc-java and javac from a
//! JDK (`.ci/run` installs both); SQLAlchemy and psycopg are installed from
//! PyPI into Cargo's per-test temporary folder on first use.

mod common;

use pgwarden::Proxy;
use pgwarden::config::Config;
use pgwarden::demo::{DATABASE, postgres::PgCluster, start_sample_cluster};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::process::Command;

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| start_sample_cluster().expect("sample cluster"))
}

async fn start() -> Proxy {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\npolicies = \"{}\"\n\
         [catalog]\nuser = \"pgwarden\"\npassword = \"pgwarden-catalog\"\n",
        cluster().addr(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .display(),
    );
    let config = Config::parse(&text, Path::new("/tmp/tools.toml")).unwrap();
    Proxy::start(config).await.expect("proxy starts")
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// Customer 1's phone as stored, read past pgwarden.
fn phone_of_customer_1() -> String {
    cluster()
        .psql(DATABASE, "SELECT phone FROM customers WHERE id = 1")
        .unwrap()
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 11)
        .expect("a phone")
        .to_string()
}

/// MetaCheck.java compiled into a temporary folder; its classpath.
fn meta_check() -> String {
    static CP: OnceLock<String> = OnceLock::new();
    CP.get_or_init(|| {
        let jar = ["/usr/share/java/postgresql.jar"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgjdbc (Debian's libpostgresql-jdbc-java) is needed for this test");
        let dir = tmp("jdbc");
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .arg(scripts().join("MetaCheck.java"))
            .output()
            .expect("javac (a JDK) is needed for this test");
        assert!(
            out.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{jar}:{}", dir.display())
    })
    .clone()
}

/// What MetaCheck printed for `user`: call name to "ok ..." or "FAIL ...".
async fn jdbc(proxy: &Proxy, user: &str) -> Vec<(String, String)> {
    let cp = tokio::task::spawn_blocking(meta_check).await.unwrap();
    let out = Command::new("java")
        .args(["-cp", &cp, "MetaCheck"])
        .arg(format!(
            "jdbc:postgresql://127.0.0.1:{}/{DATABASE}",
            proxy.addr.port()
        ))
        .args([user, user])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| {
            let (status, rest) = l.split_once(' ')?;
            let (name, result) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((name.to_string(), format!("{status} {result}")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_database_metadata_works_for_restricted_roles() {
    let proxy = start().await;
    let phone = phone_of_customer_1();
    for user in ["agent_li", "analyst_wu", "intern_sun"] {
        let calls = jdbc(&proxy, user).await;
        assert_eq!(calls.len(), 12, "{user}: {calls:?}");
        for (name, result) in &calls {
            if name == "lookup" {
                continue;
            }
            assert!(result.starts_with("ok"), "{user} {name}: {result}");
        }
        let get = |n: &str| &calls.iter().find(|(name, _)| name == n).unwrap().1;
        assert!(get("primaryKeys").contains("id/customers_pkey"), "{user}");
        assert!(get("columns").contains("phone"), "{user}");
        let lookup = get("lookup");
        match user {
            // The support agent sees the mask, the analyst a pseudonym,
            // the intern nothing.
            "agent_li" => assert!(
                lookup.starts_with("ok ") && lookup.contains(&format!("{}****", &phone[..3])),
                "{lookup}"
            ),
            "analyst_wu" => assert!(lookup.contains(" h:"), "{lookup}"),
            _ => assert!(lookup.starts_with("FAIL 42501"), "{lookup}"),
        }
        assert!(!lookup.contains(&phone), "{user}: {lookup}");
    }
    proxy.shutdown().await;
}

/// A folder where `import sqlalchemy, psycopg` works.
fn sqlalchemy_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        common::python_packages(
            "python-sqlalchemy",
            "import sqlalchemy, psycopg; psycopg.pq.version()",
            &["sqlalchemy>=2,<3", "psycopg[binary]>=3.1,<4"],
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_inspector_works_for_a_support_agent() {
    let path = tokio::task::spawn_blocking(sqlalchemy_path).await.unwrap();
    let proxy = start().await;
    let phone = phone_of_customer_1();
    let out = Command::new("python3")
        .arg(scripts().join("sqlalchemy_check.py"))
        .arg(format!(
            "postgresql+psycopg://agent_li:agent_li@127.0.0.1:{}/{DATABASE}",
            proxy.addr.port()
        ))
        .arg(&phone[..3])
        .env("PYTHONPATH", path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(&phone));
    proxy.shutdown().await;
}
