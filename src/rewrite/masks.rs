//! The SQL form of each mask: an expression over a column's text that the
//! server evaluates to exactly what [`crate::masking::mask`] computes.
//! `tests/noninterference.rs` (`sql_masks_agree_with_the_masks`) checks
//! the two against a real server.
//!
//! The server parses and plans these for every statement of the simple
//! protocol, so they are written with as few function calls as will do:
//! `overlay` hides the middle of a value in one call.

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
         ELSE {} END",
        hide_middle(v, first, last, &fill)
    )
}

/// `keep` for a value known to be longer than `first + last`: the
/// characters between them replaced, one fill character each.
fn keep_long(v: &str, first: usize, last: usize) -> String {
    hide_middle(v, first, last, "'*'")
}

fn hide_middle(v: &str, first: usize, last: usize, fill: &str) -> String {
    format!(
        "overlay({v} placing repeat({fill}, char_length({v}) - {}) from {})",
        first + last,
        first + 1
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

/// The mask of `column` (an SQL expression; `text`: it is of type text or
/// varchar already) as a text expression; NULL stays NULL.
pub fn mask_sql(spec: &MaskSpec, column: &str, text: bool) -> String {
    let v = if text {
        column.to_string()
    } else {
        format!("({column})::text")
    };
    let v = v.as_str();
    // Masks whose every branch turns NULL into NULL need no guard; the
    // others would give a constant for it.
    let guard = !matches!(
        spec,
        MaskSpec::Builtin("phone" | "person_name" | "bank_card" | "email") | MaskSpec::Keep { .. }
    );
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
    if guard {
        format!("(CASE WHEN {v} IS NULL THEN NULL ELSE {body} END)")
    } else {
        format!("({body})")
    }
}

/// What a value derived from classified columns inside a view becomes.
pub const REDACTED_SQL: &str = "'[redacted]'::text";
