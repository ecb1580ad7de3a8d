//! Masking and hashing of values.
//!
//! [`mask`] turns one value into what a role with `mask` may see, by kind;
//! [`hash`] turns it into a stable keyed pseudonym for roles with `hash`.
//! Both work on one value at a time and never see the SQL; applying them to
//! the columns of each streamed row is the result-rewriting stage.

pub mod hash;
pub mod mask;

pub use hash::HashKey;
pub use mask::mask;
