//! Bind, Execute, Describe and Close read in place.
//!
//! These four messages make up most of what a client using prepared
//! statements sends: a transaction of pgbench in prepared mode is a Bind,
//! a Describe, an Execute and a Sync. They are read straight out of their
//! frame, names and parameters borrowed, with no copy and no allocation;
//! only a Bind whose result formats must change is written anew. The rules
//! are PostgreSQL's own (`exec_bind_message` and friends): counts are
//! unsigned 16-bit, a parameter length is -1 (NULL) or not negative, and
//! nothing may follow the last field.

use super::{DecodeError, text};
use crate::frame::{BodyReader, begin_message, end_message};
use bytes::{BufMut, BytesMut};
use std::borrow::Cow;

fn cstr<'a>(r: &mut BodyReader<'a>, tag: u8, what: &str) -> Result<&'a [u8], DecodeError> {
    r.cstr()
        .ok_or_else(|| DecodeError::new(tag, format!("{what} is not terminated")))
}

fn end(r: &BodyReader<'_>, tag: u8) -> Result<(), DecodeError> {
    if r.remaining() == 0 {
        Ok(())
    } else {
        Err(DecodeError::new(tag, "trailing bytes after the message"))
    }
}

/// A Bind: creates a portal from a prepared statement and its parameters.
#[derive(Debug)]
pub struct Bind<'a> {
    pub portal: Cow<'a, str>,
    pub statement: Cow<'a, str>,
    /// Parameter format codes, two bytes each.
    param_formats: &'a [u8],
    /// The parameters, each a length and its bytes (checked).
    params: &'a [u8],
    param_count: u16,
    /// Result format codes, two bytes each.
    result_formats: &'a [u8],
    /// The body up to (not including) the result format count.
    head: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Bind<'a>, DecodeError> {
        const T: u8 = b'B';
        let short = || DecodeError::new(T, "message ends early");
        let mut r = BodyReader::new(body);
        let portal = cstr(&mut r, T, "portal name")?;
        let statement = cstr(&mut r, T, "statement name")?;
        let n = r.i16().ok_or_else(short)? as u16 as usize;
        let param_formats = r.bytes(2 * n).ok_or_else(short)?;
        let param_count = r.i16().ok_or_else(short)? as u16;
        let start = body.len() - r.remaining();
        for _ in 0..param_count {
            match r.i32().ok_or_else(short)? {
                -1 => {}
                len if len < 0 => {
                    return Err(DecodeError::new(T, format!("parameter length {len}")));
                }
                len => {
                    r.bytes(len as usize).ok_or_else(short)?;
                }
            }
        }
        let params_end = body.len() - r.remaining();
        let n = r.i16().ok_or_else(short)? as u16 as usize;
        let result_formats = r.bytes(2 * n).ok_or_else(short)?;
        end(&r, T)?;
        Ok(Bind {
            portal: text(portal),
            statement: text(statement),
            param_formats,
            params: &body[start..params_end],
            param_count,
            result_formats,
            head: &body[..params_end],
        })
    }

    /// The format of parameter `i` (0 text, 1 binary): none given means
    /// text for all, one means that one for all.
    pub fn param_format(&self, i: usize) -> i16 {
        format_at(self.param_formats, i)
    }

    /// The parameters in order, `None` for NULL.
    pub fn params(&self) -> impl Iterator<Item = Option<&'a [u8]>> + use<'a> {
        let mut r = BodyReader::new(self.params);
        (0..self.param_count).map(move |_| {
            // Checked when decoded: lengths are -1 or fit the body.
            let len = r.i32().unwrap_or(-1);
            usize::try_from(len).ok().and_then(|n| r.bytes(n))
        })
    }

    /// The result format codes as sent: none, one for all columns, or one
    /// per column.
    pub fn result_formats(&self) -> impl ExactSizeIterator<Item = i16> + Clone + use<'a> {
        self.result_formats
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
    }

    /// The format the client asked for, for each of `columns` result
    /// columns.
    pub fn expand_result_formats(&self, columns: usize) -> Vec<i16> {
        (0..columns)
            .map(|i| format_at(self.result_formats, i))
            .collect()
    }

    /// This Bind with other result format codes, appended to `out`.
    pub fn encode_with_result_formats(&self, formats: &[i16], out: &mut BytesMut) {
        let start = begin_message(out, b'B');
        out.extend_from_slice(self.head);
        out.put_u16(formats.len() as u16);
        for f in formats {
            out.put_i16(*f);
        }
        end_message(out, start);
    }
}

