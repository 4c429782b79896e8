//! The iterative lookup of BEP 5, as pure state: which node to ask next, and when to stop.
//!
//! One traversal serves `find_node`, `get_peers` and BEP-44 `get`: they differ only in the
//! query sent and in what is collected from the answers, which is the caller's business.
//!
//! A query past its *soft* deadline stops counting against `alpha`, so a lost packet costs
//! one soft timeout instead of the full hard timeout (libtorrent's "short timeout"); the
//! node may still answer and is still used if it does. Once any node has answered, a query
//! that also missed the soft deadline of its resend no longer holds up the end of the
//! traversal: the nodes that answered settle it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::dht::id::{Distance, Key, NodeId};
use crate::dht::krpc::NodeInfo;

/// Candidates kept per traversal, closest first; farther ones are forgotten.
const MAX_CANDIDATES: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    /// `late`: soft deadlines passed (0: on time; 1: resent once; 2 or more: given up on
    /// unless nobody else answers).
    InFlight {
        late: u8,
    },
    Responded {
        token: Option<Vec<u8>>,
    },
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    addr: SocketAddr,
    /// Hops from the start: seeds are 1, nodes they name are 2, ...
    depth: u32,
    state: State,
}

/// The state of one iterative lookup.
#[derive(Debug)]
pub(crate) struct Traversal {
    target: Key,
    k: usize,
    alpha: usize,
    candidates: BTreeMap<(Distance, NodeId), Candidate>,
    /// Non-stale queries in flight to known ids.
    in_flight: usize,
    /// Non-stale queries in flight to addresses whose id we do not know yet (bootstrap seeds).
    anonymous_in_flight: usize,
    /// Queries to bootstrap seeds past their soft deadline.
    anonymous_stale: usize,
    /// Deepest hop that answered.
    rounds: u32,
}

impl Traversal {
    /// Starts a lookup of `target` from `seeds` (usually the routing table's closest nodes).
    pub(crate) fn new(target: Key, k: usize, alpha: usize, seeds: &[NodeInfo]) -> Self {
        let mut t = Traversal {
            target,
            k: k.max(1),
            alpha: alpha.max(1),
            candidates: BTreeMap::new(),
            in_flight: 0,
            anonymous_in_flight: 0,
            anonymous_stale: 0,
            rounds: 0,
        };
        for seed in seeds {
            t.add(*seed, 1);
        }
        t
    }

    pub(crate) fn target(&self) -> &Key {
        &self.target
    }

    /// Changes how many queries may be in flight at once (at least one). Queries already
    /// in flight past the new bound are not recalled; no new one goes out until they end.
    pub(crate) fn set_alpha(&mut self, alpha: usize) {
        self.alpha = alpha.max(1);
    }

    /// The closest candidate not known to have failed: where the lookup stands.
    pub(crate) fn nearest(&self) -> Option<NodeId> {
        self.candidates
            .iter()
            .find(|(_, c)| c.state != State::Failed)
            .map(|((_, id), _)| *id)
    }

    /// Hops the lookup needed: the depth of the deepest node that answered.
    pub(crate) fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Records a query sent to an address of unknown id (a bootstrap seed).
    pub(crate) fn anonymous_sent(&mut self) {
        self.anonymous_in_flight += 1;
    }

    /// An anonymous query passed its soft deadline (call once per query).
    pub(crate) fn anonymous_stale(&mut self) {
        if self.anonymous_in_flight > 0 {
            self.anonymous_in_flight -= 1;
            self.anonymous_stale += 1;
        }
    }

    /// An anonymous query ended (answered or failed); `stale` if it had passed its soft
    /// deadline. Its answer, if any, comes through [`Traversal::on_response`] as well.
    pub(crate) fn anonymous_done(&mut self, stale: bool) {
        let count = if stale {
            &mut self.anonymous_stale
        } else {
            &mut self.anonymous_in_flight
        };
        *count = count.saturating_sub(1);
    }

