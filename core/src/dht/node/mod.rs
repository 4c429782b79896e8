//! The DHT node: the one place where datagrams, timers and commands meet.
//!
//! A datagram's path: [`Node::handle_datagram`] decodes it ([`crate::dht::krpc`]); a query goes
//! to `server.rs`, which answers from the routing table and the stores; a response or error
//! is matched to our pending query by transaction id (`rpc.rs`) and fed to the lookup that
//! sent it (`traversal.rs`), which may send more queries or finish with an
//! [`Event::Finished`]. Everything leaves through [`Node::poll_transmit`] and
//! [`Node::poll_event`].

mod bounds;
mod config;
mod rpc;
mod server;
mod silent;
mod stats;
mod watch;

pub mod state;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use config::Config;
#[cfg(feature = "sim")]
pub(crate) use silent::SILENT_FOR;
pub use stats::{DropReason, MethodCounts, Stats};
pub use watch::{MAX_WATCHES, MAX_WATCHES_PER_SOURCE, WATCH_TTL};

use crate::dht::bep44::{ImmutableItem, Item, MutableItem, Target};
use crate::dht::defence::{Shield, SourceQuota, Verdict, is_bep42_id, source_key};
use crate::dht::event::{Event, Outcome, QueryError, QueryId};
use crate::dht::id::{Key, NodeId};
use crate::dht::krpc::{Body, ErrorReply, Message, Method, NodeInfo, PutArgs, Query, Response};
use crate::dht::routing::{Insert, RoutingTable};
use crate::dht::storage::{ItemStore, PeerStore};
use crate::dht::token::Tokens;
use crate::dht::traversal::Traversal;
use bounds::Bounds;
use rpc::{Expired, Purpose, Resend, Rpc, TxId};
use silent::Silent;
use watch::Watchers;

/// The `v` we send: "GR" and a version, as BEP 20 suggests for client ids.
const VERSION: &[u8] = b"GR\x00\x02";
/// The first version of ours that answers `unannounce_peer`: only nodes whose `v` says so
/// are sent it, since other nodes would not drop the peer anyway (docs/design.md).
const UNANNOUNCE_SINCE: u16 = 2;
/// The first version of ours that answers `watch_peers` and `peers_changed`.
const WATCH_SINCE: u16 = 2;
/// Outbound queue bound; past it datagrams are dropped and counted (UDP may drop them anyway).
const MAX_TRANSMITS: usize = 1 << 16;
/// Notifications ([`Event::PeersChanged`]) not yet polled; past it they are dropped and
/// counted. A command's [`Event::Finished`] is never dropped: every command ends with its
/// one event, and the commands are bounded by [`MAX_LOOKUPS`] between two drains.
const MAX_EVENTS: usize = 1 << 16;
/// Commands running at once; past it new ones fail at once with `Overloaded`.
const MAX_LOOKUPS: usize = 1 << 14;
/// Peers a lookup collects.
const MAX_PEERS_FOUND: usize = 1_000;
/// Queries a bucket refresh keeps in flight at most: BEP 5's α. No caller waits on a
/// refresh, so it spends time rather than datagrams (the answers to queries still in flight
/// when its bucket fills are wasted).
const REFRESH_ALPHA: usize = 3;
/// Good nodes a join wants in each bucket range, as a share of k: half a bucket.
///
/// A join that looked up k nodes in every range cost ~200 queries at 100,000 nodes,
/// most of a churning network's traffic; half a bucket gives a lookup its first hop into
/// each range all the same, and the rest of the bucket fills as other nodes query us
/// (docs/design.md, "Joining").
const JOIN_FILL_DIVISOR: usize = 2;
/// Seeds are retried while the routing table is empty, from this interval doubling up to a minute.
const REBOOTSTRAP_FIRST: Duration = Duration::from_secs(1);

/// A routing table laid out by `config`.
fn table(id: NodeId, config: &Config) -> RoutingTable {
    RoutingTable::new(id, config.k)
        .with_wide_buckets(config.wide_buckets)
        .with_subnet_rule(config.defences.one_per_subnet)
}

/// `v4` or `v6`, by the family of `addr`: which routing table a node belongs in.
fn by_family<T>(addr: &SocketAddr, v4: T, v6: T) -> T {
    if addr.is_ipv4() { v4 } else { v6 }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The encoded KRPC message.
    pub payload: Vec<u8>,
}

/// A BitTorrent mainline DHT node (BEP 5, 43, 44), with no I/O of its own.
///
/// Inputs: [`handle_datagram`](Node::handle_datagram), [`handle_timeout`](Node::handle_timeout)
/// and the commands ([`bootstrap`](Node::bootstrap), [`get_peers`](Node::get_peers),
/// [`announce`](Node::announce), [`put`](Node::put), [`get`](Node::get)). After any of them,
/// drain [`poll_transmit`](Node::poll_transmit) and [`poll_event`](Node::poll_event), then
/// call `handle_timeout` at [`poll_timeout`](Node::poll_timeout). Time must not go backwards.
#[derive(Debug)]
pub struct Node {
    config: Config,
    id: NodeId,
    rng: ChaCha8Rng,
    table4: RoutingTable,
    table6: RoutingTable,
    tokens: Tokens,
    peers: PeerStore,
    items: ItemStore,
    rpc: Rpc,
    /// Nodes that missed a query: lookups skip them until they answer.
    silent: Silent,
    lookups: BTreeMap<QueryId, Lookup>,
    lookup_deadlines: BTreeSet<(Instant, QueryId)>,
    /// Callers' bounds on single commands ([`Node::end_by`]).
    bounds: Bounds,
    /// Running plain `get_peers` lookups by info-hash, so identical ones share a traversal.
    shared: BTreeMap<Key, QueryId>,
    seeds: Vec<SocketAddr>,
    rebootstrap: Option<(Instant, Duration)>,
    next_maintenance: Instant,
    next_query_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    last_now: Instant,
    /// Names our caller follows (`watch`): their changes become events.
    watching: BTreeSet<Key>,
    /// Other nodes following names stored here.
    watchers: Watchers,
    /// Rate limits on what comes in, byte budget on the answers that go out.
    shield: Shield,
    /// Announces each source IP holds here, capped per source.
    peer_quota: Option<SourceQuota<(Key, SocketAddr)>>,
    /// BEP-44 items each source IP put here, capped per source.
    item_quota: Option<SourceQuota<Target>>,
}

