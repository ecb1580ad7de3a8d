//! Hash maps for the lookup tables consulted on every statement (catalog,
//! policy, session state, limits): foldhash instead of the standard SipHash, a
//! fraction of the cost per lookup and still seeded per process.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A concurrent map with the same hasher, for state shared by sessions
/// and looked up per statement or row (limits, schemas).
pub type FastDashMap<K, V> = dashmap::DashMap<K, V, foldhash::fast::RandomState>;
