//! Answers to the queries other nodes send us (BEP 5, BEP 44).

use std::net::SocketAddr;
use std::time::Instant;

use super::{DropReason, Node, VERSION};
use crate::dht::bep44::{ImmutableItem, Item, MutableItem, PutError, Target};
use crate::dht::id::{ID_LEN, Key};
use crate::dht::krpc::{
    Body, DecodeError, DecodeErrorKind, ErrorReply, Message, Method, NodeInfo, PutArgs, Query,
    Response, code,
};

/// Peers per `get_peers` answer, so the datagram stays within a common MTU.
const MAX_VALUES_V4: usize = 100;
const MAX_VALUES_V6: usize = 50;

impl Node {
    pub(super) fn handle_query(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: Vec<u8>,
        read_only: bool,
        query: Query,
    ) {
        self.stats.queries_in.bump(&query.method);
        if self.config.read_only {
            // BEP 43: a read-only node does not answer.
            self.stats.drop(DropReason::ReadOnly);
            return;
        }
        if query.id == self.id {
            self.stats.drop(DropReason::OwnId);
            return;
        }
        if !read_only {
            self.heard(
                now,
                NodeInfo {
                    id: query.id,
                    addr: from,
                },
                false,
            );
        }
        let mut r = Response::new(self.id);
        let result: Result<(), ErrorReply> = match query.method {
            Method::Ping => Ok(()),
            Method::FindNode { target } => {
                r.nodes = self.nodes_to_name(now, &from, target.as_bytes());
                Ok(())
            }
            Method::GetPeers { info_hash } => {
                r.token = Some(self.tokens.issue(from.ip()));
                let max = if from.is_ipv4() {
                    MAX_VALUES_V4
                } else {
                    MAX_VALUES_V6
                };
                r.values = self
                    .peers
                    .get(now, &info_hash, self.config.max_peers_per_key)
                    .into_iter()
                    // A loopback address means "this host": only a local querier can use it.
                    .filter(|p| !p.ip().is_loopback() || from.ip().is_loopback())
                    .take(max)
                    .collect();
                r.nodes = self.nodes_to_name(now, &from, info_hash.as_bytes());
                Ok(())
            }
            Method::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                let port = if implied_port { from.port() } else { port };
                self.sender_peer(from, port, &token)
                    .map(|peer| self.store_announce(now, info_hash, peer))
            }
            Method::UnannouncePeer {
                info_hash,
                port,
                token,
            } => self.sender_peer(from, port, &token).and_then(|peer| {
                if self.peers.remove(&info_hash, peer) {
                    if let Some(q) = &mut self.peer_quota {
                        q.forget(peer.ip(), &(info_hash, peer));
                    }
                    Ok(())
                } else {
                    Err(error(
                        code::PROTOCOL,
                        "no such peer announced from your address",
                    ))
                }
            }),
            Method::WatchPeers { info_hash, token } => {
                self.accept_watch(now, from, info_hash, &token)
            }
            Method::PeersChanged { info_hash } => {
                self.on_peers_changed(info_hash);
                Ok(())
            }
            Method::Get { target, seq } => {
                r.token = Some(self.tokens.issue(from.ip()));
                r.nodes = self.nodes_to_name(now, &from, target.as_bytes());
                let item = <[u8; ID_LEN]>::try_from(target.as_bytes())
                    .ok()
                    .and_then(|t| self.items.get(now, &Target(t)));
                match item {
                    Some(Item::Immutable(i)) => r.v = Some(i.v().to_vec()),
                    Some(Item::Mutable(m)) => {
                        r.k = Some(*m.k());
                        r.seq = Some(m.seq());
                        // BEP 44: skip the value when the querier already has this seq.
                        if seq.is_none_or(|s| s < m.seq()) {
                            r.v = Some(m.v().to_vec());
                            r.sig = Some(*m.sig());
                        }
                    }
                    None => {}
                }
                Ok(())
            }
            Method::Put(args) => {
                if self.tokens.check(from.ip(), &args.token) {
                    self.store_put(now, from, args)
                } else {
                    Err(error(code::PROTOCOL, "bad token"))
                }
            }
        };
        let body = match result {
            Ok(()) => Body::Response(r),
            Err(e) => {
                self.stats.errors_out += 1;
                Body::Error(e)
            }
        };
        self.reply(now, from, tid, body);
    }

    /// The nodes an answer names: the closest of the querier's family, except those that
    /// have never answered us and let a query of ours pass its soft deadline. Naming them
    /// would only make the querier wait out the same soft timeouts we did (a NATed node,
    /// or one a flood planted, spreads no further). A node that has answered before is
    /// still named after it missed a query: a loss burst may have cut it off for a while,
    /// and hiding it then hid the nodes that store a name (the whole-system simulator found
    /// lookups missing services that way).
    fn nodes_to_name(&self, now: Instant, from: &SocketAddr, key: &[u8]) -> Vec<NodeInfo> {
        let silent = &self.silent;
        self.table(from)
            .closest_except_unanswered(key, self.config.k, |n| silent.contains(now, &n.addr))
    }

    /// The peer an `announce_peer` or `unannounce_peer` speaks of: always the sender's own
    /// IP, which the token proves, so nobody can add or withdraw another host's peers.
    fn sender_peer(
        &self,
        from: SocketAddr,
        port: u16,
        token: &[u8],
    ) -> Result<SocketAddr, ErrorReply> {
        if !self.tokens.check(from.ip(), token) {
            Err(error(code::PROTOCOL, "bad token"))
        } else if port == 0 {
            Err(error(code::PROTOCOL, "bad port"))
        } else {
            Ok(SocketAddr::new(from.ip(), port))
        }
    }

    /// Stores an announce; past its source's cap, the source's own stalest announce goes.
    fn store_announce(&mut self, now: Instant, info_hash: Key, peer: SocketAddr) {
        self.peers.add(now, &info_hash, peer);
        let Some(quota) = &mut self.peer_quota else {
            return;
        };
        if let Some((key, old)) = quota.record(now, peer.ip(), (info_hash, peer))
            && self.peers.remove(&key, old)
        {
            quota.note_evicted();
        }
    }

    fn store_put(
        &mut self,
        now: Instant,
        from: SocketAddr,
        args: PutArgs,
    ) -> Result<(), ErrorReply> {
        let item = match (args.k, args.sig, args.seq) {
            (None, None, None) => ImmutableItem::new(args.v).map(Item::Immutable),
            (Some(k), Some(sig), Some(seq)) => {
                MutableItem::new(k, args.salt.unwrap_or_default(), seq, args.v, sig)
                    .map(Item::Mutable)
            }
            _ => return Err(error(code::PROTOCOL, "put needs k, sig and seq together")),
        };
        let item = item.map_err(|e: PutError| error(e.code(), &e.to_string()))?;
        let target = item.target();
        self.items
            .put(now, item, args.cas)
            .map_err(|e: PutError| error(e.code(), &e.to_string()))?;
        // Past its source's cap, the source's own stalest item goes.
        if let Some(quota) = &mut self.item_quota
            && let Some(old) = quota.record(now, from.ip(), target)
            && self.items.remove(&old)
        {
            quota.note_evicted();
        }
        Ok(())
    }

    /// Answers a malformed query with 203 (or 204 for an unknown method), when it had a tid.
    pub(super) fn answer_malformed(&mut self, now: Instant, from: SocketAddr, e: &DecodeError) {
        let (Some(tid), true) = (&e.tid, e.was_query) else {
            return;
        };
        if self.config.read_only {
            return;
        }
        let reply = if matches!(e.kind, DecodeErrorKind::UnknownMethod) {
            error(code::METHOD_UNKNOWN, "method unknown")
        } else {
            error(code::PROTOCOL, e.kind.as_str())
        };
        self.stats.errors_out += 1;
        self.reply(now, from, tid.clone(), Body::Error(reply));
    }

    /// Sends an answer, if the reply byte budgets allow: the node must not be a reflection
    /// amplifier for whoever spoofs a victim's address.
    fn reply(&mut self, now: Instant, to: SocketAddr, tid: Vec<u8>, body: Body) {
        let msg = Message {
            tid,
            version: Some(VERSION.to_vec()),
            read_only: false,
            body,
        };
        let payload = msg.encode();
        if !self.shield.may_reply(now, to.ip(), payload.len()) {
            self.stats.drop(DropReason::ReplyBudget);
            return;
        }
        self.transmit(to, payload);
    }
}

fn error(code: i64, message: &str) -> ErrorReply {
    ErrorReply {
        code,
        message: message.to_string(),
    }
}
