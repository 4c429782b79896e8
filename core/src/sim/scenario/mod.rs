//! The whole system under random commands, checked against a reference model.
//!
//! A [`Scenario`] is a small Grenache network on the simulator: bare DHT nodes, Grapes
//! (each a [`GrapeHost`]) joined to them, one peer client ([`ClientHost`]) per Grape, and
//! echo RPC servers ([`EchoHost`]) where services are announced. [`Op`]s, drawn from a
//! seed or read from fuzz input, announce and unannounce services, look names up, call
//! them, watch them, crash and restart nodes and start and stop loss bursts. After every
//! op the simulator runs one step of virtual time and every answer that came back is
//! checked against the model (`model.rs`):
//!
//! - **No phantoms:** an answer names only services of that name that are announced, or
//!   were withdrawn less than the expiry bound ago.
//! - **Found under loss:** a lookup of a name finds every service of it that was taken
//!   by its Grape long enough ago for the caches to have passed, unless a loss burst
//!   touched the lookup. Calls to such a name succeed, and echo what was sent.
//! - **Gone within the bound:** after the final settle, lookups show exactly the
//!   announced services.
//! - **Watches see every change:** every announce a watch lived through long enough
//!   shows up in its reports, every unannounce that stood long enough drops out, and its
//!   last report is the announced set.
//!
//! The first broken rule ends the run with a [`Violation`] naming the seed.

mod model;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use super::{Burst, ClientHost, GrapeHost, HostEvent, PathConfig, Sim};
use crate::api::GrapeConfig;
use crate::api::RENEW;
use crate::dht::id::Key;
use crate::dht::node::{Config, SILENT_FOR};
use crate::peer::{
    ClientConfig, ClientEvent, CommandId, LinkConfig, LinkEvent, RequestOptions, RpcError,
    WatchEvent, WatchId,
};
use model::{Bounds, Bursts, Service};

/// First port of the services: service `i` listens on `BASE_PORT + i`.
const BASE_PORT: u16 = 4000;
/// Longest [`Op::Wait`].
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Slack on every bound, for traversals, retries and the step the answer was read in.
const SLACK: Duration = Duration::from_secs(5);
/// How long the final lookups may take: a Grape lookup bounded by the node's
/// `lookup_timeout`, tried up to three times by the client.
const FINAL_WAIT: Duration = Duration::from_secs(120);

/// Settings of a [`Scenario`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScenarioConfig {
    /// Bare DHT nodes; the first is everybody's bootstrap node and never crashes.
    pub nodes: usize,
    /// Grapes, each with one client.
    pub grapes: usize,
    /// Service names.
    pub names: usize,
    /// Services: service `i` serves name `i % names` through Grape `i % grapes`.
    pub services: usize,
    /// Loss on every link, outside bursts too.
    pub loss: f64,
    /// The bursts [`Op::Burst`] turns on.
    pub burst: Burst,
    /// Bare nodes down at once, at most.
    pub max_down: usize,
    /// Crashes and restarts within any announce interval (60 s), at most. Each may take
    /// a stored announce with it until the next round stores it again; fewer than the
    /// replicas (k = 8) keeps every announced service findable meanwhile.
    pub max_churn: usize,
    /// Virtual time run after each op.
    pub step: Duration,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            nodes: 20,
            grapes: 3,
            names: 3,
            services: 6,
            loss: 0.1,
            burst: Burst::new(8.0, 0.5, 1.0),
            max_down: 5,
            max_churn: 2,
            step: Duration::from_secs(1),
        }
    }
}

/// One command of a scenario. Indexes are taken modulo what they index, so every value
/// is valid (fuzz input decodes to any of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Start serving service `i` and announcing it on a schedule (nothing if it is).
    Announce(usize),
    /// Unannounce service `i` and stop its server (nothing if it is not announced).
    Unannounce(usize),
    /// Look a name up from a client.
    Lookup {
        /// Client index.
        client: usize,
        /// Name index.
        name: usize,
    },
    /// Call a name from a client (an RPC request to one of its servers).
    Request {
        /// Client index.
        client: usize,
        /// Name index.
        name: usize,
    },
    /// Watch a name from a client (nothing if it watches it already).
    Watch {
        /// Client index.
        client: usize,
        /// Name index.
        name: usize,
    },
    /// Crash bare node `i` (never the first; nothing past `max_down`).
    Crash(usize),
    /// Start bare node `i` again if it is down, else restart it: a new id either way.
    Restart(usize),
    /// Start (true) or end a loss burst on every link.
    Burst(bool),
    /// Let this much virtual time pass (at most a minute).
    Wait(Duration),
}

