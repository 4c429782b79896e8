//! Per-source storage caps: how many announces or BEP-44 items one source IP holds here,
//! and which of them goes first when it wants more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::subnet::source_key;

/// What one source has stored, by last store time.
#[derive(Clone, Debug)]
struct Held<K> {
    at: BTreeMap<K, Instant>,
    by_time: BTreeSet<(Instant, K)>,
}

/// The entries each source stored, at most `cap` per source: past it the source's own
/// stalest entry is handed back for eviction, so a flooding source only ever pushes out its
/// own data, never another source's.
///
/// Each entry is charged to one owner only: the first source that stored it (while its
/// record lasts). Charging every source that stored it would let any of them evict it,
/// so a flooder could push out an item others hold by storing it once itself. Charging
/// the latest would be no better: a flooder would take an entry over by storing it again,
/// then evict it with its own next stores. With the first putter as owner, a source can
/// only ever evict what it stored first; another source storing the same entry later is
/// charged nothing, and the store's own refresh keeps the entry alive for it. If the owner
/// does evict it, the next store by anyone makes that source its owner.
///
/// The quota only keeps records; the store holds the data. A record whose entry the store
/// already dropped (expired, or evicted by its global cap) costs nothing when evicted.
#[derive(Clone, Debug)]
pub struct SourceQuota<K> {
    cap: usize,
    max_age: Duration,
    exempt_loopback: bool,
    sources: HashMap<IpAddr, Held<K>>,
    /// The source each recorded entry is charged to.
    owners: BTreeMap<K, IpAddr>,
    evicted: u64,
}

impl<K: Ord + Clone> SourceQuota<K> {
    /// A quota of `cap` entries per source (at least 1), whose records lapse after
    /// `max_age` without a store (the store's own lifetime for them).
    pub fn new(cap: usize, max_age: Duration, exempt_loopback: bool) -> SourceQuota<K> {
        SourceQuota {
            cap: cap.max(1),
            max_age,
            exempt_loopback,
            sources: HashMap::new(),
            owners: BTreeMap::new(),
            evicted: 0,
        }
    }

    /// Records that `ip` stored `key` at `now`; returns the source's stalest entry when it
    /// now holds more than the cap. The caller evicts it from the store and reports with
    /// [`SourceQuota::note_evicted`] if it was still there. An entry another source owns
    /// is not charged to `ip` (see the type's docs).
    pub fn record(&mut self, now: Instant, ip: IpAddr, key: K) -> Option<K> {
        if self.exempt_loopback && ip.to_canonical().is_loopback() {
            return None;
        }
        let source = source_key(ip);
        match self.owners.get(&key) {
            Some(owner) if *owner != source => return None,
            Some(_) => {}
            None => {
                self.owners.insert(key.clone(), source);
            }
        }
        let held = self.sources.entry(source).or_insert_with(|| Held {
            at: BTreeMap::new(),
            by_time: BTreeSet::new(),
        });
        if let Some(old) = held.at.insert(key.clone(), now) {
            held.by_time.remove(&(old, key.clone()));
        }
        held.by_time.insert((now, key));
        if held.at.len() <= self.cap {
            return None;
        }
        let (_, stalest) = held.by_time.pop_first()?;
        held.at.remove(&stalest);
        self.owners.remove(&stalest);
        Some(stalest)
    }

    /// Forgets `key` stored by `ip` (an unannounce).
    pub fn forget(&mut self, ip: IpAddr, key: &K) {
        let source = source_key(ip);
        if let Some(held) = self.sources.get_mut(&source) {
            if let Some(at) = held.at.remove(key) {
                held.by_time.remove(&(at, key.clone()));
                self.owners.remove(key);
            }
            if held.at.is_empty() {
                self.sources.remove(&source);
            }
        }
    }

    /// Counts one entry evicted for its source's cap.
    pub fn note_evicted(&mut self) {
        self.evicted += 1;
    }

