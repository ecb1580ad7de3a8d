//! Rewriting result messages on their way to the client: RowDescription,
//! DataRow and COPY TO STDOUT data, one message at a time (results stay
//! streamed).
//!
//! A rewritten column is always announced as `text`: the server is asked
//! for it in text format (see the Bind rewrite in the session), the mask or
//! pseudonym is computed on that text, and the client receives it in the
//! format it asked for (the binary format of `text` is its UTF-8 bytes).

use super::{HashKey, mask};
use crate::analysis::{ColumnAction, CopyFormat, ResultPlan};
use crate::frame::{BodyReader, Frame, begin_message, end_message};
use bytes::{BufMut, BytesMut};

/// The OID of `text`.
const TEXT_OID: u32 = 25;
/// What a derived value of classified columns is replaced with.
pub const REDACTED: &str = "[redacted]";

/// A result message that does not match what analysis predicted, or is
/// malformed. The session must stop: sending anything more could leak.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

/// The rewritten text of one value.
pub fn apply(action: &ColumnAction, value: &str, key: &HashKey) -> String {
    match action {
        ColumnAction::Pass => value.to_string(),
        ColumnAction::Mask { spec, .. } => mask(spec, value),
        ColumnAction::Hash => key.pseudonym(value.as_bytes()),
        ColumnAction::Redact => REDACTED.to_string(),
    }
}

/// One field of a RowDescription.
pub struct FieldInfo {
    pub table_oid: u32,
    pub attnum: i16,
}

/// Rewrite a RowDescription: columns the plan rewrites become `text` in the
/// client's `formats` (empty: as the server said). `check` sees every
/// field's origin and may refuse the description.
pub fn row_description(
    frame: &Frame<'_>,
    plan: Option<&ResultPlan>,
    formats: &[i16],
    mut check: impl FnMut(usize, &FieldInfo) -> Result<(), Mismatch>,
    out: &mut BytesMut,
) -> Result<(), Mismatch> {
    let bad = || Mismatch("malformed RowDescription from the server".into());
    let mut r = BodyReader::new(frame.body());
    let count = r.i16().ok_or_else(bad)?;
    if let Some(p) = plan {
        if p.columns.len() != count.max(0) as usize {
            return Err(Mismatch(format!(
                "the server described {count} result columns where analysis expected {}",
                p.columns.len()
            )));
        }
    }
    let start = begin_message(out, b'T');
    out.put_i16(count);
    for i in 0..count.max(0) as usize {
        let name = r.cstr().ok_or_else(bad)?;
        let table_oid = r.i32().ok_or_else(bad)? as u32;
        let attnum = r.i16().ok_or_else(bad)?;
        let type_oid = r.i32().ok_or_else(bad)? as u32;
        let typlen = r.i16().ok_or_else(bad)?;
        let typmod = r.i32().ok_or_else(bad)?;
        let format = r.i16().ok_or_else(bad)?;
        check(i, &FieldInfo { table_oid, attnum })?;
        out.put_slice(name);
        out.put_u8(0);
        out.put_u32(table_oid);
        out.put_i16(attnum);
        let rewritten = plan.is_some_and(|p| p.columns[i].rewrites());
        if rewritten {
            out.put_u32(TEXT_OID);
            out.put_i16(-1);
            out.put_i32(-1);
            out.put_i16(formats.get(i).copied().unwrap_or(0));
        } else {
            out.put_u32(type_oid);
            out.put_i16(typlen);
            out.put_i32(typmod);
            out.put_i16(format);
        }
    }
    if r.remaining() != 0 {
        return Err(bad());
    }
    end_message(out, start);
    Ok(())
}

/// Rewrite a DataRow; returns how many values were rewritten.
/// The first field of a RowDescription whose table OID and column number
/// satisfy `pred`: its position and type OID.
pub fn find_field(
    frame: &Frame<'_>,
    mut pred: impl FnMut(u32, i16) -> bool,
) -> Option<(usize, u32)> {
    let mut r = BodyReader::new(frame.body());
    let count = r.i16()?;
    for i in 0..count.max(0) as usize {
        r.cstr()?;
        let table_oid = r.i32()? as u32;
        let attnum = r.i16()?;
        let type_oid = r.i32()? as u32;
        // Length, modifier, format.
        r.bytes(2 + 4 + 2)?;
        if pred(table_oid, attnum) {
            return Some((i, type_oid));
        }
    }
    None
}