impl Op {
    /// Reads ops from fuzz input, two bytes each: a kind and an argument.
    pub fn decode(bytes: &[u8]) -> Vec<Op> {
        bytes
            .chunks_exact(2)
            .map(|c| Op::from_pair(c[0], c[1]))
            .collect()
    }

    /// A random op, weighted towards lookups and announces.
    pub fn random(rng: &mut impl Rng) -> Op {
        // The kinds of `from_pair`, by weight.
        const KINDS: [u8; 20] = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 5, 6, 7, 7, 8];
        let kind = KINDS[rng.random_range(0..KINDS.len())];
        Op::from_pair(kind, rng.random())
    }

    fn from_pair(kind: u8, arg: u8) -> Op {
        let (lo, hi) = (usize::from(arg & 0x0f), usize::from(arg >> 4));
        match kind % 9 {
            0 => Op::Announce(usize::from(arg)),
            1 => Op::Unannounce(usize::from(arg)),
            2 => Op::Lookup {
                client: lo,
                name: hi,
            },
            3 => Op::Request {
                client: lo,
                name: hi,
            },
            4 => Op::Watch {
                client: lo,
                name: hi,
            },
            5 => Op::Crash(usize::from(arg)),
            6 => Op::Restart(usize::from(arg)),
            7 => Op::Burst(arg & 1 == 1),
            _ => Op::Wait(Duration::from_millis(u64::from(arg) * 250)),
        }
    }
}

/// A broken rule: what, when, and the seed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The scenario's seed.
    pub seed: u64,
    /// Virtual time since the start.
    pub at: Duration,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scenario seed {} at {:?}: {}",
            self.seed, self.at, self.what
        )
    }
}

impl std::error::Error for Violation {}

/// What a run checked, so a test can tell it checked something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Ops applied.
    pub ops: u64,
    /// Lookup answers checked.
    pub lookups: u64,
    /// Services that had to be found and were.
    pub found: u64,
    /// Services that had to be gone (final lookups) and were.
    pub gone: u64,
    /// Calls answered with the payload sent.
    pub echoed: u64,
    /// Watch reports checked.
    pub watch_reports: u64,
    /// Announces and unannounces a watch had to see, and saw.
    pub watch_changes: u64,
}

/// A command of a client waiting for its event.
#[derive(Clone, Debug)]
enum Pending {
    Lookup {
        name: usize,
        issued: Duration,
    },
    Request {
        name: usize,
        issued: Duration,
        sent: Value,
    },
}

/// One watch and what it reported.
#[derive(Clone, Debug)]
struct WatchLog {
    name: usize,
    started: Duration,
    reports: Vec<(Duration, Vec<String>)>,
}

impl WatchLog {
    /// Whether `addr` was in the watch's view at some moment in `[from, to]` (`want`),
    /// or missing from it (`!want`). The view holds between reports: reports come only
    /// on changes.
    fn showed(&self, addr: &str, want: bool, from: Duration, to: Duration) -> bool {
        let has = |set: &Vec<String>| set.iter().any(|a| a == addr) == want;
        let before = self.reports.iter().rev().find(|(t, _)| *t <= from);
        before.is_some_and(|(_, set)| has(set))
            || self
                .reports
                .iter()
                .any(|(t, set)| *t > from && *t <= to && has(set))
    }
}

