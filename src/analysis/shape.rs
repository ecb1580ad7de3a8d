//! Statement shapes: SQL text with its literal values blanked out, so that
//! `... WHERE id = 17` and `... WHERE id = 42` share one analysis.
//!
//! Applications that do not use prepared statements send every lookup as
//! new text; parsing and analysing each costs more than the rest of the
//! proxy hop. Two texts with the same shape differ only in the digits of
//! numeric literals and in the bytes of standard string constants (same
//! lengths, same places: every token sits at the same byte offset, which
//! lets one rewrite of the text serve every text of a shape), so both parsers read them as the same
//! statement with different constant values. An analysis may be reused
//! across a shape only if it never looked at a constant's value
//! ([`super::Analysis::literal_free`]): column positions (`ORDER BY 2`),
//! settings and COPY options do, and are cached by exact text alone.
//!
//! Everything else is kept verbatim: identifiers (with their digits),
//! quoted identifiers, comments, `$n` parameters, operators, and string
//! constants with a prefix (`E''`, `B''`, `X''`, `U&''`) or a backslash.

use super::lexcheck::skip_quoted;

/// The shape of `sql`, or `None` when it has no literal to blank out or
/// when its lexing is anything but plain (an unterminated string or
/// comment, a dollar quote): such text is only cached exactly.
pub fn shape(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut blanked = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                let end = skip_quoted(b, i, b'\'')?;
                let prefixed = i > 0 && (is_ident_byte(b[i - 1]) || b[i - 1] == b'&');
                let body = &b[i + 1..end - 1];
                if prefixed || body.contains(&b'\\') {
                    out.extend_from_slice(&b[i..end]);
                } else {
                    // Same length: the tokens of texts of one shape sit
                    // at the same offsets, so one rewrite serves them all.
                    out.push(b'\'');
                    out.extend(std::iter::repeat_n(b'?', body.len()));
                    out.push(b'\'');
                    blanked = true;
                }
                i = end;
            }
            b'"' => {
                let end = skip_quoted(b, i, b'"')?;
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let rest = &b[i + 2..];
                let close = rest.windows(2).position(|w| w == b"*/")?;
                if rest[..close].windows(2).any(|w| w == b"/*") {
                    return None;
                }
                let end = i + 2 + close + 2;
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'$' => {
                // `$n` parameters only; anything else is a dollar quote.
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                out.extend_from_slice(&b[i..i + 1 + digits]);
                i += 1 + digits;
            }
            b'0'..=b'9' => {
                while i < b.len() && b[i].is_ascii_digit() {
                    out.push(b'0');
                    i += 1;
                }
                blanked = true;
            }
            c if is_ident_start(c) => {
                let end = b[i..]
                    .iter()
                    .position(|&c| !is_ident_byte(c))
                    .map_or(b.len(), |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if !blanked {
        return None;
    }
    // Only whole UTF-8 sequences were copied or replaced by ASCII.
    String::from_utf8(out).ok()
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// Identifier characters, `$` included so `a$1` stays one token (the
/// lexical checks refuse it anyway).
fn is_ident_byte(c: u8) -> bool {
    super::lexcheck::is_ident_byte(c) || c == b'$'
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn literals_are_blanked_and_the_rest_kept() {
        assert_eq!(
            shape("SELECT name FROM customers WHERE id = 17").as_deref(),
            Some("SELECT name FROM customers WHERE id = 00")
        );
        assert_eq!(
            shape("SELECT name FROM customers WHERE id = 42"),
            shape("SELECT name FROM customers WHERE id = 17")
        );
        assert_eq!(
            shape("select 1 from t where a = 'it''s' and b = 'x'").as_deref(),
            Some("select 0 from t where a = '?????' and b = '?'")
        );
        // Lengths of numbers stay distinct; identifiers keep their digits.
        assert_ne!(
            shape("select c1 from t limit 5"),
            shape("select c2 from t limit 5")
        );
        assert_ne!(shape("select 1"), shape("select 10"));
        assert_eq!(
            shape("select t1.a from t1 where $1 = 5").as_deref(),
            Some("select t1.a from t1 where $1 = 0")
        );
    }

    #[test]
    fn quoted_parts_comments_and_prefixed_strings_stay() {
        assert_eq!(
            shape("select \"a1\" from t -- 12 'x'\n where b = E'7' and c = 3 /* 9 */").as_deref(),
            Some("select \"a1\" from t -- 12 'x'\n where b = E'7' and c = 0 /* 9 */")
        );
        assert_eq!(
            shape("select 'a\\b' where x = 1").as_deref(),
            Some("select 'a\\b' where x = 0")
        );
        assert_eq!(
            shape("select U&'d' , 2").as_deref(),
            Some("select U&'d' , 0")
        );
        // Nothing to blank, or not plain: no shape.
        assert_eq!(shape("select a from t"), None);
        assert_eq!(shape("select 'open"), None);
        assert_eq!(shape("select $$x$$, 1"), None);
        assert_eq!(shape("select /* a /* b */ */ 1"), None);
        assert_eq!(
            shape("select '客户' , 1").as_deref(),
            Some("select '??????' , 0")
        );
    }
}
