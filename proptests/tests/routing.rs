//! Property tests for the routing table against a brute-force model.
//!
//! Random sequences of answers, queries, failures, clock jumps, refresh/ping ticks and
//! `closest` calls run against a [`RoutingTable`] and a model that only remembers, per
//! id, what happened to it. After every step:
//! - the table's own invariants hold;
//! - `next_timeout`, kept per bucket as entries change, equals a rescan of every entry;
//! - `closest(key, n)` equals a brute-force sort of the table's non-bad nodes;
//! - node states agree with the model (bad exactly after two failures in a row, good
//!   after a recent answer, never good without evidence);
//! - a node that is not bad is never dropped, except by its own failure or by an answer
//!   from its address under a new id (so never while a bad node could have gone instead).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grenache_core::dht::NodeId;
use grenache_core::dht::routing::{
    Failed, GOOD_FOR, Ignored, Insert, NodeInfo, NodeState, RoutingTable,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Ids in the pool; index 0 is the table's own id, which must always be rejected.
const POOL: usize = 40;
/// Addresses in the pool: node `i` lives at address `i`, the last two are unusable.
const ADDRS: usize = POOL + 2;

#[derive(Clone, Debug)]
enum Op {
    /// Node answered; `addr` overrides its usual address (restarts, hijack attempts).
    Response {
        node: usize,
        addr: Option<usize>,
    },
    Query {
        node: usize,
        addr: Option<usize>,
    },
    Failed {
        node: usize,
    },
    Advance {
        secs: u64,
    },
    /// What the node does at `next_timeout`: refresh, then take the pings.
    Tick,
    /// A key near a pool id, cut or extended to `len` bytes.
    Closest {
        near: usize,
        len: usize,
        flip: u8,
        n: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..POOL;
    let addr = proptest::option::weighted(0.15, 0..ADDRS);
    prop_oneof![
        5 => (node.clone(), addr.clone()).prop_map(|(node, addr)| Op::Response { node, addr }),
        3 => (node.clone(), addr).prop_map(|(node, addr)| Op::Query { node, addr }),
        3 => node.clone().prop_map(|node| Op::Failed { node }),
        2 => prop_oneof![0u64..=120, 0u64..=1200].prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Tick),
        1 => (node, 0usize..=24, any::<u8>(), 0usize..=12)
            .prop_map(|(near, len, flip, n)| Op::Closest { near, len, flip, n }),
    ]
}

/// What the model knows about one id: only events the table accepted for it.
#[derive(Clone, Debug, Default)]
struct Seen {
    last_response: Option<Instant>,
    last_query: Option<Instant>,
    ever_responded: bool,
    /// Failed queries in a row since the last accepted answer or since it was added.
    failures: u32,
}

struct World {
    now: Instant,
    own: NodeId,
    ids: Vec<NodeId>,
    addrs: Vec<SocketAddr>,
    table: RoutingTable,
    model: BTreeMap<NodeId, Seen>,
    rng: ChaCha8Rng,
}

impl World {
    #[allow(clippy::disallowed_methods)] // the only clock read: a starting point
    fn new(seed: u64, k: usize, wide: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let own = NodeId::random(&mut rng);
        // Mostly short prefixes so buckets fill and split; a few deep ones.
        let ids = std::iter::once(own)
            .chain((1..POOL).map(|_| {
                let prefix = if rng.random_bool(0.8) {
                    rng.random_range(0..6)
                } else {
                    rng.random_range(6..160)
                };
                own.random_in_bucket(prefix, &mut rng)
            }))
            .collect();
        let mut addrs: Vec<SocketAddr> = (0..POOL)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)))
            .collect();
        addrs.push(SocketAddr::from(([127, 0, 0, 1], 0)));
        addrs.push(SocketAddr::from(([0, 0, 0, 0], 7000)));
        World {
            now: Instant::now(),
            own,
            ids,
            addrs,
            table: RoutingTable::new(own, k).with_wide_buckets(wide),
            model: BTreeMap::new(),
            rng,
        }
    }

    fn info(&self, node: usize, addr: Option<usize>) -> NodeInfo {
        NodeInfo {
            id: self.ids[node],
            addr: self.addrs[addr.unwrap_or(node)],
        }
    }

    /// Non-bad nodes in the table, by id.
    fn healthy(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.table
            .iter(self.now)
            .filter(|(_, state)| *state != NodeState::Bad)
            .map(|(info, _)| (info.id, info.addr))
            .collect()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.healthy();
        let now = self.now;
        // Set when the op may legitimately drop a healthy node.
        let mut may_drop: Option<(NodeId, SocketAddr)> = None;
        let mut failed_id = None;
        match *op {
            Op::Response { node, addr } => {
                let info = self.info(node, addr);
                let result = self.table.heard_response(now, info);
                self.check_insert(&info, &result)?;
                let seen = self.model.entry(info.id).or_default();
                match result {
                    Insert::Added => {
                        *seen = Seen {
                            last_response: Some(now),
                            ever_responded: true,
                            ..Seen::default()
                        };
                        may_drop = Some((info.id, info.addr));
                    }
                    Insert::Updated | Insert::Cached { .. } => {
                        seen.last_response = Some(now);
                        seen.ever_responded = true;
                        seen.failures = 0;
                        may_drop = Some((info.id, info.addr));
                    }
                    _ => {}
                }
            }
            Op::Query { node, addr } => {
                let info = self.info(node, addr);
                let result = self.table.heard_query(now, info);
                self.check_insert(&info, &result)?;
                prop_assert!(
                    !matches!(result, Insert::Cached { .. }),
                    "a query was cached"
                );
                let seen = self.model.entry(info.id).or_default();
                match result {
                    Insert::Added => {
                        *seen = Seen {
                            last_query: Some(now),
                            ..Seen::default()
                        }
                    }
                    Insert::Updated => seen.last_query = Some(now),
                    _ => {}
                }
            }
            Op::Failed { node } => {
                let id = self.ids[node];
                let result = self.table.failed(now, &id);
                self.model.entry(id).or_default().failures += 1;
                failed_id = Some(id);
                if let Failed::Replaced { old, new } = result {
                    prop_assert_eq!(old.id, id);
                    prop_assert!(!self.table.contains(&old.id));
                    prop_assert!(self.table.contains(&new.id));
                }
            }
            Op::Advance { secs } => self.now += Duration::from_secs(secs),
            Op::Tick => {
                let targets = self.table.refresh(now, &mut self.rng);
                let pings = self.table.take_pings(now);
                for info in pings {
                    prop_assert_eq!(
                        self.table.state(now, &info.id),
                        Some(NodeState::Questionable)
                    );
                }
                let buckets = self.table.bucket_count();
                for target in targets {
                    prop_assert!(self.own.shared_prefix_len(&target) < buckets);
                }
                let next = self.table.next_timeout();
                prop_assert!(next.is_none_or(|t| t > now), "next_timeout {next:?} <= now");
            }
            Op::Closest { near, len, flip, n } => {
                let key = self.key(near, len, flip);
                self.check_closest(&key, n)?;
            }
        }

        self.table
            .check_invariants()
            .map_err(|e| TestCaseError::fail(format!("invariant after {op:?}: {e}")))?;
        prop_assert_eq!(
            self.table.next_timeout(),
            self.table.next_timeout_rescan(),
            "kept deadline differs from a rescan after {:?}",
            op
        );
        self.check_states()?;
        self.check_closest(self.own.as_bytes(), self.table.k())?;
        for (id, addr) in before {
            if self.table.contains(&id) || failed_id == Some(id) {
                continue;
            }
            let taken_over = may_drop.is_some_and(|(new, at)| at == addr && new != id);
            prop_assert!(taken_over, "{op:?} dropped healthy {id:?} at {addr}");
        }
        Ok(())
    }

    fn check_insert(&self, info: &NodeInfo, result: &Insert) -> Result<(), TestCaseError> {
        if info.id == self.own {
            prop_assert_eq!(result, &Insert::Ignored(Ignored::OwnId));
        } else if info.addr.port() == 0 || info.addr.ip().is_unspecified() {
            prop_assert_eq!(result, &Insert::Ignored(Ignored::BadAddr));
        }
        if let Insert::Cached { ping } = result {
            prop_assert!(!self.table.contains(&info.id));
            for p in ping {
                let state = self.table.state(self.now, &p.id);
                prop_assert_eq!(state, Some(NodeState::Questionable));
            }
        }
        if matches!(result, Insert::Added | Insert::Updated) {
            prop_assert!(self.table.contains(&info.id));
        }
        Ok(())
    }

    /// Node states agree with what the model saw.
    fn check_states(&self) -> Result<(), TestCaseError> {
        let recent = |t: Option<Instant>| t.is_some_and(|t| self.now < t + GOOD_FOR);
        for (info, state) in self.table.iter(self.now) {
            let seen = self.model.get(&info.id).cloned().unwrap_or_default();
            prop_assert_eq!(state == NodeState::Bad, seen.failures >= 2, "{:?}", seen);
            if state == NodeState::Good {
                let evidence =
                    recent(seen.last_response) || (seen.ever_responded && recent(seen.last_query));
                prop_assert!(evidence, "{:?} good without evidence: {:?}", info, seen);
            }
            if seen.failures < 2 && recent(seen.last_response) {
                prop_assert_eq!(state, NodeState::Good, "{:?}", seen);
            }
        }
        Ok(())
    }

    /// `closest` equals sorting every non-bad node by (distance, id).
    fn check_closest(&self, key: &[u8], n: usize) -> Result<(), TestCaseError> {
        let mut all: Vec<NodeInfo> = self
            .table
            .iter(self.now)
            .filter(|(_, state)| *state != NodeState::Bad)
            .map(|(info, _)| info)
            .collect();
        all.sort_by_cached_key(|info| (info.id.distance(key), info.id));
        all.truncate(n);
        prop_assert_eq!(self.table.closest(key, n), all, "key {:02x?}", key);
        Ok(())
    }

    fn key(&self, near: usize, len: usize, flip: u8) -> Vec<u8> {
        let mut key: Vec<u8> = self.ids[near].as_bytes().to_vec();
        key.resize(len, 0xab);
        if let Some(last) = key.last_mut() {
            *last ^= flip;
        }
        key
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn table_matches_model(
        seed in any::<u64>(),
        k in 1usize..=4,
        wide in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let mut world = World::new(seed, k, wide);
        for op in &ops {
            world.step(op)?;
        }
    }
}
