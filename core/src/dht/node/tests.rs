//! A few nodes wired together in memory, driven by hand: the node's commands end to end.
//! Large networks, loss and churn are the simulator's business (`crate::sim`).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Config, Node};
use crate::dht::bep44::{ImmutableItem, Item, MutableItem};
use crate::dht::defence::Defences;
use crate::dht::event::{Event, Outcome, QueryError, QueryId};
use crate::dht::id::{Key, NodeId};
use crate::dht::krpc::{Body, Message, Method, NodeInfo, Query, Response, code};
use crate::dht::routing::NodeState;

struct Net {
    now: Instant,
    nodes: BTreeMap<SocketAddr, Node>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    events: BTreeMap<QueryId, Result<Outcome, QueryError>>,
    /// Drop every datagram to these addresses.
    dead: Vec<SocketAddr>,
    /// Drop the next datagram to each of these addresses (then deliver again).
    lose_once: Vec<SocketAddr>,
    /// Datagrams from these addresses carry another client's `v`, as a foreign DHT node's.
    foreign: Vec<SocketAddr>,
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20000 + i))
}

impl Net {
    fn new(n: u16) -> Net {
        let now = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..2].copy_from_slice(&i.to_be_bytes());
                (addr(i), Node::new(Config::default(), seed, now))
            })
            .collect();
        Net {
            now,
            nodes,
            wire: VecDeque::new(),
            events: BTreeMap::new(),
            dead: Vec::new(),
            lose_once: Vec::new(),
            foreign: Vec::new(),
        }
    }

    fn node(&mut self, i: u16) -> &mut Node {
        self.nodes.get_mut(&addr(i)).expect("node exists")
    }

    fn drain(&mut self) {
        for (a, node) in self.nodes.iter_mut() {
            while let Some(t) = node.poll_transmit() {
                self.wire.push_back((*a, t.to, t.payload));
            }
            while let Some(Event::Finished { query, result }) = node.poll_event() {
                assert!(
                    self.events.insert(query, result).is_none(),
                    "one Finished per query"
                );
            }
        }
    }

    /// Delivers datagrams and fires timers until `query` ends or `limit` of virtual time passes.
    fn wait(&mut self, query: QueryId, limit: Duration) -> Result<Outcome, QueryError> {
        let end = self.now + limit;
        loop {
            self.drain();
            if let Some(r) = self.events.remove(&query) {
                return r;
            }
            if let Some((from, to, bytes)) = self.wire.pop_front() {
                self.deliver(from, to, bytes);
                continue;
            }
            let next = self.nodes.values().filter_map(Node::poll_timeout).min();
            let Some(next) = next.filter(|t| *t <= end) else {
                panic!("query {query:?} did not end within {limit:?}");
            };
            self.fire_timers(next);
        }
    }

    /// Hands one datagram to its node, unless the net loses it.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if let Some(i) = self.lose_once.iter().position(|a| *a == to) {
            self.lose_once.swap_remove(i);
            return;
        }
        let bytes = if self.foreign.contains(&from) {
            as_foreign(&bytes)
        } else {
            bytes
        };
        if !self.dead.contains(&to)
            && let Some(node) = self.nodes.get_mut(&to)
        {
            node.handle_datagram(self.now, from, &bytes);
        }
    }

    /// Moves the clock to `at` (if later) and runs every timer due by then.
    fn fire_timers(&mut self, at: Instant) {
        self.now = self.now.max(at);
        let now = self.now;
        for node in self.nodes.values_mut() {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
    }

    /// A few lookups, so the nodes have round-trip estimates (and soft timeouts from them).
    fn warm_up(&mut self) {
        for i in 0..3 {
            let now = self.now;
            let q = self
                .node(i)
                .get_peers(now, Key::new(&[i as u8 + 1; 5]).expect("key"));
            self.wait(q, Duration::from_secs(10)).expect("lookup");
        }
    }

    /// Bootstraps every node from node 0.
    fn join(&mut self) {
        let seed = [addr(0)];
        for i in 1..self.nodes.len() as u16 {
            let now = self.now;
            let q = self.node(i).bootstrap(now, &seed);
            let r = self.wait(q, Duration::from_secs(10));
            assert!(matches!(r, Ok(Outcome::Bootstrapped { .. })), "{r:?}");
        }
    }
}

/// The datagram with libtorrent's `v` instead of ours.
fn as_foreign(bytes: &[u8]) -> Vec<u8> {
    let mut msg = Message::decode(bytes).expect("nodes send valid KRPC");
    msg.version = Some(b"LT\x01\x02".to_vec());
    msg.encode()
}

