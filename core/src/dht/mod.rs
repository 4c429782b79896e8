//! The BitTorrent mainline DHT (BEP 5, 43, 44, 32), sans-IO: what a Grape is underneath.
//!
//! Drive a [`Node`] as the crate doc shows. A datagram's path: [`Node::handle_datagram`]
//! decodes it ([`krpc`], over [`bencode`]); a query is answered from the [`routing`]
//! table, the [`token`]s and the [`storage`]; a response is matched to our pending query
//! by its transaction id and fed to the traversal of the lookup that sent it, which asks
//! further or ends with an [`Event::Finished`].
//!
//! The wire formats ([`bencode`], [`krpc`], [`bep44`], the [`state`] file) and the
//! node's parts that stand alone ([`routing`], [`storage`], [`token`]) are public so
//! they can be fuzzed, property-tested and benchmarked on their own; the node itself,
//! its events and its ids are re-exported here.

pub mod bencode;
pub mod bep44;
pub mod defence;
pub(crate) mod event;
pub(crate) mod id;
pub mod krpc;
pub(crate) mod node;
pub mod routing;
pub mod storage;
pub mod token;
mod traversal;

pub use bep44::{ImmutableItem, Item, MutableItem, PutError, Target};
pub use event::{Event, Outcome, QueryError, QueryId};
pub use id::{Distance, ID_LEN, Key, MAX_KEY_LEN, NodeId, hex, unhex};
pub use node::state;
pub use node::{
    Config, DropReason, MAX_WATCHES, MAX_WATCHES_PER_SOURCE, MethodCounts, Node, Stats, Transmit,
    WATCH_TTL,
};
