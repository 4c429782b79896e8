//! The announce store: which peers announced which key, and when (BEP 5 `announce_peer`).
//!
//! Built to stay small and O(log n) through a flood of distinct keys (200,000 keys with
//! one peer each is the design point):
//! - keys are shared `Arc<[u8]>` between the map and the time index, one allocation each;
//! - times are nanosecond offsets from the first `now` seen (8 bytes, not 16);
//! - a key with one peer keeps it inline, without a vector;
//! - one ordered index holds every key by its newest peer time: it finds keys whose
//!   peers have all expired and the key to evict when there are too many keys. A second
//!   index holds only keys whose oldest peer is older than the newest, so that their
//!   stale peers expire on time too. With one peer per key it stays empty.
//!
//! Ties are broken by address or key bytes, so the order is the same on every run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dht::id::Key;

/// Nanoseconds since the store's epoch (the first `now` it saw).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peer {
    addr: SocketAddr,
    at: Stamp,
}

impl Peer {
    /// Sort key: newest first, then the larger address first.
    fn rank(&self) -> (Stamp, SocketAddr) {
        (self.at, self.addr)
    }
}

/// The peers of one key, sorted by descending [`Peer::rank`]; never empty.
#[derive(Clone, Debug)]
enum Peers {
    One(Peer),
    Many(Vec<Peer>),
}

impl Peers {
    fn as_slice(&self) -> &[Peer] {
        match self {
            Peers::One(peer) => std::slice::from_ref(peer),
            Peers::Many(peers) => peers,
        }
    }

    fn newest(&self) -> Stamp {
        self.as_slice().first().map_or(Stamp(0), |p| p.at)
    }

    fn oldest(&self) -> Stamp {
        self.as_slice().last().map_or(Stamp(0), |p| p.at)
    }

    fn into_vec(self) -> Vec<Peer> {
        match self {
            Peers::One(peer) => vec![peer],
            Peers::Many(peers) => peers,
        }
    }

    /// Goes back to the compact form; `None` when no peer is left.
    fn from_vec(mut peers: Vec<Peer>) -> Option<Self> {
        match peers.len() {
            0 => None,
            1 => peers.pop().map(Peers::One),
            _ => Some(Peers::Many(peers)),
        }
    }
}

/// Peers announced under each key, expiring `max_age` after their last announce.
#[derive(Clone, Debug)]
pub struct PeerStore {
    max_age: Duration,
    max_age_nanos: u64,
    max_keys: usize,
    max_peers_per_key: usize,
    epoch: Option<Instant>,
    keys: BTreeMap<Arc<[u8]>, Peers>,
    by_newest: BTreeSet<(Stamp, Arc<[u8]>)>,
    by_oldest: BTreeSet<(Stamp, Arc<[u8]>)>,
    peers: usize,
    evicted: u64,
    /// Keys whose set of peers changed since [`PeerStore::take_changed`] last ran: the one
    /// place announce, unannounce, expiry and eviction report to, for watches.
    changed: Vec<Arc<[u8]>>,
}

impl PeerStore {
    /// Creates an empty store.
    ///
    /// A cap of zero stores nothing (every add is counted as evicted).
    pub fn new(max_age: Duration, max_keys: usize, max_peers_per_key: usize) -> Self {
        PeerStore {
            max_age,
            max_age_nanos: u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
            max_keys,
            max_peers_per_key,
            epoch: None,
            keys: BTreeMap::new(),
            by_newest: BTreeSet::new(),
            by_oldest: BTreeSet::new(),
            peers: 0,
            evicted: 0,
            changed: Vec::new(),
        }
    }

