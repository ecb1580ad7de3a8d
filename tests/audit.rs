//! The audit trail against a real server: every statement recorded once
//! with its identity, results held until their record is durable, a
//! `kill -9` loses nothing already shown, and the command-line tools.

mod common;

use common::*;
use futures_util::{StreamExt, pin_mut};
use pgwarden::audit::Record;
use pgwarden::audit::search;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Audit settings for a trail in `dir` (key beside it).
fn audit_section(dir: &Path, durability: &str) -> String {
    let key = dir.join("audit.key");
    if !key.exists() {
        std::fs::write(&key, b"audit test key").unwrap();
    }
    format!(
        "[audit]\ndir = \"{}\"\nkey_file = \"{}\"\ndurability = \"{durability}\"\n",
        dir.join("trail").display(),
        key.display()
    )
}

fn records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    search::scan(&dir.join("trail"), |r, _| {
        out.push(r.clone());
        Ok(())
    })
    .unwrap();
    out
}

fn queries<'a>(records: &'a [Record], sql: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.event == "query" && r.sql.as_deref() == Some(sql))
        .collect()
}

/// Write a config file for `pgwarden` commands.
fn config_file(dir: &Path, port: u16, durability: &str) -> PathBuf {
    let path = dir.join("pgwarden.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"{}\"\n{}",
            fixture().cluster.addr(),
            audit_section(dir, durability)
        ),
    )
    .unwrap();
    path
}

async fn pgwarden(args: &[&str], config: &Path) -> (bool, String, String) {
    let out = Command::new(pgwarden_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_statement_is_recorded_once_with_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(&audit_section(dir.path(), "sync")).await;
    let c = connect(&proxy, SCRAM_USER).await;
    let tag = unique("audit");
    let two = format!("SELECT 1 AS {tag}; SELECT 2 AS {tag}");
    c.simple_query(&two).await.unwrap();
    let with_param = format!("SELECT $1::text AS {tag}");
    c.query(&with_param, &[&"looked-up value"]).await.unwrap();
    let failing = format!("SELECT 1/0 AS {tag}");
    c.simple_query(&failing).await.unwrap_err();
    // A result large enough to stream before it completes.
    let big = format!("SELECT g AS {tag} FROM generate_series(1, 200000) g");
    let stream = c.query_raw(&big, Vec::<i32>::new()).await.unwrap();
    pin_mut!(stream);
    let mut n = 0;
    while let Some(row) = stream.next().await {
        row.unwrap();
        n += 1;
    }
    assert_eq!(n, 200_000);
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.shutdown().await;

    let all = records(dir.path());
    let q = queries(&all, &two);
    assert_eq!(q.len(), 2, "{q:?}");
    assert_eq!(q[0].statement, None);
    assert_eq!(q[1].statement, Some(1));
    for r in &q {
        assert_eq!(r.user.as_deref(), Some(SCRAM_USER.0));
        assert!(r.client.as_deref().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(r.database.as_deref(), Some("app"));
        assert_eq!(r.application_name.as_deref(), Some("pgwarden-tests"));
        assert_eq!(r.protocol.as_deref(), Some("simple"));
        assert_eq!(r.decision.as_deref(), Some("forward"));
        assert_eq!(r.rows, Some(1));
        assert_eq!(
            r.session,
            all.iter().find(|r| r.event == "connect").unwrap().session
        );
    }
    let p = queries(&all, &with_param);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].protocol.as_deref(), Some("extended"));
    assert_eq!(p[0].params, Some(vec![Some("looked-up value".to_string())]));
    let f = queries(&all, &failing);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].sqlstate.as_deref(), Some("22012"));
    let b = queries(&all, &big);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].rows, Some(200_000));
    // Its rows flowed before it completed: announced first, and earlier.
    let start = all
        .iter()
        .find(|r| r.event == "query_start" && r.sql.as_deref() == Some(big.as_str()))
        .expect("query_start record");
    assert!(start.seq < b[0].seq);
    for event in ["start", "connect", "disconnect", "stop"] {
        assert!(all.iter().any(|r| r.event == event), "no {event} record");
    }
    let key = pgwarden::audit::chain::ChainKey::from_audit_key(b"audit test key");
    let s = pgwarden::audit::verify::verify(&dir.path().join("trail"), &key).unwrap();
    assert_eq!(s.sealed_seq, s.last_seq, "the shutdown sealed everything");

    // The command-line tools read the same trail.
    let cfg = config_file(dir.path(), 1, "sync");
    let (ok, out, _) = pgwarden(&["audit", "verify"], &cfg).await;
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
    let (ok, out, _) = pgwarden(
        &[
            "audit", "search", "--event", "query", "--text", &tag, "--json",
        ],
        &cfg,
    )
    .await;
    assert!(ok);
    assert_eq!(out.lines().count(), 5, "{out}");
    let (ok, out, _) = pgwarden(&["audit", "search", "--user", "nobody"], &cfg).await;
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = pgwarden(&["audit", "report"], &cfg).await;
    assert!(ok);
    assert!(out.contains(SCRAM_USER.0), "{out}");
}

