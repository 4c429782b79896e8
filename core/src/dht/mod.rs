//! The BitTorrent mainline DHT (BEP 5, 43, 44, 32), sans-IO: what a Grape is underneath.
//!
//! A datagram's path: [`Node::handle_datagram`] decodes it ([`krpc`], over [`bencode`]);
//! a query is answered from the [`routing`] table, the [`token`]s and the [`storage`];
//! a response is matched to our pending query and fed to the traversal of the lookup that
//! sent it, which asks further or ends with an [`Event::Finished`].

pub mod bencode;
pub mod bep44;
pub mod event;
pub mod id;
pub mod krpc;
pub mod node;
pub mod routing;
pub mod storage;
pub mod token;
mod traversal;

pub use bep44::{ImmutableItem, Item, MutableItem, PutError, Target};
pub use event::{Event, Outcome, QueryError, QueryId};
pub use id::{Key, NodeId};
pub use node::{Config, Node, Stats, Transmit};
