//! Watches between our nodes: a node that follows a name subscribes with the nodes storing
//! it (`watch_peers`), and they tell it (`peers_changed`) when the name's set of peers
//! changes, so a change reaches watchers in one round trip instead of at the next poll.
//!
//! Only nodes whose KRPC `v` says they speak it are sent `watch_peers` (Node Grapes do not);
//! the caller renews each watch with a fresh lookup well within [`WATCH_TTL`], which also
//! covers changes on nodes that never notify (docs/design.md, "Watch").

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::rpc::{Purpose, Resend};
use super::{Kind, Node, Store, closest_speakers};
#[cfg(test)]
use super::{WATCH_SINCE, speaks};
use crate::dht::event::{Event, QueryId};
use crate::dht::id::{Key, NodeId};
use crate::dht::krpc::{ErrorReply, Method, NodeInfo, code};
use crate::dht::traversal::Traversal;

/// How long a `watch_peers` subscription lasts unless renewed.
pub const WATCH_TTL: Duration = Duration::from_secs(60);
/// Subscriptions one source IP may hold here: a Grape watching this many names, all
/// stored on us, still fits.
pub const MAX_WATCHES_PER_SOURCE: usize = 4096;
/// Subscriptions held here in all.
pub const MAX_WATCHES: usize = 65_536;

/// Who watches which name here, each until its expiry.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    by_key: BTreeMap<Key, BTreeMap<SocketAddr, Instant>>,
    per_source: BTreeMap<IpAddr, usize>,
    total: usize,
}

impl Watchers {
    /// Subscribes `from` to `key` until `now + WATCH_TTL`, or renews it.
    fn add(&mut self, now: Instant, key: Key, from: SocketAddr) -> Result<(), ErrorReply> {
        let expires = now + WATCH_TTL;
        if let Some(at) = self.by_key.get_mut(&key).and_then(|w| w.get_mut(&from)) {
            *at = expires;
            return Ok(());
        }
        let mine = self.per_source.get(&from.ip()).copied().unwrap_or(0);
        if mine >= MAX_WATCHES_PER_SOURCE || self.total >= MAX_WATCHES {
            return Err(ErrorReply {
                code: code::SERVER,
                message: "too many watches".into(),
            });
        }
        self.by_key.entry(key).or_default().insert(from, expires);
        *self.per_source.entry(from.ip()).or_default() += 1;
        self.total += 1;
        Ok(())
    }

    /// The unexpired watchers of `key`.
    fn of(&self, now: Instant, key: &Key) -> Vec<SocketAddr> {
        self.by_key.get(key).map_or_else(Vec::new, |w| {
            w.iter()
                .filter(|(_, at)| **at > now)
                .map(|(a, _)| *a)
                .collect()
        })
    }

    /// Drops expired subscriptions (a scan; run at the maintenance interval).
    pub(super) fn expire(&mut self, now: Instant) {
        let mut gone: Vec<IpAddr> = Vec::new();
        self.by_key.retain(|_, watchers| {
            watchers.retain(|addr, at| {
                let live = *at > now;
                if !live {
                    gone.push(addr.ip());
                }
                live
            });
            !watchers.is_empty()
        });
        for ip in gone {
            self.total -= 1;
            if let Some(n) = self.per_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&ip);
                }
            }
        }
    }

    /// Subscriptions held, expired ones included until the next [`Watchers::expire`].
    pub(super) fn len(&self) -> usize {
        self.total
    }
}

impl Node {
    /// Follows the peers of `info_hash`: looks them up like [`get_peers`](Node::get_peers)
    /// (ending with [`Outcome::Peers`](crate::dht::event::Outcome::Peers)) and subscribes with
    /// the closest nodes that speak `watch_peers`. From then on a change of the set, stored
    /// here or notified by them, yields [`Event::PeersChanged`], until
    /// [`unwatch`](Node::unwatch). Call it again within [`WATCH_TTL`] to renew.
    pub fn watch(&mut self, now: Instant, info_hash: Key) -> QueryId {
        let now = self.tick(now);
        self.watching.insert(info_hash.clone());
        let kind = Kind::store(Store::Watch {
            speakers: BTreeSet::new(),
        });
        self.start(now, info_hash, kind, true)
    }

