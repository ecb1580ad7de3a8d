//! Framing: cut exactly one protocol message off a byte buffer.
//!
//! Every message is cut out by its own length field before anything decodes
//! it, so a malformed body can never make a decoder read into the next
//! message. Startup-phase messages have no type byte; all later ones do.

use bytes::{BufMut, Bytes, BytesMut};

/// One whole protocol message: type byte (absent in the startup phase),
/// length, body. `bytes` is exactly what came over the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The message type byte, or 0 for untyped startup-phase messages.
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// Offset of the body inside `bytes`.
    fn header_len(&self) -> usize {
        if self.tag == 0 { 4 } else { 5 }
    }

    /// The message body, after type byte and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.header_len()..]
    }

    /// Wrap an already encoded typed message.
    pub fn from_encoded(bytes: BytesMut) -> Frame {
        let tag = bytes.first().copied().unwrap_or(0);
        Frame {
            tag,
            bytes: bytes.freeze(),
        }
    }
}

/// Start a typed message in `out`: its type byte and a length to be
/// filled in by [`end_message`]. Returns where the message starts.
pub fn begin_message(out: &mut BytesMut, tag: u8) -> usize {
    let start = out.len();
    out.put_u8(tag);
    out.put_i32(0);
    start
}

/// Fill in the length of the message begun at `start`.
pub fn end_message(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Why a frame could not be cut.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Cut one frame off the front of `buf` if it is complete.
///
/// `typed` says whether messages start with a type byte; `max` caps the
/// declared length so a hostile length never causes a huge allocation.
pub fn take_frame(
    buf: &mut BytesMut,
    typed: bool,
    max: usize,
) -> Result<Option<Frame>, FrameError> {
    let hdr = if typed { 5 } else { 4 };
    if buf.len() < hdr {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[hdr - 4], buf[hdr - 3], buf[hdr - 2], buf[hdr - 1]]);
    if len < 4 {
        return Err(FrameError::BadLength(len as i64));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let total = hdr - 4 + len;
    if buf.len() < total {
        // Make room for the rest of this message in one go.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let bytes = buf.split_to(total).freeze();
    let tag = if typed { bytes[0] } else { 0 };
    Ok(Some(Frame { tag, bytes }))
}

/// Bounds-checked reader over a message body.
pub struct BodyReader<'a> {
    data: &'a [u8],
}

impl<'a> BodyReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BodyReader { data }
    }
    pub fn remaining(&self) -> usize {
        self.data.len()
    }
    pub fn i16(&mut self) -> Option<i16> {
        let (h, t) = self.data.split_first_chunk::<2>()?;
        self.data = t;
        Some(i16::from_be_bytes(*h))
    }
    pub fn i32(&mut self) -> Option<i32> {
        let (h, t) = self.data.split_first_chunk::<4>()?;
        self.data = t;
        Some(i32::from_be_bytes(*h))
    }
    pub fn u8(&mut self) -> Option<u8> {
        let (h, t) = self.data.split_first()?;
        self.data = t;
        Some(*h)
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (h, t) = self.data.split_at(n);
        self.data = t;
        Some(h)
    }
    /// A NUL-terminated string (without the NUL).
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.data.iter().position(|b| *b == 0)?;
        let s = &self.data[..end];
        self.data = &self.data[end + 1..];
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_exactly_one_typed_frame() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dselect 1\0Q\0\0"[..]);
        let f = take_frame(&mut buf, true, 1000).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.body(), b"select 1\0");
        assert_eq!(&buf[..], b"Q\0\0");
        assert!(take_frame(&mut buf, true, 1000).unwrap().is_none());
    }

    #[test]
    fn rejects_short_and_oversized_lengths() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02"[..]);
        assert_eq!(
            take_frame(&mut buf, true, 1000).unwrap_err(),
            FrameError::BadLength(2)
        );
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            take_frame(&mut buf, true, 1000),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(matches!(
            take_frame(&mut buf, true, 1000),
            Err(FrameError::BadLength(-1))
        ));
    }

    #[test]
    fn untyped_startup_frame() {
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x2f"[..]);
        let f = take_frame(&mut buf, false, 1000).unwrap().unwrap();
        assert_eq!(f.tag, 0);
        assert_eq!(f.body(), b"\x04\xd2\x16\x2f");
    }

    #[test]
    fn body_reader_is_bounds_checked() {
        let mut r = BodyReader::new(b"\0\x01ab\0c");
        assert_eq!(r.i16(), Some(1));
        assert_eq!(r.cstr(), Some(&b"ab"[..]));
        assert_eq!(r.cstr(), None);
        assert_eq!(r.i32(), None);
        assert_eq!(r.bytes(1), Some(&b"c"[..]));
        assert_eq!(r.u8(), None);
    }
}