/// A key value in the form PostgreSQL prints it, whether it came in text
/// or binary, so one subject is one subject over either protocol; `None`
/// for binary values of types pgwarden does not decode.
pub fn canonical_text(
    value: &[u8],
    type_oid: u32,
    binary: bool,
) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    if !binary {
        return Some(Cow::Borrowed(value));
    }
    let int = |s: String| Some(Cow::Owned(s.into_bytes()));
    match (type_oid, value.len()) {
        (21, 2) => int(i16::from_be_bytes(value.try_into().ok()?).to_string()),
        (23, 4) => int(i32::from_be_bytes(value.try_into().ok()?).to_string()),
        (20, 8) => int(i64::from_be_bytes(value.try_into().ok()?).to_string()),
        // text, varchar, bpchar, name: the same bytes either way.
        (25 | 1043 | 1042 | 19, _) => Some(Cow::Borrowed(value)),
        (2950, 16) => {
            let mut s = String::with_capacity(36);
            for (i, b) in value.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                crate::hex::push(&mut s, &[*b]);
            }
            int(s)
        }
        _ => None,
    }
}

/// The value of field `index` of a DataRow (`None` for NULL or a
/// malformed row).
pub fn field<'a>(frame: &Frame<'a>, index: usize) -> Option<&'a [u8]> {
    let mut r = BodyReader::new(frame.body());
    let count = r.i16()?;
    if index >= count.max(0) as usize {
        return None;
    }
    for _ in 0..index {
        let len = r.i32()?;
        if len > 0 {
            r.bytes(len as usize)?;
        }
    }
    let len = r.i32()?;
    if len < 0 {
        return None;
    }
    r.bytes(len as usize)
}

pub fn data_row(
    frame: &Frame<'_>,
    plan: &ResultPlan,
    key: &HashKey,
    out: &mut BytesMut,
) -> Result<u64, Mismatch> {
    let bad = || Mismatch("malformed DataRow from the server".into());
    let mut r = BodyReader::new(frame.body());
    let count = r.i16().ok_or_else(bad)?;
    if count.max(0) as usize != plan.columns.len() {
        return Err(Mismatch(format!(
            "the server sent {count} values where analysis expected {}",
            plan.columns.len()
        )));
    }
    let start = begin_message(out, b'D');
    out.put_i16(count);
    let mut rewritten = 0;
    for action in &plan.columns {
        let len = r.i32().ok_or_else(bad)?;
        if len < 0 {
            out.put_i32(-1);
            continue;
        }
        let v = r.bytes(len as usize).ok_or_else(bad)?;
        if action.rewrites() {
            let s = apply(action, &String::from_utf8_lossy(v), key);
            out.put_i32(s.len() as i32);
            out.put_slice(s.as_bytes());
            rewritten += 1;
        } else {
            out.put_i32(len);
            out.put_slice(v);
        }
    }
    if r.remaining() != 0 {
        return Err(bad());
    }
    end_message(out, start);
    Ok(rewritten)
}

/// Rewrite one CopyData message of COPY TO STDOUT (one row per message,
/// as PostgreSQL sends them).
pub fn copy_row(
    frame: &Frame<'_>,
    plan: &ResultPlan,
    format: CopyFormat,
    key: &HashKey,
    out: &mut BytesMut,
) -> Result<(), Mismatch> {
    let data = frame.body();
    let Some(line) = data.strip_suffix(b"\n") else {
        return Err(Mismatch("COPY data that is not one row per message".into()));
    };
    let line =
        std::str::from_utf8(line).map_err(|_| Mismatch("COPY data that is not UTF-8".into()))?;
    let row = match format {
        CopyFormat::Text => copy_text(line, plan, key)?,
        CopyFormat::Csv { .. } => copy_csv(line, plan, key)?,
    };
    let start = begin_message(out, b'd');
    out.put_slice(row.as_bytes());
    out.put_u8(b'\n');
    end_message(out, start);
    Ok(())
}

fn width_mismatch(n: usize, plan: &ResultPlan) -> Mismatch {
    Mismatch(format!(
        "COPY row of {n} fields where analysis expected {}",
        plan.columns.len()
    ))
}

fn copy_text(line: &str, plan: &ResultPlan, key: &HashKey) -> Result<String, Mismatch> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != plan.columns.len() {
        return Err(width_mismatch(fields.len(), plan));
    }
    let mut out = String::with_capacity(line.len());
    for (i, (f, action)) in fields.iter().zip(&plan.columns).enumerate() {
        if i > 0 {
            out.push('\t');
        }
        if !action.rewrites() || *f == "\\N" {
            out.push_str(f);
            continue;
        }
        let v = apply(action, &unescape_text(f), key);
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    Ok(out)
}