    /// Stops reporting changes of `info_hash`; subscriptions elsewhere lapse by themselves.
    pub fn unwatch(&mut self, info_hash: &Key) {
        self.watching.remove(info_hash);
    }

    /// Names followed with [`watch`](Node::watch), and subscriptions others hold here.
    pub fn watches(&self) -> (usize, usize) {
        (self.watching.len(), self.watchers.len())
    }

    /// Answers `watch_peers` from `from`.
    pub(super) fn accept_watch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        info_hash: Key,
        token: &[u8],
    ) -> Result<(), ErrorReply> {
        if !self.tokens.check(from.ip(), token) {
            return Err(ErrorReply {
                code: code::PROTOCOL,
                message: "bad token".into(),
            });
        }
        self.watchers.add(now, info_hash, from)
    }

    /// A storing node says the peers of `info_hash` changed.
    pub(super) fn on_peers_changed(&mut self, info_hash: Key) {
        if self.watching.contains(&info_hash) {
            self.push_event(Event::PeersChanged { info_hash });
        }
    }

    /// Reports what the peer store changed: an event for names we watch, `peers_changed`
    /// to the nodes that watch them here. Runs before any output is handed over, so every
    /// path that changes the store (announce, unannounce, expiry) goes through it.
    pub(super) fn notify_changes(&mut self) {
        if !self.peers.has_changed() {
            return;
        }
        let mut keys = self.peers.take_changed();
        if self.watching.is_empty() && self.watchers.len() == 0 {
            return;
        }
        keys.sort_unstable();
        keys.dedup();
        let now = self.last_now;
        for key in keys {
            let Some(key) = Key::new(&key) else { continue };
            for to in self.watchers.of(now, &key) {
                let method = Method::PeersChanged {
                    info_hash: key.clone(),
                };
                self.send_query(now, to, None, method, Purpose::Notify, Resend::Never);
            }
            self.on_peers_changed(key);
        }
    }
}

/// The `watch_peers` queries ending a watch's traversal.
pub(super) fn subscriptions(
    traversal: &Traversal,
    k: usize,
    speakers: &BTreeSet<NodeId>,
) -> Vec<(NodeInfo, Method)> {
    let info_hash = traversal.target();
    closest_speakers(traversal, k, speakers)
        .map(|(node, token)| {
            let method = Method::WatchPeers {
                info_hash: info_hash.clone(),
                token,
            };
            (node, method)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn key(n: usize) -> Key {
        Key::new(format!("svc{n}").as_bytes()).expect("short key")
    }

    #[test]
    fn only_our_newer_nodes_are_asked_to_notify() {
        assert!(speaks(Some(b"GR\x00\x02"), WATCH_SINCE));
        assert!(speaks(Some(b"GR\x01\x00"), WATCH_SINCE));
        assert!(!speaks(Some(b"GR\x00\x01"), WATCH_SINCE));
        // Node Grapes (bittorrent-dht) and other clients never send a `GR` version.
        assert!(!speaks(None, WATCH_SINCE));
        assert!(!speaks(Some(b"LT\x01\x02"), WATCH_SINCE));
    }

    #[test]
    fn subscriptions_are_bounded_per_source_and_expire() {
        let t = epoch();
        let mut w = Watchers::default();
        let a = SocketAddr::from(([10, 0, 0, 1], 1));
        let b = SocketAddr::from(([10, 0, 0, 2], 1));
        for n in 0..MAX_WATCHES_PER_SOURCE {
            assert_eq!(w.add(t, key(n), a), Ok(()));
        }

        let renewed = w.add(t, key(0), a);
        let refused = w.add(t, key(MAX_WATCHES_PER_SOURCE), a);
        let other_source = w.add(t, key(0), b);
        let live = w.of(t, &key(0));
        w.expire(t + WATCH_TTL);

        assert_eq!(renewed, Ok(()));
        assert_eq!(refused.map_err(|e| e.code), Err(code::SERVER));
        assert_eq!(other_source, Ok(()));
        assert_eq!(live, vec![a, b]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.of(t, &key(0)), Vec::<SocketAddr>::new());
    }
}
