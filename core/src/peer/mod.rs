//! Grenache peers: the Link to a Grape, peer RPC over HTTP and WebSocket, and PUB/SUB.
//!
//! Placeholder; documented in full below once the state machines exist.

mod framing;
mod types;

pub use framing::*;
pub use types::*;
mod cache;
mod error;
mod link;
pub use error::*;
pub use link::*;