/// Undo COPY text escaping (`\t`, `\n`, `\\`, octal and `\x` forms).
fn unescape_text(f: &str) -> String {
    let mut out = Vec::with_capacity(f.len());
    let b = f.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < b.len() && b[i].is_ascii_hexdigit() {
                    v = v * 16 + (b[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split a CSV line (default quote `"` and delimiter `,`): each field with
/// whether it was quoted.
fn split_csv(line: &str) -> Result<Vec<(String, bool)>, Mismatch> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' {
            in_quotes = true;
            quoted = true;
        } else if c == ',' {
            fields.push((std::mem::take(&mut cur), quoted));
            quoted = false;
        } else {
            cur.push(c);
        }
    }
    if in_quotes {
        return Err(Mismatch(
            "CSV row spanning several COPY messages (a value with a line break)".into(),
        ));
    }
    fields.push((cur, quoted));
    Ok(fields)
}

fn copy_csv(line: &str, plan: &ResultPlan, key: &HashKey) -> Result<String, Mismatch> {
    let fields = split_csv(line)?;
    if fields.len() != plan.columns.len() {
        return Err(width_mismatch(fields.len(), plan));
    }
    let mut out = String::with_capacity(line.len());
    for (i, ((v, quoted), action)) in fields.iter().zip(&plan.columns).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = if action.rewrites() && (*quoted || !v.is_empty()) {
            apply(action, v, key)
        } else if !*quoted && v.is_empty() {
            continue; // NULL
        } else {
            v.clone()
        };
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OwnedFrame;
    use crate::policy::MaskSpec;

    fn plan() -> ResultPlan {
        ResultPlan {
            columns: vec![
                ColumnAction::Pass,
                ColumnAction::Mask {
                    kind: "phone".into(),
                    spec: MaskSpec::Builtin("phone"),
                },
                ColumnAction::Hash,
                ColumnAction::Redact,
            ],
            copy: None,
        }
    }

    fn frame(tag: u8, body: &[u8]) -> OwnedFrame {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        OwnedFrame::from_encoded(b)
    }

    #[test]
    fn data_row_values_are_rewritten() {
        let mut body = BytesMut::new();
        body.put_i16(4);
        for v in [Some("1"), Some("13812345678"), Some("13812345678"), None] {
            match v {
                Some(s) => {
                    body.put_i32(s.len() as i32);
                    body.put_slice(s.as_bytes());
                }
                None => body.put_i32(-1),
            }
        }
        let key = HashKey::from_secret(b"k");
        let mut out = BytesMut::new();
        let n = data_row(&frame(b'D', &body).frame(), &plan(), &key, &mut out).unwrap();
        assert_eq!(n, 2);
        let f = OwnedFrame::from_encoded(out);
        let vals: Vec<_> = crate::backend::data_row_fields(&f.frame())
            .map(|v| v.unwrap().map(|b| String::from_utf8(b.to_vec()).unwrap()))
            .collect();
        assert_eq!(vals[0].as_deref(), Some("1"));
        assert_eq!(vals[1].as_deref(), Some("138****5678"));
        assert_eq!(vals[2], Some(key.pseudonym(b"13812345678")));
        assert_eq!(vals[3], None);
    }

    #[test]
    fn copy_text_and_csv() {
        let key = HashKey::from_secret(b"k");
        let mut out = BytesMut::new();
        copy_row(
            &frame(b'd', b"1\t13812345678\ta\\tb\t\\N\n").frame(),
            &plan(),
            CopyFormat::Text,
            &key,
            &mut out,
        )
        .unwrap();
        let f = OwnedFrame::from_encoded(out);
        let text = String::from_utf8(f.body().to_vec()).unwrap();
        assert_eq!(
            text,
            format!("1\t138****5678\t{}\t\\N\n", key.pseudonym(b"a\tb"))
        );
        let mut out = BytesMut::new();
        copy_row(
            &frame(b'd', b"1,\"13812345678\",,\"x\"\"y\"\n").frame(),
            &plan(),
            CopyFormat::Csv { header: false },
            &key,
            &mut out,
        )
        .unwrap();
        let f = OwnedFrame::from_encoded(out);
        let text = String::from_utf8(f.body().to_vec()).unwrap();
        assert_eq!(text, "\"1\",\"138****5678\",,\"[redacted]\"\n");
        // Width mismatches stop the result.
        assert!(
            copy_row(
                &frame(b'd', b"1\t2\n").frame(),
                &plan(),
                CopyFormat::Text,
                &key,
                &mut BytesMut::new()
            )
            .is_err()
        );
    }
}
