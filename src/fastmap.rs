//! Hash maps for the lookup tables consulted on every statement (catalog,
//! policy, session state): foldhash instead of the standard SipHash, a
//! fraction of the cost per lookup and still seeded per process.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
