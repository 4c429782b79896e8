//! Pieces several fuzz targets share; each includes this file with `mod common;`.

use std::sync::OnceLock;
use std::time::Instant;

use grenache_core::dht::NodeId;
use grenache_core::dht::krpc::{Body, Message, Method, Query};

/// The start of a target's virtual clock: one fixed instant, so an input replays the same.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The ping known node `i` sends first, so the node under test puts it in its table.
#[allow(dead_code)] // not every target that includes this file seeds a routing table
pub(crate) fn ping_from(i: u8) -> Vec<u8> {
    Message {
        tid: vec![i],
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId([i.wrapping_mul(37).wrapping_add(1); 20]),
            method: Method::Ping,
        }),
    }
    .encode()
}