#[derive(Debug)]
enum Kind {
    /// A lookup of our own id; when it ends, the bucket ranges it left short are filled
    /// ([`Node::fill_after_join`]).
    Bootstrap {
        /// Nodes its answers named that are not in the table, by how many leading bits
        /// they share with our id (at most k per range): pinged to fill their ranges
        /// before any refresh.
        named: BTreeMap<usize, Vec<NodeInfo>>,
    },
    /// A lookup of a random id sharing exactly `prefix` leading bits with ours, to know
    /// nodes at that distance. It ends as soon as `want` of them are good in the tables
    /// ([`Node::good_in_range`]), however far from its random target they lie: k for a
    /// bucket's periodic refresh, half that after a join.
    Refresh {
        prefix: usize,
        want: usize,
    },
    GetPeers,
    Get {
        target: Target,
        salt: Vec<u8>,
    },
    /// A traversal that ends by sending a query of its own to the closest nodes that
    /// answered it: only these kinds have a second phase, so no other can be caught in it.
    Store {
        what: Store,
        /// `None` while traversing; the store queries once they are sent.
        sending: Option<Sending>,
    },
}

impl Kind {
    fn store(what: Store) -> Kind {
        Kind::Store {
            what,
            sending: None,
        }
    }

    /// How many of the closest nodes the traversal settles and the store phase reaches.
    ///
    /// An unannounce reaches twice k: the announce stored on the k closest nodes *its*
    /// traversal found, and a later traversal, from a table that has learned more since,
    /// may rank one of them k + 1st. A node past them that holds nothing refuses the query
    /// and is not counted, so the wider reach costs a few datagrams and no false report.
    fn reach(&self, k: usize) -> usize {
        match self {
            Kind::Store {
                what: Store::Unannounce { .. },
                ..
            } => k.saturating_mul(2),
            _ => k,
        }
    }
}

/// What a [`Kind::Store`] sends once its traversal ends.
#[derive(Debug)]
enum Store {
    Announce {
        port: Option<u16>,
    },
    /// Withdraws our announce of `port` from the closest nodes that speak `unannounce_peer`.
    Unannounce {
        port: u16,
        /// Responders of the traversal whose `v` says they speak it.
        speakers: BTreeSet<NodeId>,
    },
    /// A `get_peers` traversal that ends by subscribing with the closest nodes that speak
    /// `watch_peers` (`speakers`: responders whose `v` says so).
    Watch {
        speakers: BTreeSet<NodeId>,
    },
    Put {
        /// Boxed: an item is large, and most lookups are not puts.
        item: Box<Item>,
        cas: Option<i64>,
    },
}

/// Where a lookup starts: the closest nodes that answer, and the marked silent ones among
/// the closest, which it may ask once anyway ([`Node::ask_long_shots`]).
struct Seeds {
    nodes: Vec<NodeInfo>,
    passed_over: Vec<NodeInfo>,
    /// Every node known is bad: they are asked only for want of others.
    cut_off: bool,
}

/// The store queries of a [`Kind::Store`] in flight, and what came back so far.
///
/// A store is best effort: once one node has acked, a query past its soft deadline is
/// not waited for. But while none has, late ones are waited for until their hard
/// deadline, so a busy box whose acks come after a loopback-tight soft timeout does not
/// report an announce that was stored as "All queries failed".
#[derive(Debug)]
struct Sending {
    pending: BTreeSet<TxId>,
    /// Past their soft deadline and still awaited (see above).
    late: BTreeSet<TxId>,
    stored: usize,
    refusal: Option<ErrorReply>,
}

impl Sending {
    fn new(pending: BTreeSet<TxId>) -> Self {
        Self {
            pending,
            late: BTreeSet::new(),
            stored: 0,
            refusal: None,
        }
    }

    /// Takes `tid` off the queries awaited; false if it was not one of them.
    fn settle(&mut self, tid: TxId) -> bool {
        self.pending.remove(&tid) || self.late.remove(&tid)
    }

    /// `tid` is past its soft deadline: true if it is still awaited (nothing is stored yet),
    /// false if it is given up.
    fn overdue(&mut self, tid: TxId) -> bool {
        let awaited = self.pending.remove(&tid) && self.stored == 0;
        if awaited {
            self.late.insert(tid);
        }
        awaited
    }

    fn is_done(&self) -> bool {
        self.pending.is_empty() && (self.stored > 0 || self.late.is_empty())
    }
}

#[derive(Debug)]
struct Lookup {
    kind: Kind,
    traversal: Traversal,
    /// Internal lookups (bucket refresh) end without an event.
    report: bool,
    /// Other commands sharing this traversal.
    waiters: Vec<QueryId>,
    deadline: Instant,
    peers: Vec<SocketAddr>,
    peers_seen: BTreeSet<SocketAddr>,
    best: Option<(Item, NodeId)>,
    /// Queries of ours in flight for this lookup, to forget them when it ends.
    tids: BTreeSet<TxId>,
}

impl Lookup {
    /// Whether the traversal is over and its store queries are out.
    fn is_sending(&self) -> bool {
        matches!(
            self.kind,
            Kind::Store {
                sending: Some(_),
                ..
            }
        )
    }
}

