//! The BEP-44 item store: immutable and mutable items by target, with the `cas` and
//! `seq` rules that keep a mutable item from going backwards.
//!
//! Items live `max_age` after their last put (BEP 44 suggests 2 hours). A put is
//! checked completely before anything changes, so a rejected put leaves the store as
//! it was.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::dht::bep44::{Item, PutError, Target};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    item: Item,
    at: Instant,
}

/// Items stored for others, at most `max_items`, each for `max_age` after its last put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemStore {
    max_items: usize,
    max_age: Duration,
    items: BTreeMap<Target, Stored>,
    /// Every stored item by its last put: the expiry queue and the eviction order.
    by_time: BTreeSet<(Instant, Target)>,
    evicted: u64,
}

impl ItemStore {
    /// Creates an empty store. A `max_items` of zero stores nothing.
    pub fn new(max_items: usize, max_age: Duration) -> Self {
        ItemStore {
            max_items,
            max_age,
            items: BTreeMap::new(),
            by_time: BTreeSet::new(),
            evicted: 0,
        }
    }

    /// Stores `item` or refreshes the stored copy, following BEP 44.
    ///
    /// An immutable item is stored or refreshed. A mutable item replaces the stored one
    /// only with a higher `seq`; the same `seq` with the same `v` refreshes it. `cas`
    /// applies only to mutable items that are already stored, as BEP 44 says. A new
    /// item past `max_items` evicts the least recently put one (counted in
    /// [`ItemStore::evicted`]).
    ///
    /// # Errors
    /// [`PutError::CasMismatch`] when `cas` is given and differs from the stored `seq`
    /// (checked first); [`PutError::SeqTooLow`] when `seq` is below the stored one, or
    /// equal with a different `v`. On error nothing changes.
    pub fn put(&mut self, now: Instant, item: Item, cas: Option<i64>) -> Result<(), PutError> {
        self.expire(now);
        let target = item.target();
        let Some(stored) = self.items.get(&target) else {
            self.insert_new(now, target, item);
            return Ok(());
        };
        let replace = match (&stored.item, &item) {
            (Item::Mutable(old), Item::Mutable(new)) => {
                if cas.is_some_and(|cas| cas != old.seq()) {
                    return Err(PutError::CasMismatch);
                }
                if new.seq() < old.seq() || (new.seq() == old.seq() && new.v() != old.v()) {
                    return Err(PutError::SeqTooLow);
                }
                new.seq() > old.seq()
            }
            (Item::Immutable(_), Item::Immutable(_)) => false,
            // One target, two kinds: only a SHA-1 collision gets here. Take the new one.
            _ => true,
        };
        let old_at = stored.at;
        self.by_time.remove(&(old_at, target));
        self.by_time.insert((now, target));
        if let Some(stored) = self.items.get_mut(&target) {
            stored.at = now;
            if replace {
                stored.item = item;
            }
        }
        Ok(())
    }

    /// Returns the item stored under `target`, unless it has expired by `now`.
    pub fn get(&self, now: Instant, target: &Target) -> Option<&Item> {
        let stored = self.items.get(target)?;
        (!self.is_expired(stored.at, now)).then_some(&stored.item)
    }

    /// Drops the item under `target` (its putter went over its per-source cap); reports
    /// whether it was there.
    pub fn remove(&mut self, target: &Target) -> bool {
        let Some(stored) = self.items.remove(target) else {
            return false;
        };
        self.by_time.remove(&(stored.at, *target));
        true
    }

    /// Drops every item not re-put within `max_age` before `now`.
    ///
    /// Costs O(log n) per dropped item; calling it before anything is due does nothing.
    pub fn expire(&mut self, now: Instant) {
        while self
            .by_time
            .first()
            .is_some_and(|(at, _)| self.is_expired(*at, now))
        {
            if let Some((_, target)) = self.by_time.pop_first() {
                self.items.remove(&target);
            }
        }
    }

    /// When the next item expires; `None` when the store is empty.
    pub fn next_expiry(&self) -> Option<Instant> {
        let (at, _) = self.by_time.first()?;
        at.checked_add(self.max_age)
    }

