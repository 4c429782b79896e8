//! Whole-network behaviour on the deterministic simulator, with 500 nodes and more.
//!
//! Every test prints its seed when it fails; `SIM_SEED=<n> cargo test -p grenache-core
//! --features sim --test sim` replays a run.

#![allow(
    clippy::disallowed_methods,
    reason = "tests take the epoch from the wall clock once"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grenache_core::dht::Key;
use grenache_core::dht::WATCH_TTL;
use grenache_core::dht::bep44::{ImmutableItem, Item, MutableItem};
use grenache_core::dht::{Event, Outcome};
use grenache_core::sim::{Burst, PathConfig, Sim};

const NODES: usize = 500;

/// The seed to use: `SIM_SEED` when set, else the test's own.
fn seed(default: u64) -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed if the test panics, so the run can be replayed.
struct ReplayHint(u64);

impl Drop for ReplayHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failed with sim seed {0}: replay with SIM_SEED={0}", self.0);
        }
    }
}

/// `n` nodes, each bootstrapped from the first one, then left alone for `settle`.
fn network(seed: u64, n: usize, link: PathConfig, settle: Duration) -> (Sim, Vec<SocketAddr>) {
    let mut sim = Sim::new(seed, Instant::now());
    sim.set_link(link);
    let first = sim.spawn(None);
    let mut nodes = vec![first];
    for i in 1..n {
        let addr = sim.spawn(None);
        sim.command(addr, |node, now| node.bootstrap(now, &[first]));
        nodes.push(addr);
        if i % 50 == 0 {
            sim.run_for(Duration::from_millis(500));
        }
    }
    sim.run_for(settle);
    (sim, nodes)
}

/// Long enough for every node's first bucket refresh (BEP 5: after 15 idle minutes), which
/// fills the buckets far from its own id that joining alone leaves thin.
const SETTLED: Duration = Duration::from_secs(16 * 60);
/// Long enough for the joins to end.
const JOINED: Duration = Duration::from_secs(20);

fn key(name: &str) -> Key {
    Key::new(name.as_bytes()).expect("a non-empty name")
}

/// Announces `port` from `a` under `name`, then looks it up from `b`: was it found?
fn announce_then_lookup(
    sim: &mut Sim,
    a: SocketAddr,
    b: SocketAddr,
    name: &str,
    port: u16,
) -> bool {
    let k = key(name);
    let Some(q) = sim.command(a, |node, now| node.announce(now, k.clone(), Some(port))) else {
        return false;
    };
    // Whatever the announce reports, only the lookup decides.
    sim.wait_for(a, q);
    let Some(q) = sim.command(b, |node, now| node.get_peers(now, k.clone())) else {
        return false;
    };
    match sim.wait_for(b, q) {
        Some(Ok(Outcome::Peers { peers })) => peers.contains(&SocketAddr::new(a.ip(), port)),
        _ => false,
    }
}

/// Two distinct nodes picked from the list by index arithmetic (deterministic, spread out).
fn pick(nodes: &[SocketAddr], i: usize) -> (SocketAddr, SocketAddr) {
    let a = nodes[(i * 7919 + 13) % nodes.len()];
    let b = nodes[(i * 104_729 + 101) % nodes.len()];
    if a == b {
        (a, nodes[(i * 104_729 + 102) % nodes.len()])
    } else {
        (a, b)
    }
}

#[test]
fn every_node_bootstraps_from_one_seed_node() {
    let seed = seed(1);
    let _hint = ReplayHint(seed);

    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), JOINED);

    let mut bootstrapped = 0;
    for &addr in &nodes[1..] {
        let ok = sim.take_events(addr).iter().any(|e| {
            matches!(e, Event::Finished { result: Ok(Outcome::Bootstrapped { table_size }), .. } if *table_size > 0)
        });
        bootstrapped += usize::from(ok);
    }
    assert_eq!(
        bootstrapped,
        NODES - 1,
        "every joining node reported a bootstrap"
    );
    let sparse: Vec<usize> = nodes
        .iter()
        .filter_map(|a| sim.node(*a).map(|n| n.routing_table_len()))
        .filter(|len| *len < 8)
        .collect();
    assert!(sparse.is_empty(), "tables under k entries: {sparse:?}");
    assert_eq!(sim.stats().lost, 0);
}

