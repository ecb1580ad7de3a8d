//! Refuse SQL text that PostgreSQL's lexer and sqlparser's could read
//! differently, before parsing it.
//!
//! If the two disagree about where a comment, string or identifier ends,
//! the analyser would reason about a different statement than the server
//! runs. Rather than imitate every corner of PostgreSQL's lexer, pgwarden
//! refuses, for restricted roles, the constructs where they are known or
//! likely to diverge: backslashes outside string constants and in `E''`
//! escape strings other than the letter escapes `\n`, `\t`, `\r`, `\b`,
//! `\f` (sessions with `standard_conforming_strings` off are refused
//! elsewhere),
//! dollar signs outside `$1` parameters (dollar quotes, `$` in identifiers),
//! `U&` Unicode escapes, nested block comments, strings continued across a
//! newline, carriage returns not followed by a newline (they end a `--`
//! comment for PostgreSQL only), and whitespace or control characters
//! PostgreSQL does not treat as whitespace.

use super::Refusal;

fn refuse(what: &str) -> Refusal {
    Refusal::new(format!(
        "pgwarden refuses {what} for restricted roles: PostgreSQL and pgwarden's \
         parser could read the statement differently"
    ))
}

/// Whether the backslashes of an `E''` string (quotes included) are only
/// the letter escapes `\n`, `\t`, `\r`, `\b` and `\f`, as psql's own
/// catalog queries use (`array_to_string(datacl, E'\n')`): neither lexer
/// can take them for the end of the string.
fn plain_escapes(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            if !matches!(s.get(i + 1), Some(b'n' | b't' | b'r' | b'b' | b'f')) {
                return false;
            }
            i += 1;
        }
        i += 1;
    }
    true
}

/// Check `sql`; `Ok` when nothing ambiguous was found.
pub fn check(sql: &str) -> Result<(), Refusal> {
    let b = sql.as_bytes();
    let mut i = 0;
    // End of the last string literal, for the continuation rule.
    let mut last_string_end: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => return Err(refuse("backslashes")),
            b'\r' if b.get(i + 1) != Some(&b'\n') => {
                return Err(refuse("a carriage return without a newline"));
            }
            b'$' => {
                if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return Err(refuse("dollar quoting and `$` in identifiers"));
                }
                // `a$1` is an identifier for PostgreSQL.
                if i > 0 && is_ident_byte(b[i - 1]) {
                    return Err(refuse("`$` in identifiers"));
                }
                i += 1;
            }
            b'\'' => {
                if let Some(end) = last_string_end {
                    // Only whitespace and comments since that string.
                    if sql[end..i].contains('\n') {
                        return Err(refuse("string constants continued across lines"));
                    }
                }
                if i > 0 && matches!(b[i - 1], b'&') && i > 1 && matches!(b[i - 2], b'U' | b'u') {
                    return Err(refuse("U& Unicode escapes"));
                }
                let start = i;
                i = skip_quoted(b, i, b'\'').ok_or_else(|| refuse("an unterminated string"))?;
                // E'...' strings give backslashes a meaning of their own.
                let escape = start > 0
                    && matches!(b[start - 1], b'E' | b'e')
                    && (start < 2 || !is_ident_byte(b[start - 2]));
                if escape && !plain_escapes(&b[start..i]) {
                    return Err(refuse("backslash escapes"));
                }
                last_string_end = Some(i);
                continue;
            }
            b'"' => {
                if i > 1 && b[i - 1] == b'&' && matches!(b[i - 2], b'U' | b'u') {
                    return Err(refuse("U& Unicode escapes"));
                }
                i = skip_quoted(b, i, b'"')
                    .ok_or_else(|| refuse("an unterminated quoted identifier"))?;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    if b[i] == b'\r' && b.get(i + 1) != Some(&b'\n') {
                        return Err(refuse("a carriage return without a newline"));
                    }
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let rest = &sql[i + 2..];
                let end = rest
                    .find("*/")
                    .ok_or_else(|| refuse("an unterminated comment"))?;
                if rest[..end].contains("/*") {
                    return Err(refuse("nested comments"));
                }
                check_chars(&rest[..end])?;
                i += 2 + end + 2;
                continue;
            }
            0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f => {
                return Err(refuse("control characters"));
            }
            0x80..=0xff => {
                // Multi-byte UTF-8: refuse what Rust calls whitespace but
                // PostgreSQL takes for part of an identifier.
                let ch = sql[i..].chars().next().unwrap_or('\u{0}');
                if ch.is_whitespace() || ch.is_control() {
                    return Err(refuse("non-ASCII whitespace"));
                }
                i += ch.len_utf8();
                continue;
            }
            _ => {}
        }
        if !c.is_ascii_whitespace() {
            last_string_end = None;
        }
        i += 1;
    }
    Ok(())
}

pub(super) fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Skip a quoted string or identifier starting at `start` (a quote),
/// with doubled quotes inside; the index after the closing quote.
pub(super) fn skip_quoted(b: &[u8], start: usize, q: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Characters inside a comment: the same control-character rules.
fn check_chars(s: &str) -> Result<(), Refusal> {
    for ch in s.chars() {
        if (ch.is_control() && !matches!(ch, '\t' | '\n' | '\r'))
            || (!ch.is_ascii() && ch.is_whitespace())
        {
            return Err(refuse("control characters or non-ASCII whitespace"));
        }
    }
    Ok(())
}
