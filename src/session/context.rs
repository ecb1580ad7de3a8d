//! Who a session is: identity fixed once authentication succeeded.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

/// A random id for one client connection, shown in logs and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    pub fn random() -> Self {
        SessionId(rand::random())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Identity of an authenticated session, shared by both directions.
#[derive(Debug)]
pub struct SessionInfo {
    pub id: SessionId,
    /// `id` and `client` as text, formatted once for every record.
    pub id_text: String,
    pub client_text: String,
    /// The PostgreSQL login the server accepted.
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client: SocketAddr,
    pub tls: bool,
    /// Transaction status from the last ReadyForQuery (`I`, `T`, `E`).
    tx_status: AtomicU8,
    /// ReadyForQuery messages the server sent after login.
    readies: AtomicU64,
    /// A statement of the session was analysed under a restricted role.
    restricted: AtomicBool,
    /// Server parameters from ParameterStatus (server_version,
    /// client_encoding, standard_conforming_strings, ...).
    parameters: Mutex<HashMap<String, String>>,
    /// `client_encoding` is UTF8 and `standard_conforming_strings` on:
    /// SQL text reads the same to pgwarden and the server. Kept with the
    /// parameters, so checking it per statement takes no lock.
    text_as_read: AtomicBool,
    pub started: Instant,
    /// Statements completed and rows returned so far.
    pub statements: AtomicU64,
    pub rows: AtomicU64,
}

impl SessionInfo {
    pub fn new(
        id: SessionId,
        user: String,
        database: String,
        application_name: String,
        client: SocketAddr,
        tls: bool,
    ) -> Self {
        SessionInfo {
            id,
            id_text: id.to_string(),
            client_text: client.to_string(),
            user,
            database,
            application_name,
            client,
            tls,
            tx_status: AtomicU8::new(b'I'),
            readies: AtomicU64::new(0),
            restricted: AtomicBool::new(false),
            parameters: Mutex::new(HashMap::new()),
            text_as_read: AtomicBool::new(false),
            started: Instant::now(),
            statements: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// The login as connect rules and alerts see it.
    pub fn login(&self) -> crate::access::Login<'_> {
        crate::access::Login {
            user: &self.user,
            client: self.client,
            session: self.id,
            certificate: None,
        }
    }

    pub fn tx_status(&self) -> u8 {
        self.tx_status.load(Ordering::Relaxed)
    }

    /// A ReadyForQuery with status `s` came from the server.
    pub fn set_tx_status(&self, s: u8) {
        self.tx_status.store(s, Ordering::Relaxed);
        self.readies.fetch_add(1, Ordering::Release);
    }

    /// The session sent a statement under a restricted role.
    pub fn set_restricted(&self) {
        self.restricted.store(true, Ordering::Relaxed);
    }

    pub fn restricted(&self) -> bool {
        self.restricted.load(Ordering::Relaxed)
    }

    /// ReadyForQuery messages the server sent after login: with the
    /// requests sent that end in one, whether anything is outstanding.
    pub fn readies(&self) -> u64 {
        self.readies.load(Ordering::Acquire)
    }

    pub fn set_parameter(&self, name: String, value: String) {
        if let Ok(mut p) = self.parameters.lock() {
            p.insert(name, value);
            let utf8 = p
                .get("client_encoding")
                .is_some_and(|e| e.eq_ignore_ascii_case("UTF8"));
            let standard = p
                .get("standard_conforming_strings")
                .is_some_and(|v| v == "on");
            self.text_as_read.store(utf8 && standard, Ordering::Relaxed);
        }
    }

    /// Whether the server reads SQL text as pgwarden does: UTF8 client
    /// encoding and standard-conforming strings, as last reported.
    pub fn text_as_read(&self) -> bool {
        self.text_as_read.load(Ordering::Relaxed)
    }

    pub fn parameter(&self, name: &str) -> Option<String> {
        self.parameters.lock().ok()?.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_as_sent_only_under_utf8_and_standard_strings() {
        let info = SessionInfo::new(
            SessionId(1),
            "u".into(),
            "d".into(),
            String::new(),
            "127.0.0.1:5".parse().unwrap(),
            false,
        );
        assert!(!info.text_as_read());
        info.set_parameter("client_encoding".into(), "utf8".into());
        assert!(!info.text_as_read());
        info.set_parameter("standard_conforming_strings".into(), "on".into());
        assert!(info.text_as_read());
        info.set_parameter("client_encoding".into(), "SQL_ASCII".into());
        assert!(!info.text_as_read());
        info.set_parameter("client_encoding".into(), "UTF8".into());
        info.set_parameter("standard_conforming_strings".into(), "off".into());
        assert!(!info.text_as_read());
    }
}