#[test]
fn an_announce_is_found_from_another_node() {
    let seed = seed(2);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), SETTLED);
    let (a, b) = (nodes[17], nodes[401]);

    let found = announce_then_lookup(&mut sim, a, b, "rest:net:util", 4242);

    assert!(found, "{a} announced, {b} did not find it");
}

#[test]
fn immutable_and_mutable_items_round_trip() {
    let seed = seed(3);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), SETTLED);
    let (a, b) = (nodes[33], nodes[444]);
    let immutable =
        Item::Immutable(ImmutableItem::new(b"12:hello, world".to_vec()).expect("bencoded"));
    let secret = [7u8; 32];
    let salt = b"salt".to_vec();
    let mutable = |seq: i64, v: &[u8]| {
        Item::Mutable(
            MutableItem::sign(&secret, salt.clone(), seq, v.to_vec()).expect("valid item"),
        )
    };

    let mut got = Vec::new();
    for (item, salt) in [
        (immutable, None),
        (mutable(1, b"3:one"), Some(salt.clone())),
        (mutable(2, b"3:two"), Some(salt.clone())),
    ] {
        let target = item.target();
        let put = sim
            .command(a, |node, now| node.put(now, item.clone(), None))
            .expect("node a");
        let stored = sim.wait_for(a, put);
        assert!(
            matches!(stored, Some(Ok(Outcome::Stored { stored_at, .. })) if stored_at > 0),
            "{stored:?}"
        );
        let get = sim
            .command(b, |node, now| node.get(now, target, salt))
            .expect("node b");
        got.push(match sim.wait_for(b, get) {
            Some(Ok(Outcome::Got { item, .. })) => item.map(|i| (i.v().to_vec(), i.seq())),
            other => panic!("get ended with {other:?}"),
        });
    }

    assert_eq!(
        got,
        vec![
            Some((b"12:hello, world".to_vec(), None)),
            Some((b"3:one".to_vec(), Some(1))),
            Some((b"3:two".to_vec(), Some(2))),
        ]
    );
}

#[test]
fn lookups_survive_ten_percent_loss() {
    let seed = seed(4);
    let _hint = ReplayHint(seed);
    // Built on a clean network: joining under loss is another matter (see the sim example).
    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), SETTLED);
    sim.set_link(PathConfig::default().with_loss(0.1));
    let lookups = 100;

    let ok = (0..lookups)
        .filter(|i| {
            let (a, b) = pick(&nodes, *i);
            announce_then_lookup(&mut sim, a, b, &format!("service-{i}"), 5000)
        })
        .count();

    assert!(sim.stats().lost > 0, "the links did lose datagrams");
    assert!(
        ok * 100 >= lookups * 99,
        "{ok} of {lookups} lookups succeeded"
    );
}

#[test]
fn lookups_survive_burst_loss() {
    let seed = seed(9);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), SETTLED);
    // 1% background loss, and bursts of 5 datagrams on average covering 10% of them, in
    // which everything is lost: a node whose path is in a burst loses the query and its
    // resends too, unlike independent loss.
    sim.set_link(
        PathConfig::default()
            .with_loss(0.01)
            .with_burst(Burst::new(5.0, 0.1, 1.0)),
    );
    let lookups = 100;
    let mut ok = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..lookups {
        let (a, b) = pick(&nodes, i);
        let started = sim.now();
        if announce_then_lookup(&mut sim, a, b, &format!("bursty-{i}"), 5000) {
            ok += 1;
        }
        slowest = slowest.max(sim.now() - started);
    }

    assert!(sim.stats().lost > 0, "the links did lose datagrams");
    assert!(
        ok * 100 >= lookups * 99,
        "{ok} of {lookups} lookups succeeded"
    );
    assert!(
        slowest < 2 * HARD_TIMEOUT,
        "an announce and lookup took {slowest:?}: a burst held them to the hard timeout"
    );
}

