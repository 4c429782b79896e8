//! The table: buckets by shared-prefix length, split on demand (BEP 5).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::Rng;

use super::bucket::{Bucket, Cached, Entry};
use super::{Failed, Ignored, Insert, MAX_BUCKETS, NodeInfo, NodeState};
use crate::id::NodeId;

/// A BEP 5 routing table for one address family.
///
/// Bucket `i` holds the nodes whose id shares exactly `i` leading bits with ours; the
/// last bucket holds every node sharing at least as many, so it covers our own id. Only
/// that last bucket splits when full (BEP 5), which gives at most [`MAX_BUCKETS`]
/// buckets. Each bucket holds at most k nodes plus a replacement cache of at most k
/// nodes that answered us while the bucket was full, so the table never holds more than
/// `2 * k * MAX_BUCKETS` nodes.
///
/// No id and no address appears twice, across buckets and caches alike, and our own id
/// never appears.
#[derive(Clone)]
pub struct RoutingTable {
    own: NodeId,
    k: usize,
    /// Never empty, at most [`MAX_BUCKETS`] long.
    buckets: Vec<Bucket>,
    /// Every address in a bucket or a cache, to the id there. Only looked up, never
    /// iterated, so its order cannot leak.
    by_addr: HashMap<SocketAddr, NodeId>,
}

/// Which kind of contact we had with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Response,
    Query,
}

/// Where an id sits in the table.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Entry { bucket: usize, index: usize },
    Cache { bucket: usize, index: usize },
}

impl RoutingTable {
    /// Creates an empty table around our own id with buckets of `k` nodes (8 in BEP 5;
    /// a `k` of 0 is taken as 1).
    pub fn new(own: NodeId, k: usize) -> Self {
        RoutingTable {
            own,
            k: k.max(1),
            buckets: vec![Bucket::default()],
            by_addr: HashMap::new(),
        }
    }

    /// Our own id, the one the buckets are laid out around.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Most nodes a bucket (and, separately, its replacement cache) holds.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Records that `node` answered one of our queries, adding it if there is room.
    ///
    /// A known node becomes good again. A new node takes a free slot (splitting the
    /// bucket that covers our own id if needed) or the slot of a bad node; if its bucket
    /// is full of nodes that are not bad, it waits in the replacement cache and the
    /// result lists the bucket's questionable nodes to ping (ping-before-evict).
    /// A new id at a known address replaces the old entry (the host restarted with a new
    /// id); a known id at a new address is ignored unless the old entry is bad.
    pub fn heard_response(&mut self, now: Instant, node: NodeInfo) -> Insert {
        self.heard(now, node, Heard::Response)
    }

    /// Records that `node` sent us a query.
    ///
    /// BEP 5 leaves open whether querying nodes enter the table. This table adds them,
    /// but only into free room (possibly after splitting our own bucket): a query never
    /// evicts a node, takes a bad node's slot or enters the replacement cache, because
    /// anyone can send a query and only answers show that a node is reachable. A node
    /// added this way is unverified ([`NodeState::Questionable`]) until it answers, and
    /// [`RoutingTable::take_pings`] hands it out for a ping at once. A query from a known
    /// node keeps it good if it has answered us before (BEP 5).
    pub fn heard_query(&mut self, now: Instant, node: NodeInfo) -> Insert {
        self.heard(now, node, Heard::Query)
    }

