//! What this Grape's API did lately, for the dashboard: the services announced through it
//! and the names it looked up.
//!
//! Bounded: each log keeps at most `cap` keys and forgets the least recently touched first,
//! so a client announcing or looking up endless distinct names costs a fixed amount of
//! memory and keeps `/status` cheap. Nothing here changes what the API answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Keys with a value and the time they were last touched, at most `cap` of them.
#[derive(Debug)]
pub(crate) struct Recent<K: Ord + Clone, V> {
    cap: usize,
    entries: BTreeMap<K, (Instant, V)>,
    /// Every key by its last touch, oldest first: what to forget past the cap.
    by_time: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Clone, V> Recent<K, V> {
    /// An empty log holding at most `cap` keys (0 keeps nothing).
    pub(crate) fn new(cap: usize) -> Self {
        Recent {
            cap,
            entries: BTreeMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// Records `value` for `key` at `now`, forgetting the stalest key past the cap.
    pub(crate) fn insert(&mut self, now: Instant, key: K, value: V) {
        if self.cap == 0 {
            return;
        }
        if let Some((at, _)) = self.entries.remove(&key) {
            self.by_time.remove(&(at, key.clone()));
        }
        self.by_time.insert((now, key.clone()));
        self.entries.insert(key, (now, value));
        while self.entries.len() > self.cap {
            let Some((_, stalest)) = self.by_time.pop_first() else {
                break;
            };
            self.entries.remove(&stalest);
        }
    }

    /// Marks `key` as touched at `now`, keeping its value; false if it is not held.
    pub(crate) fn touch(&mut self, now: Instant, key: &K) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        self.by_time.remove(&(entry.0, key.clone()));
        entry.0 = now;
        self.by_time.insert((now, key.clone()));
        true
    }

    /// Marks `key` as touched at `at` unless it was touched later already; false if it is
    /// not held.
    pub(crate) fn touch_if_later(&mut self, at: Instant, key: &K) -> bool {
        match self.entries.get(key) {
            Some((last, _)) if *last >= at => true,
            Some(_) => self.touch(at, key),
            None => false,
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&mut self, key: &K) {
        if let Some((at, _)) = self.entries.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    /// Every key with its last touch and value, most recent first.
    pub(crate) fn newest_first(&self) -> impl Iterator<Item = (&K, Instant, &V)> + '_ {
        self.by_time.iter().rev().filter_map(|(_, key)| {
            let (at, value) = self.entries.get(key)?;
            Some((key, *at, value))
        })
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn past_the_cap_the_stalest_key_goes() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut log = Recent::new(2);

        log.insert(at(0), "a", 1);
        log.insert(at(1), "b", 2);
        assert!(log.touch(at(2), &"a"));
        log.insert(at(3), "c", 3);

        let keys: Vec<&str> = log.newest_first().map(|(k, _, _)| *k).collect();
        assert_eq!(keys, ["c", "a"]);
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn insert_again_replaces_and_remove_forgets() {
        let t0 = Instant::now();
        let mut log = Recent::new(4);

        log.insert(t0, 1, "old");
        log.insert(t0 + Duration::from_secs(1), 1, "new");
        assert_eq!(
            log.newest_first().map(|(_, _, v)| *v).collect::<Vec<_>>(),
            ["new"]
        );
        log.remove(&1);
        assert_eq!(log.len(), 0);
        assert!(!log.touch(t0, &1));
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let mut log = Recent::new(0);
        log.insert(Instant::now(), 1, ());
        assert_eq!(log.len(), 0);
    }
}
