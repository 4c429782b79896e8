//! Core micro-benchmarks (issue 5, item 4): the per-message costs that bound a Grape's
//! DHT throughput, measured without sockets.
//!
//! Run: `cargo bench -p grenache-core --bench micro` (add `-- --quick` for a short run).
//! The KRPC messages are the ones bittorrent-dht 10 (the Node Grape's DHT) sent on
//! loopback, kept in `core/src/dht/krpc/testdata/`.

// A bench is the caller: it takes the epoch from the clock, as tests do.
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use grenache_core::dht::krpc::{Body, Message, Method, Query};
use grenache_core::dht::routing::{NodeInfo, RoutingTable};
use grenache_core::dht::token::Tokens;
use grenache_core::{Config, Key, MutableItem, Node, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every KRPC message kind the Node Grape sends, as captured.
const CAPTURED: [(&str, &[u8]); 12] = [
    (
        "find_node",
        include_bytes!("../src/dht/krpc/testdata/00-find_node.bin"),
    ),
    (
        "r_nodes",
        include_bytes!("../src/dht/krpc/testdata/01-r_id_nodes.bin"),
    ),
    (
        "get_peers",
        include_bytes!("../src/dht/krpc/testdata/02-get_peers.bin"),
    ),
    (
        "r_nodes_token",
        include_bytes!("../src/dht/krpc/testdata/03-r_id_nodes_token.bin"),
    ),
    (
        "announce_peer",
        include_bytes!("../src/dht/krpc/testdata/04-announce_peer.bin"),
    ),
    (
        "r_id",
        include_bytes!("../src/dht/krpc/testdata/05-r_id.bin"),
    ),
    (
        "r_values",
        include_bytes!("../src/dht/krpc/testdata/06-r_id_token_values.bin"),
    ),
    ("get", include_bytes!("../src/dht/krpc/testdata/07-get.bin")),
    ("put", include_bytes!("../src/dht/krpc/testdata/08-put.bin")),
    (
        "r_v",
        include_bytes!("../src/dht/krpc/testdata/09-r_id_token_v.bin"),
    ),
    ("error", include_bytes!("../src/dht/krpc/testdata/10-e.bin")),
    (
        "ping",
        include_bytes!("../src/dht/krpc/testdata/11-ping.bin"),
    ),
];

/// Nodes fed to the routing table, as the issue asks.
const TABLE_NODES: usize = 10_000;

fn krpc(c: &mut Criterion) {
    let mut decode = c.benchmark_group("krpc_decode");
    decode.throughput(Throughput::Elements(1));
    for (name, bytes) in CAPTURED {
        decode.bench_function(name, |b| b.iter(|| Message::decode(black_box(bytes))));
    }
    decode.finish();

    let mut encode = c.benchmark_group("krpc_encode");
    encode.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(1500);
    for (name, bytes) in CAPTURED {
        let msg = Message::decode(bytes).unwrap();
        encode.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).encode_into(&mut out);
                black_box(out.len())
            })
        });
    }
    encode.finish();
}

/// `n` distinct nodes with random ids, each at its own loopback address.
fn random_nodes(n: usize, rng: &mut ChaCha8Rng) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
            NodeInfo {
                id: NodeId::random(rng),
                addr: SocketAddr::new(IpAddr::V4(ip), 6881),
            }
        })
        .collect()
}

/// A table fed `nodes` through answers, as a node that has heard from all of them.
fn filled_table(own: NodeId, k: usize, nodes: &[NodeInfo], now: Instant) -> RoutingTable {
    let mut table = RoutingTable::new(own, k);
    for node in nodes {
        let _ = table.heard_response(now, *node);
    }
    table
}