/// A running scenario; see the [module docs](self).
pub struct Scenario {
    sim: Sim,
    seed: u64,
    config: ScenarioConfig,
    bounds: Bounds,
    base: PathConfig,
    nodes: Vec<SocketAddr>,
    down: BTreeSet<usize>,
    /// When the last crashes and restarts happened (see `max_churn`).
    churned: VecDeque<Duration>,
    grapes: Vec<SocketAddr>,
    clients: Vec<SocketAddr>,
    services: Vec<Service>,
    bursts: Bursts,
    pending: BTreeMap<(usize, CommandId), Pending>,
    watches: BTreeMap<(usize, WatchId), WatchLog>,
    next_call: u64,
    report: Report,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("seed", &self.seed)
            .field("sim", &self.sim)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Builds the network from `seed` with virtual time starting at `epoch`, and lets the
    /// joins end.
    pub fn new(seed: u64, epoch: Instant, config: ScenarioConfig) -> Scenario {
        let config = ScenarioConfig {
            nodes: config.nodes.max(2),
            grapes: config.grapes.max(1),
            names: config.names.max(1),
            services: config.services.max(1),
            ..config
        };
        let grape = GrapeConfig::default();
        let link = LinkConfig::new("");
        let node = Config::default();
        let bounds = Bounds {
            seen: grape.lookup_cache + link.lookup_cache_ttl + SLACK,
            gone: node.peer_max_age + grape.lookup_cache + link.lookup_cache_ttl + SLACK,
            watch_seen: RENEW + node.lookup_timeout + SLACK,
            watch_gone: node.peer_max_age + RENEW + node.lookup_timeout + SLACK,
            after_burst: SILENT_FOR + link.lookup_cache_ttl + SLACK,
            fresh: node.peer_max_age.saturating_sub(SLACK + SLACK),
        };
        let base = PathConfig::default().with_loss(config.loss);
        let mut sim = Sim::new(seed, epoch);
        sim.set_link(base);
        let first = sim.spawn(None);
        let mut nodes = vec![first];
        for _ in 1..config.nodes {
            let n = sim.spawn(None);
            sim.command(n, |node, now| node.bootstrap(now, &[first]));
            nodes.push(n);
        }
        let mut grapes = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..config.grapes {
            let g = sim.spawn_grape(None, grape.clone());
            sim.with_host(g, |h: &mut GrapeHost, now| {
                h.grape_mut().bootstrap(now, &[first]);
            });
            grapes.push(g);
            let client = ClientConfig::new(format!("http://{g}"));
            // The URL is well formed, so this cannot fail; a failure shows as a missing
            // client, whose commands are then skipped.
            if let Ok(c) = sim.spawn_client(None, client) {
                clients.push(c);
            }
        }
        let services = (0..config.services)
            .map(|i| {
                let grape = grapes[i % grapes.len()];
                let port = BASE_PORT.saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
                Service::new(i % config.names, format!("{}:{port}", grape.ip()))
            })
            .collect();
        let mut scenario = Scenario {
            sim,
            seed,
            config,
            bounds,
            base,
            nodes,
            down: BTreeSet::new(),
            churned: VecDeque::new(),
            grapes,
            clients,
            services,
            bursts: Bursts::default(),
            pending: BTreeMap::new(),
            watches: BTreeMap::new(),
            next_call: 0,
            report: Report::default(),
        };
        // Joins end within a few lookup rounds; errors cannot come before any command.
        let _ = scenario.advance(Duration::from_secs(20));
        scenario
    }

    /// The simulator, to read.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The simulator, to break something behind the model's back (a test that the
    /// checks can fail does).
    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// The Grapes' addresses; client `i` talks to Grape `i`, which announces service
    /// `j` when `j % grapes == i`.
    pub fn grapes(&self) -> &[SocketAddr] {
        &self.grapes
    }

    /// What has been checked so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Runs `ops` from `seed`, then [`Scenario::finish`].
    ///
    /// # Errors
    /// The first broken rule.
    pub fn run(
        seed: u64,
        epoch: Instant,
        config: ScenarioConfig,
        ops: &[Op],
    ) -> Result<Report, Violation> {
        let mut s = Scenario::new(seed, epoch, config);
        for &op in ops {
            s.apply(op)?;
        }
        s.finish()
    }

