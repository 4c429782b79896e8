//! KRPC over bencode: [`Message::decode`] and [`Message::encode`].
//!
//! Decoding goes through [`bencode::decode`] (so it inherits its size, depth and
//! canonical-form rules) and then checks every known field's type, length and range.
//! Unknown keys are ignored (BEP 5). Compact strings (`nodes`, `nodes6`, each `values`
//! entry, `ip`) whose length is not a whole number of records **drop the message**: a
//! truncated record means the sender's encoder is broken, and guessing at the rest could
//! put garbage addresses in our routing table. bittorrent-dht and libtorrent never send
//! such strings.

use crate::dht::bencode::{self, Dict, DictWriter, Value, write_bytes, write_dict, write_int};
use crate::dht::id::{Key, NodeId};

use super::compact::{decode_addr, decode_nodes, decode_nodes6, encode_addr};
use super::{
    Body, ErrorReply, Message, Method, PutArgs, Query, Response, code, encode_nodes, encode_nodes6,
};

/// Longest transaction id accepted. Real clients use 2 to 4 bytes; the cap bounds what
/// a peer can make us echo back and store while a query is in flight.
pub const MAX_TID_LEN: usize = 32;

/// Why [`Message::decode`] rejected a datagram, with what a node needs to answer it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed KRPC message: {kind}")]
#[non_exhaustive]
pub struct DecodeError {
    /// The transaction id, if the datagram had a readable one (needed to reply).
    pub tid: Option<Vec<u8>>,
    /// The datagram claimed to be a query (`y: q`), so the sender awaits a reply.
    pub was_query: bool,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The error reply a node should send back, if any: 204 for an unknown method,
    /// 203 for any other malformed query, nothing for responses, errors, or datagrams
    /// without a readable transaction id.
    pub fn reply(&self) -> Option<Message> {
        if !self.was_query {
            return None;
        }
        let tid = self.tid.clone()?;
        let code = match self.kind {
            DecodeErrorKind::UnknownMethod => code::METHOD_UNKNOWN,
            _ => code::PROTOCOL,
        };
        Some(Message {
            tid,
            version: None,
            read_only: false,
            body: Body::Error(ErrorReply {
                code,
                message: self.kind.to_string(),
            }),
        })
    }
}

/// What was wrong with a rejected datagram. Keys are named by their path, e.g. `a.id`.
///
/// Every kind means "drop the datagram and count it" (under [`DecodeErrorKind::as_str`]);
/// [`DecodeError::reply`] says whether to answer it too.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not canonical bencode within the size and depth limits; nothing could be read.
    #[error("{0}")]
    Bencode(#[from] bencode::BencodeError),
    /// The datagram is bencode but not a dictionary; nothing could be read.
    #[error("message is not a dictionary")]
    NotADict,
    /// A required key is absent.
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    /// A known key holds the wrong bencode type (say, an integer `info_hash`).
    #[error("key `{0}` has the wrong type")]
    WrongType(&'static str),
    /// A byte string or list has an impossible length (node id not 20 bytes, `nodes` not
    /// a multiple of 26, empty `info_hash`, ...).
    #[error("key `{0}` has a bad length")]
    BadLength(&'static str),
    /// An integer is out of its range (port beyond 65535, a flag other than 0 or 1).
    #[error("key `{0}` is out of range")]
    OutOfRange(&'static str),
    /// `t` is longer than [`MAX_TID_LEN`]; the message cannot be answered.
    #[error("transaction id longer than {MAX_TID_LEN} bytes")]
    TidTooLong,
    /// `y` is not `q`, `r` or `e`.
    #[error("unknown message type")]
    UnknownType,
    /// `q` names a method this node does not implement: answer 204.
    #[error("unknown method")]
    UnknownMethod,
}

impl DecodeErrorKind {
    /// A short stable label, fit for a metrics label of drop counts.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeErrorKind::Bencode(e) => e.as_str(),
            DecodeErrorKind::NotADict => "not_dict",
            DecodeErrorKind::MissingKey(_) => "missing_key",
            DecodeErrorKind::WrongType(_) => "wrong_type",
            DecodeErrorKind::BadLength(_) => "bad_length",
            DecodeErrorKind::OutOfRange(_) => "out_of_range",
            DecodeErrorKind::TidTooLong => "tid_too_long",
            DecodeErrorKind::UnknownType => "unknown_type",
            DecodeErrorKind::UnknownMethod => "unknown_method",
        }
    }
}

impl Method {
    /// The wire name (`q`) of this method, also a fine metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Ping => "ping",
            Method::FindNode { .. } => "find_node",
            Method::GetPeers { .. } => "get_peers",
            Method::AnnouncePeer { .. } => "announce_peer",
            Method::UnannouncePeer { .. } => "unannounce_peer",
            Method::WatchPeers { .. } => "watch_peers",
            Method::PeersChanged { .. } => "peers_changed",
            Method::Get { .. } => "get",
            Method::Put(_) => "put",
        }
    }
}

