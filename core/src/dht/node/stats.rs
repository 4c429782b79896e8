use std::collections::BTreeMap;

/// Counts per KRPC method.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodCounts {
    /// `ping`
    pub ping: u64,
    /// `find_node`
    pub find_node: u64,
    /// `get_peers`
    pub get_peers: u64,
    /// `announce_peer`
    pub announce_peer: u64,
    /// `unannounce_peer` (ours)
    pub unannounce_peer: u64,
    /// BEP-44 `get`
    pub get: u64,
    /// BEP-44 `put`
    pub put: u64,
}

impl MethodCounts {
    pub(crate) fn bump(&mut self, method: &str) {
        let slot = match method {
            "ping" => &mut self.ping,
            "find_node" => &mut self.find_node,
            "get_peers" => &mut self.get_peers,
            "announce_peer" => &mut self.announce_peer,
            "unannounce_peer" => &mut self.unannounce_peer,
            "get" => &mut self.get,
            _ => &mut self.put,
        };
        *slot += 1;
    }

    /// `(method, count)` pairs in a fixed order, for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("ping", self.ping),
            ("find_node", self.find_node),
            ("get_peers", self.get_peers),
            ("announce_peer", self.announce_peer),
            ("unannounce_peer", self.unannounce_peer),
            ("get", self.get),
            ("put", self.put),
        ]
        .into_iter()
    }
}

/// Counters of what the node has done since it started. Gauges (table size, stored
/// peers and items) are separate getters on [`Node`](super::Node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams queued for sending.
    pub datagrams_out: u64,
    /// Queries received, by method.
    pub queries_in: MethodCounts,
    /// Queries sent, by method.
    pub queries_out: MethodCounts,
    /// Responses received that matched a query of ours.
    pub responses_in: u64,
    /// KRPC error replies received.
    pub errors_in: u64,
    /// KRPC error replies sent.
    pub errors_out: u64,
    /// Our queries that got no answer in time.
    pub timeouts: u64,
    /// Lookup queries sent a second time at their soft deadline.
    pub resent: u64,
    /// Nodes a lookup did not ask because they missed a query of ours and have not
    /// answered since.
    pub skipped_silent: u64,
    /// Datagrams dropped, by reason (a short stable label).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Commands that ended with an outcome.
    pub commands_ok: u64,
    /// Commands that ended with an error.
    pub commands_failed: u64,
}

impl Stats {
    pub(crate) fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }
}
