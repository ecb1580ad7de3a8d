//! A rewrite with the statement's constants as bind parameters, for a
//! server-side prepared statement (see `session::server_prepared`).

use super::Rewrite;
use crate::analysis::literals::{Literal, value};
use std::borrow::Cow;

/// The `int4` type, for integer constants; string constants are sent
/// with no type, for the server to infer from their place.
const INT4: u32 = 23;

/// The prepared form of one text.
#[derive(Debug, PartialEq, Eq)]
pub struct Parameterized<'s> {
    /// The rewritten text with `$n` in place of the constants: the same
    /// for every text of a shape whose constants all became parameters.
    pub text: String,
    pub values: Vec<Cow<'s, str>>,
    pub type_oids: Vec<u32>,
}

/// `sql` (a text of the shape `literals` were found in) rewritten with
/// `$1`, `$2`, ... in place of its constants. A constant stays written
/// where this text's value needs it (see [`value`]) or where `$n` is
/// longer than the constant: the text is padded with spaces, so the
/// rewrite's byte ranges still hold.
pub fn parameterize<'s>(
    sql: &'s str,
    literals: &[Literal],
    rewrite: &Rewrite,
) -> Option<Parameterized<'s>> {
    let mut padded = sql.to_string();
    let mut values = Vec::new();
    let mut type_oids = Vec::new();
    for lit in literals {
        let Some(v) = value(sql, lit) else { continue };
        let placeholder = format!("${}", values.len() + 1);
        let len = lit.range.len();
        if placeholder.len() > len {
            continue;
        }
        padded.replace_range(
            lit.range.clone(),
            &format!("{placeholder}{}", " ".repeat(len - placeholder.len())),
        );
        values.push(v);
        type_oids.push(if lit.int { INT4 } else { 0 });
    }
    Some(Parameterized {
        text: rewrite.apply(&padded)?,
        values,
        type_oids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{Edit, Segment};

    #[test]
    fn constants_become_parameters_in_place() {
        let sql = "SELECT a FROM t WHERE b = 'x''y' AND c = 42 AND d = 7";
        let lits: Vec<Literal> = ["'x''y'", "42", "7"]
            .iter()
            .map(|t| {
                let start = sql.find(t).unwrap();
                Literal {
                    range: start..start + t.len(),
                    int: !t.starts_with('\''),
                }
            })
            .collect();
        let t = sql.find(" t ").unwrap() + 1;
        let r = Rewrite::from_edits(
            vec![Edit {
                range: t..t + 1,
                with: vec![Segment::Text("(SELECT a FROM u) AS t".into())],
            }],
            sql.len(),
        )
        .unwrap();
        let p = parameterize(sql, &lits, &r).unwrap();
        // `7` is shorter than `$3` and stays.
        assert_eq!(
            p.text,
            "SELECT a FROM (SELECT a FROM u) AS t WHERE b = $1     AND c = $2 AND d = 7"
        );
        assert_eq!(p.values, vec!["x'y", "42"]);
        assert_eq!(p.type_oids, vec![0, 23]);
        // Another text of the shape prepares to the same statement.
        let other = "SELECT a FROM t WHERE b = 'zzzz' AND c = 17 AND d = 8";
        let q = parameterize(other, &lits, &r).unwrap();
        assert_eq!(q.text.replace(" 8", " 7"), p.text);
        assert_eq!(q.values, vec!["zzzz", "17"]);
    }
}
