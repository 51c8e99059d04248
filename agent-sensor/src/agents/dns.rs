//! Which host name an agent resolved an address from, learned from the DNS answers it received.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

/// Bounded map (agent, address) → name. The oldest entries go first when it is full; entries
/// also expire a while after the answer's TTL (connections often follow an answer late, and
/// resolvers cache longer than they say, so a floor keeps short TTLs useful).
#[derive(Debug)]
pub struct DnsCache {
    entries: HashMap<(u64, IpAddr), (Vec<u8>, Instant)>,
    order: VecDeque<(u64, IpAddr)>,
    capacity: usize,
}

const MIN_LIFETIME: Duration = Duration::from_secs(300);

impl DnsCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn learn(&mut self, agent: u64, ip: IpAddr, name: &[u8], ttl: u32, now: Instant) {
        let expires = now + MIN_LIFETIME.max(Duration::from_secs(ttl as u64));
        let key = (agent, ip);
        if self.entries.insert(key, (name.to_vec(), expires)).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn name_of(&self, agent: u64, ip: IpAddr, now: Instant) -> Option<&[u8]> {
        self.entries
            .get(&(agent, ip))
            .filter(|(_, expires)| *expires > now)
            .map(|(name, _)| name.as_slice())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_agent_bounded_and_expire() {
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut cache = DnsCache::new(2);
        cache.learn(1, ip, b"a.example", 60, now);
        assert_eq!(cache.name_of(1, ip, now), Some(&b"a.example"[..]));
        assert_eq!(cache.name_of(2, ip, now), None);
        assert_eq!(cache.name_of(1, ip, now + Duration::from_secs(301)), None);
        cache.learn(1, "10.0.0.2".parse().unwrap(), b"b", 60, now);
        cache.learn(1, "10.0.0.3".parse().unwrap(), b"c", 60, now);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.name_of(1, ip, now), None, "oldest evicted");
    }
}
