//! A whole DHT on the simulator: builds a network, then runs lookups under loss and churn.
//!
//! ```text
//! cargo run --release -p grenache-core --features sim --example sim -- \
//!     --nodes 10000 --seed 1 --loss 0.1 --churn 0.3 --silent 0.2 [--plain-buckets] [--json]
//! ```
//!
//! `--build direct` fills every routing table straight from the list of all nodes (each
//! bucket with random nodes of its range, as a long-running network's tables end up)
//! instead of having every node join by bootstrap (`--build joins`, the default). The
//! lookups, the loss and the churn's fresh nodes, which join by bootstrap, are the same;
//! only the build's traffic is skipped, which is most of a large run's cost.
//!
//! `--plain-buckets` gives every bucket k nodes, as BEP 5 has it, instead of the default
//! wide far buckets (`Config::wide_buckets`), to measure what they change.
//!
//! Each lookup is a pair of commands on two different nodes alive at that moment: an
//! announce then a `get_peers` of the same name, or a BEP-44 put then get of an immutable
//! or a mutable item. The lookup succeeds when the second node finds what the first stored.
//! While they run, `--churn` of the nodes are replaced, a few at a time: one killed, a fresh
//! one spawned that bootstraps from a random live node. `--parallel` lookups run at once.
//! `--silent` of the spawned nodes are behind a NAT: they join and ask, and are added to
//! tables and named in answers like any node, but never answer a query; they take no part
//! in the lookups themselves.
//!
//! Reported: success rate, rounds and virtual latency of the retrieving command (p50, p99),
//! datagrams per lookup (the retrieving command's, both directions), the queries each of
//! the churn's fresh nodes sent to join (its bootstrap and bucket refreshes, and the pings
//! its table asked for), and how fast the simulator ran.

#![allow(
    clippy::disallowed_methods,
    reason = "outside the core's sans-IO rule: reads the wall clock for the epoch and for timing"
)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use grenache_core::dht::Key;
use grenache_core::dht::bep44::{ImmutableItem, Item, MutableItem, Target};
use grenache_core::dht::routing::{NodeInfo, WIDE_BUCKETS};
use grenache_core::dht::{Config, ID_LEN, NodeId, Outcome, QueryError, QueryId};
use grenache_core::sim::{PathConfig, Sim};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const USAGE: &str = "usage: sim [--nodes N] [--seed S] [--loss P] [--churn F] [--silent F]
           [--lookups N] [--parallel N] [--latency MS] [--jitter MS] [--settle S]
           [--build joins|direct] [--plain-buckets] [--json]";

/// Bucket size of the nodes (the default config's k).
const K: usize = 8;
/// Bootstraps a joining node tries before it is used as it is.
const MAX_BOOTSTRAPS: u32 = 3;

