//! A deterministic network simulator: many hosts in one process, on virtual time.
//!
//! [`Sim`] owns the hosts, one seeded RNG and a queue of datagrams and messages in flight.
//! A host is anything sans-IO behind the [`Host`] trait: a bare DHT [`Node`], a Grape with
//! its API ([`GrapeHost`]), a peer client whose HTTP exchanges travel the simulated network
//! ([`ClientHost`]), an echo RPC server ([`EchoHost`]). Each [`Sim::step`] jumps to the
//! earliest thing due (an arrival or a host's [`poll_timeout`](Host::poll_timeout)), feeds
//! it to that one host, and drains the host: what it sends is scheduled on its link
//! (latency, jitter, loss, duplicates drawn from the simulator's RNG; HTTP only delayed, or
//! refused when the other end is gone), its events are queued for the caller. Hosts with
//! nothing due cost nothing, so ten thousand idle nodes are cheap, and virtual time
//! outruns real time. [`scenario`] drives the whole system with random commands against a
//! reference model.
//!
//! Same seed, same script, same run: [`Sim::trace_hash`] hashes every delivered datagram
//! and every event, so a test can assert that two runs agree, and a failing test only
//! needs its seed printed to be replayed. In debug builds the simulator also checks the
//! nodes after every step (see [`Sim::set_checks`]) and panics, naming the seed, when one
//! breaks an invariant.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use grenache_core::dht::{Key, Outcome};
//! use grenache_core::sim::Sim;
//!
//! let mut sim = Sim::new(7, Instant::now());
//! let seed = sim.spawn(None);
//! let nodes: Vec<SocketAddr> = (0..20).map(|_| sim.spawn(None)).collect();
//! for &n in &nodes {
//!     sim.command(n, |node, now| node.bootstrap(now, &[seed]));
//! }
//! sim.run_for(Duration::from_secs(10));
//!
//! let key = Key::new(b"rest:net:util").unwrap();
//! let q = sim.command(nodes[0], |node, now| node.announce(now, key.clone(), Some(4000))).unwrap();
//! assert!(sim.wait_for(nodes[0], q).unwrap().is_ok());
//! let q = sim.command(nodes[9], |node, now| node.get_peers(now, key.clone())).unwrap();
//! let Some(Ok(Outcome::Peers { peers })) = sim.wait_for(nodes[9], q) else { panic!() };
//! assert!(peers.contains(&SocketAddr::new(nodes[0].ip(), 4000)));
//! ```

mod client_host;
mod echo;
mod grape_host;
mod host;
mod link;
mod probe;
pub mod scenario;
mod trace;

use std::any::Any;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use client_host::ClientHost;
pub use echo::EchoHost;
pub use grape_host::GrapeHost;
pub use host::{Host, HostEvent, HttpAnswer, HttpCall, Output, Payload};
pub use link::{Burst, PathConfig};
pub use trace::TraceEntry;

use crate::api::{GrapeConfig, RequestId};
use crate::dht::event::{Event, Outcome, QueryError, QueryId};
use crate::dht::id::Key;
use crate::dht::krpc::{Body, Message, NodeInfo};
use crate::dht::node::{Config, Node};
use crate::peer::{ClientConfig, ConfigError, TransportError};
use probe::Probe;
use trace::Trace;

/// Datagrams in flight at once; past it new ones are dropped and counted.
const MAX_IN_FLIGHT: usize = 1 << 22;
/// Events kept per node until the caller takes them; past it the oldest is dropped.
const MAX_EVENTS: usize = 4096;
/// Finished query ids remembered per node to catch a second `Finished`.
const MAX_FINISHED: usize = 1 << 16;
/// Command records kept; past it the smallest key is forgotten.
const MAX_RECORDS: usize = 1 << 18;
/// Violations kept when checks do not panic.
const MAX_VIOLATIONS: usize = 64;
/// Routing tables are checked on one step in this many.
const ROUTING_CHECK_EVERY: u64 = 8;
/// Port of automatically addressed nodes (the BitTorrent DHT's usual one).
const AUTO_PORT: u16 = 6881;
/// How long [`Sim::wait_for`] runs before giving up, unless changed.
const DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// Where a node's timer is moved when it asks to be woken at once again.
const BUSY_LOOP_BACKOFF: Duration = Duration::from_millis(1);

/// Counters of what the simulated network did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Steps taken (datagrams delivered or dropped on arrival, timers fired).
    pub steps: u64,
    /// Datagrams the nodes sent.
    pub sent: u64,
    /// Datagrams handed to their destination.
    pub delivered: u64,
    /// Datagrams lost on their link.
    pub lost: u64,
    /// Datagrams cut by a partition.
    pub partitioned: u64,
    /// Datagrams to an address with no node, or whose sender or receiver died in flight.
    pub unreachable: u64,
    /// Extra copies delivered by duplicating links.
    pub duplicated: u64,
    /// Datagrams dropped because too many were in flight.
    pub overflow: u64,
    /// Node timers fired.
    pub timeouts: u64,
    /// Events the nodes reported.
    pub events: u64,
    /// Events dropped because a node's queue was full (the caller never took them).
    pub events_dropped: u64,
    /// Nodes started.
    pub spawned: u64,
    /// Nodes stopped.
    pub killed: u64,
    /// Queries dropped on arrival at a silent node (see [`Sim::set_silent`]).
    pub silenced: u64,
}

