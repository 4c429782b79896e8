//! The node's defences end to end: datagrams in, answers and counters out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Config, DropReason, Node};
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

fn get_peers(id: u8) -> Vec<u8> {
    Message {
        tid: vec![3, 4],
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId([id; 20]),
            method: Method::GetPeers {
                info_hash: Key::new(b"service").expect("key"),
            },
        }),
    }
    .encode()
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

#[test]
fn a_flooding_host_is_limited_then_banned_while_others_are_answered() {
    let now = Instant::now();
    let d = Defences {
        rate_limit: Some(Limit::per_second(10)),
        ban: Some(Ban {
            after: 20,
            window: Duration::from_secs(10),
            duration: Duration::from_secs(60),
        }),
        ..Defences::default()
    };
    let mut node = node(d, now);
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
