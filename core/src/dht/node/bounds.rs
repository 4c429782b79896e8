//! Callers' bounds on commands: the one deadline of the request a command serves.
//!
//! A traversal has its own deadline (`Config::lookup_timeout`), but a caller such as the
//! Grape API may promise its client an answer sooner, and several callers may share one
//! traversal with different promises. Each command's bound is kept here, once, so the
//! caller keeps no timer of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::dht::event::QueryId;

/// The bounds of running commands, by time and by command.
#[derive(Debug, Default)]
pub(super) struct Bounds {
    by_time: BTreeSet<(Instant, QueryId)>,
    by_query: BTreeMap<QueryId, Instant>,
}

impl Bounds {
    /// Sets `query`'s bound to `at`, replacing an earlier one.
    pub(super) fn set(&mut self, query: QueryId, at: Instant) {
        if let Some(old) = self.by_query.insert(query, at) {
            self.by_time.remove(&(old, query));
        }
        self.by_time.insert((at, query));
    }

    /// Forgets `query`'s bound: the command ended.
    pub(super) fn clear(&mut self, query: QueryId) {
        if let Some(at) = self.by_query.remove(&query) {
            self.by_time.remove(&(at, query));
        }
    }

    /// A command whose bound has passed at `now`, forgotten as it is returned.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<QueryId> {
        let &(at, query) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_query.remove(&query);
        Some(query)
    }

    /// The earliest bound.
    pub(super) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_query.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_bounds_come_out_in_time_order_and_cleared_ones_never() {
        let t0 = Instant::now();
        let mut b = Bounds::default();
        b.set(QueryId(1), t0 + Duration::from_millis(30));
        b.set(QueryId(2), t0 + Duration::from_millis(10));
        b.set(QueryId(3), t0 + Duration::from_millis(20));
        b.set(QueryId(1), t0 + Duration::from_millis(5)); // replaced, not doubled
        b.clear(QueryId(3));

        assert_eq!(b.len(), 2);
        assert_eq!(b.next(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(b.pop_due(t0), None);
        let due = t0 + Duration::from_millis(40);
        assert_eq!(b.pop_due(due), Some(QueryId(1)));
        assert_eq!(b.pop_due(due), Some(QueryId(2)));
        assert_eq!(b.pop_due(due), None);
        assert_eq!(b.len(), 0);
    }
}