    /// Records that a query to `id` timed out.
    ///
    /// After [`super::MAX_FAILURES`] failures in a row the node is bad; a bad node is
    /// replaced at once by the freshest node of its bucket's replacement cache, if any.
    pub fn failed(&mut self, now: Instant, id: &NodeId) -> Failed {
        match self.find(id) {
            None => Failed::Unknown,
            Some(Slot::Cache { bucket, index }) => {
                // A cached node that fails is no better than none.
                let cached = self.buckets[bucket].cache.remove(index);
                self.by_addr.remove(&cached.info.addr);
                Failed::Unknown
            }
            Some(Slot::Entry { bucket, index }) => {
                let b = &mut self.buckets[bucket];
                let entry = &mut b.entries[index];
                entry.record_failure();
                if !entry.is_bad() {
                    return Failed::Counted;
                }
                let Some(cached) = b.cache.pop() else {
                    return Failed::Bad;
                };
                let old = std::mem::replace(entry, cached.into_entry(now)).info;
                b.last_changed = Some(now);
                self.by_addr.remove(&old.addr);
                tracing::debug!(old = %old.id, new = %cached.info.id, "bad node replaced from cache");
                Failed::Replaced {
                    old,
                    new: cached.info,
                }
            }
        }
    }

    /// Returns up to `n` nodes that are not bad, closest to `key` first.
    ///
    /// Distance is [`NodeId::distance`], so `key` may have any length; equal distances
    /// (possible for keys shorter than an id) are ordered by id. One pass over the table
    /// keeps the best `n` in a heap inside the result, so nothing else is allocated.
    pub fn closest(&self, key: &[u8], n: usize) -> Vec<NodeInfo> {
        let rank = |node: &NodeInfo| (node.id.distance(key), node.id);
        let mut best: Vec<NodeInfo> = Vec::with_capacity(n.min(self.len()));
        if n == 0 {
            return best;
        }
        let candidates = self.buckets.iter().flat_map(|b| &b.entries);
        for entry in candidates.filter(|e| !e.is_bad()) {
            if best.len() < n {
                best.push(entry.info);
                sift_up(&mut best, rank);
            } else if best
                .first()
                .is_some_and(|worst| rank(&entry.info) < rank(worst))
            {
                best[0] = entry.info;
                sift_down(&mut best, rank);
            }
        }
        best.sort_unstable_by_key(rank);
        best
    }

    /// Returns one random id to look up for every bucket unchanged for
    /// [`super::REFRESH_AFTER`], and marks those buckets refreshed (BEP 5).
    ///
    /// Each id lies in its bucket's range, so the lookup fills that bucket. Ids come in
    /// bucket order, farthest bucket first.
    pub fn refresh(&mut self, now: Instant, rng: &mut impl Rng) -> Vec<NodeId> {
        let own = self.own;
        let mut targets = Vec::new();
        for (prefix_len, bucket) in self.buckets.iter_mut().enumerate() {
            if bucket.refresh_due().is_some_and(|due| due <= now) {
                targets.push(own.random_in_bucket(prefix_len, rng));
                bucket.last_changed = Some(now);
            }
        }
        targets
    }

    /// Returns the nodes to ping now, and marks them as being pinged.
    ///
    /// These are the questionable nodes: silent for [`super::GOOD_FOR`], or unverified.
    /// Report each ping's outcome with [`RoutingTable::heard_response`] or
    /// [`RoutingTable::failed`]; a node with one failure is handed out again at once for
    /// the second try, and a ping never reported back is handed out again after
    /// [`super::PING_RETRY`]. Bad nodes are not pinged: they wait to be replaced.
    pub fn take_pings(&mut self, now: Instant) -> Vec<NodeInfo> {
        let mut pings = Vec::new();
        for bucket in &mut self.buckets {
            pings.extend(take_due(&mut bucket.entries, now));
        }
        pings
    }

    /// Returns when the table next needs [`RoutingTable::refresh`] or
    /// [`RoutingTable::take_pings`]; `None` when nothing is scheduled.
    ///
    /// The time may already be past: then call them now. Once both were called at `now`,
    /// this is later than `now` (or `None`).
    pub fn next_timeout(&self) -> Option<Instant> {
        let refresh = self.buckets.iter().filter_map(Bucket::refresh_due);
        let pings = self
            .buckets
            .iter()
            .flat_map(|b| &b.entries)
            .filter_map(Entry::ping_due);
        refresh.chain(pings).min()
    }

