//! The node's defences end to end: datagrams in, answers and counters out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Config, DropReason, Event, Node};
use crate::dht::bep44::immutable_target;
use crate::dht::defence::{Ban, Defences, Limit};
use crate::dht::id::{Key, NodeId};
use crate::dht::krpc::{Body, Message, Method, PutArgs, Query};

fn ping(id: u8) -> Vec<u8> {
    let mut bytes = [id; 20];
    bytes[0] = 0x80 | id;
    Message {
        tid: vec![1, 2],
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId(bytes),
            method: Method::Ping,
        }),
    }
    .encode()
}

/// A query from the node with id `[id; 20]`.
fn query(id: u8, method: Method) -> Vec<u8> {
    Message {
        tid: vec![3, 4],
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId([id; 20]),
            method,
        }),
    }
    .encode()
}

fn get_peers(id: u8) -> Vec<u8> {
    let info_hash = Key::new(b"service").expect("key");
    query(id, Method::GetPeers { info_hash })
}

fn node(defences: Defences, now: Instant) -> Node {
    let config = Config {
        defences,
        ..Config::default()
    };
    Node::new(config, [7; 32], now)
}

/// Answers queued, drained.
fn answers(node: &mut Node) -> Vec<SocketAddr> {
    std::iter::from_fn(|| node.poll_transmit())
        .map(|t| t.to)
        .filter(|to| to.port() != 0)
        .collect()
}

fn dropped(node: &Node, reason: DropReason) -> u64 {
    node.stats().dropped.get(&reason).copied().unwrap_or(0)
}

/// A limit of 10 datagrams a second; 20 refusals within 10 s earn a minute's ban.
fn ten_per_second_then_banned() -> Defences {
    Defences {
        rate_limit: Some(Limit::per_second(10)),
        ban: Some(Ban {
            after: 20,
            window: Duration::from_secs(10),
            duration: Duration::from_secs(60),
        }),
        ..Defences::default()
    }
}

#[test]
fn a_flooding_host_is_limited_then_banned_while_others_are_answered() {
    let now = Instant::now();
    let mut node = node(ten_per_second_then_banned(), now);
    let flooder = |port: u16| SocketAddr::from(([203, 0, 113, 7], 1000 + port));
    let other = SocketAddr::from(([198, 51, 100, 1], 6881));

    // 256 ports of one host, 1000 pings with random-looking ids.
    for i in 0..1000u16 {
        node.handle_datagram(now, flooder(i % 256), &ping((i % 200) as u8));
    }
    let flood_answers = answers(&mut node)
        .into_iter()
        .filter(|a| a.ip() == flooder(0).ip())
        .count();
    node.handle_datagram(now, other, &ping(201));
    let later = now + Duration::from_secs(30);
    node.handle_datagram(later, flooder(1), &ping(1));

    assert_eq!(flood_answers, 10, "one second's burst, then nothing");
    assert_eq!(dropped(&node, DropReason::RateLimited), 19);
    assert_eq!(dropped(&node, DropReason::Banned), 1000 - 10 - 19 + 1);
    assert_eq!(node.stats().bans, 1);
    assert_eq!(node.banned_sources(), 1);
    assert!(
        answers(&mut node).contains(&other),
        "another host is answered"
    );
}

#[test]
fn loopback_is_exempt_by_default_and_limited_when_told() {
    let now = Instant::now();
    let lo = SocketAddr::from(([127, 0, 0, 1], 5000));
    let strict = Defences {
        rate_limit: Some(Limit::per_second(5)),
        exempt_loopback: false,
        ..Defences::default()
    };
    let lenient = Defences {
        exempt_loopback: true,
        ..strict.clone()
    };
    let (mut strict, mut lenient) = (node(strict, now), node(lenient, now));

    for _ in 0..50 {
        strict.handle_datagram(now, lo, &ping(1));
        lenient.handle_datagram(now, lo, &ping(1));
    }

    assert_eq!(answers(&mut strict).len(), 5);
    assert_eq!(answers(&mut lenient).len(), 50);
}

