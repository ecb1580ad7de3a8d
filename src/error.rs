//! Errors as the client sees them: ErrorResponse messages with a SQLSTATE.
//!
//! Internal failures are turned into a [`PgError`] here, by named
//! constructors, so that client-facing text never carries upstream
//! addresses, secrets or row values.

use bytes::{Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::ErrorResponse;

/// SQLSTATE codes pgwarden sends itself.
pub mod sqlstate {
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const IO_ERROR: &str = "58030";
}

/// `ERROR` ends the statement; `FATAL` ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error pgwarden reports to a client.
#[derive(Debug, Clone)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The upstream server cannot be reached.
    pub fn upstream_unavailable() -> Self {
        Self::fatal(
            sqlstate::CONNECTION_FAILURE,
            "pgwarden could not connect to the database server",
        )
        .with_hint("The database may be down or unreachable from the proxy; try again later.")
    }

    /// A message from the client broke the protocol.
    pub fn protocol(reason: impl std::fmt::Display) -> Self {
        Self::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid frontend message: {reason}"),
        )
    }

    /// The wire encoding of this error.
    pub fn encode(&self) -> Bytes {
        let mut fields = vec![
            (b'S', self.severity.as_str().to_string()),
            (b'V', self.severity.as_str().to_string()),
            (b'C', self.code.to_string()),
            (b'M', self.message.clone()),
        ];
        if let Some(d) = &self.detail {
            fields.push((b'D', d.clone()));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        let mut buf = BytesMut::new();
        // Encoding into memory cannot fail for well-formed fields.
        let _ = ErrorResponse::new(fields).encode(&mut buf);
        buf.freeze()
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{error_field, error_fields};
    use crate::frame::OwnedFrame;

    #[test]
    fn encodes_fields_a_client_can_read() {
        let e = PgError::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "column customers.id_number is denied",
        )
        .with_hint("ask for access");
        let f = OwnedFrame::from_encoded(BytesMut::from(&e.encode()[..]));
        let fields = error_fields(&f.frame()).unwrap();
        assert_eq!(error_field(&fields, b'C'), Some("42501"));
        assert_eq!(error_field(&fields, b'S'), Some("ERROR"));
        assert_eq!(error_field(&fields, b'H'), Some("ask for access"));
    }
}