/// Nodes spawned per batch while the network is built, and the pause between batches.
const BATCH: usize = 100;
const BATCH_PAUSE: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
struct Args {
    nodes: usize,
    seed: u64,
    loss: f64,
    churn: f64,
    silent: f64,
    lookups: usize,
    parallel: usize,
    latency: u64,
    jitter: u64,
    settle: u64,
    json: bool,
    plain_buckets: bool,
    /// Fill the tables without traffic (`--build direct`).
    direct: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 1000,
        seed: 1,
        loss: 0.0,
        churn: 0.0,
        silent: 0.0,
        lookups: 1000,
        parallel: 16,
        latency: 20,
        jitter: 20,
        settle: 30,
        json: false,
        plain_buckets: false,
        direct: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            args.json = true;
            continue;
        }
        if flag == "--plain-buckets" {
            args.plain_buckets = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--nodes" => args.nodes = value.parse().map_err(|_| bad.clone())?,
            "--seed" => args.seed = value.parse().map_err(|_| bad.clone())?,
            "--loss" => args.loss = value.parse().map_err(|_| bad.clone())?,
            "--churn" => args.churn = value.parse().map_err(|_| bad.clone())?,
            "--silent" => args.silent = value.parse().map_err(|_| bad.clone())?,
            "--lookups" => args.lookups = value.parse().map_err(|_| bad.clone())?,
            "--parallel" => args.parallel = value.parse().map_err(|_| bad.clone())?,
            "--latency" => args.latency = value.parse().map_err(|_| bad.clone())?,
            "--jitter" => args.jitter = value.parse().map_err(|_| bad.clone())?,
            "--settle" => args.settle = value.parse().map_err(|_| bad.clone())?,
            "--build" => {
                args.direct = match value.as_str() {
                    "joins" => false,
                    "direct" => true,
                    _ => return Err(bad),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.nodes < 3 {
        return Err("--nodes must be at least 3".into());
    }
    if !(0.0..1.0).contains(&args.loss)
        || !(0.0..=1.0).contains(&args.churn)
        || !(0.0..0.9).contains(&args.silent)
    {
        return Err("--loss must be in [0, 1), --churn in [0, 1], --silent in [0, 0.9)".into());
    }
    if args.direct && args.silent > 0.0 {
        // Silent nodes would enter other tables as if they had answered.
        return Err("--build direct does not model --silent nodes".into());
    }
    args.parallel = args.parallel.clamp(1, args.nodes / 3);
    Ok(args)
}

/// What the first command of a lookup stored, so the second can check what it finds.
#[derive(Clone, Debug)]
enum Stored {
    Peer {
        name: Key,
        peer: SocketAddr,
    },
    Immutable {
        v: Vec<u8>,
        target: Target,
    },
    Mutable {
        v: Vec<u8>,
        target: Target,
        salt: Vec<u8>,
    },
}

#[derive(Debug)]
enum Phase {
    Storing,
    Retrieving,
}

#[derive(Debug)]
struct Lookup {
    stored: Stored,
    phase: Phase,
    /// The node the current command runs on.
    node: SocketAddr,
    query: QueryId,
    /// The storing node, kept alive until the lookup ends.
    origin: SocketAddr,
}

#[derive(Debug, Default)]
struct Tally {
    lookups: usize,
    ok: usize,
    by_kind: [(usize, usize); 3],
    stores: usize,
    stores_ok: usize,
    rounds: Vec<u32>,
    /// Virtual milliseconds from issue to end of each retrieving command.
    latency_ms: Vec<u32>,
    datagrams: u64,
    replaced: usize,
    rejoins: usize,
    silent: usize,
    /// Fresh nodes of the churn whose queries were counted, and the `find_node` and
    /// `ping` queries they sent: what joining costs (each answer is one more datagram).
    joins: usize,
    join_queries: u64,
}

impl Tally {
    /// Counts what the churn's fresh node at `addr` has sent so far.
    fn count_join(&mut self, sim: &Sim, addr: SocketAddr) {
        if let Some(node) = sim.node(addr) {
            let out = &node.stats().queries_out;
            self.joins += 1;
            self.join_queries += out.find_node + out.ping;
        }
    }
}

/// Nodes in no particular order, drawn from at random, removed in O(1).
///
/// Churn removes a random node for every one it spawns: a plain list's `retain` made
/// that O(n) per replacement, which at a million nodes is most of the run.
#[derive(Default)]
struct Ready {
    list: Vec<SocketAddr>,
    /// Where each address sits in `list`.
    index: HashMap<SocketAddr, usize>,
}

impl Ready {
    fn push(&mut self, addr: SocketAddr) {
        if self.index.insert(addr, self.list.len()).is_none() {
            self.list.push(addr);
        }
    }

    /// Removes `addr`; the last node takes its place.
    fn remove(&mut self, addr: SocketAddr) {
        let Some(i) = self.index.remove(&addr) else {
            return;
        };
        self.list.swap_remove(i);
        if let Some(&moved) = self.list.get(i) {
            self.index.insert(moved, i);
        }
    }

    fn choose(&self, rng: &mut ChaCha8Rng) -> Option<SocketAddr> {
        self.list.choose(rng).copied()
    }

    fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.list.iter().copied()
    }
}

/// The live nodes that finished joining, plus those still joining.
struct Nodes {
    ready: Ready,
    /// Joining nodes: address, bootstrap command, bootstraps tried.
    joining: Vec<(SocketAddr, QueryId, u32)>,
    /// Bootstraps repeated because the first left the table under k nodes.
    rejoins: usize,
    /// Share of spawned nodes that never answer a query.
    silent_share: f64,
    /// Silent nodes spawned.
    silent: usize,
    /// The churn's fresh nodes still alive, whose queries are not counted yet.
    fresh: BTreeSet<SocketAddr>,
}

impl Nodes {
    /// `ready` as the nodes that finished joining, none joining yet.
    fn new(ready: Ready, silent_share: f64) -> Nodes {
        Nodes {
            ready,
            joining: Vec::new(),
            rejoins: 0,
            silent_share,
            silent: 0,
            fresh: BTreeSet::new(),
        }
    }

    /// Moves nodes whose bootstrap ended into `ready`. A node whose table stayed under
    /// k nodes bootstraps again from another ready node first, as an application would.
    fn promote(&mut self, sim: &mut Sim, rng: &mut ChaCha8Rng) {
        if self.joining.is_empty() {
            return;
        }
        let mut retry = Vec::new();
        let ready = &mut self.ready;
        self.joining.retain(|&(addr, q, tries)| {
            let done = sim.record(addr, q).is_none_or(|r| r.finished.is_some());
            if !done || !sim.contains(addr) {
                return !done;
            }
            // Only the bootstrap's event was queued; drop it.
            sim.take_events(addr);
            let sparse = sim.node(addr).is_some_and(|n| n.routing_table_len() < K);
            if sparse && tries < MAX_BOOTSTRAPS {
                retry.push((addr, tries));
            } else {
                ready.push(addr);
            }
            false
        });
        for (addr, tries) in retry {
            let Some(seed) = self.ready.choose(rng) else {
                continue;
            };
            if let Some(q) = sim.command(addr, |node, now| node.bootstrap(now, &[seed])) {
                self.joining.push((addr, q, tries + 1));
                self.rejoins += 1;
            }
        }
    }

    /// A random ready node outside `busy`.
    fn pick(&self, rng: &mut ChaCha8Rng, busy: &BTreeSet<SocketAddr>) -> Option<SocketAddr> {
        for _ in 0..64 {
            let a = self.ready.choose(rng)?;
            if !busy.contains(&a) {
                return Some(a);
            }
        }
        self.ready.iter().find(|a| !busy.contains(a))
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let wall = Instant::now();
    let mut sim = Sim::new(args.seed, Instant::now());
    let mut config = Config::default();
    config.wide_buckets = !args.plain_buckets;
    sim.set_node_config(config.clone());
    // Scenario choices come from their own stream, so the network's draws stay put.
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed_5eed_5eed_5eed);
    sim.set_link(
        PathConfig::new(Duration::from_millis(args.latency))
            .with_jitter(Duration::from_millis(args.jitter))
            .with_loss(args.loss),
    );

    let mut nodes = if args.direct {
        build_direct(&mut sim, &mut rng, args.nodes, &config)
    } else {
        build(&mut sim, &mut rng, args.nodes, args.silent)
    };
    sim.run_for(Duration::from_secs(args.settle));
    nodes.promote(&mut sim, &mut rng);
    let built_at = sim.elapsed();
    let built_wall = wall.elapsed();

    let mut tally = run_lookups(&mut sim, &mut rng, &mut nodes, &args);
    tally.rejoins = nodes.rejoins;
    tally.silent = nodes.silent;
    report(&args, &sim, &tally, built_at, built_wall, wall.elapsed())
}

/// Spawns `n` nodes in batches, each bootstrapping from a random node already there.
fn build(sim: &mut Sim, rng: &mut ChaCha8Rng, n: usize, silent_share: f64) -> Nodes {
    let mut ready = Ready::default();
    ready.push(sim.spawn(None));
    let mut nodes = Nodes::new(ready, silent_share);
    let mut spawned = 1;
    while spawned < n {
        // Seeds are nodes that finished joining: one still joining may know nobody yet
        // (and `ready` only grows in `promote`, so the batch draws from one list).
        nodes.promote(sim, rng);
        for _ in 0..BATCH.min(n - spawned) {
            if join(sim, rng, &mut nodes).is_some() {
                spawned += 1;
            }
        }
        sim.run_for(BATCH_PAUSE);
    }
    nodes
}

/// Spawns `n` nodes and fills their routing tables from the list of them all, with no
/// traffic: each bucket gets as many random nodes of its id range as it holds.
fn build_direct(sim: &mut Sim, rng: &mut ChaCha8Rng, n: usize, config: &Config) -> Nodes {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| sim.spawn(None)).collect();
    let mut all: Vec<NodeInfo> = addrs
        .into_iter()
        .filter_map(|addr| {
            Some(NodeInfo {
                id: sim.node(addr)?.id(),
                addr,
            })
        })
        .collect();
    // Spawn order, for the ready list; the sorted copy finds a bucket's range by bisection.
    let mut ready = Ready::default();
    for node in &all {
        ready.push(node.addr);
    }
    all.sort_unstable_by_key(|node| node.id);
    let ids: Vec<NodeId> = all.iter().map(|node| node.id).collect();
    let mut picked = Vec::new();
    for addr in ready.iter().collect::<Vec<_>>() {
        let Some(own) = sim.node(addr).map(|node| node.id()) else {
            continue;
        };
        picked.clear();
        for b in 0..ID_LEN * 8 {
            let range = bucket_range(&ids, &own, b);
            let wide = if config.wide_buckets {
                WIDE_BUCKETS.get(b).copied().unwrap_or(1)
            } else {
                1
            };
            let take = range.len().min(config.k * wide);
            picked.extend(
                rand::seq::index::sample(rng, range.len(), take)
                    .into_iter()
                    .map(|i| all[range.start + i]),
            );
            // Nodes sharing more than b bits with us: only ourselves left, nothing deeper.
            if subtree_len(&ids, &own, b + 1) <= 1 {
                break;
            }
        }
        let now = sim.now();
        if let Some(node) = sim.node_mut(addr) {
            node.learn_answered(now, &picked);
        }
    }
    Nodes::new(ready, 0.0)
}