    /// Records that `peer` announced `key` at `now`; re-adding refreshes its time.
    ///
    /// Expired entries go first, so the caps only ever push out live ones. A new key
    /// past `max_keys` evicts the key whose newest peer is oldest; a new peer past
    /// `max_peers_per_key` evicts that key's oldest peer. Both count in
    /// [`PeerStore::evicted`].
    pub fn add(&mut self, now: Instant, key: &Key, peer: SocketAddr) {
        if self.max_keys == 0 || self.max_peers_per_key == 0 {
            self.note_evicted(1, 0);
            return;
        }
        self.expire(now);
        let at = self.stamp_mut(now);
        let new = Peer { addr: peer, at };
        let Some((shared, old)) = self.keys.remove_entry(key.as_bytes()) else {
            self.add_key(key, new);
            return;
        };
        self.unindex(&shared, &old);
        let mut list = match old {
            // The common case, a service re-announcing (no change): no vector needed.
            Peers::One(only) if only.addr == peer => {
                let peers = Peers::One(new);
                self.index(&shared, &peers);
                self.keys.insert(shared, peers);
                return;
            }
            old => old.into_vec(),
        };
        let before = list.len();
        list.retain(|p| p.addr != peer);
        if list.len() == before {
            self.changed.push(Arc::clone(&shared));
        }
        let pos = list.partition_point(|p| p.rank() > new.rank());
        list.insert(pos, new);
        let mut dropped = 0;
        while list.len() > self.max_peers_per_key {
            list.pop();
            dropped += 1;
        }
        self.peers = self.peers - before + list.len();
        self.note_evicted(dropped, self.max_peers_per_key);
        if let Some(peers) = Peers::from_vec(list) {
            self.index(&shared, &peers);
            self.keys.insert(shared, peers);
        }
    }

    /// Returns up to `max` unexpired peers of `key`, newest first.
    pub fn get(&self, now: Instant, key: &Key, max: usize) -> Vec<SocketAddr> {
        let Some(peers) = self.keys.get(key.as_bytes()) else {
            return Vec::new();
        };
        let threshold = self.expired_up_to(now);
        peers
            .as_slice()
            .iter()
            .take_while(|p| threshold.is_none_or(|t| p.at > t))
            .take(max)
            .map(|p| p.addr)
            .collect()
    }

    /// Forgets `peer` under `key` (an unannounce); reports whether it was there.
    pub fn remove(&mut self, key: &Key, peer: SocketAddr) -> bool {
        let Some(peers) = self.keys.get(key.as_bytes()) else {
            return false;
        };
        if !peers.as_slice().iter().any(|p| p.addr == peer) {
            return false;
        }
        let Some((shared, old)) = self.keys.remove_entry(key.as_bytes()) else {
            return false;
        };
        self.unindex(&shared, &old);
        self.changed.push(Arc::clone(&shared));
        let mut list = old.into_vec();
        list.retain(|p| p.addr != peer);
        self.peers -= 1;
        if let Some(peers) = Peers::from_vec(list) {
            self.index(&shared, &peers);
            self.keys.insert(shared, peers);
        }
        true
    }

    /// Drops every peer whose `max_age` has run out by `now`, and keys left empty.
    ///
    /// Costs O(log n) per dropped entry; calling it before anything is due does nothing.
    pub fn expire(&mut self, now: Instant) {
        let Some(threshold) = self.expired_up_to(now) else {
            return;
        };
        // Keys whose newest peer expired: every peer is gone.
        while self
            .by_newest
            .first()
            .is_some_and(|(at, _)| *at <= threshold)
        {
            let Some((_, shared)) = self.by_newest.pop_first() else {
                break;
            };
            if let Some(peers) = self.keys.remove(&shared) {
                self.by_oldest
                    .remove(&(peers.oldest(), Arc::clone(&shared)));
                self.peers -= peers.as_slice().len();
                self.changed.push(shared);
            }
        }
        // Keys that keep a live peer but hold expired ones at the tail.
        while self
            .by_oldest
            .first()
            .is_some_and(|(at, _)| *at <= threshold)
        {
            let Some((_, shared)) = self.by_oldest.pop_first() else {
                break;
            };
            let Some(old) = self.keys.remove(&shared) else {
                continue;
            };
            self.by_newest.remove(&(old.newest(), Arc::clone(&shared)));
            let mut list = old.into_vec();
            let before = list.len();
            let live = list.partition_point(|p| p.at > threshold);
            list.truncate(live);
            self.changed.push(Arc::clone(&shared));
            self.peers -= before - list.len();
            if let Some(peers) = Peers::from_vec(list) {
                self.index(&shared, &peers);
                self.keys.insert(shared, peers);
            }
        }
    }

