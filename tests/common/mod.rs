//! Shared integration-test harness: one real PostgreSQL cluster per test
//! binary, test certificates, and helpers to start pgwarden in front of it.
#![allow(dead_code)]

use pgwarden::Config;
use pgwarden::demo::postgres::{ClusterOptions, PgCluster};
use pgwarden::listener::Proxy;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokio_postgres::{Client, NoTls};

/// Logins created in the test cluster: (user, password, hba method).
pub const SCRAM_USER: (&str, &str) = ("alice", "alice-secret");
pub const MD5_USER: (&str, &str) = ("bob_md5", "bob-secret");
pub const PLAIN_USER: (&str, &str) = ("carol_plain", "carol-secret");
/// pgwarden's catalog account; reads verifiers only through a SECURITY
/// DEFINER function.
pub const CATALOG_USER: (&str, &str) = ("pgwarden_catalog", "catalog-secret");

pub struct Fixture {
    pub cluster: PgCluster,
    pub certs: Certs,
}

/// PEM files of a test CA and a server certificate for localhost/127.0.0.1.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The shared cluster, started on first use.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let certs = make_certs();
        let cluster = PgCluster::start(&ClusterOptions {
            hba: vec![
                format!("host all {} 127.0.0.1/32 md5", MD5_USER.0),
                format!("host all {} 127.0.0.1/32 password", PLAIN_USER.0),
            ],
            settings: vec![],
            tls: Some((certs.cert.clone(), certs.key.clone())),
        })
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e:#}"));
        cluster
            .psql(
                "postgres",
                &format!(
                    "SET password_encryption = 'scram-sha-256';
                     CREATE ROLE {a} LOGIN SUPERUSER PASSWORD '{ap}';
                     SET password_encryption = 'md5';
                     CREATE ROLE {b} LOGIN PASSWORD '{bp}';
                     CREATE ROLE {c} LOGIN PASSWORD '{cp}';
                     CREATE DATABASE app;
                     SET password_encryption = 'scram-sha-256';
                     CREATE ROLE {cat} LOGIN PASSWORD '{catp}';
                     CREATE FUNCTION public.pgwarden_auth(p_user text, OUT rolname text, OUT rolpassword text)
                       RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
                       AS $$ SELECT rolname::text, rolpassword FROM pg_authid WHERE rolname = p_user AND rolcanlogin $$;
                     REVOKE ALL ON FUNCTION public.pgwarden_auth(text) FROM PUBLIC;
                     GRANT EXECUTE ON FUNCTION public.pgwarden_auth(text) TO {cat};",
                    a = SCRAM_USER.0,
                    ap = SCRAM_USER.1,
                    b = MD5_USER.0,
                    bp = MD5_USER.1,
                    c = PLAIN_USER.0,
                    cp = PLAIN_USER.1,
                    cat = CATALOG_USER.0,
                    catp = CATALOG_USER.1
                ),
            )
            .expect("creating test logins");
        Fixture { cluster, certs }
    })
}

fn make_certs() -> Certs {
    use rcgen::{CertificateParams, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("pgwarden-certs-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let ca_params = ca_params();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        dir,
    };
    std::fs::write(&certs.ca, ca_cert.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    std::fs::write(certs.dir.join("ca.key"), issuer.key().serialize_pem()).unwrap();
    certs
}

fn ca_params() -> rcgen::CertificateParams {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pgwarden test CA");
    ca_params
}

/// A client certificate and key issued by the test CA to `cn`, as PEM.
pub fn client_cert(cn: &str) -> (String, String) {
    let certs = &fixture().certs;
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.dir.join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::new(ca_params(), ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A proxy configuration in front of the shared cluster; `extra` is
/// appended to the TOML text.
pub fn config(extra: &str) -> Config {
    let f = fixture();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\n{extra}",
        f.cluster.addr()
    );
    Config::parse(&text, Path::new("/tmp/pgwarden-test.toml")).expect("test config")
}

/// Start a proxy with `extra` configuration.
pub async fn start_proxy(extra: &str) -> Proxy {
    Proxy::start(config(extra)).await.expect("proxy starts")
}

/// tokio-postgres settings to reach `proxy` as `user`.
pub fn pg_config(proxy: &Proxy, user: (&str, &str), dbname: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(proxy.addr.port())
        .user(user.0)
        .password(user.1)
        .dbname(dbname)
        .application_name("pgwarden-tests");
    c
}

/// Connect through `proxy` without TLS, driving the connection in a task.
pub async fn connect(proxy: &Proxy, user: (&str, &str)) -> Client {
    let (client, conn) = pg_config(proxy, user, "app")
        .connect(NoTls)
        .await
        .expect("connect through proxy");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A superuser connection straight to the server, bypassing the proxy.
pub async fn connect_direct() -> Client {
    let f = fixture();
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(f.cluster.port)
        .user("postgres")
        .dbname("app");
    let (client, conn) = c.connect(NoTls).await.expect("direct connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A unique name for tables and channels, so tests can run in parallel.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:x}", rand::random::<u32>())
}

/// Fetch the proxy's metrics text.
pub async fn metrics_text(proxy: &Proxy) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = proxy.metrics_addr.expect("metrics configured");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of a metric line such as `pgwarden_auth_failures_total`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Connect to 127.0.0.1:`port` as a sample employee of the demo data
/// (password = login, the demo database).
pub async fn connect_employee(port: u16, user: &str) -> Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(user)
        .dbname(pgwarden::demo::DATABASE)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    tokio::spawn(conn);
    client
}

/// A libpq URL for `user` to database `app` through `proxy`.
pub fn psql_url(proxy: &Proxy, user: &str) -> String {
    format!("postgresql://{user}@127.0.0.1:{}/app", proxy.addr.port())
}

/// Run `psql -X -A -t -c <sql> <url>` with `password`, assert that it
/// succeeded, and return its trimmed output.
pub async fn psql_ok(url: &str, password: &str, sql: &str) -> String {
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql, url])
        .env("PGPASSWORD", password)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Path of the pgwarden binary built for the tests.
pub fn pgwarden_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgwarden")
}

/// The SQLSTATE of a client error ("" when it has none).
pub fn error_code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// The server's (or pgwarden's) error message of a client error.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// A rustls connector for tokio-postgres that trusts the test CA.
pub fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    tls_connector_with(None)
}

/// A rustls connector that trusts the test CA and, given a PEM
/// certificate and key, presents them.
pub fn tls_connector_with(
    client: Option<(&str, &str)>,
) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&fixture().certs.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(Result::unwrap)
                .collect();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            config.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// A folder under Cargo's per-test temporary folder where `python3 -c
/// import_check` works, installing `packages` from PyPI into it on first
/// use (so the tests work on a fresh machine with python3 and pip).
pub fn python_packages(folder: &str, import_check: &str, packages: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(folder);
    let works = |d: &Path| {
        std::process::Command::new("python3")
            .args(["-c", import_check])
            .env("PYTHONPATH", d)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&dir) {
        let out = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .args(packages)
            .output()
            .expect("python3 with pip is needed for this test");
        assert!(
            out.status.success(),
            "pip install {packages:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(works(&dir), "`{import_check}` fails with {}", dir.display());
    dir
}
