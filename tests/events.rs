//! Session events, the side path the audit trail hangs on: who connected
//! from where, failed logins, each statement with its row count, and the
//! totals at disconnect.

mod common;

use common::*;
use pgwarden::events::{Event, EventSink};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::NoTls;

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn record(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test]
async fn every_statement_and_login_is_reported() {
    let sink = Arc::new(Collect::default());
    let proxy = pgwarden::Proxy::start_with_events(config(""), Some(sink.clone()))
        .await
        .unwrap();

    let err = pg_config(&proxy, (SCRAM_USER.0, "wrong"), "app")
        .connect(NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"));

    let client = connect(&proxy, SCRAM_USER).await;
    client
        .simple_query("select 1; select generate_series(1, 3)")
        .await
        .unwrap();
    let stmt = client
        .prepare("select generate_series(1, $1::int)")
        .await
        .unwrap();
    assert_eq!(client.query(&stmt, &[&5i32]).await.unwrap().len(), 5);
    assert!(client.query("select 1/0", &[]).await.is_err());
    drop(client);

    // Disconnect is reported once the session task sees the close.
    let mut events = Vec::new();
    for _ in 0..100 {
        events = sink.0.lock().unwrap().clone();
        if events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let failed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::AuthFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    match failed[0] {
        Event::AuthFailed {
            user,
            database,
            sqlstate,
            client,
            ..
        } => {
            assert_eq!(user, SCRAM_USER.0);
            assert_eq!(database, "app");
            assert_eq!(sqlstate, "28P01");
            assert!(client.ip().is_loopback());
        }
        _ => unreachable!(),
    }
    let connected = events.iter().find_map(|e| match e {
        Event::Connected {
            user,
            application_name,
            database,
            session,
            ..
        } => Some((user, application_name, database, *session)),
        _ => None,
    });
    let (user, app, db, session) = connected.expect("connect event");
    assert_eq!(
        (user.as_str(), app.as_str(), db.as_str()),
        (SCRAM_USER.0, "pgwarden-tests", "app")
    );

    let statements: Vec<(String, u64, Option<String>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::StatementDone {
                sql,
                rows,
                sqlstate,
                session: s,
                ..
            } if *s == session => Some((sql.to_string(), *rows, sqlstate.clone())),
            _ => None,
        })
        .collect();
    // Two results of the simple query, each with its rows.
    assert!(
        statements.contains(&("select 1; select generate_series(1, 3)".into(), 1, None)),
        "{statements:?}"
    );
    assert!(
        statements.contains(&("select 1; select generate_series(1, 3)".into(), 3, None)),
        "{statements:?}"
    );
    assert!(
        statements.contains(&("select generate_series(1, $1::int)".into(), 5, None)),
        "{statements:?}"
    );
    assert!(
        statements
            .iter()
            .any(|(sql, _, state)| sql == "select 1/0" && state.as_deref() == Some("22012")),
        "{statements:?}"
    );

    let (total_statements, total_rows) = events
        .iter()
        .find_map(|e| match e {
            Event::Disconnected {
                statements,
                rows,
                session: s,
                ..
            } if *s == session => Some((*statements, *rows)),
            _ => None,
        })
        .expect("disconnect event");
    assert_eq!(total_statements, statements.len() as u64);
    assert_eq!(total_rows, statements.iter().map(|s| s.1).sum::<u64>());
}