#[test]
fn lone_node_answers_its_own_lookups_at_once() {
    let mut net = Net::new(1);
    let now = net.now;
    let key = Key::new(b"rpc_test").expect("key");
    let a = net.node(0).announce(now, key.clone(), Some(1337));
    assert!(matches!(
        net.wait(a, Duration::ZERO),
        Ok(Outcome::Announced { stored_at: 0, .. })
    ));
    let q = net.node(0).get_peers(now, key);
    let r = net.wait(q, Duration::ZERO);
    assert_eq!(
        r,
        Ok(Outcome::Peers {
            peers: vec![SocketAddr::from(([127, 0, 0, 1], 1337))]
        })
    );
}

#[test]
fn announce_on_one_node_is_found_from_another() {
    let mut net = Net::new(12);
    net.join();
    assert!(net.node(5).routing_table_len() > 3);
    let now = net.now;
    let key = Key::new(b"some_service").expect("key");
    let a = net.node(3).announce(now, key.clone(), Some(4000));
    let r = net.wait(a, Duration::from_secs(10));
    let Ok(Outcome::Announced { stored_at, .. }) = r else {
        panic!("{r:?}")
    };
    assert!(stored_at >= 8, "stored on the k closest: {stored_at}");
    let now = net.now;
    let q = net.node(9).get_peers(now, key);
    let r = net.wait(q, Duration::from_secs(10));
    // Node 3 announced from 127.0.0.1:20003, so other nodes store that IP with port 4000.
    assert_eq!(
        r,
        Ok(Outcome::Peers {
            peers: vec![SocketAddr::from(([127, 0, 0, 1], 4000))]
        })
    );
}

#[test]
fn identical_lookups_share_one_traversal() {
    let mut net = Net::new(6);
    net.join();
    let now = net.now;
    let key = Key::new(b"shared").expect("key");
    let sent_before = net.node(2).stats().queries_out.get_peers;
    let a = net.node(2).get_peers(now, key.clone());
    let b = net.node(2).get_peers(now, key);
    let ra = net.wait(a, Duration::from_secs(10));
    let rb = net.wait(b, Duration::from_secs(10));
    assert_eq!(ra, rb);
    let sent = net.node(2).stats().queries_out.get_peers - sent_before;
    assert!(sent <= 6, "one traversal only: {sent} get_peers sent");
}

#[test]
fn immutable_and_mutable_put_get_round_trip() {
    let mut net = Net::new(10);
    net.join();
    let now = net.now;
    let item = Item::Immutable(ImmutableItem::new(b"5:hello".to_vec()).expect("valid"));
    let target = item.target();
    let p = net.node(1).put(now, item.clone(), None);
    let r = net.wait(p, Duration::from_secs(10));
    assert!(
        matches!(r, Ok(Outcome::Stored { stored_at, .. }) if stored_at >= 8),
        "{r:?}"
    );
    let g = net.node(7).get(now, target, None);
    let r = net.wait(g, Duration::from_secs(10));
    assert!(
        matches!(r, Ok(Outcome::Got { item: Some(ref got), .. }) if *got == item),
        "{r:?}"
    );

    let secret = [7u8; 32];
    let v1 = MutableItem::sign(&secret, b"salt".to_vec(), 1, b"2:v1".to_vec()).expect("sign");
    let v2 = MutableItem::sign(&secret, b"salt".to_vec(), 2, b"2:v2".to_vec()).expect("sign");
    let target = v1.target();
    let now = net.now;
    let p = net.node(2).put(now, Item::Mutable(v1.clone()), None);
    assert!(matches!(
        net.wait(p, Duration::from_secs(10)),
        Ok(Outcome::Stored { .. })
    ));
    let p = net.node(4).put(now, Item::Mutable(v2.clone()), Some(1));
    assert!(matches!(
        net.wait(p, Duration::from_secs(10)),
        Ok(Outcome::Stored { .. })
    ));
    // Going back to seq 1 is refused by every node that has seq 2.
    let p = net.node(4).put(now, Item::Mutable(v1), None);
    let r = net.wait(p, Duration::from_secs(10));
    assert!(matches!(r, Err(QueryError::Rejected(_))), "{r:?}");
    let g = net.node(8).get(now, target, Some(b"salt".to_vec()));
    let r = net.wait(g, Duration::from_secs(10));
    assert!(
        matches!(r, Ok(Outcome::Got { item: Some(Item::Mutable(ref m)), .. }) if m.seq() == 2),
        "{r:?}"
    );
}

#[test]
fn lost_node_costs_a_soft_timeout_not_the_hard_one() {
    let mut net = Net::new(12);
    net.join();
    // Warm up round-trip estimates, then kill two nodes.
    net.warm_up();
    net.dead = vec![addr(4), addr(6)];
    let start = net.now;
    let q = net
        .node(1)
        .get_peers(start, Key::new(b"after_loss").expect("key"));
    net.wait(q, Duration::from_secs(10)).expect("lookup");
    let took = net.now - start;
    assert!(took < Duration::from_secs(1), "lookup took {took:?}");
}

