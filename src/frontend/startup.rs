//! The client's first messages, which carry no type byte: SSLRequest,
//! GSSENCRequest, CancelRequest and the StartupMessage.

use crate::codec::{DecodeError, decode_frame};
use crate::frame::Frame;
use bytes::Bytes;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::Startup;
use pgwire::messages::{DecodeContext, Message, ProtocolVersion};
use std::collections::BTreeMap;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// What a client opened its connection (or its TLS session) with.
#[derive(Debug)]
pub enum StartupRequest {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: Bytes },
    Startup(StartupParams),
}

/// A StartupMessage: protocol version and parameters (user, database, ...).
#[derive(Debug, Clone)]
pub struct StartupParams {
    pub major: u16,
    pub minor: u16,
    pub parameters: BTreeMap<String, String>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(String::as_str)
    }
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }
    /// The database, which defaults to the user name as in PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }
}

/// Decode one untyped startup-phase frame.
pub fn decode_startup(frame: &Frame<'_>) -> Result<StartupRequest, DecodeError> {
    let body = frame.body();
    if body.len() < 4 {
        return Err(DecodeError::new(0, "startup packet too short"));
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    match code {
        SSL_REQUEST | GSSENC_REQUEST if body.len() != 4 => {
            Err(DecodeError::new(0, "encryption request with a body"))
        }
        SSL_REQUEST => Ok(StartupRequest::Ssl),
        GSSENC_REQUEST => Ok(StartupRequest::GssEnc),
        CANCEL_REQUEST => {
            let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_2);
            ctx.awaiting_frontend_ssl = false;
            ctx.awaiting_frontend_startup = true;
            let c = decode_frame(frame, &ctx, CancelRequest::decode)?;
            Ok(StartupRequest::Cancel {
                pid: c.pid,
                secret: c.secret_key.to_bytes(),
            })
        }
        _ => {
            let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
            ctx.awaiting_frontend_ssl = false;
            ctx.awaiting_frontend_startup = true;
            let s = decode_frame(frame, &ctx, Startup::decode)?;
            Ok(StartupRequest::Startup(StartupParams {
                major: s.protocol_number_major,
                minor: s.protocol_number_minor,
                parameters: s.parameters,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OwnedFrame;
    use crate::frame::take_frame;
    use bytes::BytesMut;

    fn frame(raw: &[u8]) -> OwnedFrame {
        take_frame(&mut BytesMut::from(raw), false, 10_000)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn ssl_and_gss_requests() {
        assert!(matches!(
            decode_startup(&frame(b"\0\0\0\x08\x04\xd2\x16\x2f").frame()).unwrap(),
            StartupRequest::Ssl
        ));
        assert!(matches!(
            decode_startup(&frame(b"\0\0\0\x08\x04\xd2\x16\x30").frame()).unwrap(),
            StartupRequest::GssEnc
        ));
    }

    #[test]
    fn startup_message_with_parameters() {
        let raw = b"\0\0\0\x22\0\x03\0\0user\0alice\0database\0shop\0\0";
        match decode_startup(&frame(raw).frame()).unwrap() {
            StartupRequest::Startup(p) => {
                assert_eq!((p.major, p.minor), (3, 0));
                assert_eq!(p.user(), Some("alice"));
                assert_eq!(p.database(), Some("shop"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancel_request() {
        let raw = b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07\0\0\0\x09";
        match decode_startup(&frame(raw).frame()).unwrap() {
            StartupRequest::Cancel { pid, secret } => {
                assert_eq!(pid, 7);
                assert_eq!(&secret[..], &[0, 0, 0, 9]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_startup(&frame(b"\0\0\0\x06\x01\x02").frame()).is_err());
        assert!(decode_startup(&frame(b"\0\0\0\x0c\0\x09\0\0user\0").frame()).is_err());
    }
}
