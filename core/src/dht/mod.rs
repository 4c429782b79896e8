//! The BitTorrent mainline DHT (BEP 5, 43, 44, 32), sans-IO: what a Grape is underneath.
//!
//! Drive a [`Node`] as the crate doc shows. A datagram's path: [`Node::handle_datagram`]
//! decodes it ([`krpc`], over [`bencode`]); a query is answered from the [`routing`]
//! table, the [`token`]s and the [`storage`]; a response is matched to our pending query
//! by its transaction id and fed to the traversal of the lookup that sent it, which asks
//! further or ends with an [`Event::Finished`].
//!
//! The wire formats ([`bencode`], [`krpc`], [`bep44`], the [`state`] file) and the
//! node's parts that stand alone ([`routing`], [`storage`], [`token`]) are public so
//! they can be fuzzed, property-tested and benchmarked on their own; the node itself,
//! its events and its ids are re-exported here.

pub mod bencode;
pub mod bep44;
pub mod defence;
pub(crate) mod event;
pub(crate) mod id;
pub mod krpc;
pub(crate) mod node;
pub mod routing;
pub mod storage;
pub mod token;
mod traversal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};

/// Gives back a hash map's room once it holds a quarter of it or less.
///
/// A map keeps the size of its largest burst otherwise (the sources a node heard in its
/// busiest second, its most queries in flight), and a simulated network holds a million
/// of them. Shrinking to twice what is left at a quarter keeps the cost amortised: each
/// rehash follows at least as many removals, and the map can double before it grows. No
/// map this is used on is iterated in an order that could leak, so nothing else changes.
pub(crate) fn release_slack<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if map.capacity() > 3 && map.len() * 4 <= map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// Frees the last node of a B-tree map its last entry left: `BTreeMap` keeps its root
/// leaf, room for 11 entries, for good (4.5 KB for a node's running lookups, a few hundred
/// bytes for each set of deadlines, on every node that ever used them). An empty map is
/// an empty map: nothing else changes.
pub(crate) fn release_empty_map<K, V>(map: &mut BTreeMap<K, V>) {
    if map.is_empty() {
        *map = BTreeMap::new();
    }
}

/// [`release_empty_map`] for a set.
pub(crate) fn release_empty_set<T>(set: &mut BTreeSet<T>) {
    if set.is_empty() {
        *set = BTreeSet::new();
    }
}

pub use bep44::{ImmutableItem, Item, MutableItem, PutError, Target};
pub use event::{Event, Outcome, QueryError, QueryId};
pub use id::{Distance, ID_LEN, Key, MAX_KEY_LEN, NodeId, hex, unhex};
pub use node::state;
pub use node::{
    Config, DropReason, MAX_WATCHES, MAX_WATCHES_PER_SOURCE, MethodCounts, Node, Stats, Transmit,
    WATCH_TTL,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_gives_back_room_at_a_quarter_full_and_not_before() {
        let mut map: HashMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        let grown = map.capacity();
        let shrink_below = grown / 4;

        for i in 0..1000 - shrink_below as u32 - 1 {
            map.remove(&i);
            release_slack(&mut map);
        }
        let above_a_quarter = map.capacity();
        for i in 1000 - shrink_below as u32 - 1..900 {
            map.remove(&i);
            release_slack(&mut map);
        }

        // Removals leave tombstones that count against `capacity`, so it sags a little.
        assert!(
            above_a_quarter > grown * 3 / 4,
            "{above_a_quarter} of {grown}"
        );
        assert!(map.capacity() < grown / 2, "{} of {grown}", map.capacity());
        assert!((900..1000).all(|i| map.get(&i) == Some(&i)));
    }
}
