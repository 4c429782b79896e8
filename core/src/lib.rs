//! A sans-IO BitTorrent mainline DHT node, as Grenache's Grape uses it.
//!
//! The crate does no I/O: it never reads a clock, opens a socket, spawns a thread or
//! draws from a global RNG. Bytes and `now` go in; datagrams, timers and events come out.
//!
//! # The run loop
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use grenache_core::{Config, Event, Key, Node, Outcome};
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
//! # let _ = Duration::ZERO;
//! ```
//!
//! A datagram's path: [`Node::handle_datagram`] decodes it ([`dht::krpc`], over
//! [`dht::bencode`]); a query is answered from the [`dht::routing`] table, the
//! [`dht::token`]s and the [`dht::storage`]; a response is matched to our pending query and
//! fed to the lookup that sent it, which asks further or ends with an [`Event::Finished`].
//! [`api::Grape`] puts the
//! Node.js Grape's HTTP and WebSocket API on top, as bytes in and bytes out.
//!
//! References: BEP 5 (DHT), BEP 44 (get/put), BEP 43 (read-only nodes), BEP 32 (IPv6),
//! and `docs/protocol.md` for what Grenache adds (keys of any length).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod api;
pub mod dht;
pub mod peer;
#[cfg(feature = "sim")]
pub mod sim;

pub use dht::{
    Config, Event, ImmutableItem, Item, Key, MutableItem, Node, NodeId, Outcome, PutError,
    QueryError, QueryId, Stats, Target, Transmit,
};
