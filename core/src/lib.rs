//! A sans-IO BitTorrent mainline DHT node, as Grenache's Grape uses it.
//!
//! The crate does no I/O: it never reads a clock, opens a socket, spawns a thread or
//! draws from a global RNG. Bytes and `now` go in; datagrams, timers and events come out.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod bencode;
pub mod bep44;
pub mod event;
pub mod id;
pub mod krpc;
pub mod lookup;
pub mod node;
pub mod peer;
pub mod routing;
pub mod storage;
pub mod token;