/// Where, in the sorted `ids`, the ids sharing exactly `b` leading bits with `own` lie.
fn bucket_range(ids: &[NodeId], own: &NodeId, b: usize) -> std::ops::Range<usize> {
    let mut far = *own;
    flip(&mut far, b);
    let (lo, hi) = prefix_bounds(&far, b + 1);
    ids.partition_point(|id| *id < lo)..ids.partition_point(|id| *id <= hi)
}

/// How many of the sorted `ids` share at least `b` leading bits with `own`.
fn subtree_len(ids: &[NodeId], own: &NodeId, b: usize) -> usize {
    let (lo, hi) = prefix_bounds(own, b);
    ids.partition_point(|id| *id <= hi) - ids.partition_point(|id| *id < lo)
}

fn flip(id: &mut NodeId, bit: usize) {
    id.0[bit / 8] ^= 0x80 >> (bit % 8);
}

/// The least and the greatest id whose first `bits` bits are those of `id`.
fn prefix_bounds(id: &NodeId, bits: usize) -> (NodeId, NodeId) {
    let (mut lo, mut hi) = (*id, *id);
    for bit in bits..ID_LEN * 8 {
        let mask = 0x80u8 >> (bit % 8);
        lo.0[bit / 8] &= !mask;
        hi.0[bit / 8] |= mask;
    }
    (lo, hi)
}