    /// Number of nodes in the buckets (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.entries.len()).sum()
    }

    /// True when no bucket holds a node.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.entries.is_empty())
    }

    /// Iterates over the nodes in the buckets with their state at `now`, in bucket order.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (NodeInfo, NodeState)> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| &b.entries)
            .map(move |e| (e.info, e.state(now)))
    }

    /// True when `id` is in a bucket (a node waiting in a replacement cache is not).
    pub fn contains(&self, id: &NodeId) -> bool {
        matches!(self.find(id), Some(Slot::Entry { .. }))
    }

    /// The state at `now` of the node `id`, if it is in a bucket.
    pub fn state(&self, now: Instant, id: &NodeId) -> Option<NodeState> {
        match self.find(id)? {
            Slot::Entry { bucket, index } => Some(self.buckets[bucket].entries[index].state(now)),
            Slot::Cache { .. } => None,
        }
    }

    /// Number of buckets, 1 to [`MAX_BUCKETS`].
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Checks the table's invariants; the error says which one broke.
    ///
    /// # Errors
    /// A description of the first broken invariant: a bucket or cache over k, a node in
    /// the wrong bucket, our own id present, a duplicate id or address, the address index
    /// out of step, or a cache waiting beside free room or a bad node.
    #[cfg(any(test, feature = "sim"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        use std::collections::BTreeSet;

        if self.buckets.is_empty() || self.buckets.len() > MAX_BUCKETS {
            return Err(format!("{} buckets", self.buckets.len()));
        }
        let last = self.buckets.len() - 1;
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, bucket) in self.buckets.iter().enumerate() {
            if bucket.entries.len() > self.k || bucket.cache.len() > self.k {
                return Err(format!(
                    "bucket {i}: {} nodes, {} cached, k = {}",
                    bucket.entries.len(),
                    bucket.cache.len(),
                    self.k
                ));
            }
            if !bucket.cache.is_empty()
                && (bucket.entries.len() < self.k || bucket.entries.iter().any(Entry::is_bad))
            {
                return Err(format!("bucket {i}: cache waits beside room or a bad node"));
            }
            let infos = bucket.entries.iter().map(|e| e.info);
            for info in infos.chain(bucket.cache.iter().map(|c| c.info)) {
                let prefix = self.own.shared_prefix_len(&info.id);
                if info.id == self.own {
                    return Err(format!("bucket {i}: own id"));
                }
                if prefix != i && !(i == last && prefix > last) {
                    return Err(format!("bucket {i}: {info:?} shares {prefix} bits"));
                }
                if !usable_addr(&info.addr) {
                    return Err(format!("bucket {i}: unusable address {info:?}"));
                }
                if !ids.insert(info.id) || !addrs.insert(info.addr) {
                    return Err(format!("bucket {i}: duplicate {info:?}"));
                }
                if self.by_addr.get(&info.addr) != Some(&info.id) {
                    return Err(format!("address index misses {info:?}"));
                }
            }
        }
        if self.by_addr.len() != addrs.len() {
            return Err(format!(
                "address index has {} entries for {} nodes",
                self.by_addr.len(),
                addrs.len()
            ));
        }
        Ok(())
    }

    fn heard(&mut self, now: Instant, node: NodeInfo, how: Heard) -> Insert {
        if node.id == self.own {
            return Insert::Ignored(Ignored::OwnId);
        }
        if !usable_addr(&node.addr) {
            return Insert::Ignored(Ignored::BadAddr);
        }
        // Buckets that lose a node here get refilled from their cache at the end, after
        // the new node had its chance at the slot.
        let mut freed = None;
        match self.find(&node.id) {
            None => {}
            Some(Slot::Entry { bucket, index }) => {
                let b = &mut self.buckets[bucket];
                let entry = &mut b.entries[index];
                if entry.info.addr == node.addr {
                    match how {
                        Heard::Response => {
                            entry.record_response(now);
                            b.last_changed = Some(now);
                        }
                        Heard::Query => entry.last_query = Some(now),
                    }
                    return Insert::Updated;
                }
                if !entry.is_bad() {
                    return Insert::Ignored(Ignored::IdElsewhere);
                }
                // The old address stopped answering: start afresh at the new one.
                self.remove_entry(bucket, index);
                freed = Some(bucket);
            }
            Some(Slot::Cache { bucket, index }) => {
                let cache = &mut self.buckets[bucket].cache;
                if cache[index].info.addr != node.addr {
                    return Insert::Ignored(Ignored::IdElsewhere);
                }
                if how == Heard::Query {
                    return Insert::Ignored(Ignored::Full);
                }
                let mut cached = cache.remove(index);
                cached.last_response = now;
                cache.push(cached);
                return Insert::Cached {
                    ping: take_due(&mut self.buckets[bucket].entries, now).collect(),
                };
            }
        }
        if let Some(&old) = self.by_addr.get(&node.addr) {
            tracing::debug!(old = %old, new = %node.id, addr = %node.addr, "address changed id");
            if let Some(bucket) = self.remove_id(&old) {
                freed = Some(bucket);
            }
        }
        let result = self.insert_new(now, node, how);
        if let Some(bucket) = freed {
            self.refill(now, bucket);
        }
        result
    }

    /// Inserts a node whose id and address are in neither a bucket nor a cache.
    fn insert_new(&mut self, now: Instant, node: NodeInfo, how: Heard) -> Insert {
        loop {
            let b = self.bucket_index(&node.id);
            let can_split = b + 1 == self.buckets.len() && b + 1 < MAX_BUCKETS;
            let k = self.k;
            let bucket = &mut self.buckets[b];
            if bucket.entries.len() < k {
                bucket.entries.push(match how {
                    Heard::Response => Entry::responded(node, now),
                    Heard::Query => Entry::queried(node, now),
                });
                bucket.last_changed = Some(now);
                self.by_addr.insert(node.addr, node.id);
                return Insert::Added;
            }
            if can_split {
                self.split(now);
                continue;
            }
            if how == Heard::Query {
                return Insert::Ignored(Ignored::Full);
            }
            if let Some(slot) = worst_bad(&mut bucket.entries) {
                let old = std::mem::replace(slot, Entry::responded(node, now)).info;
                bucket.last_changed = Some(now);
                self.by_addr.remove(&old.addr);
                self.by_addr.insert(node.addr, node.id);
                tracing::debug!(old = %old.id, new = %node.id, "bad node replaced");
                return Insert::Added;
            }
            if bucket.cache.len() >= k {
                // Full cache: the stalest candidate makes way.
                let stale = bucket.cache.remove(0);
                self.by_addr.remove(&stale.info.addr);
            }
            bucket.cache.push(Cached {
                info: node,
                last_response: now,
            });
            self.by_addr.insert(node.addr, node.id);
            return Insert::Cached {
                ping: take_due(&mut bucket.entries, now).collect(),
            };
        }
    }

    /// Splits the last bucket: nodes sharing more bits with us than its index move to a
    /// new last bucket.
    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len();
        let own = self.own;
        let goes = |info: &NodeInfo| own.shared_prefix_len(&info.id) >= depth;
        let mut new = Bucket {
            last_changed: Some(now),
            ..Bucket::default()
        };
        if let Some(old) = self.buckets.last_mut() {
            let (moved, kept) = std::mem::take(&mut old.entries)
                .into_iter()
                .partition(|e| goes(&e.info));
            old.entries = kept;
            new.entries = moved;
            let (moved, kept) = std::mem::take(&mut old.cache)
                .into_iter()
                .partition(|c| goes(&c.info));
            old.cache = kept;
            new.cache = moved;
        }
        self.buckets.push(new);
        self.refill(now, depth - 1);
        self.refill(now, depth);
    }

    /// Moves the freshest cached nodes into free slots of bucket `b`.
    fn refill(&mut self, now: Instant, b: usize) {
        let k = self.k;
        let bucket = &mut self.buckets[b];
        while bucket.entries.len() < k {
            let Some(cached) = bucket.cache.pop() else {
                break;
            };
            bucket.entries.push(cached.into_entry(now));
            bucket.last_changed = Some(now);
        }
    }

    /// Removes `id` from wherever it is; returns its bucket if it left a free slot.
    fn remove_id(&mut self, id: &NodeId) -> Option<usize> {
        match self.find(id)? {
            Slot::Entry { bucket, index } => {
                self.remove_entry(bucket, index);
                Some(bucket)
            }
            Slot::Cache { bucket, index } => {
                let cached = self.buckets[bucket].cache.remove(index);
                self.by_addr.remove(&cached.info.addr);
                None
            }
        }
    }

    fn remove_entry(&mut self, bucket: usize, index: usize) {
        let entry = self.buckets[bucket].entries.remove(index);
        self.by_addr.remove(&entry.info.addr);
    }

    fn find(&self, id: &NodeId) -> Option<Slot> {
        let bucket = self.bucket_index(id);
        let b = &self.buckets[bucket];
        if let Some(index) = b.entries.iter().position(|e| e.info.id == *id) {
            return Some(Slot::Entry { bucket, index });
        }
        let index = b.cache.iter().position(|c| c.info.id == *id)?;
        Some(Slot::Cache { bucket, index })
    }

    /// The bucket covering `id`: its shared-prefix length, capped at the last bucket.
    fn bucket_index(&self, id: &NodeId) -> usize {
        let last = self.buckets.len().saturating_sub(1);
        self.own.shared_prefix_len(id).min(last)
    }
}