/// A lossy, jittery scenario with churn; returns its trace hash.
fn scenario(sim: &mut Sim, nodes: &mut Vec<SocketAddr>) -> u64 {
    for i in 0..20 {
        let (a, b) = pick(nodes, i);
        announce_then_lookup(sim, a, b, &format!("svc-{i}"), 6000);
        if i % 4 == 0 {
            let victim = nodes.remove((i * 31) % nodes.len());
            sim.kill(victim);
            let fresh = sim.spawn(None);
            let seed_node = nodes[i % nodes.len()];
            sim.command(fresh, |node, now| node.bootstrap(now, &[seed_node]));
            nodes.push(fresh);
        }
    }
    sim.run_for(Duration::from_secs(30));
    sim.trace_hash()
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = seed(5);
    let _hint = ReplayHint(seed);
    let link = PathConfig::default().with_loss(0.05).with_duplicate(0.01);
    let (mut first, mut first_nodes) = network(seed, NODES, link, JOINED);
    let (mut second, mut second_nodes) = network(seed, NODES, link, JOINED);
    let (mut other, mut other_nodes) = network(seed + 1, NODES, link, JOINED);

    let a = scenario(&mut first, &mut first_nodes);
    let b = scenario(&mut second, &mut second_nodes);
    let c = scenario(&mut other, &mut other_nodes);

    assert_eq!(a, b, "same seed, same trace");
    assert_eq!(first.stats(), second.stats());
    assert_ne!(a, c, "another seed, another trace");
}

#[test]
fn a_cut_off_node_is_found_only_after_healing() {
    let seed = seed(6);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), SETTLED);
    let (hidden, seeker) = (nodes[250], nodes[123]);
    sim.isolate(hidden);

    let found_while_cut = announce_then_lookup(&mut sim, hidden, seeker, "hidden", 7000);
    sim.heal();
    sim.run_for(Duration::from_secs(5));
    let found_after_heal = announce_then_lookup(&mut sim, hidden, seeker, "hidden", 7000);

    assert!(!found_while_cut, "nothing gets through a partition");
    assert!(sim.stats().partitioned > 0);
    assert!(found_after_heal, "found once the partition healed");
}

/// The hard query timeout, which no lookup should wait out while nodes that answer settle it.
const HARD_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn silent_and_dead_nodes_never_cost_a_hard_timeout() {
    let seed = seed(7);
    let _hint = ReplayHint(seed);
    let mut sim = Sim::new(seed, Instant::now());
    let first = sim.spawn(None);
    let mut live = vec![first];
    // One node in five is behind a NAT: it joins and asks, and never answers.
    for i in 1..300 {
        let addr = sim.spawn(None);
        let silent = i % 5 == 4;
        sim.set_silent(addr, silent);
        sim.command(addr, |node, now| node.bootstrap(now, &[first]));
        if !silent {
            live.push(addr);
        }
        if i % 50 == 0 {
            sim.run_for(Duration::from_millis(500));
        }
    }
    sim.run_for(JOINED);
    // Then 30% of the answering nodes die, and every link loses 10%.
    let dead = live.len() * 3 / 10;
    for i in 0..dead {
        let victim = live.remove((i * 7919 + 1) % live.len());
        sim.kill(victim);
    }
    sim.set_link(PathConfig::default().with_loss(0.1));

    let lookups = 60;
    let mut found = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..lookups {
        let (a, b) = pick(&live, i);
        let k = key(&format!("nat-{i}"));
        let announce = sim
            .command(a, |node, now| node.announce(now, k.clone(), Some(5000)))
            .expect("a is alive");
        sim.wait_for(a, announce);
        let lookup = sim
            .command(b, |node, now| node.get_peers(now, k.clone()))
            .expect("b is alive");
        let result = sim.wait_for(b, lookup);
        if let Some(Ok(Outcome::Peers { peers })) = &result
            && peers.contains(&SocketAddr::new(a.ip(), 5000))
        {
            found += 1;
        }
        let record = sim.record(b, lookup).expect("recorded");
        let took = record.finished.expect("finished") - record.issued;
        slowest = slowest.max(took);
    }

    assert!(sim.stats().silenced > 0, "silent nodes were asked");
    assert!(
        found * 100 >= lookups * 98,
        "{found} of {lookups} lookups found the peer"
    );
    assert!(
        slowest < HARD_TIMEOUT,
        "a lookup waited {slowest:?}, the hard timeout is {HARD_TIMEOUT:?}"
    );
}

