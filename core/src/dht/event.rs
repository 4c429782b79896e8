//! What the node reports back: one [`Event::Finished`] per command.

use std::net::SocketAddr;

use crate::dht::bep44::{Item, Target};
use crate::dht::id::{Key, NodeId};

/// Names one command (`bootstrap`, `get_peers`, `announce`, `unannounce`, `put`, `get`) until its result arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// Output of the node for its caller, popped with [`Node::poll_event`](crate::dht::node::Node::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command ended. Arrives exactly once per [`QueryId`], cancelled commands included.
    Finished {
        /// The command this answers.
        query: QueryId,
        /// What it found, or why it found nothing.
        result: Result<Outcome, QueryError>,
    },
    /// The set of peers of a name followed with [`Node::watch`](crate::dht::node::Node::watch)
    /// changed here or at a storing node that told us; look it up again to see how.
    PeersChanged {
        /// The name.
        info_hash: Key,
    },
}

/// The result of a command that ran to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The routing table was filled from the seeds (it may be empty for a node that is alone).
    Bootstrapped {
        /// Nodes in the routing table once the lookup of our own id ended.
        table_size: usize,
    },
    /// Every distinct peer found for an info-hash, the local store included.
    Peers {
        /// Peers in the order found, local ones first.
        peers: Vec<SocketAddr>,
    },
    /// An announce ended: the peers seen on the way, and how many nodes stored us.
    Announced {
        /// Peers other announcers had stored under the same info-hash.
        peers: Vec<SocketAddr>,
        /// Nodes that acknowledged our `announce_peer`.
        stored_at: usize,
    },
    /// A BEP-44 put ended.
    Stored {
        /// Where the item lives in the DHT.
        target: Target,
        /// Nodes that acknowledged the `put` (the local store is not counted).
        stored_at: usize,
    },
    /// An unannounce ended (the peer is already gone from the local store).
    Unannounced {
        /// Nodes that acknowledged our `unannounce_peer`, i.e. dropped the peer.
        dropped_at: usize,
    },
    /// A BEP-44 get ended.
    Got {
        /// The item, verified against the target; for mutable items the highest `seq` seen.
        item: Option<Item>,
        /// The node that gave it, or `None` when it came from the local store or was not found.
        from: Option<NodeId>,
    },
}

/// Why a command produced no outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The command ran past its overall deadline; retry later.
    #[error("query timed out")]
    Timeout,
    /// Too many commands were running to start this one; it sent nothing. Back off and
    /// retry.
    #[error("too many commands running")]
    Overloaded,
    /// Every node asked refused a put with a KRPC error (e.g. 302: a newer `seq` is stored).
    #[error("all nodes refused: {message}")]
    AllFailed {
        /// The KRPC error code of the first refusal, if any.
        code: Option<i64>,
        /// Its message.
        message: String,
    },
    /// The command was refused before it started (e.g. the local store rejected a put).
    #[error("rejected: {0}")]
    Rejected(#[from] crate::dht::bep44::PutError),
    /// An unannounce named a name and port this node holds no announce of.
    #[error("no such announce on this node")]
    NotAnnounced,
    /// [`Node::cancel`](crate::dht::node::Node::cancel) was called.
    #[error("cancelled")]
    Cancelled,
}
