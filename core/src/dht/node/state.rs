//! A node's state on disk, for a warm restart (Grape `--state`): its id and the nodes it
//! knows, so a restarted node keeps its place in the DHT and rejoins without seeds.
//!
//! Sans-IO like the rest of the core: [`Snapshot::encode`] gives bytes and
//! [`Snapshot::decode`] takes them; reading and writing the file is the adapter's job.
//!
//! # Format (version 1)
//! [`MAGIC`], then one canonical bencode dictionary, then the SHA-1 of everything before it
//! (spaced out below for reading; the file has no space or break but the magic's newline):
//!
//! ```text
//! grenache-grape-state\n
//! d 2:id 20:<id> 5:nodes <compact IPv4> 6:nodes6 <compact IPv6> 1:v i1e e
//! <20-byte SHA-1>
//! ```
//!
//! `nodes` and `nodes6` are the compact node lists of BEP 5 and BEP 32. The checksum makes
//! a truncated or damaged file an error rather than a wrong id or wrong nodes; the magic
//! says what the file is (`head -1` shows it); `v` lets a later format be refused clearly.
//! Unknown keys are ignored, so a later version 1 writer may add some.

use std::net::SocketAddr;
use std::time::Instant;

use sha1::{Digest, Sha1};

use super::Node;
use crate::dht::bencode::{self, Value};
use crate::dht::id::NodeId;
use crate::dht::krpc::{NodeInfo, decode_nodes, decode_nodes6, encode_nodes, encode_nodes6};
use crate::dht::routing::NodeState;

/// First bytes of every state file.
pub const MAGIC: &[u8] = b"grenache-grape-state\n";

/// The format version this code writes and reads.
pub const VERSION: i64 = 1;

/// Most nodes a snapshot keeps. A rejoin needs a handful (a lookup asks k = 8 at a time);
/// a thousand covers every bucket of a large table, and keeps the file (at most about
/// 38 KB) inside what [`bencode::decode`] reads.
pub const MAX_NODES: usize = 1000;

/// Largest file [`Snapshot::decode`] looks at; adapters need not read past it.
pub const MAX_FILE_LEN: usize = MAGIC.len() + bencode::MAX_INPUT_LEN + DIGEST_LEN;

const DIGEST_LEN: usize = 20;

/// What a restarted node needs: its id and the nodes it knew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    id: NodeId,
    /// IPv4 nodes first, then IPv6, at most [`MAX_NODES`].
    nodes: Vec<NodeInfo>,
}