/// Spawns one node bootstrapping from a random ready node; a silent one (drawn with
/// `--silent`) only joins, and is left out of the nodes that run lookups.
fn join(sim: &mut Sim, rng: &mut ChaCha8Rng, nodes: &mut Nodes) -> Option<SocketAddr> {
    let seed = nodes.ready.choose(rng)?;
    // Drawn only when asked for, so runs without silent nodes keep their traces.
    let silent = nodes.silent_share > 0.0 && rng.random_bool(nodes.silent_share);
    let addr = sim.spawn(None);
    sim.set_silent(addr, silent);
    let q = sim.command(addr, |node, now| node.bootstrap(now, &[seed]))?;
    if silent {
        nodes.silent += 1;
    } else {
        nodes.joining.push((addr, q, 1));
    }
    Some(addr)
}

fn run_lookups(sim: &mut Sim, rng: &mut ChaCha8Rng, nodes: &mut Nodes, args: &Args) -> Tally {
    let mut tally = Tally::default();
    // Rounded, so the count asked for is the count done.
    let replacements = (args.churn * args.nodes as f64).round() as usize;
    let mut running: Vec<Lookup> = Vec::new();
    let mut started = 0;
    while started < args.lookups || !running.is_empty() {
        nodes.promote(sim, rng);
        while running.len() < args.parallel && started < args.lookups {
            let due = replacements * (started + 1) / args.lookups.max(1);
            let count = due - tally.replaced.min(due);
            churn(sim, rng, nodes, &running, count, &mut tally);
            tally.replaced = tally.replaced.max(due);
            match start(sim, rng, nodes, &running, started) {
                Some(l) => running.push(l),
                None => tally.lookups += 1, // no two free nodes: counts as a failure
            }
            started += 1;
        }
        let waiting: Vec<(SocketAddr, QueryId)> =
            running.iter().map(|l| (l.node, l.query)).collect();
        let Some((i, result)) = sim.wait_for_any(&waiting) else {
            // Nothing more will happen: whatever runs has failed.
            tally.lookups += running.len();
            break;
        };
        let l = running.swap_remove(i);
        if let Some(next) = advance(sim, rng, nodes, &running, l, result, &mut tally) {
            running.push(next);
        }
    }
    for addr in std::mem::take(&mut nodes.fresh) {
        tally.count_join(sim, addr);
    }
    tally
}

