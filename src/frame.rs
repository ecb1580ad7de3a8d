//! Framing: cut exactly one protocol message off a byte buffer.
//!
//! Every message is cut out by its own length field before anything decodes
//! it, so a malformed body can never make a decoder read into the next
//! message. Startup-phase messages have no type byte; all later ones do.
//!
//! A relayed session handles each message where it was read: a [`Frame`]
//! borrows its bytes from the read buffer ([`peek_frame`]), which moves on
//! once all of a read's messages are handled. Messages kept beyond a read
//! (startup, authentication) or built by pgwarden are [`OwnedFrame`]s.

use bytes::{BufMut, Bytes, BytesMut};

/// One whole protocol message: type byte (absent in the startup phase),
/// length, body. `bytes` is exactly what came over the wire.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The message type byte, or 0 for untyped startup-phase messages.
    pub tag: u8,
    pub bytes: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The message body, after type byte and length.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[header_len(self.tag)..]
    }
}

/// Offset of the body in a message of type `tag`.
fn header_len(tag: u8) -> usize {
    if tag == 0 { 4 } else { 5 }
}

/// A frame that owns its bytes.
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    /// The message type byte, or 0 for untyped startup-phase messages.
    pub tag: u8,
    pub bytes: Bytes,
}

impl OwnedFrame {
    /// A borrowed view, for the decoders.
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            tag: self.tag,
            bytes: &self.bytes,
        }
    }

    /// The message body, after type byte and length.
    pub fn body(&self) -> &[u8] {
        self.frame().body()
    }

    /// Wrap an already encoded typed message.
    pub fn from_encoded(bytes: BytesMut) -> OwnedFrame {
        let tag = bytes.first().copied().unwrap_or(0);
        OwnedFrame {
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

/// The whole length of the message at the start of `buf`, once its header
/// is there. `typed` says whether messages start with a type byte; `max`
/// caps the declared length so a hostile length never causes a huge
/// allocation.
fn frame_len(buf: &[u8], typed: bool, max: usize) -> Result<Option<usize>, FrameError> {
    let hdr = if typed { 5 } else { 4 };
    let Some(len) = buf.get(hdr - 4..hdr) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if len < 4 {
        return Err(FrameError::BadLength(len as i64));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some(hdr - 4 + len))
}

/// Cut one frame off the front of `buf` if it is complete.
pub fn take_frame(
    buf: &mut BytesMut,
    typed: bool,
    max: usize,
) -> Result<Option<OwnedFrame>, FrameError> {
    let Some(total) = frame_len(buf, typed, max)? else {
        return Ok(None);
    };
    if buf.len() < total {
        // Make room for the rest of this message in one go.
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let bytes = buf.split_to(total).freeze();
    let tag = if typed { bytes[0] } else { 0 };
    Ok(Some(OwnedFrame { tag, bytes }))
}

/// The typed frame at the start of `buf`, borrowed, if it is complete.
pub fn peek_frame(buf: &[u8], max: usize) -> Result<Option<Frame<'_>>, FrameError> {
    match frame_len(buf, true, max)? {
        Some(total) if buf.len() >= total => Ok(Some(Frame {
            tag: buf[0],
            bytes: &buf[..total],
        })),
        _ => Ok(None),
    }
}

/// Drop the `used` bytes of handled frames from the front of a read
/// buffer, and make room for the rest of a message begun after them.
pub fn consume(buf: &mut BytesMut, used: usize, max: usize) -> Result<(), FrameError> {
    if used == buf.len() {
        // All handled (the usual case): the next read lands at the front
        // of the buffer again, in memory the last one warmed, instead of
        // walking a fresh stretch of it per round trip.
        buf.clear();
        // Moves the (empty) start back only if an earlier partial
        // message left it further on; never allocates.
        let _ = buf.try_reclaim(buf.capacity() + 1);
        return Ok(());
    }
    bytes::Buf::advance(buf, used);
    if let Some(total) = frame_len(buf, true, max)? {
        if buf.len() < total {
            buf.reserve(total - buf.len());
        }
    }
    Ok(())
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
    fn peeks_frames_in_place_and_consumes_them() {
        let mut buf = BytesMut::from(&b"S\0\0\0\x04Q\0\0\0\x0dselect"[..]);
        let f = peek_frame(&buf, 1000).unwrap().unwrap();
        assert_eq!((f.tag, f.bytes.len(), f.body()), (b'S', 5, &b""[..]));
        let used = f.bytes.len();
        assert!(peek_frame(&buf[used..], 1000).unwrap().is_none());
        consume(&mut buf, used, 1000).unwrap();
        assert_eq!(&buf[..], b"Q\0\0\0\x0dselect");
        // Room for the whole Query once its length is known.
        assert!(buf.capacity() >= 14);
        assert!(matches!(
            peek_frame(b"Q\0\0\0\x02", 1000),
            Err(FrameError::BadLength(2))
        ));
        assert!(matches!(
            consume(&mut BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]), 0, 1000),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn consuming_everything_reads_again_at_the_front() {
        let mut buf = BytesMut::with_capacity(64);
        let start = buf.as_ptr();
        buf.extend_from_slice(b"S\0\0\0\x04Q\0\0\0\x0bsel");
        // A partial message moves the start on...
        consume(&mut buf, 5, 1000).unwrap();
        assert_ne!(buf.as_ptr(), start);
        buf.extend_from_slice(b"ect\0");
        // ...and once it is handled too, the buffer starts over, with its
        // whole capacity and the same memory.
        consume(&mut buf, 12, 1000).unwrap();
        assert!(buf.is_empty());
        assert_eq!(buf.as_ptr(), start);
        assert_eq!(buf.capacity(), 64);
        buf.extend_from_slice(b"S\0\0\0\x04");
        consume(&mut buf, 5, 1000).unwrap();
        assert_eq!(buf.as_ptr(), start);
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
