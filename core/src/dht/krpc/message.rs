//! The typed KRPC messages.

use std::net::SocketAddr;

use crate::dht::id::{Key, NodeId};

/// One KRPC message: a query, a response or an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Transaction id (`t`), echoed by the responder; at most
    /// [`MAX_TID_LEN`](super::MAX_TID_LEN) bytes.
    pub tid: Vec<u8>,
    /// Client version string (top-level `v`), e.g. `LT\x01\x02` for libtorrent.
    pub version: Option<Vec<u8>>,
    /// BEP 43: the sender is read-only and must not be added to routing tables (`ro: 1`).
    pub read_only: bool,
    /// What the message says.
    pub body: Body,
}

/// The three kinds of KRPC message (`y`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `y: q`.
    Query(Query),
    /// `y: r`.
    Response(Response),
    /// `y: e`.
    Error(ErrorReply),
}

/// A query (`y: q`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The querying node's id (`a.id`).
    pub id: NodeId,
    /// The method (`q`) and its arguments (`a`).
    pub method: Method,
}

/// A query method with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `ping`.
    Ping,
    /// `find_node`: the nodes closest to `target`.
    FindNode {
        /// `a.target`.
        target: Key,
    },
    /// `get_peers`: peers of `info_hash`, or the closest nodes and a token.
    GetPeers {
        /// `a.info_hash`, of any length 1..=256: Grenache uses raw service-name bytes
        /// (docs/protocol.md §4.2).
        info_hash: Key,
    },
    /// `announce_peer`: store the sender as a peer of `info_hash`.
    AnnouncePeer {
        /// `a.info_hash`.
        info_hash: Key,
        /// `a.port`; ignored by the receiver when `implied_port` is set.
        port: u16,
        /// `a.implied_port`: use the UDP source port instead of `port`.
        implied_port: bool,
        /// `a.token`, from an earlier `get_peers` response of the receiver.
        token: Vec<u8>,
    },
    /// `unannounce_peer` (ours, not in any BEP): forget the sender as a peer of `info_hash`.
    /// Only nodes whose `v` says they speak it are sent it (docs/design.md).
    UnannouncePeer {
        /// `a.info_hash`.
        info_hash: Key,
        /// `a.port`: the port that was announced (never implied).
        port: u16,
        /// `a.token`, from an earlier `get_peers` response of the receiver.
        token: Vec<u8>,
    },
    /// `watch_peers` (ours, not in any BEP): tell the sender, for a while, when the set of
    /// peers stored here under `info_hash` changes (docs/design.md, "Watch").
    WatchPeers {
        /// `a.info_hash`.
        info_hash: Key,
        /// `a.token`, from an earlier `get_peers` response of the receiver.
        token: Vec<u8>,
    },
    /// `peers_changed` (ours): the set of peers of `info_hash` that the receiver watches at
    /// the sender changed.
    PeersChanged {
        /// `a.info_hash`.
        info_hash: Key,
    },
    /// BEP 44 `get`.
    Get {
        /// `a.target`.
        target: Key,
        /// `a.seq`: only return a mutable item with a greater sequence number.
        seq: Option<i64>,
    },
    /// BEP 44 `put`.
    Put(PutArgs),
}

/// Arguments of a BEP 44 `put`.
///
/// The codec checks only types and fixed lengths; the BEP-44 rules (value and salt size,
/// signature, `cas`, `seq`) are the store's to check, since they get error replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutArgs {
    /// `a.token`, from an earlier `get` response of the receiver.
    pub token: Vec<u8>,
    /// `a.v`: the value, kept as its exact bencoded bytes (one complete value).
    pub v: Vec<u8>,
    /// `a.k`: ed25519 public key of a mutable item.
    pub k: Option<[u8; 32]>,
    /// `a.sig`: ed25519 signature of a mutable item.
    pub sig: Option<[u8; 64]>,
    /// `a.seq`: sequence number of a mutable item.
    pub seq: Option<i64>,
    /// `a.salt` of a mutable item.
    pub salt: Option<Vec<u8>>,
    /// `a.cas`: compare-and-swap on the stored `seq`.
    pub cas: Option<i64>,
}

/// A response (`y: r`); which fields are set depends on the query it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The responding node's id (`r.id`).
    pub id: NodeId,
    /// `r.nodes`: IPv4 nodes (26 bytes each on the wire). Entries with an IPv6 address
    /// are not encoded here; put them in `nodes6`.
    pub nodes: Vec<NodeInfo>,
    /// `r.nodes6` (BEP 32): IPv6 nodes (38 bytes each). IPv4 entries are not encoded.
    pub nodes6: Vec<NodeInfo>,
    /// `r.values`: compact peers (6 bytes for IPv4, 18 for IPv6).
    pub values: Vec<SocketAddr>,
    /// `r.token`, for a later `announce_peer` or `put`.
    pub token: Option<Vec<u8>>,
    /// `r.v` (BEP 44 `get`): the stored value as its exact bencoded bytes.
    pub v: Option<Vec<u8>>,
    /// `r.k` (BEP 44): public key of a mutable item.
    pub k: Option<[u8; 32]>,
    /// `r.sig` (BEP 44): signature of a mutable item.
    pub sig: Option<[u8; 64]>,
    /// `r.seq` (BEP 44): sequence number of a mutable item.
    pub seq: Option<i64>,
    /// BEP 42: the querier's address as the responder sees it (top-level `ip`).
    pub ip: Option<SocketAddr>,
}

impl Response {
    /// A response carrying only the responder's id; set the other fields as needed.
    pub fn new(id: NodeId) -> Self {
        Response {
            id,
            nodes: Vec::new(),
            nodes6: Vec::new(),
            values: Vec::new(),
            token: None,
            v: None,
            k: None,
            sig: None,
            seq: None,
            ip: None,
        }
    }
}

/// An error reply (`y: e`): `e` is `[code, message]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// One of [`code`](super::code), or any other integer a peer sends.
    pub code: i64,
    /// Human-readable text; invalid UTF-8 from peers is replaced (lossy).
    pub message: String,
}

pub use crate::dht::routing::NodeInfo;
