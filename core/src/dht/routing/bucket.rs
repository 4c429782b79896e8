//! One k-bucket: its nodes, their timestamps, and the replacement cache.

use std::time::Instant;

use super::{GOOD_FOR, MAX_FAILURES, NodeInfo, NodeState, PING_RETRY, REFRESH_AFTER};

/// A node in a bucket, with the evidence its state is computed from.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) info: NodeInfo,
    /// When the entry was created; an unverified node needs a ping from then on.
    pub(super) added: Instant,
    /// Last time it answered one of our queries; `None` while unverified.
    pub(super) last_response: Option<Instant>,
    /// Last time it queried us.
    pub(super) last_query: Option<Instant>,
    /// Our queries it failed in a row since it last answered.
    pub(super) failures: u8,
    /// When the table last handed it out for a ping that has not been reported back yet.
    pub(super) ping_sent: Option<Instant>,
}

impl Entry {
    /// An entry for a node that just answered us.
    pub(super) fn responded(info: NodeInfo, now: Instant) -> Self {
        Entry {
            info,
            added: now,
            last_response: Some(now),
            last_query: None,
            failures: 0,
            ping_sent: None,
        }
    }

    /// An entry for a node that just queried us and is not verified yet.
    pub(super) fn queried(info: NodeInfo, now: Instant) -> Self {
        Entry {
            info,
            added: now,
            last_response: None,
            last_query: Some(now),
            failures: 0,
            ping_sent: None,
        }
    }

    /// Records an answer: the node is good again and any ping is settled.
    pub(super) fn record_response(&mut self, now: Instant) {
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
    pub(super) fn state(&self, now: Instant) -> NodeState {
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
    /// beyond what `Instant` can hold (only on absurd clocks: then it never does).
    fn good_until(&self, response: Instant) -> Option<Instant> {
        // A query counts only from a node that has answered us at least once (BEP 5).
        let seen = self.last_query.map_or(response, |q| q.max(response));
        seen.checked_add(GOOD_FOR)
    }

    /// When the node next needs a ping: once it is questionable and no ping of ours is
    /// under way. `None` for a bad node (it is replaced, not pinged).
    ///
    /// [`super::RoutingTable::take_pings`] and [`super::RoutingTable::next_timeout`] both
    /// use this, so a node handed out is never due again at the same `now`.
    pub(super) fn ping_due(&self) -> Option<Instant> {
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
#[derive(Clone, Copy, Debug)]
pub(super) struct Cached {
    pub(super) info: NodeInfo,
    pub(super) last_response: Instant,
}

impl Cached {
    /// Whether its id matches its address as BEP 42 says (always for private addresses).
    pub(super) fn is_bep42(&self) -> bool {
        crate::dht::defence::is_bep42_id(&self.info.id, self.info.addr.ip())
    }

    /// The entry it becomes when it takes a slot: it keeps its last answer time.
    pub(super) fn into_entry(self, now: Instant) -> Entry {
        Entry {
            info: self.info,
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
    pub(super) last_changed: Option<Instant>,
    /// The earliest [`Entry::ping_due`] of `entries`, kept so that
    /// [`super::RoutingTable::next_timeout`], asked after every datagram, need not look at
    /// every entry. The table calls [`Bucket::settle_pings`] after it changes `entries`.
    pub(super) ping_due: Option<Instant>,
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
    pub(super) fn refresh_due(&self) -> Option<Instant> {
        self.last_changed?.checked_add(REFRESH_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::dht::id::NodeId;

    #[allow(clippy::disallowed_methods)] // tests need some Instant to start from
    fn t0() -> Instant {
        Instant::now()
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
    fn cached_node_keeps_its_answer_time_when_promoted() {
        let t = t0();
        let c = Cached {
            info: info(),
            last_response: t,
        };

        let e = c.into_entry(t + GOOD_FOR);

        assert_eq!(e.state(t + GOOD_FOR), NodeState::Questionable);
        assert_eq!(e.failures, 0);
    }
}