#[test]
fn a_node_cut_off_by_an_outage_finds_the_network_again() {
    // More nodes than k, so the table is not thin: nothing but its own nodes to ask.
    let mut net = Net::new(12);
    net.join();
    net.warm_up();
    let others: Vec<SocketAddr> = (0..12).filter(|&i| i != 1).map(addr).collect();
    net.dead = others.clone();
    // Lookups of many ids during the outage, until every node in node 1's table failed.
    let all_bad = |net: &mut Net| {
        let now = net.now;
        let (v4, _) = net.node(1).routing_tables();
        v4.iter(now).all(|(_, state)| state == NodeState::Bad)
    };
    for i in 0..200u8 {
        if all_bad(&mut net) {
            break;
        }
        let now = net.now;
        let q = net.node(1).get_peers(now, Key::new(&[i; 20]).expect("key"));
        let _ = net.wait(q, Duration::from_secs(30));
    }
    assert!(
        all_bad(&mut net),
        "the outage failed every node node 1 knew"
    );
    assert!(
        net.node(1).routing_table_len() >= 8,
        "they are kept, not dropped"
    );

    // The network is back; another node announces.
    net.dead.clear();
    let (key, stored) = announced(&mut net, 2, b"after_outage", 4000);
    assert!(stored > 0);
    let now = net.now;
    let q = net.node(1).get_peers(now, key);

    let r = net.wait(q, Duration::from_secs(10));
    assert!(
        matches!(&r, Ok(Outcome::Peers { peers, .. }) if peers.iter().any(|p| p.port() == 4000)),
        "{r:?}"
    );
    let now = net.now;
    let (v4, _) = net.node(1).routing_tables();
    assert!(v4.iter(now).any(|(_, state)| state == NodeState::Good));
}

#[test]
fn a_lost_query_is_sent_again_at_its_soft_deadlines() {
    // Five nodes: fewer than k answers exist, so the traversal cannot move on without
    // the lost one and would wait for its hard timeout (2 s) if it were not sent again.
    let mut net = Net::new(5);
    net.join();
    net.warm_up();
    let resent_before = net.node(1).stats().resent;
    // Two datagrams to node 3 are lost (its query and its first resend, unless other
    // traffic to it takes one of the losses).
    net.lose_once = vec![addr(2), addr(3), addr(3)];
    let start = net.now;

    let q = net
        .node(1)
        .get_peers(start, Key::new(b"after_loss").expect("key"));
    net.wait(q, Duration::from_secs(10)).expect("lookup");

    let took = net.now - start;
    assert!(net.lose_once.is_empty(), "both packets were lost");
    assert!(took < Duration::from_millis(1500), "lookup took {took:?}");
    assert!(net.node(1).stats().resent - resent_before >= 2);
}

#[test]
fn cancel_ends_with_cancelled_once() {
    let mut net = Net::new(4);
    net.join();
    let now = net.now;
    let q = net.node(1).get_peers(now, Key::new(b"x").expect("key"));
    net.node(1).cancel(q);
    assert_eq!(net.wait(q, Duration::ZERO), Err(QueryError::Cancelled));
}

#[test]
fn cancelling_the_first_of_shared_lookups_leaves_the_others_running() {
    let mut net = Net::new(6);
    net.join();
    let now = net.now;
    let key = Key::new(b"shared").expect("key");
    let first = net.node(2).get_peers(now, key.clone());
    let second = net.node(2).get_peers(now, key);
    assert_eq!(net.node(2).stats().lookups_joined, 1);

    let before = net.node(2).stats().clone();

    net.node(2).cancel(first);

    assert_eq!(net.wait(first, Duration::ZERO), Err(QueryError::Cancelled));
    let r = net.wait(second, Duration::from_secs(10));
    assert!(matches!(r, Ok(Outcome::Peers { .. })), "{r:?}");
    // One event each: the cancelled command's, then the survivor's.
    let after = net.node(2).stats();
    assert_eq!(after.commands_failed - before.commands_failed, 1);
    assert_eq!(after.commands_ok - before.commands_ok, 1);
}

