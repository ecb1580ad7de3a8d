//! Masking and hashing of values.
//!
//! [`mask`] turns one value into what a role with `mask` may see, by kind;
//! [`hash`] turns it into a stable keyed pseudonym for roles with `hash`.
//! Both work on one value at a time and never see the SQL. [`rows`] applies
//! them to the columns of each streamed row, as the analysis planned, and
//! [`notices`] withholds error and notice text that could echo values.

pub mod hash;
pub mod mask;
pub mod notices;
pub mod rows;

pub use hash::HashKey;
pub use mask::mask;
