//! Application drivers beyond tokio-postgres through pgwarden: psycopg 3
//! (Python) and node-postgres. Each is installed into Cargo's per-test
//! temporary folder on first use (PyPI, npm), so `cargo test` works on a
//! fresh machine with python3/pip and node/npm.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio::process::Command;

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

/// A folder where `import psycopg` works.
fn psycopg_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        python_packages(
            "python-drivers",
            "import psycopg; psycopg.pq.version()",
            &["psycopg[binary]>=3.1,<4"],
        )
    })
}

/// A folder whose node_modules holds `pg`.
fn node_pg_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tmp("node-drivers");
        if !dir.join("node_modules/pg/package.json").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let out = std::process::Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg("pg@8")
                .output()
                .expect("node and npm are needed for the node-postgres test");
            assert!(
                out.status.success(),
                "npm install pg failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

fn url(proxy: &pgwarden::Proxy) -> String {
    format!(
        "postgresql://{}:{}@127.0.0.1:{}/app",
        SCRAM_USER.0,
        SCRAM_USER.1,
        proxy.addr.port()
    )
}

fn assert_all_ok(name: &str, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{name}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3() {
    let path = tokio::task::spawn_blocking(psycopg_path).await.unwrap();
    let proxy = start_proxy("").await;
    let out = Command::new("python3")
        .arg(scripts().join("psycopg_check.py"))
        .arg(url(&proxy))
        .env("PYTHONPATH", path)
        .output()
        .await
        .unwrap();
    assert_all_ok("psycopg", &out);
    // Same script with TLS on the client leg and SCRAM relayed.
    let c = &fixture().certs;
    let proxy = start_proxy(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nmode = \"require\"\n",
        c.cert.display(),
        c.key.display()
    ))
    .await;
    let out = Command::new("python3")
        .arg(scripts().join("psycopg_check.py"))
        .arg(format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            url(&proxy).replace("127.0.0.1", "localhost"),
            c.ca.display()
        ))
        .env("PYTHONPATH", path)
        .output()
        .await
        .unwrap();
    assert_all_ok("psycopg over TLS", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let path = tokio::task::spawn_blocking(node_pg_path).await.unwrap();
    let proxy = start_proxy("").await;
    let out = Command::new("node")
        .arg(scripts().join("node_pg_check.js"))
        .arg(url(&proxy))
        .env("NODE_PATH", path.join("node_modules"))
        .output()
        .await
        .unwrap();
    assert_all_ok("node-postgres", &out);
}