/// A node whose query and resend were both lost is marked silent for ten minutes. If
/// nothing asked it again meanwhile, the announcer would store on farther nodes than
/// other nodes' lookups reach, and they would miss the service (the whole-system
/// simulator found this, seed 1094). Lookups ask a marked node once anyway, at most
/// every 30 s, without waiting for it.
#[test]
fn a_node_cut_off_for_a_moment_is_asked_again_before_its_mark_expires() {
    let seed = seed(11);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, 40, PathConfig::default(), SETTLED);
    let k = key("cut-off-for-a-moment");
    let (announcer, seeker) = (nodes[3], nodes[17]);
    // The eight nodes closest to the name, as the whole network knows them.
    let mut by_distance: Vec<(_, SocketAddr)> = nodes
        .iter()
        .filter(|a| **a != announcer && **a != seeker)
        .map(|a| (sim.node(*a).expect("alive").id().distance(k.as_bytes()), *a))
        .collect();
    by_distance.sort();
    let closest: Vec<SocketAddr> = by_distance.iter().take(8).map(|(_, a)| *a).collect();

    // The announcer loses every packet to and from them while it looks the name up.
    for c in &closest {
        sim.partition(announcer, *c);
    }
    let q = sim
        .command(announcer, |node, now| node.get_peers(now, k.clone()))
        .expect("alive");
    sim.wait_for(announcer, q);
    sim.run_for(HARD_TIMEOUT);
    sim.heal();
    let marked = sim.node(announcer).expect("alive").silent_nodes();
    // Well within the ten minutes of the marks, but past the 30 s between long shots.
    sim.run_for(Duration::from_secs(40));
    let port = 7100;
    let found = announce_then_lookup(&mut sim, announcer, seeker, "cut-off-for-a-moment", port);
    let peer = SocketAddr::new(announcer.ip(), port);
    let on_closest = storing(&sim, &closest, &k, peer);
    let long_shots = sim.node(announcer).expect("alive").stats().long_shots;

    assert!(
        marked >= 4,
        "the cut made the announcer mark {marked} nodes silent"
    );
    assert!(long_shots > 0, "the announce asked marked nodes anyway");
    assert!(
        on_closest.len() >= 4,
        "stored on {} of the 8 closest nodes",
        on_closest.len()
    );
    assert!(found, "the seeker found the service");
}

/// The nodes that store `peer` under `k`.
fn storing(sim: &Sim, nodes: &[SocketAddr], k: &Key, peer: SocketAddr) -> Vec<SocketAddr> {
    nodes
        .iter()
        .copied()
        .filter(|a| {
            sim.node(*a)
                .is_some_and(|n| n.local_peers(sim.now(), k, 1000).contains(&peer))
        })
        .collect()
}

#[test]
fn an_unannounce_reaches_every_node_that_stored_the_announce() {
    let seed = seed(7);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, NODES, PathConfig::default(), SETTLED);

    for i in 0..10 {
        let (a, b) = pick(&nodes, i);
        let (name, port) = (format!("leaving-{i}"), 8000 + i as u16);
        assert!(announce_then_lookup(&mut sim, a, b, &name, port), "{name}");
        let (k, peer) = (key(&name), SocketAddr::new(a.ip(), port));
        let stored: Vec<SocketAddr> = storing(&sim, &nodes, &k, peer)
            .into_iter()
            .filter(|s| *s != a)
            .collect();

        let q = sim
            .command(a, |node, now| node.unannounce(now, k.clone(), port))
            .expect("node a");
        let ended = sim.wait_for(a, q);

        assert!(stored.len() >= 8, "{name} was stored on {stored:?}");
        assert_eq!(
            ended,
            Some(Ok(Outcome::Unannounced {
                dropped_at: stored.len()
            })),
            "{name}: every storing node dropped it"
        );
        assert_eq!(
            storing(&sim, &nodes, &k, peer),
            Vec::<SocketAddr>::new(),
            "{name}: still stored"
        );
        let q = sim
            .command(b, |node, now| node.get_peers(now, k.clone()))
            .expect("node b");
        assert_eq!(
            sim.wait_for(b, q),
            Some(Ok(Outcome::Peers { peers: vec![] })),
            "{name}: found after the unannounce"
        );
    }
}

/// How many `PeersChanged` events for `name` a node reported since the last call.
fn changes_seen(sim: &mut Sim, addr: SocketAddr, name: &Key) -> usize {
    sim.take_events(addr)
        .iter()
        .filter(|e| matches!(e, Event::PeersChanged { info_hash } if info_hash == name))
        .count()
}