    /// Applies one op, runs one step, and checks every answer that came back.
    ///
    /// # Errors
    /// The first broken rule.
    pub fn apply(&mut self, op: Op) -> Result<(), Violation> {
        self.report.ops += 1;
        let at = self.sim.elapsed();
        let step = self.config.step;
        match op {
            Op::Announce(i) => self.announce(i % self.services.len())?,
            Op::Unannounce(i) => self.unannounce(i % self.services.len())?,
            Op::Lookup { client, name } => {
                let (c, n) = self.pick(client, name);
                let issued = self.sim.elapsed();
                let id = self.client_do(c, |cl, now| cl.lookup(now, &name_of(n)))?;
                if let Some(id) = id {
                    self.pending
                        .insert((c, id), Pending::Lookup { name: n, issued });
                }
            }
            Op::Request { client, name } => {
                let (c, n) = self.pick(client, name);
                self.next_call += 1;
                let sent = json!({ "call": self.next_call });
                let issued = self.sim.elapsed();
                let opts = RequestOptions::default();
                let id = self.client_do(c, |cl, now| cl.request(now, &name_of(n), &sent, &opts))?;
                if let Some(id) = id {
                    self.pending.insert(
                        (c, id),
                        Pending::Request {
                            name: n,
                            issued,
                            sent,
                        },
                    );
                }
            }
            Op::Watch { client, name } => {
                let (c, n) = self.pick(client, name);
                if !self
                    .watches
                    .iter()
                    .any(|(&(wc, _), w)| wc == c && w.name == n)
                {
                    let id = self.client_do(c, |cl, now| cl.watch(now, &name_of(n)))?;
                    if let Some(id) = id {
                        let log = WatchLog {
                            name: n,
                            started: at,
                            reports: Vec::new(),
                        };
                        self.watches.insert((c, id), log);
                    }
                }
            }
            Op::Crash(i) => {
                let i = 1 + i % (self.nodes.len() - 1);
                if !self.down.contains(&i)
                    && self.down.len() < self.config.max_down
                    && self.may_churn(at)
                {
                    self.sim.kill(self.nodes[i]);
                    self.down.insert(i);
                }
            }
            Op::Restart(i) => {
                let i = 1 + i % (self.nodes.len() - 1);
                if !self.may_churn(at) {
                    return self.advance(step);
                }
                let addr = self.nodes[i];
                if self.down.remove(&i) {
                    self.sim.spawn(Some(addr));
                } else {
                    self.sim.restart(addr);
                }
                let first = self.nodes[0];
                self.sim
                    .command(addr, |node, now| node.bootstrap(now, &[first]));
            }
            Op::Burst(true) => {
                self.sim.set_link(self.base.with_burst(self.config.burst));
                self.bursts.start(at);
            }
            Op::Burst(false) => self.end_burst(),
            Op::Wait(d) => self.advance(d.min(MAX_WAIT))?,
        }
        self.advance(step)
    }

    /// Ends any burst, lets every bound pass, looks every name up from every client and
    /// checks the answers and every watch's history.
    ///
    /// # Errors
    /// The first broken rule.
    pub fn finish(mut self) -> Result<Report, Violation> {
        self.end_burst();
        // Past every bound, the exemption after the last burst included, so the final
        // answers are checked in full.
        let now = self.sim.elapsed();
        let quiet = self.bursts.last_end().map_or(Duration::ZERO, |end| {
            (end + self.bounds.after_burst + SLACK).saturating_sub(now)
        });
        let settle = self.bounds.gone.max(self.bounds.watch_gone).max(quiet);
        self.advance(settle)?;
        let issued = self.sim.elapsed();
        for c in 0..self.clients.len() {
            for n in 0..self.config.names {
                if let Some(id) = self.client_do(c, |cl, now| cl.lookup(now, &name_of(n)))? {
                    self.pending
                        .insert((c, id), Pending::Lookup { name: n, issued });
                }
            }
        }
        let until = self.sim.elapsed() + FINAL_WAIT;
        while !self.pending.is_empty() && self.sim.elapsed() < until {
            self.advance(self.config.step)?;
        }
        if let Some(((c, id), p)) = self.pending.first_key_value() {
            return Err(self.violation(format!("client {c}: {id:?} ({p:?}) never ended")));
        }
        self.check_watches()?;
        Ok(self.report)
    }

