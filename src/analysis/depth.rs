//! A bound on how deep a statement's syntax tree can be, checked on its
//! tokens before it is parsed.
//!
//! The parser's recursion limit bounds nesting (parentheses, subqueries),
//! but a chain of infix operators (`1+1+1+...`, `a AND b AND ...`, `x::t::t`,
//! `UNION` after `UNION`) is parsed in a loop into a tree as deep as the
//! chain is long, and everything that walks the tree afterwards (the
//! analysis, dropping it) recurses once per level. A few kilobytes of
//! `+1` would exhaust a thread's stack. So each keyword and operator token
//! counts one level in the parenthesised group it sits in (a comma starts
//! a new expression), the levels of the enclosing groups add up, and a
//! text whose count passes [`MAX_DEPTH`] is not analysed.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Deepest operator chain analysed; far beyond hand-written SQL.
pub const MAX_DEPTH: usize = 400;

/// The estimated depth of `sql`, or `None` when it does not tokenize (the
/// parser reports that).
pub fn estimate(sql: &str) -> Option<usize> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    // Operators counted in each open group, outermost first.
    let mut groups: Vec<usize> = vec![0];
    let mut sum = 0;
    let mut max = 0;
    for t in &tokens {
        match t {
            Token::LParen | Token::LBracket => groups.push(0),
            Token::RParen | Token::RBracket if groups.len() > 1 => {
                sum -= groups.pop().unwrap_or(0);
            }
            Token::Comma | Token::SemiColon => {
                let top = groups.last_mut().expect("one group at least");
                sum -= *top;
                *top = 0;
            }
            t if chains(t) => {
                *groups.last_mut().expect("one group at least") += 1;
                sum += 1;
                max = max.max(sum + groups.len());
            }
            _ => {}
        }
    }
    Some(max)
}

/// A token that may join two expressions (or queries) into one, or
/// follow one as a postfix operator: every keyword and every symbol
/// (a list of the operators would miss those the parser learns next:
/// `XOR`, `OVERLAPS`, `NOTNULL`, ...). Identifiers, literals, parameters,
/// names' dots and brackets are not counted.
fn chains(t: &Token) -> bool {
    match t {
        Token::Word(w) => w.quote_style.is_none() && w.keyword != Keyword::NoKeyword,
        Token::Whitespace(_)
        | Token::EOF
        | Token::Number(..)
        | Token::Char(_)
        | Token::Period
        | Token::LBrace
        | Token::RBrace
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_) => false,
        // Every symbol left is an operator.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_count_and_lists_do_not() {
        let chain = format!("SELECT {}", vec!["1"; 3000].join("+"));
        assert!(estimate(&chain).unwrap() > 2000);
        let ands = (0..300)
            .map(|i| format!("c{i} = {i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        assert!(estimate(&format!("SELECT 1 FROM t WHERE {ands}")).unwrap() > MAX_DEPTH);
        // Long lists are not deep.
        let list = (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(estimate(&format!("SELECT a FROM t WHERE a IN ({list})")).unwrap() < 10);
        let items = (0..2000)
            .map(|i| format!("a + {i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(estimate(&format!("SELECT {items} FROM t")).unwrap() < 10);
        let unions = vec!["SELECT 1"; 1000].join(" UNION ");
        assert!(estimate(&unions).unwrap() > MAX_DEPTH);
        for op in ["XOR", "OVERLAPS", "REGEXP", "NOTNULL", "IS NULL"] {
            let chain = format!("SELECT 1 WHERE true {}", vec![op; 500].join(" true "));
            assert!(estimate(&chain).unwrap() > MAX_DEPTH, "{op}");
        }
        // A statement as an application writes it stays far below.
        let q = "SELECT c.id, c.name FROM customers c JOIN shipments s ON s.customer_id = c.id \
                 WHERE c.city = 'x' AND s.status IS NOT NULL AND c.id BETWEEN 1 AND 9 \
                 ORDER BY c.id DESC LIMIT 10";
        assert!(estimate(q).unwrap() < 40);
        // Nested groups add up.
        assert_eq!(estimate("SELECT (1 + (2 + 3))").unwrap(), 6);
    }
}