#[tokio::test]
async fn failed_logins_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(&audit_section(dir.path(), "async")).await;
    let Err(e) = pg_config(&proxy, (SCRAM_USER.0, "wrong password"), "app")
        .connect(tokio_postgres::NoTls)
        .await
    else {
        panic!("a wrong password logs in");
    };
    assert!(error_text(&e).contains("password"), "{e}");
    proxy.shutdown().await;
    let all = records(dir.path());
    let failed: Vec<_> = all.iter().filter(|r| r.event == "auth_failed").collect();
    assert_eq!(failed.len(), 1, "{all:?}");
    assert_eq!(failed[0].user.as_deref(), Some(SCRAM_USER.0));
    assert_eq!(failed[0].sqlstate.as_deref(), Some("28P01"));
}

/// `kill -9` right after the last result: every statement whose result
/// the client saw is in the trail, the trail verifies, and a restarted
/// proxy continues the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_record_of_results_already_sent() {
    let dir = tempfile::tempdir().unwrap();
    let port = pgwarden::demo::postgres::free_port().unwrap();
    let cfg = config_file(dir.path(), port, "sync");
    let spawn = || {
        Command::new(pgwarden_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let connect = || async {
        for _ in 0..200 {
            let mut c = tokio_postgres::Config::new();
            c.host("127.0.0.1")
                .port(port)
                .user(SCRAM_USER.0)
                .password(SCRAM_USER.1)
                .dbname("app");
            if let Ok((client, conn)) = c.connect(tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                return client;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pgwarden did not start");
    };
    let tag = unique("kill");
    let mut child = spawn();
    let c = connect().await;
    let mut sent = Vec::new();
    for i in 0..40 {
        let sql = format!("SELECT {i} AS {tag}");
        c.simple_query(&sql).await.unwrap();
        sent.push(sql);
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let all = records(dir.path());
    for sql in &sent {
        assert_eq!(queries(&all, sql).len(), 1, "{sql} missing after kill -9");
    }
    let (ok, out, err) = pgwarden(&["audit", "verify"], &cfg).await;
    assert!(ok, "{out}{err}");

    // Restart: the chain continues and still verifies.
    let mut child = spawn();
    let c = connect().await;
    let after = format!("SELECT 'after restart' AS {tag}");
    c.simple_query(&after).await.unwrap();
    drop(c);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let all = records(dir.path());
    assert_eq!(queries(&all, &after).len(), 1);
    let (ok, out, err) = pgwarden(&["audit", "verify"], &cfg).await;
    assert!(ok, "{out}{err}");
    assert_eq!(all.iter().filter(|r| r.event == "start").count(), 2);
}

/// Retention removes files whose records are all older than the limit,
/// records that it did, and leaves a trail that still verifies.
#[tokio::test]
async fn retention_removes_old_files_and_the_trail_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // 0.00003 days is about 2.6 seconds.
    let section = audit_section(dir.path(), "async")
        + "rotate_secs = 1\ncheckpoint_secs = 1\nretention_days = 0.00003\n";
    let proxy = start_proxy(&section).await;
    let c = connect(&proxy, SCRAM_USER).await;
    let tag = unique("retained");
    let trail = dir.path().join("trail");
    let first = trail.join("audit-00000000000000000001.jsonl");
    let mut i = 0;
    while first.exists() {
        assert!(i < 150, "retention never removed the first file");
        c.simple_query(&format!("SELECT {i} AS {tag}"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        i += 1;
    }
    let last = format!("SELECT 'last' AS {tag}");
    c.simple_query(&last).await.unwrap();
    drop(c);
    proxy.shutdown().await;
    let all = records(dir.path());
    let retention: Vec<_> = all.iter().filter(|r| r.event == "retention").collect();
    assert!(!retention.is_empty());
    let detail = retention[0].detail.as_ref().unwrap();
    assert!(
        detail["removed"][0]
            .as_str()
            .unwrap()
            .starts_with("audit-00000000000000000001"),
        "{detail}"
    );
    assert!(all[0].seq > 1);
    assert_eq!(queries(&all, &last).len(), 1);
    let cfg = config_file(dir.path(), 1, "async");
    let (ok, out, err) = pgwarden(&["audit", "verify"], &cfg).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("removed by retention"), "{out}");
}

/// What the HTTP receiver got, and how many requests it refused.
#[derive(Default)]
struct Received {
    lines: Vec<String>,
    refused: usize,
    unauthorised: usize,
}

/// A local HTTP collector that answers 503 to its first two requests.
async fn http_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Received>>,
) {
    use axum::http::{HeaderMap, StatusCode};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Received::default()));
    let state = got.clone();
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut g = state.lock().unwrap();
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer t0ken")
                {
                    g.unauthorised += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                if g.refused < 2 {
                    g.refused += 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lines.extend(body.lines().map(str::to_string));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

/// A local syslog collector over TCP with octet-counting framing.
async fn syslog_tcp_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::AsyncReadExt;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Frames are "LEN SP MSG".
                    while let Some(sp) = buf.iter().position(|&c| c == b' ') {
                        let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                        if buf.len() < sp + 1 + len {
                            break;
                        }
                        let msg = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap();
                        sink.lock().unwrap().push(msg);
                        buf.drain(..sp + 1 + len);
                    }
                }
            });
        }
    });
    (addr, got)
}

