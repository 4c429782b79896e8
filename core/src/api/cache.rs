//! A short-lived cache of rendered `/lookup` replies.
//!
//! Trade-off: within `ttl` of a traversal, a lookup of the same name is answered from memory
//! (a map probe and a copy, microseconds) instead of a DHT traversal (milliseconds to
//! seconds), so hot names cost nothing; the price is that a peer announced elsewhere or
//! expired in that window shows up or disappears up to `ttl` late (an announce or
//! unannounce through this Grape drops the name's entry, so it shows here at once). The
//! Node Grape keeps what lookups found for `dht_peer_maxAge / 2` (60 s) and merges it into
//! every answer, so a 500 ms cache is far fresher than what Node clients are used to. A `ttl`
//! of zero turns the cache off.
//!
//! An adapter may keep a copy ([`LookupMirror`]) that its connections answer hot lookups
//! from without queueing them for the [`Grape`](super::Grape): every change here is
//! applied to the copy as it happens, so the copy never holds what this cache dropped.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A copy of the lookup cache kept outside the [`Grape`](super::Grape) (see
/// [`Grape::mirror_lookup_cache`](super::Grape::mirror_lookup_cache)): the cache calls it on
/// every change, before the request that caused the change is answered.
pub trait LookupMirror: std::fmt::Debug + Send {
    /// `body` is now the reply to a lookup of `name` (an HTTP 200 with
    /// [`CONTENT_TYPE_JSON`](super::CONTENT_TYPE_JSON)), until just before `expires`
    /// (`None`: a ttl too long to reckon, never).
    fn put(&mut self, name: &[u8], expires: Option<Instant>, body: &[u8]);
    /// `name` has no cached reply any more.
    fn remove(&mut self, name: &[u8]);
}

/// Rendered lookup replies by service name, capped in entries and age.
#[derive(Debug)]
pub(crate) struct LookupCache {
    ttl: Duration,
    cap: usize,
    /// Hashed, not ordered: fresh names differ only in their tails, so an ordered map
    /// spends most of each probe comparing their shared prefixes. Never iterated in an
    /// order that shows (only to fill a new mirror).
    entries: HashMap<Box<[u8]>, Entry>,
    /// Insertion order (times never go backwards), to expire and evict oldest first.
    /// A name inserted again leaves a stale record here, skipped when popped.
    order: VecDeque<(Instant, Box<[u8]>)>,
    /// The adapter's copy, told of every insert and removal.
    mirror: Option<Box<dyn LookupMirror>>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    body: Vec<u8>,
}

impl LookupCache {
    /// A cache keeping at most `cap` names for `ttl` each.
    pub(crate) fn new(ttl: Duration, cap: usize) -> Self {
        LookupCache {
            ttl,
            cap,
            entries: HashMap::new(),
            order: VecDeque::new(),
            mirror: None,
        }
    }

    /// Keeps `mirror` a copy of this cache from now on (it starts with what is cached).
    pub(crate) fn set_mirror(&mut self, mut mirror: Box<dyn LookupMirror>) {
        for (name, e) in &self.entries {
            mirror.put(name, e.at.checked_add(self.ttl), &e.body);
        }
        self.mirror = Some(mirror);
    }

    /// The reply cached for `name`, if it is younger than the ttl.
    pub(crate) fn get(&self, now: Instant, name: &[u8]) -> Option<&[u8]> {
        let e = self.entries.get(name)?;
        (now.saturating_duration_since(e.at) < self.ttl).then_some(e.body.as_slice())
    }