#[test]
fn a_watch_sees_every_change() {
    let seed = seed(9);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, 100, PathConfig::default(), JOINED);
    let name = key("watched");
    // The node farthest from the name: it stores none of its peers, so only notifications
    // from the storing nodes can tell it.
    let id = |a: &SocketAddr| sim.node(*a).expect("alive").id();
    let watcher = *nodes
        .iter()
        .max_by(|a, b| name.cmp_distance(&id(a), &id(b)))
        .expect("nodes");
    let watch = |sim: &mut Sim| {
        let q = sim
            .command(watcher, |node, now| node.watch(now, name.clone()))
            .expect("the watcher lives");
        sim.wait_for(watcher, q);
    };
    watch(&mut sim);
    changes_seen(&mut sim, watcher, &name);

    // New peers, each announced from another node: every one is a change.
    let mut missed = Vec::new();
    for i in 0..10u16 {
        let from = nodes[(usize::from(i) * 37 + 11) % nodes.len()];
        let k = name.clone();
        sim.command(from, |node, now| node.announce(now, k, Some(5000 + i)));
        sim.run_for(Duration::from_secs(1));
        if changes_seen(&mut sim, watcher, &name) == 0 {
            missed.push(i);
        }
    }
    // The same peers again: no change.
    let from = nodes[11];
    let k = name.clone();
    sim.command(from, |node, now| node.announce(now, k, Some(5000)));
    sim.run_for(Duration::from_secs(1));
    let repeated = changes_seen(&mut sim, watcher, &name);
    // Let every peer expire, renewing within the subscriptions' life as a Grape does.
    let max_age = sim.node(watcher).expect("alive").config().peer_max_age;
    let (mut waited, mut expired) = (Duration::ZERO, 0);
    while waited <= max_age {
        watch(&mut sim);
        sim.run_for(WATCH_TTL / 2);
        waited += WATCH_TTL / 2;
        expired += changes_seen(&mut sim, watcher, &name);
    }

    assert_eq!(missed, Vec::<u16>::new(), "announces the watcher missed");
    assert_eq!(repeated, 0, "a re-announce is no change");
    assert!(expired > 0, "the expiry went unseen");
}