impl Node {
    /// Creates a node. Its id comes from `config.id` or else from the RNG seeded by `seed`.
    pub fn new(config: Config, seed: [u8; 32], now: Instant) -> Node {
        let mut rng = ChaCha8Rng::from_seed(seed);
        let id = config.id.unwrap_or_else(|| NodeId::random(&mut rng));
        let tokens = Tokens::new(&mut rng, now);
        let first_tid = rng.random();
        Node {
            table4: table(id, &config),
            table6: table(id, &config),
            shield: Shield::new(&config.defences, now),
            peer_quota: config.defences.max_peers_per_source.map(|cap| {
                SourceQuota::new(cap, config.peer_max_age, config.defences.exempt_loopback)
            }),
            item_quota: config.defences.max_items_per_source.map(|cap| {
                SourceQuota::new(cap, config.item_max_age, config.defences.exempt_loopback)
            }),
            tokens,
            peers: PeerStore::new(
                config.peer_max_age,
                config.max_peer_keys,
                config.max_peers_per_key,
            ),
            items: ItemStore::new(config.max_items, config.item_max_age),
            rpc: Rpc::new(first_tid, config.query_timeout),
            silent: Silent::default(),
            lookups: BTreeMap::new(),
            lookup_deadlines: BTreeSet::new(),
            bounds: Bounds::default(),
            shared: BTreeMap::new(),
            seeds: Vec::new(),
            rebootstrap: None,
            next_maintenance: now + config.maintenance_interval,
            next_query_id: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            last_now: now,
            watching: BTreeSet::new(),
            watchers: Watchers::default(),
            id,
            rng,
            config,
        }
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The settings the node was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Nodes in the routing tables (IPv4 and IPv6).
    pub fn routing_table_len(&self) -> usize {
        self.table4.len() + self.table6.len()
    }

    /// The IPv4 and IPv6 routing tables.
    pub fn routing_tables(&self) -> (&RoutingTable, &RoutingTable) {
        (&self.table4, &self.table6)
    }

    /// Distinct info-hashes with stored peers.
    pub fn stored_keys(&self) -> usize {
        self.peers.len_keys()
    }

    /// Stored peers over all info-hashes.
    pub fn stored_peers(&self) -> usize {
        self.peers.len_peers()
    }

    /// Stored BEP-44 items.
    pub fn stored_items(&self) -> usize {
        self.items.len()
    }

    /// The announce store, read-only (the dashboard lists it).
    pub fn peer_store(&self) -> &PeerStore {
        &self.peers
    }

    /// The BEP-44 item store, read-only (the dashboard lists it).
    pub fn item_store(&self) -> &ItemStore {
        &self.items
    }

    /// Peers and items dropped because a store was full.
    pub fn evicted(&self) -> (u64, u64) {
        (self.peers.evicted(), self.items.evicted())
    }

    /// Peers and items dropped because their source went over its per-source cap.
    pub fn evicted_by_source(&self) -> (u64, u64) {
        (
            self.peer_quota.as_ref().map_or(0, SourceQuota::evicted),
            self.item_quota.as_ref().map_or(0, SourceQuota::evicted),
        )
    }

    /// Sources banned now for going over the rate limit again and again.
    pub fn banned_sources(&self) -> usize {
        self.shield.banned_now(self.last_now)
    }

    /// Nodes that missed a query of ours and have not answered since: lookups skip them.
    pub fn silent_nodes(&self) -> usize {
        self.silent.len()
    }

    /// Commands still running.
    pub fn running_commands(&self) -> usize {
        self.lookups.len()
    }

    /// Peers stored here for `info_hash`, without asking the network.
    pub fn local_peers(&self, now: Instant, info_hash: &Key, max: usize) -> Vec<SocketAddr> {
        self.peers.get(now, info_hash, max)
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.notify_changes();
        self.transmits.pop_front()
    }

    /// The next event for the caller.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.notify_changes();
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Node::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.rpc.next_deadline(),
            self.lookup_deadlines.first().map(|(t, _)| *t),
            self.bounds.next(),
            Some(self.tokens.next_rotation()),
            self.peers.next_expiry(),
            self.items.next_expiry(),
            Some(self.next_maintenance),
            self.rebootstrap.map(|(t, _)| t),
            self.table4.next_timeout(),
            self.table6.next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Joins the DHT through `seeds` (Grape `--bn`): looks up our own id from them.
    ///
    /// The seeds are kept: while the routing table is empty they are asked again, so
    /// nodes started together find each other whatever order they came up in.
    pub fn bootstrap(&mut self, now: Instant, seeds: &[SocketAddr]) -> QueryId {
        let now = self.tick(now);
        for s in seeds {
            if !self.seeds.contains(s) {
                self.seeds.push(*s);
            }
        }
        self.start_bootstrap(now, REBOOTSTRAP_FIRST, true)
    }

    /// Looks up our own id. While the table is thin and seeds are known, the next such
    /// lookup is due `interval` later: nodes started together find each other whatever
    /// order they came up in.
    fn start_bootstrap(&mut self, now: Instant, interval: Duration, report: bool) -> QueryId {
        if self.is_thin() && !self.seeds.is_empty() {
            self.rebootstrap = Some((now + interval, interval));
        }
        self.start(
            now,
            Key::from(self.id),
            Kind::Bootstrap {
                named: BTreeMap::new(),
            },
            report,
        )
    }

    /// Finds the peers announced under `info_hash`. Identical running lookups share one traversal.
    pub fn get_peers(&mut self, now: Instant, info_hash: Key) -> QueryId {
        let now = self.tick(now);
        if let Some(&running) = self.shared.get(&info_hash) {
            let query = self.next_id();
            if let Some(l) = self.lookups.get_mut(&running) {
                l.waiters.push(query);
                self.stats.lookups_joined += 1;
                return query;
            }
        }
        let query = self.start(now, info_hash.clone(), Kind::GetPeers, true);
        if self.lookups.contains_key(&query) {
            self.shared.insert(info_hash, query);
        }
        query
    }

    /// Announces that a peer serves `info_hash` on `port` (`None`: the port our datagrams
    /// come from, BEP 5's `implied_port`). The peer is also stored locally, at
    /// `config.local_ip`, so a lone node answers its own lookups.
    pub fn announce(&mut self, now: Instant, info_hash: Key, port: Option<u16>) -> QueryId {
        let now = self.tick(now);
        if let Some(port) = port.filter(|p| *p != 0) {
            let peer = self.local_peer(port);
            self.peers.add(now, &info_hash, peer);
        }
        self.start(now, info_hash, Kind::store(Store::Announce { port }), true)
    }

    /// Withdraws an [`announce`](Node::announce) of `port` under `info_hash`: forgets it here
    /// and sends `unannounce_peer` to the closest nodes that speak it. Nodes that do not
    /// (Node Grapes) keep the peer until it expires.
    ///
    /// Ends with [`Outcome::Unannounced`], or at once with [`QueryError::NotAnnounced`] when
    /// this node holds no such announce (nothing is sent then).
    pub fn unannounce(&mut self, now: Instant, info_hash: Key, port: u16) -> QueryId {
        let now = self.tick(now);
        if port == 0 || !self.peers.remove(&info_hash, self.local_peer(port)) {
            let query = self.next_id();
            self.emit(query, Err(QueryError::NotAnnounced));
            return query;
        }
        let kind = Kind::store(Store::Unannounce {
            port,
            speakers: BTreeSet::new(),
        });
        self.start(now, info_hash, kind, true)
    }

    /// Where an announce of `port` on this host is stored locally.
    fn local_peer(&self, port: u16) -> SocketAddr {
        let ip = self
            .config
            .local_ip
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        SocketAddr::new(ip, port)
    }

    /// Stores a BEP-44 item on the nodes closest to its target, and locally.
    ///
    /// A put the local store refuses (a lower `seq`, a `cas` mismatch) ends at once with
    /// [`QueryError::Rejected`].
    pub fn put(&mut self, now: Instant, item: Item, cas: Option<i64>) -> QueryId {
        let now = self.tick(now);
        if let Err(e) = self.items.put(now, item.clone(), cas) {
            let query = self.next_id();
            self.emit(query, Err(QueryError::Rejected(e)));
            return query;
        }
        let target = item.target();
        self.start(
            now,
            target.into(),
            Kind::store(Store::Put {
                item: Box::new(item),
                cas,
            }),
            true,
        )
    }

    /// Fetches a BEP-44 item; `salt` is needed to check a mutable item against its target.
    pub fn get(&mut self, now: Instant, target: Target, salt: Option<Vec<u8>>) -> QueryId {
        let now = self.tick(now);
        let salt = salt.unwrap_or_default();
        let local = self.items.get(now, &target).cloned();
        if let Some(Item::Immutable(item)) = local {
            let query = self.next_id();
            let item = Some(Item::Immutable(item));
            self.emit(query, Ok(Outcome::Got { item, from: None }));
            return query;
        }
        let query = self.start(now, target.into(), Kind::Get { target, salt }, true);
        if let (Some(l), Some(item)) = (self.lookups.get_mut(&query), local) {
            l.best = Some((item, self.id));
        }
        query
    }

    /// Stops a command; it ends with [`QueryError::Cancelled`].
    pub fn cancel(&mut self, query: QueryId) {
        self.end_command(query, QueryError::Cancelled);
    }

    /// Ends the running command `query` with [`QueryError::Timeout`] at `at` unless it ends
    /// sooner: the caller's bound on the request it serves (the Grape API's answer time),
    /// so the caller keeps no timer of its own. A traversal others share runs on for them.
    /// Call it only for a command that has not ended yet.
    pub fn end_by(&mut self, query: QueryId, at: Instant) {
        self.bounds.set(query, at);
    }

    /// Ends one command with `error`; a traversal it shares with others runs on for them.
    fn end_command(&mut self, query: QueryId, error: QueryError) {
        if let Some(l) = self.lookups.get_mut(&query) {
            if l.report && !l.waiters.is_empty() {
                // Others share this traversal: it runs on for them, and only this
                // command ends now.
                l.report = false;
                self.emit(query, Err(error));
            } else {
                self.finish(query, Err(error));
            }
            return;
        }
        // A command sharing another's traversal leaves it alone.
        for l in self.lookups.values_mut() {
            if let Some(i) = l.waiters.iter().position(|w| *w == query) {
                l.waiters.remove(i);
                self.emit(query, Err(error));
                return;
            }
        }
    }

    /// Feeds one received UDP datagram.
    ///
    /// A datagram over its source's rate limit, or from a banned source, is dropped and
    /// counted before it is even decoded.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let now = self.tick(now);
        self.stats.datagrams_in += 1;
        match self.shield.admit(now, from.ip()) {
            Verdict::Allowed => {}
            Verdict::Limited => return self.stats.drop(DropReason::RateLimited),
            Verdict::Banned { new } => {
                if new {
                    self.stats.bans += 1;
                    self.forget_banned(now, from.ip());
                }
                return self.stats.drop(DropReason::Banned);
            }
        }
        let msg = match Message::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(%from, reason = e.kind.as_str(), "dropped datagram");
                self.stats.drop(DropReason::Malformed(e.kind.as_str()));
                self.answer_malformed(now, from, &e);
                return;
            }
        };
        match msg.body {
            Body::Query(query) => self.handle_query(now, from, msg.tid, msg.read_only, query),
            // An answer's `t` is ours: read it as our TxId once (None: not one we send).
            Body::Response(response) => {
                let tid = TxId::from_wire(&msg.tid);
                self.note_speaker(from, tid, response.id, msg.version.as_deref());
                self.handle_response(now, from, tid, response);
            }
            Body::Error(error) => self.handle_error(now, from, TxId::from_wire(&msg.tid), error),
        }
    }

    /// A source just banned loses its nodes in both tables. Its datagrams are dropped from
    /// now on, so its nodes could only cost us pings and, handed out in our answers, cost
    /// other nodes' lookups a soft timeout each: a flood of planted ids ends with the ban.
    fn forget_banned(&mut self, now: Instant, ip: IpAddr) {
        let source = source_key(ip);
        let gone = |a: &SocketAddr| source_key(a.ip()) == source;
        let removed = self.table4.remove_where(now, gone) + self.table6.remove_where(now, gone);
        self.stats.banned_nodes_removed += removed as u64;
        tracing::info!(%source, removed, "banned source's nodes left the routing table");
    }

    /// Runs whatever is due at `now`: query timeouts, expiry, token rotation, table upkeep.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        while let Some((tid, expired)) = self.rpc.poll_expired(now) {
            self.on_expired(now, tid, expired);
        }
        while let Some(&(at, query)) = self.lookup_deadlines.first() {
            if at > now {
                break;
            }
            self.finish(query, Err(QueryError::Timeout));
        }
        while let Some(query) = self.bounds.pop_due(now) {
            self.end_command(query, QueryError::Timeout);
        }
        if self.tokens.next_rotation() <= now {
            self.tokens.handle_timeout(now, &mut self.rng);
        }
        self.peers.expire(now);
        self.items.expire(now);
        self.silent.expire(now);
        if let Some((at, interval)) = self.rebootstrap
            && at <= now
        {
            self.rebootstrap = None;
            if self.is_thin() && !self.seeds.is_empty() {
                self.start_bootstrap(now, (interval * 2).min(Duration::from_secs(60)), false);
            }
        }
        let refresh_due = [self.table4.next_timeout(), self.table6.next_timeout()]
            .into_iter()
            .flatten()
            .any(|t| t <= now);
        if self.next_maintenance <= now || refresh_due {
            self.next_maintenance = now + self.config.maintenance_interval;
            self.watchers.expire(now);
            self.shield.forget_quiet(now);
            if let Some(q) = &mut self.peer_quota {
                q.expire(now);
            }
            if let Some(q) = &mut self.item_quota {
                q.expire(now);
            }
            self.maintain(now);
        }
    }

    fn tick(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn next_id(&mut self) -> QueryId {
        self.next_query_id += 1;
        QueryId(self.next_query_id)
    }

    fn table(&self, addr: &SocketAddr) -> &RoutingTable {
        by_family(addr, &self.table4, &self.table6)
    }

    fn table_mut(&mut self, addr: &SocketAddr) -> &mut RoutingTable {
        by_family(addr, &mut self.table4, &mut self.table6)
    }

    /// The closest known nodes of both families, for starting a lookup: those that missed
    /// a query of ours are passed over, unless nobody else is known. The flag is true when
    /// every node known is bad, so they are asked only for want of others.
    fn closest(&mut self, now: Instant, key: &Key) -> Seeds {
        let k = self.config.k;
        let mut answering = Vec::new();
        let mut all = Vec::new();
        let mut cut_off = true;
        for table in [&self.table4, &self.table6] {
            // Nodes that have answered us first: ids planted by queries alone (a flood)
            // cannot stall a lookup while answering nodes are known.
            let mut closest = table.closest_answered(key.as_bytes(), 2 * k);
            if closest.is_empty() {
                closest = table.closest(key.as_bytes(), 2 * k);
            }
            if closest.is_empty() {
                // Only bad nodes are left (an outage failed them all): ask them rather
                // than nobody, or this node stays cut off from a network that is back.
                closest = table.closest_any(key.as_bytes(), 2 * k);
            } else {
                cut_off = false;
            }
            // Twice k, so that passing over silent nodes still leaves k.
            answering.extend(
                closest
                    .iter()
                    .filter(|n| !self.silent.contains(now, &n.addr))
                    .take(k)
                    .copied(),
            );
            all.extend(closest.into_iter().take(k));
        }
        if answering.is_empty() {
            return Seeds {
                nodes: all,
                passed_over: Vec::new(),
                cut_off,
            };
        }
        let passed_over: Vec<NodeInfo> =
            all.into_iter().filter(|n| !answering.contains(n)).collect();
        self.stats.skipped_silent += passed_over.len() as u64;
        Seeds {
            nodes: answering,
            passed_over,
            cut_off,
        }
    }

    /// Upkeep of the routing tables: pings nodes gone quiet, refreshes idle buckets.
    fn maintain(&mut self, now: Instant) {
        let mut pings = self.table4.take_pings(now);
        pings.extend(self.table6.take_pings(now));
        for node in pings {
            self.ping(now, node);
        }
        let mut targets = self.table4.refresh(now, &mut self.rng);
        targets.extend(self.table6.refresh(now, &mut self.rng));
        for target in targets {
            let prefix = self.id.shared_prefix_len(&target);
            self.refresh_range(now, target, prefix, self.config.k);
        }
    }

    /// Starts a refresh of the bucket range `prefix` towards `target`, unless `want` of
    /// its nodes answered lately: then there is nothing to find (and `start` would still
    /// ask the lookup's long shots before `advance` could end it).
    fn refresh_range(&mut self, now: Instant, target: NodeId, prefix: usize, want: usize) {
        if self.good_in_range(prefix) >= want {
            return;
        }
        self.start(
            now,
            Key::from(target),
            Kind::Refresh { prefix, want },
            false,
        );
    }

    /// Good nodes sharing exactly `prefix` leading bits with our id, in both tables: a
    /// bucket refresh is after k of them, not the k closest to its random target, so it
    /// ends once they are known.
    fn good_in_range(&self, prefix: usize) -> usize {
        let now = self.last_now;
        self.table4.good_in_range(prefix, now) + self.table6.good_in_range(prefix, now)
    }

    /// Fewer than k nodes known: keep asking the seeds, since a lost answer during
    /// bootstrap can leave a node knowing only its seed (found by the simulator).
    fn is_thin(&self) -> bool {
        self.routing_table_len() < self.config.k
    }

    /// After the bootstrap lookup: fills every bucket range but our own's to half a bucket,
    /// so a newcomer knows nodes at every distance, not just near itself.
    ///
    /// A range short of that first gets pings to the nodes the bootstrap's answers named in
    /// it (`named`; BEP 5 verifies a node with a ping, one query where a lookup costs ~12);
    /// only a range they cannot fill is refreshed by a lookup, as libtorrent refreshes every
    /// bucket after bootstrap. The rest of each bucket fills as other nodes query us
    /// ([`RoutingTable::heard_query`]), and the periodic refresh keeps k.
    fn fill_after_join(&mut self, now: Instant, mut named: BTreeMap<usize, Vec<NodeInfo>>) {
        // A lookup searches both tables, so one pass over the deeper table's buckets serves both.
        let buckets = [&self.table4, &self.table6]
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.bucket_count())
            .max()
            .unwrap_or(0);
        let want = (self.config.k / JOIN_FILL_DIVISOR).max(1);
        for prefix in 0..buckets.saturating_sub(1) {
            let have = self.table4.bucket_len(prefix) + self.table6.bucket_len(prefix);
            let missing = want.saturating_sub(have);
            if missing == 0 {
                continue; // the bucket already knows enough nodes at that distance
            }
            let heard: Vec<NodeInfo> = named
                .remove(&prefix)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !self.table(&n.addr).contains(&n.id))
                .take(missing)
                .collect();
            let short = heard.len() < missing;
            for node in heard {
                self.ping(now, node);
            }
            if short {
                let target = self.id.random_in_bucket(prefix, &mut self.rng);
                self.refresh_range(now, target, prefix, want);
            }
        }
    }

    fn ping(&mut self, now: Instant, node: NodeInfo) {
        self.send_query(
            now,
            node.addr,
            Some(node.id),
            Method::Ping,
            Purpose::Ping,
            Resend::Never,
        );
    }

    /// Records a node we heard from and runs the pings the table asks for.
    fn heard(&mut self, now: Instant, node: NodeInfo, responded: bool) {
        let table = self.table_mut(&node.addr);
        let insert = if responded {
            table.heard_response(now, node)
        } else {
            table.heard_query(now, node)
        };
        match insert {
            Insert::Cached { ping } => {
                for n in ping {
                    self.ping(now, n);
                }
            }
            Insert::Ignored(why) => self.stats.refused(why),
            Insert::Added if !is_bep42_id(&node.id, node.addr.ip()) => {
                self.stats.unverified_ids += 1;
            }
            Insert::Added | Insert::Updated => {}
        }
        if self.rebootstrap.is_some() && !self.is_thin() {
            self.rebootstrap = None;
        }
    }

    /// Creates a command's lookup and sends its first queries.
    fn start(&mut self, now: Instant, target: Key, kind: Kind, report: bool) -> QueryId {
        let query = self.next_id();
        if self.lookups.len() >= MAX_LOOKUPS {
            self.stats.drop(DropReason::TooManyCommands);
            if report {
                self.emit(query, Err(QueryError::Overloaded));
            }
            return query;
        }
        let Seeds {
            nodes: seeds,
            passed_over,
            cut_off,
        } = self.closest(now, &target);
        let reach = kind.reach(self.config.k);
        let mut traversal = Traversal::new(target, reach, self.config.alpha, &seeds);
        // A thin table may hold only nodes that know little, and one whose nodes all failed
        // may hold only the dead: ask the configured seeds too.
        let anonymous: Vec<SocketAddr> = if cut_off || self.is_thin() {
            let known: Vec<SocketAddr> = seeds.iter().map(|n| n.addr).collect();
            self.seeds
                .iter()
                .filter(|s| !known.contains(s))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        for _ in &anonymous {
            traversal.anonymous_sent();
        }
        let deadline = now + self.config.lookup_timeout;
        self.lookup_deadlines.insert((deadline, query));
        self.lookups.insert(
            query,
            Lookup {
                kind,
                traversal,
                report,
                waiters: Vec::new(),
                deadline,
                peers: Vec::new(),
                peers_seen: BTreeSet::new(),
                best: None,
                tids: BTreeSet::new(),
            },
        );
        for addr in anonymous {
            self.send_lookup_query(now, query, addr, None, Resend::AtSoftDeadline);
        }
        self.ask_long_shots(now, query, passed_over, None);
        self.advance(now, query);
        query
    }

    /// Sends what a lookup may send now, and ends its traversal when it is done (a
    /// refresh also once its range is known: [`Node::good_in_range`]).
    fn advance(&mut self, now: Instant, query: QueryId) {
        if let Some(Lookup {
            kind: Kind::Refresh { prefix, want },
            ..
        }) = self.lookups.get(&query)
        {
            let prefix = *prefix;
            let missing = want.saturating_sub(self.good_in_range(prefix));
            if missing == 0 {
                self.end_traversal(now, query);
                return;
            }
            let own = self.id;
            if let Some(l) = self.lookups.get_mut(&query) {
                // No more queries in flight than nodes still missing: the answers of the
                // others would come after the refresh ended. And one at a time while no
                // node of the range is known: the first answer from outside it names nodes
                // inside, and more queries outside would only name the same ones.
                let inside = l
                    .traversal
                    .nearest()
                    .is_some_and(|n| own.shared_prefix_len(&n) == prefix);
                let bound = if inside {
                    missing.min(REFRESH_ALPHA)
                } else {
                    1
                };
                l.traversal.set_alpha(bound.min(self.config.alpha));
            }
        }
        loop {
            if self.rpc.is_full() {
                return;
            }
            let Some(l) = self.lookups.get_mut(&query) else {
                return;
            };
            if l.is_sending() {
                return;
            }
            let Some(next) = l.traversal.next_query() else {
                break;
            };
            self.send_lookup_query(now, query, next.addr, Some(next.id), Resend::AtSoftDeadline);
        }
        let done = self
            .lookups
            .get(&query)
            .is_some_and(|l| !l.is_sending() && l.traversal.is_done());
        if done {
            self.end_traversal(now, query);
        }
    }

    /// Asks the marked silent nodes a lookup met, those not asked for
    /// [`silent::PROBE_EVERY`], as its long shots ([`Traversal::long_shot`]): once each, no
    /// resend. `named_by`: the node whose answer named them; `None` for our own table's.
    fn ask_long_shots(
        &mut self,
        now: Instant,
        query: QueryId,
        marked: Vec<NodeInfo>,
        named_by: Option<NodeId>,
    ) {
        for n in marked {
            if !self.silent.take_probe(now, &n.addr) {
                continue;
            }
            let Some(l) = self.lookups.get_mut(&query) else {
                return;
            };
            if l.traversal.long_shot(n, named_by.as_ref()) {
                self.stats.long_shots += 1;
                self.send_lookup_query(now, query, n.addr, Some(n.id), Resend::Never);
            }
        }
    }

    fn send_lookup_query(
        &mut self,
        now: Instant,
        query: QueryId,
        to: SocketAddr,
        id: Option<NodeId>,
        resend: Resend,
    ) {
        let Some(l) = self.lookups.get(&query) else {
            return;
        };
        let target = l.traversal.target().clone();
        let method = match &l.kind {
            Kind::Bootstrap { .. } | Kind::Refresh { .. } => Method::FindNode { target },
            Kind::Get { .. }
            | Kind::Store {
                what: Store::Put { .. },
                ..
            } => Method::Get { target, seq: None },
            Kind::GetPeers | Kind::Store { .. } => Method::GetPeers { info_hash: target },
        };
        if let Some(tid) = self.send_query(now, to, id, method, Purpose::Lookup(query), resend)
            && let Some(l) = self.lookups.get_mut(&query)
        {
            l.tids.insert(tid);
        }
    }

    /// The traversal found the closest nodes: report, or go on to store on them.
    fn end_traversal(&mut self, now: Instant, query: QueryId) {
        let Some(l) = self.lookups.get_mut(&query) else {
            return;
        };
        let k = l.kind.reach(self.config.k);
        let stores: Vec<(NodeInfo, Method)> = match &l.kind {
            Kind::Bootstrap { .. } | Kind::Refresh { .. } => {
                if let Kind::Bootstrap { named } = &mut l.kind {
                    let named = std::mem::take(named);
                    self.fill_after_join(now, named);
                }
                let table_size = self.table4.len() + self.table6.len();
                self.finish(query, Ok(Outcome::Bootstrapped { table_size }));
                return;
            }
            Kind::GetPeers => {
                let outcome = self.peers_outcome(now, query);
                self.finish(query, outcome);
                return;
            }
            Kind::Get { .. } => {
                let (item, from) = match l.best.take() {
                    Some((item, from)) => (Some(item), (from != self.id).then_some(from)),
                    None => (None, None),
                };
                self.finish(query, Ok(Outcome::Got { item, from }));
                return;
            }
            Kind::Store {
                sending: Some(_), ..
            } => return,
            Kind::Store {
                what: Store::Announce { port },
                ..
            } => {
                let info_hash = l.traversal.target().clone();
                l.traversal
                    .closest_responded(k)
                    .into_iter()
                    .filter_map(|(node, token)| Some((node, token?)))
                    .map(|(node, token)| {
                        let method = Method::AnnouncePeer {
                            info_hash: info_hash.clone(),
                            port: port.unwrap_or(0),
                            implied_port: port.is_none(),
                            token,
                        };
                        (node, method)
                    })
                    .collect()
            }
            Kind::Store {
                what: Store::Watch { speakers },
                ..
            } => watch::subscriptions(&l.traversal, k, speakers),
            Kind::Store {
                what: Store::Put { item, cas },
                ..
            } => l
                .traversal
                .closest_responded(k)
                .into_iter()
                .filter_map(|(node, token)| Some((node, token?)))
                .map(|(node, token)| (node, Method::Put(put_args(item, *cas, token))))
                .collect(),
            Kind::Store {
                what: Store::Unannounce { port, speakers },
                ..
            } => unannounces(&l.traversal, k, *port, speakers),
        };
        let mut pending = BTreeSet::new();
        for (node, method) in stores {
            if let Some(tid) = self.send_query(
                now,
                node.addr,
                Some(node.id),
                method,
                Purpose::Store(query),
                Resend::Never,
            ) {
                pending.insert(tid);
            }
        }
        if let Some(l) = self.lookups.get_mut(&query) {
            l.tids.extend(pending.iter().copied());
            if let Kind::Store { sending, .. } = &mut l.kind {
                *sending = Some(Sending::new(pending));
            }
        }
        self.check_stored(query);
    }

    /// Ends a storing phase once every store query was answered or gave up.
    fn check_stored(&mut self, query: QueryId) {
        let Some(l) = self.lookups.get(&query) else {
            return;
        };
        let Kind::Store {
            what,
            sending: Some(sending),
        } = &l.kind
        else {
            return;
        };
        if !sending.is_done() {
            return;
        }
        for tid in &sending.late {
            self.rpc.forget(*tid);
        }
        let Sending {
            stored, refusal, ..
        } = sending;
        let stored = *stored;
        let result = match (what, refusal) {
            // Subscribing is best effort: the watch answers what the traversal found.
            (Store::Watch { .. }, _) => self.peers_outcome(self.last_now, query),
            (Store::Put { .. }, Some(e)) if stored == 0 => Err(QueryError::AllFailed {
                code: Some(e.code),
                message: e.message.clone(),
            }),
            (Store::Put { item, .. }, _) => Ok(Outcome::Stored {
                target: item.target(),
                stored_at: stored,
            }),
            (Store::Unannounce { .. }, _) => Ok(Outcome::Unannounced { dropped_at: stored }),
            (Store::Announce { .. }, _) => Ok(Outcome::Announced {
                peers: l.peers.clone(),
                stored_at: stored,
            }),
        };
        self.finish(query, result);
    }

    fn peers_outcome(&self, now: Instant, query: QueryId) -> Result<Outcome, QueryError> {
        let Some(l) = self.lookups.get(&query) else {
            return Err(QueryError::Cancelled);
        };
        let mut peers = self
            .peers
            .get(now, l.traversal.target(), self.config.max_peers_per_key);
        for p in &l.peers {
            if !peers.contains(p) {
                peers.push(*p);
            }
        }
        Ok(Outcome::Peers { peers })
    }

    /// Ends a command: forgets its queries and reports it (and those sharing it).
    fn finish(&mut self, query: QueryId, result: Result<Outcome, QueryError>) {
        let Some(l) = self.lookups.remove(&query) else {
            return;
        };
        self.lookup_deadlines.remove(&(l.deadline, query));
        if self.shared.get(l.traversal.target()) == Some(&query) {
            self.shared.remove(l.traversal.target());
        }
        crate::dht::release_empty_map(&mut self.lookups);
        crate::dht::release_empty_set(&mut self.lookup_deadlines);
        crate::dht::release_empty_map(&mut self.shared);
        for tid in &l.tids {
            self.rpc.orphan(*tid);
        }
        tracing::trace!(
            ?query,
            rounds = l.traversal.rounds(),
            ok = result.is_ok(),
            "command ended"
        );
        for w in l.waiters {
            self.emit(w, result.clone());
        }
        if l.report {
            self.emit(query, result);
        }
    }

    /// Ends one command with its one event; every way a command ends comes through here.
    fn emit(&mut self, query: QueryId, result: Result<Outcome, QueryError>) {
        self.bounds.clear(query);
        if result.is_ok() {
            self.stats.commands_ok += 1;
        } else {
            self.stats.commands_failed += 1;
        }
        self.push_event(Event::Finished { query, result });
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS && !matches!(event, Event::Finished { .. }) {
            self.stats.drop(DropReason::EventQueueFull);
            return;
        }
        self.events.push_back(event);
    }

    /// Encodes and queues a query; `None` when the pending table is full.
    fn send_query(
        &mut self,
        now: Instant,
        to: SocketAddr,
        id: Option<NodeId>,
        method: Method,
        purpose: Purpose,
        resend: Resend,
    ) -> Option<TxId> {
        if self.rpc.is_full() {
            self.stats.drop(DropReason::PendingFull);
            return None;
        }
        let tid = self.rpc.start(now, to, id, purpose);
        self.stats.queries_out.bump(&method);
        let msg = Message {
            tid: tid.to_bytes().to_vec(),
            version: Some(VERSION.to_vec()),
            read_only: self.config.read_only,
            body: Body::Query(Query {
                id: self.id,
                method,
            }),
        };
        let datagram = msg.encode();
        if resend == Resend::AtSoftDeadline {
            self.rpc.resend_at_soft_deadline(tid, datagram.clone());
        }
        self.transmit(to, datagram);
        Some(tid)
    }

    fn transmit(&mut self, to: SocketAddr, payload: Vec<u8>) {
        if self.transmits.len() >= MAX_TRANSMITS {
            self.stats.drop(DropReason::TransmitQueueFull);
            return;
        }
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { to, payload });
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, tid: Option<TxId>, r: Response) {
        let Some((tid, pending)) = tid.and_then(|t| Some((t, self.rpc.finish(now, t, from)?)))
        else {
            self.stats.drop(DropReason::UnexpectedResponse);
            return;
        };
        self.stats.responses_in += 1;
        self.silent.clear(&from);
        let node = NodeInfo {
            id: r.id,
            addr: from,
        };
        self.heard(now, node, true);
        let query = match pending.purpose {
            Purpose::Ping | Purpose::Notify | Purpose::Ended => return,
            Purpose::Store(query) => {
                if let Some(s) = self.sending_mut(query)
                    && s.settle(tid)
                {
                    s.stored += 1;
                }
                self.check_stored(query);
                return;
            }
            Purpose::Lookup(query) => query,
        };
        let own = self.id;
        let Some(l) = self.lookups.get_mut(&query) else {
            return;
        };
        l.tids.remove(&tid);
        if pending.id.is_none() {
            l.traversal.anonymous_done(pending.stale);
        } else if pending.id != Some(r.id)
            && let Some(expected) = pending.id
        {
            // The address now answers with another id: the node we meant is gone.
            l.traversal.on_failure(&expected);
        }
        let mut nodes: Vec<NodeInfo> = r.nodes.iter().chain(&r.nodes6).copied().collect();
        nodes.retain(|n| n.id != own);
        // Another node may still hand out a host we banned: it would not answer us.
        let unbanned = nodes.len();
        nodes.retain(|n| !self.shield.is_banned(now, n.addr.ip()));
        self.stats.skipped_banned += (unbanned - nodes.len()) as u64;
        let (silent, nodes): (Vec<NodeInfo>, Vec<NodeInfo>) = nodes
            .into_iter()
            .partition(|n| self.silent.contains(now, &n.addr));
        self.stats.skipped_silent += silent.len() as u64;
        let mut early = false;
        match &mut l.kind {
            Kind::GetPeers
            | Kind::Store {
                what: Store::Announce { .. } | Store::Watch { .. },
                ..
            } => {
                for p in &r.values {
                    if l.peers.len() < MAX_PEERS_FOUND
                        && p.port() != 0
                        && !p.ip().is_unspecified()
                        && l.peers_seen.insert(*p)
                    {
                        l.peers.push(*p);
                    }
                }
            }
            Kind::Get { target, salt } => {
                if let Some(item) = verified_item(&r, target, salt) {
                    early = matches!(item, Item::Immutable(_));
                    let better = match (&l.best, &item) {
                        (Some((Item::Mutable(old), _)), Item::Mutable(new)) => {
                            new.seq() > old.seq()
                        }
                        (Some(_), _) => false,
                        (None, _) => true,
                    };
                    if better {
                        l.best = Some((item, r.id));
                    }
                } else if r.v.is_some() {
                    self.stats.drop(DropReason::BadItem);
                }
            }
            Kind::Bootstrap { named } => {
                // Only nodes not in the table: one that answers us is in it now.
                if let Some(range) = named.get_mut(&own.shared_prefix_len(&node.id)) {
                    range.retain(|n| *n != node);
                }
                let k = self.config.k;
                for n in &nodes {
                    let table = by_family(&n.addr, &self.table4, &self.table6);
                    let range = named.entry(own.shared_prefix_len(&n.id)).or_default();
                    if range.len() < k && !range.contains(n) && !table.contains(&n.id) {
                        range.push(*n);
                    }
                }
            }
            Kind::Refresh { .. }
            | Kind::Store {
                what: Store::Put { .. } | Store::Unannounce { .. },
                ..
            } => {}
        }
        if let Some(l) = self.lookups.get_mut(&query) {
            l.traversal.on_response(node, &nodes, r.token.clone());
            self.ask_long_shots(now, query, silent, Some(node.id));
        }
        if early {
            self.end_traversal(now, query);
        } else {
            self.advance(now, query);
        }
    }

    fn handle_error(&mut self, now: Instant, from: SocketAddr, tid: Option<TxId>, e: ErrorReply) {
        self.stats.errors_in += 1;
        let Some((tid, pending)) = tid.and_then(|t| Some((t, self.rpc.finish(now, t, from)?)))
        else {
            self.stats.drop(DropReason::UnexpectedError);
            return;
        };
        tracing::debug!(%from, code = e.code, message = %e.message, "KRPC error reply");
        self.silent.clear(&from);
        match pending.purpose {
            Purpose::Ping | Purpose::Notify | Purpose::Ended => {}
            Purpose::Store(query) => {
                if let Some(s) = self.sending_mut(query) {
                    s.settle(tid);
                    s.refusal.get_or_insert(e);
                }
                self.check_stored(query);
            }
            Purpose::Lookup(query) => {
                self.lookup_query_failed(now, query, tid, pending.id, pending.stale)
            }
        }
    }

    fn on_expired(&mut self, now: Instant, tid: TxId, expired: Expired) {
        match expired {
            Expired::Soft(p) => {
                let first = !p.stale;
                if first && !matches!(p.purpose, Purpose::Store(_)) {
                    self.silent.mark(now, p.to);
                }
                match p.purpose {
                    Purpose::Lookup(query) => {
                        if let Some(datagram) = p.resend {
                            self.stats.resent += 1;
                            self.transmit(p.to, datagram);
                        }
                        if let Some(l) = self.lookups.get_mut(&query) {
                            match p.id {
                                Some(id) => l.traversal.on_stale(&id),
                                None if first => l.traversal.anonymous_stale(),
                                None => {}
                            }
                        }
                        self.advance(now, query);
                    }
                    Purpose::Store(query) => {
                        if !self.sending_mut(query).is_some_and(|s| s.overdue(tid)) {
                            // A store is best effort: don't hold the command for a lost ack.
                            self.rpc.forget(tid);
                        }
                        self.check_stored(query);
                    }
                    Purpose::Ping | Purpose::Notify | Purpose::Ended => {}
                }
            }
            Expired::Hard(p) => {
                self.stats.timeouts += 1;
                self.silent.mark(now, p.to);
                if let Some(id) = p.id {
                    let _ = self.table_mut(&p.to).failed(now, &id);
                }
                match p.purpose {
                    Purpose::Lookup(query) => {
                        self.lookup_query_failed(now, query, tid, p.id, p.stale);
                    }
                    Purpose::Store(query) => {
                        if let Some(s) = self.sending_mut(query) {
                            s.settle(tid);
                        }
                        self.check_stored(query);
                    }
                    Purpose::Ping | Purpose::Notify | Purpose::Ended => {}
                }
            }
        }
    }

    /// The store queries of command `query`, once it has sent them.
    fn sending_mut(&mut self, query: QueryId) -> Option<&mut Sending> {
        match self.lookups.get_mut(&query) {
            Some(Lookup {
                kind: Kind::Store {
                    sending: Some(s), ..
                },
                ..
            }) => Some(s),
            _ => None,
        }
    }
}