impl Message {
    /// Decodes one datagram.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not canonical bencode, or a known field is
    /// missing or has the wrong type, length or range. It carries the transaction id when
    /// one was readable, so the node can answer with [`DecodeError::reply`].
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let reject = |tid: Option<&[u8]>, was_query, kind| DecodeError {
            tid: tid.map(<[u8]>::to_vec),
            was_query,
            kind,
        };
        let value = bencode::decode(bytes).map_err(|e| reject(None, false, e.into()))?;
        let Some(top) = value.as_dict() else {
            return Err(reject(None, false, DecodeErrorKind::NotADict));
        };
        let was_query = top.get(&b"y"[..]).and_then(Value::as_bytes) == Some(b"q");
        let tid = match required_bytes(top, "t") {
            Ok(tid) if tid.len() <= MAX_TID_LEN => tid,
            Ok(_) => return Err(reject(None, was_query, DecodeErrorKind::TidTooLong)),
            Err(kind) => return Err(reject(None, was_query, kind)),
        };
        decode_message(top, tid).map_err(|kind| reject(Some(tid), was_query, kind))
    }

    /// Encodes this message: canonical key order, integers as integers.
    ///
    /// A `v` in [`PutArgs`] or [`Response`] must be one complete bencoded value (it is
    /// copied verbatim; debug builds check it). Nodes of the wrong address family for
    /// `nodes`/`nodes6` are left out.
    ///
    /// # Panics
    /// In debug builds only, if a `v` is not one complete bencoded value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding of this message to `out` (see [`Message::encode`]).
    ///
    /// # Panics
    /// In debug builds only, if a `v` is not one complete bencoded value.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Keys in canonical order: a, e, ip, q, r, ro, t, v, y.
        write_dict(out, |d| {
            match &self.body {
                Body::Query(query) => {
                    d.dict(b"a", |a| encode_args(query, a));
                }
                Body::Error(error) => {
                    d.list(b"e", |l| {
                        write_int(l, error.code);
                        write_bytes(l, error.message.as_bytes());
                    });
                }
                Body::Response(response) => {
                    if let Some(ip) = &response.ip {
                        let mut compact = Vec::with_capacity(18);
                        encode_addr(ip, &mut compact);
                        d.bytes(b"ip", &compact);
                    }
                }
            }
            match &self.body {
                Body::Query(query) => {
                    d.bytes(b"q", query.method.name().as_bytes());
                }
                Body::Response(response) => {
                    d.dict(b"r", |r| encode_response(response, r));
                }
                Body::Error(_) => {}
            }
            if self.read_only {
                d.int(b"ro", 1);
            }
            d.bytes(b"t", &self.tid);
            if let Some(version) = &self.version {
                d.bytes(b"v", version);
            }
            let kind: &[u8] = match self.body {
                Body::Query(_) => b"q",
                Body::Response(_) => b"r",
                Body::Error(_) => b"e",
            };
            d.bytes(b"y", kind);
        });
    }
}

fn decode_message(top: &Dict<'_>, tid: &[u8]) -> Result<Message, DecodeErrorKind> {
    let kind = required_bytes(top, "y")?;
    let version = optional_bytes(top, "v")?.map(<[u8]>::to_vec);
    let read_only = flag(top, "ro")?;
    let body = match kind {
        b"q" => Body::Query(decode_query(top)?),
        b"r" => Body::Response(decode_response(top)?),
        b"e" => Body::Error(decode_error(top)?),
        _ => return Err(DecodeErrorKind::UnknownType),
    };
    Ok(Message {
        tid: tid.to_vec(),
        version,
        read_only,
        body,
    })
}

/// The methods we implement, so an unknown one is reported (204) before its arguments
/// are looked at.
#[derive(Clone, Copy)]
enum MethodName {
    Ping,
    FindNode,
    GetPeers,
    AnnouncePeer,
    UnannouncePeer,
    WatchPeers,
    PeersChanged,
    Get,
    Put,
}

fn decode_query(top: &Dict<'_>) -> Result<Query, DecodeErrorKind> {
    let name = match required_bytes(top, "q")? {
        b"ping" => MethodName::Ping,
        b"find_node" => MethodName::FindNode,
        b"get_peers" => MethodName::GetPeers,
        b"announce_peer" => MethodName::AnnouncePeer,
        b"unannounce_peer" => MethodName::UnannouncePeer,
        b"watch_peers" => MethodName::WatchPeers,
        b"peers_changed" => MethodName::PeersChanged,
        b"get" => MethodName::Get,
        b"put" => MethodName::Put,
        _ => return Err(DecodeErrorKind::UnknownMethod),
    };
    let a = required_dict(top, "a")?;
    let id = node_id(a, "a.id")?;
    let method = match name {
        MethodName::Ping => Method::Ping,
        MethodName::FindNode => Method::FindNode {
            target: key(a, "a.target")?,
        },
        MethodName::GetPeers => Method::GetPeers {
            info_hash: key(a, "a.info_hash")?,
        },
        MethodName::AnnouncePeer => {
            let implied_port = flag(a, "a.implied_port")?;
            // BEP 5 ignores `port` when `implied_port` is set, so a client may omit it.
            let port = match optional_int(a, "a.port")? {
                Some(_) => port(a, "a.port")?,
                None if implied_port => 0,
                None => return Err(DecodeErrorKind::MissingKey("a.port")),
            };
            Method::AnnouncePeer {
                info_hash: key(a, "a.info_hash")?,
                port,
                implied_port,
                token: required_bytes(a, "a.token")?.to_vec(),
            }
        }
        MethodName::UnannouncePeer => Method::UnannouncePeer {
            info_hash: key(a, "a.info_hash")?,
            port: port(a, "a.port")?,
            token: required_bytes(a, "a.token")?.to_vec(),
        },
        MethodName::WatchPeers => Method::WatchPeers {
            info_hash: key(a, "a.info_hash")?,
            token: required_bytes(a, "a.token")?.to_vec(),
        },
        MethodName::PeersChanged => Method::PeersChanged {
            info_hash: key(a, "a.info_hash")?,
        },
        MethodName::Get => Method::Get {
            target: key(a, "a.target")?,
            seq: optional_int(a, "a.seq")?,
        },
        MethodName::Put => Method::Put(PutArgs {
            token: required_bytes(a, "a.token")?.to_vec(),
            v: required(a, "a.v")?.to_bytes(),
            k: fixed(a, "a.k")?,
            sig: fixed(a, "a.sig")?,
            seq: optional_int(a, "a.seq")?,
            salt: optional_bytes(a, "a.salt")?.map(<[u8]>::to_vec),
            cas: optional_int(a, "a.cas")?,
        }),
    };
    Ok(Query { id, method })
}

