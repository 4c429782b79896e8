//! Our outstanding KRPC queries: transaction ids, deadlines, and round-trip estimates.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dht::event::QueryId;
use crate::dht::id::NodeId;

/// Queries in flight at once, across all lookups; past it lookups wait for room.
pub(crate) const MAX_PENDING: usize = 1 << 16;

/// Times a lookup query is sent again, each after twice the wait of the last: with 10%
/// loss each way, a node is then given up on (at the hard timeout) once in 150 queries
/// rather than once in 5.
const RESENDS: u8 = 2;

/// The shortest soft timeout, however fast the measured round trips.
///
/// Grenache's DHTs run on LANs and in data centres, where a round trip takes well under a
/// millisecond and a lost packet is what a lookup mostly waits for: this floor is what one
/// lost packet costs. It stays well above the few milliseconds a loaded host may take to
/// answer, so that a query that was not lost is seldom sent twice (and if it is, the
/// second answer is only a duplicate). On the open internet, round trips set the timeout.
const MIN_SOFT_TIMEOUT: Duration = Duration::from_millis(20);

/// Why we sent a query, so its answer reaches the right place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A step of the traversal of this command.
    Lookup(QueryId),
    /// `announce_peer` or `put` of this command, after its traversal.
    Store(QueryId),
    /// Liveness check of a routing-table node.
    Ping,
    /// `peers_changed` to a node that watches a name here; nothing waits on its answer.
    Notify,
    /// A lookup query whose lookup ended before it was answered. It is kept until its hard
    /// timeout all the same, so that a late answer still shows the node alive and silence
    /// still counts against it in the routing table.
    Ended,
}

/// Whether a query is sent again at its soft deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// A lookup's query: on a lossy path one lost packet then costs a soft timeout.
    AtSoftDeadline,
    /// Pings, stores, notices, and lookups' long shots: sent once.
    Never,
}

#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) to: SocketAddr,
    /// The id we expect to answer; `None` for bootstrap seeds.
    pub(crate) id: Option<NodeId>,
    pub(crate) purpose: Purpose,
    sent_at: Instant,
    /// The next soft deadline; cleared once the last one has fired.
    soft: Option<Instant>,
    /// The wait that led to `soft` (doubled at each resend).
    wait: Duration,
    hard: Instant,
    /// The datagram to send again at a soft deadline (lookup queries only): on a lossy
    /// path a lost packet then costs a soft timeout, not the hard one, even where the
    /// traversal has too few answers to move on without the node.
    pub(crate) resend: Option<Vec<u8>>,
    resends_left: u8,
    /// Sent more than once: its answer says nothing about the round trip (Karn's rule).
    resent: bool,
    /// A soft deadline has passed: the query is slow. In an [`Expired::Soft`], whether it
    /// had passed before this one, so `false` there means the first.
    pub(crate) stale: bool,
}

/// A deadline that passed.
#[derive(Debug)]
pub(crate) enum Expired {
    /// The query is slow: the lookup may move on, but an answer is still welcome.
    Soft(Pending),
    /// The query failed; it is forgotten.
    Hard(Pending),
}

/// The transaction id of a query of ours: a counter here, its four big-endian bytes on the
/// wire. Other nodes' ids are opaque bytes of their choosing and stay `Vec<u8>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TxId(u32);

impl TxId {
    /// The bytes sent in the query's `t`.
    pub(crate) fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// The id an answer echoes, if it can be one of ours (four bytes).
    pub(crate) fn from_wire(tid: &[u8]) -> Option<TxId> {
        Some(TxId(u32::from_be_bytes(tid.try_into().ok()?)))
    }
}