    /// When the next peer expires, so the caller knows when to call [`PeerStore::expire`].
    ///
    /// `None` when the store is empty (or `max_age` is too large to represent).
    pub fn next_expiry(&self) -> Option<Instant> {
        let newest = self.by_newest.first().map(|(at, _)| *at);
        let oldest = self.by_oldest.first().map(|(at, _)| *at);
        let first = match (newest, oldest) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.epoch?
            .checked_add(Duration::from_nanos(first.0))?
            .checked_add(self.max_age)
    }

    /// Hands over the keys whose peer set changed (a new peer, a peer removed, expired or
    /// evicted; a known peer announcing again is no change) since the last call, and
    /// forgets them. A key may appear more than once.
    pub fn take_changed(&mut self) -> Vec<Arc<[u8]>> {
        std::mem::take(&mut self.changed)
    }

    /// Whether [`PeerStore::take_changed`] has anything.
    pub fn has_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Number of keys with at least one stored peer (expired ones count until expired).
    pub fn len_keys(&self) -> usize {
        self.keys.len()
    }

    /// Number of stored peers over all keys.
    pub fn len_peers(&self) -> usize {
        self.peers
    }

    /// How many peers were dropped because a cap was reached (not counting expiry).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Each key with its number of peers and when its newest peer last announced, in key
    /// order (for the dashboard; expired entries show until expiry runs).
    pub fn keys(&self) -> impl Iterator<Item = (&[u8], usize, Instant)> + '_ {
        self.keys.iter().filter_map(|(key, peers)| {
            let at = self
                .epoch?
                .checked_add(Duration::from_nanos(peers.newest().0))?;
            Some((&**key, peers.as_slice().len(), at))
        })
    }

    fn add_key(&mut self, key: &Key, peer: Peer) {
        if self.keys.len() >= self.max_keys {
            self.evict_stalest_key();
        }
        let shared: Arc<[u8]> = Arc::from(key.as_bytes());
        self.changed.push(Arc::clone(&shared));
        let peers = Peers::One(peer);
        self.index(&shared, &peers);
        self.keys.insert(shared, peers);
        self.peers += 1;
    }

    /// Drops the key whose newest peer is oldest, to make room for a new key.
    fn evict_stalest_key(&mut self) {
        let Some((_, victim)) = self.by_newest.pop_first() else {
            return;
        };
        let Some(peers) = self.keys.remove(&victim) else {
            return;
        };
        self.by_oldest
            .remove(&(peers.oldest(), Arc::clone(&victim)));
        let dropped = peers.as_slice().len();
        self.peers -= dropped;
        self.changed.push(Arc::clone(&victim));
        tracing::debug!(key = ?victim, dropped, "peer store full: evicted key");
        self.note_evicted(dropped, self.max_keys);
    }

    fn index(&mut self, key: &Arc<[u8]>, peers: &Peers) {
        let (newest, oldest) = (peers.newest(), peers.oldest());
        self.by_newest.insert((newest, Arc::clone(key)));
        if oldest < newest {
            self.by_oldest.insert((oldest, Arc::clone(key)));
        }
    }

    fn unindex(&mut self, key: &Arc<[u8]>, peers: &Peers) {
        self.by_newest.remove(&(peers.newest(), Arc::clone(key)));
        self.by_oldest.remove(&(peers.oldest(), Arc::clone(key)));
    }

    /// Counts `count` peers dropped because of `cap` (`max_keys` or `max_peers_per_key`).
    fn note_evicted(&mut self, count: usize, cap: usize) {
        if count == 0 {
            return;
        }
        let before = self.evicted;
        self.evicted = before.saturating_add(u64::try_from(count).unwrap_or(u64::MAX));
        super::warn_on_eviction("peers", before, self.evicted, cap);
    }

    /// The stamp for `now`, fixing the epoch on first use.
    fn stamp_mut(&mut self, now: Instant) -> Stamp {
        let epoch = *self.epoch.get_or_insert(now);
        stamp_since(epoch, now)
    }

    /// Peers stamped at or before the returned value have expired by `now`; `None`
    /// when nothing can have expired yet.
    fn expired_up_to(&self, now: Instant) -> Option<Stamp> {
        let now = stamp_since(self.epoch?, now);
        now.0.checked_sub(self.max_age_nanos).map(Stamp)
    }
}