fn routing(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let now = Instant::now();
    let own = NodeId::random(&mut rng);
    let nodes = random_nodes(TABLE_NODES, &mut rng);
    let keys: Vec<NodeId> = (0..1024).map(|_| NodeId::random(&mut rng)).collect();

    let mut group = c.benchmark_group("routing");
    // One element = one node offered to the table (most land in replacement caches at
    // k = 8, which is what a busy node sees).
    group.throughput(Throughput::Elements(TABLE_NODES as u64));
    for k in [8, TABLE_NODES] {
        group.bench_function(format!("insert_10k_nodes_k{k}"), |b| {
            b.iter(|| filled_table(own, k, black_box(&nodes), now))
        });
    }
    group.throughput(Throughput::Elements(1));
    for k in [8, TABLE_NODES] {
        let table = filled_table(own, k, &nodes, now);
        let held = table.len();
        let mut i = 0;
        group.bench_function(format!("closest8_of_{held}_k{k}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(table.closest(keys[i].as_bytes(), 8))
            })
        });
    }
    group.finish();
}

fn token(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let tokens = Tokens::new(&mut rng, Instant::now());
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    let good = tokens.issue(ip);
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("issue", |b| b.iter(|| tokens.issue(black_box(ip))));
    group.bench_function("check", |b| {
        b.iter(|| tokens.check(black_box(ip), black_box(&good)))
    });
    group.finish();
}

fn ed25519(c: &mut Criterion) {
    let signed = MutableItem::sign(&[9; 32], b"salt".to_vec(), 1, b"5:hello".to_vec()).unwrap();
    let mut group = c.benchmark_group("bep44");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_mutable_put", |b| {
        b.iter_batched(
            || {
                (
                    *signed.k(),
                    signed.salt().to_vec(),
                    signed.v().to_vec(),
                    *signed.sig(),
                )
            },
            |(k, salt, v, sig)| MutableItem::new(k, salt, 1, v, sig),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// One query through a whole node: decode, answer, encode (what the UDP bench drives).
fn node(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let now = Instant::now();
    let mut node = Node::new(Config::default(), [1; 32], now);
    // A table of a few hundred nodes, as a Grape in a real network has.
    for info in random_nodes(2_000, &mut rng) {
        let ping = Message {
            tid: vec![0, 1],
            version: None,
            read_only: false,
            body: Body::Query(Query {
                id: info.id,
                method: Method::Ping,
            }),
        };
        node.handle_datagram(now, info.addr, &ping.encode());
        while node.poll_transmit().is_some() {}
    }
    let from: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let querier = NodeId::random(&mut rng);
    let target = NodeId::random(&mut rng);
    let queries = [
        ("ping", Method::Ping),
        (
            "find_node",
            Method::FindNode {
                target: Key::from(target),
            },
        ),
        (
            "get_peers",
            Method::GetPeers {
                info_hash: Key::new(b"rpc_test").unwrap(),
            },
        ),
    ];
    let mut group = c.benchmark_group("node_answer");
    group.throughput(Throughput::Elements(1));
    for (name, method) in queries {
        let bytes = Message {
            tid: vec![rng.random(), rng.random()],
            version: None,
            read_only: false,
            body: Body::Query(Query {
                id: querier,
                method,
            }),
        }
        .encode();
        group.bench_function(name, |b| {
            b.iter(|| {
                node.handle_datagram(now, from, black_box(&bytes));
                let mut sent = 0;
                while let Some(t) = node.poll_transmit() {
                    sent += t.payload.len();
                }
                black_box(sent)
            })
        });
    }
    group.finish();
}

/// One hop of an RPC server (issue 17): read a request frame, write its payload back as
/// the reply. The payload is an order book as exchanges send them: an object with keys in
/// no sorted order and 150 numbers (100 of them floats), about 2.3 KB, so the cost of
/// keeping key order and of writing numbers as JavaScript does shows up here (the RPC rows
/// of grape-bench echo a string).
fn peer_frame(c: &mut Criterion) {
    use grenache_core::peer::{DEFAULT_MAX_FRAME_LEN, decode_request, encode_reply};

    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut side = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let price: f64 = rng.random_range(90_000.0..110_000.0);
                let amount: f64 = rng.random_range(0.0001..5.0);
                format!("[{price},{},{amount}]", rng.random_range(1..40))
            })
            .collect()
    };
    let (bids, asks) = (side(25).join(","), side(25).join(","));
    let frame = format!(
        r#"["3e4c2c9a-6a0b-4d3c-9a55-08f1b7a3d2e1","rest:book",{{"symbol":"tBTCUSD","ts":1733500000123,"bids":[{bids}],"asks":[{asks}],"meta":{{"z":1,"venue":"bfx","a":[true,null],"prec":"P0","len":25,"checksum":-1234567890}}}}]"#
    )
    .into_bytes();
    let mut group = c.benchmark_group("peer_frame");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("echo_order_book", |b| {
        b.iter(|| {
            let req = decode_request(black_box(&frame), DEFAULT_MAX_FRAME_LEN).unwrap();
            black_box(encode_reply(&req.rid, Ok(&req.payload)))
        })
    });
    // What grape-bench's RPC rows echo: a string of 10,240 letters. Strings are escaped a
    // word at a time (peer/json.rs); this row shows what that is worth.
    let text = format!(
        r#"["3e4c2c9a-6a0b-4d3c-9a55-08f1b7a3d2e1","bench",{}]"#,
        serde_json::Value::from("x".repeat(10_240))
    )
    .into_bytes();
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("echo_text_10k", |b| {
        b.iter(|| {
            let req = decode_request(black_box(&text), DEFAULT_MAX_FRAME_LEN).unwrap();
            black_box(encode_reply(&req.rid, Ok(&req.payload)))
        })
    });
    group.finish();
}