#[test]
fn answers_past_the_reply_budget_are_not_sent() {
    let now = Instant::now();
    let d = Defences {
        reply_budget_per_source: Some(Limit::per_second(1000)),
        reply_budget: Some(Limit::per_second(3000)),
        ..Defences::off()
    };
    let mut node = node(d, now);
    let victim = |i: u8| SocketAddr::from(([198, 51, 100, i], 6881));

    for _ in 0..100 {
        node.handle_datagram(now, victim(1), &get_peers(9));
    }
    let to_one = answers(&mut node).len();
    for i in 2..100 {
        node.handle_datagram(now, victim(i), &get_peers(9));
    }
    let to_all = to_one + answers(&mut node).len();
    let next_second = now + Duration::from_secs(1);
    node.handle_datagram(next_second, victim(1), &get_peers(9));

    assert!(
        (1..100).contains(&to_one),
        "{to_one} answers to one querier"
    );
    assert!(to_all < 100, "{to_all} answers in all");
    assert_eq!(
        dropped(&node, DropReason::ReplyBudget),
        (100 - to_one as u64) + (98 - (to_all - to_one) as u64)
    );
    assert_eq!(answers(&mut node), [victim(1)], "the budget refills");
}

#[test]
fn defences_off_answer_everything() {
    let now = Instant::now();
    let mut node = node(Defences::off(), now);
    let from = SocketAddr::from(([203, 0, 113, 7], 1000));

    for _ in 0..5000 {
        node.handle_datagram(now, from, &ping(1));
    }

    assert_eq!(answers(&mut node).len(), 5000);
}

/// A token for `from`, from a `get_peers` answer.
fn token(node: &mut Node, now: Instant, from: SocketAddr) -> Vec<u8> {
    let _ = answers(node);
    node.handle_datagram(now, from, &get_peers(9));
    std::iter::from_fn(|| node.poll_transmit())
        .find_map(|t| match Message::decode(&t.payload).ok()?.body {
            Body::Response(r) => r.token,
            _ => None,
        })
        .expect("a token")
}

fn announce(name: &str, port: u16, token: Vec<u8>) -> Vec<u8> {
    Message {
        tid: vec![5, 6],
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId([9; 20]),
            method: Method::AnnouncePeer {
                info_hash: Key::new(name.as_bytes()).expect("key"),
                port,
                implied_port: false,
                token,
            },
        }),
    }
    .encode()
}

#[test]
fn a_source_over_its_announce_cap_evicts_only_its_own_stalest() {
    let start = Instant::now();
    let d = Defences {
        max_peers_per_source: Some(3),
        ..Defences::off()
    };
    let mut node = node(d, start);
    let flooder = SocketAddr::from(([203, 0, 113, 7], 1000));
    let other = SocketAddr::from(([198, 51, 100, 1], 6881));
    let key = |name: &str| Key::new(name.as_bytes()).expect("key");

    let t = token(&mut node, start, other);
    node.handle_datagram(start, other, &announce("kept", 4000, t));
    let t = token(&mut node, start, flooder);
    for i in 0..10u16 {
        let now = start + Duration::from_secs(u64::from(i));
        node.handle_datagram(now, flooder, &announce(&format!("f{i}"), 5000, t.clone()));
    }
    let now = start + Duration::from_secs(10);

    assert_eq!(node.local_peers(now, &key("kept"), 10).len(), 1);
    let held: Vec<u16> = (0..10)
        .filter(|i| !node.local_peers(now, &key(&format!("f{i}")), 10).is_empty())
        .collect();
    assert_eq!(held, [7, 8, 9], "the flooder keeps only its freshest three");
    assert_eq!(node.evicted_by_source(), (7, 0));
}

fn put_immutable(v: &[u8], token: Vec<u8>) -> Vec<u8> {
    Message {
        tid: vec![7, 8],
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId([9; 20]),
            method: Method::Put(PutArgs {
                token,
                v: v.to_vec(),
                k: None,
                sig: None,
                seq: None,
                salt: None,
                cas: None,
            }),
        }),
    }
    .encode()
}

/// An item's value from a short name, as a bencoded string.
fn item_value(name: &str) -> Vec<u8> {
    format!("{}:{name}", name.len()).into_bytes()
}