/// Nanoseconds from `epoch` to `now`, saturating (time must not go backwards).
fn stamp_since(epoch: Instant, now: Instant) -> Stamp {
    let nanos = now.saturating_duration_since(epoch).as_nanos();
    Stamp(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(120);

    /// Any instant will do as the origin: the tests only use offsets from it.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn key(name: &str) -> Key {
        Key::new(name.as_bytes()).expect("test keys are short")
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn get_returns_newest_first_and_caps() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        store.add(t0, &key("svc"), addr(1));
        store.add(t0 + secs(1), &key("svc"), addr(2));
        store.add(t0 + secs(2), &key("svc"), addr(3));

        let all = store.get(t0 + secs(2), &key("svc"), 10);
        let two = store.get(t0 + secs(2), &key("svc"), 2);

        assert_eq!(all, vec![addr(3), addr(2), addr(1)]);
        assert_eq!(two, vec![addr(3), addr(2)]);
        assert_eq!(store.get(t0, &key("other"), 10), vec![]);
        assert_eq!(store.len_peers(), 3);
    }

    #[test]
    fn readding_refreshes_instead_of_duplicating() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        store.add(t0, &key("svc"), addr(1));
        store.add(t0 + secs(1), &key("svc"), addr(2));

        store.add(t0 + secs(100), &key("svc"), addr(1));

        assert_eq!(store.len_peers(), 2);
        assert_eq!(
            store.get(t0 + secs(100), &key("svc"), 10),
            vec![addr(1), addr(2)]
        );
        assert_eq!(store.get(t0 + secs(125), &key("svc"), 10), vec![addr(1)]);
    }

    #[test]
    fn peers_expire_at_max_age() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        store.add(t0, &key("svc"), addr(1));

        let before = store.get(t0 + AGE - Duration::from_nanos(1), &key("svc"), 10);
        let at = store.get(t0 + AGE, &key("svc"), 10);

        assert_eq!(before, vec![addr(1)]);
        assert_eq!(at, vec![]);
        assert_eq!(store.next_expiry(), Some(t0 + AGE));
    }

    #[test]
    fn expire_drops_stale_peers_and_empty_keys() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        store.add(t0, &key("a"), addr(1));
        store.add(t0 + secs(10), &key("b"), addr(1));
        store.add(t0 + secs(50), &key("b"), addr(2));
        assert_eq!(store.next_expiry(), Some(t0 + AGE));

        store.expire(t0 + AGE + secs(10));

        assert_eq!(store.len_keys(), 1);
        assert_eq!(store.len_peers(), 1);
        assert_eq!(store.next_expiry(), Some(t0 + secs(50) + AGE));
        store.expire(t0 + secs(50) + AGE);
        assert_eq!((store.len_keys(), store.len_peers()), (0, 0));
        assert_eq!(store.next_expiry(), None);
        assert_eq!(store.evicted(), 0);
    }

    #[test]
    fn early_expire_does_nothing() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        store.add(t0, &key("a"), addr(1));

        store.expire(t0 + secs(119));

        assert_eq!(store.len_peers(), 1);
    }

    #[test]
    fn full_key_evicts_its_oldest_peer() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 2);
        store.add(t0, &key("svc"), addr(1));
        store.add(t0 + secs(1), &key("svc"), addr(2));

        store.add(t0 + secs(2), &key("svc"), addr(3));

        assert_eq!(
            store.get(t0 + secs(2), &key("svc"), 10),
            vec![addr(3), addr(2)]
        );
        assert_eq!(store.len_peers(), 2);
        assert_eq!(store.evicted(), 1);
    }

    #[test]
    fn too_many_keys_evicts_the_stalest_key() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 2, 10);
        store.add(t0, &key("a"), addr(1));
        store.add(t0 + secs(1), &key("b"), addr(1));
        store.add(t0 + secs(2), &key("a"), addr(2));

        store.add(t0 + secs(3), &key("c"), addr(1));

        assert_eq!(store.len_keys(), 2);
        assert_eq!(store.get(t0 + secs(3), &key("b"), 10), vec![]);
        assert_eq!(
            store.get(t0 + secs(3), &key("a"), 10),
            vec![addr(2), addr(1)]
        );
        assert_eq!(store.evicted(), 1);
    }

    #[test]
    fn expired_keys_make_room_without_eviction() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 1, 10);
        store.add(t0, &key("a"), addr(1));

        store.add(t0 + AGE, &key("b"), addr(1));

        assert_eq!(store.evicted(), 0);
        assert_eq!(store.len_keys(), 1);
    }

    #[test]
    fn zero_caps_store_nothing_but_count() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 0, 10);

        store.add(t0, &key("a"), addr(1));

        assert_eq!(store.len_keys(), 0);
        assert_eq!(store.evicted(), 1);
    }

    #[test]
    fn remove_forgets_one_peer() {
        let t0 = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        store.add(t0, &key("svc"), addr(1));
        store.add(t0 + secs(1), &key("svc"), addr(2));

        let removed = store.remove(&key("svc"), addr(2));

        assert!(removed);
        assert!(!store.remove(&key("svc"), addr(2)));
        assert!(!store.remove(&key("nope"), addr(1)));
        assert_eq!(store.get(t0 + secs(1), &key("svc"), 10), vec![addr(1)]);
        assert!(store.remove(&key("svc"), addr(1)));
        assert_eq!((store.len_keys(), store.len_peers()), (0, 0));
        assert_eq!(store.next_expiry(), None);
    }

    #[test]
    fn single_peer_keys_stay_compact() {
        // The flood design point: no vector, 8-byte times.
        assert!(std::mem::size_of::<Peers>() <= 48);
        assert_eq!(std::mem::size_of::<Stamp>(), 8);
    }

    #[test]
    fn flood_of_distinct_keys_is_bounded_and_expires() {
        let t0 = epoch();
        let n = 50_000;
        let mut store = PeerStore::new(AGE, n / 2, 4);

        for i in 0..n {
            let name = format!("service-{i}");
            store.add(t0 + Duration::from_micros(i as u64), &key(&name), addr(1));
        }

        assert_eq!(store.len_keys(), n / 2);
        assert_eq!(store.evicted(), (n / 2) as u64);
        let last = format!("service-{}", n - 1);
        assert_eq!(store.get(t0 + secs(1), &key(&last), 1), vec![addr(1)]);
        assert_eq!(store.get(t0 + secs(1), &key("service-0"), 1), vec![]);
        store.expire(t0 + AGE + secs(1));
        assert_eq!((store.len_keys(), store.len_peers()), (0, 0));
    }

    #[test]
    fn changes_are_reported_once_per_change() {
        let t = epoch();
        let mut store = PeerStore::new(AGE, 10, 10);
        let changed = |store: &mut PeerStore| -> Vec<Vec<u8>> {
            store.take_changed().iter().map(|k| k.to_vec()).collect()
        };

        store.add(t, &key("a"), addr(1));
        let new_key = changed(&mut store);
        store.add(t, &key("a"), addr(1));
        let reannounce = changed(&mut store);
        store.add(t, &key("a"), addr(2));
        let new_peer = changed(&mut store);
        store.remove(&key("a"), addr(2));
        let removed = changed(&mut store);
        store.expire(t + AGE);
        let expired = changed(&mut store);

        assert_eq!(new_key, vec![b"a".to_vec()]);
        assert_eq!(reannounce, Vec::<Vec<u8>>::new());
        assert_eq!(new_peer, vec![b"a".to_vec()]);
        assert_eq!(removed, vec![b"a".to_vec()]);
        assert_eq!(expired, vec![b"a".to_vec()]);
    }
}