#[test]
fn a_bound_ends_its_command_alone_and_a_shared_traversal_runs_on() {
    let mut net = Net::new(6);
    net.join();
    // Everyone else falls silent, so the traversal waits on query timeouts.
    net.dead = (0..6).filter(|i| *i != 2).map(addr).collect();
    let now = net.now;
    let key = Key::new(b"bounded").expect("key");
    let first = net.node(2).get_peers(now, key.clone());
    let second = net.node(2).get_peers(now, key);
    assert_eq!(net.node(2).stats().lookups_joined, 1);
    net.node(2).end_by(first, now + Duration::from_secs(60));
    net.node(2).end_by(second, now + Duration::from_millis(1));

    assert_eq!(
        net.wait(second, Duration::from_millis(1)),
        Err(QueryError::Timeout)
    );
    assert!(net.node(2).running_commands() > 0, "the traversal runs on");
    // The first ends by the traversal, well before its own bound, and the bound then
    // fires nothing.
    let r = net.wait(first, Duration::from_secs(59));
    assert_ne!(r, Err(QueryError::Timeout), "{r:?}");
    let ended = |n: &mut Net| {
        let s = n.node(2).stats();
        s.commands_ok + s.commands_failed
    };
    let before = ended(&mut net);
    let later = net.now + Duration::from_secs(61);
    net.now = later;
    net.node(2).handle_timeout(later);
    net.drain();
    assert_eq!(ended(&mut net), before);
    assert!(net.events.is_empty(), "{:?}", net.events);
}

#[test]
fn garbage_is_dropped_counted_and_malformed_queries_get_203() {
    let mut node = Node::new(Config::default(), [1; 32], Instant::now());
    let now = Instant::now();
    node.handle_datagram(now, addr(9), b"not bencode");
    node.handle_datagram(now, addr(9), b"d1:t2:aa1:y1:qe");
    assert_eq!(node.stats().dropped.values().sum::<u64>(), 2);
    let reply = node.poll_transmit().expect("203 for a query without q");
    assert!(
        reply.payload.windows(3).any(|w| w == b"203"),
        "{:?}",
        reply.payload
    );
    assert!(node.poll_transmit().is_none());
}

/// Announces `name` on node `from` of a joined network and checks where it was stored.
fn announced(net: &mut Net, from: u16, name: &[u8], port: u16) -> (Key, usize) {
    let key = Key::new(name).expect("key");
    let now = net.now;
    let a = net.node(from).announce(now, key.clone(), Some(port));
    let r = net.wait(a, Duration::from_secs(10));
    let Ok(Outcome::Announced { stored_at, .. }) = r else {
        panic!("{r:?}")
    };
    (key, stored_at)
}

/// Nodes that store `key`.
fn holders(net: &Net, key: &Key) -> Vec<SocketAddr> {
    net.nodes
        .iter()
        .filter(|(_, n)| !n.local_peers(net.now, key, 10).is_empty())
        .map(|(a, _)| *a)
        .collect()
}

#[test]
fn unannounce_drops_the_peer_wherever_it_was_stored() {
    let mut net = Net::new(12);
    net.join();
    let (key, stored_at) = announced(&mut net, 3, b"some_service", 4000);
    assert!(stored_at >= 8, "{stored_at}");
    let before = holders(&net, &key);

    let now = net.now;
    let u = net.node(3).unannounce(now, key.clone(), 4000);
    let r = net.wait(u, Duration::from_secs(10));

    assert_eq!(
        r,
        Ok(Outcome::Unannounced {
            dropped_at: stored_at
        })
    );
    assert_eq!(
        holders(&net, &key),
        Vec::<SocketAddr>::new(),
        "was on {before:?}"
    );
    let now = net.now;
    let q = net.node(9).get_peers(now, key);
    assert_eq!(
        net.wait(q, Duration::from_secs(10)),
        Ok(Outcome::Peers { peers: vec![] })
    );
}

#[test]
fn unannounce_is_sent_only_to_nodes_that_speak_it() {
    let mut net = Net::new(12);
    net.foreign = vec![addr(5), addr(6), addr(7)];
    net.join();
    let (key, _) = announced(&mut net, 3, b"mixed", 4000);
    let foreign_holders: Vec<SocketAddr> = holders(&net, &key)
        .into_iter()
        .filter(|a| net.foreign.contains(a))
        .collect();
    assert!(!foreign_holders.is_empty(), "a foreign node stored it");

    let now = net.now;
    let u = net.node(3).unannounce(now, key.clone(), 4000);
    let r = net.wait(u, Duration::from_secs(10));

    assert!(
        matches!(r, Ok(Outcome::Unannounced { dropped_at }) if dropped_at >= 1),
        "{r:?}"
    );
    // Foreign nodes were not asked, so they keep the peer until it expires.
    assert_eq!(holders(&net, &key), foreign_holders);
    for a in foreign_holders {
        let node = net.nodes.get(&a).expect("node");
        assert_eq!(node.stats().queries_in.unannounce_peer, 0, "{a}");
    }
}

#[test]
fn unannounce_of_nothing_is_refused_at_once_and_sends_nothing() {
    let mut net = Net::new(4);
    net.join();
    let (key, _) = announced(&mut net, 1, b"svc", 4000);
    let now = net.now;
    for (name, port) in [(&b"unknown"[..], 4000), (b"svc", 4001), (b"svc", 0)] {
        let key = Key::new(name).expect("key");
        let u = net.node(1).unannounce(now, key, port);
        assert!(net.node(1).poll_transmit().is_none());
        assert_eq!(net.wait(u, Duration::ZERO), Err(QueryError::NotAnnounced));
    }
    assert_eq!(holders(&net, &key).len(), 4);
}