fn decode_response(top: &Dict<'_>) -> Result<Response, DecodeErrorKind> {
    let r = required_dict(top, "r")?;
    let mut response = Response::new(node_id(r, "r.id")?);
    if let Some(nodes) = optional_bytes(r, "r.nodes")? {
        response.nodes = decode_nodes(nodes).ok_or(DecodeErrorKind::BadLength("r.nodes"))?;
    }
    if let Some(nodes6) = optional_bytes(r, "r.nodes6")? {
        response.nodes6 = decode_nodes6(nodes6).ok_or(DecodeErrorKind::BadLength("r.nodes6"))?;
    }
    if let Some(values) = optional(r, "r.values") {
        let values = values
            .as_list()
            .ok_or(DecodeErrorKind::WrongType("r.values"))?;
        response.values = values
            .iter()
            .map(|peer| {
                let peer = peer
                    .as_bytes()
                    .ok_or(DecodeErrorKind::WrongType("r.values"))?;
                decode_addr(peer).ok_or(DecodeErrorKind::BadLength("r.values"))
            })
            .collect::<Result<_, _>>()?;
    }
    response.token = optional_bytes(r, "r.token")?.map(<[u8]>::to_vec);
    response.v = optional(r, "r.v").map(Value::to_bytes);
    response.k = fixed(r, "r.k")?;
    response.sig = fixed(r, "r.sig")?;
    response.seq = optional_int(r, "r.seq")?;
    if let Some(ip) = optional_bytes(top, "ip")? {
        response.ip = Some(decode_addr(ip).ok_or(DecodeErrorKind::BadLength("ip"))?);
    }
    Ok(response)
}

fn decode_error(top: &Dict<'_>) -> Result<ErrorReply, DecodeErrorKind> {
    let e = required(top, "e")?
        .as_list()
        .ok_or(DecodeErrorKind::WrongType("e"))?;
    // Further items are ignored, like unknown keys.
    let [code, message, ..] = e else {
        return Err(DecodeErrorKind::BadLength("e"));
    };
    Ok(ErrorReply {
        code: code.as_int().ok_or(DecodeErrorKind::WrongType("e"))?,
        message: String::from_utf8_lossy(
            message.as_bytes().ok_or(DecodeErrorKind::WrongType("e"))?,
        )
        .into_owned(),
    })
}

fn encode_args(query: &Query, a: &mut DictWriter<'_>) {
    // Keys in canonical order: cas, id, implied_port, info_hash, k, port, salt, seq, sig,
    // target, token, v.
    match &query.method {
        Method::Ping => {
            a.bytes(b"id", query.id.as_bytes());
        }
        Method::FindNode { target } => {
            a.bytes(b"id", query.id.as_bytes())
                .bytes(b"target", target.as_bytes());
        }
        Method::GetPeers { info_hash } => {
            a.bytes(b"id", query.id.as_bytes())
                .bytes(b"info_hash", info_hash.as_bytes());
        }
        Method::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            // bittorrent-dht always sends both `port` and `implied_port`; so do we.
            a.bytes(b"id", query.id.as_bytes())
                .int(b"implied_port", i64::from(*implied_port))
                .bytes(b"info_hash", info_hash.as_bytes())
                .int(b"port", i64::from(*port))
                .bytes(b"token", token);
        }
        Method::UnannouncePeer {
            info_hash,
            port,
            token,
        } => {
            a.bytes(b"id", query.id.as_bytes())
                .bytes(b"info_hash", info_hash.as_bytes())
                .int(b"port", i64::from(*port))
                .bytes(b"token", token);
        }
        Method::WatchPeers { info_hash, token } => {
            a.bytes(b"id", query.id.as_bytes())
                .bytes(b"info_hash", info_hash.as_bytes())
                .bytes(b"token", token);
        }
        Method::PeersChanged { info_hash } => {
            a.bytes(b"id", query.id.as_bytes())
                .bytes(b"info_hash", info_hash.as_bytes());
        }
        Method::Get { target, seq } => {
            a.bytes(b"id", query.id.as_bytes());
            if let Some(seq) = seq {
                a.int(b"seq", *seq);
            }
            a.bytes(b"target", target.as_bytes());
        }
        Method::Put(put) => {
            if let Some(cas) = put.cas {
                a.int(b"cas", cas);
            }
            a.bytes(b"id", query.id.as_bytes());
            if let Some(k) = &put.k {
                a.bytes(b"k", k);
            }
            if let Some(salt) = &put.salt {
                a.bytes(b"salt", salt);
            }
            if let Some(seq) = put.seq {
                a.int(b"seq", seq);
            }
            if let Some(sig) = &put.sig {
                a.bytes(b"sig", sig);
            }
            a.bytes(b"token", &put.token);
            a.raw(b"v", checked_raw(&put.v));
        }
    }
}

