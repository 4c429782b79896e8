//! The Link's lookup cache: least recently used, each entry valid for a fixed time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::peer::types::PeerAddr;

/// Lookup results by service name (Node: `lru` of 2500 entries, 10 s).
#[derive(Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    cap: usize,
    entries: BTreeMap<String, Entry>,
    /// Recency order: stamp to name, oldest first.
    order: BTreeMap<u64, String>,
    stamp: u64,
}

#[derive(Debug)]
struct Entry {
    peers: Vec<PeerAddr>,
    expires: Instant,
    stamp: u64,
}

impl LookupCache {
    pub(crate) fn new(ttl: Duration, cap: usize) -> Self {
        LookupCache {
            ttl,
            cap,
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            stamp: 0,
        }
    }

    /// The cached peers, unless missing or expired (a use refreshes recency, not age).
    pub(crate) fn get(&mut self, now: Instant, name: &str) -> Option<Vec<PeerAddr>> {
        let entry = self.entries.get_mut(name)?;
        if now >= entry.expires {
            self.forget(name);
            return None;
        }
        // The newest entry is hit again and again under load: it stays the newest.
        if entry.stamp != self.stamp {
            self.order.remove(&entry.stamp);
            self.stamp += 1;
            entry.stamp = self.stamp;
            self.order.insert(self.stamp, name.to_owned());
        }
        Some(entry.peers.clone())
    }

    /// Stores a result, evicting the least recently used entry when full.
    pub(crate) fn insert(&mut self, now: Instant, name: &str, peers: Vec<PeerAddr>) {
        if self.cap == 0 || self.ttl.is_zero() {
            return;
        }
        self.forget(name);
        while self.entries.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.stamp += 1;
        self.order.insert(self.stamp, name.to_owned());
        self.entries.insert(
            name.to_owned(),
            Entry {
                peers,
                expires: now + self.ttl,
                stamp: self.stamp,
            },
        );
    }

    /// Drops a name, so the next lookup asks the Grape.
    pub(crate) fn forget(&mut self, name: &str) {
        if let Some(entry) = self.entries.remove(name) {
            self.order.remove(&entry.stamp);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(s: &str) -> Vec<PeerAddr> {
        vec![PeerAddr::parse(s).expect("valid")]
    }

    #[test]
    fn entries_expire_after_ttl() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(10), 10);
        cache.insert(t0, "svc", peers("h:1"));

        let fresh = cache.get(t0 + Duration::from_millis(9_999), "svc");
        let stale = cache.get(t0 + Duration::from_secs(10), "svc");

        assert_eq!(fresh, Some(peers("h:1")));
        assert_eq!(stale, None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn full_cache_evicts_least_recently_used() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(10), 2);
        cache.insert(t0, "a", peers("h:1"));
        cache.insert(t0, "b", peers("h:2"));
        let _ = cache.get(t0, "a");

        cache.insert(t0, "c", peers("h:3"));

        assert!(cache.get(t0, "a").is_some());
        assert!(cache.get(t0, "b").is_none());
        assert!(cache.get(t0, "c").is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn hits_on_the_newest_entry_keep_the_recency_order() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(10), 2);
        cache.insert(t0, "a", peers("h:1"));
        cache.insert(t0, "b", peers("h:2"));
        for _ in 0..3 {
            assert!(cache.get(t0, "b").is_some());
        }
        assert!(cache.get(t0, "a").is_some(), "a is the newest now");
        assert!(cache.get(t0, "a").is_some());

        cache.insert(t0, "c", peers("h:3"));

        assert!(
            cache.get(t0, "b").is_none(),
            "b was the least recently used"
        );
        assert!(cache.get(t0, "a").is_some());
        assert!(cache.get(t0, "c").is_some());
    }

    #[test]
    fn forget_drops_an_entry() {
        let t0 = Instant::now();
        let mut cache = LookupCache::new(Duration::from_secs(10), 2);
        cache.insert(t0, "a", peers("h:1"));

        cache.forget("a");

        assert!(cache.get(t0, "a").is_none());
    }
}
