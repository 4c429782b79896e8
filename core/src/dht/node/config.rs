use std::net::IpAddr;
use std::time::Duration;

use crate::dht::defence::Defences;
use crate::dht::id::NodeId;

/// Settings of a [`Node`](super::Node). `Default` gives the Node.js Grape's defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Our node id; `None` draws one from the seeded RNG.
    pub id: Option<NodeId>,
    /// Bucket size and replication factor (BEP 5: 8).
    pub k: usize,
    /// Whether the four farthest buckets hold 16, 8, 4 and 2 times k nodes (not in BEP 5;
    /// libtorrent's default): lookups start closer to any target, about one hop fewer.
    /// See [`WIDE_BUCKETS`](crate::dht::routing::WIDE_BUCKETS).
    pub wide_buckets: bool,
    /// Queries in flight per lookup (Grape `--dc`). BEP 5 suggests 3, libtorrent uses 5 and
    /// the Node Grape 24. We ask k (8) at once: a Grenache network of up to k + 1 Grapes is
    /// then settled in one round trip, not two or three, which is what a lookup's tail is
    /// made of on a loaded host; on 1000 simulated nodes it costs about 40% more datagrams
    /// for 30-40% lower latency (docs/design.md).
    pub alpha: usize,
    /// A query that got no answer by then has failed (k-rpc uses about 2 s).
    pub query_timeout: Duration,
    /// Longest a whole command may run before it ends with [`QueryError::Timeout`](crate::dht::event::QueryError).
    pub lookup_timeout: Duration,
    /// Lifetime of an announced peer (Grape `--dpa`, 120 s).
    pub peer_max_age: Duration,
    /// Distinct info-hashes kept; past it the stalest is evicted and counted.
    pub max_peer_keys: usize,
    /// Peers kept per info-hash.
    pub max_peers_per_key: usize,
    /// BEP-44 items kept (Grape `--dht_maxValues`, 5000).
    pub max_items: usize,
    /// Lifetime of a BEP-44 item that is not re-put (BEP 44: 2 hours).
    pub item_max_age: Duration,
    /// How our own announces are stored locally: the address other peers should use for us.
    /// `None` stores them as loopback, handed only to loopback queriers (a lone Grape works;
    /// a remote node is never told to dial 127.0.0.1).
    pub local_ip: Option<IpAddr>,
    /// BEP 43: we only query, never answer, and tell others not to add us.
    pub read_only: bool,
    /// How often routing-table upkeep runs (pings of quiet nodes, bucket refresh).
    pub maintenance_interval: Duration,
    /// Rate limits, reply budget and routing-table rules; all on by default.
    pub defences: Defences,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: None,
            k: 8,
            wide_buckets: true,
            alpha: 8,
            query_timeout: Duration::from_secs(2),
            lookup_timeout: Duration::from_secs(30),
            peer_max_age: Duration::from_secs(120),
            max_peer_keys: 1_000_000,
            max_peers_per_key: 1_000,
            max_items: 5_000,
            item_max_age: Duration::from_secs(2 * 3600),
            local_ip: None,
            read_only: false,
            maintenance_interval: Duration::from_secs(60),
            defences: Defences::default(),
        }
    }
}
