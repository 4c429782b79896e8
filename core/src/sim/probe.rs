//! Measures a command's rounds from the datagrams a node exchanges.
//!
//! The node knows its traversal's depth but does not report it, so the simulator mirrors
//! the traversal's bookkeeping from outside: the nodes a command starts from (the routing
//! table's closest) are hop 1, a node first named in an answer from hop `d` is hop `d + 1`,
//! and the rounds are the deepest hop that answered. It is only as exact as that mirror:
//! anonymous bootstrap seeds count as hop 1, and candidates the traversal forgot are not
//! forgotten here.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::dht::event::QueryId;
use crate::dht::id::Key;
use crate::dht::krpc::{Body, Message, Method, NodeInfo};

/// Transaction ids remembered per node; past it the oldest is forgotten.
const MAX_TIDS: usize = 4096;
/// Commands measured at once per node.
const MAX_COMMANDS: usize = 1024;

#[derive(Debug, Default)]
struct Measured {
    /// Hop of every node seen, by address.
    hops: BTreeMap<SocketAddr, u32>,
    rounds: u32,
}

/// Per-node measurement state; empty (and free) while no command is measured.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    /// Our lookup queries in flight: transaction id to target. Node tids count up, so
    /// dropping the smallest past the cap mostly drops the oldest.
    tids: BTreeMap<Vec<u8>, Key>,
    lookups: BTreeMap<Key, Measured>,
    commands: BTreeMap<QueryId, Key>,
}

impl Probe {
    pub(crate) fn is_idle(&self) -> bool {
        self.commands.is_empty()
    }

    /// Looks at a datagram the node sends. With `started`, the command just issued is
    /// tied to the target of the first lookup query among them, and `seeds` gives the
    /// nodes its traversal starts from.
    pub(crate) fn on_send(
        &mut self,
        payload: &[u8],
        started: Option<QueryId>,
        seeds: impl FnOnce(&Key) -> Vec<NodeInfo>,
    ) {
        let Ok(msg) = Message::decode(payload) else {
            return;
        };
        let Body::Query(q) = msg.body else {
            return;
        };
        let target = match q.method {
            Method::FindNode { target } | Method::Get { target, .. } => target,
            Method::GetPeers { info_hash } => info_hash,
            Method::Ping
            | Method::AnnouncePeer { .. }
            | Method::UnannouncePeer { .. }
            | Method::WatchPeers { .. }
            | Method::PeersChanged { .. }
            | Method::Put(_) => return,
        };
        if let Some(query) = started
            && !self.commands.contains_key(&query)
            && self.commands.len() < MAX_COMMANDS
        {
            self.commands.insert(query, target.clone());
            let measured = self.lookups.entry(target.clone()).or_default();
            for seed in seeds(&target) {
                measured.hops.entry(seed.addr).or_insert(1);
            }
        }
        if self.lookups.contains_key(&target) {
            if self.tids.len() >= MAX_TIDS {
                self.tids.pop_first();
            }
            self.tids.insert(msg.tid, target);
        }
    }

    /// Looks at a datagram delivered to the node.
    pub(crate) fn on_receive(&mut self, from: SocketAddr, payload: &[u8]) {
        if self.tids.is_empty() {
            return;
        }
        let Ok(msg) = Message::decode(payload) else {
            return;
        };
        let nodes = match msg.body {
            Body::Response(r) => r.nodes.into_iter().chain(r.nodes6),
            Body::Error(_) => {
                self.tids.remove(&msg.tid);
                return;
            }
            Body::Query(_) => return,
        };
        let Some(target) = self.tids.remove(&msg.tid) else {
            return;
        };
        let Some(measured) = self.lookups.get_mut(&target) else {
            return;
        };
        let hop = measured.hops.get(&from).copied().unwrap_or(1);
        measured.rounds = measured.rounds.max(hop);
        for node in nodes {
            measured
                .hops
                .entry(node.addr)
                .or_insert(hop.saturating_add(1));
        }
    }

    /// A command ended: its rounds, if it was measured. The target's state is dropped
    /// once no measured command uses it.
    pub(crate) fn on_finished(&mut self, query: QueryId) -> Option<u32> {
        let target = self.commands.remove(&query)?;
        let rounds = self.lookups.get(&target).map_or(0, |m| m.rounds);
        if !self.commands.values().any(|t| *t == target) {
            self.lookups.remove(&target);
            self.tids.retain(|_, t| *t != target);
        }
        Some(rounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::{ID_LEN, NodeId};
    use crate::dht::krpc::{Query, Response};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn info(port: u16) -> NodeInfo {
        NodeInfo {
            id: NodeId([u8::try_from(port % 256).unwrap_or(0); ID_LEN]),
            addr: addr(port),
        }
    }

    fn target() -> Key {
        Key::new(b"service").expect("non-empty")
    }

    fn query(tid: u8) -> Vec<u8> {
        Message {
            tid: vec![tid],
            version: None,
            read_only: false,
            body: Body::Query(Query {
                id: NodeId([0; ID_LEN]),
                method: Method::GetPeers {
                    info_hash: target(),
                },
            }),
        }
        .encode()
    }

    fn response(tid: u8, from: u16, nodes: &[NodeInfo]) -> Vec<u8> {
        let mut r = Response::new(info(from).id);
        r.nodes = nodes.to_vec();
        Message {
            tid: vec![tid],
            version: None,
            read_only: false,
            body: Body::Response(r),
        }
        .encode()
    }

    #[test]
    fn rounds_are_the_deepest_hop_that_answered() {
        let mut p = Probe::default();
        let q = QueryId(1);
        p.on_send(&query(1), Some(q), |_| vec![info(1)]);

        p.on_receive(addr(1), &response(1, 1, &[info(2)]));
        p.on_send(&query(2), None, |_| Vec::new());
        p.on_receive(addr(2), &response(2, 2, &[info(3), info(1)]));
        p.on_send(&query(3), None, |_| Vec::new());
        p.on_receive(addr(3), &response(3, 3, &[]));

        assert_eq!(p.on_finished(q), Some(3));
        assert!(p.is_idle());
    }

    #[test]
    fn seeds_named_later_stay_at_hop_one() {
        let mut p = Probe::default();
        let q = QueryId(1);
        p.on_send(&query(1), Some(q), |_| vec![info(1), info(2)]);

        p.on_receive(addr(1), &response(1, 1, &[info(2)]));
        p.on_send(&query(2), None, |_| Vec::new());
        p.on_receive(addr(2), &response(2, 2, &[]));

        assert_eq!(p.on_finished(q), Some(1));
    }

    #[test]
    fn unmeasured_commands_and_stray_answers_are_ignored() {
        let mut p = Probe::default();

        p.on_receive(addr(9), &response(9, 9, &[info(4)]));
        p.on_send(&query(1), None, |_| vec![info(1)]);

        assert_eq!(p.on_finished(QueryId(5)), None);
        assert!(p.is_idle());
    }
}
