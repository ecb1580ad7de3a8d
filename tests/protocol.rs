//! Simple and extended query protocol through pgwarden, with tokio-postgres
//! against a real PostgreSQL.

mod common;

use common::*;
use futures_util::{StreamExt, TryStreamExt, pin_mut};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::Type;

#[tokio::test]
async fn simple_query_with_several_statements() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let msgs = client
        .simple_query("select 1 as a; select 'x' as b, 2 as c union all select 'y', 3; ")
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["1", "x", "y"]);
    let completions = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completions, 2);
}

#[tokio::test]
async fn error_in_the_middle_of_a_script_keeps_the_session_usable() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let err = client
        .simple_query("select 1; select 1/0; select 2")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22012");
    let v: i32 = client.query_one("select 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
}

#[tokio::test]
async fn extended_protocol_with_binary_parameters_and_results() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let stmt = client
        .prepare_typed(
            "select $1::int8 * 2, $2::text || '!', $3::bytea",
            &[Type::INT8, Type::TEXT, Type::BYTEA],
        )
        .await
        .unwrap();
    for i in 0..20i64 {
        let row = client
            .query_one(&stmt, &[&i, &"hi", &vec![0u8, 1, 255]])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), "hi!");
        assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 1, 255]);
    }
    // Unnamed statements, NULLs, and an error inside the extended protocol.
    let row = client
        .query_one("select $1::text is null", &[&Option::<String>::None])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let err = client
        .query("select * from no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    assert_eq!(
        client
            .query("select generate_series(1, 1000)", &[])
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test]
async fn pipelined_queries_answer_in_order() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let stmt = client
        .prepare("select $1::int4, pg_sleep(0.001)::text")
        .await
        .unwrap();
    // tokio-postgres pipelines concurrent requests on one connection.
    let futures = (0..64i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = futures_util::future::join_all(futures).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i32);
    }
    // A failing request in the middle of a pipeline fails alone.
    let (a, b, c) = tokio::join!(
        client.query_one("select 1::int4", &[]),
        client.query_one("select 1/0", &[]),
        client.query_one("select 3::int4", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert!(b.is_err());
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test]
async fn portal_row_limits_and_transactions() {
    let proxy = start_proxy("").await;
    let mut client = connect(&proxy, SCRAM_USER).await;
    let tx = client.transaction().await.unwrap();
    let stmt = tx.prepare("select generate_series(1, 25)").await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = 0;
    loop {
        let rows = tx.query_portal(&portal, 10).await.unwrap();
        seen += rows.len();
        if rows.len() < 10 {
            break;
        }
    }
    assert_eq!(seen, 25);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn streaming_rows_with_query_raw() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let stream = client
        .query_raw(
            "select g, repeat('x', 100) from generate_series(1, 50000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(stream);
    let mut n = 0i64;
    while let Some(row) = stream.next().await {
        let row = row.unwrap();
        n += 1;
        assert_eq!(row.get::<_, i32>(0) as i64, n);
    }
    assert_eq!(n, 50000);
}

#[tokio::test]
async fn copy_in_and_out_in_every_format() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let table = unique("copy_t");
    client
        .batch_execute(&format!("create table {table} (id int, name text)"))
        .await
        .unwrap();

    // COPY FROM STDIN, text.
    let sink = client
        .copy_in(&format!("copy {table} from stdin"))
        .await
        .unwrap();
    pin_mut!(sink);
    use futures_util::SinkExt;
    let mut data = String::new();
    for i in 0..1000 {
        data.push_str(&format!("{i}\tname {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1000);

    // COPY FROM STDIN, csv.
    let sink = client
        .copy_in(&format!("copy {table} from stdin (format csv)"))
        .await
        .unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1000,\"comma, name\"\n1001,x\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);

    // COPY TO STDOUT, text and csv.
    let out: Vec<bytes::Bytes> = client
        .copy_out(&format!(
            "copy (select * from {table} order by id) to stdout"
        ))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text: String = out
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 1002);
    assert!(text.starts_with("0\tname 0\n"));
    let out: Vec<bytes::Bytes> = client
        .copy_out(&format!(
            "copy (select * from {table} where id = 1000) to stdout (format csv)"
        ))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(&out.concat()[..], b"1000,\"comma, name\"\n");

    // Binary COPY round trip.
    let bin: Vec<bytes::Bytes> = client
        .copy_out(&format!("copy {table} to stdout (format binary)"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let bin = bin.concat();
    assert!(bin.starts_with(b"PGCOPY\n\xff\r\n\0"));
    let copy2 = unique("copy_b");
    client
        .batch_execute(&format!("create table {copy2} (id int, name text)"))
        .await
        .unwrap();
    let sink = client
        .copy_in(&format!("copy {copy2} from stdin (format binary)"))
        .await
        .unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from(bin)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1002);

    // A failing COPY leaves the session usable.
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("copy {table} from stdin"))
        .await
        .unwrap();
    pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not a number\tx\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());
    let n: i64 = client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1002);
}

#[tokio::test]
async fn listen_notify_and_notices_pass_through() {
    let proxy = start_proxy("").await;
    let (client, mut conn) = pg_config(&proxy, SCRAM_USER, "app")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    let channel = unique("chan");
    client
        .batch_execute(&format!("listen {channel}"))
        .await
        .unwrap();
    let other = connect(&proxy, SCRAM_USER).await;
    other
        .batch_execute(&format!("notify {channel}, 'hello through pgwarden'"))
        .await
        .unwrap();
    client
        .batch_execute("do $$ begin raise notice 'a notice for you'; end $$")
        .await
        .unwrap();
    let mut got_notification = false;
    let mut got_notice = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(got_notification && got_notice) {
        let m = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("messages arrive")
            .unwrap();
        match m {
            tokio_postgres::AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), channel);
                assert_eq!(n.payload(), "hello through pgwarden");
                got_notification = true;
            }
            tokio_postgres::AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "a notice for you");
                got_notice = true;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn session_state_and_cursors() {
    let proxy = start_proxy("").await;
    let client = connect(&proxy, SCRAM_USER).await;
    let msgs = client
        .simple_query(
            "begin; declare c cursor for select generate_series(1, 10); fetch 3 from c; fetch 3 from c; close c; commit;",
        )
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["1", "2", "3", "4", "5", "6"]);
    // SQL-level PREPARE / EXECUTE.
    let msgs = client
        .simple_query("prepare p(int) as select $1 + 1; execute p(41); deallocate p")
        .await
        .unwrap();
    assert!(
        msgs.iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("42")))
    );
    // application_name reaches the server.
    let app: String = client
        .query_one("show application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "pgwarden-tests");
}