/// Why a state file was refused. Every case means the same to the caller: start afresh.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Shorter than the magic and the checksum: an empty or cut-off file.
    #[error("truncated ({len} bytes)")]
    Truncated {
        /// Length of the input.
        len: usize,
    },
    /// Longer than [`MAX_FILE_LEN`]: not a file we wrote.
    #[error("too large ({len} bytes, at most {MAX_FILE_LEN})")]
    TooLarge {
        /// Length of the input.
        len: usize,
    },
    /// Does not start with [`MAGIC`]: some other file.
    #[error("not a Grape state file")]
    NotState,
    /// The checksum does not match: the file was cut short or damaged.
    #[error("checksum mismatch (truncated or damaged)")]
    Checksum,
    /// Written by a format version this code does not read.
    #[error("format version {0}, this Grape reads version {VERSION}")]
    Version(i64),
    /// The checksum matches but the content is not a version 1 state.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl Snapshot {
    /// A snapshot of `id` and `nodes`; IPv4 nodes go first, and past [`MAX_NODES`] the rest
    /// are dropped.
    pub fn new(id: NodeId, nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let (mut nodes, v6): (Vec<NodeInfo>, Vec<NodeInfo>) = nodes
            .into_iter()
            .take(MAX_NODES)
            .partition(|n| n.addr.is_ipv4());
        nodes.extend(v6);
        Snapshot { id, nodes }
    }

    /// The node id to keep.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The nodes known when the snapshot was taken: IPv4 first, then IPv6.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Keeps only the nodes whose address `keep` accepts (those a socket can reach, say).
    pub fn retain(&mut self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        self.nodes.retain(|n| keep(&n.addr));
    }

    /// The file's bytes (see the module docs for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.nodes.len() * 38);
        bencode::write_dict(&mut body, |d| {
            d.bytes(b"id", self.id.as_bytes())
                .bytes(b"nodes", &encode_nodes(&self.nodes))
                .bytes(b"nodes6", &encode_nodes6(&self.nodes))
                .int(b"v", VERSION);
        });
        seal(&body)
    }

    /// Reads a state file's bytes; never panics, whatever they are.
    ///
    /// # Errors
    /// [`StateError`] when the bytes are not a whole, undamaged version 1 state file.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, StateError> {
        let body = unseal(bytes)?;
        let dict = bencode::decode(body).map_err(|_| StateError::Malformed("not bencode"))?;
        if dict.as_dict().is_none() {
            return Err(StateError::Malformed("not a dictionary"));
        }
        let version = dict
            .get(b"v")
            .and_then(Value::as_int)
            .ok_or(StateError::Malformed("no version"))?;
        if version != VERSION {
            return Err(StateError::Version(version));
        }
        let id = dict
            .get(b"id")
            .and_then(Value::as_bytes)
            .and_then(NodeId::from_slice)
            .ok_or(StateError::Malformed("no 20-byte id"))?;
        let list = |key: &[u8], decode: fn(&[u8]) -> Option<Vec<NodeInfo>>| match dict.get(key) {
            None => Ok(Vec::new()),
            Some(v) => v
                .as_bytes()
                .and_then(decode)
                .ok_or(StateError::Malformed("bad compact node list")),
        };
        let mut nodes = list(b"nodes", decode_nodes)?;
        nodes.extend(list(b"nodes6", decode_nodes6)?);
        if nodes.len() > MAX_NODES {
            return Err(StateError::Malformed("too many nodes"));
        }
        Ok(Snapshot::new(id, nodes))
    }
}

/// Frames a bencoded `body` as a state file: [`MAGIC`], the body, its checksum.
///
/// [`Snapshot::encode`] uses it; tests and tools use it to build files by hand.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(body);
    let digest = Sha1::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The body of a framed file, once its size, magic and checksum are right.
fn unseal(bytes: &[u8]) -> Result<&[u8], StateError> {
    let len = bytes.len();
    if len > MAX_FILE_LEN {
        return Err(StateError::TooLarge { len });
    }
    let Some(framed) = len.checked_sub(DIGEST_LEN).filter(|n| *n >= MAGIC.len()) else {
        return Err(StateError::Truncated { len });
    };
    let (content, digest) = bytes.split_at(framed);
    let Some(body) = content.strip_prefix(MAGIC) else {
        return Err(StateError::NotState);
    };
    if Sha1::digest(content).as_slice() != digest {
        return Err(StateError::Checksum);
    }
    Ok(body)
}

