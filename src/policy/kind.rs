//! Kinds of personal data, the actions a role may have on each, and masks.

use std::fmt;

/// Kinds every policy knows without declaring them.
pub const BUILTIN_KINDS: &[&str] = &[
    "person_name",
    "phone",
    "id_card",
    "address",
    "email",
    "bank_card",
    "credit_report",
];

/// What a role gets for a kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    Mask,
    Hash,
    Deny,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "allow" => Action::Allow,
            "mask" => Action::Mask,
            "hash" => Action::Hash,
            "deny" => Action::Deny,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Mask => "mask",
            Action::Hash => "hash",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a kind's values are masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskSpec {
    /// The built-in mask of a built-in kind (phone `138****5678`, ...).
    Builtin(&'static str),
    /// Keep the first and last characters, replace the rest with `fill`.
    Keep {
        first: usize,
        last: usize,
        fill: char,
    },
    /// Replace the whole value.
    Replace(String),
}

/// A kind of data and its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindDef {
    pub name: String,
    pub mask: MaskSpec,
}

impl KindDef {
    pub fn builtin(name: &'static str) -> KindDef {
        KindDef {
            name: name.to_string(),
            mask: MaskSpec::Builtin(name),
        }
    }
}
