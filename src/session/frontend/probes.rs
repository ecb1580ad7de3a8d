//! The values a restricted statement's equality lookups compare
//! classified columns with: at most [`MAX_LOOKUP_VALUES`] per statement,
//! and each distinct one counted against the role's `lookups_per_hour`
//! before the statement reaches the server.

use super::Inspector;
use crate::analysis::{Analysis, MAX_LOOKUP_VALUES, Probe, Probed, Refusal, constant};
use crate::frontend::extended::{Bind, array_elements};
use crate::limits::lookups::Probe as Counted;
use std::borrow::Cow;

/// A probed value as read: its kind and bytes, or `None` when it cannot
/// be read before the statement runs.
type Read<'v> = (&'v str, Option<Cow<'v, [u8]>>);

/// The values of `probes`: constants read from `sql`, parameters from
/// `bind` (none in a simple Query). NULLs probe nothing.
fn read<'v>(probes: &'v [Probe], sql: &'v str, bind: Option<&Bind<'v>>, out: &mut Vec<Read<'v>>) {
    let param = |n: usize| -> Option<(Option<&'v [u8]>, bool)> {
        let b = bind?;
        let i = n.checked_sub(1)?;
        Some((b.params().nth(i)?, b.param_format(i) == 1))
    };
    for p in probes {
        let kind = p.kind.as_str();
        let mut array = |value: Option<&'v [u8]>, binary: bool| match value {
            None => {}
            Some(v) => match array_elements(v, binary) {
                Some(elements) => {
                    out.extend(elements.into_iter().flatten().map(|e| (kind, Some(e))));
                }
                None => out.push((kind, None)),
            },
        };
        match &p.value {
            Probed::Const(r) => {
                out.push((kind, sql.get(r.clone()).map(|t| cow_bytes(constant(t)))))
            }
            Probed::ConstArray(r) => {
                let text = sql.get(r.clone()).map(constant);
                let elements = text
                    .as_deref()
                    .and_then(|t| array_elements(t.as_bytes(), false));
                match elements {
                    Some(elements) => out.extend(
                        elements
                            .into_iter()
                            .flatten()
                            .map(|e| (kind, Some(Cow::Owned(e.into_owned())))),
                    ),
                    // Unreadable: as many new lookups as the size check
                    // counted values, never fewer.
                    None => {
                        let n = text.as_deref().map_or(1, |t| t.matches(',').count() + 1);
                        out.extend(std::iter::repeat_n((kind, None), n));
                    }
                }
            }
            Probed::Param(n) => match param(*n) {
                Some((None, _)) => {}
                Some((Some(v), _)) => out.push((kind, Some(Cow::Borrowed(v)))),
                None => out.push((kind, None)),
            },
            Probed::ParamArray(n) => match param(*n) {
                Some((v, binary)) => array(v, binary),
                None => out.push((kind, None)),
            },
            Probed::Unknown => out.push((kind, None)),
        }
    }
}

fn cow_bytes(c: Cow<'_, str>) -> Cow<'_, [u8]> {
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

impl Inspector<'_> {
    /// Count what `values` probe against the role's `lookups_per_hour`.
    fn count_lookups(&self, values: &[Read<'_>]) -> Result<(), Refusal> {
        let policy = self.ctx.policy.current();
        let role = policy.role_of(&self.info.user);
        let probes = values.iter().map(|(kind, v)| match v {
            Some(v) => Counted::Value(kind, v),
            None => Counted::Unknown,
        });
        self.ctx
            .limiter
            .lookups(role, self.info, probes)
            .map_err(Refusal::new)
    }

    /// Whether the role counts lookups at all.
    fn counts_lookups(&self) -> bool {
        let policy = self.ctx.policy.current();
        policy
            .role_of(&self.info.user)
            .limits
            .lookups_per_hour
            .is_some()
    }

    /// The lookups of a simple Query (`sql`, analysed as `a`).
    pub(super) fn query_lookups(&self, a: &Analysis, sql: &str) -> Result<(), Refusal> {
        if a.statements.iter().all(|s| s.probes.is_empty()) || !self.counts_lookups() {
            return Ok(());
        }
        let mut values = Vec::new();
        for s in &a.statements {
            read(&s.probes, sql, None, &mut values);
        }
        self.count_lookups(&values)
    }

    /// The lookups of a Bind: arrays bound to lookups may not take a
    /// statement past [`MAX_LOOKUP_VALUES`], and every value counts
    /// against `lookups_per_hour`.
    pub(super) fn bind_lookups(&self, b: &Bind<'_>) -> Result<(), Refusal> {
        let Some(p) = self.state.statements.get(&b.statement) else {
            return Ok(());
        };
        if p.probes.is_empty() {
            return Ok(());
        }
        let mut total = p.lookup_values;
        for probe in p.probes.iter() {
            let Probed::ParamArray(i) = probe.value else {
                continue;
            };
            let Some(Some(value)) = i.checked_sub(1).and_then(|i| b.params().nth(i)) else {
                continue;
            };
            let n = crate::frontend::extended::array_len(value, b.param_format(i - 1) == 1);
            total = total.saturating_add(n.unwrap_or(usize::MAX));
        }
        if total > MAX_LOOKUP_VALUES {
            let max = MAX_LOOKUP_VALUES;
            return Err(Refusal::new(format!(
                "permission denied by pgwarden: the lookups of this statement compare classified \
                 columns with more than {max} values together (or with an array pgwarden cannot \
                 count); a statement may look up at most {max}"
            )));
        }
        if !self.counts_lookups() {
            return Ok(());
        }
        let mut values = Vec::new();
        read(&p.probes, &p.sql, Some(b), &mut values);
        self.count_lookups(&values)
    }
}