    /// Entries evicted because their source was over its cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Drops records older than the store's lifetime, and sources left with none.
    pub fn expire(&mut self, now: Instant) {
        let Some(cutoff) = now.checked_sub(self.max_age) else {
            return;
        };
        let owners = &mut self.owners;
        self.sources.retain(|_, held| {
            while let Some((at, key)) = held.by_time.first().cloned() {
                if at > cutoff {
                    break;
                }
                held.by_time.pop_first();
                held.at.remove(&key);
                owners.remove(&key);
            }
            !held.at.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    #[test]
    fn a_source_over_its_cap_gives_up_its_own_stalest_entry() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut q = SourceQuota::new(2, Duration::from_secs(120), true);

        assert_eq!(q.record(t, ip(1), "a"), None);
        assert_eq!(q.record(t + s, ip(1), "b"), None);
        assert_eq!(q.record(t + 2 * s, ip(2), "x"), None, "others do not count");
        assert_eq!(
            q.record(t + 3 * s, ip(1), "a"),
            None,
            "a refresh is no new entry"
        );
        assert_eq!(
            q.record(t + 4 * s, ip(1), "c"),
            Some("b"),
            "b is stalest now"
        );
        assert_eq!(q.record(t + 5 * s, ip(1), "d"), Some("a"));
    }

    #[test]
    fn an_entry_two_sources_stored_is_charged_to_the_first_only() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut q = SourceQuota::new(2, Duration::from_secs(120), true);
        q.record(t, ip(1), "shared");
        q.record(t + s, ip(2), "shared");

        // The later source floods: it never gets "shared" handed back for eviction.
        let from_later: Vec<Option<&str>> = ["b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, k)| q.record(t + (2 + i as u32) * s, ip(2), k))
            .collect();
        // The owner's own stores still count it.
        let from_owner = (
            q.record(t + 10 * s, ip(1), "x"),
            q.record(t + 11 * s, ip(1), "y"),
        );

        assert_eq!(from_later, [None, None, Some("b"), Some("c")]);
        assert_eq!(from_owner, (None, Some("shared")));
        // Once evicted it has no owner: the next store by anyone owns it.
        assert_eq!(q.record(t + 12 * s, ip(2), "shared"), Some("d"));
        assert_eq!(q.owners.get("shared"), Some(&ip(2)));
    }

    #[test]
    fn owners_lapse_with_their_records() {
        let t = Instant::now();
        let mut q = SourceQuota::new(1, Duration::from_secs(120), true);
        q.record(t, ip(1), "shared");
        q.forget(ip(1), &"shared");
        assert!(q.owners.is_empty(), "forgotten");
        q.record(t, ip(1), "shared");

        q.expire(t + Duration::from_secs(121));

        assert!(q.owners.is_empty(), "expired");
        assert_eq!(
            q.record(t + Duration::from_secs(121), ip(2), "shared"),
            None
        );
        assert_eq!(q.owners.get("shared"), Some(&ip(2)));
    }

    #[test]
    fn loopback_is_exempt_and_forgotten_entries_free_room() {
        let t = Instant::now();
        let lo = IpAddr::from([127, 0, 0, 1]);
        let mut q = SourceQuota::new(1, Duration::from_secs(120), true);

        assert_eq!(q.record(t, lo, 1), None);
        assert_eq!(q.record(t, lo, 2), None);
        assert_eq!(q.record(t, ip(1), 1), None);
        q.forget(ip(1), &1);
        assert_eq!(q.record(t, ip(1), 2), None);
    }

    #[test]
    fn expired_records_lapse() {
        let t = Instant::now();
        let mut q = SourceQuota::new(1, Duration::from_secs(120), true);
        assert_eq!(q.record(t, ip(1), 1), None);

        q.expire(t + Duration::from_secs(121));

        assert_eq!(q.record(t + Duration::from_secs(121), ip(1), 2), None);
        assert!(q.sources.len() == 1);
    }
}