/// Format code `i` of a list given in the protocol's short forms.
fn format_at(codes: &[u8], i: usize) -> i16 {
    let at = |k: usize| i16::from_be_bytes([codes[2 * k], codes[2 * k + 1]]);
    match codes.len() / 2 {
        0 => 0,
        1 => at(0),
        n if i < n => at(i),
        _ => 0,
    }
}

/// An Execute: runs a portal, returning at most `max_rows` rows (0: all).
#[derive(Debug)]
pub struct Execute<'a> {
    pub portal: Cow<'a, str>,
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Execute<'a>, DecodeError> {
        let mut r = BodyReader::new(body);
        let portal = cstr(&mut r, b'E', "portal name")?;
        let max_rows = r
            .i32()
            .ok_or_else(|| DecodeError::new(b'E', "message ends early"))?;
        end(&r, b'E')?;
        Ok(Execute {
            portal: text(portal),
            max_rows,
        })
    }
}

/// A Describe or a Close: a target (`S` statement, `P` portal) and its
/// name.
#[derive(Debug)]
pub struct Target<'a> {
    pub kind: u8,
    pub name: Cow<'a, str>,
}

impl<'a> Target<'a> {
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Target<'a>, DecodeError> {
        let mut r = BodyReader::new(body);
        let kind = r
            .u8()
            .ok_or_else(|| DecodeError::new(tag, "message ends early"))?;
        let n = cstr(&mut r, tag, "name")?;
        end(&r, tag)?;
        Ok(Target {
            kind,
            name: text(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{context, decode_frame};
    use crate::frame::{OwnedFrame, take_frame};
    use pgwire::messages::PgWireFrontendMessage;
    use pgwire::messages::extendedquery as pg;
    use rand::{Rng, SeedableRng};

    fn frame_of(m: PgWireFrontendMessage) -> OwnedFrame {
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        take_frame(&mut buf, true, 1 << 20).unwrap().unwrap()
    }

    type BindFields = (
        Option<String>,
        Option<String>,
        Vec<i16>,
        Vec<Option<bytes::Bytes>>,
        Vec<i16>,
    );

    fn random_bind(rng: &mut impl Rng) -> BindFields {
        let name = |rng: &mut dyn rand::RngCore| -> Option<String> {
            let n = rng.random_range(0..4usize);
            (n > 0).then(|| (0..n).map(|_| rng.random_range('a'..='z')).collect())
        };
        let params = (0..rng.random_range(0..5))
            .map(|_| {
                rng.random_bool(0.8).then(|| {
                    let n = rng.random_range(0..6);
                    (0..n)
                        .map(|_| rng.random::<u8>())
                        .collect::<Vec<_>>()
                        .into()
                })
            })
            .collect::<Vec<_>>();
        let codes = |rng: &mut dyn rand::RngCore| -> Vec<i16> {
            (0..rng.random_range(0..4))
                .map(|_| rng.random_range(0..2))
                .collect()
        };
        (name(rng), name(rng), codes(rng), params, codes(rng))
    }

    /// Every Bind pgwire writes reads back here as pgwire reads it.
    #[test]
    fn bind_agrees_with_pgwire() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let fields = random_bind(&mut rng);
            let (a, b, c, d, e) = fields.clone();
            let want = pg::Bind::new(a, b, c, d, e);
            let (a, b, c, d, e) = fields;
            let frame = frame_of(PgWireFrontendMessage::Bind(pg::Bind::new(a, b, c, d, e)));
            let got = Bind::decode(frame.body()).unwrap();
            assert_eq!(got.portal, want.portal_name.as_deref().unwrap_or(""));
            assert_eq!(got.statement, want.statement_name.as_deref().unwrap_or(""));
            let params: Vec<_> = got.params().map(|p| p.map(<[u8]>::to_vec)).collect();
            let want_params: Vec<_> = want
                .parameters
                .iter()
                .map(|p| p.as_ref().map(|b| b.to_vec()))
                .collect();
            assert_eq!(params, want_params);
            for i in 0..want.parameters.len() {
                let f = match want.parameter_format_codes.as_slice() {
                    [] => 0,
                    [one] => *one,
                    many => many.get(i).copied().unwrap_or(0),
                };
                assert_eq!(got.param_format(i), f);
            }
            let formats: Vec<i16> = got.result_formats().collect();
            assert_eq!(formats, want.result_column_format_codes);

            // Re-encoded with other result formats: pgwire reads the same
            // Bind with only those changed.
            let mut out = BytesMut::new();
            got.encode_with_result_formats(&[1, 0, 1], &mut out);
            let again = take_frame(&mut out, true, 1 << 20).unwrap().unwrap();
            let decoded = decode_frame(&again.frame(), &context(), PgWireFrontendMessage::decode);
            let Ok(PgWireFrontendMessage::Bind(b)) = decoded else {
                panic!("{decoded:?}");
            };
            assert_eq!(b.result_column_format_codes, vec![1, 0, 1]);
            assert_eq!(b.parameters, want.parameters);
            assert_eq!(b.portal_name, want.portal_name);
        }
    }

    #[test]
    fn expands_result_formats_by_the_protocol_rule() {
        let bind = |codes: Vec<i16>| {
            frame_of(PgWireFrontendMessage::Bind(pg::Bind::new(
                None,
                None,
                vec![],
                vec![],
                codes,
            )))
        };
        let f = bind(vec![]);
        assert_eq!(
            Bind::decode(f.body()).unwrap().expand_result_formats(2),
            [0, 0]
        );
        let f = bind(vec![1]);
        assert_eq!(
            Bind::decode(f.body()).unwrap().expand_result_formats(3),
            [1, 1, 1]
        );
        let f = bind(vec![1, 0]);
        assert_eq!(
            Bind::decode(f.body()).unwrap().expand_result_formats(3),
            [1, 0, 0]
        );
    }

    #[test]
    fn malformed_binds_are_errors() {
        for body in [
            &b""[..],
            b"p1",                                 // name not terminated
            b"\0\0\0\x02\0\x01",                   // 2 formats, 1 given
            b"\0\0\0\0\0\x01\0\0\0\x05ab\0\0",     // parameter runs past the end
            b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0", // length -2
            b"\0\0\0\0\0\0\0\0x",                  // trailing byte
            b"\0\0\0\0\0\0\0\x01\0",               // result format cut
        ] {
            assert!(Bind::decode(body).is_err(), "{body:?}");
        }
        let ok = Bind::decode(b"\0\0\0\0\0\x01\xff\xff\xff\xff\0\0").unwrap();
        assert_eq!(ok.params().collect::<Vec<_>>(), [None]);
    }

    #[test]
    fn execute_describe_close() {
        let f = frame_of(PgWireFrontendMessage::Execute(pg::Execute::new(
            Some("p1".into()),
            10,
        )));
        let e = Execute::decode(f.body()).unwrap();
        assert_eq!((e.portal.as_ref(), e.max_rows), ("p1", 10));
        assert!(Execute::decode(b"p1\0\0\0").is_err());
        assert!(Execute::decode(b"p1\0\0\0\0\0\0").is_err());

        let f = frame_of(PgWireFrontendMessage::Describe(pg::Describe::new(
            b'S', None,
        )));
        let d = Target::decode(b'D', f.body()).unwrap();
        assert_eq!((d.kind, d.name.as_ref()), (b'S', ""));
        let f = frame_of(PgWireFrontendMessage::Close(pg::Close::new(
            b'P',
            Some("c".into()),
        )));
        let c = Target::decode(b'C', f.body()).unwrap();
        assert_eq!((c.kind, c.name.as_ref()), (b'P', "c"));
        assert!(Target::decode(b'C', b"P").is_err());
        assert!(Target::decode(b'C', b"").is_err());
        assert!(Target::decode(b'C', b"Pc\0\0").is_err());
    }
}

/// The number of elements of an array parameter (every dimension
/// counted), in the binary or text format; `None` when it is not an array
/// this can read.
pub fn array_len(value: &[u8], binary: bool) -> Option<usize> {
    array_elements(value, binary).map(|e| e.len())
}

/// The elements of an array parameter, every dimension flattened, each as
/// the server reads it (`None` for NULL), in the binary or text format;
/// `None` when it is not an array this can read.
pub fn array_elements(value: &[u8], binary: bool) -> Option<Vec<Option<Cow<'_, [u8]>>>> {
    if binary {
        binary_elements(value)
    } else {
        text_elements(value)
    }
}

