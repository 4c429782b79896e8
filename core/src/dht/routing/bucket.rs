//! One k-bucket: its nodes, their timestamps, and the replacement cache.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use super::{GOOD_FOR, MAX_FAILURES, NodeInfo, NodeState, PING_RETRY, REFRESH_AFTER};
use crate::dht::id::NodeId;

/// A node's address as the table keeps it: an IPv4 one in its 6 bytes, an IPv6 one (flow
/// info and scope id kept) boxed, so 16 bytes where a `SocketAddr` takes 32; the IPv6
/// table is the small one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Addr {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl Addr {
    fn new(addr: SocketAddr) -> Addr {
        match addr {
            SocketAddr::V4(v4) => Addr::V4(v4),
            SocketAddr::V6(v6) => Addr::V6(Box::new(v6)),
        }
    }

    fn get(&self) -> SocketAddr {
        match self {
            Addr::V4(v4) => SocketAddr::V4(*v4),
            Addr::V6(v6) => SocketAddr::V6(**v6),
        }
    }

    fn info(&self, id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            addr: self.get(),
        }
    }
}

/// A time as the table keeps it: signed nanoseconds from the table's epoch (the first
/// `now` it saw), exact for 292 years either side of it. 8 bytes where an `Instant` takes
/// 16, and `Option<Tick>` 8 where `Option<Instant>` takes 16: the times were half of an
/// entry, and entries most of a simulated node's memory.
///
/// Kept in offset binary (the nanoseconds with the sign bit flipped), so the derived order
/// is the order of times and the one value left out, `i64::MIN`, is the niche for `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Tick(NonZeroU64);

const SIGN: u64 = 1 << 63;

impl Tick {
    /// `at` as nanoseconds from `epoch`; saturates beyond 292 years either side.
    pub(super) fn since(epoch: Instant, at: Instant) -> Tick {
        let nanos = match at.checked_duration_since(epoch) {
            Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            None => {
                let before = epoch.saturating_duration_since(at).as_nanos();
                i64::try_from(before).map_or(-i64::MAX, |n| -n)
            }
        };
        Tick::from_nanos(nanos)
    }

    /// The `Instant` this tick stands for; `epoch` on the absurd clocks where that
    /// `Instant` cannot be held.
    pub(super) fn instant(self, epoch: Instant) -> Instant {
        let nanos = self.nanos();
        let at = if nanos >= 0 {
            epoch.checked_add(Duration::from_nanos(nanos.unsigned_abs()))
        } else {
            epoch.checked_sub(Duration::from_nanos(nanos.unsigned_abs()))
        };
        at.unwrap_or(epoch)
    }

    /// `self + d`, or `None` past what a tick holds (as `Instant::checked_add` past what
    /// an `Instant` holds).
    pub(super) fn checked_add(self, d: Duration) -> Option<Tick> {
        let d = i64::try_from(d.as_nanos()).ok()?;
        self.nanos().checked_add(d).map(Tick::from_nanos)
    }

    fn from_nanos(nanos: i64) -> Tick {
        // `i64::MIN` would be the niche: it becomes the next tick, 292 years before epoch.
        let raw = (nanos.max(-i64::MAX) as u64) ^ SIGN;
        Tick(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN))
    }

    fn nanos(self) -> i64 {
        (self.0.get() ^ SIGN) as i64
    }
}

#[cfg(test)]
impl std::ops::Add<Duration> for Tick {
    type Output = Tick;
    fn add(self, d: Duration) -> Tick {
        self.checked_add(d).expect("tick overflow in a test")
    }
}

#[cfg(test)]
impl std::ops::Sub<Duration> for Tick {
    type Output = Tick;
    fn sub(self, d: Duration) -> Tick {
        let d = i64::try_from(d.as_nanos()).expect("duration fits");
        Tick::from_nanos(self.nanos() - d)
    }
}

/// A node in a bucket, with the evidence its state is computed from.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) id: NodeId,
    addr: Addr,
    /// When the entry was created; an unverified node needs a ping from then on.
    pub(super) added: Tick,
    /// Last time it answered one of our queries; `None` while unverified.
    pub(super) last_response: Option<Tick>,
    /// Last time it queried us.
    pub(super) last_query: Option<Tick>,
    /// Our queries it failed in a row since it last answered.
    pub(super) failures: u8,
    /// When the table last handed it out for a ping that has not been reported back yet.
    pub(super) ping_sent: Option<Tick>,
}