    /// Caches `body` for `name`, evicting expired entries and, past the cap, the oldest.
    pub(crate) fn insert(&mut self, now: Instant, name: &[u8], body: Vec<u8>) {
        if self.ttl.is_zero() || self.cap == 0 {
            return;
        }
        if let Some(mirror) = &mut self.mirror {
            mirror.put(name, now.checked_add(self.ttl), &body);
        }
        self.entries.insert(name.into(), Entry { at: now, body });
        self.order.push_back((now, name.into()));
        while let Some((at, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= self.ttl;
            let over = self.entries.len() > self.cap || self.order.len() > 2 * self.cap;
            if !expired && !over {
                break;
            }
            if let Some((at, name)) = self.order.pop_front()
                && self.entries.get(&name).is_some_and(|e| e.at == at)
            {
                self.remove(&name);
            }
        }
    }

    /// Forgets the reply cached for `name` (its record in `order` is skipped when popped).
    pub(crate) fn remove(&mut self, name: &[u8]) {
        if self.entries.remove(name).is_some()
            && let Some(mirror) = &mut self.mirror
        {
            mirror.remove(name);
        }
    }

    /// Names cached (fresh or not yet evicted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a virtual clock; tests only ever add to it.
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn hit_within_ttl_miss_after() {
        let t0 = t0();
        let mut cache = LookupCache::new(Duration::from_secs(1), 10);

        cache.insert(t0, b"svc", b"[]".to_vec());

        assert_eq!(cache.get(t0, b"svc"), Some(&b"[]"[..]));
        assert_eq!(
            cache.get(t0 + Duration::from_millis(999), b"svc"),
            Some(&b"[]"[..])
        );
        assert_eq!(cache.get(t0 + Duration::from_secs(1), b"svc"), None);
        assert_eq!(cache.get(t0, b"other"), None);
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let t0 = t0();
        let mut cache = LookupCache::new(Duration::ZERO, 10);

        cache.insert(t0, b"svc", b"[]".to_vec());

        assert_eq!(cache.get(t0, b"svc"), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn cap_evicts_the_oldest() {
        let t0 = t0();
        let mut cache = LookupCache::new(Duration::from_secs(10), 2);

        cache.insert(t0, b"a", b"1".to_vec());
        cache.insert(t0 + Duration::from_millis(1), b"b", b"2".to_vec());
        cache.insert(t0 + Duration::from_millis(2), b"c", b"3".to_vec());

        let now = t0 + Duration::from_millis(3);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(now, b"a"), None);
        assert_eq!(cache.get(now, b"c"), Some(&b"3"[..]));
    }

    #[test]
    fn reinserted_name_survives_its_stale_record() {
        let t0 = t0();
        let ttl = Duration::from_secs(1);
        let mut cache = LookupCache::new(ttl, 10);
        cache.insert(t0, b"a", b"old".to_vec());

        let t1 = t0 + Duration::from_millis(1500);
        cache.insert(t1, b"a", b"new".to_vec());
        cache.insert(t1 + Duration::from_millis(1), b"b", b"x".to_vec());

        assert_eq!(cache.get(t1, b"a"), Some(&b"new"[..]));
    }

    /// A mirror that records the names it holds.
    #[derive(Clone, Debug, Default)]
    struct Names(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl LookupMirror for Names {
        fn put(&mut self, name: &[u8], _: Option<Instant>, _: &[u8]) {
            let mut names = self.0.lock().expect("unpoisoned");
            names.retain(|n| n != name);
            names.push(name.to_vec());
        }
        fn remove(&mut self, name: &[u8]) {
            self.0.lock().expect("unpoisoned").retain(|n| n != name);
        }
    }

    #[test]
    fn the_mirror_loses_what_is_evicted_expired_or_removed() {
        let t0 = t0();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut cache = LookupCache::new(Duration::from_secs(1), 2);
        let names = Names::default();
        cache.set_mirror(Box::new(names.clone()));

        cache.insert(at(0), b"a", b"1".to_vec());
        cache.insert(at(1), b"b", b"2".to_vec());
        cache.insert(at(2), b"c", b"3".to_vec()); // past the cap: a goes
        cache.remove(b"b");
        cache.insert(at(2000), b"d", b"4".to_vec()); // c expired

        assert_eq!(*names.0.lock().expect("unpoisoned"), [b"d".to_vec()]);
    }

    #[test]
    fn expired_entries_are_dropped_on_insert() {
        let t0 = t0();
        let mut cache = LookupCache::new(Duration::from_secs(1), 10);
        cache.insert(t0, b"a", b"1".to_vec());

        cache.insert(t0 + Duration::from_secs(2), b"b", b"2".to_vec());

        assert_eq!(cache.len(), 1);
    }
}