fn binary_elements(value: &[u8]) -> Option<Vec<Option<Cow<'_, [u8]>>>> {
    let mut r = BodyReader::new(value);
    let ndim = usize::try_from(r.i32()?).ok()?;
    let (_flags, _element_type) = (r.i32()?, r.i32()?);
    let mut n: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        n = n.checked_mul(usize::try_from(r.i32()?).ok()?)?;
        r.i32()?;
    }
    // Every element holds at least its length word.
    if n > value.len() / 4 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32()?;
        out.push(match usize::try_from(len) {
            Ok(len) => Some(Cow::Borrowed(r.bytes(len)?)),
            Err(_) if len == -1 => None,
            Err(_) => return None,
        });
    }
    Some(out)
}

fn text_elements(value: &[u8]) -> Option<Vec<Option<Cow<'_, [u8]>>>> {
    // The server skips whitespace before the bounds and the braces.
    let text = std::str::from_utf8(value).ok()?.trim_start();
    // `[1:3]={...}`: explicit bounds first.
    let body = match text.find('=') {
        Some(i) if text.starts_with('[') => &text[i + 1..],
        _ => text,
    };
    let body = body.trim().as_bytes();
    if body.first() != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    let mut element: Vec<u8> = Vec::new();
    let (mut in_element, mut quoted, mut was_quoted, mut escaped) = (false, false, false, false);
    for &c in body {
        if escaped {
            element.push(c);
            escaped = false;
            continue;
        }
        match c {
            b'\\' => {
                escaped = true;
                in_element = true;
            }
            b'"' => {
                quoted = !quoted;
                in_element = true;
                was_quoted = true;
            }
            _ if quoted => element.push(c),
            b'{' | b'}' | b',' => {
                if in_element {
                    if !was_quoted {
                        let end = element.iter().rposition(|c| !c.is_ascii_whitespace());
                        element.truncate(end.map_or(0, |e| e + 1));
                    }
                    let null = !was_quoted && element.eq_ignore_ascii_case(b"null");
                    let e = std::mem::take(&mut element);
                    out.push((!null).then_some(Cow::Owned(e)));
                }
                (in_element, was_quoted) = (false, false);
            }
            c if c.is_ascii_whitespace() && !in_element => {}
            _ => {
                in_element = true;
                element.push(c);
            }
        }
    }
    (!quoted && !escaped).then_some(out)
}