/// The JSON record inside an RFC 5424 message.
fn syslog_record(msg: &str) -> Record {
    let json = msg.split_once('\u{feff}').expect("BOM before MSG").1;
    serde_json::from_str(json).unwrap()
}

/// Every record reaches a syslog collector (TCP) and an HTTP collector
/// that fails at first, in order, with the same MACs as the local trail.
#[tokio::test]
async fn records_are_shipped_to_syslog_and_http_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let (http_addr, http_got) = http_receiver().await;
    let (syslog_addr, syslog_got) = syslog_tcp_receiver().await;
    let section = audit_section(dir.path(), "sync")
        + &format!(
            "[audit.syslog]\naddress = \"{syslog_addr}\"\ntransport = \"tcp\"\nfacility = \"auth\"\n\
             [audit.http]\nurl = \"http://{http_addr}/ingest\"\nbatch_records = 7\nbatch_ms = 20\n\
             headers = {{ Authorization = \"Bearer t0ken\" }}\n"
        );
    let proxy = start_proxy(&section).await;
    let c = connect(&proxy, SCRAM_USER).await;
    let tag = unique("shipped");
    for i in 0..30 {
        c.simple_query(&format!("SELECT {i} AS {tag}"))
            .await
            .unwrap();
    }
    drop(c);
    proxy.shutdown().await;
    let local = records(dir.path());
    let local_seqs: Vec<u64> = local.iter().map(|r| r.seq).collect();

    let got = http_got.lock().unwrap();
    assert_eq!(got.refused, 2, "the first requests were refused");
    assert_eq!(got.unauthorised, 0);
    let http: Vec<Record> = got
        .lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(http.iter().map(|r| r.seq).collect::<Vec<_>>(), local_seqs);
    // Lines arrive as written, MAC included.
    assert!(got.lines.iter().all(|l| l.contains("\"mac\":\"")));
    drop(got);

    let msgs = syslog_got.lock().unwrap();
    let syslog: Vec<Record> = msgs.iter().map(|m| syslog_record(m)).collect();
    assert_eq!(syslog.iter().map(|r| r.seq).collect::<Vec<_>>(), local_seqs);
    let q = msgs
        .iter()
        .find(|m| m.contains(&format!("AS {tag}")))
        .unwrap();
    // auth (4) * 8 + informational (6), version 1, MSGID = event.
    assert!(q.starts_with("<38>1 "), "{q}");
    assert!(q.contains(" pgwarden "), "{q}");
    assert!(q.contains(" query [pgwarden@32473 seq=\""), "{q}");
}

/// Over UDP each record is one datagram.
#[tokio::test]
async fn records_are_shipped_to_syslog_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let section =
        audit_section(dir.path(), "async") + &format!("[audit.syslog]\naddress = \"{addr}\"\n");
    let proxy = start_proxy(&section).await;
    let c = connect(&proxy, SCRAM_USER).await;
    let sql = format!("SELECT 1 AS {}", unique("udp"));
    c.simple_query(&sql).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = sock.recv(&mut buf).await.unwrap();
            let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
            // local0 (16) * 8 + informational (6).
            assert!(msg.starts_with("<134>1 "), "{msg}");
            let r = syslog_record(&msg);
            if r.sql.as_deref() == Some(sql.as_str()) {
                return r;
            }
        }
    })
    .await
    .expect("the query's record reached the collector");
    assert_eq!(found.user.as_deref(), Some(SCRAM_USER.0));
    drop(c);
    proxy.shutdown().await;
}
