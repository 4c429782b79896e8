//! Grenache's protocols, sans-IO: the BitTorrent mainline DHT under a Grape, the Grape's
//! API on top of it, and the Grenache peers that use a Grape.
//!
//! The crate does no I/O: it never reads a clock, opens a socket, spawns a thread or
//! draws from a global RNG. Bytes and `now` go in; datagrams, timers and events come out.
//! Each machine owns a ChaCha8 RNG seeded by whoever builds it, so a run can be replayed.
//!
//! Three layers, one directory each:
//!
//! | layer | in `core/src` | what you drive |
//! |---|---|---|
//! | [`dht`]: BEP 5, 43, 44, 32 and our own queries | `dht/` | [`dht::Node`] |
//! | [`api`]: the Grape's HTTP and WebSocket API | `api/` | [`api::Grape`] (a `Node` inside) |
//! | [`peer`]: Link, peer RPC and PUB/SUB, ZMTP | `peer/` | [`peer::Client`] |
//!
//! All three are driven the same way, from a plain loop: (1) feed an input (a command,
//! received bytes, or the timer); (2) drain what it produced (bytes to send, then events
//! or replies); (3) sleep until the next input or `poll_timeout`, and call
//! `handle_timeout` then. Time must not go backwards. The sections below are each of
//! them once, with the network played by the example itself.
//!
//! # Driving a [`Node`]
//! A command returns a [`QueryId`] at once; its one
//! [`Event::Finished`] comes later. See [`dht`] for a datagram's
//! path through the node.
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use grenache_core::dht::{Config, Event, Key, Node, Outcome};
//!
//! let now = Instant::now();
//! let mut node = Node::new(Config::default(), [7; 32], now);
//! // 1. A command (or handle_datagram / handle_timeout) changes state ...
//! let query = node.announce(now, Key::new(b"rpc_test").unwrap(), Some(1337));
//! // 2. ... then drain what it produced: datagrams to the socket, events to the caller.
//! while let Some(t) = node.poll_transmit() {
//!     let _: (SocketAddr, Vec<u8>) = (t.to, t.payload); // socket.send_to(&t.payload, t.to)
//! }
//! let Some(Event::Finished { query: done, result }) = node.poll_event() else { panic!() };
//! assert_eq!(done, query);
//! assert!(matches!(result, Ok(Outcome::Announced { .. })));
//! // 3. Sleep until the next datagram or `poll_timeout`, then call `handle_timeout(now)`.
//! let _wake: Option<Instant> = node.poll_timeout();
//! ```
//!
//! # Driving a [`Grape`](api::Grape)
//! A Grape is a `Node` plus the API: hand it each HTTP request (or WebSocket message) with
//! a [`RequestId`](api::RequestId) of your choosing, keep feeding its node as above, and
//! send back every [`Reply`](api::Reply) it yields. See [`api`] for what it answers.
//! ```
//! use std::time::Instant;
//! use grenache_core::api::{Grape, GrapeConfig, HttpBody, RequestId};
//!
//! let now = Instant::now();
//! let mut grape = Grape::new(GrapeConfig::default(), [7; 32], now);
//! // 1. Request bytes in (a DHT alone answers at once; a real one after some datagrams).
//! let body = br#"{"data":["rpc_test",1337]}"#;
//! let client = "127.0.0.1:50000".parse().unwrap(); // where the request came from
//! grape.handle_http(now, client, RequestId(1), "POST", "/announce", HttpBody::Complete(body));
//! // 2. Datagrams out (as for a Node), then replies out: status, content type and body.
//! while let Some(t) = grape.poll_transmit() {
//!     let _ = t; // socket.send_to(&t.payload, t.to)
//! }
//! let reply = grape.poll_reply().unwrap();
//! assert_eq!((reply.req, reply.status), (RequestId(1), 200));
//!
//! let body = br#"{"data":"rpc_test"}"#;
//! grape.handle_http(now, client, RequestId(2), "POST", "/lookup", HttpBody::Complete(body));
//! let reply = grape.poll_reply().unwrap();
//! assert_eq!(reply.body, br#"["127.0.0.1:1337"]"#);
//! // 3. Sleep until a datagram, a request or `poll_timeout`; `handle_timeout` then.
//! ```
//!
//! # Driving a peer [`Client`](peer::Client)
//! A command returns a [`CommandId`](peer::CommandId); the Client asks for network work
//! as [`Io`](peer::Io) values (here: two HTTP exchanges, the Grape lookup and the request
//! itself), you report each outcome back, and its one
//! [`ClientEvent`](peer::ClientEvent) comes out. See [`peer`] for every kind of `Io`.
//! ```
//! use std::time::Instant;
//! use grenache_core::peer::{
//!     Client, ClientConfig, ClientEvent, HttpResponse, Io, RequestOptions,
//! };
//! use serde_json::{Value, json};
//!
//! let now = Instant::now();
//! let config = ClientConfig::new("http://127.0.0.1:30001");
//! let mut client = Client::new(config, [7; 32]).unwrap();
//! // 1. A command: a request to whoever serves `rpc_test`.
//! let opts = RequestOptions::default();
//! let id = client.request(now, "rpc_test", &json!("ping"), &opts).unwrap();
//! // 2. Network work out, its outcome in: first the lookup at the Grape ...
//! let Some(Io::Http(lookup)) = client.poll_transmit() else { panic!() };
//! assert_eq!(lookup.url, "http://127.0.0.1:30001/lookup");
//! let body = br#"["127.0.0.1:1337"]"#.to_vec();
//! client.handle_http_reply(now, lookup.id, Ok(HttpResponse { status: 200, body }));
//! // ... then the request to the peer found, answered `[rid, null, data]` ...
//! let Some(Io::Http(request)) = client.poll_transmit() else { panic!() };
//! assert_eq!(request.url, "http://127.0.0.1:1337/");
//! let frame: Value = serde_json::from_slice(&request.body).unwrap();
//! let body = json!([frame[0], null, "pong"]).to_string().into_bytes();
//! client.handle_http_reply(now, request.id, Ok(HttpResponse { status: 200, body }));
//! // ... and the event out.
//! let Some(ClientEvent::Reply { id: done, result }) = client.poll_event() else { panic!() };
//! assert_eq!((done, result), (id, Ok(json!("pong"))));
//! // 3. Sleep until a report, a command or `poll_timeout`; `handle_timeout` then.
//! assert_eq!(client.poll_timeout(), None);
//! ```
//!
//! References: BEP 5 (DHT), BEP 44 (get/put), BEP 43 (read-only nodes), BEP 32 (IPv6),
//! `docs/protocol.md` for what Grenache adds (keys of any length) and the peers' wire
//! formats, `docs/zeromq-wire.md` for ZeroMQ.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod api;
pub mod dht;
pub mod peer;
#[cfg(feature = "sim")]
pub mod sim;

// The DHT node's names stay at the root too, where they were before the layers.
pub use dht::{
    Config, Event, ImmutableItem, Item, Key, MutableItem, Node, NodeId, Outcome, PutError,
    QueryError, QueryId, Stats, Target, Transmit,
};
