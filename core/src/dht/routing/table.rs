//! The table: buckets by shared-prefix length, split on demand (BEP 5).

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::Rng;

use super::bucket::{Bucket, Cached, Entry, Tick};
use super::{Failed, Ignored, Insert, MAX_BUCKETS, NodeInfo, NodeState};
use crate::dht::defence::Subnet;
use crate::dht::id::{Distance, ID_LEN, NodeId};

/// A BEP 5 routing table for one address family.
///
/// Bucket `i` holds the nodes whose id shares exactly `i` leading bits with ours; the
/// last bucket holds every node sharing at least as many, so it covers our own id. Only
/// that last bucket splits when full (BEP 5), which gives at most [`MAX_BUCKETS`]
/// buckets. Each bucket holds at most [`RoutingTable::capacity`] nodes (k, or with
/// [`RoutingTable::with_wide_buckets`] more for the four farthest) plus a replacement
/// cache of at most k nodes that answered us while the bucket was full.
///
/// No id and no address appears twice, across buckets and caches alike, and our own id
/// never appears.
#[derive(Clone)]
pub struct RoutingTable {
    own: NodeId,
    k: usize,
    /// Whether the farthest buckets hold more than k (see [`RoutingTable::capacity`]).
    wide: bool,
    /// At most one node per public /24 or /64 in each bucket (see [`RoutingTable::with_subnet_rule`]).
    one_per_subnet: bool,
    /// Never empty, at most [`MAX_BUCKETS`] long.
    buckets: Vec<Bucket>,
    /// Every address in a bucket or a cache, as a 32-bit fingerprint ([`AddrIndex`]).
    by_addr: AddrIndex,
    /// Time zero of the [`Tick`]s the buckets keep: the first `now` the table saw.
    epoch: Option<Instant>,
}

/// Which addresses the table holds, 4 bytes per node (a map of addresses to ids cost
/// about 60 with a hash table's slack, a third of the table).
///
/// Sorted fingerprints, duplicates kept: a missing fingerprint proves the address is not
/// in the table, which is the answer for nearly every new node. A present one (the address
/// is there, or once in a few billion another with the same fingerprint) is confirmed by a
/// scan of the buckets, so the answer is exact whatever the hash. Never iterated in an
/// order that could leak.
#[derive(Clone, Debug, Default)]
struct AddrIndex {
    prints: Vec<u32>,
    hasher: RandomState,
}

impl AddrIndex {
    fn print(&self, addr: &SocketAddr) -> u32 {
        // The high half: the low bits of SipHash are as good, this just picks one half.
        (self.hasher.hash_one(addr) >> 32) as u32
    }

    /// Whether `addr` may be in the table: false only when it is certainly not.
    fn may_hold(&self, addr: &SocketAddr) -> bool {
        self.prints.binary_search(&self.print(addr)).is_ok()
    }

    fn insert(&mut self, addr: &SocketAddr) {
        let print = self.print(addr);
        let at = self.prints.partition_point(|&p| p < print);
        self.prints.insert(at, print);
    }

    fn remove(&mut self, addr: &SocketAddr) {
        if let Ok(at) = self.prints.binary_search(&self.print(addr)) {
            self.prints.remove(at);
        }
    }

    #[cfg(any(test, feature = "sim"))]
    fn len(&self) -> usize {
        self.prints.len()
    }
}

