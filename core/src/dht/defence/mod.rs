//! The node's defences against a host that floods it: per-source rate limits with a
//! temporary ban, a budget of reply bytes, and the address rules the routing table uses.
//!
//! Every rule here is sans-IO (the caller passes `now`) and is the one implementation of
//! itself: the DHT port and the Grape API share [`SourceLimiter`]. The defaults are far above
//! what a busy Grenache network sends (docs/operators.md, "Defences"), so only a flood meets
//! them.

mod bep42;
mod limiter;
mod quota;
mod shield;
mod subnet;

use std::time::Duration;

pub use bep42::{bep42_id_prefix, is_bep42_id};
pub use limiter::{Ban, Limit, SourceLimiter, TokenBucket, Verdict};
pub use quota::SourceQuota;
pub(crate) use shield::Shield;
pub(crate) use subnet::source_key;
pub use subnet::{Subnet, is_exempt};

/// Settings of a [`Node`](super::Node)'s defences; `Default` has them all on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Defences {
    /// Datagrams per second one source IP may send us (`None`: no limit).
    pub rate_limit: Option<Limit>,
    /// What happens to a source that keeps going over [`Defences::rate_limit`].
    pub ban: Option<Ban>,
    /// Reply bytes per second to all queriers together (`None`: no budget).
    pub reply_budget: Option<Limit>,
    /// Reply bytes per second to one source IP (`None`: no budget).
    pub reply_budget_per_source: Option<Limit>,
    /// Whether loopback senders skip the rate limits and budgets (they are on the box already).
    pub exempt_loopback: bool,
    /// At most one node per /24 (IPv4) or /64 (IPv6) in each bucket, for public addresses.
    pub one_per_subnet: bool,
    /// Sources tracked at once by each limiter; past it the idlest is forgotten.
    pub max_sources: usize,
    /// Announced peers one source IP may hold here (`None`: no cap); past it its own
    /// stalest announce goes.
    pub max_peers_per_source: Option<usize>,
    /// BEP-44 items one source IP may hold here (`None`: no cap); past it its own
    /// stalest item goes.
    pub max_items_per_source: Option<usize>,
}

impl Default for Defences {
    fn default() -> Self {
        Defences {
            rate_limit: Some(Limit::per_second(DEFAULT_RATE)),
            ban: Some(Ban::default()),
            reply_budget: Some(Limit::per_second(DEFAULT_REPLY_BUDGET)),
            reply_budget_per_source: Some(Limit::per_second(DEFAULT_REPLY_BUDGET_PER_SOURCE)),
            exempt_loopback: true,
            one_per_subnet: true,
            max_sources: DEFAULT_MAX_SOURCES,
            max_peers_per_source: Some(DEFAULT_MAX_PEERS_PER_SOURCE),
            max_items_per_source: Some(DEFAULT_MAX_ITEMS_PER_SOURCE),
        }
    }
}

impl Defences {
    /// Every defence off: what the Node Grape does.
    pub fn off() -> Self {
        Defences {
            rate_limit: None,
            ban: None,
            reply_budget: None,
            reply_budget_per_source: None,
            exempt_loopback: true,
            one_per_subnet: false,
            max_sources: DEFAULT_MAX_SOURCES,
            max_peers_per_source: None,
            max_items_per_source: None,
        }
    }
}

/// Datagrams per second per source IP. The busiest pair of 20 Grapes under lookup and
/// announce load exchanged well under a tenth of this (docs/operators.md).
pub const DEFAULT_RATE: u32 = 1_000;
/// Reply bytes per second to all queriers: 16 MB/s, more than the node answers at full CPU.
pub const DEFAULT_REPLY_BUDGET: u32 = 16 << 20;
/// Reply bytes per second to one IP: 1 MB/s, about a thousand full `get_peers` answers.
pub const DEFAULT_REPLY_BUDGET_PER_SOURCE: u32 = 1 << 20;
/// Sources each limiter tracks: a flood of addresses costs at most this many slots.
pub const DEFAULT_MAX_SOURCES: usize = 4_096;
/// Announces one source IP holds: a Grape announces for every service on its host, and
/// a host with ten thousand services is far past any Grenache deployment we know.
pub const DEFAULT_MAX_PEERS_PER_SOURCE: usize = 10_000;
/// BEP-44 items one source IP holds: a fifth of the Node Grape's whole store (5000).
pub const DEFAULT_MAX_ITEMS_PER_SOURCE: usize = 1_000;
/// How long a banned source is ignored (libtorrent: 5 minutes).
pub const DEFAULT_BAN_FOR: Duration = Duration::from_secs(300);