impl Node {
    /// A lookup's query got an error reply or timed out for good: the traversal counts that
    /// node (or, for a bootstrap address, that slot) as failed and moves on. One place, so an
    /// error and a timeout cannot come to differ.
    fn lookup_query_failed(
        &mut self,
        now: Instant,
        query: QueryId,
        tid: TxId,
        id: Option<NodeId>,
        stale: bool,
    ) {
        if let Some(l) = self.lookups.get_mut(&query) {
            l.tids.remove(&tid);
            match id {
                Some(id) => l.traversal.on_failure(&id),
                None => l.traversal.anonymous_done(stale),
            }
        }
        self.advance(now, query);
    }

    /// Records that the node answering a step of an unannounce or a watch speaks the query
    /// that will end it, as its `v` says.
    fn note_speaker(
        &mut self,
        from: SocketAddr,
        tid: Option<TxId>,
        id: NodeId,
        version: Option<&[u8]>,
    ) {
        let Some(Purpose::Lookup(query)) =
            tid.and_then(|t| self.rpc.peek(t, from)).map(|p| p.purpose)
        else {
            return;
        };
        let Some(l) = self.lookups.get_mut(&query) else {
            return;
        };
        let (speakers, since) = match &mut l.kind {
            Kind::Store {
                what: Store::Unannounce { speakers, .. },
                ..
            } => (speakers, UNANNOUNCE_SINCE),
            Kind::Store {
                what: Store::Watch { speakers },
                ..
            } => (speakers, WATCH_SINCE),
            _ => return,
        };
        if speaks(version, since) {
            speakers.insert(id);
        }
    }
}