/// Replaces `count` random idle nodes by fresh ones.
fn churn(
    sim: &mut Sim,
    rng: &mut ChaCha8Rng,
    nodes: &mut Nodes,
    running: &[Lookup],
    count: usize,
    tally: &mut Tally,
) {
    let busy = busy(running);
    for _ in 0..count {
        let Some(victim) = nodes.pick(rng, &busy) else {
            return;
        };
        nodes.ready.remove(victim);
        if nodes.fresh.remove(&victim) {
            tally.count_join(sim, victim);
        }
        sim.kill(victim);
        if let Some(fresh) = join(sim, rng, nodes) {
            nodes.fresh.insert(fresh);
        }
    }
}

fn busy(running: &[Lookup]) -> BTreeSet<SocketAddr> {
    running.iter().flat_map(|l| [l.node, l.origin]).collect()
}

/// Starts lookup number `i`: its storing command on a random idle node.
fn start(
    sim: &mut Sim,
    rng: &mut ChaCha8Rng,
    nodes: &Nodes,
    running: &[Lookup],
    i: usize,
) -> Option<Lookup> {
    let origin = nodes.pick(rng, &busy(running))?;
    let nonce: u64 = rng.random();
    let text = format!("lookup-{i}-{nonce:016x}");
    let v = format!("{}:{text}", text.len()).into_bytes();
    let (stored, query) = match i % 4 {
        0 | 1 => {
            let name = Key::new(text.as_bytes())?;
            let port = 1024 + (nonce % 60_000) as u16;
            let peer = SocketAddr::new(origin.ip(), port);
            let q = sim.command(origin, |node, now| {
                node.announce(now, name.clone(), Some(port))
            })?;
            (Stored::Peer { name, peer }, q)
        }
        2 => {
            let item = Item::Immutable(ImmutableItem::new(v.clone()).ok()?);
            let target = item.target();
            let q = sim.command(origin, |node, now| node.put(now, item, None))?;
            (Stored::Immutable { v, target }, q)
        }
        _ => {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let salt = b"grenache-sim".to_vec();
            let item = Item::Mutable(MutableItem::sign(&secret, salt.clone(), 1, v.clone()).ok()?);
            let target = item.target();
            let q = sim.command(origin, |node, now| node.put(now, item, None))?;
            (Stored::Mutable { v, target, salt }, q)
        }
    };
    Some(Lookup {
        stored,
        phase: Phase::Storing,
        node: origin,
        query,
        origin,
    })
}

