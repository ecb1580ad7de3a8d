//! Session events: the side path from the data path to audit and logs.
//!
//! The session reports what happened (a connection opened, a login failed,
//! a statement completed, a connection closed) as an [`Event`] to the
//! [`EventSink`] of the proxy. Sinks never reach back into the data path.
//! The default sink writes structured `tracing` events; the audit trail is
//! another sink.

use crate::session::SessionId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Something a session did.
#[derive(Debug, Clone)]
pub enum Event {
    Connected {
        session: SessionId,
        user: String,
        database: String,
        application_name: String,
        client: SocketAddr,
        tls: bool,
    },
    AuthFailed {
        client: SocketAddr,
        user: String,
        database: String,
        sqlstate: String,
        message: String,
    },
    StatementDone {
        session: SessionId,
        user: String,
        sql: Arc<str>,
        /// Simple or extended protocol.
        extended: bool,
        tag: Option<String>,
        sqlstate: Option<String>,
        rows: u64,
        bytes: u64,
        duration: Duration,
    },
    Disconnected {
        session: SessionId,
        user: String,
        statements: u64,
        rows: u64,
        duration: Duration,
    },
}

/// Where events go.
pub trait EventSink: Send + Sync {
    fn record(&self, event: &Event);

    /// Whether this sink uses `StatementDone` events; when no sink does,
    /// the data path does not build them.
    fn wants_statements(&self) -> bool {
        true
    }
}

/// Structured log lines for each event: connections and failures at info
/// and warn, statements at debug.
pub struct LogSink;

impl EventSink for LogSink {
    fn wants_statements(&self) -> bool {
        tracing::enabled!(tracing::Level::DEBUG)
    }

    fn record(&self, event: &Event) {
        match event {
            Event::Connected {
                session,
                user,
                database,
                application_name,
                client,
                tls,
            } => info!(
                event = "connect", %session, %user, %database, %application_name, %client, tls, "session started"
            ),
            Event::AuthFailed {
                client,
                user,
                database,
                sqlstate,
                message,
            } => warn!(
                event = "auth_failed", %client, %user, %database, %sqlstate, %message, "authentication failed"
            ),
            Event::StatementDone {
                session,
                user,
                sql,
                extended,
                tag,
                sqlstate,
                rows,
                bytes,
                duration,
            } => debug!(
                event = "query",
                %session,
                %user,
                sql = %sql,
                extended,
                tag = tag.as_deref().unwrap_or(""),
                sqlstate = sqlstate.as_deref().unwrap_or(""),
                rows,
                bytes,
                duration_us = duration.as_micros() as u64,
                "statement completed"
            ),
            Event::Disconnected {
                session,
                user,
                statements,
                rows,
                duration,
            } => info!(
                event = "disconnect", %session, %user, statements, rows, duration_ms = duration.as_millis() as u64, "session ended"
            ),
        }
    }
}

/// Sends every event to several sinks in order.
pub struct FanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn record(&self, event: &Event) {
        for s in &self.0 {
            if !matches!(event, Event::StatementDone { .. }) || s.wants_statements() {
                s.record(event);
            }
        }
    }

    fn wants_statements(&self) -> bool {
        self.0.iter().any(|s| s.wants_statements())
    }
}
