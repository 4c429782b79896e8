//! The peer store against a plain BTreeMap model: after any sequence of adds, removes,
//! expiries and clock advances, `get` returns exactly the unexpired peers (newest
//! first, capped), evictions match the documented policy, and the caps always hold.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grenache_core::dht::Key;
use grenache_core::dht::storage::PeerStore;
use proptest::prelude::*;

const MAX_AGE: Duration = Duration::from_secs(120);
const KEYS: u8 = 6;
const PORTS: u16 = 6;

#[derive(Debug, Clone)]
enum Op {
    Add {
        key: u8,
        port: u16,
    },
    Get {
        key: u8,
        max: usize,
    },
    Remove {
        key: u8,
        port: u16,
    },
    Advance {
        millis: u64,
    },
    /// Jump to exactly when the store says the next peer expires (a boundary).
    AdvanceToExpiry,
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS, 0..PORTS).prop_map(|(key, port)| Op::Add { key, port }),
        2 => (0..KEYS, 0..5usize).prop_map(|(key, max)| Op::Get { key, max }),
        1 => (0..KEYS, 0..PORTS).prop_map(|(key, port)| Op::Remove { key, port }),
        // Zero keeps equal timestamps common, to exercise the tie-breaks.
        3 => prop_oneof![Just(0u64), 0..90_000u64].prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::AdvanceToExpiry),
        1 => Just(Op::Expire),
    ]
}

/// The reference: every stored peer with its time, purged only where the real store
/// purges (on `add` and `expire`).
struct Model {
    max_keys: usize,
    max_per_key: usize,
    keys: BTreeMap<Key, BTreeMap<SocketAddr, Instant>>,
    evicted: u64,
}

impl Model {
    fn expired(at: Instant, now: Instant) -> bool {
        now >= at + MAX_AGE
    }

    fn expire(&mut self, now: Instant) {
        for peers in self.keys.values_mut() {
            peers.retain(|_, at| !Self::expired(*at, now));
        }
        self.keys.retain(|_, peers| !peers.is_empty());
    }

    fn add(&mut self, now: Instant, key: &Key, peer: SocketAddr) {
        self.expire(now);
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            // The key whose newest peer is oldest; ties by key bytes.
            let victim = self
                .keys
                .iter()
                .map(|(k, peers)| (peers.values().max().copied(), k.clone()))
                .min();
            if let Some((_, victim)) = victim {
                let dropped = self.keys.remove(&victim).map_or(0, |p| p.len());
                self.evicted += dropped as u64;
            }
        }
        let peers = self.keys.entry(key.clone()).or_default();
        peers.insert(peer, now);
        if peers.len() > self.max_per_key {
            // The oldest peer; ties by address.
            let victim = peers.iter().map(|(addr, at)| (*at, *addr)).min();
            if let Some((_, addr)) = victim {
                peers.remove(&addr);
                self.evicted += 1;
            }
        }
    }

    fn get(&self, now: Instant, key: &Key, max: usize) -> Vec<SocketAddr> {
        let Some(peers) = self.keys.get(key) else {
            return Vec::new();
        };
        let mut live: Vec<(Instant, SocketAddr)> = peers
            .iter()
            .filter(|(_, at)| !Self::expired(**at, now))
            .map(|(addr, at)| (*at, *addr))
            .collect();
        live.sort_by(|a, b| b.cmp(a));
        live.into_iter().take(max).map(|(_, addr)| addr).collect()
    }

    fn remove(&mut self, key: &Key, peer: SocketAddr) -> bool {
        let Some(peers) = self.keys.get_mut(key) else {
            return false;
        };
        let found = peers.remove(&peer).is_some();
        if peers.is_empty() {
            self.keys.remove(key);
        }
        found
    }

    fn len_peers(&self) -> usize {
        self.keys.values().map(BTreeMap::len).sum()
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.keys
            .values()
            .flat_map(|p| p.values())
            .min()
            .map(|at| *at + MAX_AGE)
    }
}

fn key(i: u8) -> Key {
    // Different lengths, as Grenache service names have.
    let name = format!("svc-{}", "x".repeat(usize::from(i)));
    Key::new(name.as_bytes()).expect("short key")
}

fn addr(port: u16) -> SocketAddr {
    if port.is_multiple_of(2) {
        SocketAddr::from(([10, 0, 0, 1], 1000 + port))
    } else {
        SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 1], 1000 + port))
    }
}

/// Any instant will do as the origin: only offsets from it matter.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn peer_store_matches_model(
        max_keys in 1..5usize,
        max_per_key in 1..4usize,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut store = PeerStore::new(MAX_AGE, max_keys, max_per_key);
        let mut model = Model { max_keys, max_per_key, keys: BTreeMap::new(), evicted: 0 };
        let mut now = epoch();

        for op in ops {
            match op {
                Op::Add { key: k, port } => {
                    store.add(now, &key(k), addr(port));
                    model.add(now, &key(k), addr(port));
                }
                Op::Get { key: k, max } => {
                    prop_assert_eq!(store.get(now, &key(k), max), model.get(now, &key(k), max));
                }
                Op::Remove { key: k, port } => {
                    prop_assert_eq!(store.remove(&key(k), addr(port)), model.remove(&key(k), addr(port)));
                }
                Op::Advance { millis } => now += Duration::from_millis(millis),
                Op::AdvanceToExpiry => now = now.max(store.next_expiry().unwrap_or(now)),
                Op::Expire => {
                    store.expire(now);
                    model.expire(now);
                }
            }
            for k in 0..KEYS {
                let got = store.get(now, &key(k), usize::MAX);
                prop_assert_eq!(&got, &model.get(now, &key(k), usize::MAX));
                prop_assert!(got.len() <= max_per_key);
            }
            prop_assert!(store.len_keys() <= max_keys);
            prop_assert!(store.len_peers() <= max_keys * max_per_key);
            prop_assert_eq!(store.len_keys(), model.keys.len());
            prop_assert_eq!(store.len_peers(), model.len_peers());
            prop_assert_eq!(store.evicted(), model.evicted);
            prop_assert_eq!(store.next_expiry(), model.next_expiry());
        }
    }
}