fn encode_response(response: &Response, r: &mut DictWriter<'_>) {
    // Keys in canonical order: id, k, nodes, nodes6, seq, sig, token, v, values.
    r.bytes(b"id", response.id.as_bytes());
    if let Some(k) = &response.k {
        r.bytes(b"k", k);
    }
    if response.nodes.iter().any(|n| n.addr.is_ipv4()) {
        r.bytes(b"nodes", &encode_nodes(&response.nodes));
    }
    if response.nodes6.iter().any(|n| n.addr.is_ipv6()) {
        r.bytes(b"nodes6", &encode_nodes6(&response.nodes6));
    }
    if let Some(seq) = response.seq {
        r.int(b"seq", seq);
    }
    if let Some(sig) = &response.sig {
        r.bytes(b"sig", sig);
    }
    if let Some(token) = &response.token {
        r.bytes(b"token", token);
    }
    if let Some(v) = &response.v {
        r.raw(b"v", checked_raw(v));
    }
    if !response.values.is_empty() {
        r.list(b"values", |l| {
            let mut peer = Vec::with_capacity(18);
            for addr in &response.values {
                peer.clear();
                encode_addr(addr, &mut peer);
                write_bytes(l, &peer);
            }
        });
    }
}

/// Passes a BEP-44 `v` through, checking in debug builds that it is one bencoded value.
fn checked_raw(v: &[u8]) -> &[u8] {
    debug_assert!(
        bencode::decode(v).is_ok(),
        "a BEP-44 `v` must be one complete bencoded value"
    );
    v
}

/// The wire key of a field path: `a.info_hash` is looked up as `info_hash`.
///
/// A plain loop over a few bytes: every field read goes through here, and a general
/// string search cost more than the dictionary lookup it serves.
fn wire_key(path: &'static str) -> &'static [u8] {
    let bytes = path.as_bytes();
    let mut start = bytes.len();
    while start > 0 && bytes[start - 1] != b'.' {
        start -= 1;
    }
    bytes.get(start..).unwrap_or(bytes)
}

fn out_of_range(path: &'static str) -> DecodeErrorKind {
    DecodeErrorKind::OutOfRange(path)
}

fn optional<'d, 'a>(dict: &'d Dict<'a>, path: &'static str) -> Option<&'d Value<'a>> {
    dict.get(wire_key(path))
}

fn required<'d, 'a>(
    dict: &'d Dict<'a>,
    path: &'static str,
) -> Result<&'d Value<'a>, DecodeErrorKind> {
    optional(dict, path).ok_or(DecodeErrorKind::MissingKey(path))
}

fn optional_bytes<'a>(
    dict: &Dict<'a>,
    path: &'static str,
) -> Result<Option<&'a [u8]>, DecodeErrorKind> {
    optional(dict, path)
        .map(|v| v.as_bytes().ok_or(DecodeErrorKind::WrongType(path)))
        .transpose()
}

fn required_bytes<'a>(dict: &Dict<'a>, path: &'static str) -> Result<&'a [u8], DecodeErrorKind> {
    optional_bytes(dict, path)?.ok_or(DecodeErrorKind::MissingKey(path))
}

fn optional_int(dict: &Dict<'_>, path: &'static str) -> Result<Option<i64>, DecodeErrorKind> {
    optional(dict, path)
        .map(|v| v.as_int().ok_or(DecodeErrorKind::WrongType(path)))
        .transpose()
}

fn required_dict<'d, 'a>(
    dict: &'d Dict<'a>,
    path: &'static str,
) -> Result<&'d Dict<'a>, DecodeErrorKind> {
    required(dict, path)?
        .as_dict()
        .ok_or(DecodeErrorKind::WrongType(path))
}

/// A 0/1 integer flag (`ro`, `implied_port`); absent means false.
fn flag(dict: &Dict<'_>, path: &'static str) -> Result<bool, DecodeErrorKind> {
    match optional_int(dict, path)? {
        None | Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(_) => Err(out_of_range(path)),
    }
}

/// A required port: an integer in 0..=65535.
fn port(dict: &Dict<'_>, path: &'static str) -> Result<u16, DecodeErrorKind> {
    let port = optional_int(dict, path)?.ok_or(DecodeErrorKind::MissingKey(path))?;
    u16::try_from(port).map_err(|_| out_of_range(path))
}

fn node_id(dict: &Dict<'_>, path: &'static str) -> Result<NodeId, DecodeErrorKind> {
    NodeId::from_slice(required_bytes(dict, path)?).ok_or(DecodeErrorKind::BadLength(path))
}

fn key(dict: &Dict<'_>, path: &'static str) -> Result<Key, DecodeErrorKind> {
    Key::new(required_bytes(dict, path)?).ok_or(DecodeErrorKind::BadLength(path))
}