/// One flooding host: `count` pings and queries with random ids from 256 ports of one
/// address, `per_tick` of them every 100 ms of virtual time, all at `victim`.
fn flood(sim: &mut Sim, victim: SocketAddr, count: usize, per_tick: usize) {
    use grenache_core::dht::NodeId;
    use grenache_core::dht::krpc::{Body, Message, Method, Query};
    use rand::Rng as _;

    let host = std::net::IpAddr::from([10, 255, 0, 1]);
    for i in 0..count {
        let id = NodeId(sim.rng().random());
        let method = match i % 3 {
            0 => Method::Ping,
            1 => Method::FindNode {
                target: NodeId(sim.rng().random()).into(),
            },
            _ => Method::GetPeers {
                info_hash: Key::from(NodeId(sim.rng().random())),
            },
        };
        let bytes = Message {
            tid: vec![1, 2],
            version: None,
            read_only: false,
            body: Body::Query(Query { id, method }),
        }
        .encode();
        let from = SocketAddr::new(host, 1024 + (i % 256) as u16);
        let now = sim.now();
        if let Some(node) = sim.node_mut(victim) {
            node.handle_datagram(now, from, &bytes);
        }
        if (i + 1) % per_tick == 0 {
            sim.run_for(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_flooding_host_evicts_no_good_node_and_does_not_slow_lookups() {
    use grenache_core::dht::DropReason;
    use grenache_core::dht::routing::NodeState;

    let seed = seed(11);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, 100, PathConfig::default(), JOINED);
    sim.set_measure_rounds(true);
    let victim = nodes[7];
    let names: Vec<(String, SocketAddr)> = (0..10)
        .map(|i| (format!("svc:flood:{i}"), nodes[20 + i * 7]))
        .collect();
    for (name, from) in &names {
        let q = sim.command(*from, |node, now| node.announce(now, key(name), Some(5000)));
        if let Some(q) = q {
            sim.wait_for(*from, q);
        }
    }
    let now = sim.now();
    let good_before: Vec<_> = sim
        .node(victim)
        .map(|n| {
            let (t4, _) = n.routing_tables();
            t4.iter(now)
                .filter(|(_, state)| *state == NodeState::Good)
                .map(|(info, _)| info.id)
                .collect()
        })
        .unwrap_or_default();

    // 20,000 datagrams in bursts of 5,000, then the lookups while it is banned.
    flood(&mut sim, victim, 20_000, 5_000);
    let mut slow = Vec::new();
    for (name, from) in &names {
        let q = sim
            .command(victim, |node, now| node.get_peers(now, key(name)))
            .expect("victim alive");
        let result = sim.wait_for(victim, q);
        let found = matches!(&result, Some(Ok(Outcome::Peers { peers }))
            if peers.contains(&SocketAddr::new(from.ip(), 5000)));
        let record = sim.record(victim, q).expect("recorded");
        let took = record.finished.map(|f| f - record.issued);
        if !found || took.is_none_or(|t| t >= Duration::from_secs(1)) || record.rounds > Some(4) {
            slow.push((name.clone(), found, took, record.rounds));
        }
    }

    let node = sim.node(victim).expect("victim alive");
    let (t4, _) = node.routing_tables();
    let evicted: Vec<_> = good_before.iter().filter(|id| !t4.contains(id)).collect();
    let dropped = |r| node.stats().dropped.get(&r).copied().unwrap_or(0);
    assert!(!good_before.is_empty());
    assert!(
        evicted.is_empty(),
        "good nodes evicted by the flood: {evicted:?}"
    );
    assert!(slow.is_empty(), "lookups slowed or failed: {slow:?}");
    assert!(dropped(DropReason::RateLimited) > 0);
    assert!(
        dropped(DropReason::Banned) > 15_000,
        "the flood host is banned: {:?}",
        node.stats().dropped
    );
    assert_eq!(node.stats().bans, 1);
}

/// What 20 busy Grapes send each other: each announces its 5 services every second and
/// looks up 10 names a second (no lookup cache: the Grape API's would only lower it). The
/// busiest source seen by any node, per second, must stay far below the default limits,
/// so that they only ever meet a flood (docs/operators.md, "Defences").
#[test]
fn twenty_busy_grapes_stay_far_below_the_default_limits() {
    use std::collections::BTreeMap;

    use grenache_core::dht::DropReason;
    use grenache_core::dht::defence::{DEFAULT_RATE, DEFAULT_REPLY_BUDGET_PER_SOURCE};
    use grenache_core::sim::TraceEntry;

    let seed = seed(12);
    let _hint = ReplayHint(seed);
    let (mut sim, nodes) = network(seed, 20, PathConfig::default(), JOINED);
    sim.set_trace_log(4_000_000);
    let start = sim.elapsed();
    let name = |node: usize, svc: usize| format!("svc:busy:{node}:{svc}");
    for tick in 0..300usize {
        for (i, &addr) in nodes.iter().enumerate() {
            if tick % 10 == i % 10 {
                for svc in 0..5 {
                    let k = key(&name(i, svc));
                    sim.command(addr, |node, now| node.announce(now, k, Some(5000)));
                }
            }
            let k = key(&name((i * 7 + tick) % 20, tick % 5));
            sim.command(addr, |node, now| node.get_peers(now, k));
        }
        sim.run_for(Duration::from_millis(100));
    }

    // Datagrams and bytes per (receiver, sender, second).
    let mut per_second: BTreeMap<(SocketAddr, SocketAddr, u64), (u64, u64)> = BTreeMap::new();
    for entry in sim.trace_log() {
        if let TraceEntry::Delivered {
            at, from, to, len, ..
        } = entry
            && *at >= start
        {
            let slot = per_second.entry((*to, *from, at.as_secs())).or_default();
            slot.0 += 1;
            slot.1 += *len as u64;
        }
    }
    let most_datagrams = per_second.values().map(|v| v.0).max().unwrap_or(0);
    let most_bytes = per_second.values().map(|v| v.1).max().unwrap_or(0);
    let total: u64 = per_second.values().map(|v| v.0).sum();
    eprintln!(
        "20 busy Grapes: {total} datagrams in 30 s; busiest source per receiver: \
         {most_datagrams} datagrams/s, {most_bytes} bytes/s"
    );
    let limited: u64 = nodes
        .iter()
        .filter_map(|a| sim.node(*a))
        .map(|n| {
            let d = &n.stats().dropped;
            [
                DropReason::RateLimited,
                DropReason::Banned,
                DropReason::ReplyBudget,
            ]
            .iter()
            .filter_map(|r| d.get(r))
            .sum::<u64>()
        })
        .sum();

    assert!(total > 100_000, "the load ran: {total} datagrams");
    assert!(
        most_datagrams * 10 < u64::from(DEFAULT_RATE),
        "{most_datagrams}/s"
    );
    assert!(
        most_bytes * 10 < u64::from(DEFAULT_REPLY_BUDGET_PER_SOURCE),
        "{most_bytes} B/s"
    );
    assert_eq!(limited, 0, "the defaults never limit a busy network");
}

/// Scenario seeds CI runs (`SIM_SEED` runs that one alone), and ops per scenario.
const SCENARIO_SEEDS: u64 = 24;
const SCENARIO_OPS: usize = 80;

/// The ops of scenario `seed`: drawn from their own RNG, so the list prints and replays.
fn scenario_ops(seed: u64) -> Vec<grenache_core::sim::scenario::Op> {
    use grenache_core::sim::scenario::Op;
    use rand::SeedableRng;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..SCENARIO_OPS).map(|_| Op::random(&mut rng)).collect()
}

/// Grapes, clients and echo servers on a lossy network with bursts and churn, under random
/// announces, unannounces, lookups, calls and watches, checked against the reference
/// model after every step (sim/scenario).
#[test]
fn random_scenarios_match_the_model() {
    use grenache_core::sim::scenario::{Scenario, ScenarioConfig};

    let seeds = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => s..s + 1,
        None => 100..100 + SCENARIO_SEEDS,
    };
    let (mut found, mut gone, mut echoed, mut changes) = (0, 0, 0, 0);
    for seed in seeds {
        let _hint = ReplayHint(seed);
        let ops = scenario_ops(seed);
        let report = Scenario::run(seed, Instant::now(), ScenarioConfig::default(), &ops)
            .unwrap_or_else(|v| panic!("{v}\nops: {ops:?}"));
        eprintln!("scenario {seed}: {report:?}");
        found += report.found;
        gone += report.gone;
        echoed += report.echoed;
        changes += report.watch_changes;
    }
    // The rules were exercised, not skipped for want of a case.
    assert!(found > 0, "no lookup had to find a service");
    assert!(gone > 0, "no lookup had to miss an unannounced service");
    assert!(echoed > 0, "no call came back");
    assert!(changes > 0, "no watch had to see a change");
}

/// The checks can fail: a Grape cut off from the network behind the model's back makes
/// its client's lookups miss a settled service, and the scenario says so.
#[test]
fn a_scenario_reports_what_the_network_broke() {
    use grenache_core::sim::scenario::{Op, Scenario, ScenarioConfig};

    let seed = seed(7);
    let _hint = ReplayHint(seed);
    let mut s = Scenario::new(seed, Instant::now(), ScenarioConfig::default());
    s.apply(Op::Announce(0)).expect("announce");
    s.apply(Op::Wait(Duration::from_secs(30))).expect("settle");
    let cut = s.grapes()[1];
    s.sim_mut().isolate(cut);

    let outcome = s
        .apply(Op::Lookup { client: 1, name: 0 })
        .and_then(|()| s.apply(Op::Wait(Duration::from_secs(30))));

    let violation = outcome.expect_err("the lookup through the cut Grape must fail the check");
    assert!(violation.what.contains("missed"), "{violation}");
}

/// A case the proptest drew (2026-12-07): a long loss burst made a Grape fail every node
/// it knew, and with nobody new to replace them its lookups and announces found no node
/// to start from for good, so a service announced through it vanished from every other
/// Grape. Such a node now asks its bad nodes (and its seeds) when it has nothing else.
#[test]
fn a_grape_cut_off_by_a_burst_finds_the_network_again() {
    use grenache_core::sim::scenario::{Op, Scenario, ScenarioConfig};

    let seed = 13_913_788_785_118_953_221;
    let _hint = ReplayHint(seed);
    let bytes = [
        115, 150, 90, 198, 16, 59, 38, 16, 12, 217, 241, 81, 196, 228, 245, 128, 220, 150, 18, 174,
        229, 14, 15, 162, 79, 31, 74, 142, 232, 109, 240, 77, 129, 153, 152, 218, 175, 85, 194,
        186, 193, 44, 65, 169, 22, 12, 190, 182, 135, 102, 222, 3, 220, 214, 229, 185, 132, 35, 28,
        194, 53, 232, 212, 142, 247, 90,
    ];
    let ops = Op::decode(&bytes);
    let mut config = ScenarioConfig::default();
    config.nodes = 12;

    let report = Scenario::run(seed, Instant::now(), config, &ops)
        .unwrap_or_else(|v| panic!("{v}\nops: {ops:?}"));

    assert!(report.found > 0, "{report:?}");
}