/// One node and a hand-driven querier: what the node answers to each query.
struct Server {
    node: Node,
    now: Instant,
    tid: u16,
}

impl Server {
    fn new() -> Server {
        let now = Instant::now();
        Server {
            node: Node::new(Config::default(), [3; 32], now),
            now,
            tid: 0,
        }
    }

    /// Sends `method` from `from` and returns the reply's body.
    fn ask(&mut self, from: SocketAddr, method: Method) -> Body {
        self.tid += 1;
        let query = Message {
            tid: self.tid.to_be_bytes().to_vec(),
            version: None,
            read_only: false,
            body: Body::Query(Query {
                id: crate::dht::id::NodeId([from.port() as u8; 20]),
                method,
            }),
        };
        self.ask_raw(from, &query.encode())
    }

    fn ask_raw(&mut self, from: SocketAddr, datagram: &[u8]) -> Body {
        self.node.handle_datagram(self.now, from, datagram);
        let mut reply = None;
        while let Some(t) = self.node.poll_transmit() {
            if t.to == from {
                reply = Some(Message::decode(&t.payload).expect("valid reply"));
            }
        }
        reply.expect("a reply").body
    }

    fn token(&mut self, from: SocketAddr, key: &Key) -> Vec<u8> {
        let body = self.ask(
            from,
            Method::GetPeers {
                info_hash: key.clone(),
            },
        );
        let Body::Response(r) = body else {
            panic!("{body:?}")
        };
        r.token.expect("a token")
    }

    fn peers(&self, key: &Key) -> Vec<SocketAddr> {
        self.node.local_peers(self.now, key, 10)
    }
}

fn unannounce(key: &Key, port: u16, token: &[u8]) -> Method {
    Method::UnannouncePeer {
        info_hash: key.clone(),
        port,
        token: token.to_vec(),
    }
}

fn refused(body: &Body) -> bool {
    matches!(body, Body::Error(e) if e.code == code::PROTOCOL && !e.message.is_empty())
}

#[test]
fn bad_unannounces_are_refused_and_change_nothing() {
    let mut server = Server::new();
    let (a, b) = (addr(1), SocketAddr::from(([127, 0, 0, 2], 20001)));
    let key = Key::new(b"svc").expect("key");
    let other = Key::new(b"other").expect("key");
    let token_a = server.token(a, &key);
    let token_b = server.token(b, &key);
    let announce = Method::AnnouncePeer {
        info_hash: key.clone(),
        port: 4000,
        implied_port: false,
        token: token_a.clone(),
    };
    assert!(matches!(server.ask(a, announce), Body::Response(_)));
    let stored = server.peers(&key);
    assert_eq!(stored, vec![SocketAddr::from(([127, 0, 0, 1], 4000))]);

    let cases = [
        ("bad token", a, unannounce(&key, 4000, b"nope")),
        ("token of another host", a, unannounce(&key, 4000, &token_b)),
        ("from another address", b, unannounce(&key, 4000, &token_b)),
        ("unknown name", a, unannounce(&other, 4000, &token_a)),
        ("another port", a, unannounce(&key, 4001, &token_a)),
        ("port 0", a, unannounce(&key, 0, &token_a)),
    ];
    for (what, from, method) in cases {
        let body = server.ask(from, method);
        assert!(refused(&body), "{what}: {body:?}");
        assert_eq!(server.peers(&key), stored, "{what}");
    }
    // Malformed: no token.
    let malformed = b"d1:ad2:id20:abcdefghij01234567899:info_hash3:svc4:porti4000ee\
                      1:q15:unannounce_peer1:t2:aa1:y1:qe";
    let body = server.ask_raw(a, malformed);
    assert!(refused(&body), "malformed: {body:?}");
    assert_eq!(server.peers(&key), stored);

    let body = server.ask(a, unannounce(&key, 4000, &token_a));

    assert!(matches!(body, Body::Response(_)), "{body:?}");
    assert_eq!(server.peers(&key), vec![]);
    assert_eq!(server.node.stats().queries_in.unannounce_peer, 7);
}

#[test]
fn past_the_command_bound_a_command_ends_overloaded_not_timed_out() {
    let mut net = Net::new(2);
    net.join();
    let now = net.now;
    // Nothing is delivered, so every lookup stays running.
    let queries: Vec<QueryId> = (0..super::MAX_LOOKUPS + 3)
        .map(|i| {
            let key = Key::new(format!("busy-{i}").as_bytes()).expect("key");
            net.node(0).get_peers(now, key)
        })
        .collect();
    let mut overloaded = 0;
    while let Some(event) = net.node(0).poll_event() {
        if let Event::Finished { query, result } = event {
            assert_eq!(result, Err(QueryError::Overloaded), "{query:?}");
            overloaded += 1;
        }
    }

    assert_eq!(overloaded, 3);
    assert_eq!(queries.len(), super::MAX_LOOKUPS + 3);
}