/// An optional byte string of exactly `N` bytes (`k`, `sig`).
fn fixed<const N: usize>(
    dict: &Dict<'_>,
    path: &'static str,
) -> Result<Option<[u8; N]>, DecodeErrorKind> {
    optional_bytes(dict, path)?
        .map(|b| b.try_into().map_err(|_| DecodeErrorKind::BadLength(path)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::dht::krpc::NodeInfo;

    const ID_A: &[u8; 20] = b"abcdefghij0123456789";
    const ID_M: &[u8; 20] = b"mnopqrstuvwxyz123456";

    fn id(bytes: &[u8; 20]) -> NodeId {
        NodeId(*bytes)
    }

    fn key(bytes: &[u8]) -> Key {
        Key::new(bytes).expect("test key")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn query(method: Method) -> Message {
        Message {
            tid: b"aa".to_vec(),
            version: None,
            read_only: false,
            body: Body::Query(Query {
                id: id(ID_A),
                method,
            }),
        }
    }

    fn response(response: Response) -> Message {
        Message {
            tid: b"aa".to_vec(),
            version: None,
            read_only: false,
            body: Body::Response(response),
        }
    }

    /// Decodes `wire` to `message` and encodes `message` back to exactly `wire`.
    fn assert_vector(wire: &[u8], message: &Message) {
        assert_eq!(Message::decode(wire).as_ref(), Ok(message), "decode");
        assert_eq!(
            String::from_utf8_lossy(&message.encode()),
            String::from_utf8_lossy(wire),
            "encode"
        );
        assert_eq!(message.encode(), wire, "encode bytes");
    }

    fn decode_err(wire: &[u8]) -> DecodeError {
        Message::decode(wire).expect_err("must be rejected")
    }

    #[test]
    fn a_field_path_is_looked_up_by_its_last_part() {
        assert_eq!(wire_key("a.info_hash"), b"info_hash");
        assert_eq!(wire_key("r.values"), b"values");
        assert_eq!(wire_key("t"), b"t");
        assert_eq!(wire_key(""), b"");
        assert_eq!(wire_key("a."), b"");
    }

    #[test]
    fn bep5_ping() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
            &query(Method::Ping),
        );
        assert_vector(
            b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
            &response(Response::new(id(ID_M))),
        );
    }

    #[test]
    fn bep5_error() {
        let message = Message {
            tid: b"aa".to_vec(),
            version: None,
            read_only: false,
            body: Body::Error(ErrorReply {
                code: code::GENERIC,
                message: "A Generic Error Ocurred".into(),
            }),
        };

        assert_vector(
            b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
            &message,
        );
    }

    #[test]
    fn bep5_find_node() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e\
              1:q9:find_node1:t2:aa1:y1:qe",
            &query(Method::FindNode { target: key(ID_M) }),
        );
        let mut r = Response::new(id(b"0123456789abcdefghij"));
        r.nodes = vec![NodeInfo {
            id: id(ID_M),
            addr: addr("97.120.106.101:11893"),
        }];
        assert_vector(
            b"d1:rd2:id20:0123456789abcdefghij5:nodes26:mnopqrstuvwxyz123456axje.ue\
              1:t2:aa1:y1:re",
            &response(r),
        );
    }

    #[test]
    fn bep5_get_peers() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e\
              1:q9:get_peers1:t2:aa1:y1:qe",
            &query(Method::GetPeers {
                info_hash: key(ID_M),
            }),
        );
        // BEP 5's peer example: "axje.u" is 97.120.106.101:11893, "idhtnm" 105.100.104.116:28269.
        let mut r = Response::new(id(ID_A));
        r.token = Some(b"aoeusnth".to_vec());
        r.values = vec![addr("97.120.106.101:11893"), addr("105.100.104.116:28269")];
        assert_vector(
            b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee\
              1:t2:aa1:y1:re",
            &response(r),
        );
    }

    #[test]
    fn bep5_announce_peer() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456\
              4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
            &query(Method::AnnouncePeer {
                info_hash: key(ID_M),
                port: 6881,
                implied_port: true,
                token: b"aoeusnth".to_vec(),
            }),
        );
    }

    #[test]
    fn unannounce_peer_round_trips() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567899:info_hash8:rpc_test4:porti1337e5:token2:tke\
              1:q15:unannounce_peer1:t2:aa1:y1:qe",
            &query(Method::UnannouncePeer {
                info_hash: key(b"rpc_test"),
                port: 1337,
                token: b"tk".to_vec(),
            }),
        );
    }

    #[test]
    fn malformed_unannounce_peer_gets_203() {
        let cases: [(&[u8], DecodeErrorKind); 4] = [
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash1:x5:token1:te\
                  1:q15:unannounce_peer1:t2:aa1:y1:qe",
                DecodeErrorKind::MissingKey("a.port"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash1:x4:porti1ee\
                  1:q15:unannounce_peer1:t2:aa1:y1:qe",
                DecodeErrorKind::MissingKey("a.token"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash1:x4:porti65536e5:token1:te\
                  1:q15:unannounce_peer1:t2:aa1:y1:qe",
                DecodeErrorKind::OutOfRange("a.port"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567894:porti1e5:token1:te\
                  1:q15:unannounce_peer1:t2:aa1:y1:qe",
                DecodeErrorKind::MissingKey("a.info_hash"),
            ),
        ];
        for (wire, kind) in cases {
            let err = decode_err(wire);

            assert_eq!(err.kind, kind, "{}", String::from_utf8_lossy(wire));
            let reply = err.reply().expect("a query gets a reply");
            assert!(matches!(
                reply.body,
                Body::Error(ErrorReply {
                    code: code::PROTOCOL,
                    ..
                })
            ));
        }
    }

    #[test]
    fn grenache_announce_as_bittorrent_dht_sends_it() {
        // grape announces `rpc_test` on port 1337: info_hash is the raw name (8 bytes),
        // and bittorrent-dht always sends `implied_port` (0 when a port is given).
        let mut message = query(Method::AnnouncePeer {
            info_hash: key(b"rpc_test"),
            port: 1337,
            implied_port: false,
            token: vec![0xaa; 20],
        });
        message.tid = vec![0x00, 0x07];
        let mut wire = b"d1:ad2:id20:abcdefghij012345678912:implied_porti0e\
                         9:info_hash8:rpc_test4:porti1337e5:token20:"
            .to_vec();
        wire.extend_from_slice(&[0xaa; 20]);
        wire.extend_from_slice(b"e1:q13:announce_peer1:t2:\x00\x071:y1:qe");

        assert_vector(&wire, &message);
    }

    #[test]
    fn announce_port_may_be_omitted_only_with_implied_port() {
        let implied = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash1:x\
                        5:token1:te1:q13:announce_peer1:t2:aa1:y1:qe";
        let explicit = b"d1:ad2:id20:abcdefghij01234567899:info_hash1:x\
                         5:token1:te1:q13:announce_peer1:t2:aa1:y1:qe";

        let message = Message::decode(implied).expect("port is implied");

        assert!(matches!(
            message.body,
            Body::Query(Query {
                method: Method::AnnouncePeer {
                    port: 0,
                    implied_port: true,
                    ..
                },
                ..
            })
        ));
        assert_eq!(
            decode_err(explicit).kind,
            DecodeErrorKind::MissingKey("a.port")
        );
    }

    #[test]
    fn watch_queries_of_ours() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567899:info_hash3:svc5:token2:tke\
              1:q11:watch_peers1:t2:aa1:y1:qe",
            &query(Method::WatchPeers {
                info_hash: key(b"svc"),
                token: b"tk".to_vec(),
            }),
        );
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567899:info_hash3:svce\
              1:q13:peers_changed1:t2:aa1:y1:qe",
            &query(Method::PeersChanged {
                info_hash: key(b"svc"),
            }),
        );
    }

    #[test]
    fn bep44_get_and_immutable_put() {
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e\
              1:q3:get1:t2:aa1:y1:qe",
            &query(Method::Get {
                target: key(ID_M),
                seq: None,
            }),
        );
        assert_vector(
            b"d1:ad2:id20:abcdefghij01234567895:token2:tk1:v12:Hello World!e\
              1:q3:put1:t2:aa1:y1:qe",
            &query(Method::Put(PutArgs {
                token: b"tk".to_vec(),
                v: b"12:Hello World!".to_vec(),
                k: None,
                sig: None,
                seq: None,
                salt: None,
                cas: None,
            })),
        );
    }

    #[test]
    fn bep44_mutable_put_and_get_response() {
        let mut put = b"d1:ad3:casi4e2:id20:abcdefghij01234567891:k32:".to_vec();
        put.extend_from_slice(&[b'K'; 32]);
        put.extend_from_slice(b"4:salt6:foobar3:seqi5e3:sig64:");
        put.extend_from_slice(&[b'S'; 64]);
        put.extend_from_slice(b"5:token2:tk1:vd1:xli1eeee1:q3:put1:t2:aa1:y1:qe");
        assert_vector(
            &put,
            &query(Method::Put(PutArgs {
                token: b"tk".to_vec(),
                v: b"d1:xli1eee".to_vec(),
                k: Some([b'K'; 32]),
                sig: Some([b'S'; 64]),
                seq: Some(5),
                salt: Some(b"foobar".to_vec()),
                cas: Some(4),
            })),
        );

        let mut get = b"d1:ad2:id20:abcdefghij01234567893:seqi-1e6:target20:".to_vec();
        get.extend_from_slice(ID_M);
        get.extend_from_slice(b"e1:q3:get1:t2:aa1:y1:qe");
        assert_vector(
            &get,
            &query(Method::Get {
                target: key(ID_M),
                seq: Some(-1),
            }),
        );

        let mut r = Response::new(id(ID_M));
        r.k = Some([b'K'; 32]);
        r.sig = Some([b'S'; 64]);
        r.seq = Some(5);
        r.token = Some(b"tk".to_vec());
        r.v = Some(b"5:hello".to_vec());
        let mut wire = b"d1:rd2:id20:mnopqrstuvwxyz1234561:k32:".to_vec();
        wire.extend_from_slice(&[b'K'; 32]);
        wire.extend_from_slice(b"3:seqi5e3:sig64:");
        wire.extend_from_slice(&[b'S'; 64]);
        wire.extend_from_slice(b"5:token2:tk1:v5:helloe1:t2:aa1:y1:re");
        assert_vector(&wire, &response(r));
    }

    #[test]
    fn bep32_nodes6_and_v6_values() {
        let v6 = NodeInfo {
            id: id(ID_A),
            addr: addr("[2001:db8::1]:443"),
        };
        let mut r = Response::new(id(ID_M));
        r.nodes6 = vec![v6];
        r.values = vec![addr("[::1]:1"), addr("1.2.3.4:5")];
        let message = response(r);
        let mut wire = b"d1:rd2:id20:mnopqrstuvwxyz1234566:nodes638:abcdefghij0123456789".to_vec();
        wire.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        wire.extend_from_slice(&[0x01, 0xbb]);
        wire.extend_from_slice(b"6:valuesl18:");
        wire.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
        wire.extend_from_slice(b"6:\x01\x02\x03\x04\x00\x05ee1:t2:aa1:y1:re");

        assert_vector(&wire, &message);
    }

    #[test]
    fn bep42_ip_bep43_ro_and_version_are_top_level() {
        let mut r = Response::new(id(ID_M));
        r.ip = Some(addr("1.2.3.4:6881"));
        let mut message = response(r);
        message.version = Some(b"LT\x01\x02".to_vec());
        assert_vector(
            b"d2:ip6:\x01\x02\x03\x04\x1a\xe11:rd2:id20:mnopqrstuvwxyz123456e\
              1:t2:aa1:v4:LT\x01\x021:y1:re",
            &message,
        );

        let mut ping = query(Method::Ping);
        ping.read_only = true;
        assert_vector(
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi1e1:t2:aa1:y1:qe",
            &ping,
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let wire = b"d1:ad2:id20:abcdefghij01234567894:wantl2:n4ee1:q4:ping1:t2:aa\
                     1:y1:q1:zi9ee";

        assert_eq!(Message::decode(wire), Ok(query(Method::Ping)));
    }

    #[test]
    fn wrong_nodes_length_drops_the_message() {
        // BEP 5's own get_peers example has a placeholder "def456..." of 9 bytes.
        let wire = b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe\
                     1:t2:aa1:y1:re";

        let err = decode_err(wire);

        assert_eq!(err.kind, DecodeErrorKind::BadLength("r.nodes"));
        assert_eq!(err.tid.as_deref(), Some(&b"aa"[..]));
        assert!(!err.was_query);
        assert_eq!(err.reply(), None);
    }

    #[test]
    fn malformed_queries_get_203_with_the_tid() {
        let cases: [(&[u8], DecodeErrorKind); 8] = [
            (
                b"d1:q9:get_peers1:t2:aa1:y1:qe",
                DecodeErrorKind::MissingKey("a"),
            ),
            (
                b"d1:ade1:q4:ping1:t2:aa1:y1:qe",
                DecodeErrorKind::MissingKey("a.id"),
            ),
            (
                b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",
                DecodeErrorKind::BadLength("a.id"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hashi5ee1:q9:get_peers1:t2:aa1:y1:qe",
                DecodeErrorKind::WrongType("a.info_hash"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash0:e1:q9:get_peers1:t2:aa1:y1:qe",
                DecodeErrorKind::BadLength("a.info_hash"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash1:x4:porti70000e5:token1:te\
                  1:q13:announce_peer1:t2:aa1:y1:qe",
                DecodeErrorKind::OutOfRange("a.port"),
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash1:x4:porti-1e5:token1:te\
                  1:q13:announce_peer1:t2:aa1:y1:qe",
                DecodeErrorKind::OutOfRange("a.port"),
            ),
            (
                b"d1:ad2:id20:abcdefghij0123456789e1:qi1e1:t2:aa1:y1:qe",
                DecodeErrorKind::WrongType("q"),
            ),
        ];
        for (wire, kind) in cases {
            let err = decode_err(wire);

            assert_eq!(err.kind, kind, "{}", String::from_utf8_lossy(wire));
            let reply = err.reply().expect("a query gets a reply");
            assert_eq!(reply.tid, b"aa");
            assert!(matches!(
                reply.body,
                Body::Error(ErrorReply {
                    code: code::PROTOCOL,
                    ..
                })
            ));
        }
    }

    #[test]
    fn unknown_method_gets_204_even_without_arguments() {
        let err = decode_err(b"d1:q6:vote_x1:t2:aa1:y1:qe");

        assert_eq!(err.kind, DecodeErrorKind::UnknownMethod);
        assert_eq!(err.kind.as_str(), "unknown_method");
        let reply = err.reply().expect("a reply");
        assert_eq!(
            reply.encode(),
            b"d1:eli204e14:unknown methode1:t2:aa1:y1:ee"
        );
    }

    #[test]
    fn envelope_errors() {
        let not_bencode = decode_err(b"d1:t2:aa");
        assert_eq!(
            not_bencode.kind,
            DecodeErrorKind::Bencode(bencode::BencodeError::UnexpectedEof)
        );
        assert_eq!(not_bencode.tid, None);
        assert_eq!(not_bencode.reply(), None);

        assert_eq!(decode_err(b"li1ee").kind, DecodeErrorKind::NotADict);
        assert_eq!(
            decode_err(b"d1:y1:qe").kind,
            DecodeErrorKind::MissingKey("t")
        );
        assert_eq!(
            decode_err(b"d1:ti1e1:y1:qe").kind,
            DecodeErrorKind::WrongType("t")
        );
        assert_eq!(
            decode_err(b"d1:t2:aae").kind,
            DecodeErrorKind::MissingKey("y")
        );
        assert_eq!(
            decode_err(b"d1:t2:aa1:y1:xe").kind,
            DecodeErrorKind::UnknownType
        );
        assert_eq!(
            decode_err(b"d1:t2:aa1:vi1e1:y1:qe").kind,
            DecodeErrorKind::WrongType("v")
        );
        let ro = decode_err(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi2e1:t2:aa1:y1:qe");
        assert_eq!(ro.kind, DecodeErrorKind::OutOfRange("ro"));
    }

    #[test]
    fn unsorted_keys_are_dropped() {
        // `t` before `q`: not canonical, so not answered either.
        let err = decode_err(b"d1:ad2:id20:abcdefghij0123456789e1:t2:aa1:q4:ping1:y1:qe");

        assert_eq!(
            err.kind,
            DecodeErrorKind::Bencode(bencode::BencodeError::UnsortedKeys)
        );
        assert_eq!(err.kind.as_str(), "bencode_unsorted_keys");
        assert_eq!(err.reply(), None);
    }

    #[test]
    fn tid_longer_than_32_bytes_is_rejected_without_reply() {
        let mut wire = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t33:".to_vec();
        wire.extend_from_slice(&[b'x'; 33]);
        wire.extend_from_slice(b"1:y1:qe");

        let err = decode_err(&wire);

        assert_eq!(err.kind, DecodeErrorKind::TidTooLong);
        assert!(err.was_query);
        assert_eq!(err.reply(), None);
    }

    #[test]
    fn response_field_errors() {
        let cases: [(&[u8], DecodeErrorKind); 7] = [
            (b"d1:t2:aa1:y1:re", DecodeErrorKind::MissingKey("r")),
            (b"d1:rde1:t2:aa1:y1:re", DecodeErrorKind::MissingKey("r.id")),
            (
                b"d1:rd2:id20:abcdefghij01234567896:valuesi1ee1:t2:aa1:y1:re",
                DecodeErrorKind::WrongType("r.values"),
            ),
            (
                b"d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re",
                DecodeErrorKind::WrongType("r.values"),
            ),
            (
                b"d1:rd2:id20:abcdefghij01234567896:valuesl5:abcdeee1:t2:aa1:y1:re",
                DecodeErrorKind::BadLength("r.values"),
            ),
            (
                b"d1:rd2:id20:abcdefghij01234567891:k3:abce1:t2:aa1:y1:re",
                DecodeErrorKind::BadLength("r.k"),
            ),
            (
                b"d2:ip3:abc1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re",
                DecodeErrorKind::BadLength("ip"),
            ),
        ];
        for (wire, kind) in cases {
            assert_eq!(
                decode_err(wire).kind,
                kind,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn error_list_is_checked() {
        assert_eq!(
            decode_err(b"d1:eli201ee1:t2:aa1:y1:ee").kind,
            DecodeErrorKind::BadLength("e")
        );
        assert_eq!(
            decode_err(b"d1:el1:x1:ye1:t2:aa1:y1:ee").kind,
            DecodeErrorKind::WrongType("e")
        );
        assert_eq!(
            decode_err(b"d1:e3:abc1:t2:aa1:y1:ee").kind,
            DecodeErrorKind::WrongType("e")
        );
        // Extra items are ignored; invalid UTF-8 is replaced.
        let lenient = Message::decode(b"d1:eli203e2:\xffxi9ee1:t2:aa1:y1:ee").expect("lenient");
        assert_eq!(
            lenient.body,
            Body::Error(ErrorReply {
                code: 203,
                message: "\u{fffd}x".into()
            })
        );
    }

    #[test]
    fn nodes_of_the_wrong_family_are_not_encoded() {
        let mut r = Response::new(id(ID_M));
        r.nodes = vec![NodeInfo {
            id: id(ID_A),
            addr: addr("[::1]:1"),
        }];
        r.nodes6 = vec![NodeInfo {
            id: id(ID_A),
            addr: addr("1.2.3.4:1"),
        }];

        let wire = response(r).encode();

        assert_eq!(wire, b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re");
    }

    /// Every kind of message bittorrent-dht 10 sent on loopback (testdata/README.md).
    const BITTORRENT_DHT_10: [(&str, &[u8]); 12] = [
        ("find_node", include_bytes!("testdata/00-find_node.bin")),
        ("r nodes", include_bytes!("testdata/01-r_id_nodes.bin")),
        ("get_peers", include_bytes!("testdata/02-get_peers.bin")),
        (
            "r nodes token",
            include_bytes!("testdata/03-r_id_nodes_token.bin"),
        ),
        (
            "announce_peer",
            include_bytes!("testdata/04-announce_peer.bin"),
        ),
        ("r", include_bytes!("testdata/05-r_id.bin")),
        (
            "r token values",
            include_bytes!("testdata/06-r_id_token_values.bin"),
        ),
        ("get", include_bytes!("testdata/07-get.bin")),
        ("put", include_bytes!("testdata/08-put.bin")),
        ("r token v", include_bytes!("testdata/09-r_id_token_v.bin")),
        ("e", include_bytes!("testdata/10-e.bin")),
        ("ping", include_bytes!("testdata/11-ping.bin")),
    ];

    #[test]
    fn bittorrent_dht_10_messages_decode_and_reencode_exactly() {
        for (name, wire) in BITTORRENT_DHT_10 {
            let message = Message::decode(wire).unwrap_or_else(|e| panic!("{name}: {e}"));

            let encoded = message.encode();

            assert_eq!(encoded, wire, "{name}");
        }
    }

    #[test]
    fn bittorrent_dht_10_announce_carries_the_raw_service_name() {
        let message = Message::decode(BITTORRENT_DHT_10[4].1).expect("announce decodes");

        let Body::Query(Query {
            method:
                Method::AnnouncePeer {
                    info_hash,
                    port,
                    implied_port,
                    token,
                },
            ..
        }) = message.body
        else {
            panic!("not an announce: {message:?}");
        };
        assert_eq!(info_hash.as_bytes(), b"rpc_test");
        assert_eq!((port, implied_port, token.len()), (1337, false, 20));
    }

    #[test]
    fn labels_are_distinct() {
        let kinds = [
            DecodeErrorKind::NotADict,
            DecodeErrorKind::MissingKey("x"),
            DecodeErrorKind::WrongType("x"),
            DecodeErrorKind::BadLength("x"),
            DecodeErrorKind::OutOfRange("x"),
            DecodeErrorKind::TidTooLong,
            DecodeErrorKind::UnknownType,
            DecodeErrorKind::UnknownMethod,
            DecodeErrorKind::Bencode(bencode::BencodeError::Syntax),
        ];
        let mut labels: Vec<_> = kinds.iter().map(DecodeErrorKind::as_str).collect();
        labels.sort_unstable();
        labels.dedup();

        assert_eq!(labels.len(), kinds.len());
    }
}