#[derive(Debug)]
pub(crate) struct Rpc {
    next_tid: u32,
    pending: HashMap<TxId, Pending>,
    deadlines: BTreeSet<(Instant, TxId)>,
    hard_timeout: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rpc {
    pub(crate) fn new(first_tid: u32, hard_timeout: Duration) -> Self {
        Rpc {
            next_tid: first_tid,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            hard_timeout,
            srtt: None,
            rttvar: Duration::ZERO,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// Registers a query and returns its transaction id.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        to: SocketAddr,
        id: Option<NodeId>,
        purpose: Purpose,
    ) -> TxId {
        let mut n = self.next_tid;
        while self.pending.contains_key(&TxId(n)) {
            n = n.wrapping_add(1);
        }
        self.next_tid = n.wrapping_add(1);
        let tid = TxId(n);
        let wait = self.soft_timeout();
        let soft = now + wait;
        let hard = now + self.hard_timeout;
        self.deadlines.insert((soft, tid));
        self.pending.insert(
            tid,
            Pending {
                to,
                id,
                purpose,
                sent_at: now,
                soft: Some(soft),
                wait,
                hard,
                resend: None,
                resends_left: 0,
                resent: false,
                stale: false,
            },
        );
        tid
    }

    /// Keeps `datagram` to send again at the soft deadlines of query `tid`.
    pub(crate) fn resend_at_soft_deadline(&mut self, tid: TxId, datagram: Vec<u8>) {
        if let Some(p) = self.pending.get_mut(&tid) {
            p.resend = Some(datagram);
            p.resends_left = RESENDS;
        }
    }

    /// Takes the query an answer from `from` with transaction id `tid` belongs to.
    ///
    /// An answer from another address than the one asked is not ours (spoofed or confused):
    /// the query stays pending.
    pub(crate) fn finish(&mut self, now: Instant, tid: TxId, from: SocketAddr) -> Option<Pending> {
        if self.pending.get(&tid)?.to != from {
            return None;
        }
        let p = self.pending.remove(&tid)?;
        self.deadlines.remove(&(p.soft.unwrap_or(p.hard), tid));
        self.give_back_room();
        if !p.resent {
            self.sample_rtt(now.saturating_duration_since(p.sent_at));
        }
        Some(p)
    }

    /// The command of query `tid` ended: stop resending it, but keep waiting for its answer
    /// until the hard timeout (see [`Purpose::Ended`]).
    pub(crate) fn orphan(&mut self, tid: TxId) {
        if let Some(p) = self.pending.get_mut(&tid) {
            p.purpose = Purpose::Ended;
            p.resend = None;
            p.resends_left = 0;
        }
    }

    /// The query an answer from `from` with transaction id `tid` belongs to, left pending.
    pub(crate) fn peek(&self, tid: TxId, from: SocketAddr) -> Option<&Pending> {
        self.pending.get(&tid).filter(|p| p.to == from)
    }

    /// After a query leaves: the maps give back room its burst left ([`crate::dht::release_slack`]).
    fn give_back_room(&mut self) {
        crate::dht::release_slack(&mut self.pending);
        crate::dht::release_empty_set(&mut self.deadlines);
    }

    /// Forgets a query without an answer.
    pub(crate) fn forget(&mut self, tid: TxId) {
        if let Some(p) = self.pending.remove(&tid) {
            self.deadlines.remove(&(p.soft.unwrap_or(p.hard), tid));
            self.give_back_room();
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Pops one deadline that is due at `now`, with its transaction id.
    pub(crate) fn poll_expired(&mut self, now: Instant) -> Option<(TxId, Expired)> {
        let &(at, tid) = self.deadlines.first()?;
        if at > now {
            return None;
        }
        self.deadlines.pop_first();
        let p = self.pending.get_mut(&tid)?;
        if p.soft.take().is_some() {
            // The caller sends `expired.resend`, if any, again.
            let mut expired = p.clone();
            p.stale = true;
            if p.resend.is_some() && p.resends_left > 0 {
                p.resends_left -= 1;
                p.resent = true;
                p.wait = p.wait.saturating_mul(2);
                let next = now + p.wait;
                if p.resends_left > 0 && next < p.hard {
                    p.soft = Some(next);
                } else {
                    p.resend = None;
                }
            } else {
                expired.resend = None;
                p.resend = None;
            }
            self.deadlines.insert((p.soft.unwrap_or(p.hard), tid));
            return Some((tid, Expired::Soft(expired)));
        }
        let p = self.pending.remove(&tid)?;
        self.give_back_room();
        Some((tid, Expired::Hard(p)))
    }

    /// How long before a lookup stops waiting on a query: a few round trips, as TCP's RTO.
    pub(crate) fn soft_timeout(&self) -> Duration {
        match self.srtt {
            None => Duration::from_millis(500),
            Some(srtt) => (srtt + 4 * self.rttvar).clamp(
                MIN_SOFT_TIMEOUT,
                (self.hard_timeout / 2).max(MIN_SOFT_TIMEOUT),
            ),
        }
    }

    /// RFC 6298 smoothing of the round-trip time.
    fn sample_rtt(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn answer_from_another_address_is_ignored() {
        let now = Instant::now();
        let mut rpc = Rpc::new(7, Duration::from_secs(2));
        let tid = rpc.start(now, addr(1), None, Purpose::Ping);
        assert!(rpc.finish(now, tid, addr(2)).is_none());
        assert!(rpc.finish(now, tid, addr(1)).is_some());
        assert!(
            rpc.finish(now, tid, addr(1)).is_none(),
            "answered once only"
        );
        assert_eq!(rpc.next_deadline(), None);
    }

    #[test]
    fn soft_then_hard_deadline() {
        let now = Instant::now();
        let mut rpc = Rpc::new(0, Duration::from_secs(2));
        rpc.start(now, addr(1), None, Purpose::Ping);
        assert!(rpc.poll_expired(now).is_none());
        let soft = rpc.next_deadline().expect("soft");
        assert!(matches!(
            rpc.poll_expired(soft),
            Some((_, Expired::Soft(_)))
        ));
        assert!(
            rpc.next_deadline().is_some(),
            "still waiting after the soft deadline"
        );
        let hard = rpc.next_deadline().expect("hard");
        assert_eq!(hard, now + Duration::from_secs(2));
        assert!(matches!(
            rpc.poll_expired(hard),
            Some((_, Expired::Hard(_)))
        ));
        assert_eq!(rpc.next_deadline(), None);
    }

    #[test]
    fn a_lookup_query_is_resent_twice_with_doubling_waits_then_times_out() {
        let now = Instant::now();
        let mut rpc = Rpc::new(0, Duration::from_secs(2));
        let tid = rpc.start(now, addr(1), None, Purpose::Ping);
        rpc.resend_at_soft_deadline(tid, b"query".to_vec());
        let first = rpc.soft_timeout();
        assert!(
            first * 3 < Duration::from_secs(2),
            "both resends fit: {first:?}"
        );

        let mut fired = Vec::new();
        while let Some(at) = rpc.next_deadline() {
            match rpc.poll_expired(at) {
                Some((_, Expired::Soft(p))) => fired.push((at - now, p.resend)),
                Some((_, Expired::Hard(_))) => fired.push((at - now, None)),
                None => panic!("a deadline that does not fire"),
            }
        }

        let query = Some(b"query".to_vec());
        assert_eq!(
            fired,
            vec![
                (first, query.clone()),
                (first * 3, query),
                (Duration::from_secs(2), None),
            ]
        );
        assert!(rpc.finish(now, tid, addr(1)).is_none());
    }

    #[test]
    fn soft_timeout_follows_measured_rtt() {
        let now = Instant::now();
        let mut rpc = Rpc::new(0, Duration::from_secs(2));
        for _ in 0..20 {
            let tid = rpc.start(now, addr(1), None, Purpose::Ping);
            rpc.finish(now + Duration::from_millis(100), tid, addr(1));
        }
        let soft = rpc.soft_timeout();
        assert!(
            soft >= Duration::from_millis(100) && soft < Duration::from_millis(300),
            "{soft:?}"
        );
    }
}
