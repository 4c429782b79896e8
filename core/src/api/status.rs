//! `GET /status`: one JSON snapshot of the Grape for the dashboard (docs/operators.md).
//!
//! Read-only and bounded: every list stops at a cap and says so (`truncated: true`, with
//! the full count in `total`), so a poll costs the same on a Grape with a million stored
//! keys as on one with ten. Counters are totals since start; the page turns them into
//! rates with `now_ms`, the Grape's own clock (milliseconds since it started).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::metrics::ApiMetrics;
use super::recent::Recent;
use super::watch::Watches;
use crate::dht::id::{Key, hex};
use crate::dht::node::Node;
use crate::dht::routing::{NodeState, RoutingTable};

/// Routing-table nodes listed at most, over both address families.
pub const MAX_NODES_SHOWN: usize = 1024;
/// Rows listed at most in each other table (services, lookups, watches, stored keys, items).
pub const MAX_ROWS_SHOWN: usize = 256;
/// Peers listed at most per looked-up name (`peers_total` gives the full count).
pub const MAX_PEERS_SHOWN: usize = 16;

/// Where this Grape listens, as its adapter bound it; the core itself has no sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// The DHT's UDP address.
    pub dht: Option<SocketAddr>,
    /// The HTTP API's address.
    pub api: Option<SocketAddr>,
    /// The WebSocket API's address, if there is one.
    pub ws: Option<SocketAddr>,
}

/// A service announced through this Grape's API: name and port (0: the DHT port).
pub(crate) type Service = (Key, u16);

/// Everything the snapshot reads, borrowed from the [`Grape`](super::Grape).
pub(crate) struct Sources<'a> {
    pub(crate) now: Instant,
    pub(crate) started: Instant,
    pub(crate) node: &'a Node,
    pub(crate) listeners: &'a Listeners,
    pub(crate) bootstrapped: bool,
    pub(crate) inflight: usize,
    pub(crate) metrics: &'a ApiMetrics,
    pub(crate) services: &'a Recent<Service, ()>,
    pub(crate) lookups: &'a Recent<Key, Vec<SocketAddr>>,
    pub(crate) watches: &'a Watches,
}

/// Renders the `/status` body.
pub(crate) fn render(s: &Sources<'_>) -> Vec<u8> {
    let node = s.node;
    let (table4, table6) = node.routing_tables();
    let mut shown = 0;
    let ipv4 = table_json(table4, s.now, &mut shown);
    let ipv6 = table_json(table6, s.now, &mut shown);
    let body = json!({
        "now_ms": millis(s.now.saturating_duration_since(s.started)),
        "id": node.id().to_string(),
        "listeners": {
            "dht": s.listeners.dht.map(|a| a.to_string()),
            "api": s.listeners.api.map(|a| a.to_string()),
            "ws": s.listeners.ws.map(|a| a.to_string()),
        },
        "bootstrapped": s.bootstrapped,
        "inflight": s.inflight,
        "routing": {
            "nodes": node.routing_table_len(),
            "truncated": shown < node.routing_table_len(),
            "ipv4": ipv4,
            "ipv6": ipv6,
        },
        "services": services_json(s),
        "lookups": lookups_json(s),
        "watches": capped(
            s.watches.watchers().map(|(name, n)| json!({ "name": name_text(name.as_bytes()), "watchers": n })),
            s.watches.len().1,
        ),
        "stored": {
            "keys": capped(
                node.peer_store().keys().map(|(key, peers, at)| json!({
                    "key": name_text(key),
                    "peers": peers,
                    "age_ms": age(s.now, at),
                })),
                node.stored_keys(),
            ),
            "items": capped(
                node.item_store().iter().map(|(target, item, at)| json!({
                    "target": hex(target.as_bytes()),
                    "seq": item.seq(),
                    "size": item.v().len(),
                    "age_ms": age(s.now, at),
                })),
                node.stored_items(),
            ),
        },
        "counters": counters_json(s),
    });
    body.to_string().into_bytes()
}