impl fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingTable")
            .field("own", &self.own)
            .field("k", &self.k)
            .field("buckets", &self.buckets.len())
            .field("len", &self.len())
            .finish()
    }
}

/// True if a datagram can be sent to `addr` (loopback is fine: tests run on it).
fn usable_addr(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// The entries due for a ping at `now`, each marked as pinged as it is yielded.
fn take_due(entries: &mut [Entry], now: Instant) -> impl Iterator<Item = NodeInfo> + '_ {
    entries
        .iter_mut()
        .filter(move |e| e.ping_due().is_some_and(|due| due <= now))
        .map(move |e| {
            e.ping_sent = Some(now);
            e.info
        })
}

/// The bad entry to replace first: the one that failed most, the earliest on a tie.
fn worst_bad(entries: &mut [Entry]) -> Option<&mut Entry> {
    let mut worst: Option<&mut Entry> = None;
    for e in entries.iter_mut().filter(|e| e.is_bad()) {
        if worst.as_ref().is_none_or(|w| e.failures > w.failures) {
            worst = Some(e);
        }
    }
    worst
}

/// Restores the max-heap order (farthest on top) after a push at the end.
fn sift_up<K: Ord>(heap: &mut [NodeInfo], rank: impl Fn(&NodeInfo) -> K) {
    let mut child = heap.len().saturating_sub(1);
    while child > 0 {
        let parent = (child - 1) / 2;
        if rank(&heap[child]) <= rank(&heap[parent]) {
            break;
        }
        heap.swap(child, parent);
        child = parent;
    }
}

/// Restores the max-heap order (farthest on top) after the top was replaced.
fn sift_down<K: Ord>(heap: &mut [NodeInfo], rank: impl Fn(&NodeInfo) -> K) {
    let mut parent = 0;
    loop {
        let left = 2 * parent + 1;
        let right = left + 1;
        let mut largest = parent;
        if left < heap.len() && rank(&heap[left]) > rank(&heap[largest]) {
            largest = left;
        }
        if right < heap.len() && rank(&heap[right]) > rank(&heap[largest]) {
            largest = right;
        }
        if largest == parent {
            return;
        }
        heap.swap(parent, largest);
        parent = largest;
    }
}
