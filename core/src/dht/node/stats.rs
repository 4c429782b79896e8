use std::collections::BTreeMap;

use crate::dht::krpc::Method;
use crate::dht::routing::Ignored;

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
    /// `watch_peers` (ours)
    pub watch_peers: u64,
    /// `peers_changed` (ours)
    pub peers_changed: u64,
    /// BEP-44 `get`
    pub get: u64,
    /// BEP-44 `put`
    pub put: u64,
}

impl MethodCounts {
    pub(crate) fn bump(&mut self, method: &Method) {
        let slot = match method {
            Method::Ping => &mut self.ping,
            Method::FindNode { .. } => &mut self.find_node,
            Method::GetPeers { .. } => &mut self.get_peers,
            Method::AnnouncePeer { .. } => &mut self.announce_peer,
            Method::UnannouncePeer { .. } => &mut self.unannounce_peer,
            Method::WatchPeers { .. } => &mut self.watch_peers,
            Method::PeersChanged { .. } => &mut self.peers_changed,
            Method::Get { .. } => &mut self.get,
            Method::Put(_) => &mut self.put,
        };
        *slot += 1;
    }

    /// `(method, count)` pairs in a fixed order, for metrics; the names are
    /// [`Method::name`]'s.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("ping", self.ping),
            ("find_node", self.find_node),
            ("get_peers", self.get_peers),
            ("announce_peer", self.announce_peer),
            ("unannounce_peer", self.unannounce_peer),
            ("watch_peers", self.watch_peers),
            ("peers_changed", self.peers_changed),
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
    /// Of those, the ones asked anyway as a lookup's long shot (once per
    /// 30 s per node at most), so a live node that lost a query and its resend is back.
    pub long_shots: u64,
    /// Datagrams (or work) dropped, by reason; [`DropReason::label`] names each for metrics.
    pub dropped: BTreeMap<DropReason, u64>,
    /// `get_peers` commands that joined a traversal already running for the same key.
    pub lookups_joined: u64,
    /// Commands that ended with an outcome.
    pub commands_ok: u64,
    /// Commands that ended with an error.
    pub commands_failed: u64,
    /// Sources banned for going over the rate limit again and again.
    pub bans: u64,
    /// Routing-table nodes dropped because their source was banned.
    pub banned_nodes_removed: u64,
    /// Nodes named in answers that a lookup did not ask because their source is banned.
    pub skipped_banned: u64,
    /// Nodes the routing tables did not take, by [`Ignored::label`]: the rule that refused them.
    pub nodes_refused: BTreeMap<&'static str, u64>,
    /// Nodes taken into a routing table whose public address does not match their id (BEP 42).
    pub unverified_ids: u64,
}

impl Stats {
    pub(crate) fn drop(&mut self, reason: DropReason) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    pub(crate) fn refused(&mut self, why: Ignored) {
        *self.nodes_refused.entry(why.label()).or_default() += 1;
    }
}

/// Why the node dropped a datagram, or work it would have done, instead of handling it.
///
/// Typed so a call site cannot misspell a reason and split a metric in two; the labels
/// are stable because dashboards select on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The datagram did not decode. Holds the decoder's own label
    /// ([`DecodeErrorKind::as_str`](crate::dht::krpc::DecodeErrorKind::as_str)), so each
    /// kind of malformation is counted apart.
    Malformed(&'static str),
    /// A query reached a read-only node (BEP 43), which does not answer.
    ReadOnly,
    /// A query carried our own id: an echo, or someone poisoning tables.
    OwnId,
    /// A command refused at once because too many commands were running.
    TooManyCommands,
    /// A notification not queued because the caller has not drained the events.
    EventQueueFull,
    /// A query not sent because the table of our pending queries is full.
    PendingFull,
    /// A datagram not queued because the caller has not drained the transmits.
    TransmitQueueFull,
    /// A response that matches no query of ours (late, spoofed or from the wrong address).
    UnexpectedResponse,
    /// An error reply that matches no query of ours.
    UnexpectedError,
    /// A BEP-44 item in a response that does not verify against its target.
    BadItem,
    /// A datagram over its source's rate limit.
    RateLimited,
    /// A datagram from a source banned for going over its rate limit again and again.
    Banned,
    /// An answer not sent: the reply byte budget (global or the querier's) was spent.
    ReplyBudget,
}

impl DropReason {
    /// The short stable label of this reason, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed(label) => label,
            DropReason::ReadOnly => "read_only",
            DropReason::OwnId => "own_id",
            DropReason::TooManyCommands => "too_many_commands",
            DropReason::EventQueueFull => "event_queue_full",
            DropReason::PendingFull => "pending_full",
            DropReason::TransmitQueueFull => "transmit_queue_full",
            DropReason::UnexpectedResponse => "unexpected_response",
            DropReason::UnexpectedError => "unexpected_error",
            DropReason::BadItem => "bad_item",
            DropReason::RateLimited => "rate_limited",
            DropReason::Banned => "banned",
            DropReason::ReplyBudget => "reply_budget",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::Key;

    #[test]
    fn each_method_is_counted_under_its_wire_name() {
        let key = || Key::new(b"name").expect("key");
        let methods = [
            Method::Ping,
            Method::WatchPeers {
                info_hash: key(),
                token: vec![1],
            },
            Method::PeersChanged { info_hash: key() },
        ];
        let mut counts = MethodCounts::default();
        for m in &methods {
            counts.bump(m);
        }
        let counted: Vec<&str> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(m, _)| m)
            .collect();

        assert_eq!(counted, ["ping", "watch_peers", "peers_changed"]);
        assert_eq!(counts.put, 0);
        assert!(methods.iter().all(|m| counted.contains(&m.name())));
    }

    #[test]
    fn drop_labels_stay_what_dashboards_select_on() {
        let labels: Vec<&str> = [
            DropReason::Malformed("bencode_syntax"),
            DropReason::ReadOnly,
            DropReason::OwnId,
            DropReason::TooManyCommands,
            DropReason::EventQueueFull,
            DropReason::PendingFull,
            DropReason::TransmitQueueFull,
            DropReason::UnexpectedResponse,
            DropReason::UnexpectedError,
            DropReason::BadItem,
            DropReason::RateLimited,
            DropReason::Banned,
            DropReason::ReplyBudget,
        ]
        .into_iter()
        .map(DropReason::label)
        .collect();

        assert_eq!(
            labels,
            [
                "bencode_syntax",
                "read_only",
                "own_id",
                "too_many_commands",
                "event_queue_full",
                "pending_full",
                "transmit_queue_full",
                "unexpected_response",
                "unexpected_error",
                "bad_item",
                "rate_limited",
                "banned",
                "reply_budget",
            ]
        );
    }
}