#[test]
fn every_command_ends_with_its_event_even_past_the_event_bound() {
    let mut net = Net::new(1);
    let now = net.now;
    let n = super::MAX_EVENTS + 100;
    // A lone node answers each lookup at once; nobody drains the events meanwhile.
    for i in 0..n {
        let key = Key::new(format!("many-{i}").as_bytes()).expect("key");
        net.node(0).get_peers(now, key);
    }
    let mut finished = 0;
    while let Some(event) = net.node(0).poll_event() {
        if matches!(event, Event::Finished { .. }) {
            finished += 1;
        }
    }

    assert_eq!(finished, n);
}

/// Node 1 announces to nodes 0 and 2 of a warmed-up net (soft timeouts of a few ms), and
/// the `announce_peer` to each of `late` reaches it only after `delay`, well past the
/// soft deadline but before the hard one. Returns the outcome's `stored_at`.
fn announce_with_late_acks(late: &[SocketAddr], delay: Duration) -> usize {
    let mut net = Net::new(3);
    net.join();
    net.warm_up();
    let now = net.now;
    let q = net
        .node(1)
        .announce(now, Key::new(b"late_acks").expect("key"), Some(4000));
    let started = net.now;
    let mut held = Vec::new();
    let mut released = false;
    loop {
        net.drain();
        if let Some(r) = net.events.remove(&q) {
            let Ok(Outcome::Announced { stored_at, .. }) = r else {
                panic!("{r:?}")
            };
            return stored_at;
        }
        if let Some((from, to, bytes)) = net.wire.pop_front() {
            let store = matches!(
                Message::decode(&bytes).map(|m| m.body),
                Ok(Body::Query(Query {
                    method: Method::AnnouncePeer { .. },
                    ..
                }))
            );
            if store && !released && late.contains(&to) {
                held.push((from, to, bytes));
            } else {
                net.deliver(from, to, bytes);
            }
            continue;
        }
        let due = net.nodes.values().filter_map(Node::poll_timeout).min();
        match due.filter(|t| *t <= started + delay) {
            Some(t) => net.fire_timers(t),
            None if !released => {
                net.fire_timers(started + delay);
                net.wire.extend(held.drain(..));
                released = true;
            }
            None => panic!("the announce did not end"),
        }
    }
}

#[test]
fn acks_after_the_soft_deadline_count_while_nothing_is_stored() {
    // As on a loaded box: loopback round trips make the soft timeout a few ms, then the
    // acks take longer. The announce was stored, so it must not report nobody stored it.
    // The first late ack ends the wait, as any first ack does.
    let stored = announce_with_late_acks(&[addr(0), addr(2)], Duration::from_millis(500));
    assert_eq!(stored, 1);
}

#[test]
fn once_a_node_has_acked_a_late_ack_is_not_waited_for() {
    // Best effort: one store acked is enough to answer without the slow one.
    let stored = announce_with_late_acks(&[addr(2)], Duration::from_millis(500));
    assert_eq!(stored, 1);
}

/// A still network of `n` made-up nodes that answer the one real node's queries at once.
/// Each knows k nodes per bucket of its own (the first ones of each range) and answers a
/// `find_node` with the k of them closest to the target, as a settled network does, so a
/// join can be followed query by query.
struct Still {
    nodes: Vec<NodeInfo>,
    /// Each node's table, by index in `nodes`.
    tables: Vec<Vec<NodeInfo>>,
}

impl Still {
    fn new(n: u16, seed: u64) -> Still {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                id: NodeId::random(&mut rng),
                // One public /24 each, so no defence can tell them apart from a real network.
                addr: SocketAddr::from(([20, (i >> 8) as u8, i as u8, 1], 6881)),
            })
            .collect();
        let tables = nodes
            .iter()
            .map(|me| {
                let mut per_bucket = BTreeMap::<usize, usize>::new();
                let mut table = Vec::new();
                for n in nodes.iter().filter(|n| n.id != me.id) {
                    let held = per_bucket
                        .entry(me.id.shared_prefix_len(&n.id))
                        .or_default();
                    if *held < 8 {
                        *held += 1;
                        table.push(*n);
                    }
                }
                table
            })
            .collect();
        Still { nodes, tables }
    }

    /// The answer of the node at `to` to `datagram`, if it is a query it answers.
    fn answer(&self, to: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let i = self.nodes.iter().position(|n| n.addr == to)?;
        let msg = Message::decode(datagram).ok()?;
        let Body::Query(query) = msg.body else {
            return None;
        };
        let mut r = Response::new(self.nodes[i].id);
        match query.method {
            Method::Ping => {}
            Method::FindNode { target } => {
                let mut nodes = self.tables[i].clone();
                nodes.sort_by_key(|n| n.id.distance(target.as_bytes()));
                r.nodes = nodes.into_iter().take(8).collect();
            }
            _ => return None,
        }
        let reply = Message {
            tid: msg.tid,
            version: Some(b"GR\x00\x02".to_vec()),
            read_only: false,
            body: Body::Response(r),
        };
        Some(reply.encode())
    }

    /// Made-up nodes sharing exactly `prefix` leading bits with `own`.
    fn in_range(&self, own: &NodeId, prefix: usize) -> usize {
        let exact = |n: &&NodeInfo| own.shared_prefix_len(&n.id) == prefix;
        self.nodes.iter().filter(exact).count()
    }
}

