//! Nodes that let a query of ours pass its soft deadline: lookups skip them until they answer.
//!
//! Every table on the real DHT holds nodes that never answer (behind a NAT, or gone), and
//! other nodes keep naming them in their answers. A lookup that asks one waits a soft timeout
//! for it; the next lookup that asks it again waits again. So a node that missed a query is
//! remembered here, and lookups neither start from it nor follow other nodes' pointers to
//! it until it answers anything of ours (a late answer, a routing-table ping) or the mark
//! expires. A live node behind a lossy path is marked for about one round trip: its answer
//! to the resent query clears the mark.
//!
//! A node whose query and resend were both lost would stay hidden for the whole mark, and
//! so would the names it stores: our announces would go to farther nodes than other
//! Grapes' lookups reach. So a lookup that meets a marked node still asks it, at most once
//! per [`PROBE_EVERY`], as a *long shot* that nothing waits for (see
//! `Traversal::long_shot`): a live node answers and is back, a silent one costs one
//! datagram.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Addresses remembered at once; past it the oldest mark is forgotten.
const MAX_SILENT: usize = 1 << 16;

/// A mark lasts this long, so a node that came back is tried again even if nothing pings it.
pub(crate) const SILENT_FOR: Duration = Duration::from_secs(10 * 60);

/// A marked node is asked again at most this often, by the lookups that meet it.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
struct Mark {
    /// When it last missed a query.
    at: Instant,
    /// When a lookup last asked it anyway (or when it was marked).
    probed: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Silent {
    marked: HashMap<SocketAddr, Mark>,
    by_age: BTreeSet<(Instant, SocketAddr)>,
}

impl Silent {
    /// `addr` missed a query at `now`.
    pub(crate) fn mark(&mut self, now: Instant, addr: SocketAddr) {
        let mark = Mark {
            at: now,
            probed: now,
        };
        if let Some(old) = self.marked.insert(addr, mark) {
            self.by_age.remove(&(old.at, addr));
        }
        self.by_age.insert((now, addr));
        while self.marked.len() > MAX_SILENT {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.marked.remove(&oldest);
        }
    }

    /// `addr` answered: it is alive.
    pub(crate) fn clear(&mut self, addr: &SocketAddr) {
        if let Some(old) = self.marked.remove(addr) {
            self.by_age.remove(&(old.at, *addr));
            self.give_back_room();
        }
    }

    /// Whether a lookup that meets marked node `addr` may ask it now as a long shot; if
    /// so, the next chance is [`PROBE_EVERY`] from now.
    pub(crate) fn take_probe(&mut self, now: Instant, addr: &SocketAddr) -> bool {
        match self.marked.get_mut(addr) {
            Some(m)
                if now.saturating_duration_since(m.at) < SILENT_FOR
                    && now.saturating_duration_since(m.probed) >= PROBE_EVERY =>
            {
                m.probed = now;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn contains(&self, now: Instant, addr: &SocketAddr) -> bool {
        self.marked
            .get(addr)
            .is_some_and(|m| now.saturating_duration_since(m.at) < SILENT_FOR)
    }

    /// Forgets marks older than [`SILENT_FOR`].
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, addr)) = self.by_age.first() {
            if now.saturating_duration_since(at) < SILENT_FOR {
                break;
            }
            self.by_age.pop_first();
            self.marked.remove(&addr);
        }
        self.give_back_room();
    }

    /// After marks are cleared: the maps give back room a burst left ([`crate::dht::release_slack`]).
    fn give_back_room(&mut self) {
        crate::dht::release_slack(&mut self.marked);
        crate::dht::release_empty_set(&mut self.by_age);
    }

    pub(crate) fn len(&self) -> usize {
        self.marked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_mark_holds_until_an_answer_or_expiry() {
        let t0 = Instant::now();
        let mut s = Silent::default();
        s.mark(t0, addr(1));
        s.mark(t0, addr(2));
        assert!(s.contains(t0, &addr(1)));
        s.clear(&addr(1));
        assert!(!s.contains(t0, &addr(1)), "an answer clears the mark");
        assert!(s.contains(t0 + SILENT_FOR / 2, &addr(2)));
        assert!(!s.contains(t0 + SILENT_FOR, &addr(2)), "marks expire");
        s.expire(t0 + SILENT_FOR);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_marked_node_may_be_asked_once_per_probe_interval() {
        let t0 = Instant::now();
        let mut s = Silent::default();
        s.mark(t0, addr(1));
        assert!(!s.take_probe(t0, &addr(1)), "not while its own resend runs");
        assert!(
            !s.take_probe(t0, &addr(2)),
            "an unmarked node is asked anyway"
        );
        let later = t0 + PROBE_EVERY;
        assert!(s.take_probe(later, &addr(1)));
        assert!(!s.take_probe(later, &addr(1)), "once per interval");
        assert!(s.take_probe(later + PROBE_EVERY, &addr(1)));
        assert!(
            s.contains(later, &addr(1)),
            "asking does not clear the mark"
        );
        s.mark(later + PROBE_EVERY, addr(1));
        assert!(
            !s.take_probe(later + PROBE_EVERY, &addr(1)),
            "missing the long shot starts the interval again"
        );
    }

    #[test]
    fn bounded_oldest_forgotten_first() {
        let t0 = Instant::now();
        let mut s = Silent::default();
        for i in 0..=MAX_SILENT {
            let at = t0 + Duration::from_millis(i as u64);
            s.mark(
                at,
                SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1)),
            );
        }
        assert_eq!(s.len(), MAX_SILENT);
        assert!(!s.contains(t0, &SocketAddr::from(([10, 0, 0, 0], 1))));
    }
}
