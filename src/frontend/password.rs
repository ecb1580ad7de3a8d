//! The client's password-family (`p`) messages, read by hand with bounds
//! checks: which one a `p` message is depends on the authentication state.

use crate::frame::{BodyReader, Frame};

/// SASLInitialResponse: mechanism name and initial client data.
pub fn sasl_initial_response(frame: &Frame<'_>) -> Option<(String, Vec<u8>)> {
    let mut r = BodyReader::new(frame.body());
    let mechanism = String::from_utf8(r.cstr()?.to_vec()).ok()?;
    let len = r.i32()?;
    let data = if len < 0 {
        Vec::new()
    } else {
        r.bytes(len as usize)?.to_vec()
    };
    (r.remaining() == 0).then_some((mechanism, data))
}

/// SASLResponse: the whole body is the client's data.
pub fn sasl_response(frame: &Frame<'_>) -> Vec<u8> {
    frame.body().to_vec()
}

/// PasswordMessage: one NUL-terminated string (cleartext or md5 response).
pub fn password(frame: &Frame<'_>) -> Option<String> {
    let mut r = BodyReader::new(frame.body());
    let s = String::from_utf8(r.cstr()?.to_vec()).ok()?;
    (r.remaining() == 0).then_some(s)
}
