//! Safe decoding of one frame with pgwire's message types.
//!
//! pgwire's decoders trust the bytes they are given: a malformed body can
//! panic or silently read too little. Here each decode sees exactly one
//! frame, runs under `catch_unwind`, and must consume the whole frame.

use crate::frame::Frame;
use bytes::BytesMut;
use pgwire::error::PgWireResult;
use pgwire::messages::{DecodeContext, ProtocolVersion};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A message that pgwire could not decode from its frame.
#[derive(Debug, thiserror::Error)]
#[error("malformed {tag:?} message: {reason}")]
pub struct DecodeError {
    pub tag: char,
    pub reason: String,
}

impl DecodeError {
    pub fn new(tag: u8, reason: impl Into<String>) -> Self {
        DecodeError {
            tag: tag as char,
            reason: reason.into(),
        }
    }
}

/// The decode context for protocol 3.0, after the startup phase.
pub fn context() -> DecodeContext {
    // `DecodeContext::new` starts in the startup phase; we are past it.
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    ctx
}

/// Decode `frame` with `f`, which must consume it entirely.
pub fn decode_frame<T>(
    frame: &Frame<'_>,
    ctx: &DecodeContext,
    f: impl FnOnce(&mut BytesMut, &DecodeContext) -> PgWireResult<Option<T>>,
) -> Result<T, DecodeError> {
    let mut buf = BytesMut::from(frame.bytes);
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut buf, ctx)));
    match result {
        Err(_) => Err(DecodeError::new(
            frame.tag,
            "truncated or inconsistent body",
        )),
        Ok(Err(e)) => Err(DecodeError::new(frame.tag, e.to_string())),
        Ok(Ok(None)) => Err(DecodeError::new(frame.tag, "incomplete message")),
        Ok(Ok(Some(_))) if !buf.is_empty() => Err(DecodeError::new(
            frame.tag,
            "trailing bytes after the message",
        )),
        Ok(Ok(Some(m))) => Ok(m),
    }
}