/// One address family's table, bucket by bucket, counting the nodes listed into `shown`.
fn table_json(table: &RoutingTable, now: Instant, shown: &mut usize) -> Value {
    let buckets: Vec<Value> = (0..table.bucket_count())
        .map(|b| {
            let nodes: Vec<Value> = table
                .bucket_nodes(b, now)
                .take(MAX_NODES_SHOWN.saturating_sub(*shown))
                .map(|n| {
                    json!({
                        "id": n.info.id.to_string(),
                        "addr": n.info.addr.to_string(),
                        "state": state_label(n.state),
                        "heard_ms_ago": age(now, n.last_heard),
                        "failures": n.failures,
                    })
                })
                .collect();
            *shown += nodes.len();
            json!({
                "index": b,
                "size": table.bucket_len(b),
                "capacity": table.capacity(b),
                "nodes": nodes,
            })
        })
        .collect();
    json!({ "nodes": table.len(), "buckets": buckets })
}

/// The services announced here and not yet expired: one not announced again within the
/// peer lifetime is gone from the DHT, so it is gone from the list too.
fn services_json(s: &Sources<'_>) -> Value {
    let max_age = s.node.config().peer_max_age;
    let live = || {
        s.services
            .newest_first()
            .take_while(move |(_, at, ())| s.now.saturating_duration_since(*at) < max_age)
    };
    let rows = live().map(|((name, port), at, ())| {
        let age = s.now.saturating_duration_since(at);
        json!({
            "name": name_text(name.as_bytes()),
            "port": port,
            "age_ms": millis(age),
            "expires_in_ms": millis(max_age.saturating_sub(age)),
        })
    });
    capped(rows, live().count())
}

fn lookups_json(s: &Sources<'_>) -> Value {
    let rows = s.lookups.newest_first().map(|(name, at, peers)| {
        let shown: Vec<String> = peers
            .iter()
            .take(MAX_PEERS_SHOWN)
            .map(ToString::to_string)
            .collect();
        json!({
            "name": name_text(name.as_bytes()),
            "peers": shown,
            "peers_total": peers.len(),
            "age_ms": age(s.now, at),
        })
    });
    capped(rows, s.lookups.len())
}

/// The counters the charts draw, as totals since start.
fn counters_json(s: &Sources<'_>) -> Value {
    let stats = s.node.stats();
    let requests: Map<String, Value> = s
        .metrics
        .requests_by_command()
        .map(|(command, n)| (command.to_owned(), n.into()))
        .collect();
    let (buckets, count, sum) = s.metrics.lookup_histogram();
    let buckets: Vec<Value> = buckets
        .map(|(le, n)| json!({ "le_ms": le * 1000.0, "count": n }))
        .collect();
    let by_method = |counts: &crate::dht::node::MethodCounts| -> Map<String, Value> {
        counts
            .iter()
            .map(|(m, n)| (m.to_owned(), n.into()))
            .collect()
    };
    // Reasons come from the node as it reports them: new ones appear without changes here.
    let dropped: Map<String, Value> = stats
        .dropped
        .iter()
        .map(|(reason, n)| (reason.label().to_owned(), (*n).into()))
        .collect();
    json!({
        "api_requests": requests,
        "lookup_latency": { "buckets": buckets, "count": count, "sum_ms": millis(sum) },
        "krpc_in": by_method(&stats.queries_in),
        "krpc_out": by_method(&stats.queries_out),
        "datagrams_in": stats.datagrams_in,
        "datagrams_out": stats.datagrams_out,
        "dropped": dropped,
    })
}

/// At most [`MAX_ROWS_SHOWN`] of `rows`, with the full count and whether some were left out.
fn capped(rows: impl Iterator<Item = Value>, total: usize) -> Value {
    let items: Vec<Value> = rows.take(MAX_ROWS_SHOWN).collect();
    json!({ "total": total, "truncated": items.len() < total, "items": items })
}

fn state_label(state: NodeState) -> &'static str {
    match state {
        NodeState::Good => "good",
        NodeState::Questionable => "questionable",
        NodeState::Bad => "bad",
    }
}

/// A name as text: itself when it is printable UTF-8, else `hex:` and its hex.
fn name_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("hex:{}", hex(bytes)),
    }
}

fn age(now: Instant, then: Instant) -> u64 {
    millis(now.saturating_duration_since(then))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
