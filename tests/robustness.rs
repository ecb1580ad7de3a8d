//! Bad input and bad conditions: malformed or oversized messages, an
//! unreachable server, too many clients. Each gets a clear error for the
//! one connection involved, and the proxy keeps serving everyone else.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

fn startup_packet(user: &str, db: &str) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// A raw socket logged in as the superuser `postgres` (trusted from
/// loopback in the test cluster), ready for hand-made messages.
async fn raw_session(proxy: &pgwarden::Proxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&startup_packet("postgres", "app"))
        .await
        .unwrap();
    // Read until ReadyForQuery ('Z' + len 5 + status).
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed during startup: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
        if seen
            .windows(6)
            .any(|w| w[0] == b'Z' && w[1..5] == [0, 0, 0, 5])
        {
            return s;
        }
    }
}

/// Read everything until the proxy closes the connection.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("proxy closes the connection");
    out
}

fn has_sqlstate(bytes: &[u8], code: &str) -> bool {
    let needle = format!("C{code}\0");
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn still_serving(proxy: &pgwarden::Proxy) {
    let client = connect(proxy, SCRAM_USER).await;
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn unknown_message_type_closes_only_that_connection() {
    let proxy = start_proxy("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let mut s = raw_session(&proxy).await;
    s.write_all(b"z\0\0\0\x04").await.unwrap();
    let reply = read_to_close(&mut s).await;
    assert!(has_sqlstate(&reply, "08P01"), "{reply:?}");
    still_serving(&proxy).await;
    let text = metrics_text(&proxy).await;
    assert_eq!(metric(&text, "pgwarden_protocol_errors_total"), 1.0);
}

#[tokio::test]
async fn malformed_bodies_never_reach_the_server() {
    let proxy = start_proxy("").await;
    let cases: Vec<&[u8]> = vec![
        b"Q\0\0\0\x0cselect 1",        // no NUL terminator
        b"Q\0\0\0\x0eselect 1\0X",     // bytes after the string
        b"B\0\0\0\x08\0\0\0\x05",      // Bind with a bogus format count
        b"P\0\0\0\x0a\0x\0\x7f\xff\0", // Parse with a bogus type count
        b"E\0\0\0\x05\0",              // Execute cut short
        b"Q\0\0\0\x02",                // length below 4
        b"Q\xff\xff\xff\xff",          // negative length
    ];
    for raw in cases {
        let mut s = raw_session(&proxy).await;
        s.write_all(raw).await.unwrap();
        let reply = read_to_close(&mut s).await;
        assert!(has_sqlstate(&reply, "08P01"), "{raw:?} -> {reply:?}");
    }
    still_serving(&proxy).await;
}

/// Once a session has run a statement, pgwarden knows its login has full
/// access and forwards its messages before tracking them. They are still
/// decoded first: a malformed message stops the whole read it came in, so
/// a statement sent ahead of it in the same write never runs either.
#[tokio::test]
async fn malformed_messages_of_a_running_session_never_reach_the_server() {
    let proxy = start_proxy("").await;
    let admin = connect(&proxy, SCRAM_USER).await;
    admin
        .batch_execute("create table robustness_probe (x int)")
        .await
        .unwrap();
    let insert = b"Q\0\0\0\x2cinsert into robustness_probe values (1)\0";
    assert_eq!(insert.len(), 0x2d);
    for bad in [
        &b"B\0\0\0\x08\0\0\0\x05"[..],
        b"E\0\0\0\x05\0",
        b"Q\0\0\0\x0cselect 1",
        b"S\0\0\0\x05\0",
    ] {
        let mut s = raw_session(&proxy).await;
        // A first statement: from now on the session passes through.
        s.write_all(b"Q\0\0\0\x0dselect 1\0").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
        }
        s.write_all(&[&insert[..], bad].concat()).await.unwrap();
        let reply = read_to_close(&mut s).await;
        assert!(has_sqlstate(&reply, "08P01"), "{bad:?} -> {reply:?}");
        assert!(
            reply.windows(24).any(|w| w == b"invalid frontend message"),
            "{reply:?}"
        );
    }
    let rows: i64 = admin
        .query_one("select count(*) from robustness_probe", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "a statement ahead of a malformed message ran");
    still_serving(&proxy).await;
}

/// A session's opening has a deadline: a client that says nothing, one
/// that stops halfway through its startup packet, and one that never
/// answers the password request are all dropped after
/// `startup_timeout_secs`, the last with an error saying why.
#[tokio::test]
async fn stalled_openings_end_at_the_startup_timeout() {
    let proxy = start_proxy("startup_timeout_secs = 1\n").await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut halfway = TcpStream::connect(proxy.addr).await.unwrap();
    halfway
        .write_all(&startup_packet("postgres", "app")[..6])
        .await
        .unwrap();
    let mut no_password = TcpStream::connect(proxy.addr).await.unwrap();
    no_password
        .write_all(&startup_packet(SCRAM_USER.0, "app"))
        .await
        .unwrap();
    assert!(read_to_close(&mut silent).await.is_empty());
    assert!(read_to_close(&mut halfway).await.is_empty());
    let reply = read_to_close(&mut no_password).await;
    assert!(
        reply.windows(13).any(|w| w == b"took too long"),
        "{reply:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    still_serving(&proxy).await;
}

#[tokio::test]
async fn oversized_message_is_refused_before_it_is_buffered() {
    let proxy = start_proxy("max_client_message_bytes = 65536\n").await;
    let mut s = raw_session(&proxy).await;
    // Declares 1 GiB; the proxy must refuse on the header alone.
    s.write_all(b"Q\x40\0\0\0select").await.unwrap();
    let reply = read_to_close(&mut s).await;
    assert!(has_sqlstate(&reply, "08P01"), "{reply:?}");
    // A query just under the cap works through a normal client.
    let client = connect(&proxy, SCRAM_USER).await;
    let long = format!("select length('{}')", "x".repeat(60_000));
    assert_eq!(
        client
            .query_one(long.as_str(), &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        60_000
    );
}

#[tokio::test]
async fn garbage_startup_packets() {
    let proxy = start_proxy("").await;
    for raw in [
        &b"\0\0\0\x06\x01\x02"[..],
        b"\x7f\xff\xff\xff",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\0\0\0\x08\0\x09\0\0",
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let _ = read_to_close(&mut s).await;
    }
    // A client that connects and says nothing is dropped after the startup timeout,
    // and does not hold up anyone else meanwhile.
    let _idle = TcpStream::connect(proxy.addr).await.unwrap();
    still_serving(&proxy).await;
}

#[tokio::test]
async fn unreachable_upstream_gives_08006_and_the_proxy_stays_up() {
    let port = pgwarden::demo::postgres::free_port().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:{port}\"\nconnect_timeout_secs = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
    );
    let proxy = pgwarden::Proxy::start(
        pgwarden::Config::parse(&text, std::path::Path::new("t.toml")).unwrap(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let err = pg_config(&proxy, SCRAM_USER, "app")
            .connect(NoTls)
            .await
            .err()
            .expect("no server");
        assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");
        assert!(
            error_text(&err).contains("could not connect to the database server"),
            "{err:?}"
        );
        // The error names no address.
        assert!(!format!("{err:?}").contains(&port.to_string()), "{err:?}");
    }
    let text = metrics_text(&proxy).await;
    assert_eq!(
        metric(&text, "pgwarden_upstream_errors_total{kind=\"connect\"}"),
        3.0,
        "{text}"
    );
}

#[tokio::test]
async fn connection_cap_refuses_with_53300() {
    let proxy = start_proxy("max_connections = 2\n").await;
    let a = connect(&proxy, SCRAM_USER).await;
    let b = connect(&proxy, SCRAM_USER).await;
    let err = pg_config(&proxy, SCRAM_USER, "app")
        .connect(NoTls)
        .await
        .err()
        .expect("third refused");
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    drop(a);
    // Once a slot frees, new clients get in again.
    let mut ok = false;
    for _ in 0..50 {
        if pg_config(&proxy, SCRAM_USER, "app")
            .connect(NoTls)
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok);
    drop(b);
}

#[tokio::test]
async fn replication_connections_are_refused() {
    let proxy = start_proxy("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [
        ("user", "postgres"),
        ("replication", "database"),
        ("database", "app"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut pkt = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    pkt.extend(body);
    s.write_all(&pkt).await.unwrap();
    let reply = read_to_close(&mut s).await;
    assert!(has_sqlstate(&reply, "42501"), "{reply:?}");
}

#[tokio::test]
async fn server_side_termination_reaches_the_client() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = connect_direct().await;
    admin
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = client.query_one("select 1", &[]).await.unwrap_err();
    assert!(
        err.is_closed() || err.code().map(|c| c.code()) == Some("57P01"),
        "{err}"
    );
    still_serving(&proxy).await;
}