/// The core's share of the Grape API's two DHT-bound commands (issue 16): a lookup of a
/// name never asked before (one traversal: a `get_peers` to the other Grape and back) and
/// an announce (a traversal, then `announce_peer`), from the HTTP body handed to the core
/// to the reply taken from it, with both Grapes of a two-Grape network wired in memory.
/// What the adapters add (sockets, HTTP parsing, task hand-offs) is not in these numbers.
fn api(c: &mut Criterion) {
    use grenache_core::api::{Grape, GrapeConfig, HttpBody, RequestId};

    let a_addr: SocketAddr = "127.0.0.1:20001".parse().unwrap();
    let b_addr: SocketAddr = "127.0.0.1:20002".parse().unwrap();
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut now = Instant::now();
    let mut a = Grape::new(GrapeConfig::default(), [3; 32], now);
    let mut b = Grape::new(GrapeConfig::default(), [4; 32], now);
    // Moves datagrams between the two until neither has any left.
    let pump = |a: &mut Grape, b: &mut Grape, now: Instant| loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            if t.to == b_addr {
                b.handle_datagram(now, a_addr, &t.payload);
            }
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            if t.to == a_addr {
                a.handle_datagram(now, b_addr, &t.payload);
            }
        }
        if !moved {
            break;
        }
    };
    a.bootstrap(now, &[b_addr]);
    b.bootstrap(now, &[a_addr]);
    pump(&mut a, &mut b, now);

    let mut n = 0u64;
    let mut group = c.benchmark_group("api_two_grapes");
    group.throughput(Throughput::Elements(1));
    for (name, path) in [("fresh_lookup", "/lookup"), ("announce", "/announce")] {
        group.bench_function(name, |bench| {
            bench.iter(|| {
                n += 1;
                now += std::time::Duration::from_micros(20);
                let body = if path == "/lookup" {
                    format!(r#"{{"rid":"r","data":"fresh-{n}"}}"#)
                } else {
                    format!(r#"{{"rid":"r","data":["svc-{n}",5000]}}"#)
                };
                a.handle_http(
                    now,
                    client,
                    RequestId(n),
                    "POST",
                    path,
                    HttpBody::Complete(body.as_bytes()),
                );
                pump(&mut a, &mut b, now);
                let reply = a.poll_reply().expect("the other Grape answered");
                assert_eq!(
                    reply.status,
                    200,
                    "{}",
                    String::from_utf8_lossy(&reply.body)
                );
                black_box(reply)
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches, krpc, routing, token, ed25519, node, api, peer_frame
);
criterion_main!(benches);
