//! The BEP 5 routing table: k-buckets keyed by shared-prefix length with our own id.
//!
//! The table is sans-IO like the rest of the core: it takes `now` and returns what the
//! node should do (ping these nodes, look up these ids), and never sends anything itself.
//!
//! # How the node drives it
//! - A node answered one of our queries: [`RoutingTable::heard_response`]. If the result
//!   is [`Insert::Cached`], ping the nodes it lists (ping-before-evict, BEP 5).
//! - A node queried us: [`RoutingTable::heard_query`] (see its docs for the policy).
//! - One of our queries timed out: [`RoutingTable::failed`].
//! - At [`RoutingTable::next_timeout`]: look up every id [`RoutingTable::refresh`] returns
//!   and ping every node [`RoutingTable::take_pings`] returns.
//!
//! # Node states
//! [`NodeState`] is computed from timestamps and a failure count, never stored, so it
//! cannot disagree with them. A node that only ever queried us and never answered is
//! *unverified*: BEP 5 does not call it good, so it counts as [`NodeState::Questionable`]
//! and is handed out for a ping at once.
//!
//! # Address families
//! The table does not look at the address family: the node keeps one table for IPv4 and
//! one for IPv6 (BEP 32) and sends each node to the table of its family.

mod bucket;
mod table;

use std::net::SocketAddr;
use std::time::Duration;

use crate::dht::id::NodeId;

pub use table::{NodeReport, RoutingTable};

/// How long a node stays good after it last answered us (or queried us, once verified).
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);

/// A bucket that has not changed for this long is refreshed by a lookup (BEP 5).
pub const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);

/// Consecutive failed queries after which a node is bad (BEP 5 suggests trying once more).
pub const MAX_FAILURES: u8 = 2;

/// A ping handed out and never reported back (neither answer nor failure) is handed out
/// again after this long, so a lost report cannot leave a node unchecked forever.
pub const PING_RETRY: Duration = Duration::from_secs(60);

/// How many times k nodes the farthest buckets hold: bucket 0 (half of all ids) 16 k,
/// then 8 k, 4 k and 2 k; every nearer bucket holds k.
///
/// A lookup's first hop comes from our own table, and each answer from the answering
/// node's: the more nodes a far bucket holds, the closer to any target the best of them
/// is (16 k = 128 nodes give 4 more shared bits than k = 8), so every lookup starts about
/// one hop further in. libtorrent ships the same idea on by default ("extended routing
/// table"). The price is a few hundred more nodes to keep fresh with pings, and nothing
/// on the wire changes.
pub const WIDE_BUCKETS: [usize; 4] = [16, 8, 4, 2];

/// Most buckets a table can have: one per shared-prefix length 0..=159 (160 is our id).
pub const MAX_BUCKETS: usize = crate::dht::id::ID_LEN * 8;

/// A DHT node as the routing table and the wire see it: its id and where it listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeInfo {
    /// The node's 160-bit id.
    pub id: NodeId,
    /// The UDP address it answers on.
    pub addr: SocketAddr,
}

/// How much a node can be trusted to answer (BEP 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Answered one of our queries within [`GOOD_FOR`], or has answered once and queried
    /// us within [`GOOD_FOR`].
    Good,
    /// Silent for [`GOOD_FOR`], or never answered a query of ours: worth a ping.
    Questionable,
    /// Failed [`MAX_FAILURES`] of our queries in a row: not handed out by
    /// [`RoutingTable::closest`], first to be replaced.
    Bad,
}

/// What [`RoutingTable::heard_response`] or [`RoutingTable::heard_query`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a Cached result lists nodes to ping"]
pub enum Insert {
    /// The node is new to its bucket (or replaced a bad node, or took over the address of
    /// an old id); nothing more to do.
    Added,
    /// The node was already in the table; its timestamps were refreshed.
    Updated,
    /// The bucket is full: the node waits in the bucket's replacement cache. Ping the
    /// listed questionable nodes; one that then fails [`MAX_FAILURES`] times in a row is
    /// replaced by the freshest cached node. The list may be empty (bucket full of good
    /// nodes, or their pings are already under way).
    Cached {
        /// Questionable nodes of that bucket not already being pinged.
        ping: Vec<NodeInfo>,
    },
    /// The table did not take the node; the reason is for logs and stats only.
    Ignored(Ignored),
}

/// Why the table ignored a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ignored {
    /// The id is our own: someone echoes us or tries to poison the table.
    OwnId,
    /// Port 0, or an unspecified, broadcast or multicast address: nothing can be sent there.
    BadAddr,
    /// The id is already in the table at another address and that entry is not bad;
    /// the old entry is kept so a third party cannot hijack the id.
    IdElsewhere,
    /// A querying node at an address the table holds under another id that is not bad.
    /// Queries are easy to spoof, so only an answer from that address replaces the entry.
    AddrTaken,
    /// A querying node and its bucket is full: queries never evict (see
    /// [`RoutingTable::heard_query`]).
    Full,
    /// The bucket already holds a node of the same public /24 (IPv4) or /64 (IPv6): one
    /// host must not fill a bucket (see [`RoutingTable::with_subnet_rule`]).
    SameSubnet,
}

impl Ignored {
    /// A short stable label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Ignored::OwnId => "own_id",
            Ignored::BadAddr => "bad_addr",
            Ignored::IdElsewhere => "id_elsewhere",
            Ignored::AddrTaken => "addr_taken",
            Ignored::Full => "full",
            Ignored::SameSubnet => "same_subnet",
        }
    }
}

/// What [`RoutingTable::failed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Failed {
    /// The id is not in the table; if it waited in a replacement cache it was dropped there.
    Unknown,
    /// The failure was counted; the node is not bad yet. If it is questionable,
    /// [`RoutingTable::take_pings`] hands it out again at once for the second try.
    Counted,
    /// The node is now bad and stays until a new node takes its place; it is no longer
    /// returned by [`RoutingTable::closest`].
    Bad,
    /// The node went bad and the freshest node of the replacement cache took its place.
    Replaced {
        /// The bad node, now gone from the table.
        old: NodeInfo,
        /// The cached node that took its slot.
        new: NodeInfo,
    },
}