#[cfg(test)]
mod array_tests {
    use super::array_len;

    #[test]
    fn arrays_are_counted_in_both_formats() {
        assert_eq!(array_len(b"{}", false), Some(0));
        assert_eq!(array_len(b"{a,b,c}", false), Some(3));
        assert_eq!(array_len(b"{\"a,b\",\"c\\\"}\"}", false), Some(2));
        assert_eq!(array_len(b"{{1,2},{3,4}}", false), Some(4));
        assert_eq!(array_len(b"[1:2]={1,2}", false), Some(2));
        assert_eq!(array_len(b"{NULL, x }", false), Some(2));
        assert_eq!(array_len(b"abc", false), None);
        // int4[] {1,2,3} in binary: ndim 1, no nulls, int4, size 3, lbound 1.
        let mut b = Vec::new();
        for w in [1i32, 0, 23, 3, 1] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for v in [1i32, 2, 3] {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(array_len(&b, true), Some(3));
        assert_eq!(array_len(&b[..10], true), None);
        assert_eq!(array_len(&b[..b.len() - 1], true), None);
    }

    #[test]
    fn array_elements_are_read_as_the_server_reads_them() {
        let text = |v: &[u8]| {
            super::array_elements(v, false).map(|e| {
                e.into_iter()
                    .map(|x| x.map(|x| String::from_utf8(x.into_owned()).unwrap()))
                    .collect::<Vec<_>>()
            })
        };
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            text(b"{ 138 , \"a,b\",\"c\\\"d\", NULL ,\"NULL\", x y }"),
            Some(vec![
                s("138"),
                s("a,b"),
                s("c\"d"),
                None,
                s("NULL"),
                s("x y")
            ])
        );
        assert_eq!(text(b"{{1,2},{3}}"), Some(vec![s("1"), s("2"), s("3")]));
        assert_eq!(text(b"{\"a}"), None);
        assert_eq!(text(b" [1:2]= {1,2}"), Some(vec![s("1"), s("2")]));
        let mut b = Vec::new();
        for w in [1i32, 0, 25, 2, 1, 3] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(b"138");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        let e = super::array_elements(&b, true).unwrap();
        assert_eq!(e, vec![Some(std::borrow::Cow::Borrowed(&b"138"[..])), None]);
    }
}