/// Whether a node's `v` says it is one of ours, at version `since` or later.
fn speaks(version: Option<&[u8]>, since: u16) -> bool {
    matches!(version, Some([b'G', b'R', hi, lo]) if u16::from_be_bytes([*hi, *lo]) >= since)
}

/// The closest responders of a traversal that gave a token and speak our query: the nodes
/// an announce of its target goes to, less those that would not understand the query.
fn closest_speakers(
    traversal: &Traversal,
    k: usize,
    speakers: &BTreeSet<NodeId>,
) -> impl Iterator<Item = (NodeInfo, Vec<u8>)> {
    traversal
        .closest_responded(k)
        .into_iter()
        .filter(|(node, _)| speakers.contains(&node.id))
        .filter_map(|(node, token)| Some((node, token?)))
}

/// The `unannounce_peer` queries ending an unannounce.
fn unannounces(
    traversal: &Traversal,
    k: usize,
    port: u16,
    speakers: &BTreeSet<NodeId>,
) -> Vec<(NodeInfo, Method)> {
    let info_hash = traversal.target();
    closest_speakers(traversal, k, speakers)
        .map(|(node, token)| {
            let method = Method::UnannouncePeer {
                info_hash: info_hash.clone(),
                port,
                token,
            };
            (node, method)
        })
        .collect()
}

