//! Backend messages: what the PostgreSQL server sends to pgwarden.
//!
//! Most server messages pass through as the exact bytes received. The few
//! that session state, accounting or later stages need are read here with
//! bounds-checked accessors or pgwire's decoders, one frame at a time.

pub mod tracker;

use crate::codec::{DecodeError, context, decode_frame};
use crate::frame::{BodyReader, Frame, OwnedFrame};
use bytes::{Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::data::RowDescription;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::Authentication;

/// Authentication request codes (`R` messages).
pub mod auth_code {
    pub const OK: i32 = 0;
    pub const CLEARTEXT: i32 = 3;
    pub const MD5: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// The code of an Authentication message.
pub fn auth_code(frame: &Frame<'_>) -> Option<i32> {
    BodyReader::new(frame.body()).i32()
}

/// The SASL mechanisms the server offers.
pub fn sasl_mechanisms(frame: &Frame<'_>) -> Result<Vec<String>, DecodeError> {
    match decode_frame(frame, &context(), Authentication::decode)? {
        Authentication::SASL(m) => Ok(m),
        _ => Err(DecodeError::new(b'R', "not a SASL request")),
    }
}

/// An AuthenticationSASL message offering only `mechanisms`.
pub fn encode_sasl(mechanisms: Vec<String>) -> OwnedFrame {
    let mut buf = BytesMut::new();
    // Encoding a well-formed message into memory cannot fail.
    let _ = Authentication::SASL(mechanisms).encode(&mut buf);
    OwnedFrame::from_encoded(buf)
}

/// The transaction status byte of a ReadyForQuery (`I`, `T` or `E`).
pub fn ready_status(frame: &Frame<'_>) -> Option<u8> {
    frame.body().first().copied()
}

/// Name and value of a ParameterStatus.
pub fn parameter_status(frame: &Frame<'_>) -> Option<(String, String)> {
    let mut r = BodyReader::new(frame.body());
    let name = String::from_utf8_lossy(r.cstr()?).into_owned();
    let value = String::from_utf8_lossy(r.cstr()?).into_owned();
    Some((name, value))
}

/// Process id and secret of a BackendKeyData (4-byte secret in protocol
/// 3.0, up to 256 bytes in 3.2).
pub fn backend_key(frame: &Frame<'_>) -> Option<(i32, Bytes)> {
    let body = frame.body();
    let mut r = BodyReader::new(body);
    let pid = r.i32()?;
    let secret = r.bytes(r.remaining())?;
    if secret.len() < 4 || secret.len() > 256 {
        return None;
    }
    Some((pid, Bytes::copy_from_slice(secret)))
}

/// Encode a BackendKeyData carrying `pid` and `secret`.
pub fn encode_backend_key(pid: i32, secret: &[u8]) -> OwnedFrame {
    let mut buf = BytesMut::with_capacity(9 + secret.len());
    buf.extend_from_slice(b"K");
    buf.extend_from_slice(&((8 + secret.len()) as i32).to_be_bytes());
    buf.extend_from_slice(&pid.to_be_bytes());
    buf.extend_from_slice(secret);
    OwnedFrame::from_encoded(buf)
}

/// The fields of an ErrorResponse or NoticeResponse.
pub fn error_fields(frame: &Frame<'_>) -> Result<Vec<(u8, String)>, DecodeError> {
    // Notices and errors share a layout; decode both as an ErrorResponse.
    let mut bytes = frame.bytes.to_vec();
    bytes[0] = b'E';
    let f = Frame {
        tag: b'E',
        bytes: &bytes,
    };
    decode_frame(&f, &context(), ErrorResponse::decode).map(|e| e.fields)
}

/// One field of an error, such as `b'C'` (SQLSTATE) or `b'M'` (message).
pub fn error_field(fields: &[(u8, String)], code: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v.as_str())
}

/// The tag of a CommandComplete, e.g. `SELECT 3`; `None` when it is not
/// a terminated UTF-8 string (tags are ASCII).
pub fn command_tag<'a>(frame: &Frame<'a>) -> Option<&'a str> {
    let mut r = BodyReader::new(frame.body());
    std::str::from_utf8(r.cstr()?).ok()
}

/// The column descriptions of a RowDescription.
pub fn row_description(frame: &Frame<'_>) -> Result<RowDescription, DecodeError> {
    decode_frame(frame, &context(), RowDescription::decode)
}

/// Iterate the fields of a DataRow: `None` for SQL NULL, `Some(bytes)`
/// otherwise. Yields `Err` once if the row is malformed.
pub fn data_row_fields<'a>(frame: &Frame<'a>) -> DataRowFields<'a> {
    let mut r = BodyReader::new(frame.body());
    let count = r.i16().unwrap_or(-1);
    DataRowFields {
        reader: r,
        left: count,
    }
}

pub struct DataRowFields<'a> {
    reader: BodyReader<'a>,
    left: i16,
}

impl<'a> Iterator for DataRowFields<'a> {
    type Item = Result<Option<&'a [u8]>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left < 0 {
            self.left = 0;
            return Some(Err(DecodeError::new(b'D', "bad field count")));
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let bad = || Some(Err(DecodeError::new(b'D', "field runs past the end")));
        let Some(len) = self.reader.i32() else {
            self.left = 0;
            return bad();
        };
        if len == -1 {
            return Some(Ok(None));
        }
        match usize::try_from(len).ok().and_then(|n| self.reader.bytes(n)) {
            Some(b) => Some(Ok(Some(b))),
            None => {
                self.left = 0;
                bad()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::take_frame;

    fn frame(raw: &[u8]) -> OwnedFrame {
        take_frame(&mut BytesMut::from(raw), true, 1 << 20)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn data_row_iteration() {
        let f = frame(b"D\0\0\0\x14\0\x03\0\0\0\x02ab\xff\xff\xff\xff\0\0\0\0");
        let fields: Vec<_> = data_row_fields(&f.frame()).map(Result::unwrap).collect();
        assert_eq!(fields, vec![Some(&b"ab"[..]), None, Some(&b""[..])]);
    }

    #[test]
    fn malformed_data_row_is_reported() {
        let f = frame(b"D\0\0\0\x0c\0\x02\0\0\0\x09ab");
        let fields: Vec<_> = data_row_fields(&f.frame()).collect();
        assert_eq!(fields.len(), 1);
        assert!(fields[0].is_err());
    }

    #[test]
    fn sasl_round_trip() {
        let f = encode_sasl(vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-256-PLUS".into()]);
        assert_eq!(auth_code(&f.frame()), Some(auth_code::SASL));
        assert_eq!(sasl_mechanisms(&f.frame()).unwrap().len(), 2);
    }

    #[test]
    fn error_fields_of_notice() {
        let mut buf = BytesMut::new();
        ErrorResponse::new(vec![(b'S', "NOTICE".into()), (b'M', "hi".into())])
            .encode(&mut buf)
            .unwrap();
        buf[0] = b'N';
        let fields = error_fields(&OwnedFrame::from_encoded(buf).frame()).unwrap();
        assert_eq!(error_field(&fields, b'M'), Some("hi"));
    }

    #[test]
    fn backend_key_round_trip() {
        let f = encode_backend_key(42, &[1, 2, 3, 4]);
        assert_eq!(
            backend_key(&f.frame()),
            Some((42, Bytes::from_static(&[1, 2, 3, 4])))
        );
    }
}