    /// Whether a crash or restart fits the churn budget; if so it is counted.
    fn may_churn(&mut self, at: Duration) -> bool {
        let window = LinkConfig::new("").announce_interval + SLACK;
        while self.churned.front().is_some_and(|t| *t + window <= at) {
            self.churned.pop_front();
        }
        if self.churned.len() >= self.config.max_churn {
            return false;
        }
        self.churned.push_back(at);
        true
    }

    fn pick(&self, client: usize, name: usize) -> (usize, usize) {
        (client % self.clients.len().max(1), name % self.config.names)
    }

    fn announce(&mut self, i: usize) -> Result<(), Violation> {
        if self.services[i].is_announced() {
            return Ok(());
        }
        let (c, name, addr) = self.service_at(i);
        self.sim.spawn_echo(addr);
        let port = addr.port();
        self.client_do(c, |cl, now| cl.start_announcing(now, &name, port))?;
        self.services[i].announce(self.sim.elapsed());
        Ok(())
    }

    fn unannounce(&mut self, i: usize) -> Result<(), Violation> {
        if !self.services[i].is_announced() {
            return Ok(());
        }
        let (c, name, addr) = self.service_at(i);
        let port = addr.port();
        self.client_do(c, |cl, now| cl.unannounce(now, &name, port))?;
        self.services[i].withdraw(self.sim.elapsed());
        self.sim.kill(addr);
        Ok(())
    }

    /// The client that announces service `i`, its name and its server's address.
    fn service_at(&self, i: usize) -> (usize, String, SocketAddr) {
        let grapes = self.grapes.len();
        let port = BASE_PORT.saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
        let addr = SocketAddr::new(self.grapes[i % grapes].ip(), port);
        (i % grapes, name_of(self.services[i].name), addr)
    }

    /// Runs a command on client `c`; `Ok(None)` when the client is missing.
    fn client_do<T, E: fmt::Display>(
        &mut self,
        c: usize,
        f: impl FnOnce(&mut crate::peer::Client, Instant) -> Result<T, E>,
    ) -> Result<Option<T>, Violation> {
        let Some(&addr) = self.clients.get(c) else {
            return Ok(None);
        };
        match self
            .sim
            .with_host(addr, |h: &mut ClientHost, now| f(h.client_mut(), now))
        {
            None => Ok(None),
            Some(Ok(t)) => Ok(Some(t)),
            Some(Err(e)) => Err(self.violation(format!("client {c} refused a command: {e}"))),
        }
    }

    fn end_burst(&mut self) {
        if self.bursts.is_on() {
            self.sim.set_link(self.base);
            self.bursts.stop(self.sim.elapsed());
        }
    }

