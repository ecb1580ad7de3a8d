//! Frontend messages: what the client sends to pgwarden.
//!
//! A frame cut by [`crate::frame`] is decoded here once into a
//! [`FrontendMessage`]; the session inspects it (SQL text, statement and
//! portal names) and forwards the original bytes untouched. Anything that
//! does not decode cleanly is a protocol violation that ends the connection.
//!
//! Parse and CopyFail are decoded with pgwire's message types; the messages
//! sent for every execution of a prepared statement (Bind, Execute,
//! Describe, Close) are read in place by [`extended`], without a copy.

pub mod extended;
pub mod password;
pub mod startup;

use crate::codec::{DecodeError, decode_frame};
use crate::frame::Frame;
use extended::{Bind, Execute, Target};
use pgwire::messages::extendedquery::Parse;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage};
use std::borrow::Cow;
use std::sync::Arc;

/// One decoded message from the client after the startup phase, borrowing
/// from its frame.
#[derive(Debug)]
pub enum FrontendMessage<'a> {
    /// Simple query: one or more statements in one string.
    Query(Arc<str>),
    Parse(Parse),
    Bind(Bind<'a>),
    Describe(Target<'a>),
    Execute(Execute<'a>),
    Close(Target<'a>),
    Sync,
    Flush,
    /// COPY FROM STDIN payload; never decoded beyond its frame.
    CopyData,
    CopyDone,
    CopyFail(String),
    /// The legacy fast-path function call (`F`): calls a function by OID
    /// with no SQL text to analyse.
    FunctionCall {
        function_oid: u32,
    },
    /// A password-family (`p`) message outside authentication.
    Password,
    Terminate,
}

impl<'a> FrontendMessage<'a> {
    /// Decode one typed frame from the client.
    pub fn decode(
        frame: &Frame<'a>,
        ctx: &DecodeContext,
    ) -> Result<FrontendMessage<'a>, DecodeError> {
        match frame.tag {
            b'd' => Ok(FrontendMessage::CopyData),
            b'Q' => decode_query(frame),
            b'F' => {
                let body = frame.body();
                if body.len() < 4 {
                    return Err(DecodeError::new(b'F', "too short"));
                }
                Ok(FrontendMessage::FunctionCall {
                    function_oid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                })
            }
            b'p' => Ok(FrontendMessage::Password),
            // Messages that are only a type and a length: nothing to
            // decode beyond checking that the body is empty.
            b'S' | b'H' | b'X' | b'c' => {
                if !frame.body().is_empty() {
                    return Err(DecodeError::new(
                        frame.tag,
                        "trailing bytes after the message",
                    ));
                }
                Ok(match frame.tag {
                    b'S' => FrontendMessage::Sync,
                    b'H' => FrontendMessage::Flush,
                    b'X' => FrontendMessage::Terminate,
                    _ => FrontendMessage::CopyDone,
                })
            }
            b'B' => Bind::decode(frame.body()).map(FrontendMessage::Bind),
            b'E' => Execute::decode(frame.body()).map(FrontendMessage::Execute),
            b'D' => Target::decode(b'D', frame.body()).map(FrontendMessage::Describe),
            b'C' => Target::decode(b'C', frame.body()).map(FrontendMessage::Close),
            b'P' | b'f' => {
                let msg = decode_frame(frame, ctx, PgWireFrontendMessage::decode)?;
                Ok(match msg {
                    PgWireFrontendMessage::Parse(p) => FrontendMessage::Parse(p),
                    PgWireFrontendMessage::CopyFail(f) => FrontendMessage::CopyFail(f.message),
                    other => {
                        return Err(DecodeError::new(
                            frame.tag,
                            format!("unexpected message {other:?}"),
                        ));
                    }
                })
            }
            t => Err(DecodeError::new(t, "unknown message type")),
        }
    }
}

/// A Query body is one NUL-terminated string and nothing after it, as
/// PostgreSQL itself requires.
fn decode_query<'a>(frame: &Frame<'a>) -> Result<FrontendMessage<'a>, DecodeError> {
    let Some((0, sql)) = frame.body().split_last() else {
        return Err(DecodeError::new(b'Q', "query string is not terminated"));
    };
    if sql.contains(&0) {
        return Err(DecodeError::new(b'Q', "bytes after the query string"));
    }
    Ok(FrontendMessage::Query(Arc::from(text(sql))))
}

/// Text from the client: borrowed when it is UTF-8 (nearly always), bytes
/// that are not replaced as pgwire does.
pub(crate) fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests;