/// What a join through a [`Still`] network did.
struct Joined {
    node: Node,
    /// Buckets when the bootstrap lookup ended and the refreshes started.
    buckets_at_refresh: usize,
    /// Refresh queries sent while their range already held the good nodes a join wants.
    needless: usize,
    /// Refresh queries sent in all.
    refresh_queries: usize,
    /// Refresh queries sent while as many of that range's were in flight as it lacked
    /// nodes, or as [`super::REFRESH_ALPHA`].
    crowded: usize,
    /// Refresh queries sent to a node outside their range while another query of that
    /// range was in flight, before any query went inside it.
    outside_at_once: usize,
    /// Ranges refreshed although the bootstrap's answers had named, outside the table,
    /// as many of their nodes as they lacked: `(range, named, held)`.
    refreshed_though_named: Vec<(usize, usize, usize)>,
    /// Pings sent to nodes the bootstrap's answers named, and all pings.
    pings_to_named: usize,
    pings: usize,
}

/// Good nodes a join wants in each bucket range: half a bucket.
fn join_fill(k: usize) -> usize {
    (k / super::JOIN_FILL_DIVISOR).max(1)
}

/// Joins a fresh node to `net` through its first node and answers everything it sends,
/// in order, until it sends nothing more.
fn join_still(net: &Still, seed: u8) -> Joined {
    let now = Instant::now();
    let config = Config {
        defences: Defences::off(),
        ..Config::default()
    };
    let mut node = Node::new(config, [seed; 32], now);
    let own = node.id();
    let k = node.config().k;
    let bootstrap = node.bootstrap(now, &[net.nodes[0].addr]);
    let want = join_fill(k);
    let mut joined = Joined {
        node,
        buckets_at_refresh: 0,
        needless: 0,
        refresh_queries: 0,
        crowded: 0,
        outside_at_once: 0,
        refreshed_though_named: Vec::new(),
        pings_to_named: 0,
        pings: 0,
    };
    // In flight per refresh range, and the range of each query in flight.
    let mut in_flight = BTreeMap::<usize, usize>::new();
    let mut ranges = BTreeMap::<Vec<u8>, usize>::new();
    // Ranges a refresh query went inside of.
    let mut entered = std::collections::BTreeSet::new();
    // Nodes the bootstrap's answers named, and the tids of its queries.
    let mut named = std::collections::BTreeSet::<NodeInfo>::new();
    let mut bootstrap_tids = std::collections::BTreeSet::new();
    // Per range when the first refresh query went out: named nodes outside the table, held.
    let mut at_fill: Option<BTreeMap<usize, (usize, usize)>> = None;
    let node = &mut joined.node;
    let mut wire = VecDeque::new();
    loop {
        while let Some(t) = node.poll_transmit() {
            let msg = Message::decode(&t.payload).expect("our own query");
            match &msg.body {
                Body::Query(Query {
                    method: Method::FindNode { target },
                    ..
                }) => {
                    let target = NodeId(target.as_bytes().try_into().expect("a 20-byte id"));
                    if target == own {
                        bootstrap_tids.insert(msg.tid.clone());
                    } else {
                        let prefix = own.shared_prefix_len(&target);
                        let (v4, v6) = node.routing_tables();
                        let at_fill = at_fill.get_or_insert_with(|| {
                            let mut per_range = BTreeMap::new();
                            for n in named.iter().filter(|n| !v4.contains(&n.id)) {
                                per_range
                                    .entry(own.shared_prefix_len(&n.id))
                                    .or_insert((0, 0))
                                    .0 += 1;
                            }
                            for p in 0..v4.bucket_count() {
                                per_range.entry(p).or_insert((0, 0)).1 = v4.bucket_len(p);
                            }
                            per_range
                        });
                        let (unknown, held) = at_fill.get(&prefix).copied().unwrap_or((0, 0));
                        if held + unknown >= want
                            && !joined.refreshed_though_named.iter().any(|r| r.0 == prefix)
                        {
                            joined.refreshed_though_named.push((prefix, unknown, held));
                        }
                        let good = v4.good_in_range(prefix, now) + v6.good_in_range(prefix, now);
                        joined.refresh_queries += 1;
                        joined.needless += usize::from(good >= want);
                        let flying = in_flight.entry(prefix).or_default();
                        let room = want.saturating_sub(good).min(super::REFRESH_ALPHA);
                        joined.crowded += usize::from(*flying >= room);
                        let to = net.nodes.iter().find(|n| n.addr == t.to).expect("a node");
                        if own.shared_prefix_len(&to.id) == prefix {
                            entered.insert(prefix);
                        } else if *flying > 0 && !entered.contains(&prefix) {
                            joined.outside_at_once += 1;
                        }
                        *flying += 1;
                        ranges.insert(msg.tid.clone(), prefix);
                    }
                }
                Body::Query(Query {
                    method: Method::Ping,
                    ..
                }) => {
                    joined.pings += 1;
                    joined.pings_to_named += usize::from(named.iter().any(|n| n.addr == t.to));
                }
                _ => {}
            }
            if let Some(reply) = net.answer(t.to, &t.payload) {
                wire.push_back((t.to, reply));
            }
        }
        while let Some(event) = node.poll_event() {
            if matches!(event, Event::Finished { query, .. } if query == bootstrap) {
                joined.buckets_at_refresh = node.routing_tables().0.bucket_count();
            }
        }
        let Some((from, reply)) = wire.pop_front() else {
            break;
        };
        let answer = Message::decode(&reply).expect("our own answer");
        // What the bootstrap heard before it ended (answers after it are not its).
        if let Body::Response(r) = &answer.body
            && bootstrap_tids.contains(&answer.tid)
            && joined.buckets_at_refresh == 0
        {
            named.extend(r.nodes.iter().filter(|n| n.id != own));
        }
        let tid = answer.tid;
        if let Some(prefix) = ranges.remove(&tid) {
            *in_flight.entry(prefix).or_default() -= 1;
        }
        node.handle_datagram(now, from, &reply);
    }
    joined
}