/// Moves a lookup on after its command ended: store done, retrieve from another node;
/// retrieve done, count it. Returns the lookup if it goes on.
fn advance(
    sim: &mut Sim,
    rng: &mut ChaCha8Rng,
    nodes: &Nodes,
    running: &[Lookup],
    mut l: Lookup,
    result: Option<Result<Outcome, QueryError>>,
    tally: &mut Tally,
) -> Option<Lookup> {
    let kind = match l.stored {
        Stored::Peer { .. } => 0,
        Stored::Immutable { .. } => 1,
        Stored::Mutable { .. } => 2,
    };
    match l.phase {
        Phase::Storing => {
            tally.stores += 1;
            if matches!(
                result,
                Some(Ok(Outcome::Announced { stored_at, .. } | Outcome::Stored { stored_at, .. })) if stored_at > 0
            ) {
                tally.stores_ok += 1;
            }
            let mut busy = busy(running);
            busy.insert(l.origin);
            let Some(other) = nodes.pick(rng, &busy) else {
                tally.lookups += 1;
                tally.by_kind[kind].0 += 1;
                return None;
            };
            let query = match &l.stored {
                Stored::Peer { name, .. } => {
                    sim.command(other, |node, now| node.get_peers(now, name.clone()))
                }
                Stored::Immutable { target, .. } => {
                    sim.command(other, |node, now| node.get(now, *target, None))
                }
                Stored::Mutable { target, salt, .. } => sim.command(other, |node, now| {
                    node.get(now, *target, Some(salt.clone()))
                }),
            }?;
            l.phase = Phase::Retrieving;
            l.node = other;
            l.query = query;
            Some(l)
        }
        Phase::Retrieving => {
            tally.lookups += 1;
            tally.by_kind[kind].0 += 1;
            let ok = match (&l.stored, result) {
                (Stored::Peer { peer, .. }, Some(Ok(Outcome::Peers { peers }))) => {
                    peers.contains(peer)
                }
                (
                    Stored::Immutable { v, .. },
                    Some(Ok(Outcome::Got {
                        item: Some(item), ..
                    })),
                ) => item.v() == v.as_slice(),
                (
                    Stored::Mutable { v, .. },
                    Some(Ok(Outcome::Got {
                        item: Some(item), ..
                    })),
                ) => item.v() == v.as_slice() && item.seq() == Some(1),
                _ => false,
            };
            if ok {
                tally.ok += 1;
                tally.by_kind[kind].1 += 1;
            }
            if let Some(record) = sim.record(l.node, l.query) {
                tally.datagrams += record.datagrams;
                if let Some(rounds) = record.rounds {
                    tally.rounds.push(rounds);
                }
                if let Some(finished) = record.finished {
                    let ms = finished.saturating_sub(record.issued).as_millis();
                    tally.latency_ms.push(u32::try_from(ms).unwrap_or(u32::MAX));
                }
            }
            None
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(
    args: &Args,
    sim: &Sim,
    tally: &Tally,
    built_at: Duration,
    built_wall: Duration,
    wall: Duration,
) -> ExitCode {
    let mut rounds = tally.rounds.clone();
    rounds.sort_unstable();
    let p50 = percentile(&rounds, 0.50);
    let p99 = percentile(&rounds, 0.99);
    let mut latency = tally.latency_ms.clone();
    latency.sort_unstable();
    let (ms50, ms99) = (percentile(&latency, 0.50), percentile(&latency, 0.99));
    let lookups = tally.lookups.max(1) as f64;
    let success_rate = tally.ok as f64 / lookups;
    let msgs_per_lookup = tally.datagrams as f64 / lookups;
    let wall_s = wall.as_secs_f64();
    let stats = sim.stats();
    let events_per_s = stats.steps as f64 / wall_s.max(1e-9);
    let queries_per_join = tally.join_queries as f64 / tally.joins.max(1) as f64;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let line = serde_json::json!({
            "nodes": args.nodes,
            "seed": args.seed,
            "loss": args.loss,
            "churn": args.churn,
            "silent": args.silent,
            "wide_buckets": !args.plain_buckets,
            "build": if args.direct { "direct" } else { "joins" },
            "silent_nodes": tally.silent,
            "lookups": tally.lookups,
            "ok": tally.ok,
            "success_rate": success_rate,
            "p50_rounds": p50,
            "p99_rounds": p99,
            "p50_ms": ms50,
            "p99_ms": ms99,
            "max_ms": latency.last().copied().unwrap_or(0),
            "msgs_per_lookup": msgs_per_lookup,
            "stores": tally.stores,
            "stores_ok": tally.stores_ok,
            "replaced": tally.replaced,
            "rejoins": tally.rejoins,
            "joins": tally.joins,
            "queries_per_join": queries_per_join,
            "virtual_s": sim.elapsed().as_secs_f64(),
            "datagrams": stats.sent,
            "steps": stats.steps,
            "trace_hash": format!("{:016x}", sim.trace_hash()),
            "wall_s": wall_s,
            "events_per_s": events_per_s,
        });
        writeln!(out, "{line}")
    } else {
        let [peers, immutable, mutable] = tally.by_kind;
        writeln!(
            out,
            "simulated DHT: {} nodes, seed {}, loss {:.0}%, churn {:.0}%, silent {:.0}% ({} nodes), {} in parallel, {} buckets\n\
             build          {:.0} s virtual, {:.1} s wall, {}\n\
             lookups        {} (announce+get_peers {}, immutable put+get {}, mutable put+get {})\n\
             ok             {} ({:.2}%; by kind {}/{}, {}/{}, {}/{})\n\
             stores ok      {} of {}\n\
             rounds         p50 {}, p99 {}, max {}\n\
             latency        p50 {} ms, p99 {} ms, max {} ms (virtual)\n\
             msgs/lookup    {:.1}\n\
             churn          {} nodes replaced, {} bootstraps repeated (table under k)\n\
             joins          {:.1} find_node+ping queries sent per fresh node ({} nodes)\n\
             network        {} datagrams sent, {} lost, {} to dead nodes\n\
             virtual time   {:.0} s\n\
             wall time      {:.1} s ({:.0} events/s)\n\
             trace hash     {:016x}",
            args.nodes,
            args.seed,
            args.loss * 100.0,
            args.churn * 100.0,
            args.silent * 100.0,
            tally.silent,
            args.parallel,
            if args.plain_buckets { "plain" } else { "wide" },
            built_at.as_secs_f64(),
            built_wall.as_secs_f64(),
            if args.direct {
                "tables filled directly (--build direct)"
            } else {
                "every node joined by bootstrap"
            },
            tally.lookups,
            peers.0,
            immutable.0,
            mutable.0,
            tally.ok,
            success_rate * 100.0,
            peers.1,
            peers.0,
            immutable.1,
            immutable.0,
            mutable.1,
            mutable.0,
            tally.stores_ok,
            tally.stores,
            p50,
            p99,
            rounds.last().copied().unwrap_or(0),
            ms50,
            ms99,
            latency.last().copied().unwrap_or(0),
            msgs_per_lookup,
            tally.replaced,
            tally.rejoins,
            queries_per_join,
            tally.joins,
            stats.sent,
            stats.lost,
            stats.unreachable,
            sim.elapsed().as_secs_f64(),
            wall_s,
            events_per_s,
            sim.trace_hash(),
        )
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
