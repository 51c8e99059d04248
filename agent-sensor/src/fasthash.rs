//! Hash maps for what the daemon looks up on every event — processes by pid, agents by id,
//! secret files by inode, connections by descriptor: foldhash instead of SipHash, which was a
//! twentieth of the daemon's time per event. Seeded at random per process, as hashbrown's own
//! default is, so that keys an agent can choose do not collide on purpose.

pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