    /// The next node to ask, if the lookup may send a query now. Marks it in flight.
    pub(crate) fn next_query(&mut self) -> Option<NodeInfo> {
        if self.in_flight >= self.alpha || self.is_done() {
            return None;
        }
        let mut seen_responded = 0;
        for ((_, id), c) in self.candidates.iter_mut() {
            match c.state {
                State::Fresh => {
                    c.state = State::InFlight { late: 0 };
                    self.in_flight += 1;
                    return Some(NodeInfo {
                        id: *id,
                        addr: c.addr,
                    });
                }
                State::Responded { .. } => {
                    seen_responded += 1;
                    if seen_responded >= self.k {
                        return None;
                    }
                }
                State::InFlight { .. } | State::Failed => {}
            }
        }
        None
    }

    /// A node answered: learn the nodes it named and keep its token.
    pub(crate) fn on_response(
        &mut self,
        from: NodeInfo,
        nodes: &[NodeInfo],
        token: Option<Vec<u8>>,
    ) {
        let key = (from.id.distance(self.target.as_bytes()), from.id);
        let depth = match self.candidates.get_mut(&key) {
            Some(c) => {
                if c.state == (State::InFlight { late: 0 }) {
                    self.in_flight -= 1;
                }
                c.state = State::Responded { token };
                c.depth
            }
            None => {
                // An anonymous seed (or a node we had forgotten): it counts as a first hop.
                self.candidates.insert(
                    key,
                    Candidate {
                        addr: from.addr,
                        depth: 1,
                        state: State::Responded { token },
                    },
                );
                1
            }
        };
        self.rounds = self.rounds.max(depth);
        for node in nodes {
            if node.id != from.id {
                self.add(*node, depth + 1);
            }
        }
        self.trim();
    }

    /// Takes `node`, which missed a query of ours lately, as a long shot: the caller asks
    /// it once, with no resend, and nothing waits for it (it counts as a query given up on,
    /// so it holds up the end only while nobody else has answered). If it answers in time,
    /// it is used like any other node. `named_by` is the node that named it, `None` for a
    /// node from our own table. False (and nothing to send) if the node is known already,
    /// or too far to be kept.
    pub(crate) fn long_shot(&mut self, node: NodeInfo, named_by: Option<&NodeId>) -> bool {
        let depth = match named_by {
            Some(by) => {
                let key = (by.distance(self.target.as_bytes()), *by);
                self.candidates.get(&key).map_or(1, |c| c.depth) + 1
            }
            None => 1,
        };
        let key = (node.id.distance(self.target.as_bytes()), node.id);
        if self.candidates.contains_key(&key) {
            return false;
        }
        self.candidates.insert(
            key,
            Candidate {
                addr: node.addr,
                depth,
                state: State::InFlight { late: 2 },
            },
        );
        self.trim();
        self.candidates.contains_key(&key)
    }

    /// A query passed a soft deadline: the first lets another query go out meanwhile.
    pub(crate) fn on_stale(&mut self, id: &NodeId) {
        let key = (id.distance(self.target.as_bytes()), *id);
        if let Some(c) = self.candidates.get_mut(&key)
            && let State::InFlight { late } = c.state
        {
            if late == 0 {
                self.in_flight -= 1;
            }
            c.state = State::InFlight {
                late: late.saturating_add(1),
            };
        }
    }

    /// A query failed for good (hard timeout or an error reply).
    pub(crate) fn on_failure(&mut self, id: &NodeId) {
        let key = (id.distance(self.target.as_bytes()), *id);
        if let Some(c) = self.candidates.get_mut(&key)
            && let State::InFlight { late } = c.state
        {
            if late == 0 {
                self.in_flight -= 1;
            }
            c.state = State::Failed;
        }
    }

    /// True once the `k` closest live nodes have all answered, or nobody is left to ask
    /// or wait for.
    ///
    /// A slow (late) query is skipped while counting the `k` closest. Once any node has
    /// answered, a query that also missed the soft deadline of its resend no longer holds up
    /// the end at all: the nodes that answered settle the lookup, and a silent node costs
    /// a few soft timeouts, never the hard one. One resend is still waited for, so that one
    /// lost packet (or a host too loaded to answer within one soft timeout) does not leave
    /// out a node that holds the answer. A lookup that nobody has answered yet waits for all
    /// its slow queries.
    pub(crate) fn is_done(&self) -> bool {
        let mut responded = 0;
        let mut resent = false;
        let mut slow = self.anonymous_stale > 0;
        for c in self.candidates.values() {
            match c.state {
                State::Responded { .. } => {
                    responded += 1;
                    if responded >= self.k {
                        return true;
                    }
                }
                State::Fresh | State::InFlight { late: 0 } => return false,
                State::InFlight { late: 1 } => resent = true,
                State::InFlight { .. } => slow = true,
                State::Failed => {}
            }
        }
        self.anonymous_in_flight == 0 && !resent && (responded > 0 || !slow)
    }