fn put_args(item: &Item, cas: Option<i64>, token: Vec<u8>) -> PutArgs {
    match item {
        Item::Immutable(i) => PutArgs {
            token,
            v: i.v().to_vec(),
            k: None,
            sig: None,
            seq: None,
            salt: None,
            cas: None,
        },
        Item::Mutable(m) => PutArgs {
            token,
            v: m.v().to_vec(),
            k: Some(*m.k()),
            sig: Some(*m.sig()),
            seq: Some(m.seq()),
            salt: (!m.salt().is_empty()).then(|| m.salt().to_vec()),
            cas,
        },
    }
}

/// The item in a `get` response, if it is well formed and belongs to `target`.
fn verified_item(r: &Response, target: &Target, salt: &[u8]) -> Option<Item> {
    let v = r.v.clone()?;
    let item = match (r.k, r.sig, r.seq) {
        (Some(k), Some(sig), Some(seq)) => {
            Item::Mutable(MutableItem::new(k, salt.to_vec(), seq, v, sig).ok()?)
        }
        (None, None, _) => Item::Immutable(ImmutableItem::new(v).ok()?),
        _ => return None,
    };
    (item.target() == *target).then_some(item)
}

#[cfg(test)]
mod defence_tests;
#[cfg(test)]
mod tests;