impl Node {
    /// What a warm restart needs: our id and the good nodes of both routing tables.
    ///
    /// Only good nodes are kept, those that answered us within the last 15 minutes: a
    /// node that only queried us never showed it is reachable (and anyone can send a query
    /// from any id), and one gone quiet may be gone. IPv4 and IPv6 alike, since a node
    /// bound to both keeps two tables.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let good = [&self.table4, &self.table6]
            .into_iter()
            .flat_map(|t| t.iter(now))
            .filter(|(_, state)| *state == NodeState::Good)
            .map(|(info, _)| info);
        Snapshot::new(self.id, good)
    }

    /// Starts from nodes an earlier run knew: they enter the routing tables unverified (so
    /// they are pinged at once and only kept if they answer) and become bootstrap seeds,
    /// so the next [`bootstrap`](Node::bootstrap), even with no seeds of its own, asks them
    /// to let us rejoin and keeps asking while the table is thin.
    ///
    /// The id is not restored here: it is [`Config::id`](super::Config::id), set before
    /// the node is built.
    pub fn restore(&mut self, now: Instant, nodes: &[NodeInfo]) {
        let now = self.tick(now);
        let mut restored = 0usize;
        for node in nodes {
            if !matches!(
                self.table_mut(&node.addr).heard_query(now, *node),
                crate::dht::routing::Insert::Ignored(_)
            ) {
                restored += 1;
                if !self.seeds.contains(&node.addr) {
                    self.seeds.push(node.addr);
                }
            }
        }
        tracing::debug!(restored, offered = nodes.len(), "routing table restored");
    }

    /// Puts `nodes` straight into the routing tables as if each had just answered us, with
    /// no traffic and no pings: lets a simulator build a large network in the state a
    /// long-running one converges to, without paying for every join's lookups. A node
    /// that finds its bucket full waits in the replacement cache, as after a real answer.
    /// Returns how many entered a bucket or a cache.
    #[cfg(feature = "sim")]
    pub fn learn_answered(&mut self, now: Instant, nodes: &[NodeInfo]) -> usize {
        let now = self.tick(now);
        nodes
            .iter()
            .filter(|node| {
                !matches!(
                    self.table_mut(&node.addr).heard_response(now, **node),
                    crate::dht::routing::Insert::Ignored(_)
                )
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};

    use super::*;
    use crate::dht::node::Config;

    #[allow(clippy::disallowed_methods)] // tests need some Instant to start from
    fn t0() -> Instant {
        Instant::now()
    }

    fn node(i: u8, addr: SocketAddr) -> NodeInfo {
        NodeInfo {
            id: NodeId([i; 20]),
            addr,
        }
    }

    fn sample() -> Snapshot {
        Snapshot::new(
            NodeId([7; 20]),
            [
                node(1, SocketAddr::from(([127, 0, 0, 1], 20001))),
                node(2, SocketAddr::from((Ipv6Addr::LOCALHOST, 20002))),
                node(3, SocketAddr::from(([10, 0, 0, 3], 6881))),
            ],
        )
    }

    #[test]
    fn snapshot_round_trips_ipv4_first() {
        let snapshot = sample();

        let decoded = Snapshot::decode(&snapshot.encode());

        assert_eq!(decoded.as_ref(), Ok(&snapshot));
        let ports: Vec<u16> = snapshot.nodes().iter().map(|n| n.addr.port()).collect();
        assert_eq!(ports, [20001, 6881, 20002]);
    }

    #[test]
    fn file_starts_with_the_magic_line() {
        let bytes = sample().encode();

        assert!(bytes.starts_with(MAGIC));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let good = sample().encode();
        let mut flipped = good.clone();
        flipped[MAGIC.len() + 5] ^= 0x10;
        let mut other = good.clone();
        other[0] = b'G';
        let v2 = seal(b"d2:id20:aaaaaaaaaaaaaaaaaaaa1:vi2ee");
        let no_id = seal(b"d1:vi1ee");
        let bad_nodes = seal(b"d2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:abc1:vi1ee");

        assert_eq!(Snapshot::decode(&[]), Err(StateError::Truncated { len: 0 }));
        assert_eq!(
            Snapshot::decode(&good[..good.len() - 1]),
            Err(StateError::Checksum)
        );
        assert_eq!(Snapshot::decode(&flipped), Err(StateError::Checksum));
        assert_eq!(Snapshot::decode(&other), Err(StateError::NotState));
        assert_eq!(Snapshot::decode(&v2), Err(StateError::Version(2)));
        assert!(matches!(
            Snapshot::decode(&no_id),
            Err(StateError::Malformed(_))
        ));
        assert!(matches!(
            Snapshot::decode(&bad_nodes),
            Err(StateError::Malformed(_))
        ));
        assert_eq!(
            Snapshot::decode(&vec![0; MAX_FILE_LEN + 1]),
            Err(StateError::TooLarge {
                len: MAX_FILE_LEN + 1
            })
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let bytes = seal(b"d2:id20:aaaaaaaaaaaaaaaaaaaa5:laterli1ee1:vi1ee");

        let decoded = Snapshot::decode(&bytes);

        assert_eq!(decoded, Ok(Snapshot::new(NodeId([b'a'; 20]), [])));
    }

    #[test]
    fn snapshot_keeps_at_most_max_nodes() {
        let many = (0..MAX_NODES + 5).map(|i| NodeInfo {
            id: NodeId([0; 20]),
            addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1)),
        });

        let snapshot = Snapshot::new(NodeId([1; 20]), many);

        assert_eq!(snapshot.nodes().len(), MAX_NODES);
        assert!(snapshot.encode().len() <= MAX_FILE_LEN);
    }

    #[test]
    fn restored_node_keeps_its_id_pings_the_saved_nodes_and_snapshots_only_good_ones() {
        let t = t0();
        let saved = sample();
        let config = Config {
            id: Some(saved.id()),
            ..Config::default()
        };
        let mut node = Node::new(config, [3; 32], t);

        node.restore(t, saved.nodes());
        let before = node.snapshot(t);
        node.handle_timeout(t);
        let mut pinged = Vec::new();
        while let Some(tx) = node.poll_transmit() {
            pinged.push(tx.to);
        }
        pinged.sort();
        pinged.dedup();

        assert_eq!(node.id(), saved.id());
        assert_eq!(node.routing_table_len(), 3);
        assert_eq!(
            before.nodes(),
            &[],
            "restored nodes are unverified, not good"
        );
        let mut expected: Vec<SocketAddr> = saved.nodes().iter().map(|n| n.addr).collect();
        expected.sort();
        assert_eq!(pinged, expected);
    }

    #[test]
    fn restored_node_that_answers_is_good_and_saved_again() {
        let t = t0();
        let (a_addr, b_addr) = (
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        );
        let mut a = Node::new(Config::default(), [5; 32], t);
        let mut b = Node::new(Config::default(), [6; 32], t);
        b.restore(
            t,
            &[NodeInfo {
                id: a.id(),
                addr: a_addr,
            }],
        );

        b.handle_timeout(t);
        for _ in 0..4 {
            while let Some(tx) = b.poll_transmit() {
                assert_eq!(tx.to, a_addr);
                a.handle_datagram(t, b_addr, &tx.payload);
            }
            while let Some(tx) = a.poll_transmit() {
                b.handle_datagram(t, a_addr, &tx.payload);
            }
        }
        let saved = b.snapshot(t);

        assert_eq!(
            saved.nodes(),
            &[NodeInfo {
                id: a.id(),
                addr: a_addr
            }]
        );
        assert_eq!(Snapshot::decode(&saved.encode()), Ok(saved));
    }

    #[test]
    fn bootstrap_without_seeds_asks_the_restored_nodes() {
        let t = t0();
        let mut node = Node::new(Config::default(), [4; 32], t);
        let saved = sample();
        node.restore(t, saved.nodes());

        let _ = node.bootstrap(t, &[]);
        let mut sent = Vec::new();
        while let Some(tx) = node.poll_transmit() {
            sent.push(tx.to);
        }

        for n in saved.nodes() {
            assert!(sent.contains(&n.addr), "{} not asked: {sent:?}", n.addr);
        }
        assert!(node.poll_timeout().is_some());
    }

    #[cfg(feature = "sim")]
    #[test]
    fn learned_nodes_are_good_at_once_and_cost_no_traffic() {
        let now = t0();
        let known: Vec<NodeInfo> = (1..=5u8)
            .map(|i| node(i, SocketAddr::from(([10, 0, 0, i], 6881))))
            .collect();
        let mut dht = Node::new(Config::default(), [3; 32], now);

        assert_eq!(dht.learn_answered(now, &known), 5);

        assert_eq!(dht.routing_table_len(), 5);
        // Only good nodes are snapshotted: these count as having answered.
        assert_eq!(dht.snapshot(now).nodes().len(), 5);
        assert!(dht.poll_transmit().is_none(), "no ping for a learned node");
    }
}