    /// Runs `d` of virtual time, one step at a time, checking answers after each.
    fn advance(&mut self, d: Duration) -> Result<(), Violation> {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            let left = end - self.sim.elapsed();
            self.sim.run_for(left.min(self.config.step));
            self.collect()?;
        }
        Ok(())
    }

    /// Takes every client's events and checks them.
    fn collect(&mut self) -> Result<(), Violation> {
        for c in 0..self.clients.len() {
            for event in self.sim.take_host_events(self.clients[c]) {
                self.on_event(c, event)?;
            }
        }
        Ok(())
    }

    fn on_event(&mut self, c: usize, event: HostEvent) -> Result<(), Violation> {
        let now = self.sim.elapsed();
        match event {
            HostEvent::Client(ClientEvent::Link(LinkEvent::Announcing {
                port,
                result: Ok(()),
                ..
            })) => {
                if let Some(i) = usize::from(port)
                    .checked_sub(usize::from(BASE_PORT))
                    .filter(|&i| i < self.services.len())
                {
                    self.services[i].taken(now);
                }
            }
            HostEvent::Client(ClientEvent::Link(LinkEvent::Lookup { id, result, .. })) => {
                if let Some(Pending::Lookup { name, issued }) = self.pending.remove(&(c, id)) {
                    let peers = match &result {
                        Ok(peers) => peers.iter().map(|p| p.as_str().to_owned()).collect(),
                        Err(_) => Vec::new(),
                    };
                    self.check_lookup(c, name, issued, &peers, &format!("{result:?}"))?;
                }
            }
            HostEvent::Client(ClientEvent::Reply { id, result }) => {
                if let Some(Pending::Request { name, issued, sent }) = self.pending.remove(&(c, id))
                {
                    self.check_call(c, name, issued, &sent, result)?;
                }
            }
            HostEvent::Watch(WatchEvent { watch, peers, .. }) => {
                let Some(name) = self.watches.get(&(c, watch)).map(|w| w.name) else {
                    return Ok(());
                };
                let peers: Vec<String> = match peers {
                    Ok(peers) => peers.iter().map(|p| p.as_str().to_owned()).collect(),
                    Err(e) => return Err(self.violation(format!("client {c}'s watch ended: {e}"))),
                };
                self.report.watch_reports += 1;
                let gone = self.bounds.watch_gone;
                self.check_named(name, now, gone, &peers, "watch")?;
                if let Some(w) = self.watches.get_mut(&(c, watch)) {
                    w.reports.push((now, peers));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Every peer named must be a service of `name` that may still be seen at `at`.
    fn check_named(
        &self,
        name: usize,
        at: Duration,
        gone: Duration,
        peers: &[String],
        what: &str,
    ) -> Result<(), Violation> {
        for p in peers {
            let known = self.services.iter().any(|s| {
                s.name == name && s.addr == *p && s.ever_announced() && s.may_be_seen(at, gone)
            });
            if !known {
                return Err(self.violation(format!(
                    "{what} of {} named {p}, which does not serve it now (services: {:?})",
                    name_of(name),
                    self.services
                )));
            }
        }
        Ok(())
    }

    fn check_lookup(
        &mut self,
        c: usize,
        name: usize,
        issued: Duration,
        peers: &[String],
        raw: &str,
    ) -> Result<(), Violation> {
        self.report.lookups += 1;
        let now = self.sim.elapsed();
        self.check_named(name, issued, self.bounds.gone, peers, "lookup")?;
        if self.bursts.touched(issued, now, self.bounds.after_burst) {
            return Ok(());
        }
        for s in self.services.iter().filter(|s| s.name == name) {
            let listed = peers.contains(&s.addr);
            if s.must_be_seen(issued, &self.bounds) {
                if !listed {
                    return Err(self.violation(format!(
                        "client {c}'s lookup of {} issued at {issued:?} missed {} ({s:?}, \
                         stored on {:?}, its watches {:?}): {raw}",
                        name_of(name),
                        s.addr,
                        self.storing(name, &s.addr),
                        self.watches
                            .iter()
                            .filter(|((wc, _), w)| *wc == c && w.name == name)
                            .collect::<Vec<_>>()
                    )));
                }
                self.report.found += 1;
            } else if !s.may_be_seen(issued, self.bounds.gone) && !listed {
                self.report.gone += 1;
            }
        }
        Ok(())
    }

    fn check_call(
        &mut self,
        c: usize,
        name: usize,
        issued: Duration,
        sent: &Value,
        result: Result<Value, RpcError>,
    ) -> Result<(), Violation> {
        match result {
            Ok(v) if v == *sent => {
                self.report.echoed += 1;
                Ok(())
            }
            Ok(v) => Err(self.violation(format!("client {c} sent {sent} and got back {v}"))),
            Err(e) => {
                let now = self.sim.elapsed();
                // Must succeed when every server the name may still list is a settled,
                // live one, and there is one.
                let mut listed = self
                    .services
                    .iter()
                    .filter(|s| s.name == name && s.may_be_seen(issued, self.bounds.gone));
                let settled = listed.clone().count() > 0
                    && listed.all(|s| s.must_be_seen(issued, &self.bounds));
                if settled && !self.bursts.touched(issued, now, self.bounds.after_burst) {
                    return Err(self.violation(format!(
                        "client {c}'s call to {} issued at {issued:?} failed: {e}",
                        name_of(name)
                    )));
                }
                Ok(())
            }
        }
    }

    /// Every watch saw each announce and unannounce it lived through long enough, and
    /// its view now is the announced set.
    fn check_watches(&mut self) -> Result<(), Violation> {
        let end = self.sim.elapsed();
        let b = self.bounds;
        let mut seen = 0;
        for (&(c, _), w) in &self.watches {
            for s in self.services.iter().filter(|s| s.name == w.name) {
                let spans: Vec<_> = s.spans().collect();
                for (k, &(_, taken, withdrawn)) in spans.iter().enumerate() {
                    let until = withdrawn.unwrap_or(end);
                    if let Some(t) = taken {
                        let from = t.max(w.started);
                        let quiet = !self
                            .bursts
                            .touched(from, from + b.watch_seen, b.after_burst);
                        if until >= from + b.watch_seen && quiet {
                            if !w.showed(&s.addr, true, from, until + b.watch_gone) {
                                return Err(self.violation(format!(
                                    "client {c}'s watch of {} never showed {} announced at {t:?}",
                                    name_of(w.name),
                                    s.addr
                                )));
                            }
                            seen += 1;
                        }
                    }
                    if let Some(u) = withdrawn {
                        // Until it was announced again.
                        let next = spans.get(k + 1).map_or(end, |&(a, _, _)| a);
                        let from = u.max(w.started);
                        let quiet = !self
                            .bursts
                            .touched(from, from + b.watch_gone, b.after_burst);
                        if next >= from + b.watch_gone && quiet {
                            if !w.showed(&s.addr, false, from, next) {
                                return Err(self.violation(format!(
                                    "client {c}'s watch of {} still shows {} unannounced at {u:?}",
                                    name_of(w.name),
                                    s.addr
                                )));
                            }
                            seen += 1;
                        }
                    }
                }
            }
            let mut want: Vec<&str> = self
                .services
                .iter()
                .filter(|s| s.name == w.name && s.is_announced())
                .map(|s| s.addr.as_str())
                .collect();
            want.sort_unstable();
            let last = w.reports.last().map(|(_, set)| {
                let mut set: Vec<&str> = set.iter().map(String::as_str).collect();
                set.sort_unstable();
                set
            });
            if last.as_ref().is_none_or(|l| *l != want) {
                return Err(self.violation(format!(
                    "client {c}'s watch of {} ends at {last:?}, not {want:?}",
                    name_of(w.name)
                )));
            }
        }
        self.report.watch_changes += seen;
        Ok(())
    }

    /// The live hosts whose DHT node stores `addr` under `name`, for a violation's message.
    fn storing(&self, name: usize, addr: &str) -> Vec<SocketAddr> {
        let (Some(key), Ok(peer)) = (Key::new(name_of(name).as_bytes()), addr.parse()) else {
            return Vec::new();
        };
        let now = self.sim.now();
        self.sim
            .addrs()
            .filter(|a| {
                self.sim
                    .node(*a)
                    .is_some_and(|n| n.local_peers(now, &key, 1000).contains(&peer))
            })
            .collect()
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            at: self.sim.elapsed(),
            what,
        }
    }
}

/// The service name with index `n`.
fn name_of(n: usize) -> String {
    format!("svc:{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_pair_decodes_to_an_op() {
        let bytes: Vec<u8> = (0..=255u8).flat_map(|k| [k, k.wrapping_mul(7)]).collect();

        let ops = Op::decode(&bytes);

        assert_eq!(ops.len(), 256);
        assert!(ops.contains(&Op::Burst(true)));
        assert!(ops.iter().any(|op| matches!(op, Op::Wait(_))));
    }

    #[test]
    fn a_watch_view_holds_between_reports() {
        let s = Duration::from_secs;
        let w = WatchLog {
            name: 0,
            started: s(0),
            reports: vec![(s(1), vec!["a".into()]), (s(10), vec![])],
        };

        assert!(w.showed("a", true, s(5), s(6)), "held since 1 s");
        assert!(!w.showed("a", true, s(11), s(20)));
        assert!(w.showed("a", false, s(5), s(10)));
        assert!(!w.showed("a", false, s(2), s(9)));
    }
}
