//! Masks by kind: what a `mask` role sees of a value.
//!
//! Masks work on characters, not bytes, so Chinese text is masked by
//! character. Each keeps at most the part the contract allows and never
//! reveals the length of long hidden parts beyond what the format implies.

use crate::policy::MaskSpec;

/// A run of `n` mask characters.
fn stars(n: usize, fill: char) -> String {
    std::iter::repeat_n(fill, n).collect()
}

/// Keep the first `first` and last `last` characters; hide the rest. When
/// the value is too short to hide anything that way, hide all of it.
pub fn keep(value: &str, first: usize, last: usize, fill: char) -> String {
    let n = value.chars().count();
    if n <= first + last {
        return stars(n.max(1), fill);
    }
    // Byte offsets of the first hidden and the first kept-at-the-end
    // character: one string built in place, no list of characters.
    let at = |k: usize| value.char_indices().nth(k).map_or(value.len(), |(i, _)| i);
    let (head, tail) = (at(first), at(n - last));
    let hidden = n - first - last;
    let mut out = String::with_capacity(head + hidden * fill.len_utf8() + value.len() - tail);
    out.push_str(&value[..head]);
    out.extend(std::iter::repeat_n(fill, hidden));
    out.push_str(&value[tail..]);
    out
}

/// Phone: `13812345678` -> `138****5678`.
fn phone(v: &str) -> String {
    if v.chars().count() >= 8 {
        keep(v, 3, 4, '*')
    } else {
        keep(v, 0, 2, '*')
    }
}

/// Person name: family name kept, `张伟` -> `张*`, `欧阳娜娜` -> `欧***`.
fn person_name(v: &str) -> String {
    let n = v.chars().count();
    if n <= 1 {
        "*".to_string()
    } else {
        keep(v, 1, 0, '*')
    }
}

/// ID number: region (6) and last four kept, birth date hidden.
fn id_card(v: &str) -> String {
    if v.chars().count() > 10 {
        keep(v, 6, 4, '*')
    } else {
        stars(v.chars().count().max(1), '*')
    }
}

/// Bank card: issuer prefix (6) and last four kept.
fn bank_card(v: &str) -> String {
    if v.chars().count() > 10 {
        keep(v, 6, 4, '*')
    } else {
        keep(v, 0, 4, '*')
    }
}

/// Email: first character of the mailbox and the domain kept.
fn email(v: &str) -> String {
    match v.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        _ => "***".to_string(),
    }
}

/// Address: province and city kept, the rest hidden.
/// `广东省深圳市南山区...` -> `广东省深圳市****`; `北京市朝阳区...` -> `北京市****`.
fn address(v: &str) -> String {
    const PROVINCE: [&str; 3] = ["特别行政区", "自治区", "省"];
    const CITY: [&str; 4] = ["自治州", "地区", "市", "盟"];
    let find_after = |from: usize, markers: &[&str]| {
        markers
            .iter()
            .filter_map(|m| v[from..].find(m).map(|i| from + i + m.len()))
            .min()
    };
    let province_end = find_after(0, &PROVINCE);
    let keep_to = match province_end {
        Some(p) => find_after(p, &CITY).or(Some(p)),
        // Municipalities (北京市, 上海市, ...) have no province level.
        None => find_after(0, &["市"]),
    };
    match keep_to {
        Some(end) if end < v.len() => format!("{}****", &v[..end]),
        Some(_) => v.to_string(),
        None => "****".to_string(),
    }
}

/// The mask of `value` for a kind masked by `spec`.
pub fn mask(spec: &MaskSpec, value: &str) -> String {
    match spec {
        MaskSpec::Builtin(kind) => match *kind {
            "phone" => phone(value),
            "person_name" => person_name(value),
            "id_card" => id_card(value),
            "bank_card" => bank_card(value),
            "email" => email(value),
            "address" => address(value),
            // credit_report and anything unknown: fully redacted.
            _ => "[redacted]".to_string(),
        },
        MaskSpec::Keep { first, last, fill } => keep(value, *first, *last, *fill),
        MaskSpec::Replace(r) => r.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(kind: &'static str, v: &str) -> String {
        mask(&MaskSpec::Builtin(kind), v)
    }

    #[test]
    fn keep_matches_the_character_by_character_rule() {
        let reference = |v: &str, first: usize, last: usize, fill: char| -> String {
            let chars: Vec<char> = v.chars().collect();
            let n = chars.len();
            if n <= first + last {
                return std::iter::repeat_n(fill, n.max(1)).collect();
            }
            chars[..first]
                .iter()
                .copied()
                .chain(std::iter::repeat_n(fill, n - first - last))
                .chain(chars[n - last..].iter().copied())
                .collect()
        };
        for v in [
            "",
            "a",
            "张",
            "ab",
            "张伟",
            "欧阳娜娜",
            "13812345678",
            "a😀b张c",
            "北京市海淀区中关村大街1号",
        ] {
            for first in 0..4 {
                for last in 0..4 {
                    for fill in ['*', '某'] {
                        assert_eq!(
                            keep(v, first, last, fill),
                            reference(v, first, last, fill),
                            "{v:?} {first} {last} {fill}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn contract_examples() {
        assert_eq!(b("phone", "13812345678"), "138****5678");
        assert_eq!(b("person_name", "张伟"), "张*");
        assert_eq!(b("person_name", "欧阳娜娜"), "欧***");
        assert_eq!(b("id_card", "11010519491231002X"), "110105********002X");
        assert_eq!(
            b("address", "广东省深圳市南山区科技园路1号"),
            "广东省深圳市****"
        );
        assert_eq!(b("address", "北京市朝阳区建国路88号"), "北京市****");
        assert_eq!(
            b("address", "新疆维吾尔自治区乌鲁木齐市天山区"),
            "新疆维吾尔自治区乌鲁木齐市****"
        );
        assert_eq!(b("email", "zhang.wei@example.cn"), "z***@example.cn");
        assert_eq!(b("bank_card", "6222021234567890123"), "622202*********0123");
        assert_eq!(b("credit_report", "{\"score\": 700}"), "[redacted]");
    }

    #[test]
    fn short_and_odd_values_hide_everything_they_must() {
        assert_eq!(b("phone", "110"), "*10");
        assert_eq!(b("person_name", "李"), "*");
        assert_eq!(b("id_card", "1234"), "****");
        assert_eq!(b("address", "somewhere"), "****");
        assert_eq!(b("email", "not-an-email"), "***");
        assert_eq!(keep("ab", 2, 2, '#'), "##");
        assert_eq!(keep("", 1, 1, '*'), "*");
    }

    #[test]
    fn custom_masks() {
        assert_eq!(
            mask(
                &MaskSpec::Keep {
                    first: 2,
                    last: 1,
                    fill: '*'
                },
                "京A12345"
            ),
            "京A****5"
        );
        assert_eq!(
            mask(&MaskSpec::Replace("[hidden]".into()), "9000"),
            "[hidden]"
        );
    }
}