/// A node holding 3 items per source: another source puts "kept", then (if
/// `flooder_puts_it_too`) the flooder puts that item as well, then ten of its own ("f0" to
/// "f9") a second apart. Returns the node and the time after the flood.
fn item_flood(flooder_puts_it_too: bool) -> (Node, Instant) {
    let start = Instant::now();
    let d = Defences {
        max_items_per_source: Some(3),
        ..Defences::off()
    };
    let mut node = node(d, start);
    let flooder = SocketAddr::from(([203, 0, 113, 7], 1000));
    let other = SocketAddr::from(([198, 51, 100, 1], 6881));
    let t = token(&mut node, start, other);
    node.handle_datagram(start, other, &put_immutable(&item_value("kept"), t));
    let t = token(&mut node, start, flooder);
    if flooder_puts_it_too {
        node.handle_datagram(
            start,
            flooder,
            &put_immutable(&item_value("kept"), t.clone()),
        );
    }
    for i in 1..=10u64 {
        let now = start + Duration::from_secs(i);
        let v = item_value(&format!("f{}", i - 1));
        node.handle_datagram(now, flooder, &put_immutable(&v, t.clone()));
    }
    (node, start + Duration::from_secs(11))
}

#[test]
fn a_source_over_its_item_cap_evicts_only_its_own_stalest() {
    let (node, now) = item_flood(false);

    let held = |name: &str| {
        let target = immutable_target(&item_value(name));
        node.item_store().get(now, &target).is_some()
    };
    assert!(held("kept"), "another source's item stays");
    let flooded: Vec<u64> = (0..10).filter(|i| held(&format!("f{i}"))).collect();
    assert_eq!(
        flooded,
        [7, 8, 9],
        "the flooder keeps only its freshest three"
    );
    assert_eq!(node.stored_items(), 4);
    assert_eq!(node.evicted_by_source(), (0, 7));
}

#[test]
fn an_item_another_source_put_first_survives_a_flood_by_a_later_putter() {
    let (node, now) = item_flood(true);

    let target = immutable_target(&item_value("kept"));
    assert!(
        node.item_store().get(now, &target).is_some(),
        "charged to its first putter, the item outlives the later putter's flood"
    );
    assert_eq!(node.stored_items(), 4);
    assert_eq!(node.evicted_by_source(), (0, 7));
}

/// Delivers datagrams between `a` (at `a_addr`) and `b` (at `b_addr`) until neither has
/// one for the other; returns every address `a` sent to.
fn pump(
    now: Instant,
    a: &mut Node,
    a_addr: SocketAddr,
    b: &mut Node,
    b_addr: SocketAddr,
) -> Vec<SocketAddr> {
    let mut a_sent = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            a_sent.push(t.to);
            if t.to == b_addr {
                b.handle_datagram(now, a_addr, &t.payload);
                moved = true;
            }
        }
        while let Some(t) = b.poll_transmit() {
            if t.to == a_addr {
                a.handle_datagram(now, b_addr, &t.payload);
                moved = true;
            }
        }
        if !moved {
            return a_sent;
        }
    }
}

#[test]
fn a_banned_hosts_planted_ids_leave_the_table_and_lookups_never_ask_them() {
    let now = Instant::now();
    let (mut us, us_addr) = (
        node(ten_per_second_then_banned(), now),
        SocketAddr::from(([10, 0, 0, 1], 6881)),
    );
    let other = Node::new(
        Config {
            defences: Defences::off(),
            ..Config::default()
        },
        [8; 32],
        now,
    );
    let (mut other, other_addr) = (other, SocketAddr::from(([10, 0, 0, 2], 6881)));
    // A private address: the subnet rule leaves it alone, so only the ban can clear it.
    let flooder = |i: u16| SocketAddr::from(([10, 9, 9, 9], 1000 + i % 256));

    // The flood plants ids in both tables; `other` has no defences and keeps them.
    for i in 0..200u16 {
        other.handle_datagram(now, flooder(i), &ping(i as u8));
    }
    let mut planted_before_ban = 0;
    for i in 0..200u16 {
        us.handle_datagram(now, flooder(i), &ping(i as u8));
        if us.stats().bans == 0 {
            planted_before_ban = us.routing_table_len();
        }
    }
    while us.poll_transmit().is_some() {}
    while other.poll_transmit().is_some() {}
    let ours_after_ban = us.routing_tables().0.iter(now).count();
    let other_holds = other
        .routing_tables()
        .0
        .iter(now)
        .filter(|(n, _)| n.addr.ip() == flooder(0).ip())
        .count();

    // We learn `other` and look a name up through it; its answers name the planted ids.
    us.bootstrap(now, &[other_addr]);
    let mut sent = pump(now, &mut us, us_addr, &mut other, other_addr);
    us.get_peers(now, Key::new(b"service").expect("key"));
    sent.extend(pump(now, &mut us, us_addr, &mut other, other_addr));

    assert_eq!(us.stats().bans, 1);
    assert!(
        planted_before_ban >= 5,
        "the burst planted ids ({planted_before_ban})"
    );
    assert_eq!(ours_after_ban, 0, "the ban took every planted id out");
    assert_eq!(us.stats().banned_nodes_removed, planted_before_ban as u64);
    assert!(
        other_holds >= 8,
        "the other node hands them out ({other_holds})"
    );
    assert!(
        us.stats().skipped_banned > 0,
        "answers named the banned host"
    );
    assert!(
        sent.iter().all(|to| to.ip() != flooder(0).ip()),
        "no query of ours went to the banned host: {sent:?}"
    );
    let finished = std::iter::from_fn(|| us.poll_event())
        .filter(|e| matches!(e, Event::Finished { .. }))
        .count();
    assert_eq!(
        finished, 2,
        "the bootstrap and the lookup ended without waiting on it"
    );
}