/// What the simulator saw of one command issued through [`Sim::command`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandRecord {
    /// When it was issued (virtual time since the epoch).
    pub issued: Duration,
    /// When its `Finished` event came, if it has.
    pub finished: Option<Duration>,
    /// Datagrams sent by the node or addressed to it while the command ran, lost ones
    /// included. A lookup is iterative, so that is all of its traffic (plus whatever else
    /// the node did meanwhile).
    pub datagrams: u64,
    /// Hops of its traversal: the deepest node that answered, seeds being hop 1. `Some(0)`
    /// when it was answered locally, `None` when unknown (it joined a running traversal,
    /// or has not finished). Measured from the datagrams, see `sim/probe.rs`.
    pub rounds: Option<u32>,
    base: u64,
}

/// A simulated network of [`Host`]s ([`Node`]s by default); see the [module docs](self).
pub struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    epoch: Instant,
    now: Instant,
    node_config: Config,
    /// Looked up several times per datagram, so hashed (a B-tree search of a 100,000-node
    /// network was a tenth of the run); never iterated, so its order cannot leak.
    nodes: HashMap<SocketAddr, Slot>,
    /// The same addresses in order, for [`Sim::addrs`].
    order: BTreeSet<SocketAddr>,
    /// Every node's next wake-up, so a step finds the earliest without a scan.
    timers: BTreeSet<(Instant, SocketAddr)>,
    in_flight: BinaryHeap<Reverse<Packet>>,
    next_seq: u64,
    next_life: u64,
    next_auto: u32,
    link: PathConfig,
    links: BTreeMap<(SocketAddr, SocketAddr), PathConfig>,
    /// Directions of links in the bad state of their burst loss (see [`Burst`]).
    bursting: BTreeSet<(SocketAddr, SocketAddr)>,
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    isolated: BTreeSet<SocketAddr>,
    /// Nodes that never receive a query, as behind a NAT.
    silent: BTreeSet<SocketAddr>,
    /// Nodes handed out by `node_mut`, drained before the next step.
    dirty: BTreeSet<SocketAddr>,
    trace: Trace,
    stats: SimStats,
    records: BTreeMap<(SocketAddr, QueryId), CommandRecord>,
    checks: bool,
    strict: bool,
    measure: bool,
    violations: Vec<String>,
    wait_limit: Duration,
    transmits: Vec<Output>,
    events: Vec<HostEvent>,
}

struct Slot {
    host: Box<dyn Host>,
    /// Changes on every spawn, so datagrams of a dead incarnation are recognised.
    life: u64,
    timer: Option<Instant>,
    events: VecDeque<HostEvent>,
    finished: BTreeSet<QueryId>,
    probe: Probe,
    sent: u64,
    addressed: u64,
}

#[derive(Debug)]
struct Packet {
    deliver_at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    /// [`NETWORK`] for what the network itself sends (a refused connection).
    from_life: u64,
    to_life: u64,
    payload: Payload,
}

/// The `life` of packets the network makes itself: no host ever has it.
const NETWORK: u64 = 0;

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Packet {}

impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Packet {
    /// Arrival time, then send order: `seq` is unique, so ties never depend on the heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

/// What one step did.
enum Step {
    Idle,
    Drove(SocketAddr),
    Dropped,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("elapsed", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .field("in_flight", &self.in_flight.len())
            .field("trace_hash", &self.trace.hash())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Creates an empty network. `epoch` is virtual time zero; it is only ever added to.
    pub fn new(seed: u64, epoch: Instant) -> Sim {
        Sim {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            epoch,
            now: epoch,
            node_config: Config::default(),
            nodes: HashMap::new(),
            order: BTreeSet::new(),
            timers: BTreeSet::new(),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            next_life: 0,
            next_auto: 0,
            link: PathConfig::default(),
            links: BTreeMap::new(),
            bursting: BTreeSet::new(),
            cut: BTreeSet::new(),
            isolated: BTreeSet::new(),
            silent: BTreeSet::new(),
            dirty: BTreeSet::new(),
            trace: Trace::new(),
            stats: SimStats::default(),
            records: BTreeMap::new(),
            checks: cfg!(debug_assertions),
            strict: true,
            measure: true,
            violations: Vec::new(),
            wait_limit: DEFAULT_WAIT,
            transmits: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The seed the run was built from; print it when a test fails.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }

    /// The simulator's RNG, for scripts that want their random choices on the same seed.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Counters of the network.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// The hash of everything delivered and reported so far: equal runs give equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// Keeps the last `cap` trace entries for [`Sim::trace_log`] (default 0: none).
    pub fn set_trace_log(&mut self, cap: usize) {
        self.trace.set_cap(cap);
    }

    /// The kept trace entries, oldest first.
    pub fn trace_log(&self) -> impl Iterator<Item = &TraceEntry> {
        self.trace.log()
    }

    /// Turns the per-step checks on or off (default: on in debug builds). They check the
    /// routing tables, the store caps, that a node woken by its timer does not ask to be
    /// woken at once again, and that each query id finishes once.
    pub fn set_checks(&mut self, on: bool) {
        self.checks = on;
    }

    /// Whether a broken invariant panics (default) or is only kept in [`Sim::violations`].
    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    /// Broken invariants seen while not strict (the first 64).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Whether commands' rounds are measured (default on; it decodes the datagrams of
    /// nodes with a measured command running).
    pub fn set_measure_rounds(&mut self, on: bool) {
        self.measure = on;
    }

    /// How much virtual time [`Sim::wait_for`] lets pass before giving up (default 10 min).
    pub fn set_wait_limit(&mut self, limit: Duration) {
        self.wait_limit = limit;
    }

    /// The configuration nodes get from [`Sim::spawn`]. Its `local_ip`, when `None`, is
    /// set to each node's own address.
    pub fn set_node_config(&mut self, config: Config) {
        self.node_config = config;
    }

    /// Sets the link used between every pair without a link of its own.
    pub fn set_link(&mut self, link: PathConfig) {
        self.link = link;
    }

    /// Sets the link between `a` and `b`, both ways.
    pub fn set_link_between(&mut self, a: SocketAddr, b: SocketAddr, link: PathConfig) {
        self.links.insert(pair(a, b), link);
    }

    /// Cuts `a` from `b`, both ways, until [`Sim::heal`]. Datagrams in flight between
    /// them are dropped on arrival.
    pub fn partition(&mut self, a: SocketAddr, b: SocketAddr) {
        self.cut.insert(pair(a, b));
    }

    /// Cuts `node` from every other node, present or future, until [`Sim::heal`].
    pub fn isolate(&mut self, node: SocketAddr) {
        self.isolated.insert(node);
    }

    /// Removes every partition and isolation.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.isolated.clear();
    }

    /// Makes the node at `addr` silent (or not): queries sent to it are dropped on arrival,
    /// while what it sends and the answers to its own queries still go through. That is a
    /// node behind a NAT, which the real DHT is full of: it asks, others add it to their
    /// tables and name it in their answers, and it never answers anybody.
    pub fn set_silent(&mut self, addr: SocketAddr, silent: bool) {
        if silent {
            self.silent.insert(addr);
        } else {
            self.silent.remove(&addr);
        }
    }

    /// Starts a node with the configuration of [`Sim::set_node_config`]; see [`Sim::spawn_with`].
    pub fn spawn(&mut self, addr: Option<SocketAddr>) -> SocketAddr {
        let config = self.node_config.clone();
        self.spawn_with(addr, config)
    }

    /// Starts a node at `addr` (`None`: the next free `10.x.y.z:6881`) and returns its address.
    ///
    /// Its seed is drawn from the simulator's RNG. It knows nobody: issue a
    /// [`bootstrap`](Node::bootstrap) through [`Sim::command`]. A node already at `addr`
    /// is killed first, so this is also how a node restarts.
    pub fn spawn_with(&mut self, addr: Option<SocketAddr>, mut config: Config) -> SocketAddr {
        self.spawn_host(addr, |addr, seed, now| {
            if config.local_ip.is_none() {
                config.local_ip = Some(addr.ip());
            }
            Box::new(Node::new(config, seed, now))
        })
    }

    /// Starts a Grape (a DHT node with the API) at `addr` (`None`: the next free
    /// address). Its node's `local_ip`, when `None`, is set to the Grape's own address.
    /// Bootstrap it through [`Sim::with_host`] and [`GrapeHost::grape_mut`]; peer clients
    /// reach its API at `http://{addr}`.
    pub fn spawn_grape(&mut self, addr: Option<SocketAddr>, mut config: GrapeConfig) -> SocketAddr {
        self.spawn_host(addr, |addr, seed, now| {
            if config.node.local_ip.is_none() {
                config.node.local_ip = Some(addr.ip());
            }
            Box::new(GrapeHost::new(config, seed, now))
        })
    }

    /// Starts a peer client at `addr` (`None`: the next free address), linked to the
    /// Grape named in `config.link.grape` (`http://{grape address}`).
    ///
    /// # Errors
    /// As [`Client::new`](crate::peer::Client::new); then nothing is started.
    pub fn spawn_client(
        &mut self,
        addr: Option<SocketAddr>,
        config: ClientConfig,
    ) -> Result<SocketAddr, ConfigError> {
        // Its own seed, drawn first: a client that cannot be made leaves no trace.
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let host = ClientHost::new(config, seed)?;
        Ok(self.spawn_host(addr, |_, _, _| Box::new(host)))
    }

    /// Starts an echo RPC server ([`EchoHost`]) at `addr`: where a service announced
    /// through the Grape at `addr.ip()` with port `addr.port()` is found.
    pub fn spawn_echo(&mut self, addr: SocketAddr) -> SocketAddr {
        self.spawn_host(Some(addr), |_, _, _| Box::new(EchoHost::default()))
    }

    /// Starts the host `make` builds at `addr` (`None`: the next free `10.x.y.z:6881`),
    /// from its address, a seed drawn from the simulator's RNG and the current time. A
    /// host already at `addr` is killed first.
    pub fn spawn_host(
        &mut self,
        addr: Option<SocketAddr>,
        make: impl FnOnce(SocketAddr, [u8; 32], Instant) -> Box<dyn Host>,
    ) -> SocketAddr {
        let addr = addr.unwrap_or_else(|| self.next_free_addr());
        self.kill(addr);
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let host = make(addr, seed, self.now);
        self.insert(addr, host);
        addr
    }

    fn insert(&mut self, addr: SocketAddr, host: Box<dyn Host>) {
        self.next_life += 1;
        self.stats.spawned += 1;
        let at = self.elapsed();
        self.trace.spawned(at, addr, host.node().map(Node::id));
        self.order.insert(addr);
        self.nodes.insert(
            addr,
            Slot {
                host,
                life: self.next_life,
                timer: None,
                events: VecDeque::new(),
                finished: BTreeSet::new(),
                probe: Probe::default(),
                sent: 0,
                addressed: 0,
            },
        );
        self.drain(addr, None);
    }

    /// Stops a node; datagrams to and from it still in flight are dropped. Returns
    /// whether there was one.
    pub fn kill(&mut self, addr: SocketAddr) -> bool {
        let Some(slot) = self.nodes.remove(&addr) else {
            return false;
        };
        self.order.remove(&addr);
        if let Some(t) = slot.timer {
            self.timers.remove(&(t, addr));
        }
        self.dirty.remove(&addr);
        self.stats.killed += 1;
        let at = self.elapsed();
        self.trace.killed(at, addr);
        true
    }

    /// Replaces a host by a fresh one at the same address, with the same configuration and
    /// a new seed (so a new id), as a restarted process. Returns whether there was one.
    pub fn restart(&mut self, addr: SocketAddr) -> bool {
        if !self.nodes.contains_key(&addr) {
            return false;
        }
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let now = self.now;
        let Some(host) = self.nodes.get(&addr).map(|s| s.host.restarted(seed, now)) else {
            return false;
        };
        self.kill(addr);
        self.insert(addr, host);
        true
    }

    /// The DHT node at `addr`: a bare node, or the one inside a Grape.
    pub fn node(&self, addr: SocketAddr) -> Option<&Node> {
        self.nodes.get(&addr).and_then(|s| s.host.node())
    }

    /// The bare node at `addr`, for commands the simulator need not track. Its output is
    /// drained before the next step. Prefer [`Sim::command`], which also records the command.
    pub fn node_mut(&mut self, addr: SocketAddr) -> Option<&mut Node> {
        let slot = self.nodes.get_mut(&addr)?;
        let node = slot.host.node_mut()?;
        self.dirty.insert(addr);
        Some(node)
    }

    /// The host at `addr`, if it is an `H`.
    pub fn host<H: Host>(&self, addr: SocketAddr) -> Option<&H> {
        let host: &dyn Any = self.nodes.get(&addr)?.host.as_ref();
        host.downcast_ref()
    }

    /// Runs `f` on the host at `addr` at the current time, if it is an `H` (a command to a
    /// Grape or a client), then drains it. `None` when there is no such host.
    pub fn with_host<H: Host, R>(
        &mut self,
        addr: SocketAddr,
        f: impl FnOnce(&mut H, Instant) -> R,
    ) -> Option<R> {
        self.drain_dirty();
        let now = self.now;
        let slot = self.nodes.get_mut(&addr)?;
        let host: &mut dyn Any = slot.host.as_mut();
        let r = f(host.downcast_mut()?, now);
        self.drain(addr, None);
        Some(r)
    }

    /// Hands the Grape at `grape` an API request, as a client on its own machine would;
    /// the reply comes back as a [`HostEvent::Api`] (see [`Sim::take_host_events`]).
    pub fn api(
        &mut self,
        grape: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Option<RequestId> {
        self.with_host(grape, |g: &mut GrapeHost, now| {
            g.request(now, method, path, body)
        })
    }

    /// Addresses of the live nodes, in order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.order.iter().copied()
    }

    /// Live nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node is alive.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether a node lives at `addr`.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.nodes.contains_key(&addr)
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Issues a command on a node at the current time, drains the node, and records the
    /// command (see [`Sim::record`]). `None` when no node lives at `addr`.
    pub fn command(
        &mut self,
        addr: SocketAddr,
        f: impl FnOnce(&mut Node, Instant) -> QueryId,
    ) -> Option<QueryId> {
        self.drain_dirty();
        let now = self.now;
        let issued = self.elapsed();
        let slot = self.nodes.get_mut(&addr)?;
        let base = slot.sent + slot.addressed;
        let node = slot.host.node_mut()?;
        let query = {
            let _span = tracing::trace_span!("node", %addr).entered();
            f(node, now)
        };
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_first();
        }
        self.records.insert(
            (addr, query),
            CommandRecord {
                issued,
                finished: None,
                datagrams: 0,
                rounds: None,
                base,
            },
        );
        self.drain(addr, Some(query));
        Some(query)
    }

    /// What the simulator saw of a command issued through [`Sim::command`].
    pub fn record(&self, addr: SocketAddr, query: QueryId) -> Option<&CommandRecord> {
        self.records.get(&(addr, query))
    }

    /// Runs until `query` finishes on `addr`, and takes its result from the node's events.
    ///
    /// `None` if the node dies, the network has nothing left to do, or the wait limit
    /// ([`Sim::set_wait_limit`]) passes first.
    pub fn wait_for(
        &mut self,
        addr: SocketAddr,
        query: QueryId,
    ) -> Option<Result<Outcome, QueryError>> {
        self.wait_for_any(&[(addr, query)])?.1
    }

    /// Runs until one of `queries` finishes, and takes its result: the index of the query
    /// in the slice, and its result, or `None` as result when its node died.
    ///
    /// `None` if the network has nothing left to do or the wait limit
    /// ([`Sim::set_wait_limit`]) passes first. Lets a script keep many commands running.
    pub fn wait_for_any(
        &mut self,
        queries: &[(SocketAddr, QueryId)],
    ) -> Option<(usize, Option<Result<Outcome, QueryError>>)> {
        let limit = self.now + self.wait_limit;
        self.drain_dirty();
        let mut driven = None;
        loop {
            for (i, &(addr, query)) in queries.iter().enumerate() {
                if driven.is_some_and(|d| d != addr) {
                    continue;
                }
                if !self.contains(addr) {
                    return Some((i, None));
                }
                if let Some(result) = self.take_finished(addr, query) {
                    return Some((i, Some(result)));
                }
            }
            if self.next_wake().is_none_or(|t| t > limit) {
                return None;
            }
            driven = match self.step_inner() {
                Step::Idle => return None,
                Step::Drove(addr) => Some(addr),
                // Only a kill removes a node, and a kill is not a step: nothing to check.
                Step::Dropped => continue,
            };
        }
    }

    /// Takes the DHT events a bare node reported and nobody took yet.
    pub fn take_events(&mut self, addr: SocketAddr) -> Vec<Event> {
        self.take_host_events(addr)
            .into_iter()
            .filter_map(|e| match e {
                HostEvent::Dht(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Takes every event a host reported and nobody took yet.
    pub fn take_host_events(&mut self, addr: SocketAddr) -> Vec<HostEvent> {
        self.drain_dirty();
        self.nodes
            .get_mut(&addr)
            .map(|s| s.events.drain(..).collect())
            .unwrap_or_default()
    }

    /// When the next step will happen: the earliest arrival or node timer.
    pub fn next_wake(&self) -> Option<Instant> {
        if !self.dirty.is_empty() {
            return Some(self.now);
        }
        let packet = self.in_flight.peek().map(|Reverse(p)| p.deliver_at);
        let timer = self.timers.first().map(|(t, _)| *t);
        [packet, timer].into_iter().flatten().min()
    }

    /// Handles the earliest arrival or timer. Returns false when there is nothing left to do.
    pub fn step(&mut self) -> bool {
        !matches!(self.step_inner(), Step::Idle)
    }

    /// Runs everything due within `d`, then moves the clock to the end of it.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        // Nodes handed out by `node_mut` first: stepping for them alone would also run
        // the next arrival or timer, however far past `until` it lies.
        self.drain_dirty();
        while self.next_wake().is_some_and(|t| t <= until) {
            self.step();
        }
        self.advance_to(until);
    }

    /// Steps until `pred` holds (checked before each step), at most `max_steps` times.
    /// Returns whether it holds.
    pub fn run_until(&mut self, mut pred: impl FnMut(&Sim) -> bool, max_steps: u64) -> bool {
        for _ in 0..max_steps {
            if pred(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        pred(self)
    }

    /// Steps until no datagram is in flight, at most `max_steps` times; timers due before
    /// the last arrival fire on the way. Returns whether the network went quiet.
    pub fn run_until_idle(&mut self, max_steps: u64) -> bool {
        for _ in 0..max_steps {
            if self.in_flight.is_empty() && self.dirty.is_empty() {
                return true;
            }
            self.step();
        }
        self.in_flight.is_empty() && self.dirty.is_empty()
    }

    fn step_inner(&mut self) -> Step {
        self.drain_dirty();
        let packet = self.in_flight.peek().map(|Reverse(p)| p.deliver_at);
        let timer = self.timers.first().map(|(t, _)| *t);
        let step = match (packet, timer) {
            (None, None) => return Step::Idle,
            (Some(p), Some(t)) if t < p => self.fire_timer(),
            (None, Some(_)) => self.fire_timer(),
            (Some(_), _) => self.deliver_next(),
        };
        self.stats.steps += 1;
        step
    }

    fn deliver_next(&mut self) -> Step {
        let Some(Reverse(p)) = self.in_flight.pop() else {
            return Step::Idle;
        };
        self.advance_to(p.deliver_at);
        let now = self.now;
        let at = self.elapsed();
        let sender_alive = p.from_life == NETWORK
            || self
                .nodes
                .get(&p.from)
                .is_some_and(|s| s.life == p.from_life);
        let cut = self.is_cut(p.from, p.to);
        if self.silent.contains(&p.to)
            && let Payload::Datagram(bytes) = &p.payload
            && Message::decode(bytes).is_ok_and(|m| matches!(m.body, Body::Query(_)))
        {
            self.stats.silenced += 1;
            self.trace.dropped(at, p.from, p.to);
            return Step::Dropped;
        }
        let Some(slot) = self
            .nodes
            .get_mut(&p.to)
            .filter(|s| sender_alive && !cut && s.life == p.to_life)
        else {
            if cut {
                self.stats.partitioned += 1;
            } else {
                self.stats.unreachable += 1;
            }
            self.trace.dropped(at, p.from, p.to);
            if sender_alive {
                self.refuse(p.to, p.from, p.from_life, &p.payload);
            }
            return Step::Dropped;
        };
        self.stats.delivered += 1;
        self.trace.delivered(at, p.from, p.to, p.payload.bytes());
        if self.measure
            && !slot.probe.is_idle()
            && let Payload::Datagram(bytes) = &p.payload
        {
            slot.probe.on_receive(p.from, bytes);
        }
        {
            let _span = tracing::trace_span!("node", addr = %p.to).entered();
            slot.host.handle(now, p.from, p.payload);
        }
        self.drain(p.to, None);
        self.check(p.to);
        Step::Drove(p.to)
    }

    fn fire_timer(&mut self) -> Step {
        let Some((t, addr)) = self.timers.pop_first() else {
            return Step::Idle;
        };
        self.advance_to(t);
        let now = self.now;
        let at = self.elapsed();
        let Some(slot) = self.nodes.get_mut(&addr) else {
            return Step::Dropped;
        };
        slot.timer = None;
        self.stats.timeouts += 1;
        self.trace.timeout(at, addr);
        {
            let _span = tracing::trace_span!("node", %addr).entered();
            slot.host.handle_timeout(now);
        }
        self.drain(addr, None);
        // A node woken by its timer and drained must not want to be woken at once again.
        if let Some(slot) = self.nodes.get_mut(&addr)
            && let Some(next) = slot.timer
            && next <= now
        {
            let later = now + BUSY_LOOP_BACKOFF;
            self.timers.remove(&(next, addr));
            self.timers.insert((later, addr));
            slot.timer = Some(later);
            self.violation(
                addr,
                format!("poll_timeout {next:?} not after handle_timeout({now:?})"),
            );
        }
        self.check(addr);
        Step::Drove(addr)
    }

    fn drain_dirty(&mut self) {
        while let Some(addr) = self.dirty.pop_first() {
            self.drain(addr, None);
        }
    }

    /// Takes a node's output: schedules its datagrams, queues its events, re-files its timer.
    /// `started` is the command just issued, whose rounds are to be measured.
    fn drain(&mut self, addr: SocketAddr, started: Option<QueryId>) {
        let Some(slot) = self.nodes.get_mut(&addr) else {
            return;
        };
        let mut transmits = std::mem::take(&mut self.transmits);
        let mut events = std::mem::take(&mut self.events);
        slot.host.poll(self.now, &mut transmits, &mut events);
        if self.measure
            && (started.is_some() || !slot.probe.is_idle())
            && let Some(node) = slot.host.node()
        {
            for t in &transmits {
                if let Payload::Datagram(bytes) = &t.payload {
                    slot.probe.on_send(bytes, started, |key| closest(node, key));
                }
            }
        }
        slot.sent += transmits.len() as u64;
        let life = slot.life;
        let next = slot.host.poll_timeout();
        // Mostly unchanged: re-filing it anyway cost two searches of a set as large as the
        // network (a tenth of a 100,000-node run).
        if slot.timer != next {
            if let Some(old) = std::mem::replace(&mut slot.timer, next) {
                self.timers.remove(&(old, addr));
            }
            if let Some(next) = next {
                self.timers.insert((next, addr));
            }
        }
        for event in events.drain(..) {
            self.on_event(addr, event, started);
        }
        for t in transmits.drain(..) {
            self.send(addr, life, t);
        }
        self.transmits = transmits;
        self.events = events;
    }

    fn on_event(&mut self, addr: SocketAddr, event: HostEvent, started: Option<QueryId>) {
        let at = self.elapsed();
        self.stats.events += 1;
        self.trace.event(at, addr, &event);
        let Some(slot) = self.nodes.get_mut(&addr) else {
            return;
        };
        let mut duplicate = None;
        if let Some(query) = finished_query(&event) {
            if !slot.finished.insert(query) {
                duplicate = Some(query);
            }
            if slot.finished.len() > MAX_FINISHED {
                slot.finished.pop_first();
            }
            let rounds = slot.probe.on_finished(query);
            if let Some(r) = self.records.get_mut(&(addr, query)) {
                r.finished = Some(at);
                r.datagrams = (slot.sent + slot.addressed).saturating_sub(r.base);
                r.rounds = rounds.or((started == Some(query)).then_some(0));
            }
        }
        if slot.events.len() >= MAX_EVENTS {
            slot.events.pop_front();
            self.stats.events_dropped += 1;
        }
        slot.events.push_back(event);
        if let Some(query) = duplicate {
            self.violation(addr, format!("{query:?} finished twice"));
        }
    }

    /// Puts one datagram or message on its link.
    fn send(&mut self, from: SocketAddr, from_life: u64, t: Output) {
        self.stats.sent += 1;
        let at = self.elapsed();
        let Some(dest) = self.nodes.get_mut(&t.to) else {
            self.stats.unreachable += 1;
            self.trace.dropped(at, from, t.to);
            self.refuse(t.to, from, from_life, &t.payload);
            return;
        };
        dest.addressed += 1;
        let to_life = dest.life;
        if self.is_cut(from, t.to) {
            self.stats.partitioned += 1;
            self.trace.dropped(at, from, t.to);
            self.refuse(t.to, from, from_life, &t.payload);
            return;
        }
        let link = self.link_between(from, t.to);
        if !matches!(t.payload, Payload::Datagram(_)) {
            // A connection: its own retransmits hide loss, only the delay is drawn.
            let delay = link.delay(&mut self.rng);
            self.schedule(delay, from, from_life, t.to, to_life, t.payload);
            return;
        }
        let mut bad = self.bursting.contains(&(from, t.to));
        let lost = link.lost(&mut bad, &mut self.rng);
        if bad {
            self.bursting.insert((from, t.to));
        } else {
            self.bursting.remove(&(from, t.to));
        }
        if lost {
            self.stats.lost += 1;
            self.trace.dropped(at, from, t.to);
            return;
        }
        if link.duplicated(&mut self.rng) {
            self.stats.duplicated += 1;
            let delay = link.delay(&mut self.rng);
            self.schedule(delay, from, from_life, t.to, to_life, t.payload.clone());
        }
        let delay = link.delay(&mut self.rng);
        self.schedule(delay, from, from_life, t.to, to_life, t.payload);
    }

    fn schedule(
        &mut self,
        delay: Duration,
        from: SocketAddr,
        from_life: u64,
        to: SocketAddr,
        to_life: u64,
        payload: Payload,
    ) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.stats.overflow += 1;
            return;
        }
        self.next_seq += 1;
        self.in_flight.push(Reverse(Packet {
            deliver_at: self.now + delay,
            seq: self.next_seq,
            from,
            to,
            from_life,
            to_life,
            payload,
        }));
    }

    /// An HTTP request to `to` could not be delivered: its sender learns at once, as from a
    /// refused connect. Nothing else is answered.
    fn refuse(&mut self, to: SocketAddr, sender: SocketAddr, sender_life: u64, payload: &Payload) {
        let Payload::HttpRequest(call) = payload else {
            return;
        };
        let result = Err(TransportError::unsent(format!("connect {to}: refused")));
        let refusal = Payload::http_response(call.id, result);
        self.schedule(Duration::ZERO, to, NETWORK, sender, sender_life, refusal);
    }

    fn take_finished(
        &mut self,
        addr: SocketAddr,
        query: QueryId,
    ) -> Option<Result<Outcome, QueryError>> {
        let slot = self.nodes.get_mut(&addr)?;
        let i = slot.events.iter().position(
            |e| matches!(e, HostEvent::Dht(Event::Finished { query: q, .. }) if *q == query),
        )?;
        match slot.events.remove(i)? {
            HostEvent::Dht(Event::Finished { result, .. }) => Some(result),
            _ => None,
        }
    }

    /// Checks the invariants of a node that was just driven.
    fn check(&mut self, addr: SocketAddr) {
        if !self.checks {
            return;
        }
        let Some(node) = self.nodes.get(&addr).and_then(|s| s.host.node()) else {
            return;
        };
        let mut broken = Vec::new();
        // Walking both tables costs more than the step itself: sample them. A broken
        // table stays broken, so the next sample still catches it within a few steps.
        if self.stats.steps.is_multiple_of(ROUTING_CHECK_EVERY) {
            let (t4, t6) = node.routing_tables();
            for table in [t4, t6] {
                if let Err(e) = table.check_invariants() {
                    broken.push(format!("routing table: {e}"));
                }
            }
        }
        let config = node.config();
        if node.stored_items() > config.max_items {
            broken.push(format!(
                "{} items stored, cap {}",
                node.stored_items(),
                config.max_items
            ));
        }
        if node.stored_keys() > config.max_peer_keys {
            broken.push(format!(
                "{} info-hashes stored, cap {}",
                node.stored_keys(),
                config.max_peer_keys
            ));
        }
        for what in broken {
            self.violation(addr, what);
        }
    }

    fn violation(&mut self, addr: SocketAddr, what: String) {
        let message = format!(
            "sim seed {} at {:?}, node {addr}: {what} (replay with SIM_SEED={})",
            self.seed,
            self.elapsed(),
            self.seed
        );
        if self.strict {
            panic!("{message}");
        }
        tracing::warn!("{message}");
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(message);
        }
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
        }
    }

    fn is_cut(&self, a: SocketAddr, b: SocketAddr) -> bool {
        if self.cut.is_empty() && self.isolated.is_empty() {
            return false;
        }
        self.isolated.contains(&a) || self.isolated.contains(&b) || self.cut.contains(&pair(a, b))
    }

    fn link_between(&self, a: SocketAddr, b: SocketAddr) -> PathConfig {
        if self.links.is_empty() {
            return self.link;
        }
        self.links.get(&pair(a, b)).copied().unwrap_or(self.link)
    }

    fn next_free_addr(&mut self) -> SocketAddr {
        let mut port = AUTO_PORT;
        loop {
            for _ in 0..=self.nodes.len() {
                self.next_auto = self.next_auto.wrapping_add(1) & 0x00ff_ffff;
                let ip = Ipv4Addr::from(0x0a00_0000 | self.next_auto);
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                if !self.nodes.contains_key(&addr) {
                    return addr;
                }
            }
            // Only reached with 2^24 nodes on one port: use the next port.
            port = port.wrapping_add(1);
        }
    }
}

/// The query a bare node's `Finished` event ends.
fn finished_query(event: &HostEvent) -> Option<QueryId> {
    match event {
        HostEvent::Dht(Event::Finished { query, .. }) => Some(*query),
        _ => None,
    }
}

/// The nodes a traversal of `key` starts from, as the node picks them.
fn closest(node: &Node, key: &Key) -> Vec<NodeInfo> {
    let k = node.config().k;
    let (t4, t6) = node.routing_tables();
    let mut nodes = t4.closest(key.as_bytes(), k);
    nodes.extend(t6.closest(key.as_bytes(), k));
    nodes
}

/// An unordered pair, as a map key.
fn pair(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_link() -> PathConfig {
        PathConfig::new(Duration::from_millis(50))
    }

    /// Two nodes on a 50 ms link: `b` has just asked `a` to bootstrap it.
    fn pair_bootstrapping(seed: u64) -> (Sim, SocketAddr, SocketAddr, QueryId) {
        let mut sim = Sim::new(seed, Instant::now());
        sim.set_link(quiet_link());
        let a = sim.spawn(None);
        let b = sim.spawn(None);
        let q = sim
            .command(b, |node, now| node.bootstrap(now, &[a]))
            .expect("b is alive");
        (sim, a, b, q)
    }

    #[test]
    fn a_datagram_arrives_after_the_link_latency() {
        let (mut sim, _, _, _) = pair_bootstrapping(1);

        assert!(sim.step());

        assert_eq!(sim.elapsed(), Duration::from_millis(50));
        assert_eq!(sim.stats().delivered, 1);
    }

    #[test]
    fn wait_for_returns_the_outcome_once() {
        let (mut sim, _, b, q) = pair_bootstrapping(2);
        sim.set_wait_limit(Duration::from_secs(5));

        let first = sim.wait_for(b, q);
        let second = sim.wait_for(b, q);

        assert_eq!(first, Some(Ok(Outcome::Bootstrapped { table_size: 1 })));
        assert_eq!(second, None, "the event was taken");
        let record = sim.record(b, q).expect("recorded");
        assert_eq!(record.finished, Some(Duration::from_millis(100)));
        // The query and its answer, plus whatever `a` sent the newcomer meanwhile.
        assert!(record.datagrams >= 2, "{record:?}");
        assert_eq!(record.rounds, Some(1));
    }

    #[test]
    fn a_killed_node_loses_what_was_in_flight_to_it() {
        let (mut sim, a, _, _) = pair_bootstrapping(3);

        assert!(sim.kill(a));
        assert!(sim.run_until_idle(100));

        assert_eq!(sim.stats().delivered, 0);
        assert!(sim.stats().unreachable >= 1);
        assert!(!sim.contains(a));
    }

    #[test]
    fn a_restarted_node_does_not_get_its_old_life_s_datagrams() {
        let (mut sim, a, _, _) = pair_bootstrapping(4);
        let old_id = sim.node(a).map(Node::id);

        assert!(sim.restart(a));
        sim.run_until_idle(100);

        assert_ne!(
            sim.node(a).map(Node::id),
            old_id,
            "a restart draws a new id"
        );
        assert_eq!(sim.stats().delivered, 0);
    }

    #[test]
    fn a_partition_drops_until_healed() {
        let (mut sim, a, b, q) = pair_bootstrapping(5);
        sim.partition(a, b);
        sim.set_wait_limit(Duration::from_secs(10));

        let cut = sim.wait_for(b, q);
        sim.heal();
        let again = sim
            .command(b, |node, now| node.bootstrap(now, &[a]))
            .expect("alive");
        let healed = sim.wait_for(b, again);

        assert!(sim.stats().partitioned >= 1);
        assert_eq!(cut, Some(Ok(Outcome::Bootstrapped { table_size: 0 })));
        assert_eq!(healed, Some(Ok(Outcome::Bootstrapped { table_size: 1 })));
    }

    #[test]
    fn a_duplicating_link_delivers_twice() {
        let mut sim = Sim::new(6, Instant::now());
        sim.set_link(quiet_link().with_duplicate(1.0));
        let a = sim.spawn(None);
        let b = sim.spawn(None);
        sim.command(b, |node, now| node.bootstrap(now, &[a]));

        sim.run_until_idle(100);

        assert_eq!(sim.stats().duplicated, sim.stats().sent);
        assert_eq!(sim.stats().delivered, 2 * sim.stats().sent);
    }

    #[test]
    fn per_pair_links_override_the_default() {
        let (mut sim, a, b, _) = pair_bootstrapping(7);
        sim.set_link_between(a, b, PathConfig::new(Duration::from_millis(5)));
        let again = sim
            .command(b, |node, now| node.bootstrap(now, &[a]))
            .expect("alive");

        sim.step();

        assert_eq!(
            sim.elapsed(),
            Duration::from_millis(5),
            "the later query came first"
        );
        assert!(sim.record(b, again).is_some());
    }

    #[test]
    fn timers_fire_and_time_only_moves_forward() {
        let (mut sim, _, _, _) = pair_bootstrapping(8);
        let mut last = sim.now();

        for _ in 0..200 {
            if !sim.step() {
                break;
            }
            assert!(sim.now() >= last);
            last = sim.now();
        }

        assert!(sim.stats().timeouts > 0, "maintenance timers fired");
        assert!(sim.violations().is_empty());
    }

    #[test]
    fn run_for_ends_exactly_at_the_deadline() {
        let (mut sim, _, _, _) = pair_bootstrapping(9);

        sim.run_for(Duration::from_millis(1234));

        assert_eq!(sim.elapsed(), Duration::from_millis(1234));
    }

    #[test]
    fn run_for_after_node_mut_stays_within_the_deadline() {
        let mut sim = Sim::new(9, Instant::now());
        let a = sim.spawn(None);
        let timeouts = sim.stats().timeouts;
        let _ = sim.node_mut(a);

        sim.run_for(Duration::ZERO);

        assert_eq!(sim.elapsed(), Duration::ZERO);
        assert_eq!(
            sim.stats().timeouts,
            timeouts,
            "no timer ran past the deadline"
        );
    }

    #[test]
    fn spawning_on_a_taken_address_replaces_the_node() {
        let mut sim = Sim::new(10, Instant::now());
        let a = sim.spawn(None);
        let old = sim.node(a).map(Node::id);

        let again = sim.spawn(Some(a));

        assert_eq!(again, a);
        assert_eq!(sim.len(), 1);
        assert_ne!(sim.node(a).map(Node::id), old);
        assert_eq!(sim.stats().killed, 1);
    }

    /// Ten nodes on a lossy, jittery network, run for a minute; the trace hash.
    fn small_run(seed: u64) -> u64 {
        let mut sim = Sim::new(seed, Instant::now());
        sim.set_link(PathConfig::default().with_loss(0.2).with_duplicate(0.05));
        let first = sim.spawn(None);
        for _ in 0..9 {
            let n = sim.spawn(None);
            sim.command(n, |node, now| node.bootstrap(now, &[first]));
        }
        sim.run_for(Duration::from_secs(60));
        sim.trace_hash()
    }

    #[test]
    fn the_same_seed_replays_the_same_run() {
        let a = small_run(11);
        let b = small_run(11);
        let c = small_run(12);

        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn node_mut_output_is_drained_before_the_next_step() {
        let mut sim = Sim::new(13, Instant::now());
        sim.set_link(quiet_link());
        let a = sim.spawn(None);
        let b = sim.spawn(None);
        let now = sim.now();

        let q = sim.node_mut(b).map(|node| node.bootstrap(now, &[a]));
        sim.run_until_idle(100);

        assert!(q.is_some());
        assert!(sim.stats().sent >= 2, "the query and its answer at least");
        assert_eq!(sim.take_events(b).len(), 1);
    }
}
