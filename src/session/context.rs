//! Who a session is: identity fixed once authentication succeeded.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
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
    /// The PostgreSQL login the server accepted.
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client: SocketAddr,
    pub tls: bool,
    /// Transaction status from the last ReadyForQuery (`I`, `T`, `E`).
    tx_status: AtomicU8,
    /// Server parameters from ParameterStatus (server_version,
    /// client_encoding, standard_conforming_strings, ...).
    parameters: Mutex<HashMap<String, String>>,
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
            user,
            database,
            application_name,
            client,
            tls,
            tx_status: AtomicU8::new(b'I'),
            parameters: Mutex::new(HashMap::new()),
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

    pub fn set_tx_status(&self, s: u8) {
        self.tx_status.store(s, Ordering::Relaxed);
    }

    pub fn set_parameter(&self, name: String, value: String) {
        if let Ok(mut p) = self.parameters.lock() {
            p.insert(name, value);
        }
    }

    pub fn parameter(&self, name: &str) -> Option<String> {
        self.parameters.lock().ok()?.get(name).cloned()
    }
}