    /// Number of stored items (expired ones count until expired).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Reports whether no item is stored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items were dropped because `max_items` was reached (not by expiry).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Each stored item with its last put, in target order (for the dashboard; expired
    /// items show until expiry runs).
    pub fn iter(&self) -> impl Iterator<Item = (&Target, &Item, Instant)> + '_ {
        self.items.iter().map(|(t, s)| (t, &s.item, s.at))
    }

    fn insert_new(&mut self, now: Instant, target: Target, item: Item) {
        if self.items.len() >= self.max_items {
            let victim = self.by_time.pop_first();
            if let Some((_, victim)) = victim {
                self.items.remove(&victim);
                tracing::debug!(target = %victim, "item store full: evicted item");
            }
            self.note_evicted();
            if self.max_items == 0 {
                return;
            }
        }
        self.by_time.insert((now, target));
        self.items.insert(target, Stored { item, at: now });
    }

    fn note_evicted(&mut self) {
        let before = self.evicted;
        self.evicted = before.saturating_add(1);
        super::warn_on_eviction("items", before, self.evicted, self.max_items);
    }

    fn is_expired(&self, at: Instant, now: Instant) -> bool {
        at.checked_add(self.max_age).is_some_and(|end| now >= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::bep44::{ImmutableItem, MutableItem};

    const AGE: Duration = Duration::from_secs(2 * 60 * 60);
    const SECRET: [u8; 32] = [3; 32];

    /// Any instant will do as the origin: the tests only use offsets from it.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn mutable(seq: i64, v: &[u8]) -> Item {
        MutableItem::sign(&SECRET, b"salt".to_vec(), seq, v.to_vec())
            .expect("test values are valid")
            .into()
    }

    fn immutable(v: &[u8]) -> Item {
        ImmutableItem::new(v.to_vec())
            .expect("test values are valid")
            .into()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn immutable_put_then_get() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        let item = immutable(b"5:hello");

        let result = store.put(t0, item.clone(), None);

        assert_eq!(result, Ok(()));
        assert_eq!(store.get(t0, &item.target()), Some(&item));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn higher_seq_replaces() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        store.put(t0, mutable(1, b"1:a"), None).expect("first put");

        let result = store.put(t0 + secs(1), mutable(2, b"1:b"), Some(1));

        assert_eq!(result, Ok(()));
        let target = mutable(1, b"1:a").target();
        assert_eq!(store.get(t0 + secs(1), &target), Some(&mutable(2, b"1:b")));
    }

    #[test]
    fn lower_seq_is_refused_with_302() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        store.put(t0, mutable(5, b"1:a"), None).expect("first put");
        let before = store.clone();

        let result = store.put(t0 + secs(1), mutable(4, b"1:b"), None);

        assert_eq!(result.map_err(|e| e.code()), Err(302));
        assert_eq!(store, before);
    }

    #[test]
    fn same_seq_different_value_is_refused() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        store.put(t0, mutable(5, b"1:a"), None).expect("first put");
        let before = store.clone();

        let result = store.put(t0 + secs(1), mutable(5, b"1:b"), None);

        assert_eq!(result, Err(PutError::SeqTooLow));
        assert_eq!(store, before);
    }

    #[test]
    fn same_seq_same_value_refreshes() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        store.put(t0, mutable(5, b"1:a"), None).expect("first put");

        let result = store.put(t0 + secs(100), mutable(5, b"1:a"), Some(5));

        assert_eq!(result, Ok(()));
        assert_eq!(store.next_expiry(), Some(t0 + secs(100) + AGE));
    }

    #[test]
    fn cas_mismatch_is_301_and_checked_before_seq() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        store.put(t0, mutable(5, b"1:a"), None).expect("first put");
        let before = store.clone();

        let newer = store.put(t0, mutable(6, b"1:b"), Some(4));
        let older = store.put(t0, mutable(3, b"1:b"), Some(4));

        assert_eq!(newer, Err(PutError::CasMismatch));
        assert_eq!(older.map_err(|e| e.code()), Err(301));
        assert_eq!(store, before);
    }

    #[test]
    fn cas_is_ignored_without_a_stored_item() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);

        let result = store.put(t0, mutable(5, b"1:a"), Some(99));

        assert_eq!(result, Ok(()));
    }

    #[test]
    fn items_expire_after_max_age() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        let item = immutable(b"i1e");
        store.put(t0, item.clone(), None).expect("put");

        let before = store.get(t0 + AGE - secs(1), &item.target()).cloned();
        let after = store.get(t0 + AGE, &item.target()).cloned();
        store.expire(t0 + AGE);

        assert_eq!(before, Some(item));
        assert_eq!(after, None);
        assert!(store.is_empty());
        assert_eq!(store.next_expiry(), None);
    }

    #[test]
    fn expired_item_does_not_block_a_lower_seq() {
        let t0 = epoch();
        let mut store = ItemStore::new(10, AGE);
        store.put(t0, mutable(9, b"1:a"), None).expect("first put");

        let result = store.put(t0 + AGE, mutable(1, b"1:b"), Some(9));

        assert_eq!(result, Ok(()));
        assert_eq!(
            store
                .get(t0 + AGE, &mutable(1, b"1:b").target())
                .and_then(Item::seq),
            Some(1)
        );
    }

    #[test]
    fn full_store_evicts_least_recently_put() {
        let t0 = epoch();
        let mut store = ItemStore::new(2, AGE);
        store.put(t0, immutable(b"1:a"), None).expect("put a");
        store
            .put(t0 + secs(1), immutable(b"1:b"), None)
            .expect("put b");
        store
            .put(t0 + secs(2), immutable(b"1:a"), None)
            .expect("refresh a");

        store
            .put(t0 + secs(3), immutable(b"1:c"), None)
            .expect("put c");

        let now = t0 + secs(3);
        assert_eq!(store.len(), 2);
        assert_eq!(store.evicted(), 1);
        assert!(store.get(now, &immutable(b"1:b").target()).is_none());
        assert!(store.get(now, &immutable(b"1:a").target()).is_some());
        assert!(store.get(now, &immutable(b"1:c").target()).is_some());
    }

    #[test]
    fn zero_cap_stores_nothing_but_counts() {
        let mut store = ItemStore::new(0, AGE);

        let result = store.put(epoch(), immutable(b"1:a"), None);

        assert_eq!(result, Ok(()));
        assert!(store.is_empty());
        assert_eq!(store.evicted(), 1);
    }
}
