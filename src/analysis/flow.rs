//! Data flow of one value: which classified columns it comes from, and
//! whether it is one of them as stored (bare) or computed from them.

use super::ColumnAction;
use crate::policy::{Action, Policy, QualifiedTable};
use std::collections::BTreeSet;

/// A classified column whose action for the role is not `allow`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    pub table: QualifiedTable,
    pub column: String,
    pub kind: String,
    pub action: Action,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{} ({}: {})",
            self.table, self.column, self.kind, self.action
        )
    }
}

/// Where a value comes from. A flow without `sources` carries no raw
/// classified value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    /// Classified columns whose stored values reach this one raw: hashed
    /// (pgwarden pseudonymises them on the way out), denied, or masked
    /// columns of a table the statement writes. The analysis keeps these
    /// to a short list of positions.
    pub sources: BTreeSet<Source>,
    /// Classified columns that reach this value only through the server's
    /// evaluation of their mask (the relation was rewritten): whatever is
    /// computed from them shows nothing the mask does not. Kept for the
    /// audit trail and the volume limits.
    pub masked: BTreeSet<Source>,
    /// Computed from the sources rather than one of them as stored.
    pub derived: bool,
}

impl Flow {
    pub fn source(s: Source) -> Flow {
        Flow {
            sources: BTreeSet::from([s]),
            ..Flow::default()
        }
    }

    /// A column the server masks.
    pub fn masked(s: Source) -> Flow {
        Flow {
            masked: BTreeSet::from([s]),
            ..Flow::default()
        }
    }

    /// A masked column as the relation's rewrite delivers it, not computed
    /// upon: the target of an equality lookup.
    pub fn is_bare_masked(&self) -> bool {
        !self.derived && self.sources.is_empty() && self.masked.len() == 1
    }

    /// This value as a rewritten relation delivers it: every source masked
    /// by the server (`derived`: computed from them inside a view).
    pub fn server_masked(self, derived: bool) -> Flow {
        Flow {
            masked: self.sources.into_iter().chain(self.masked).collect(),
            derived,
            ..Flow::default()
        }
    }

    /// Every classified column this value comes from, raw or masked.
    pub fn all_sources(&self) -> impl Iterator<Item = &Source> {
        self.sources.iter().chain(&self.masked)
    }

    pub fn is_clean(&self) -> bool {
        self.sources.is_empty()
    }

    /// A stored value of classified columns of one kind, unmodified.
    pub fn is_bare(&self) -> bool {
        !self.derived && !self.sources.is_empty() && self.single_kind().is_some()
    }

    fn single_kind(&self) -> Option<&str> {
        let mut kinds = self.sources.iter().map(|s| s.kind.as_str());
        let first = kinds.next()?;
        kinds.all(|k| k == first).then_some(first)
    }

    /// Add another flow that may supply this value unmodified (UNION
    /// branches, CASE results are not: use [`Flow::join`] for those).
    pub fn merge(&mut self, other: Flow) {
        self.derived |= other.derived;
        self.sources.extend(other.sources);
        self.masked.extend(other.masked);
    }

    /// Another branch's value in the same column (a set operation, a row
    /// of VALUES): raw classified values mixed with anything but values
    /// of their own kind as stored are computed from them, or a UNION
    /// with literals would pseudonymise values of the client's choice.
    pub fn union(&mut self, other: Flow) {
        let raw = |f: &Flow| {
            f.sources
                .iter()
                .map(|s| s.kind.clone())
                .collect::<BTreeSet<_>>()
        };
        let mixed = raw(self) != raw(&other);
        self.merge(other);
        if mixed && !self.sources.is_empty() {
            self.derived = true;
        }
    }

    /// A value computed from this one and `other`.
    pub fn join(mut self, other: Flow) -> Flow {
        self.merge(other);
        self.derive()
    }

    /// A value computed from this one.
    pub fn derive(mut self) -> Flow {
        if !self.sources.is_empty() || !self.masked.is_empty() {
            self.derived = true;
        }
        self
    }

    /// The first source denied to the role, if any.
    pub fn denied(&self) -> Option<&Source> {
        self.sources.iter().find(|s| s.action == Action::Deny)
    }

    /// The first source, for messages.
    pub fn first(&self) -> Option<&Source> {
        self.sources.iter().next()
    }

    /// What the result-rewriting stage does with a value of this flow.
    ///
    /// Bare values get their kind's mask or pseudonym. Derived values are
    /// redacted whether the role masks or hashes: a pseudonym of a derived
    /// value (`phone LIKE '138%'`, `substr(phone, 1, 4)`) sorts values into
    /// classes that can be walked back to the hidden value, so only stored
    /// values are pseudonymised.
    pub fn action(&self, policy: &Policy) -> ColumnAction {
        if self.sources.is_empty() {
            return ColumnAction::Pass;
        }
        if self.is_bare() {
            let s = self.first().expect("non-empty");
            match s.action {
                Action::Allow => return ColumnAction::Pass,
                Action::Hash => return ColumnAction::Hash,
                Action::Mask => {
                    if let Some(def) = policy.kinds.get(&s.kind) {
                        return ColumnAction::Mask {
                            kind: s.kind.clone(),
                            spec: def.mask.clone(),
                        };
                    }
                }
                Action::Deny => {}
            }
        }
        ColumnAction::Redact
    }
}