impl Entry {
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr.get()
    }

    pub(super) fn info(&self) -> NodeInfo {
        self.addr.info(self.id)
    }

    /// An entry for a node that just answered us.
    pub(super) fn responded(info: NodeInfo, now: Tick) -> Self {
        Entry {
            id: info.id,
            addr: Addr::new(info.addr),
            added: now,
            last_response: Some(now),
            last_query: None,
            failures: 0,
            ping_sent: None,
        }
    }

    /// An entry for a node that just queried us and is not verified yet.
    pub(super) fn queried(info: NodeInfo, now: Tick) -> Self {
        Entry {
            id: info.id,
            addr: Addr::new(info.addr),
            added: now,
            last_response: None,
            last_query: Some(now),
            failures: 0,
            ping_sent: None,
        }
    }

    /// Records an answer: the node is good again and any ping is settled.
    pub(super) fn record_response(&mut self, now: Tick) {
        self.last_response = Some(now);
        self.failures = 0;
        self.ping_sent = None;
    }

    /// Records a failed query; the ping (if that was one) is settled.
    pub(super) fn record_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.ping_sent = None;
    }

    /// True once the node failed [`MAX_FAILURES`] queries in a row; time does not change it.
    pub(super) fn is_bad(&self) -> bool {
        self.failures >= MAX_FAILURES
    }

    /// The BEP 5 state at `now`.
    pub(super) fn state(&self, now: Tick) -> NodeState {
        if self.is_bad() {
            return NodeState::Bad;
        }
        let Some(response) = self.last_response else {
            // Unverified: it never answered us, so BEP 5 cannot call it good.
            return NodeState::Questionable;
        };
        match self.good_until(response) {
            Some(until) if now >= until => NodeState::Questionable,
            _ => NodeState::Good,
        }
    }

    /// When a node that has answered at `response` stops being good; `None` if that lies
    /// beyond what a [`Tick`] can hold (only on absurd clocks: then it never does).
    fn good_until(&self, response: Tick) -> Option<Tick> {
        // A query counts only from a node that has answered us at least once (BEP 5).
        let seen = self.last_query.map_or(response, |q| q.max(response));
        seen.checked_add(GOOD_FOR)
    }

    /// When the node next needs a ping: once it is questionable and no ping of ours is
    /// under way. `None` for a bad node (it is replaced, not pinged).
    ///
    /// [`super::RoutingTable::take_pings`] and [`super::RoutingTable::next_timeout`] both
    /// use this, so a node handed out is never due again at the same `now`.
    pub(super) fn ping_due(&self) -> Option<Tick> {
        if self.is_bad() {
            return None;
        }
        let questionable_from = match self.last_response {
            None => self.added,
            Some(response) => self.good_until(response)?,
        };
        match self.ping_sent {
            None => Some(questionable_from),
            Some(sent) => Some(questionable_from.max(sent.checked_add(PING_RETRY)?)),
        }
    }
}

/// A node that answered us while its bucket was full, waiting for a slot.
#[derive(Clone, Debug)]
pub(super) struct Cached {
    pub(super) id: NodeId,
    addr: Addr,
    pub(super) last_response: Tick,
}

impl Cached {
    /// A node that answered at `last_response`.
    pub(super) fn new(info: NodeInfo, last_response: Tick) -> Cached {
        Cached {
            id: info.id,
            addr: Addr::new(info.addr),
            last_response,
        }
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr.get()
    }

    pub(super) fn info(&self) -> NodeInfo {
        self.addr.info(self.id)
    }

    /// Whether its id matches its address as BEP 42 says (always for private addresses).
    pub(super) fn is_bep42(&self) -> bool {
        crate::dht::defence::is_bep42_id(&self.id, self.addr().ip())
    }

    /// The entry it becomes when it takes a slot: it keeps its last answer time.
    pub(super) fn into_entry(self, now: Tick) -> Entry {
        Entry {
            id: self.id,
            addr: self.addr,
            added: now,
            last_response: Some(self.last_response),
            last_query: None,
            failures: 0,
            ping_sent: None,
        }
    }
}

/// A k-bucket. The table keeps `entries` at most k long and `cache` at most k long,
/// with the freshest cached node last.
#[derive(Clone, Debug, Default)]
pub(super) struct Bucket {
    pub(super) entries: Vec<Entry>,
    pub(super) cache: Vec<Cached>,
    /// Last time a node was added, replaced or answered, or the bucket was refreshed;
    /// `None` until the first node arrives (the bootstrap lookup does that job).
    pub(super) last_changed: Option<Tick>,
    /// The earliest [`Entry::ping_due`] of `entries`, kept so that
    /// [`super::RoutingTable::next_timeout`], asked after every datagram, need not look at
    /// every entry. The table calls [`Bucket::settle_pings`] after it changes `entries`.
    pub(super) ping_due: Option<Tick>,
}

impl Bucket {
    /// Recomputes [`Bucket::ping_due`] after `entries` changed.
    pub(super) fn settle_pings(&mut self) {
        self.ping_due = self.entries.iter().filter_map(Entry::ping_due).min();
    }

