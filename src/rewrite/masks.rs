//! The SQL form of each mask: an expression over a column's text that the
//! server evaluates to exactly what [`crate::masking::mask`] computes.
//! `tests/masks_sql.rs` checks the two against a real server.

use super::quote_literal;
use crate::policy::MaskSpec;

/// `keep(v, first, last, fill)` in SQL: the first and last characters
/// kept, the rest replaced by `fill`, everything hidden when the value is
/// too short. `v` must not be NULL (callers guard it).
fn keep(v: &str, first: usize, last: usize, fill: char) -> String {
    let fill = quote_literal(&fill.to_string());
    let both = first + last;
    format!(
        "CASE WHEN char_length({v}) <= {both} THEN repeat({fill}, greatest(char_length({v}), 1)) \
         ELSE left({v}, {first}) || repeat({fill}, char_length({v}) - {both}) || right({v}, {last}) END"
    )
}

/// `keep` for a value known to be longer than `first + last`.
fn keep_long(v: &str, first: usize, last: usize) -> String {
    format!(
        "left({v}, {first}) || repeat('*', char_length({v}) - {}) || right({v}, {last})",
        first + last
    )
}

fn stars(v: &str) -> String {
    format!("repeat('*', greatest(char_length({v}), 1))")
}

/// Province and city of a Chinese address (see the Rust mask): the
/// shortest prefix ending in a province marker, then in a city marker.
fn address(v: &str) -> String {
    const PROVINCE: &str = "(?:特别行政区|自治区|省)";
    const CITY: &str = "(?:自治州|地区|市|盟)";
    let province = format!("substring({v} from '^(.*?{PROVINCE})')");
    let city = format!("substring({v} from '^(.*?{PROVINCE}.*?{CITY})')");
    let municipality = format!("substring({v} from '^(.*?市)')");
    let kept = format!(
        "(CASE WHEN {province} IS NOT NULL THEN coalesce({city}, {province}) ELSE {municipality} END)"
    );
    format!(
        "CASE WHEN {kept} IS NULL THEN '****' WHEN {kept} = {v} THEN {v} ELSE {kept} || '****' END"
    )
}

/// Email: first character of the mailbox and the domain.
fn email(v: &str) -> String {
    format!(
        "CASE WHEN strpos({v}, '@') = 0 OR char_length({v}) = strpos(reverse({v}), '@') THEN '***' \
         ELSE left({v}, 1) || '***@' || right({v}, strpos(reverse({v}), '@') - 1) END"
    )
}

/// The mask of `column` (an SQL expression of any type) as a text
/// expression; NULL stays NULL.
pub fn mask_sql(spec: &MaskSpec, column: &str) -> String {
    let v = format!("({column})::text");
    let v = v.as_str();
    let body = match spec {
        MaskSpec::Builtin(kind) => match *kind {
            "phone" => format!(
                "CASE WHEN char_length({v}) >= 8 THEN {} ELSE {} END",
                keep_long(v, 3, 4),
                keep(v, 0, 2, '*')
            ),
            "person_name" => format!(
                "CASE WHEN char_length({v}) <= 1 THEN '*' ELSE {} END",
                keep_long(v, 1, 0)
            ),
            "id_card" => format!(
                "CASE WHEN char_length({v}) > 10 THEN {} ELSE {} END",
                keep_long(v, 6, 4),
                stars(v)
            ),
            "bank_card" => format!(
                "CASE WHEN char_length({v}) > 10 THEN {} ELSE {} END",
                keep_long(v, 6, 4),
                keep(v, 0, 4, '*')
            ),
            "email" => email(v),
            "address" => address(v),
            _ => "'[redacted]'".to_string(),
        },
        MaskSpec::Keep { first, last, fill } => keep(v, *first, *last, *fill),
        MaskSpec::Replace(r) => quote_literal(r),
    };
    format!("(CASE WHEN {v} IS NULL THEN NULL ELSE {body} END)")
}

/// What a value derived from classified columns inside a view becomes.
pub const REDACTED_SQL: &str = "'[redacted]'::text";