/// A node in a bucket with what an operator wants to see of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// Its id and address.
    pub info: NodeInfo,
    /// Its state when the report was made.
    pub state: NodeState,
    /// When we last heard from it (an answer or a query), or when it entered the table.
    pub last_heard: Instant,
    /// Our queries it failed in a row since it last answered.
    pub failures: u8,
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
            wide: false,
            one_per_subnet: false,
            buckets: vec![Bucket::default()],
            by_addr: AddrIndex::default(),
            epoch: None,
        }
    }

    /// Lets the four farthest buckets hold more than k nodes (see
    /// [`WIDE_BUCKETS`](super::WIDE_BUCKETS)); call before the first insert.
    #[must_use]
    pub fn with_wide_buckets(mut self, on: bool) -> Self {
        self.wide = on;
        self
    }

    /// Holds at most one node per /24 (IPv4) or /64 (IPv6) in each bucket and its
    /// replacement cache, for public addresses (private, loopback, link-local and
    /// unique-local ones are exempt, so a LAN or a test box still works). One host, or one
    /// hosting network, then cannot fill a bucket with ids of its choosing, as libtorrent
    /// has it. Call before the first insert.
    #[must_use]
    pub fn with_subnet_rule(mut self, on: bool) -> Self {
        self.one_per_subnet = on;
        self
    }

    /// Our own id, the one the buckets are laid out around.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// The bucket size of BEP 5: what a replacement cache holds, what the bucket that
    /// covers our own id holds, and the least any bucket holds.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Most nodes bucket `b` holds: k, or with wide buckets k times its
    /// [`WIDE_BUCKETS`](super::WIDE_BUCKETS) factor, but only k while it is the last
    /// bucket, so that splitting works as BEP 5 says and a small table stays k-bucketed
    /// around our own id.
    pub fn capacity(&self, b: usize) -> usize {
        let factor = if !self.wide || b + 1 == self.buckets.len() {
            1
        } else {
            super::WIDE_BUCKETS.get(b).copied().unwrap_or(1)
        };
        self.k.saturating_mul(factor)
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
    /// evicts another node, not even a bad one, and never enters the replacement cache,
    /// because anyone can send a query and only answers show that a node is reachable.
    /// The one exception is a bad entry with the querier's own id (at another address)
    /// or at the querier's own address (under another id): that entry goes. A node
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
        let now = self.tick(now);
        match self.find(id) {
            None => Failed::Unknown,
            Some(Slot::Cache { bucket, index }) => {
                // A cached node that fails is no better than none.
                let cached = self.buckets[bucket].cache.remove(index);
                self.by_addr.remove(&cached.addr());
                Failed::Unknown
            }
            Some(Slot::Entry { bucket, index }) => {
                let b = &mut self.buckets[bucket];
                b.update_entry(index, Entry::record_failure);
                if !b.entries[index].is_bad() {
                    return Failed::Counted;
                }
                let Some(cached) = take_preferred(&mut b.cache) else {
                    return Failed::Bad;
                };
                let entry = &mut b.entries[index];
                let new = cached.info();
                let old = std::mem::replace(entry, cached.into_entry(now)).info();
                b.last_changed = Some(now);
                b.settle_pings();
                self.by_addr.remove(&old.addr);
                tracing::debug!(old = %old.id, new = %new.id, "bad node replaced from cache");
                Failed::Replaced { old, new }
            }
        }
    }

    /// Removes every node whose address `gone` picks, from the buckets and the replacement
    /// caches alike, and refills the freed slots from what the caches still hold. Returns
    /// how many nodes left.
    ///
    /// For a source the node has banned: its datagrams are dropped from then on, so its
    /// nodes would only be pinged in vain and handed to other nodes' lookups. O(table).
    pub fn remove_where(&mut self, now: Instant, gone: impl Fn(&SocketAddr) -> bool) -> usize {
        let now = self.tick(now);
        let mut removed = 0;
        for b in 0..self.buckets.len() {
            let (bucket, by_addr) = (&mut self.buckets[b], &mut self.by_addr);
            let before = bucket.entries.len() + bucket.cache.len();
            let mut keep = |addr: &SocketAddr| {
                let stays = !gone(addr);
                if !stays {
                    by_addr.remove(addr);
                }
                stays
            };
            bucket.entries.retain(|e| keep(&e.addr()));
            bucket.cache.retain(|c| keep(&c.addr()));
            let left = before - (bucket.entries.len() + bucket.cache.len());
            if left > 0 {
                removed += left;
                self.refill(now, b);
                self.buckets[b].settle_pings();
            }
        }
        removed
    }

    /// Returns up to `n` nodes that are not bad, closest to `key` first.
    ///
    /// Distance is [`NodeId::distance`], so `key` may have any length; equal distances
    /// (possible for keys shorter than an id) are ordered by id. Buckets are visited
    /// nearest first and skipped once no node in them can beat the `n` kept so far; the
    /// kept nodes live in a heap inside the result, so nothing else is allocated.
    pub fn closest(&self, key: &[u8], n: usize) -> Vec<NodeInfo> {
        self.closest_where(key, n, |e| !e.is_bad())
    }

    /// Like [`RoutingTable::closest`], without the nodes that have never answered a query
    /// of ours and that `skip` picks. A node that has answered before keeps its place
    /// whatever `skip` says: it may only have been cut off for a while.
    pub fn closest_except_unanswered(
        &self,
        key: &[u8],
        n: usize,
        skip: impl Fn(&NodeInfo) -> bool,
    ) -> Vec<NodeInfo> {
        let skipped = |e: &Entry| e.last_response.is_none() && skip(&e.info());
        self.closest_where(key, n, |e| !e.is_bad() && !skipped(e))
    }

    /// Like [`RoutingTable::closest`], but only nodes that have answered a query of ours
    /// (good or gone quiet, never unverified): a lookup started from these cannot be
    /// stalled by ids a flooding host planted with queries.
    pub fn closest_answered(&self, key: &[u8], n: usize) -> Vec<NodeInfo> {
        self.closest_where(key, n, |e| !e.is_bad() && e.last_response.is_some())
    }

    /// Like [`RoutingTable::closest`], bad nodes included: the last resort of a node that
    /// has nothing else. After an outage every node it knew has failed it, and nothing
    /// replaces them in a small network; asking them is how it learns they are back (an
    /// answer makes a node good again).
    pub fn closest_any(&self, key: &[u8], n: usize) -> Vec<NodeInfo> {
        self.closest_where(key, n, |_| true)
    }

    fn closest_where(&self, key: &[u8], n: usize, keep: impl Fn(&Entry) -> bool) -> Vec<NodeInfo> {
        let rank = |node: &NodeInfo| (node.id.distance(key), node.id);
        let mut best: Vec<NodeInfo> = Vec::with_capacity(n.min(self.len()));
        if n == 0 {
            return best;
        }
        let own_distance = self.own.distance(key);
        let mut order = [(Distance([0; ID_LEN]), 0); MAX_BUCKETS];
        let order = &mut order[..self.buckets.len()];
        for (i, slot) in order.iter_mut().enumerate() {
            *slot = (self.bucket_floor(&own_distance, key.len(), i), i);
        }
        order.sort_unstable();
        // Rank of the farthest kept node once `best` is full: most candidates lose to it
        // after one distance computation.
        let mut worst: Option<(Distance, NodeId)> = None;
        for &(floor, i) in order.iter() {
            if worst.is_some_and(|(w, _)| floor > w) {
                break;
            }
            let Some(bucket) = self.buckets.get(i) else {
                continue;
            };
            for entry in bucket.entries.iter().filter(|e| keep(e)) {
                if best.len() < n {
                    best.push(entry.info());
                    sift_up(&mut best, rank);
                    if best.len() == n {
                        worst = best.first().map(rank);
                    }
                } else if worst.is_some_and(|w| (entry.id.distance(key), entry.id) < w) {
                    best[0] = entry.info();
                    sift_down(&mut best, rank);
                    worst = best.first().map(rank);
                }
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
        let now = self.tick(now);
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
    /// [`RoutingTable::failed`]; a questionable node with one failure is handed out again
    /// at once for the second try, and a ping never reported back is handed out again after
    /// [`super::PING_RETRY`]. Bad nodes are not pinged: they wait to be replaced.
    pub fn take_pings(&mut self, now: Instant) -> Vec<NodeInfo> {
        let now = self.tick(now);
        let mut pings = Vec::new();
        // A bucket whose earliest deadline is later has nothing due: skip its entries.
        for bucket in &mut self.buckets {
            if bucket.ping_due.is_some_and(|due| due <= now) {
                pings.extend(take_due(&mut bucket.entries, now));
                bucket.settle_pings();
            }
        }
        pings
    }

    /// Returns when the table next needs [`RoutingTable::refresh`] or
    /// [`RoutingTable::take_pings`]; `None` when nothing is scheduled.
    ///
    /// The time may already be past: then call them now. Once both were called at `now`,
    /// this is later than `now` (or `None`).
    ///
    /// The node asks after every datagram, so this looks at each bucket's kept earliest
    /// ping ([`Bucket::ping_due`]), not at every entry.
    pub fn next_timeout(&self) -> Option<Instant> {
        let epoch = self.epoch?; // no time seen yet: no node, nothing scheduled
        let due = self
            .buckets
            .iter()
            .flat_map(|b| [b.refresh_due(), b.ping_due]);
        due.flatten().min().map(|t| t.instant(epoch))
    }

    /// [`RoutingTable::next_timeout`] computed the slow way, from every entry: the
    /// reference the kept per-bucket deadlines are checked against.
    #[cfg(any(test, feature = "sim"))]
    pub fn next_timeout_rescan(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        let refresh = self.buckets.iter().filter_map(Bucket::refresh_due);
        let pings = self
            .buckets
            .iter()
            .flat_map(|b| &b.entries)
            .filter_map(Entry::ping_due);
        refresh.chain(pings).min().map(|t| t.instant(epoch))
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
        let now = self.tick_at(now);
        self.buckets
            .iter()
            .flat_map(|b| &b.entries)
            .map(move |e| (e.info(), e.state(now)))
    }

    /// True when `id` is in a bucket (a node waiting in a replacement cache is not).
    pub fn contains(&self, id: &NodeId) -> bool {
        matches!(self.find(id), Some(Slot::Entry { .. }))
    }

    /// The state at `now` of the node `id`, if it is in a bucket.
    pub fn state(&self, now: Instant, id: &NodeId) -> Option<NodeState> {
        let now = self.tick_at(now);
        match self.find(id)? {
            Slot::Entry { bucket, index } => Some(self.buckets[bucket].entries[index].state(now)),
            Slot::Cache { .. } => None,
        }
    }

    /// Number of buckets, 1 to [`MAX_BUCKETS`].
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Nodes in bucket `index` (0 holds the ids farthest from ours); 0 past the last bucket.
    pub fn bucket_len(&self, index: usize) -> usize {
        self.buckets.get(index).map_or(0, |b| b.entries.len())
    }

    /// Good nodes whose id shares exactly `prefix` leading bits with ours: what a refresh
    /// of that range has found alive. O(one bucket).
    pub fn good_in_range(&self, prefix: usize, now: Instant) -> usize {
        let now = self.tick_at(now);
        let last = self.buckets.len() - 1;
        let b = prefix.min(last);
        // Only the last bucket holds ids of other prefix lengths than its index.
        let exact = |e: &&Entry| b < last || self.own.shared_prefix_len(&e.id) == prefix;
        self.buckets[b]
            .entries
            .iter()
            .filter(exact)
            .filter(|e| e.state(now) == NodeState::Good)
            .count()
    }

    /// The nodes of bucket `index` as an operator sees them (the dashboard); empty past the
    /// last bucket.
    pub fn bucket_nodes(
        &self,
        index: usize,
        now: Instant,
    ) -> impl Iterator<Item = NodeReport> + '_ {
        let epoch = self.epoch.unwrap_or(now);
        let now = Tick::since(epoch, now);
        self.buckets
            .get(index)
            .into_iter()
            .flat_map(|b| &b.entries)
            .map(move |e| NodeReport {
                info: e.info(),
                state: e.state(now),
                last_heard: [e.last_response, e.last_query]
                    .into_iter()
                    .flatten()
                    .fold(e.added, Tick::max)
                    .instant(epoch),
                failures: e.failures,
            })
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
            let capacity = self.capacity(i);
            if bucket.entries.len() > capacity || bucket.cache.len() > self.k {
                return Err(format!(
                    "bucket {i}: {} nodes, {} cached, capacity {capacity}, k = {}",
                    bucket.entries.len(),
                    bucket.cache.len(),
                    self.k
                ));
            }
            if !bucket.cache.is_empty()
                && (bucket.entries.len() < capacity || bucket.entries.iter().any(Entry::is_bad))
            {
                return Err(format!("bucket {i}: cache waits beside room or a bad node"));
            }
            let due = bucket.entries.iter().filter_map(Entry::ping_due).min();
            if bucket.ping_due != due {
                return Err(format!(
                    "bucket {i}: kept ping deadline {:?}, entries say {due:?}",
                    bucket.ping_due
                ));
            }
            let infos = bucket.entries.iter().map(|e| e.info());
            for info in infos.chain(bucket.cache.iter().map(|c| c.info())) {
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
            }
        }
        // `holder` reads the buckets themselves: the index only has to hold one
        // fingerprint per address, no more.
        let mut prints: Vec<u32> = addrs.iter().map(|a| self.by_addr.print(a)).collect();
        prints.sort_unstable();
        if self.by_addr.prints != prints {
            return Err(format!(
                "address index has {} entries for {} nodes, or other ones",
                self.by_addr.len(),
                addrs.len()
            ));
        }
        Ok(())
    }

    /// [`RoutingTable::heard_unsettled`], then the kept ping deadlines of every bucket it
    /// may have changed: the node's own, the ones it freed a slot in, and those a split
    /// made or emptied (splits only touch the last bucket and append new ones).
    fn heard(&mut self, now: Instant, node: NodeInfo, how: Heard) -> Insert {
        let now = self.tick(now);
        let last_before = self.buckets.len() - 1;
        let (result, freed) = self.heard_unsettled(now, node, how);
        let split = self.buckets.len() > last_before + 1;
        let settled = matches!(result, Insert::Ignored(_) | Insert::Updated);
        if settled && freed == [None, None] && !split {
            return result; // nothing changed, or the one changed entry settled itself
        }
        let home = self.bucket_index(&node.id);
        let split = if split {
            last_before..self.buckets.len()
        } else {
            0..0
        };
        for b in freed.into_iter().flatten().chain([home]).chain(split) {
            self.buckets[b].settle_pings();
        }
        result
    }

    /// Does the work of [`RoutingTable::heard`], and returns with its result the buckets
    /// that lost a node to make way (a stale id or an address's old holder).
    fn heard_unsettled(
        &mut self,
        now: Tick,
        node: NodeInfo,
        how: Heard,
    ) -> (Insert, [Option<usize>; 2]) {
        let unchanged = |insert| (insert, [None, None]);
        if node.id == self.own {
            return unchanged(Insert::Ignored(Ignored::OwnId));
        }
        if !usable_addr(&node.addr) {
            return unchanged(Insert::Ignored(Ignored::BadAddr));
        }
        // The id is known: update it, or decide whether the new address may replace it.
        let mut stale_id = None;
        match self.find(&node.id) {
            None => {}
            Some(Slot::Entry { bucket, index }) => {
                let b = &mut self.buckets[bucket];
                let entry = &b.entries[index];
                if entry.addr() == node.addr {
                    match how {
                        Heard::Response => {
                            b.update_entry(index, |e| e.record_response(now));
                            b.last_changed = Some(now);
                        }
                        Heard::Query => b.update_entry(index, |e| e.last_query = Some(now)),
                    }
                    return unchanged(Insert::Updated);
                }
                if !entry.is_bad() {
                    return unchanged(Insert::Ignored(Ignored::IdElsewhere));
                }
                // The old address stopped answering: start afresh at the new one.
                stale_id = Some(node.id);
            }
            Some(Slot::Cache { bucket, index }) => {
                let cache = &mut self.buckets[bucket].cache;
                if cache[index].addr() != node.addr {
                    return unchanged(Insert::Ignored(Ignored::IdElsewhere));
                }
                if how == Heard::Query {
                    return unchanged(Insert::Ignored(Ignored::Full));
                }
                let mut cached = cache.remove(index);
                cached.last_response = now;
                cache.push(cached);
                let ping = take_due(&mut self.buckets[bucket].entries, now).collect();
                return (Insert::Cached { ping }, [None, None]);
            }
        }
        // The address is known under another id: the host restarted with a new id. An
        // answer proves that (it echoes our transaction id); a query is easy to spoof, so
        // it only replaces a bad entry.
        let old_holder = self.holder(&node.addr);
        if let Some(holder) = old_holder {
            let holder_bad = match self.find(&holder) {
                Some(Slot::Entry { bucket, index }) => self.buckets[bucket].entries[index].is_bad(),
                _ => false,
            };
            if how == Heard::Query && !holder_bad {
                return unchanged(Insert::Ignored(Ignored::AddrTaken));
            }
            tracing::debug!(old = %holder, new = %node.id, addr = %node.addr, "address changed id");
        }
        // Buckets that lose a node here get refilled from their cache at the end, after
        // the new node had its chance at the slot.
        let freed = [stale_id, old_holder].map(|id| id.and_then(|id| self.remove_id(&id)));
        let result = self.insert_new(now, node, how);
        for bucket in freed.into_iter().flatten() {
            self.refill(now, bucket);
        }
        (result, freed)
    }

    /// Inserts a node whose id and address are in neither a bucket nor a cache.
    fn insert_new(&mut self, now: Tick, node: NodeInfo, how: Heard) -> Insert {
        loop {
            let b = self.bucket_index(&node.id);
            let can_split = b + 1 == self.buckets.len() && b + 1 < MAX_BUCKETS;
            let k = self.k;
            let capacity = self.capacity(b);
            let one_per_subnet = self.one_per_subnet;
            let bucket = &mut self.buckets[b];
            if one_per_subnet && holds_subnet_of(bucket, &node.addr) {
                if !can_split || bucket.entries.len() < capacity {
                    return Insert::Ignored(Ignored::SameSubnet);
                }
                // The bucket covering our own id splits first: the two may part.
                self.split(now);
                continue;
            }
            if bucket.entries.len() < capacity {
                bucket.entries.push(match how {
                    Heard::Response => Entry::responded(node, now),
                    Heard::Query => Entry::queried(node, now),
                });
                bucket.last_changed = Some(now);
                self.by_addr.insert(&node.addr);
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
                let old = std::mem::replace(slot, Entry::responded(node, now)).info();
                bucket.last_changed = Some(now);
                self.by_addr.remove(&old.addr);
                self.by_addr.insert(&node.addr);
                tracing::debug!(old = %old.id, new = %node.id, "bad node replaced");
                return Insert::Added;
            }
            if bucket.cache.len() >= k {
                // Full cache: the stalest candidate makes way, an unverified id first (BEP 42).
                let stale = bucket.cache.iter().position(|c| !c.is_bep42()).unwrap_or(0);
                let stale = bucket.cache.remove(stale);
                self.by_addr.remove(&stale.addr());
            }
            bucket.cache.push(Cached::new(node, now));
            self.by_addr.insert(&node.addr);
            return Insert::Cached {
                ping: take_due(&mut bucket.entries, now).collect(),
            };
        }
    }

    /// Splits the last bucket: nodes sharing more bits with us than its index move to a
    /// new last bucket.
    fn split(&mut self, now: Tick) {
        let depth = self.buckets.len();
        let own = self.own;
        let goes = |id: &NodeId| own.shared_prefix_len(id) >= depth;
        let mut new = Bucket {
            last_changed: Some(now),
            ..Bucket::default()
        };
        if let Some(old) = self.buckets.last_mut() {
            let (moved, kept) = std::mem::take(&mut old.entries)
                .into_iter()
                .partition(|e| goes(&e.id));
            old.entries = kept;
            new.entries = moved;
            let (moved, kept) = std::mem::take(&mut old.cache)
                .into_iter()
                .partition(|c| goes(&c.id));
            old.cache = kept;
            new.cache = moved;
        }
        self.buckets.push(new);
        self.refill(now, depth - 1);
        self.refill(now, depth);
    }

    /// Moves the freshest cached nodes into free slots of bucket `b`.
    fn refill(&mut self, now: Tick, b: usize) {
        let capacity = self.capacity(b);
        let bucket = &mut self.buckets[b];
        while bucket.entries.len() < capacity {
            let Some(cached) = take_preferred(&mut bucket.cache) else {
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
                self.by_addr.remove(&cached.addr());
                None
            }
        }
    }

    fn remove_entry(&mut self, bucket: usize, index: usize) {
        let entry = self.buckets[bucket].entries.remove(index);
        self.by_addr.remove(&entry.addr());
    }

    /// The smallest distance to a key any node of bucket `i` can have, given our own
    /// distance to that key (`own_distance`) and the key's length in bytes.
    ///
    /// A node in bucket `i` (not the last) matches our id on bits `0..i` and differs on
    /// bit `i`; the last bucket's nodes match on bits `0..i`. Later bits are free, so
    /// their distance bits can be 0, except past the key's end, where
    /// [`NodeId::distance`] pads with 1s whatever the node.
    fn bucket_floor(&self, own_distance: &Distance, key_len: usize, i: usize) -> Distance {
        let key_bytes = key_len.min(ID_LEN);
        let mut floor = *own_distance;
        if i >= key_bytes * 8 {
            return floor; // every bit from `i` on is padding
        }
        let (byte, mask) = (i / 8, 0x80u8 >> (i % 8));
        let after = mask - 1; // the bits after `i` in its byte
        if i + 1 == self.buckets.len() {
            floor.0[byte] &= !(mask | after);
        } else {
            floor.0[byte] = (floor.0[byte] ^ mask) & !after;
        }
        for b in floor.0.iter_mut().take(key_bytes).skip(byte + 1) {
            *b = 0;
        }
        floor
    }

    /// `now` as a [`Tick`], fixing the epoch at the first time the table sees.
    fn tick(&mut self, now: Instant) -> Tick {
        let epoch = *self.epoch.get_or_insert(now);
        Tick::since(epoch, now)
    }

    /// `now` as a [`Tick`], for reading: before the table saw a time no node holds a
    /// tick, so any epoch gives the same answers.
    fn tick_at(&self, now: Instant) -> Tick {
        Tick::since(self.epoch.unwrap_or(now), now)
    }

    /// The id held at `addr`, in a bucket or a cache; a scan, but only when the index
    /// says the address may be there.
    fn holder(&self, addr: &SocketAddr) -> Option<NodeId> {
        if !self.by_addr.may_hold(addr) {
            return None;
        }
        self.buckets.iter().find_map(|b| {
            let entry = b.entries.iter().find(|e| e.addr() == *addr).map(|e| e.id);
            entry.or_else(|| b.cache.iter().find(|c| c.addr() == *addr).map(|c| c.id))
        })
    }

    fn find(&self, id: &NodeId) -> Option<Slot> {
        let bucket = self.bucket_index(id);
        let b = &self.buckets[bucket];
        if let Some(index) = b.entries.iter().position(|e| e.id == *id) {
            return Some(Slot::Entry { bucket, index });
        }
        let index = b.cache.iter().position(|c| c.id == *id)?;
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
            .field("wide", &self.wide)
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

/// Whether `bucket` holds, in its slots or its cache, a node that is not bad in the same
/// public /24 or /64 as `addr`.
fn holds_subnet_of(bucket: &Bucket, addr: &SocketAddr) -> bool {
    let Some(subnet) = Subnet::of_public(addr.ip()) else {
        return false;
    };
    let same = |addr: SocketAddr| Subnet::of_public(addr.ip()) == Some(subnet);
    bucket.entries.iter().any(|e| !e.is_bad() && same(e.addr()))
        || bucket.cache.iter().any(|c| same(c.addr()))
}

/// Takes the cached node to promote: the freshest whose id verifies (BEP 42), else the
/// freshest.
fn take_preferred(cache: &mut Vec<Cached>) -> Option<Cached> {
    let verified = cache.iter().rposition(Cached::is_bep42);
    match verified {
        Some(i) => Some(cache.remove(i)),
        None => cache.pop(),
    }
}

/// The entries due for a ping at `now`, each marked as pinged as it is yielded.
fn take_due(entries: &mut [Entry], now: Tick) -> impl Iterator<Item = NodeInfo> + '_ {
    entries
        .iter_mut()
        .filter(move |e| e.ping_due().is_some_and(|due| due <= now))
        .map(move |e| {
            e.ping_sent = Some(now);
            e.info()
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

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::Duration;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::dht::routing::{GOOD_FOR, PING_RETRY, REFRESH_AFTER};

    const SEC: Duration = Duration::from_secs(1);
    const OWN: NodeId = NodeId([0; 20]);

    #[allow(clippy::disallowed_methods)] // tests need some Instant to start from
    fn t0() -> Instant {
        Instant::now()
    }

    /// An id sharing exactly `prefix` (< 152) bits with [`OWN`], told apart by `tag`.
    fn id(prefix: usize, tag: u8) -> NodeId {
        let mut bytes = [0u8; 20];
        bytes[prefix / 8] |= 0x80 >> (prefix % 8);
        bytes[19] |= tag;
        NodeId(bytes)
    }

    /// A node with [`id`]`(prefix, tag)` on its own loopback port.
    fn node(prefix: usize, tag: u8) -> NodeInfo {
        let port = 1 + prefix as u16 * 256 + u16::from(tag);
        NodeInfo {
            id: id(prefix, tag),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn at(n: NodeInfo, port: u16) -> NodeInfo {
        NodeInfo {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ..n
        }
    }

    /// A table with k = 2 whose bucket 0 (prefix 0) is full of two nodes heard at `t`.
    fn full_far_bucket(t: Instant) -> RoutingTable {
        let mut table = RoutingTable::new(OWN, 2);
        assert_eq!(table.heard_response(t, node(0, 1)), Insert::Added);
        assert_eq!(table.heard_response(t, node(0, 2)), Insert::Added);
        // Forces the split that makes bucket 0 a far bucket that never splits again.
        assert_eq!(table.heard_response(t, node(3, 1)), Insert::Added);
        assert_eq!(table.bucket_count(), 2);
        table
    }

    fn check(table: &RoutingTable) {
        if let Err(e) = table.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    #[test]
    fn rejects_own_id_and_unreachable_addresses() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let n = node(0, 1);
        let bad = [
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SocketAddr::from(([0, 0, 0, 0], 6881)),
            SocketAddr::from(([224, 0, 0, 1], 6881)),
            SocketAddr::from(([255, 255, 255, 255], 6881)),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 6881)),
            SocketAddr::from((Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 6881)),
        ];

        let own = table.heard_response(t, NodeInfo { id: OWN, ..n });
        let results: Vec<_> = bad
            .iter()
            .map(|&addr| table.heard_response(t, NodeInfo { addr, ..n }))
            .collect();
        let loopback = table.heard_query(t, n);

        assert_eq!(own, Insert::Ignored(Ignored::OwnId));
        assert!(
            results
                .iter()
                .all(|r| *r == Insert::Ignored(Ignored::BadAddr))
        );
        assert_eq!(loopback, Insert::Added);
        assert_eq!(table.len(), 1);
        check(&table);
    }

    #[test]
    fn known_node_is_updated() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let n = node(4, 1);
        let _ = table.heard_query(t, n);

        let again = table.heard_response(t + SEC, n);

        assert_eq!(again, Insert::Updated);
        assert_eq!(table.state(t + SEC, &n.id), Some(NodeState::Good));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn only_the_bucket_covering_our_id_splits() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 2);

        let far: Vec<_> = (1..=3)
            .map(|tag| table.heard_response(t, node(0, tag)))
            .collect();
        let far_buckets = table.bucket_count();
        let near: Vec<_> = (1..=3)
            .map(|tag| table.heard_response(t, node(5, tag)))
            .collect();

        assert_eq!(far[2], Insert::Cached { ping: vec![] });
        assert_eq!(
            far_buckets, 2,
            "one split, then bucket 0 is far and stays full"
        );
        assert_eq!(near[2], Insert::Cached { ping: vec![] });
        assert_eq!(
            table.bucket_count(),
            7,
            "splits down to prefix 5, plus our bucket"
        );
        assert_eq!(table.len(), 4);
        check(&table);
    }

    #[test]
    fn good_in_range_counts_only_good_nodes_of_that_exact_prefix() {
        let t = t0();
        let mut table = full_far_bucket(t);
        // The last bucket (index 1) covers prefixes 1 and up: one node of 3, and one of 5
        // that only queried us (unverified).
        assert_eq!(table.heard_query(t, node(5, 1)), Insert::Added);
        assert_eq!(table.bucket_count(), 2);

        let counts: Vec<usize> = (0..7).map(|p| table.good_in_range(p, t)).collect();
        let _ = table.heard_response(t, node(5, 1));
        let answered = table.good_in_range(5, t);
        let later = table.good_in_range(0, t + GOOD_FOR + SEC);

        assert_eq!(counts, [2, 0, 0, 1, 0, 0, 0]);
        assert_eq!(answered, 1, "good once it answered");
        assert_eq!(later, 0, "silent past GOOD_FOR: no longer counted");
    }

    #[test]
    fn wide_buckets_hold_more_far_nodes_but_split_as_bep5_says() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 2).with_wide_buckets(true);

        // The one bucket is also the last: k nodes, then it splits (prefix-0 nodes stay).
        let far: Vec<_> = (1..=40)
            .map(|tag| table.heard_response(t, node(0, tag)))
            .collect();
        assert_eq!(table.bucket_count(), 2);
        assert_eq!(
            table.capacity(0),
            32,
            "bucket 0 holds 16 k once it is not the last"
        );
        assert_eq!(table.capacity(1), 2, "the last bucket holds k");
        assert!(far[..32].iter().all(|i| *i == Insert::Added), "{far:?}");
        assert_eq!(far[32], Insert::Cached { ping: vec![] });
        assert_eq!(table.len(), 32);

        // Nearer nodes split the table further; each far bucket holds its factor of k.
        for prefix in 1..=5 {
            for tag in 1..=40 {
                let _ = table.heard_response(t, node(prefix, tag));
            }
        }
        let counts: Vec<usize> = (0..=5)
            .map(|b| {
                table
                    .closest(id(b, 1).as_bytes(), 1000)
                    .iter()
                    .filter(|n| OWN.shared_prefix_len(&n.id) == b)
                    .count()
            })
            .collect();
        assert_eq!(counts, [32, 16, 8, 4, 2, 2]);
        // The closest of the 32 far nodes to a far target, not any k of them.
        let target = id(0, 40);
        let best = (1..=32)
            .map(|tag| id(0, tag))
            .min_by_key(|i| i.distance(target.as_bytes()));
        assert_eq!(
            table.closest(target.as_bytes(), 1).first().map(|n| n.id),
            best
        );
        check(&table);
    }

    #[test]
    fn table_stops_splitting_at_160_buckets() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 1);
        let mut deepest = [0u8; 20];
        deepest[19] = 1; // shares 159 bits with OWN
        let mut next = [0u8; 20];
        next[19] = 2; // shares 158 bits
        let _ = table.heard_response(
            t,
            NodeInfo {
                id: NodeId(deepest),
                ..node(0, 1)
            },
        );

        let r = table.heard_response(
            t,
            NodeInfo {
                id: NodeId(next),
                ..node(0, 2)
            },
        );

        assert_eq!(r, Insert::Added);
        assert_eq!(table.bucket_count(), MAX_BUCKETS);
        check(&table);
    }

    #[test]
    fn full_bucket_caches_newcomer_and_asks_to_ping_questionable_nodes() {
        let t = t0();
        let mut table = full_far_bucket(t);
        let later = t + GOOD_FOR;

        let r = table.heard_response(later, node(0, 3));
        let again = table.heard_response(later + SEC, node(0, 4));

        assert_eq!(
            r,
            Insert::Cached {
                ping: vec![node(0, 1), node(0, 2)]
            }
        );
        assert_eq!(
            again,
            Insert::Cached { ping: vec![] },
            "pings already under way"
        );
        assert!(!table.contains(&node(0, 3).id));
        check(&table);
    }

    #[test]
    fn node_failing_twice_is_replaced_by_the_freshest_cached_node() {
        let t = t0();
        let mut table = full_far_bucket(t);
        let later = t + GOOD_FOR;
        let _ = table.heard_response(later, node(0, 3));
        let _ = table.heard_response(later, node(0, 4));

        let first = table.failed(later + SEC, &node(0, 1).id);
        let second = table.failed(later + SEC, &node(0, 1).id);

        assert_eq!(first, Failed::Counted);
        assert_eq!(
            second,
            Failed::Replaced {
                old: node(0, 1),
                new: node(0, 4)
            }
        );
        assert!(table.contains(&node(0, 4).id));
        assert!(!table.contains(&node(0, 1).id));
        assert_eq!(
            table.state(later + SEC, &node(0, 4).id),
            Some(NodeState::Good)
        );
        check(&table);
    }

    #[test]
    fn bad_node_without_replacement_stays_until_a_new_responder_takes_its_slot() {
        let t = t0();
        let mut table = full_far_bucket(t);
        let _ = table.failed(t, &node(0, 1).id);
        let bad = table.failed(t, &node(0, 1).id);
        let state = table.state(t, &node(0, 1).id);

        let query = table.heard_query(t, node(0, 3));
        let response = table.heard_response(t, node(0, 4));

        assert_eq!(bad, Failed::Bad);
        assert_eq!(state, Some(NodeState::Bad));
        assert_eq!(query, Insert::Ignored(Ignored::Full), "queries never evict");
        assert_eq!(response, Insert::Added);
        assert!(!table.contains(&node(0, 1).id));
        assert!(table.contains(&node(0, 4).id));
        check(&table);
    }

    #[test]
    fn querying_node_takes_free_room_unverified_and_is_pinged() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let n = node(2, 1);

        let r = table.heard_query(t, n);
        let due = table.next_timeout();
        let pings = table.take_pings(t);

        assert_eq!(r, Insert::Added);
        assert_eq!(table.state(t, &n.id), Some(NodeState::Questionable));
        assert_eq!(due, Some(t));
        assert_eq!(pings, vec![n]);
        assert!(table.next_timeout().is_some_and(|next| next > t));
    }

    #[test]
    fn queries_never_enter_the_replacement_cache() {
        let t = t0();
        let mut table = full_far_bucket(t);

        let r = table.heard_query(t, node(0, 3));
        let failed = table.failed(t, &node(0, 3).id);

        assert_eq!(r, Insert::Ignored(Ignored::Full));
        assert_eq!(failed, Failed::Unknown);
        check(&table);
    }

    #[test]
    fn new_id_at_a_known_address_replaces_the_old_entry() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let old = node(1, 1);
        let _ = table.heard_response(t, old);
        let restarted = NodeInfo {
            id: id(6, 9),
            addr: old.addr,
        };

        let r = table.heard_response(t + SEC, restarted);

        assert_eq!(r, Insert::Added);
        assert!(!table.contains(&old.id));
        assert!(table.contains(&restarted.id));
        assert_eq!(table.len(), 1);
        check(&table);
    }

    #[test]
    fn query_from_a_new_id_takes_over_an_address_only_from_a_bad_entry() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let old = node(1, 1);
        let _ = table.heard_response(t, old);
        let spoofed = NodeInfo {
            id: id(6, 9),
            addr: old.addr,
        };

        let while_good = table.heard_query(t, spoofed);
        let _ = table.failed(t, &old.id);
        let _ = table.failed(t, &old.id);
        let once_bad = table.heard_query(t, spoofed);

        assert_eq!(while_good, Insert::Ignored(Ignored::AddrTaken));
        assert_eq!(once_bad, Insert::Added);
        assert_eq!(
            table.iter(t).collect::<Vec<_>>(),
            vec![(spoofed, NodeState::Questionable)]
        );
        check(&table);
    }

    #[test]
    fn known_id_at_a_new_address_is_ignored_unless_the_old_entry_is_bad() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let n = node(1, 1);
        let moved = at(n, 9999);
        let _ = table.heard_response(t, n);

        let hijack = table.heard_response(t, moved);
        let _ = table.failed(t, &n.id);
        let _ = table.failed(t, &n.id);
        let after_bad = table.heard_response(t, moved);

        assert_eq!(hijack, Insert::Ignored(Ignored::IdElsewhere));
        assert_eq!(after_bad, Insert::Added);
        assert_eq!(
            table.iter(t).collect::<Vec<_>>(),
            vec![(moved, NodeState::Good)]
        );
        check(&table);
    }

    #[test]
    fn replacement_cache_is_bounded_and_drops_the_stalest() {
        let t = t0();
        let mut table = full_far_bucket(t);
        for tag in 3..=6 {
            let _ = table.heard_response(t + SEC * u32::from(tag), node(0, tag));
        }

        let stalest = table.failed(t, &node(0, 3).id);
        let kept = table.failed(t, &node(0, 5).id);

        assert_eq!(stalest, Failed::Unknown);
        assert_eq!(
            kept,
            Failed::Unknown,
            "node 5 was cached and is dropped now"
        );
        check(&table);
        // Node 6 is the only one left to replace a bad node.
        let _ = table.failed(t, &node(0, 1).id);
        let replaced = table.failed(t, &node(0, 1).id);
        assert!(matches!(replaced, Failed::Replaced { new, .. } if new == node(0, 6)));
        assert_eq!(table.failed(t, &node(0, 2).id), Failed::Counted);
        assert_eq!(table.failed(t, &node(0, 2).id), Failed::Bad);
    }

    #[test]
    fn answering_again_makes_a_cached_node_the_freshest() {
        let t = t0();
        let mut table = full_far_bucket(t);
        let _ = table.heard_response(t, node(0, 3));
        let _ = table.heard_response(t, node(0, 4));

        let again = table.heard_response(t + SEC, node(0, 3));
        let query = table.heard_query(t + SEC, node(0, 3));
        let _ = table.failed(t + SEC, &node(0, 1).id);
        let replaced = table.failed(t + SEC, &node(0, 1).id);

        assert_eq!(again, Insert::Cached { ping: vec![] });
        assert_eq!(query, Insert::Ignored(Ignored::Full));
        assert!(matches!(replaced, Failed::Replaced { new, .. } if new == node(0, 3)));
        check(&table);
    }

    #[test]
    fn split_moves_cached_nodes_into_free_room() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 2);
        let _ = table.heard_response(t, node(7, 1));
        let _ = table.heard_response(t, node(7, 2));
        // Bucket 0 is the last one and full: this splits; the node lands in bucket 0.
        let r = table.heard_response(t, node(0, 1));

        assert_eq!(r, Insert::Added);
        assert_eq!(table.len(), 3);
        check(&table);
    }

    #[test]
    fn closest_sorts_by_distance_and_skips_bad_nodes() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        for (prefix, tag) in [(0, 1), (1, 1), (2, 1), (3, 1), (3, 2)] {
            let _ = table.heard_response(t, node(prefix, tag));
        }
        let _ = table.failed(t, &node(3, 1).id);
        let _ = table.failed(t, &node(3, 1).id);
        let key = id(3, 3);

        let closest = table.closest(key.as_bytes(), 3);
        let none = table.closest(key.as_bytes(), 0);

        assert_eq!(closest, vec![node(3, 2), node(2, 1), node(1, 1)]);
        assert!(none.is_empty());
    }

    #[test]
    fn skipping_spares_nodes_that_have_answered() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        let answered = node(1, 1);
        let unanswered = node(2, 1);
        let untouched = node(3, 1);
        let _ = table.heard_response(t, answered);
        let _ = table.heard_query(t, unanswered);
        let _ = table.heard_query(t, untouched);
        let key = id(0, 9);

        let kept = table.closest_except_unanswered(key.as_bytes(), 8, |n| n != &untouched);

        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&answered) && kept.contains(&untouched));
    }

    #[test]
    fn closest_breaks_distance_ties_by_id() {
        let t = t0();
        let mut table = RoutingTable::new(OWN, 8);
        for tag in [9, 3, 5] {
            let _ = table.heard_response(t, node(100, tag));
        }

        // A 2-byte key pads the rest with 0xff: all three are equally far.
        let closest = table.closest(&[0, 0], 8);

        assert_eq!(closest, vec![node(100, 3), node(100, 5), node(100, 9)]);
    }

    #[test]
    fn bucket_floor_bounds_every_node_and_is_reached() {
        let t = t0();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let own = NodeId::random(&mut rng);
        let mut table = RoutingTable::new(own, 4);
        for i in 0..400u16 {
            let id = own.random_in_bucket(rng.random_range(0..10), &mut rng);
            let addr = SocketAddr::from(([127, 0, 0, 1], 1 + i));
            let _ = table.heard_response(t, NodeInfo { id, addr });
        }
        let last = table.bucket_count() - 1;
        let bit = |bytes: &[u8], j: usize| bytes.get(j / 8).map(|b| b & (0x80 >> (j % 8)) != 0);

        for key_len in [0, 1, 2, 5, 19, 20, 21, 40] {
            let mut key = vec![0u8; key_len];
            rng.fill(&mut key[..]);
            let own_distance = own.distance(&key);
            for (i, bucket) in table.buckets.iter().enumerate() {
                let floor = table.bucket_floor(&own_distance, key.len(), i);
                for e in &bucket.entries {
                    assert!(e.id.distance(&key) >= floor, "bucket {i}, key {key:02x?}");
                }
                // The closest id the bucket could hold: our bits before `i`, the other
                // bit at `i` (unless last), then the key's bits while it lasts.
                let mut ideal = [0u8; 20];
                for j in 0..160 {
                    let own_bit = bit(own.as_bytes(), j) == Some(true);
                    let set = match (j.cmp(&i), bit(&key, j)) {
                        (std::cmp::Ordering::Less, _) => own_bit,
                        (std::cmp::Ordering::Equal, _) if i < last => !own_bit,
                        (_, Some(key_bit)) => key_bit,
                        (_, None) => own_bit,
                    };
                    ideal[j / 8] |= u8::from(set) << (7 - j % 8);
                }
                let ideal = NodeId(ideal);
                let prefix = own.shared_prefix_len(&ideal);
                assert!(
                    prefix == i || (i == last && prefix > i),
                    "ideal not in bucket {i}"
                );
                assert_eq!(ideal.distance(&key), floor, "floor of bucket {i} not tight");
            }
        }

        assert!(last >= 7);
    }

    #[test]
    fn refresh_returns_one_id_in_range_per_stale_bucket() {
        let t = t0();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut table = full_far_bucket(t);
        let later = t + REFRESH_AFTER;

        let early = table.refresh(later - SEC, &mut rng);
        let targets = table.refresh(later, &mut rng);
        let again = table.refresh(later, &mut rng);

        assert!(early.is_empty());
        assert_eq!(targets.len(), 2);
        assert_eq!(OWN.shared_prefix_len(&targets[0]), 0);
        assert_eq!(OWN.shared_prefix_len(&targets[1]), 1);
        assert!(again.is_empty());
        // The nodes went quiet at the same time; once their pings are out, the next
        // thing due is a ping retry, well before the next refresh.
        assert_eq!(table.take_pings(later).len(), 3);
        assert_eq!(table.next_timeout(), Some(later + PING_RETRY));
    }

    #[test]
    fn empty_table_has_nothing_scheduled() {
        let mut table = RoutingTable::new(OWN, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(1);

        assert_eq!(table.next_timeout(), None);
        assert!(table.refresh(t0() + REFRESH_AFTER, &mut rng).is_empty());
        assert!(table.is_empty());
    }

    #[test]
    fn next_timeout_moves_past_now_once_pings_and_refreshes_are_taken() {
        let t = t0();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut table = full_far_bucket(t);
        let _ = table.heard_query(t, node(9, 1));
        let mut now = t;

        for _ in 0..20 {
            let _ = table.refresh(now, &mut rng);
            let _ = table.take_pings(now);
            let next = table.next_timeout();

            assert!(next.is_some_and(|n| n > now), "{next:?} not after {now:?}");
            now = next.unwrap_or(now);
        }
    }

    #[test]
    fn random_churn_keeps_invariants() {
        let t = t0();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let own = NodeId::random(&mut rng);
        let mut table = RoutingTable::new(own, 3);
        let pool: Vec<NodeInfo> = (0..200u16)
            .map(|i| NodeInfo {
                id: own.random_in_bucket(rng.random_range(0..12), &mut rng),
                addr: SocketAddr::from(([127, 0, 0, 1], 1 + i % 150)),
            })
            .collect();

        for step in 0..5000u32 {
            let n = pool[rng.random_range(0..pool.len())];
            let now = t + SEC * (step / 10);
            match rng.random_range(0..4) {
                0 => drop(table.heard_query(now, n)),
                1 => drop(table.failed(now, &n.id)),
                _ => drop(table.heard_response(now, n)),
            }
            check(&table);
        }

        assert!(table.len() > 10);
    }

    /// The kept per-bucket ping deadlines against a rescan, on the paths the model-based
    /// property test (proptests/tests/routing.rs) does not take: the subnet rule with
    /// public addresses, wide buckets, and ticks that take pings and refreshes.
    #[test]
    fn kept_deadline_equals_a_rescan_under_subnet_rule_and_ticks() {
        let t = t0();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let own = NodeId::random(&mut rng);
        let mut table = RoutingTable::new(own, 2)
            .with_wide_buckets(true)
            .with_subnet_rule(true);
        let pool: Vec<NodeInfo> = (0..300u16)
            .map(|i| {
                let id = own.random_in_bucket(rng.random_range(0..10), &mut rng);
                let [hi, lo] = i.to_be_bytes();
                public(id, [8, hi, lo % 40, lo])
            })
            .collect();
        let mut now = t;
        for _ in 0..8000u32 {
            let n = pool[rng.random_range(0..pool.len())];
            match rng.random_range(0..8) {
                0 | 1 => drop(table.heard_query(now, n)),
                2 | 3 => drop(table.failed(now, &n.id)),
                4 => {
                    now += SEC * rng.random_range(0..400);
                    drop(table.refresh(now, &mut rng));
                    drop(table.take_pings(now));
                }
                _ => drop(table.heard_response(now, n)),
            }
            check(&table);
            assert_eq!(table.next_timeout(), table.next_timeout_rescan());
        }
        assert!(table.bucket_count() > 3);
    }

    fn public(id: NodeId, ip: [u8; 4]) -> NodeInfo {
        NodeInfo {
            id,
            addr: SocketAddr::from((ip, 6881)),
        }
    }

    #[test]
    fn good_nodes_are_never_replaced_by_newcomers() {
        let t = t0();
        let mut table = full_far_bucket(t);

        let queried = table.heard_query(t + SEC, node(0, 9));
        let answered = (10..40u8)
            .map(|tag| table.heard_response(t + SEC, node(0, tag)))
            .collect::<Vec<_>>();

        assert_eq!(queried, Insert::Ignored(Ignored::Full));
        assert!(
            answered
                .iter()
                .all(|i| matches!(i, Insert::Cached { ping } if ping.is_empty())),
            "newcomers wait in the cache and good nodes are not even pinged: {answered:?}"
        );
        for n in [node(0, 1), node(0, 2)] {
            assert_eq!(table.state(t + SEC, &n.id), Some(NodeState::Good));
        }
        check(&table);
    }

    #[test]
    fn one_node_per_public_24_in_a_bucket() {
        let t = t0();
        let mut table = full_far_bucket(t).with_subnet_rule(true);
        let mut open = full_far_bucket(t);
        let first = public(id(1, 5), [203, 0, 113, 1]);
        let neighbour = public(id(1, 6), [203, 0, 113, 2]);
        let elsewhere = public(id(1, 7), [198, 51, 100, 1]);

        assert_eq!(table.heard_response(t, first), Insert::Added);
        // The last bucket is full and splits: the two land in different buckets.
        assert_eq!(
            table.heard_response(t, public(id(2, 5), [203, 0, 113, 3])),
            Insert::Added
        );
        assert_eq!(
            table.heard_response(t, neighbour),
            Insert::Ignored(Ignored::SameSubnet)
        );
        assert_eq!(
            table.heard_query(t, neighbour),
            Insert::Ignored(Ignored::SameSubnet)
        );
        assert!(matches!(
            table.heard_response(t, elsewhere),
            Insert::Added | Insert::Cached { .. }
        ));
        // Loopback and private nodes are exempt: a test box holds many.
        assert_eq!(table.heard_response(t, node(0, 1)), Insert::Updated);
        // Without the rule the neighbour is taken.
        assert_eq!(open.heard_response(t, first), Insert::Added);
        assert_ne!(
            open.heard_response(t, neighbour),
            Insert::Ignored(Ignored::SameSubnet)
        );
        check(&table);
        check(&open);
    }

    #[test]
    fn a_verified_id_is_promoted_before_a_fresher_unverified_one() {
        let t = t0();
        let mut table = full_far_bucket(t);
        let hex = |s: &str| {
            let bytes = crate::dht::id::unhex(s).expect("hex");
            NodeId(bytes.try_into().expect("20 bytes"))
        };
        // BEP 42's test vector for 65.23.51.170 (prefix 0: its first bit is set).
        let verified = public(
            hex("a5d43220bc8f112a3d426c84764f8c2a1150e616"),
            [65, 23, 51, 170],
        );
        let unverified = public(NodeId([0x80; 20]), [8, 8, 8, 8]);
        assert!(matches!(
            table.heard_response(t + SEC, verified),
            Insert::Cached { .. }
        ));
        assert!(matches!(
            table.heard_response(t + 2 * SEC, unverified),
            Insert::Cached { .. }
        ));

        let first = table.failed(t + 3 * SEC, &node(0, 1).id);
        let second = table.failed(t + 3 * SEC, &node(0, 1).id);

        assert_eq!(first, Failed::Counted);
        assert_eq!(
            second,
            Failed::Replaced {
                old: node(0, 1),
                new: verified
            }
        );
        check(&table);
    }

    #[test]
    fn a_banned_hosts_nodes_leave_and_cached_ones_take_their_slots() {
        let t = t0();
        let mut table = full_far_bucket(t);
        let banned = |n: NodeInfo| NodeInfo {
            addr: SocketAddr::from(([10, 9, 9, 9], n.addr.port())),
            ..n
        };
        // Bucket 0 holds one node of the banned host and one other; the banned host also
        // waits in the cache, behind a node of another host.
        table.remove_where(t, |a| a.port() == node(0, 2).addr.port());
        assert_eq!(table.heard_response(t, banned(node(0, 2))), Insert::Added);
        let later = t + GOOD_FOR;
        assert!(matches!(
            table.heard_response(later, node(0, 3)),
            Insert::Cached { .. }
        ));
        assert!(matches!(
            table.heard_response(later, banned(node(0, 4))),
            Insert::Cached { .. }
        ));
        check(&table);

        let removed = table.remove_where(later, |a| a.ip() == banned(node(0, 2)).addr.ip());

        assert_eq!(removed, 2, "the bucket's entry and the cached one");
        assert!(!table.contains(&node(0, 2).id));
        assert!(!table.contains(&node(0, 4).id));
        assert!(
            table.contains(&node(0, 3).id),
            "the cached node took the slot"
        );
        assert!(table.contains(&node(0, 1).id) && table.contains(&node(3, 1).id));
        assert_eq!(table.next_timeout(), table.next_timeout_rescan());
        check(&table);
    }
}
