//! Error and notice text for restricted roles.
//!
//! PostgreSQL echoes values in its messages: a failed cast prints the text
//! it could not convert, a unique violation prints the key, a CONTEXT line
//! prints a function's arguments. For a statement that touched classified
//! columns, only the severity and SQLSTATE of an ErrorResponse or
//! NoticeResponse reach a restricted client; the message is replaced and
//! every other field dropped. pgwarden's own refusals keep their message
//! but lose the PL/pgSQL context line of the statement that raised them.

use crate::backend::error_fields;
use crate::frame::{Frame, begin_message, end_message};
use bytes::{BufMut, BytesMut};

/// How much of a server error or notice a restricted client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// Severity and SQLSTATE only; a fixed message.
    Values,
    /// A refusal raised on pgwarden's behalf: severity, SQLSTATE, message.
    Refusal,
}

/// Append the redacted form of an ErrorResponse or NoticeResponse.
pub fn redact(frame: &Frame<'_>, how: Redaction, out: &mut BytesMut) {
    let fields = error_fields(frame).unwrap_or_default();
    let get = |c: u8| {
        fields
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.as_str())
    };
    let severity = get(b'S').unwrap_or("ERROR");
    let code = get(b'C').unwrap_or("XX000");
    let message = match how {
        Redaction::Refusal => get(b'M').unwrap_or("").to_string(),
        Redaction::Values => format!(
            "pgwarden withheld the text of this {} (SQLSTATE {code}) because the statement \
             involves classified columns",
            if frame.tag == b'N' { "notice" } else { "error" }
        ),
    };
    let start = begin_message(out, frame.tag);
    for (k, v) in [
        (b'S', severity),
        (b'V', get(b'V').unwrap_or(severity)),
        (b'C', code),
        (b'M', message.as_str()),
    ] {
        out.put_u8(k);
        out.put_slice(v.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    end_message(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::error_field;
    use crate::error::PgError;
    use crate::frame::OwnedFrame;

    #[test]
    fn values_are_withheld() {
        let e = PgError::error(
            "22P02",
            "invalid input syntax for type integer: \"13812345678\"",
        )
        .with_detail("Key (phone)=(13812345678)");
        let f = OwnedFrame::from_encoded(BytesMut::from(&e.encode()[..]));
        let mut out = BytesMut::new();
        redact(&f.frame(), Redaction::Values, &mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(!text.contains("1381234"), "{text}");
        let r = OwnedFrame::from_encoded(out);
        let fields = error_fields(&r.frame()).unwrap();
        assert_eq!(error_field(&fields, b'C'), Some("22P02"));
        assert!(error_field(&fields, b'D').is_none());
        let mut out = BytesMut::new();
        redact(&f.frame(), Redaction::Refusal, &mut out);
        let r = OwnedFrame::from_encoded(out);
        let fields = error_fields(&r.frame()).unwrap();
        assert!(error_field(&fields, b'M').unwrap().contains("13812345678"));
    }
}