    /// Applies `change` to entry `index` and keeps [`Bucket::ping_due`] in step: from that
    /// one entry, unless it held the earliest deadline (then from all of them).
    pub(super) fn update_entry(&mut self, index: usize, change: impl FnOnce(&mut Entry)) {
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        let before = entry.ping_due();
        change(entry);
        let after = entry.ping_due();
        if before == self.ping_due {
            self.settle_pings();
        } else {
            // Another entry holds the earliest deadline, so only this one can undercut it.
            self.ping_due = match (self.ping_due, after) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// When the bucket needs a refresh lookup.
    pub(super) fn refresh_due(&self) -> Option<Tick> {
        self.last_changed?.checked_add(REFRESH_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Some tick to start from: an hour after the table's epoch.
    fn t0() -> Tick {
        Tick::from_nanos(3_600_000_000_000)
    }

    fn info() -> NodeInfo {
        NodeInfo {
            id: NodeId([1; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], 6881)),
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn responder_is_good_until_fifteen_minutes_of_silence() {
        let t = t0();
        let e = Entry::responded(info(), t);

        let just_before = e.state(t + GOOD_FOR - SEC);
        let at = e.state(t + GOOD_FOR);

        assert_eq!(just_before, NodeState::Good);
        assert_eq!(at, NodeState::Questionable);
        assert_eq!(e.ping_due(), Some(t + GOOD_FOR));
    }

    #[test]
    fn unverified_node_is_questionable_and_due_for_ping_at_once() {
        let t = t0();
        let e = Entry::queried(info(), t);

        assert_eq!(e.state(t), NodeState::Questionable);
        assert_eq!(e.ping_due(), Some(t));
    }

    #[test]
    fn query_keeps_a_verified_node_good() {
        let t = t0();
        let mut e = Entry::responded(info(), t);
        e.last_query = Some(t + GOOD_FOR);

        let state = e.state(t + GOOD_FOR + SEC);

        assert_eq!(state, NodeState::Good);
        assert_eq!(e.ping_due(), Some(t + GOOD_FOR + GOOD_FOR));
    }

    #[test]
    fn two_failures_in_a_row_make_a_node_bad_until_it_answers() {
        let t = t0();
        let mut e = Entry::responded(info(), t);

        e.record_failure();
        let after_one = e.state(t);
        e.record_failure();
        let after_two = e.state(t);
        e.record_response(t + SEC);

        assert_eq!(after_one, NodeState::Good);
        assert_eq!(after_two, NodeState::Bad);
        assert_eq!(e.state(t + SEC), NodeState::Good);
    }

    #[test]
    fn bad_node_is_never_due_for_a_ping() {
        let t = t0();
        let mut e = Entry::queried(info(), t);

        e.record_failure();
        e.record_failure();

        assert_eq!(e.ping_due(), None);
    }

    #[test]
    fn ping_under_way_delays_the_next_one() {
        let t = t0();
        let mut e = Entry::queried(info(), t);

        e.ping_sent = Some(t + SEC);

        assert_eq!(e.ping_due(), Some(t + SEC + PING_RETRY));
        e.record_failure();
        assert_eq!(e.ping_due(), Some(t), "a failure settles the ping");
    }

    #[test]
    fn ticks_keep_the_order_and_the_instant_they_stand_for() {
        #[allow(clippy::disallowed_methods)] // some real Instant, far from the ends of its range
        let epoch = Instant::now();
        let ns = Duration::from_nanos(1);
        let times = [
            epoch.checked_sub(Duration::from_secs(3600)),
            epoch.checked_sub(ns),
            Some(epoch),
            epoch.checked_add(ns),
            epoch.checked_add(GOOD_FOR),
            epoch.checked_add(Duration::from_secs(10 * 365 * 86_400)),
        ];
        let times: Vec<Instant> = times.into_iter().flatten().collect();

        let ticks: Vec<Tick> = times.iter().map(|&at| Tick::since(epoch, at)).collect();

        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
        for (tick, at) in ticks.iter().zip(&times) {
            assert_eq!(tick.instant(epoch), *at);
        }
        assert_eq!(
            Tick::since(epoch, epoch).checked_add(GOOD_FOR),
            Some(Tick::since(epoch, epoch + GOOD_FOR))
        );
    }

    #[test]
    fn an_entry_holds_its_times_and_address_in_72_bytes() {
        // What a simulated network of a million nodes has room for (issue 16).
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
        assert_eq!(std::mem::size_of::<Addr>(), 16);
        assert!(std::mem::size_of::<Entry>() <= 72);
        assert!(std::mem::size_of::<Cached>() <= 48);
    }

    #[test]
    fn an_ipv6_address_is_kept_whole() {
        let v6 = "[2001:db8::1%7]:6881"
            .parse::<SocketAddr>()
            .map(|a| match a {
                SocketAddr::V6(mut v6) => {
                    v6.set_flowinfo(9);
                    SocketAddr::V6(v6)
                }
                v4 => v4,
            });
        let Ok(addr) = v6 else {
            panic!("a valid address");
        };
        let node = NodeInfo { addr, ..info() };

        assert_eq!(Entry::queried(node, t0()).info(), node);
        assert_eq!(Cached::new(node, t0()).info(), node);
    }

    #[test]
    fn cached_node_keeps_its_answer_time_when_promoted() {
        let t = t0();
        let c = Cached::new(info(), t);

        let e = c.into_entry(t + GOOD_FOR);

        assert_eq!(e.state(t + GOOD_FOR), NodeState::Questionable);
        assert_eq!(e.failures, 0);
    }
}