/// Decodes the answer `to` was sent, if there is one among `out`.
fn answer_to(out: &[super::Transmit], to: SocketAddr) -> Option<crate::dht::krpc::Response> {
    out.iter()
        .filter(|t| t.to == to)
        .find_map(|t| match Message::decode(&t.payload).ok()?.body {
            Body::Response(r) => Some(r),
            _ => None,
        })
}

fn find_node(id: u8) -> Vec<u8> {
    let target = Key::from(NodeId([0; 20]));
    query(id, Method::FindNode { target })
}

#[test]
fn a_node_that_missed_our_ping_is_not_named_in_answers() {
    let now = Instant::now();
    let mut us = node(Defences::default(), now);
    let silent = SocketAddr::from(([10, 0, 0, 5], 7000));
    let live = SocketAddr::from(([10, 0, 0, 6], 7000));
    let asker = SocketAddr::from(([10, 0, 0, 7], 7000));
    let named = |r: &crate::dht::krpc::Response| -> Vec<SocketAddr> {
        r.nodes.iter().map(|n| n.addr).collect()
    };

    // Both query us and enter the table unverified; upkeep pings them at once.
    us.handle_datagram(now, silent, &ping(1));
    us.handle_datagram(now, live, &ping(2));
    us.handle_timeout(now);
    let out: Vec<_> = std::iter::from_fn(|| us.poll_transmit()).collect();
    // `live` answers its ping; `silent` never does (behind a NAT, or planted by a flood).
    let live_ping = out
        .iter()
        .filter(|t| t.to == live)
        .filter_map(|t| Message::decode(&t.payload).ok())
        .find(|m| matches!(m.body, Body::Query(_)))
        .expect("a ping to the live node")
        .tid;
    let mut live_id = [2; 20];
    live_id[0] = 0x82;
    let pong = Message {
        tid: live_ping,
        version: None,
        read_only: false,
        body: Body::Response(crate::dht::krpc::Response::new(NodeId(live_id))),
    };
    us.handle_datagram(now, live, &pong.encode());
    us.handle_datagram(now, asker, &find_node(9));
    let out: Vec<_> = std::iter::from_fn(|| us.poll_transmit()).collect();
    let before = named(&answer_to(&out, asker).expect("an answer"));
    // Past the ping's soft deadline (500 ms with no round trip measured yet).
    let later = now + Duration::from_secs(1);
    us.handle_timeout(later);
    us.handle_datagram(later, asker, &find_node(9));
    let out: Vec<_> = std::iter::from_fn(|| us.poll_transmit()).collect();
    let after = named(&answer_to(&out, asker).expect("an answer"));

    assert!(
        before.contains(&silent) && before.contains(&live),
        "{before:?}"
    );
    assert!(after.contains(&live), "{after:?}");
    assert!(
        !after.contains(&silent),
        "a node that missed our ping is not handed on: {after:?}"
    );
}