    /// The `n` closest nodes that answered, with the token each gave.
    pub(crate) fn closest_responded(&self, n: usize) -> Vec<(NodeInfo, Option<Vec<u8>>)> {
        self.candidates
            .iter()
            .filter_map(|((_, id), c)| match &c.state {
                State::Responded { token } => Some((
                    NodeInfo {
                        id: *id,
                        addr: c.addr,
                    },
                    token.clone(),
                )),
                _ => None,
            })
            .take(n)
            .collect()
    }

    fn add(&mut self, node: NodeInfo, depth: u32) {
        let key = (node.id.distance(self.target.as_bytes()), node.id);
        self.candidates.entry(key).or_insert(Candidate {
            addr: node.addr,
            depth,
            state: State::Fresh,
        });
    }

    /// Forgets the farthest candidates past the cap, keeping the in-flight count honest.
    fn trim(&mut self) {
        while self.candidates.len() > MAX_CANDIDATES {
            let Some((_, c)) = self.candidates.pop_last() else {
                break;
            };
            if c.state == (State::InFlight { late: 0 }) {
                self.in_flight -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::ID_LEN;

    fn node(b: u8) -> NodeInfo {
        NodeInfo {
            id: NodeId([b; ID_LEN]),
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + u16::from(b))),
        }
    }

    fn target() -> Key {
        Key::from(NodeId([0; ID_LEN]))
    }

    #[test]
    fn asks_closest_first_and_at_most_alpha() {
        let mut t = Traversal::new(target(), 2, 2, &[node(9), node(1), node(5)]);
        assert_eq!(t.next_query().map(|n| n.id), Some(node(1).id));
        assert_eq!(t.next_query().map(|n| n.id), Some(node(5).id));
        assert_eq!(t.next_query(), None, "alpha reached");
    }

    #[test]
    fn ends_when_k_closest_answered() {
        let mut t = Traversal::new(target(), 3, 3, &[node(8), node(4)]);
        let a = t.next_query().expect("first");
        let b = t.next_query().expect("second");
        t.on_response(a, &[node(2)], None);
        assert!(!t.is_done(), "node 2 is closer and not yet asked");
        let c = t.next_query().expect("node 2");
        assert_eq!(c.id, node(2).id);
        t.on_response(c, &[], Some(b"tok".to_vec()));
        assert!(
            !t.is_done(),
            "node 8 still in flight and among the 3 closest live"
        );
        t.on_response(b, &[], None);
        assert!(t.is_done());
        let best = t.closest_responded(1);
        assert_eq!(best[0].0.id, node(2).id);
        assert_eq!(best[0].1.as_deref(), Some(&b"tok"[..]));
        assert_eq!(t.rounds(), 2);
    }

    #[test]
    fn stale_queries_free_a_slot_and_do_not_block_the_end() {
        let mut t = Traversal::new(target(), 1, 1, &[node(1), node(2)]);
        let a = t.next_query().expect("first");
        assert_eq!(t.next_query(), None);
        t.on_stale(&a.id);
        let b = t.next_query().expect("slot freed");
        t.on_response(b, &[], None);
        assert!(
            t.is_done(),
            "with k answers a slow query does not hold up the end"
        );
    }

    #[test]
    fn without_any_answer_slow_queries_are_waited_for() {
        let mut t = Traversal::new(target(), 8, 3, &[node(1), node(2)]);
        let a = t.next_query().expect("first");
        let b = t.next_query().expect("second");
        t.on_stale(&a.id);
        t.on_stale(&b.id);
        assert!(!t.is_done(), "nobody answered yet: wait for the slow ones");
        t.on_failure(&b.id);
        assert!(!t.is_done(), "a may still answer");
        t.on_response(a, &[], Some(b"tok".to_vec()));
        assert!(t.is_done());
        assert_eq!(t.closest_responded(8).len(), 1);
    }

    #[test]
    fn once_a_node_answered_silent_ones_do_not_hold_up_the_end() {
        // Fewer than k nodes answer: the rest are silent (NATed or gone).
        let mut t = Traversal::new(target(), 8, 3, &[node(1), node(2), node(3)]);
        let a = t.next_query().expect("first");
        let b = t.next_query().expect("second");
        let c = t.next_query().expect("third");
        t.on_response(c, &[node(4)], None);
        assert!(!t.is_done(), "a, b in flight and 4 not asked");
        let d = t.next_query().expect("node 4");
        for _ in 0..2 {
            t.on_stale(&a.id);
            t.on_stale(&b.id);
        }
        assert!(!t.is_done(), "4 not yet past its soft deadline");
        t.on_stale(&d.id);
        assert!(!t.is_done(), "4 is resent: wait for that once");
        t.on_stale(&d.id);
        assert!(t.is_done(), "the answer of 3 settles it");
        t.on_response(a, &[], None);
        assert_eq!(
            t.closest_responded(8).len(),
            2,
            "a late answer still counts"
        );
    }

    #[test]
    fn a_slow_seed_does_not_hold_up_the_end_once_a_node_answered() {
        let mut t = Traversal::new(target(), 8, 3, &[node(1)]);
        t.anonymous_sent();
        let a = t.next_query().expect("first");
        t.on_response(a, &[], None);
        assert!(!t.is_done(), "the seed may still answer in time");
        t.anonymous_stale();
        assert!(t.is_done());
        t.anonymous_done(true);
        assert!(t.is_done());
    }

    #[test]
    fn a_long_shot_never_holds_up_the_end_but_its_answer_is_used() {
        let mut t = Traversal::new(target(), 2, 3, &[node(5)]);
        assert!(t.long_shot(node(1), None), "asked once");
        assert!(!t.long_shot(node(1), None), "not twice");
        assert!(
            !t.long_shot(node(5), None),
            "a known node is asked the usual way"
        );
        let a = t.next_query().expect("node 5");
        assert_eq!(a.id, node(5).id, "the long shot is not queued again");
        t.on_response(a, &[], None);
        assert!(
            t.is_done(),
            "node 5's answer settles it; nothing waits for node 1"
        );

        let mut t = Traversal::new(target(), 2, 3, &[node(5)]);
        assert!(t.long_shot(node(1), None));
        let a = t.next_query().expect("node 5");
        t.on_response(node(1), &[node(2)], None);
        assert!(!t.is_done(), "node 2, which the long shot named, is asked");
        assert_eq!(t.next_query().map(|n| n.id), Some(node(2).id));
        t.on_response(a, &[], None);
        t.on_response(node(2), &[], None);
        assert!(t.is_done());
        let best: Vec<NodeId> = t.closest_responded(2).iter().map(|(n, _)| n.id).collect();
        assert_eq!(best, vec![node(1).id, node(2).id]);
        assert_eq!(t.rounds(), 2);
    }

    #[test]
    fn a_long_shot_is_waited_for_only_while_nobody_answered() {
        let mut t = Traversal::new(target(), 8, 3, &[node(5)]);
        assert!(t.long_shot(node(1), Some(&node(9).id)));
        let a = t.next_query().expect("node 5");
        t.on_failure(&a.id);
        assert!(!t.is_done(), "the long shot is all that is left");
        t.on_failure(&node(1).id);
        assert!(t.is_done());
    }

    #[test]
    fn failures_end_a_lookup_with_nobody_left() {
        let mut t = Traversal::new(target(), 8, 3, &[node(1)]);
        let a = t.next_query().expect("first");
        t.on_failure(&a.id);
        assert!(t.is_done());
        assert!(t.closest_responded(8).is_empty());
    }

    #[test]
    fn waits_for_anonymous_seeds() {
        let mut t = Traversal::new(target(), 8, 3, &[]);
        t.anonymous_sent();
        assert!(!t.is_done());
        t.anonymous_done(false);
        t.on_response(node(3), &[node(1)], None);
        assert!(!t.is_done());
        assert_eq!(t.next_query().map(|n| n.id), Some(node(1).id));
    }
}
