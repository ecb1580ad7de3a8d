//! The `pgwarden` binary as operators run it: `run --config`, `policy
//! check`, SIGTERM, and bounded memory while streaming huge results.

mod common;

use common::*;
use futures_util::{StreamExt, TryStreamExt, pin_mut};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

struct Running {
    child: Child,
    port: u16,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("pgwarden.toml");
    std::fs::write(&path, body).unwrap();
    path
}

/// Start `pgwarden run` as a child process in front of the test cluster.
async fn spawn_proxy(extra: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = pgwarden::demo::postgres::free_port().unwrap();
    let metrics_port = pgwarden::demo::postgres::free_port().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"{}\"\nshutdown_timeout_secs = 5\n{extra}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            fixture().cluster.addr()
        ),
    );
    let child = Command::new(pgwarden_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Running {
                child,
                port,
                metrics_port,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("pgwarden did not start listening on {port}");
}

async fn connect_to(port: u16) -> tokio_postgres::Client {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(SCRAM_USER.0)
        .password(SCRAM_USER.1)
        .dbname("app");
    let (client, conn) = c
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect through pgwarden");
    tokio::spawn(conn);
    client
}

/// Resident and peak resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Peak memory the proxy may reach while streaming any result.
const RSS_BOUND_KIB: u64 = 96 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gigabyte_results_stream_with_bounded_memory() {
    let proxy = spawn_proxy("").await;
    let pid = proxy.child.id().unwrap();
    let client = connect_to(proxy.port).await;
    // About 2 GiB of DataRows.
    let rows = 2_000_000i64;
    let stream = client
        .query_raw(
            "select g, repeat('x', 1000) from generate_series(1, $1::int8) g",
            [rows],
        )
        .await
        .unwrap();
    pin_mut!(stream);
    let mut n = 0i64;
    let mut bytes = 0usize;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        n += 1;
        bytes += row.get::<_, &str>(1).len();
    }
    assert_eq!(n, rows);
    assert!(bytes >= 2_000_000_000);
    // About 1 GiB through COPY TO STDOUT.
    let copy = client
        .copy_out("copy (select repeat('y', 1000) from generate_series(1, 1000000)) to stdout")
        .await
        .unwrap();
    pin_mut!(copy);
    let mut copied = 0usize;
    while let Some(chunk) = copy.try_next().await.unwrap() {
        copied += chunk.len();
    }
    assert_eq!(copied, 1_001_000_000);
    let (_, peak) = rss_kib(pid);
    eprintln!("proxy peak RSS after 3 GiB streamed: {peak} KiB");
    assert!(
        peak < RSS_BOUND_KIB,
        "proxy peak RSS {peak} KiB exceeds {RSS_BOUND_KIB} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_slows_the_server_instead_of_filling_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = spawn_proxy("").await;
    let pid = proxy.child.id().unwrap();
    // Trusted superuser over a raw socket, so we control the read pace.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let mut startup = vec![0, 3, 0, 0];
    for kv in ["user", "postgres", "database", "app"] {
        startup.extend_from_slice(kv.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut pkt = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    pkt.extend(startup);
    s.write_all(&pkt).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    while !seen
        .windows(6)
        .any(|w| w[0] == b'Z' && w[1..5] == [0, 0, 0, 5])
    {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    // 4 GiB result; read only a little of it, slowly.
    let q = b"select repeat('z', 4000) from generate_series(1, 1000000)\0";
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&((q.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(q);
    s.write_all(&msg).await.unwrap();
    let mut read = 0usize;
    for _ in 0..40 {
        read += s.read(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss, peak) = rss_kib(pid);
    assert!(read > 0);
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RSS {peak} KiB while the client stalls (now {rss} KiB)"
    );
    // The server is held back by TCP backpressure: it has not produced the
    // whole result while we were reading slowly.
    let admin = connect_direct().await;
    let waiting: i64 = admin
        .query_one(
            "select count(*) from pg_stat_activity where query like 'select repeat(''z''%' and state = 'active' and wait_event = 'ClientWrite'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        waiting, 1,
        "the server should be blocked writing to pgwarden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_metrics_are_served() {
    let mut proxy = spawn_proxy("").await;
    let client = connect_to(proxy.port).await;
    client.simple_query("select 1; select 2").await.unwrap();
    let body = reqwest_lite(proxy.metrics_port).await;
    assert!(metric(&body, "pgwarden_connections_total") >= 1.0, "{body}");
    assert!(
        metric(&body, "pgwarden_statements_total{protocol=\"simple\"}") >= 1.0,
        "{body}"
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = proxy.child.id().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .is_err()
    );
}

async fn reqwest_lite(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Run `pgwarden <args> --config <config>` to completion.
async fn pgwarden(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(pgwarden_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn policy_check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n",
    );
    let out = pgwarden(&["policy", "check"], &good).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_config(
        dir.path(),
        "listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n\n[audit]\nfsync = true\n",
    );
    let out = pgwarden(&["policy", "check"], &bad).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pgwarden.toml:5") && err.contains("fsync"),
        "{err}"
    );

    let missing = dir.path().join("absent.toml");
    let out = pgwarden(&["run"], &missing).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));

    let bad_key = write_config(
        dir.path(),
        "listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n[masking]\nhash_key_file = \"/nonexistent/hash.key\"\n",
    );
    let out = pgwarden(&["run"], &bad_key).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("masking.hash_key_file") && err.contains("/nonexistent/hash.key"),
        "{err}"
    );
}

#[tokio::test]
async fn policy_check_reports_every_policy_error() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/example.yaml"),
        policies.join("a.yaml"),
    )
    .unwrap();
    let cfg = write_config(
        dir.path(),
        "listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\npolicies = \"policies\"\n",
    );
    let out = pgwarden(&["policy", "check"], &cfg).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("policies are valid: 10 classified columns in 3 tables, 3 roles"),
        "{stdout}"
    );

    std::fs::write(
        policies.join("b.yaml"),
        "classify:\n  public.customers:\n    phone: email\nroles:\n  auditors:\n    users: [agent_li]\n    access:\n      phone: peek\n",
    )
    .unwrap();
    let out = pgwarden(&["policy", "check"], &cfg).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.yaml:3: classify.public.customers.phone: column classified twice"),
        "{err}"
    );
    assert!(
        err.contains(
            "b.yaml:6: roles.auditors.users: user `agent_li` is already in role `support`"
        ),
        "{err}"
    );
    assert!(
        err.contains("b.yaml:8: roles.auditors.access.phone: unknown action `peek`"),
        "{err}"
    );
    assert!(err.contains("3 error(s)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_valid_policies_and_keeps_the_old_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("p.yaml"),
        "roles:\n  r:\n    users: [alice]\n    access: {'*': allow}\n",
    )
    .unwrap();
    let proxy = spawn_proxy(&format!("policies = \"{}\"\n", policies.display())).await;
    let pid = proxy.child.id().unwrap() as i32;
    let client = connect_to(proxy.port).await;
    let reloads = |outcome: &'static str| async move {
        let body = reqwest_lite(proxy.metrics_port).await;
        metric(
            &body,
            &format!("pgwarden_policy_reloads_total{{outcome=\"{outcome}\"}}"),
        )
    };
    std::fs::write(
        policies.join("p.yaml"),
        "roles:\n  r:\n    users: [alice, bob]\n    access: {'*': allow}\n",
    )
    .unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(|| reloads("ok"), 1.0).await;
    std::fs::write(
        policies.join("p.yaml"),
        "roles:\n  r:\n    users: [alice]\n    access: {'*': sometimes}\n",
    )
    .unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(|| reloads("failed"), 1.0).await;
    // Sessions were not dropped by either reload.
    assert_eq!(
        client
            .query_one("select 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
}

async fn wait_for<F, Fut>(f: F, want: f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    for _ in 0..100 {
        if f().await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metric never reached {want}");
}