#[test]
fn a_refresh_ends_once_its_bucket_is_full() {
    for seed in 1..=4u8 {
        let net = Still::new(400, u64::from(seed));

        let mut joined = join_still(&net, seed);

        assert!(
            joined.refresh_queries > 0,
            "seed {seed}: the join refreshed"
        );
        assert_eq!(
            joined.needless, 0,
            "seed {seed}: {} of {} refresh queries went out for a range already known",
            joined.needless, joined.refresh_queries
        );
        assert_eq!(
            joined.crowded, 0,
            "seed {seed}: {} refresh queries beyond what their range lacked",
            joined.crowded
        );
        // It ended, and so did everything it had in flight.
        assert_eq!(joined.node.running_commands(), 0, "seed {seed}");
        assert!(joined.node.poll_transmit().is_none());
    }
}

#[test]
fn a_join_knows_every_bucket_range_it_refreshed_as_far_as_the_network_allows() {
    for seed in 1..=4u8 {
        let net = Still::new(400, u64::from(seed));

        let joined = join_still(&net, seed);

        let node = &joined.node;
        let (own, k, now) = (node.id(), node.config().k, Instant::now());
        let table = node.routing_tables().0;
        assert!(table.len() >= k, "seed {seed}: a table of {}", table.len());
        assert!(
            joined.buckets_at_refresh > 1,
            "seed {seed}: one bucket only"
        );
        // Every bucket but the one holding our id was filled to half a bucket (pinged,
        // refreshed, or already that full).
        for prefix in 0..joined.buckets_at_refresh - 1 {
            let want = join_fill(k).min(net.in_range(&own, prefix));
            let known = table.bucket_len(prefix);
            assert!(
                known >= want,
                "seed {seed}: bucket {prefix} knows {known} of the {want} it could"
            );
            assert!(table.good_in_range(prefix, now) >= want, "seed {seed}");
        }
    }
}

#[test]
fn a_join_pings_the_nodes_its_bootstrap_heard_of_and_refreshes_only_ranges_they_cannot_fill() {
    let mut pinged = 0;
    for seed in 1..=4u8 {
        let net = Still::new(400, u64::from(seed));

        let joined = join_still(&net, seed);

        assert_eq!(
            joined.refreshed_though_named,
            Vec::new(),
            "seed {seed}: ranges refreshed (range, named outside the table, held) though \
             the bootstrap's answers had named as many nodes as they lacked"
        );
        assert_eq!(
            joined.outside_at_once, 0,
            "seed {seed}: refresh queries sent outside their range while one was in flight"
        );
        pinged += joined.pings_to_named;
    }
    assert!(
        pinged > 0,
        "no join pinged a node its bootstrap had heard of"
    );
}
