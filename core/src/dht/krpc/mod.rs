//! KRPC messages of the mainline DHT, typed, with their bencode codec.
//!
//! Covers BEP 5 (`ping`, `find_node`, `get_peers`, `announce_peer`), BEP 44 (`get`,
//! `put`), BEP 43 (the `ro` read-only flag), BEP 42 (the top-level `ip` of responses) and
//! BEP 32 (`nodes6`, IPv6 peers in `values`), plus `unannounce_peer`, a query of our own
//! (docs/design.md).
//!
//! Decoding is strict about the fields it knows (type, length and range) and ignores the
//! keys it does not know, as BEP 5 asks. Every rejection is a [`DecodeError`] carrying the
//! transaction id when it could be read, so a node can answer a malformed query with
//! error 203 (or 204 for an unknown method, see [`DecodeError::reply`]).
//!
//! Encoding writes keys in canonical order and integers as integers, the form
//! bittorrent-dht 10 (the Node Grape's DHT library) and libtorrent both accept.

mod codec;
mod compact;
mod message;

pub use codec::{DecodeError, DecodeErrorKind, MAX_TID_LEN};
pub use compact::{
    NODE_V4_LEN, NODE_V6_LEN, PEER_V4_LEN, PEER_V6_LEN, decode_addr, decode_nodes, decode_nodes6,
    encode_addr, encode_nodes, encode_nodes6,
};
pub use message::{Body, ErrorReply, Message, Method, NodeInfo, PutArgs, Query, Response};

/// KRPC error codes (BEP 5 for 201-204, BEP 44 for the rest).
pub mod code {
    /// Generic error.
    pub const GENERIC: i64 = 201;
    /// Server error.
    pub const SERVER: i64 = 202;
    /// Protocol error: malformed packet, invalid arguments or bad token.
    pub const PROTOCOL: i64 = 203;
    /// Method unknown.
    pub const METHOD_UNKNOWN: i64 = 204;
    /// BEP 44: the `v` of a put is too big (over 1000 bytes bencoded).
    pub const MESSAGE_TOO_BIG: i64 = 205;
    /// BEP 44: the signature of a mutable put does not verify.
    pub const INVALID_SIGNATURE: i64 = 206;
    /// BEP 44: the `salt` of a put is too big (over 64 bytes).
    pub const SALT_TOO_BIG: i64 = 207;
    /// BEP 44: the `cas` of a put does not match the stored `seq`.
    pub const CAS_MISMATCH: i64 = 301;
    /// BEP 44: the `seq` of a put is not greater than the stored one.
    pub const SEQ_TOO_LOW: i64 = 302;
}
