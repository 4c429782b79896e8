//! The Grape: a DHT [`Node`] plus the Grape API on top, as one sans-IO state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::cache::{LookupCache, LookupMirror};
use super::clients::{ApiConnection, ApiLimits, Clients};
use super::dashboard::{self, Route};
use super::error::{ApiError, json_string};
use super::metrics::{self, ApiMetrics, RequestOutcome};
use super::recent::Recent;
use super::reply::{
    Answer, CONTENT_TYPE_JSON, CONTENT_TYPE_METRICS, MutableFields, http_reply, item_json,
    peers_json, ws_reply,
};
use super::request::{Command, CommandKind, PutRequest, data_of, parse_body, parse_command};
use super::status::{self, Listeners, Service, Sources};
use super::watch::{NewWatch, Watches, parse_http_watch};
use super::ws::{WatchVerb, parse_call};
use super::{HttpBody, Reply, RequestId, WsConn};
use crate::dht::bep44::{ImmutableItem, Item, MutableItem, PutError, Target};
use crate::dht::event::{Event, Outcome, QueryError, QueryId};
use crate::dht::id::{Key, hex};
use crate::dht::krpc::NodeInfo;
use crate::dht::node::{self, Node, Transmit};

/// Settings of a [`Grape`]. `Default` gives the Node.js Grape's library defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GrapeConfig {
    /// The DHT node's settings.
    pub node: node::Config,
    /// Largest API body accepted, in bytes (Grape `--check_maxPayloadSize`, 8192). Larger
    /// bodies get 413 `ERR_GRAPE_PAYLOAD_SIZE`; WebSocket messages are held to it too.
    pub max_payload: usize,
    /// How long a lookup's answer is reused for the same name (500 ms). Hot lookups are then
    /// served in microseconds without a traversal, at the cost of answers up to this old:
    /// a peer that just announced, unannounced or expired shows up that much later on other
    /// Grapes. Half a second keeps a withdrawn service gone from every Grape within a second
    /// of its unannounce (docs/benchmarks.md), for one traversal per hot name twice a
    /// second. Zero turns it off.
    pub lookup_cache: Duration,
    /// Names the lookup cache holds at most (5000, the Node Grape's record cache size).
    pub max_cached_lookups: usize,
    /// Peers a lookup answers at most (100, as the Node Grape).
    pub max_lookup_results: usize,
    /// Requests waiting on the DHT at most; past it new ones get 503 `ERR_GRAPE_BUSY`.
    pub max_inflight: usize,
    /// Longest a request waits on the DHT: the bound of the node command serving it
    /// ([`Node::end_by`]), so the node keeps the request's one deadline. A lookup past it is
    /// answered with the peers stored here, anything else with 504 `ERR_GRAPE_TIMEOUT`; so
    /// is a command whose traversal ran past the node's own `lookup_timeout`.
    pub request_timeout: Duration,
    /// Watches (HTTP `/watch` waiting and WebSocket `watch`) at once, at most (10,000); past
    /// it new ones get `ERR_GRAPE_WATCH_LIMIT`. Names followed are bounded by it too.
    pub max_watches: usize,
    /// WebSocket watches one connection holds at most (256).
    pub max_watches_per_connection: usize,
    /// Connections and requests per second per client (see [`ApiLimits`]); on, with
    /// loopback clients exempt.
    pub api_limits: ApiLimits,
}

impl Default for GrapeConfig {
    fn default() -> Self {
        let node = node::Config::default();
        let request_timeout = node.lookup_timeout + Duration::from_secs(5);
        GrapeConfig {
            node,
            max_payload: 8192,
            lookup_cache: Duration::from_millis(500),
            max_cached_lookups: 5000,
            max_lookup_results: 100,
            max_inflight: 10_000,
            request_timeout,
            max_watches: 10_000,
            max_watches_per_connection: 256,
            api_limits: ApiLimits::default(),
        }
    }
}

/// Services and looked-up names the dashboard remembers at most, each (see [`Recent`]).
const RECENT_CAP: usize = 1024;

/// Replies queued beyond the in-flight cap before the oldest is dropped: room for the
/// immediate answers of calls made between two `poll_reply` drains.
const REPLY_SLACK: usize = 1024;

/// A DHT node and the Grape API, with no I/O of its own.
///
/// Inputs: [`handle_datagram`](Grape::handle_datagram) and
/// [`handle_timeout`](Grape::handle_timeout) for the DHT, [`handle_http`](Grape::handle_http)
/// and [`handle_ws`](Grape::handle_ws) for the API, and [`bootstrap`](Grape::bootstrap).
/// After any of them, drain [`poll_transmit`](Grape::poll_transmit) (UDP) and
/// [`poll_reply`](Grape::poll_reply) (API), then call `handle_timeout` at
/// [`poll_timeout`](Grape::poll_timeout). Every API request gets exactly one [`Reply`],
/// except a WebSocket watch: its replies have [`Reply::more`] set, and
/// [`poll_ended`](Grape::poll_ended) says when it is over.
/// Time must not go backwards.
#[derive(Debug)]
pub struct Grape {
    node: Node,
    rng: ChaCha8Rng,
    max_payload: usize,
    max_lookup_results: usize,
    max_inflight: usize,
    request_timeout: Duration,
    /// Requests waiting on the DHT, by the node command serving each: the one table. Their
    /// one deadline is the command's bound in the node ([`Node::end_by`]).
    pending: BTreeMap<QueryId, Pending>,
    cache: LookupCache,
    replies: VecDeque<Reply>,
    metrics: ApiMetrics,
    bootstrap: Option<QueryId>,
    bootstrapped: bool,
    watches: Watches,
    /// Requests that got replies with `more` set and will get no more.
    ended: VecDeque<RequestId>,
    /// When the Grape was made: `/status` counts its clock from here.
    started: Instant,
    /// Where the adapter bound us, for `/status`.
    listeners: Listeners,
    /// Services announced through this API (unannounces remove them), for `/status`.
    services: Recent<Service, ()>,
    /// Names looked up through this API and the peers last answered, for `/status`.
    lookups: Recent<Key, Vec<SocketAddr>>,
    /// Connections and request rates per client.
    clients: Clients,
}

/// A request waiting on the DHT.
#[derive(Debug)]
struct Pending {
    req: RequestId,
    started: Instant,
    kind: CommandKind,
    via: Via,
    job: Job,
    /// An announce of a port, or a put: the node keeps it locally too, so a lone Grape's
    /// "No nodes to query" is not a failure.
    stored_here: bool,
}

/// Which API a request came through, which decides how its reply is framed.
#[derive(Debug)]
enum Via {
    Http,
    /// WebSocket, with the caller's `rid` as JSON text.
    Ws(String),
}

/// What a request's node command is for.
#[derive(Debug)]
enum Job {
    /// A lookup. Concurrent lookups of one name share one traversal, in the node: the
    /// one place that knows what is running (see [`Node::get_peers`]).
    Lookup { name: Key },
    /// An announce, put or get.
    Single,
    /// An unannounce; `name`'s cached lookup is dropped when it ends.
    Unannounce { name: Key },
}

impl Grape {
    /// Creates a Grape; the node's id and everything random derive from `seed`.
    pub fn new(config: GrapeConfig, seed: [u8; 32], now: Instant) -> Self {
        let mut rng = ChaCha8Rng::from_seed(seed);
        // The node draws from stream 0 of the same seed; ours is apart from it.
        rng.set_stream(1);
        Grape {
            node: Node::new(config.node, seed, now),
            rng,
            max_payload: config.max_payload,
            max_lookup_results: config.max_lookup_results,
            max_inflight: config.max_inflight,
            request_timeout: config.request_timeout,
            pending: BTreeMap::new(),
            cache: LookupCache::new(config.lookup_cache, config.max_cached_lookups),
            replies: VecDeque::new(),
            metrics: ApiMetrics::default(),
            bootstrap: None,
            bootstrapped: false,
            watches: Watches::new(
                config.max_watches,
                config.max_watches_per_connection,
                config.max_lookup_results,
            ),
            ended: VecDeque::new(),
            started: now,
            listeners: Listeners::default(),
            services: Recent::new(RECENT_CAP),
            lookups: Recent::new(RECENT_CAP),
            clients: Clients::new(config.api_limits),
        }
    }

    /// Tells the Grape where its adapter bound it, for `/status` (the core has no sockets).
    pub fn set_listeners(&mut self, listeners: Listeners) {
        self.listeners = listeners;
    }

    /// The DHT node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Largest API body accepted; adapters stop reading one byte past it.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Requests waiting on the DHT.
    pub fn inflight(&self) -> usize {
        self.pending.len()
    }

    /// Joins the DHT through `seeds` (Grape `--bn`; empty for a lone Grape).
    pub fn bootstrap(&mut self, now: Instant, seeds: &[SocketAddr]) {
        self.bootstrap = Some(self.node.bootstrap(now, seeds));
        self.drain_events(now);
    }

    /// Joins the DHT through `seeds` (Grape `--bn`) and through `known`, the nodes a saved
    /// state knew (Grape `--state`), which first enter the routing table unverified (see
    /// [`Node::restore`]). With neither, the Grape stays alone and sends nothing.
    pub fn join(&mut self, now: Instant, seeds: &[SocketAddr], known: &[NodeInfo]) {
        self.node.restore(now, known);
        if !seeds.is_empty() || !known.is_empty() {
            self.bootstrap(now, seeds);
        }
    }

    /// Feeds one UDP datagram received on the DHT socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.node.handle_datagram(now, from, bytes);
        self.drain_events(now);
    }

    /// Runs whatever is due at `now`: the node's timers (requests past their bound among
    /// them), then the watches'.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        self.clients.forget_quiet(now);
        self.drain_events(now);
        let mut out = Vec::new();
        self.watches.handle_timeout(now, &mut self.node, &mut out);
        self.push_replies(out);
        self.drain_events(now);
    }

    /// The next datagram to send on the DHT socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.node.poll_transmit()
    }

    /// When [`handle_timeout`](Grape::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.node.poll_timeout(), self.watches.next_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next API reply to send.
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// The next request that got replies with [`Reply::more`] set and will get no more
    /// (an `unwatch`, or its connection closed): the adapter can forget it.
    #[must_use]
    pub fn poll_ended(&mut self) -> Option<RequestId> {
        self.ended.pop_front()
    }

    /// A client at `client` opened an API connection (HTTP or WebSocket): it takes one of
    /// the client's slots, or is refused (`ERR_GRAPE_CONNECTION_LIMIT`, counted) when the
    /// client holds its cap already. The adapter closes a refused connection before reading
    /// from it: answering would mean holding it open, which is what the cap prevents.
    /// Clients the limits do not apply to ([`ApiLimits::apply_to`]) need not be asked.
    ///
    /// # Errors
    /// [`ApiError::ConnectionLimit`] when the client holds its cap of connections.
    pub fn api_connected(&mut self, client: SocketAddr) -> Result<ApiConnection, ApiError> {
        self.clients.connect(client.ip())
    }

    /// An API connection ended: its slot goes back to its client.
    pub fn api_disconnected(&mut self, conn: ApiConnection) {
        self.clients.disconnect(conn);
    }

    /// A WebSocket connection closed: its watches end (see [`poll_ended`](Grape::poll_ended)).
    pub fn ws_closed(&mut self, conn: WsConn) {
        let ended = self.watches.close(conn);
        self.ended.extend(ended);
    }

    /// Keeps `mirror` a copy of the lookup cache from now on, so the adapter can answer a
    /// hot lookup ([`http_lookup_name`](Grape::http_lookup_name)) from it without a trip to
    /// the Grape. The Grape applies every change to it before it answers the request that
    /// caused it (an announce or unannounce through this Grape drops the name first).
    /// Answers served from the copy must be reported
    /// ([`mirror_hits`](Grape::mirror_hits), [`mirror_hit_at`](Grape::mirror_hit_at)) so
    /// the metrics and the dashboard count them as the Grape would; only clients the
    /// per-client limits do not apply to ([`ApiLimits::apply_to`]) may be served so.
    pub fn mirror_lookup_cache(&mut self, mirror: Box<dyn LookupMirror>) {
        self.cache.set_mirror(mirror);
    }

    /// The name an HTTP request (as [`handle_http`](Grape::handle_http) takes it) looks up,
    /// when it is a valid `/lookup` that the Grape would answer from its cache if the name
    /// is there; `None` for anything else.
    pub fn http_lookup_name(method: &str, target: &str, body: HttpBody<'_>) -> Option<Key> {
        let HttpRoute::Command {
            kind: Some(CommandKind::Lookup),
            body,
        } = HttpRoute::of(method, target, body)
        else {
            return None;
        };
        let msg = parse_body(body).ok()?;
        match parse_command(CommandKind::Lookup, data_of(&msg)) {
            Ok(Command::Lookup { name }) => Some(name),
            _ => None,
        }
    }

    /// Counts `hits` lookups the adapter answered from its copy of the cache, as the Grape
    /// counts its own cache hits (a request answered, a hit, a lookup of no duration).
    pub fn mirror_hits(&mut self, hits: u64) {
        self.metrics.cached_lookups(hits);
    }

    /// The adapter answered a lookup of `name` from its copy of the cache at `at`: the
    /// dashboard's recent lookups show it as the Grape's own hits do (an earlier time than
    /// the one shown changes nothing).
    pub fn mirror_hit_at(&mut self, at: Instant, name: &[u8]) {
        if let Some(name) = Key::new(name) {
            self.lookups.touch_if_later(at, &name);
        }
    }

    /// Handles one HTTP request; its [`Reply`] comes from [`poll_reply`](Grape::poll_reply),
    /// at once or when the DHT answers.
    ///
    /// `client` is the address the request came from: past its requests per second
    /// ([`GrapeConfig::api_limits`]) the request gets 429 `ERR_GRAPE_RATE_LIMIT`.
    /// `path` is the request target as received (`/lookup`, query string included, as the
    /// Node Grape reads `req.url`). Commands are served whatever the method, as the Node
    /// Grape does. Other `GET`s are ours (Node clients only POST): `/health`, `/metrics`,
    /// `/watch`, the dashboard at `/` and `/ui` and its data at `/status`; any other path
    /// gets a JSON 404, and a target over [`dashboard::MAX_GET_TARGET`] a 414. None of them
    /// changes state.
    pub fn handle_http(
        &mut self,
        now: Instant,
        client: SocketAddr,
        req: RequestId,
        method: &str,
        path: &str,
        body: HttpBody<'_>,
    ) {
        if let Err(e) = self.clients.admit(now, client.ip()) {
            return self.answer(req, &Via::Http, CommandKind::from_path(path), Err(e));
        }
        let (kind, body) = match HttpRoute::of(method, path, body) {
            HttpRoute::Page(route) => return self.serve_page(now, req, route, path),
            HttpRoute::TooLarge => {
                return self.answer(req, &Via::Http, None, Err(ApiError::PayloadSize));
            }
            HttpRoute::Command { kind, body } => (kind, body),
        };
        // The Node Grape reads the body before it looks at the path.
        let msg = match parse_body(body) {
            Ok(msg) => msg,
            Err(e) => return self.answer(req, &Via::Http, None, Err(e)),
        };
        let Some(kind) = kind else {
            return self.answer(req, &Via::Http, None, Err(ApiError::NotFound));
        };
        self.start(now, req, kind, data_of(&msg), Via::Http);
    }

    /// A `GET` or `HEAD` of one of our own pages (not a command).
    fn serve_page(&mut self, now: Instant, req: RequestId, route: Route, path: &str) {
        match route {
            Route::Health => self.reply_health(req),
            Route::Metrics => self.reply_metrics(req),
            Route::Watch => {
                let watch = parse_http_watch(path).map(NewWatch::Http);
                self.start_watch(now, req, &Via::Http, watch);
            }
            Route::Page => self.push_reply(dashboard::page(req)),
            Route::Status => self.reply_status(now, req),
            Route::NotFound | Route::TooLong => self.push_reply(dashboard::refusal(req, route)),
        }
    }

    /// Handles one WebSocket text message `[rid, type, data]` or `{rid, type, data}` that
    /// came on connection `conn` from `client`; the [`Reply`] body is the text
    /// `[rid, err, result]` to send back on the same socket. Past the client's requests per
    /// second the error is `ERR_GRAPE_RATE_LIMIT`.
    pub fn handle_ws(
        &mut self,
        now: Instant,
        conn: WsConn,
        client: SocketAddr,
        req: RequestId,
        text: &[u8],
    ) {
        self.metrics.ws_messages += 1;
        if let Err(e) = self.clients.admit(now, client.ip()) {
            // Read only as far as the `rid`, so the client can match the refusal.
            let call = (text.len() <= self.max_payload).then(|| parse_call(text));
            let (rid, kind) = match call {
                Some(Ok(call)) => (call.rid, call.kind),
                Some(Err(rid)) => (rid, None),
                None => ("null".to_owned(), None),
            };
            return self.answer(req, &Via::Ws(rid), kind, Err(e));
        }
        if text.len() > self.max_payload {
            let via = Via::Ws("null".into());
            return self.answer(req, &via, None, Err(ApiError::PayloadSize));
        }
        match parse_call(text) {
            Err(rid) => self.answer(req, &Via::Ws(rid), None, Err(ApiError::PayloadInvalid)),
            Ok(call) => match (call.watch, call.kind) {
                (Some(verb), _) => self.ws_watch(now, conn, req, verb, call.rid, call.data),
                (None, None) => self.answer(req, &Via::Ws(call.rid), None, Err(ApiError::NotFound)),
                (None, Some(kind)) => {
                    self.start(now, req, kind, call.data.as_ref(), Via::Ws(call.rid))
                }
            },
        }
    }

    /// `[rid, "watch", name]` or `[rid, "unwatch", name]`.
    fn ws_watch(
        &mut self,
        now: Instant,
        conn: WsConn,
        req: RequestId,
        verb: WatchVerb,
        rid: String,
        data: Option<Value>,
    ) {
        let name = match data
            .as_ref()
            .map(|d| parse_command(CommandKind::Lookup, Some(d)))
        {
            Some(Ok(Command::Lookup { name })) => name,
            _ => return self.answer(req, &Via::Ws(rid), None, Err(ApiError::Lookup)),
        };
        match verb {
            WatchVerb::Watch => {
                let watch = Ok(NewWatch::Ws {
                    conn,
                    rid: rid.clone(),
                    name,
                });
                self.start_watch(now, req, &Via::Ws(rid), watch);
            }
            WatchVerb::Unwatch => {
                let ended = self.watches.unwatch(conn, &name);
                let body = if ended.is_empty() { "false" } else { "true" };
                self.ended.extend(ended);
                self.answer(req, &Via::Ws(rid), None, Ok(body.as_bytes().to_vec()));
            }
        }
    }

    /// Starts a watch, or answers why not.
    fn start_watch(
        &mut self,
        now: Instant,
        req: RequestId,
        via: &Via,
        watch: Result<NewWatch, ApiError>,
    ) {
        let mut out = Vec::new();
        let started = watch.and_then(|w| self.watches.start(now, &mut self.node, req, w, &mut out));
        if let Err(e) = started {
            return self.answer(req, via, None, Err(e));
        }
        self.push_replies(out);
        self.drain_events(now);
    }

    /// The node reports a change of a watched name.
    fn on_peers_changed(&mut self, now: Instant, name: Key) {
        self.watches.on_changed(now, &mut self.node, &name);
    }

    fn push_replies(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            self.push_reply(reply);
        }
    }

    /// Validates a command and either answers it at once or hands it to the node.
    fn start(
        &mut self,
        now: Instant,
        req: RequestId,
        kind: CommandKind,
        data: Option<&Value>,
        via: Via,
    ) {
        let cmd = match parse_command(kind, data) {
            Ok(cmd) => cmd,
            Err(e) => return self.answer(req, &via, Some(kind), Err(e)),
        };
        if let Command::Lookup { name } = &cmd
            && let Some(body) = self.cache.get(now, name.as_bytes())
        {
            let body = body.to_vec();
            self.lookups.touch(now, name);
            self.metrics.cache_hits += 1;
            self.metrics.lookup_latency(Duration::ZERO);
            return self.answer(req, &via, Some(kind), Ok(body));
        }
        if self.pending.len() >= self.max_inflight {
            return self.answer(req, &via, Some(kind), Err(ApiError::Busy));
        }
        let stored_here = matches!(
            cmd,
            Command::Announce { port: Some(_), .. } | Command::Put(_)
        );
        let (query, job) = match cmd {
            Command::Lookup { name } => {
                (self.start_lookup(now, name.clone()), Job::Lookup { name })
            }
            Command::Announce { name, port } => {
                // A service (re)started through this Grape is found here at once.
                self.cache.remove(name.as_bytes());
                self.services
                    .insert(now, (name.clone(), port.unwrap_or(0)), ());
                (self.node.announce(now, name, port), Job::Single)
            }
            Command::Unannounce { name, port } => {
                // A lookup must not answer the withdrawn peer from the cache.
                self.cache.remove(name.as_bytes());
                self.services.remove(&(name.clone(), port));
                let query = self.node.unannounce(now, name.clone(), port);
                (query, Job::Unannounce { name })
            }
            Command::Put(put) => match build_item(put) {
                Ok((item, cas)) => (self.node.put(now, item, cas), Job::Single),
                Err(e) => return self.answer(req, &via, Some(kind), Err(e)),
            },
            Command::Get { target, salt } => {
                (self.node.get(now, Target(target), salt), Job::Single)
            }
        };
        self.pending.insert(
            query,
            Pending {
                req,
                started: now,
                kind,
                via,
                job,
                stored_here,
            },
        );
        // A put refused locally or a get served from the store finishes at once.
        self.drain_events(now);
        if self.pending.contains_key(&query) {
            self.node.end_by(query, now + self.request_timeout);
        }
    }

    /// Hands a lookup to the node, which joins it to a running traversal of `name` if
    /// there is one.
    fn start_lookup(&mut self, now: Instant, name: Key) -> QueryId {
        self.metrics.cache_misses += 1;
        let joined = self.node.stats().lookups_joined;
        let query = self.node.get_peers(now, name.clone());
        if self.node.stats().lookups_joined > joined {
            self.metrics.coalesced += 1;
        } else {
            self.metrics.traversals += 1;
        }
        query
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Finished { query, result } => self.on_finished(now, query, result),
                Event::PeersChanged { info_hash } => self.on_peers_changed(now, info_hash),
            }
        }
    }

    fn on_finished(&mut self, now: Instant, query: QueryId, result: Result<Outcome, QueryError>) {
        if self.bootstrap == Some(query) {
            self.bootstrap = None;
            self.bootstrapped = true;
            tracing::debug!(table = self.node.routing_table_len(), "bootstrap finished");
        }
        let mut out = Vec::new();
        if self
            .watches
            .on_finished(now, &mut self.node, query, &result, &mut out)
        {
            return self.push_replies(out);
        }
        let Some(p) = self.pending.remove(&query) else {
            return;
        };
        match &p.job {
            Job::Lookup { name } => self.answer_lookup(now, p.req, name, &p, result),
            Job::Single => {
                let answer = self.answer_of(p.kind, p.stored_here, result);
                self.answer(p.req, &p.via, Some(p.kind), answer);
            }
            Job::Unannounce { name } => {
                // A lookup that ran meanwhile may have cached the peer again.
                self.cache.remove(name.as_bytes());
                let answer = self.answer_of(p.kind, p.stored_here, result);
                self.answer(p.req, &p.via, Some(p.kind), answer);
            }
        }
    }

    /// A lookup's one answer. Requests that shared a traversal end one after another: the
    /// first renders and caches the answer, the rest reuse it, so all agree. One past its
    /// bound is answered with the peers stored here (the Node Grape's lookup never fails)
    /// and counted as a timeout; that partial answer is not cached.
    fn answer_lookup(
        &mut self,
        now: Instant,
        req: RequestId,
        name: &Key,
        p: &Pending,
        result: Result<Outcome, QueryError>,
    ) {
        self.metrics
            .lookup_latency(now.saturating_duration_since(p.started));
        if matches!(result, Err(QueryError::Timeout)) {
            tracing::debug!(?req, "lookup ran past its bound");
            let body = self.render_lookup(now, name, Vec::new());
            return self.reply(req, &p.via, Some(p.kind), RequestOutcome::Timeout, Ok(body));
        }
        let body = match self.cache.get(now, name.as_bytes()) {
            Some(body) => body.to_vec(),
            None => {
                let found = match result {
                    Ok(Outcome::Peers { peers }) => peers,
                    _ => Vec::new(),
                };
                let body = self.render_lookup(now, name, found);
                self.cache.insert(now, name.as_bytes(), body.clone());
                body
            }
        };
        self.answer(req, &p.via, Some(p.kind), Ok(body));
    }

    /// What a finished announce, put or get answers, as the Node Grape would.
    fn answer_of(
        &self,
        kind: CommandKind,
        stored_here: bool,
        result: Result<Outcome, QueryError>,
    ) -> Answer {
        match (kind, result) {
            (
                CommandKind::Get,
                Ok(Outcome::Got {
                    item: Some(item),
                    from,
                }),
            ) => {
                let id = from.unwrap_or_else(|| self.node.id());
                Ok(render_item(id.as_bytes(), &item))
            }
            // bittorrent-dht's get never fails: nothing found is `undefined`, an empty body.
            (CommandKind::Get, _) => Ok(Vec::new()),
            (_, Ok(Outcome::Announced { stored_at, .. })) if stored_at > 0 => {
                Ok(stored_at.to_string().into_bytes())
            }
            (_, Ok(Outcome::Unannounced { dropped_at })) if dropped_at > 0 => {
                Ok(dropped_at.to_string().into_bytes())
            }
            (_, Ok(Outcome::Stored { target, stored_at })) if stored_at > 0 => {
                Ok(json_string(&hex(target.as_bytes())).into_bytes())
            }
            (_, Ok(_)) => Err(self.nobody_stored(stored_here)),
            (_, Err(QueryError::AllFailed { code, message })) => Err(match code {
                Some(c @ 300..=399) => ApiError::Remote {
                    code: c as u16,
                    message,
                },
                _ => self.nobody_stored(stored_here),
            }),
            (_, Err(QueryError::Rejected(e))) => Err(put_error(&e)),
            (_, Err(QueryError::NotAnnounced)) => Err(ApiError::NotAnnounced),
            (_, Err(QueryError::Timeout | QueryError::Cancelled)) => Err(ApiError::Timeout),
            (_, Err(QueryError::Overloaded)) => Err(ApiError::Busy),
        }
    }

    /// The Node Grape's error when no node stored an announce or put: k-rpc's
    /// "No nodes to query" when it had nobody to ask, else "All queries failed".
    fn nobody_stored(&self, stored_here: bool) -> ApiError {
        match (self.node.routing_table_len(), stored_here) {
            (0, true) => ApiError::StoredHereOnly,
            (0, false) => ApiError::NoNodes,
            _ => ApiError::AllFailed,
        }
    }

    /// A lookup's answer: the peers found merged with the local store, each endpoint once
    /// (see [`endpoints`]), at most `max_lookup_results` (a seeded random sample when there
    /// are more), sorted.
    fn render_lookup(&mut self, now: Instant, name: &Key, found: Vec<SocketAddr>) -> Vec<u8> {
        let max = self.max_lookup_results;
        let local = self.node.local_peers(now, name, max);
        let mut peers: Vec<SocketAddr> = endpoints(found.into_iter().chain(local))
            .into_iter()
            .collect();
        if peers.len() > max {
            // A partial Fisher-Yates shuffle picks a fair subset, as the Node Grape's
            // record cache does, but repeatably from our seed.
            for i in 0..max {
                let j = self.rng.random_range(i..peers.len());
                peers.swap(i, j);
            }
            peers.truncate(max);
            peers.sort_unstable();
        }
        let body = peers_json(&peers);
        self.lookups.insert(now, name.clone(), peers);
        body
    }

    /// Frames, counts and queues the one reply of a request.
    fn answer(&mut self, req: RequestId, via: &Via, kind: Option<CommandKind>, answer: Answer) {
        let outcome = match &answer {
            Ok(_) => RequestOutcome::Ok,
            Err(e) => outcome_of(e),
        };
        self.reply(req, via, kind, outcome, answer);
    }

    /// Frames, counts as `outcome` and queues the one reply of a request.
    fn reply(
        &mut self,
        req: RequestId,
        via: &Via,
        kind: Option<CommandKind>,
        outcome: RequestOutcome,
        answer: Answer,
    ) {
        self.metrics.request(kind, outcome);
        let reply = match via {
            Via::Http => http_reply(req, answer),
            Via::Ws(rid) => ws_reply(req, rid, answer),
        };
        self.push_reply(reply);
    }

    fn push_reply(&mut self, reply: Reply) {
        if self.replies.len() >= self.max_inflight.saturating_add(REPLY_SLACK) {
            // The adapter is not draining poll_reply; keep memory bounded.
            tracing::warn!("reply queue full; dropping the oldest reply");
            self.replies.pop_front();
            self.metrics.replies_dropped += 1;
        }
        self.replies.push_back(reply);
    }

    /// `GET /health`: always 200 with a JSON summary. A lone Grape (empty routing table) is
    /// a valid setup that answers its own lookups, so being alone is reported in the body
    /// (`"alone": true`), not as a failure a load balancer would act on.
    fn reply_health(&mut self, req: RequestId) {
        let table = self.node.routing_table_len();
        let body = serde_json::json!({
            "status": "ok",
            "id": self.node.id().to_string(),
            "routing_table": table,
            "alone": table == 0,
            "bootstrapped": self.bootstrapped,
            "inflight": self.pending.len(),
        });
        self.push_reply(Reply {
            req,
            status: 200,
            content_type: CONTENT_TYPE_JSON,
            body: body.to_string().into_bytes(),
            more: false,
        });
    }

    /// `GET /status`: the dashboard's JSON snapshot (see [`status`]).
    fn reply_status(&mut self, now: Instant, req: RequestId) {
        let body = status::render(&Sources {
            now,
            started: self.started,
            node: &self.node,
            listeners: &self.listeners,
            bootstrapped: self.bootstrapped,
            inflight: self.pending.len(),
            metrics: &self.metrics,
            services: &self.services,
            lookups: &self.lookups,
            watches: &self.watches,
        });
        self.push_reply(Reply {
            req,
            status: 200,
            content_type: CONTENT_TYPE_JSON,
            body,
            more: false,
        });
    }

    /// `GET /metrics`: Prometheus text of the API counters and the node's statistics.
    fn reply_metrics(&mut self, req: RequestId) {
        let body = self.render_metrics();
        self.push_reply(Reply {
            req,
            status: 200,
            content_type: CONTENT_TYPE_METRICS,
            body: body.into_bytes(),
            more: false,
        });
    }

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(8192);
        self.metrics
            .render(&mut out, self.pending.len(), self.cache.len());
        render_node(&mut out, &self.node);
        let (watches, names) = self.watches.len();
        let (_, watched_here) = self.node.watches();
        let (connections, requests) = self.clients.refused();
        metrics::header(
            &mut out,
            "grape_api_clients_refused_total",
            "counter",
            "API connections and requests refused for their client's limits, by reason.",
        );
        for (reason, n) in [("connections", connections), ("rate", requests)] {
            let _ = writeln!(
                out,
                "grape_api_clients_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        for (name, help, value) in [
            (
                "grape_api_watches",
                "HTTP and WebSocket watches waiting.",
                watches,
            ),
            (
                "grape_api_watched_names",
                "Names this Grape follows for watches.",
                names,
            ),
            (
                "grape_dht_watch_subscriptions",
                "watch_peers subscriptions other nodes hold here.",
                watched_here,
            ),
        ] {
            metrics::gauge(&mut out, name, help, value as u64);
        }
        out
    }
}

/// Builds the BEP 44 item a `/put` describes; a mutable one has its signature verified.
fn build_item(put: PutRequest) -> Result<(Item, Option<i64>), ApiError> {
    match put.mutable {
        None => {
            let item = ImmutableItem::new(put.v).map_err(|e| put_error(&e))?;
            Ok((Item::Immutable(item), None))
        }
        Some(m) => {
            let item =
                MutableItem::new(m.k, m.salt, m.seq, put.v, m.sig).map_err(|e| put_error(&e))?;
            Ok((Item::Mutable(item), m.cas))
        }
    }
}

/// The API error for a BEP 44 refusal: the Node Grape's string where it has one, and for
/// `cas` and `seq` conflicts the KRPC code and message a remote node would have sent.
fn put_error(e: &PutError) -> ApiError {
    match e {
        PutError::InvalidValue => ApiError::ValueType,
        PutError::TooBig => ApiError::ValueTooLong,
        PutError::InvalidSignature => ApiError::SignatureInvalid,
        PutError::SaltTooBig => ApiError::SaltTooLong,
        other => match u16::try_from(other.code()) {
            Ok(code @ 300..=399) => ApiError::Remote {
                code,
                message: other.to_string(),
            },
            _ => ApiError::Rejected(other.to_string()),
        },
    }
}

fn render_item(id: &[u8], item: &Item) -> Vec<u8> {
    match item {
        Item::Immutable(i) => item_json(id, i.v(), None),
        Item::Mutable(m) => item_json(
            id,
            m.v(),
            Some(MutableFields {
                k: m.k(),
                salt: m.salt(),
                seq: m.seq(),
                sig: m.sig(),
            }),
        ),
    }
}

/// The distinct endpoints among `peers`.
///
/// * An IPv4-mapped IPv6 address (how a dual-stack socket sees an IPv4 announcer) is the
///   IPv4 address.
/// * `[::1]:port` is left out when `127.0.0.1:port` is there: both are this host. A Grape
///   stores its own announce as 127.0.0.1 while Grapes reached over IPv6 store it as ::1,
///   and 127.0.0.1 is the one that reaches a server bound to `0.0.0.0` (our default) as
///   well as to `::`.
/// * Port 0 is dropped, as bittorrent-dht does.
fn endpoints(peers: impl Iterator<Item = SocketAddr>) -> BTreeSet<SocketAddr> {
    let mut set: BTreeSet<SocketAddr> = peers
        .filter(|p| p.port() != 0)
        .map(|p| SocketAddr::new(p.ip().to_canonical(), p.port()))
        .collect();
    let v4_loopback = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let doubled: Vec<SocketAddr> = set
        .iter()
        .filter(|p| p.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST))
        .filter(|p| set.contains(&v4_loopback(p.port())))
        .copied()
        .collect();
    for p in doubled {
        set.remove(&p);
    }
    set
}

fn outcome_of(e: &ApiError) -> RequestOutcome {
    match e {
        ApiError::Busy => RequestOutcome::Busy,
        ApiError::RateLimited | ApiError::ConnectionLimit => RequestOutcome::Limited,
        ApiError::Timeout => RequestOutcome::Timeout,
        ApiError::StoredHereOnly => RequestOutcome::Local,
        ApiError::NoNodes
        | ApiError::AllFailed
        | ApiError::Remote { .. }
        | ApiError::Rejected(_) => RequestOutcome::Failed,
        _ => RequestOutcome::Invalid,
    }
}

/// Appends the node's statistics in Prometheus text format.
fn render_node(out: &mut String, node: &Node) {
    use std::fmt::Write as _;
    let s = node.stats();
    metrics::header(
        out,
        "grape_dht_datagrams_total",
        "counter",
        "UDP datagrams handled by the DHT node.",
    );
    let _ = writeln!(
        out,
        "grape_dht_datagrams_total{{direction=\"in\"}} {}",
        s.datagrams_in
    );
    let _ = writeln!(
        out,
        "grape_dht_datagrams_total{{direction=\"out\"}} {}",
        s.datagrams_out
    );
    metrics::header(
        out,
        "grape_dht_queries_total",
        "counter",
        "KRPC queries by direction and method.",
    );
    for (dir, counts) in [("in", &s.queries_in), ("out", &s.queries_out)] {
        for (method, n) in counts.iter() {
            let _ = writeln!(
                out,
                "grape_dht_queries_total{{direction=\"{dir}\",method=\"{method}\"}} {n}"
            );
        }
    }
    metrics::counter(
        out,
        "grape_dht_responses_total",
        "KRPC responses received that matched a query of ours.",
        s.responses_in,
    );
    metrics::header(
        out,
        "grape_dht_krpc_errors_total",
        "counter",
        "KRPC error replies by direction.",
    );
    let _ = writeln!(
        out,
        "grape_dht_krpc_errors_total{{direction=\"in\"}} {}",
        s.errors_in
    );
    let _ = writeln!(
        out,
        "grape_dht_krpc_errors_total{{direction=\"out\"}} {}",
        s.errors_out
    );
    metrics::counter(
        out,
        "grape_dht_query_timeouts_total",
        "Queries of ours that got no answer in time.",
        s.timeouts,
    );
    metrics::counter(
        out,
        "grape_dht_silent_skipped_total",
        "Nodes a lookup did not ask because they missed a query and have not answered since.",
        s.skipped_silent,
    );
    metrics::counter(
        out,
        "grape_dht_silent_long_shots_total",
        "Silent nodes a lookup asked anyway, once per 30 s each at most, without waiting for them.",
        s.long_shots,
    );
    metrics::header(
        out,
        "grape_dht_dropped_total",
        "counter",
        "Datagrams or work dropped, by reason.",
    );
    // By label, so the lines keep one order however the reasons are declared.
    let mut dropped: Vec<(&str, u64)> = s.dropped.iter().map(|(r, n)| (r.label(), *n)).collect();
    dropped.sort_unstable();
    for (reason, n) in dropped {
        let _ = writeln!(out, "grape_dht_dropped_total{{reason=\"{reason}\"}} {n}");
    }
    metrics::counter(
        out,
        "grape_dht_bans_total",
        "Sources banned for going over the DHT rate limit again and again.",
        s.bans,
    );
    metrics::counter(
        out,
        "grape_dht_banned_nodes_removed_total",
        "Routing-table nodes dropped because their source was banned.",
        s.banned_nodes_removed,
    );
    metrics::counter(
        out,
        "grape_dht_banned_skipped_total",
        "Nodes named in answers that a lookup did not ask because their source is banned.",
        s.skipped_banned,
    );
    metrics::header(
        out,
        "grape_dht_nodes_refused_total",
        "counter",
        "Nodes the routing tables did not take, by rule.",
    );
    for (rule, n) in &s.nodes_refused {
        let _ = writeln!(out, "grape_dht_nodes_refused_total{{rule=\"{rule}\"}} {n}");
    }
    metrics::counter(
        out,
        "grape_dht_unverified_ids_total",
        "Nodes taken whose public address does not match their id (BEP 42).",
        s.unverified_ids,
    );
    metrics::header(
        out,
        "grape_dht_commands_total",
        "counter",
        "Node commands (lookups, announces, puts, gets) by result.",
    );
    let _ = writeln!(
        out,
        "grape_dht_commands_total{{result=\"ok\"}} {}",
        s.commands_ok
    );
    let _ = writeln!(
        out,
        "grape_dht_commands_total{{result=\"failed\"}} {}",
        s.commands_failed
    );
    let (peers_evicted, items_evicted) = node.evicted();
    metrics::header(
        out,
        "grape_dht_evicted_total",
        "counter",
        "Stored peers and items dropped because a store was full.",
    );
    let _ = writeln!(
        out,
        "grape_dht_evicted_total{{store=\"peers\"}} {peers_evicted}"
    );
    let _ = writeln!(
        out,
        "grape_dht_evicted_total{{store=\"items\"}} {items_evicted}"
    );
    let (peers_capped, items_capped) = node.evicted_by_source();
    metrics::header(
        out,
        "grape_dht_source_cap_evictions_total",
        "counter",
        "Stored peers and items dropped because their source went over its per-source cap.",
    );
    for (store, n) in [("peers", peers_capped), ("items", items_capped)] {
        let _ = writeln!(
            out,
            "grape_dht_source_cap_evictions_total{{store=\"{store}\"}} {n}"
        );
    }
    for (name, help, value) in [
        (
            "grape_dht_routing_table_nodes",
            "Nodes in the routing tables.",
            node.routing_table_len(),
        ),
        (
            "grape_dht_silent_nodes",
            "Nodes that missed a query and have not answered since.",
            node.silent_nodes(),
        ),
        (
            "grape_dht_banned_sources",
            "Sources banned now for going over the DHT rate limit.",
            node.banned_sources(),
        ),
        (
            "grape_dht_stored_keys",
            "Info-hashes with stored peers.",
            node.stored_keys(),
        ),
        (
            "grape_dht_stored_peers",
            "Stored peers over all info-hashes.",
            node.stored_peers(),
        ),
        (
            "grape_dht_stored_items",
            "Stored BEP 44 items.",
            node.stored_items(),
        ),
        (
            "grape_dht_running_commands",
            "Node commands still running.",
            node.running_commands(),
        ),
    ] {
        metrics::gauge(out, name, help, value as u64);
    }
}

/// Where an HTTP request goes, decided once for [`Grape::handle_http`] and for
/// [`Grape::http_lookup_name`] (the adapter's test for a lookup its copy of the cache may
/// answer), so the two cannot disagree.
enum HttpRoute<'a> {
    /// A `GET` or `HEAD` of one of our pages (or a refusal of a bad one).
    Page(Route),
    /// A command whose body was cut at the size limit.
    TooLarge,
    /// A command: its kind by the path (`None`: no such command, a 404 once the body has
    /// been read, as Node does) and its body, not parsed yet.
    Command {
        kind: Option<CommandKind>,
        body: &'a [u8],
    },
}

impl<'a> HttpRoute<'a> {
    fn of(method: &str, path: &str, body: HttpBody<'a>) -> Self {
        if (method == "GET" || method == "HEAD")
            && let Some(page) = dashboard::route(path)
        {
            return HttpRoute::Page(page);
        }
        match body {
            HttpBody::Complete(body) => HttpRoute::Command {
                kind: CommandKind::from_path(path),
                body,
            },
            _ => HttpRoute::TooLarge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CONTENT_TYPE_HTML, MAX_GET_TARGET, MAX_ROWS_SHOWN};
    use rand::SeedableRng;
    use serde_json::json;

    /// The start of the virtual clock; tests only ever add to it.
    fn t0() -> Instant {
        Instant::now()
    }

    /// Where API requests come from in these tests: loopback, which the limits exempt.
    const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Grapes exchanging datagrams in memory: each delivery round takes 1 ms, and when
    /// nothing is in flight the clock jumps to the earliest `poll_timeout`.
    struct Net {
        now: Instant,
        grapes: BTreeMap<SocketAddr, Grape>,
        replies: Vec<(SocketAddr, Reply)>,
        next_req: u64,
        /// Datagrams to these addresses vanish (a dead bootstrap node).
        black_holes: BTreeSet<SocketAddr>,
    }

    impl Net {
        fn new(n: u16, config: impl Fn() -> GrapeConfig) -> Net {
            Net::at((0..n).map(|i| addr(20001 + i)), config)
        }

        /// Grapes at the given addresses.
        fn at(addrs: impl Iterator<Item = SocketAddr>, config: impl Fn() -> GrapeConfig) -> Net {
            let now = t0();
            let mut seeds = ChaCha8Rng::seed_from_u64(7);
            let grapes = addrs
                .map(|a| {
                    let seed: [u8; 32] = seeds.random();
                    (a, Grape::new(config(), seed, now))
                })
                .collect();
            Net {
                now,
                grapes,
                replies: Vec::new(),
                next_req: 0,
                black_holes: BTreeSet::new(),
            }
        }

        /// Bootstraps every Grape from all the others and lets the network settle.
        fn joined(mut self) -> Net {
            let addrs: Vec<SocketAddr> = self.grapes.keys().copied().collect();
            for (a, g) in &mut self.grapes {
                let seeds: Vec<SocketAddr> = addrs.iter().copied().filter(|s| s != a).collect();
                g.bootstrap(self.now, &seeds);
            }
            self.run_for(Duration::from_secs(5));
            self
        }

        fn grape(&mut self, at: SocketAddr) -> &mut Grape {
            self.grapes.get_mut(&at).expect("grape at that address")
        }

        fn next_id(&mut self) -> RequestId {
            self.next_req += 1;
            RequestId(self.next_req)
        }

        /// Sends an API request and returns its id, without running the network.
        fn send(&mut self, at: SocketAddr, path: &str, body: &str) -> RequestId {
            let req = self.next_id();
            let now = self.now;
            self.grape(at).handle_http(
                now,
                CLIENT,
                req,
                "POST",
                path,
                HttpBody::Complete(body.as_bytes()),
            );
            self.collect();
            req
        }

        fn send_ws(&mut self, at: SocketAddr, text: &str) -> RequestId {
            let req = self.next_id();
            let now = self.now;
            self.grape(at)
                .handle_ws(now, WsConn(1), CLIENT, req, text.as_bytes());
            self.collect();
            req
        }

        /// Sends an API request and runs the network until it is answered.
        fn call(&mut self, at: SocketAddr, path: &str, body: &str) -> Reply {
            let req = self.send(at, path, body);
            self.wait(req)
        }

        fn call_data(&mut self, at: SocketAddr, path: &str, data: Value) -> Reply {
            let body = json!({"rid": "test", "data": data}).to_string();
            self.call(at, path, &body)
        }

        /// The body of a `/lookup` of `name` at `at`.
        fn lookup(&mut self, at: SocketAddr, name: &str) -> Value {
            body(&self.call_data(at, "/lookup", json!(name)))
        }

        fn wait(&mut self, req: RequestId) -> Reply {
            for _ in 0..100_000 {
                if let Some(i) = self.replies.iter().position(|(_, r)| r.req == req) {
                    return self.replies.remove(i).1;
                }
                self.step();
            }
            panic!("no reply to {req:?}");
        }

        fn collect(&mut self) {
            for (a, g) in &mut self.grapes {
                while let Some(r) = g.poll_reply() {
                    self.replies.push((*a, r));
                }
            }
        }

        /// Delivers every queued datagram, or else advances to the next timer.
        fn step(&mut self) {
            let mut in_flight = Vec::new();
            for (from, g) in &mut self.grapes {
                while let Some(t) = g.poll_transmit() {
                    in_flight.push((*from, t));
                }
            }
            if in_flight.is_empty() {
                let next = self.grapes.values().filter_map(Grape::poll_timeout).min();
                let Some(next) = next else { return };
                self.now = self.now.max(next);
                let now = self.now;
                for g in self.grapes.values_mut() {
                    if g.poll_timeout().is_some_and(|t| t <= now) {
                        g.handle_timeout(now);
                    }
                }
            } else {
                self.now += Duration::from_millis(1);
                let now = self.now;
                for (from, t) in in_flight {
                    if self.black_holes.contains(&t.to) {
                        continue;
                    }
                    if let Some(g) = self.grapes.get_mut(&t.to) {
                        g.handle_datagram(now, from, &t.payload);
                    }
                }
            }
            self.collect();
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                let before = self.now;
                self.step();
                if self.now == before && self.grapes.values().all(|g| g.poll_timeout().is_none()) {
                    break;
                }
            }
        }
    }

    fn body(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.body).expect("JSON body")
    }

    fn lone() -> (Net, SocketAddr) {
        let mut net = Net::new(1, GrapeConfig::default);
        let now = net.now;
        net.grape(addr(20001)).bootstrap(now, &[]);
        (net, addr(20001))
    }

    #[test]
    fn lone_grape_answers_its_own_lookups() {
        let (mut net, a) = lone();

        let announced = net.call_data(a, "/announce", json!(["rpc_test", 1337]));
        let found = net.call_data(a, "/lookup", json!("rpc_test"));

        assert_eq!(announced.status, 200);
        assert_eq!(body(&announced), json!("No nodes to query"));
        assert_eq!(body(&found), json!(["127.0.0.1:1337"]));
    }

    #[test]
    fn lookup_of_an_unknown_name_is_an_empty_list() {
        let (mut net, a) = lone();

        let found = net.call_data(a, "/lookup", json!("nobody"));

        assert_eq!(found.status, 200);
        assert_eq!(found.body, b"[]");
    }

    #[test]
    fn announce_on_one_grape_is_found_from_another() {
        let mut net = Net::new(3, GrapeConfig::default).joined();

        let announced = net.call_data(addr(20001), "/announce", json!(["rpc_test", 1337]));
        let found = net.call_data(addr(20003), "/lookup", json!("rpc_test"));

        assert!(
            body(&announced).as_u64().is_some_and(|n| n >= 1),
            "{announced:?}"
        );
        assert_eq!(body(&found), json!(["127.0.0.1:1337"]));
    }

    #[test]
    fn unannounce_removes_the_peer_everywhere_and_from_the_cache() {
        let mut net = Net::new(3, GrapeConfig::default).joined();
        let (a, c) = (addr(20001), addr(20003));
        let announced = net.call_data(a, "/announce", json!(["rpc_test", 1337]));
        assert_eq!(net.lookup(a, "rpc_test"), json!(["127.0.0.1:1337"]));

        let gone = net.call_data(a, "/unannounce", json!(["rpc_test", 1337]));

        assert_eq!(gone.status, 200);
        assert_eq!(
            body(&gone),
            body(&announced),
            "as many dropped it as stored it"
        );
        assert_eq!(net.lookup(a, "rpc_test"), json!([]));
        assert_eq!(net.lookup(c, "rpc_test"), json!([]));
    }

    #[test]
    fn unannounce_over_websocket_answers_like_announce() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        let announce = net.send_ws(a, r#"["r1","announce",["svc",1337]]"#);
        let announced = body(&net.wait(announce));

        let unannounce = net.send_ws(a, r#"["r2","unannounce",["svc",1337]]"#);
        let again = net.send_ws(a, r#"["r3","unannounce",["svc",1337]]"#);

        assert_eq!(announced, json!(["r1", null, 1]));
        assert_eq!(body(&net.wait(unannounce)), json!(["r2", null, 1]));
        assert_eq!(
            body(&net.wait(again)),
            json!(["r3", "ERR_GRAPE_NOT_ANNOUNCED", null])
        );
    }

    #[test]
    fn an_announce_over_ipv6_is_listed_once() {
        let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let mut net = Net::at([v6(20001), v6(20002)].into_iter(), GrapeConfig::default).joined();

        let announced = net.call_data(v6(20001), "/announce", json!(["rpc_test", 1337]));
        let here = net.call_data(v6(20001), "/lookup", json!("rpc_test"));
        let there = net.call_data(v6(20002), "/lookup", json!("rpc_test"));

        assert_eq!(body(&announced), json!(1));
        // Stored as 127.0.0.1 here and as ::1 by the other Grape: one endpoint.
        assert_eq!(body(&here), json!(["127.0.0.1:1337"]));
        assert_eq!(body(&there), json!(["127.0.0.1:1337"]));
    }

    #[test]
    fn lookups_list_ipv4_and_ipv6_endpoints_once_each() {
        let v4 = SocketAddr::from(([10, 0, 0, 1], 20001));
        let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], 20002));
        let mapped = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 3).to_ipv6_mapped(), 20003));
        let asker = SocketAddr::from(([10, 0, 0, 4], 20004));
        let mut net = Net::at([v4, v6, mapped, asker].into_iter(), GrapeConfig::default).joined();

        for at in [v4, v6, mapped] {
            net.call_data(at, "/announce", json!(["both", 1337]));
        }
        let found = net.call_data(asker, "/lookup", json!("both"));

        assert_eq!(
            body(&found),
            json!(["10.0.0.1:1337", "10.0.0.3:1337", "[2001:db8::2]:1337"])
        );
    }

    #[test]
    fn lone_grape_unannounce_forgets_locally_and_says_no_nodes() {
        let (mut net, a) = lone();
        net.call_data(a, "/announce", json!(["rpc_test", 1337]));

        let gone = net.call_data(a, "/unannounce", json!(["rpc_test", 1337]));

        assert_eq!(body(&gone), json!("No nodes to query"));
        assert_eq!(net.lookup(a, "rpc_test"), json!([]));
    }

    #[test]
    fn endpoints_are_distinct_and_loopback_is_listed_once() {
        let v6_loopback = SocketAddr::from((Ipv6Addr::LOCALHOST, 1));
        let peers = [
            addr(1),
            v6_loopback,
            SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 1)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 2)),
            addr(0),
        ];

        let got: Vec<SocketAddr> = endpoints(peers.into_iter()).into_iter().collect();

        // ::1 alone stays: a server bound to ::1 only is reached there.
        assert_eq!(
            got,
            vec![addr(1), SocketAddr::from((Ipv6Addr::LOCALHOST, 2))]
        );
    }

    #[test]
    fn a_lone_grape_counts_what_it_stores_as_local_not_failed() {
        let (mut net, a) = lone();

        let announced = net.call_data(a, "/announce", json!(["svc", 1337]));
        let put = net.call_data(a, "/put", json!({"v": "hello"}));
        let implied = net.call_data(a, "/announce", json!(["svc", 0]));
        let text = net.grape(a).render_metrics();

        for reply in [&announced, &put, &implied] {
            assert_eq!(body(reply), json!("No nodes to query"));
        }
        let count = |command: &str, outcome: &str| {
            let line =
                format!("grape_api_requests_total{{command=\"{command}\",outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map(str::to_owned)
        };
        assert_eq!(count("announce", "local").as_deref(), Some("1"));
        assert_eq!(count("put", "local").as_deref(), Some("1"));
        // Port 0 names the DHT port only a receiving node sees: nothing was stored.
        assert_eq!(count("announce", "failed").as_deref(), Some("1"));
        assert_eq!(count("put", "failed").as_deref(), Some("0"));
    }

    #[test]
    fn immutable_put_then_get_from_another_grape() {
        let mut net = Net::new(3, GrapeConfig::default).joined();

        let put = net.call_data(addr(20001), "/put", json!({"v": "hello"}));
        let hash = "e28910ea0adb94dd45ced75fbff3e135c01bc437";
        let by_hex = net.call_data(addr(20003), "/get", json!(hash));
        let by_obj = net.call_data(addr(20002), "/get", json!({"hash": hash}));

        assert_eq!(body(&put), json!(hash));
        assert_eq!(body(&by_hex)["v"], json!("hello"));
        assert_eq!(body(&by_obj)["v"], json!("hello"));
    }

    #[test]
    fn lone_grape_put_stores_locally_and_says_no_nodes() {
        let (mut net, a) = lone();

        let put = net.call_data(a, "/put", json!("hello"));
        let got = net.call_data(a, "/get", json!("e28910ea0adb94dd45ced75fbff3e135c01bc437"));

        assert_eq!(body(&put), json!("No nodes to query"));
        assert_eq!(body(&got)["v"], json!("hello"));
    }

    #[test]
    fn announce_with_port_zero_uses_the_dht_port() {
        let mut net = Net::new(3, GrapeConfig::default).joined();

        net.call_data(addr(20001), "/announce", json!(["implied", 0]));
        let found = net.call_data(addr(20003), "/lookup", json!("implied"));

        assert_eq!(body(&found), json!(["127.0.0.1:20001"]));
    }

    #[test]
    fn get_of_a_missing_item_is_an_empty_body() {
        let mut net = Net::new(2, GrapeConfig::default).joined();

        let got = net.call_data(addr(20001), "/get", json!("00".repeat(20)));

        assert_eq!(got.status, 200);
        assert!(got.body.is_empty());
    }

    fn signed(salt: &[u8], seq: i64, v: &str) -> (MutableItem, Value) {
        let item = MutableItem::sign(
            &[5; 32],
            salt.to_vec(),
            seq,
            format!("{}:{v}", v.len()).into_bytes(),
        )
        .expect("signable");
        let data = json!({
            "v": v,
            "k": hex(item.k()),
            "sig": hex(item.sig()),
            "seq": seq,
            "salt": String::from_utf8_lossy(salt),
        });
        (item, data)
    }

    #[test]
    fn mutable_put_then_get_with_salt() {
        let mut net = Net::new(3, GrapeConfig::default).joined();
        let (item, data) = signed(b"salt", 1, "first");

        let put = net.call_data(addr(20001), "/put", data);
        let hash = hex(item.target().as_bytes());
        let got = net.call_data(addr(20003), "/get", json!({"hash": hash, "salt": "salt"}));

        assert_eq!(body(&put), json!(hash));
        let got = body(&got);
        assert_eq!(got["v"], json!("first"));
        assert_eq!(got["seq"], json!(1));
        assert_eq!(got["salt"], json!("salt"));
        assert_eq!(got["k"], json!(hex(item.k())));
    }

    #[test]
    fn mutable_put_with_a_bad_signature_is_refused() {
        let (mut net, a) = lone();
        let (_, mut data) = signed(b"", 1, "first");
        data["v"] = json!("other");

        let put = net.call_data(a, "/put", data);

        assert_eq!(put.status, 200);
        assert_eq!(body(&put), json!("invalid signature"));
    }

    #[test]
    fn mutable_put_with_a_lower_seq_is_refused_with_302() {
        let (mut net, a) = lone();
        let (_, second) = signed(b"", 2, "second");
        let (_, first) = signed(b"", 1, "first");
        net.call_data(a, "/put", second);

        let put = net.call_data(a, "/put", first);

        assert_eq!(put.status, 302);
        assert!(
            body(&put).as_str().is_some_and(|m| m.starts_with("302 ")),
            "{put:?}"
        );
    }

    #[test]
    fn concurrent_lookups_share_one_traversal() {
        let mut net = Net::new(3, GrapeConfig::default).joined();
        let a = addr(20001);
        let payload = json!({"data": "svc"}).to_string();

        let r1 = net.send(a, "/lookup", &payload);
        let r2 = net.send(a, "/lookup", &payload);
        let one = net.wait(r1);
        let two = net.wait(r2);

        assert_eq!(one.body, two.body);
        assert_eq!(net.grape(a).metrics.traversals, 1);
        assert_eq!(net.grape(a).metrics.coalesced, 1);
    }

    #[test]
    fn hot_lookups_are_served_from_the_cache() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        net.call_data(a, "/lookup", json!("svc"));

        let req = net.send(a, "/lookup", &json!({"data": "svc"}).to_string());

        // Answered inside handle_http, with no network step.
        assert!(net.replies.iter().any(|(_, r)| r.req == req));
        assert_eq!(net.grape(a).metrics.cache_hits, 1);
        assert_eq!(net.grape(a).metrics.traversals, 1);
    }

    #[test]
    fn an_announce_here_is_found_here_at_once_despite_the_cache() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        assert_eq!(net.lookup(a, "svc"), json!([]));

        net.call_data(a, "/announce", json!(["svc", 1337]));

        assert_eq!(net.lookup(a, "svc"), json!(["127.0.0.1:1337"]));
    }

    /// Name to (expiry, body).
    type Held = BTreeMap<Vec<u8>, (Option<Instant>, Vec<u8>)>;

    /// A [`LookupMirror`] that the test reads back.
    #[derive(Clone, Debug, Default)]
    struct Mirrored(std::sync::Arc<std::sync::Mutex<Held>>);

    impl LookupMirror for Mirrored {
        fn put(&mut self, name: &[u8], expires: Option<Instant>, body: &[u8]) {
            let mut map = self.0.lock().expect("unpoisoned");
            map.insert(name.to_vec(), (expires, body.to_vec()));
        }
        fn remove(&mut self, name: &[u8]) {
            self.0.lock().expect("unpoisoned").remove(name);
        }
    }

    impl Mirrored {
        fn get(&self, name: &str) -> Option<(Option<Instant>, Vec<u8>)> {
            self.0
                .lock()
                .expect("unpoisoned")
                .get(name.as_bytes())
                .cloned()
        }
    }

    #[test]
    fn the_mirror_holds_what_the_cache_answers_and_loses_an_announced_name_first() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        let copy = Mirrored::default();
        net.grape(a).mirror_lookup_cache(Box::new(copy.clone()));
        let before = net.call_data(a, "/lookup", json!("svc"));
        let answered_at = net.now;
        let cached = copy.get("svc");

        let announce = net.send(a, "/announce", &json!({"data": ["svc", 1337]}).to_string());
        let while_announcing = copy.get("svc");
        net.wait(announce);
        let after = net.call_data(a, "/lookup", json!("svc"));

        let ttl = GrapeConfig::default().lookup_cache;
        assert_eq!(cached, Some((Some(answered_at + ttl), before.body)));
        assert_eq!(
            while_announcing, None,
            "dropped before the announce is answered"
        );
        assert_eq!(after.body, br#"["127.0.0.1:1337"]"#);
        assert_eq!(copy.get("svc").map(|(_, body)| body), Some(after.body));
    }

    #[test]
    fn a_mirror_set_late_starts_with_what_is_cached() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        let reply = net.call_data(a, "/lookup", json!("svc"));
        let copy = Mirrored::default();

        net.grape(a).mirror_lookup_cache(Box::new(copy.clone()));

        assert_eq!(copy.get("svc").map(|(_, body)| body), Some(reply.body));
    }

    #[test]
    fn mirror_hits_count_as_the_grapes_own_hits() {
        let (mut served_here, a) = lone();
        let (mut served_by_mirror, b) = lone();
        for _ in 0..4 {
            served_here.lookup(a, "svc");
        }

        served_by_mirror.lookup(b, "svc");
        served_by_mirror.grape(b).mirror_hits(3);

        let metrics = served_here.grape(a).render_metrics();
        assert!(
            metrics.contains("grape_api_lookup_cache_hits_total 3\n"),
            "{metrics}"
        );
        assert_eq!(served_by_mirror.grape(b).render_metrics(), metrics);
    }

    #[test]
    fn a_mirror_hit_moves_the_name_up_the_recent_lookups_but_never_back() {
        let (mut net, a) = lone();
        let t = net.now;
        net.lookup(a, "old");
        net.now += Duration::from_secs(1);
        net.lookup(a, "new");
        let newest = |net: &mut Net| {
            let (name, at, _) = net
                .grape(a)
                .lookups
                .newest_first()
                .next()
                .expect("a lookup");
            (name.as_bytes().to_vec(), at)
        };

        net.grape(a)
            .mirror_hit_at(t + Duration::from_secs(2), b"old");
        let moved = newest(&mut net);
        net.grape(a).mirror_hit_at(t, b"old");
        let kept = newest(&mut net);

        assert_eq!(moved, (b"old".to_vec(), t + Duration::from_secs(2)));
        assert_eq!(kept, moved);
    }

    #[test]
    fn http_lookup_name_names_exactly_the_lookups_handle_http_starts() {
        let (mut net, a) = lone();
        let big = vec![b' '; 9000];
        let cases: [(&str, &str, HttpBody<'_>); 14] = [
            ("POST", "/lookup", HttpBody::Complete(br#"{"data":"svc"}"#)),
            ("GET", "/lookup", HttpBody::Complete(br#"{"data":"svc"}"#)),
            ("HEAD", "/lookup", HttpBody::Complete(br#"{"data":"svc"}"#)),
            (
                "PUT",
                "/lookup",
                HttpBody::Complete(br#"{"data":"svc","x":[1]}"#),
            ),
            (
                "POST",
                "/lookup",
                HttpBody::Complete(br#"{"data":"a","data":"b"}"#),
            ),
            (
                "POST",
                "/lookup?x=1",
                HttpBody::Complete(br#"{"data":"svc"}"#),
            ),
            ("POST", "/lookup", HttpBody::Complete(br#"{"data":""}"#)),
            ("POST", "/lookup", HttpBody::Complete(br#"{"data":5}"#)),
            ("POST", "/lookup", HttpBody::Complete(br#"["svc"]"#)),
            (
                "POST",
                "/lookup",
                HttpBody::Complete(br#"{"data":"svc","y":1e400}"#),
            ),
            ("POST", "/lookup", HttpBody::Complete(&big)),
            ("POST", "/lookup", HttpBody::TooLarge),
            (
                "POST",
                "/announce",
                HttpBody::Complete(br#"{"data":["svc",1]}"#),
            ),
            ("GET", "/health", HttpBody::Complete(b"")),
        ];

        for (method, target, body) in cases {
            let named = Grape::http_lookup_name(method, target, body);
            let g = net.grape(a);
            let before = (g.metrics.cache_hits, g.metrics.cache_misses);
            let lookups = g.lookups.len();
            let now = net.now;
            net.grape(a)
                .handle_http(now, CLIENT, RequestId(1), method, target, body);
            net.collect();
            let g = net.grape(a);
            let started = (g.metrics.cache_hits, g.metrics.cache_misses) != before;
            assert_eq!(named.is_some(), started, "{method} {target}");
            if let Some(name) = named {
                assert!(
                    g.lookups.len() > lookups || g.lookups.touch(now, &name),
                    "{method} {target} looked up {name:?}"
                );
            }
        }
    }

    #[test]
    fn cached_lookups_expire() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        net.call_data(a, "/lookup", json!("svc"));
        net.now += Duration::from_secs(2);

        net.call_data(a, "/lookup", json!("svc"));

        assert_eq!(net.grape(a).metrics.traversals, 2);
    }

    #[test]
    fn lookups_answer_at_most_max_results_distinct_and_sorted() {
        let (mut net, a) = lone();
        for port in 1..=150u16 {
            net.call_data(a, "/announce", json!(["many", port]));
        }

        let found = net.call_data(a, "/lookup", json!("many"));

        let list = body(&found);
        let list = list.as_array().expect("array");
        assert_eq!(list.len(), 100);
        let addrs: Vec<SocketAddr> = list
            .iter()
            .map(|p| p.as_str().and_then(|s| s.parse().ok()).expect("host:port"))
            .collect();
        let mut sorted = addrs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(addrs, sorted);
    }

    #[test]
    fn over_the_inflight_cap_requests_are_refused() {
        let mut net = Net::new(2, || GrapeConfig {
            max_inflight: 1,
            ..GrapeConfig::default()
        })
        .joined();
        let a = addr(20001);

        let first = net.send(a, "/lookup", &json!({"data": "one"}).to_string());
        let second = net.send(a, "/lookup", &json!({"data": "two"}).to_string());
        let refused = net.wait(second);
        let served = net.wait(first);

        assert_eq!(refused.status, 503);
        assert_eq!(refused.body, b"ERR_GRAPE_BUSY");
        assert_eq!(served.status, 200);
    }

    /// Two joined Grapes with a request bound shorter than the node's soft query timeout;
    /// the second then goes silent, so only our bound can answer.
    fn silent_peer() -> (Net, SocketAddr) {
        let mut net = Net::new(2, || GrapeConfig {
            request_timeout: Duration::from_millis(5),
            ..GrapeConfig::default()
        })
        .joined();
        net.black_holes.insert(addr(20002));
        (net, addr(20001))
    }

    #[test]
    fn lookups_past_the_bound_answer_the_local_store() {
        let (mut net, a) = silent_peer();
        net.call_data(a, "/announce", json!(["svc", 1]));

        let start = net.now;
        let found = net.call_data(a, "/lookup", json!("svc"));
        let took = net.now - start;

        assert_eq!(body(&found), json!(["127.0.0.1:1"]));
        assert_eq!(took, Duration::from_millis(5));
        assert_eq!(
            net.grape(a)
                .metrics
                .count(Some(CommandKind::Lookup), RequestOutcome::Timeout),
            1
        );
    }

    #[test]
    fn other_commands_past_the_bound_get_a_timeout_error() {
        let (mut net, a) = silent_peer();

        let announced = net.call_data(a, "/announce", json!(["svc", 1]));

        assert_eq!(announced.status, 504);
        assert_eq!(announced.body, b"ERR_GRAPE_TIMEOUT");
        assert_eq!(net.grape(a).inflight(), 0);
    }

    #[test]
    fn payload_errors_match_the_node_grape() {
        let (mut net, a) = lone();
        let req = net.next_id();
        let now = net.now;
        net.grape(a)
            .handle_http(now, CLIENT, req, "POST", "/lookup", HttpBody::TooLarge);
        net.collect();

        let too_large = net.wait(req);
        let garbage = net.call(a, "/lookup", "garbage");
        let unknown = net.call_data(a, "/lookupx", json!("nope"));
        let get_method = net.call(a, "/lookup", "");

        assert_eq!(
            (too_large.status, &too_large.body[..]),
            (413, &b"ERR_GRAPE_PAYLOAD_SIZE"[..])
        );
        assert_eq!(
            (garbage.status, &garbage.body[..]),
            (500, &b"ERR_GRAPE_PAYLOAD_INVALID"[..])
        );
        assert_eq!(
            (unknown.status, &unknown.body[..]),
            (200, &b"\"ERR_REQ_NOTFOUND\""[..])
        );
        assert_eq!(get_method.status, 500);
    }

    #[test]
    fn command_errors_are_strings_with_status_200() {
        let (mut net, a) = lone();

        let cases = [
            ("/lookup", json!(5), "ERR_GRAPE_LOOKUP"),
            ("/announce", json!("x"), "ERR_GRAPE_ANNOUNCE"),
            ("/announce", json!(["svc", 70000]), "ERR_GRAPE_SERVICE_PORT"),
            ("/announce", json!(["svc", -1]), "ERR_GRAPE_SERVICE_PORT"),
            ("/unannounce", json!("x"), "ERR_GRAPE_UNANNOUNCE"),
            ("/unannounce", json!([5, 1]), "ERR_GRAPE_UNANNOUNCE"),
            ("/unannounce", json!(["svc", 0]), "ERR_GRAPE_SERVICE_PORT"),
            (
                "/unannounce",
                json!(["svc", 70000]),
                "ERR_GRAPE_SERVICE_PORT",
            ),
            (
                "/unannounce",
                json!(["nobody", 1]),
                "ERR_GRAPE_NOT_ANNOUNCED",
            ),
            ("/get", json!("xyz"), "ERR_GRAPE_HASH_FORMAT"),
            ("/get", json!(null), "ERR_GRAPE_GENERIC"),
            ("/put", json!({}), "opts.v not given"),
        ];
        for (path, data, want) in cases {
            let reply = net.call_data(a, path, data.clone());

            assert_eq!(reply.status, 200, "{path} {data}");
            assert_eq!(body(&reply), json!(want), "{path} {data}");
        }
    }

    #[test]
    fn websocket_calls_are_framed_by_rid() {
        let (mut net, a) = lone();
        net.call_data(a, "/announce", json!(["svc", 1337]));

        let arr = net.send_ws(a, r#"["r1","lookup","svc"]"#);
        let obj = net.send_ws(a, r#"{"rid":2,"type":"lookup","data":"svc"}"#);
        let bad = net.send_ws(a, "garbage");
        let unknown = net.send_ws(a, r#"["r3","nope",null]"#);
        let invalid = net.send_ws(a, r#"["r4","lookup",5]"#);

        assert_eq!(
            body(&net.wait(arr)),
            json!(["r1", null, ["127.0.0.1:1337"]])
        );
        assert_eq!(body(&net.wait(obj)), json!([2, null, ["127.0.0.1:1337"]]));
        assert_eq!(
            body(&net.wait(bad)),
            json!([null, "ERR_GRAPE_PAYLOAD_INVALID", null])
        );
        assert_eq!(
            body(&net.wait(unknown)),
            json!(["r3", "ERR_REQ_NOTFOUND", null])
        );
        assert_eq!(
            body(&net.wait(invalid)),
            json!(["r4", "ERR_GRAPE_LOOKUP", null])
        );
    }

    #[test]
    fn health_reports_a_lone_grape_as_ok_and_alone() {
        let (mut net, a) = lone();
        let req = net.next_id();
        let now = net.now;

        net.grape(a)
            .handle_http(now, CLIENT, req, "GET", "/health", HttpBody::Complete(b""));
        net.collect();
        let reply = net.wait(req);

        assert_eq!(reply.status, 200);
        assert_eq!(body(&reply)["alone"], json!(true));
        assert_eq!(body(&reply)["routing_table"], json!(0));
    }

    #[test]
    fn metrics_count_requests_and_node_traffic() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        net.call_data(a, "/lookup", json!("svc"));
        net.call_data(a, "/lookup", json!(5));
        let req = net.next_id();
        let now = net.now;

        net.grape(a)
            .handle_http(now, CLIENT, req, "GET", "/metrics", HttpBody::Complete(b""));
        net.collect();
        let reply = net.wait(req);

        let text = String::from_utf8(reply.body).expect("utf8");
        assert_eq!(reply.content_type, CONTENT_TYPE_METRICS);
        assert!(text.contains("grape_api_requests_total{command=\"lookup\",outcome=\"ok\"} 1\n"));
        assert!(
            text.contains("grape_api_requests_total{command=\"lookup\",outcome=\"invalid\"} 1\n")
        );
        assert!(text.contains("grape_dht_routing_table_nodes 1\n"), "{text}");
        assert!(text.contains("grape_api_lookup_duration_seconds_count 1\n"));
    }

    fn get(net: &mut Net, at: SocketAddr, path: &str) -> RequestId {
        let req = net.next_id();
        let now = net.now;
        net.grape(at)
            .handle_http(now, CLIENT, req, "GET", path, HttpBody::Complete(b""));
        net.collect();
        req
    }

    /// Runs the network for `d` and returns the replies to `req` that came meanwhile.
    fn replies_to(net: &mut Net, req: RequestId, d: Duration) -> Vec<Value> {
        net.run_for(d);
        net.collect();
        let (mine, rest) = std::mem::take(&mut net.replies)
            .into_iter()
            .partition(|(_, r)| r.req == req);
        net.replies = rest;
        mine.into_iter().map(|(_, r)| body(&r)).collect()
    }

    /// Watches `name` on `at` from index 0 (answered at once), then again from the index
    /// that answered, with `wait`; returns that index and the waiting request.
    fn poll_after_first(net: &mut Net, at: SocketAddr, wait: &str) -> (Value, u64, RequestId) {
        let first = get(net, at, "/watch?name=svc");
        let first = body(&net.wait(first));
        let index = first["index"].as_u64().expect("index");
        let req = get(
            net,
            at,
            &format!("/watch?name=svc&index={index}&wait={wait}"),
        );
        (first, index, req)
    }

    #[test]
    fn http_watch_with_index_0_answers_the_current_set() {
        let (mut net, a) = lone();
        net.call_data(a, "/announce", json!(["svc", 1337]));

        let req = get(&mut net, a, "/watch?name=svc");
        let reply = net.wait(req);

        assert_eq!(reply.status, 200);
        let got = body(&reply);
        assert_eq!(got["peers"], json!(["127.0.0.1:1337"]));
        assert!(got["index"].as_u64().is_some_and(|i| i > 0), "{got}");
    }

    #[test]
    fn http_watch_wakes_on_an_announce_on_another_grape() {
        let mut net = Net::new(4, GrapeConfig::default).joined();
        let (a, b) = (addr(20001), addr(20004));
        let (first, index, req) = poll_after_first(&mut net, b, "5m");
        let start = net.now;
        net.call_data(a, "/announce", json!(["svc", 1337]));
        let reply = net.wait(req);

        let got = body(&reply);
        assert_eq!(first["peers"], json!([]));
        assert_eq!(got["peers"], json!(["127.0.0.1:1337"]));
        assert!(got["index"].as_u64().is_some_and(|i| i > index), "{got}");
        // Pushed by a storing node, not found by the next renewal.
        assert!(net.now - start < crate::api::RENEW, "{:?}", net.now - start);
    }

    #[test]
    fn http_watch_ignores_other_names_and_answers_at_the_end_of_its_wait() {
        let mut net = Net::new(3, GrapeConfig::default).joined();
        let (a, b) = (addr(20001), addr(20003));
        let (_, index, req) = poll_after_first(&mut net, b, "10s");
        let start = net.now;
        net.call_data(a, "/announce", json!(["other", 1337]));
        let reply = net.wait(req);

        assert_eq!(body(&reply), json!({"index": index, "peers": []}));
        assert_eq!(net.now - start, Duration::from_secs(10));
    }

    #[test]
    fn websocket_watch_pushes_every_change_until_unwatch() {
        let mut net = Net::new(3, GrapeConfig::default).joined();
        let (a, b) = (addr(20001), addr(20003));

        let watch = net.send_ws(b, r#"["w1","watch","svc"]"#);
        let initial = replies_to(&mut net, watch, Duration::from_secs(1));
        net.call_data(a, "/announce", json!(["svc", 1]));
        let added = replies_to(&mut net, watch, Duration::from_secs(1));
        net.call_data(a, "/announce", json!(["svc", 1]));
        let again = replies_to(&mut net, watch, Duration::from_secs(1));
        let unwatch = net.send_ws(b, r#"["u1","unwatch","svc"]"#);
        let unwatched = net.wait(unwatch);
        net.call_data(a, "/announce", json!(["svc", 2]));
        let after = replies_to(&mut net, watch, Duration::from_secs(1));

        assert_eq!(initial, vec![json!(["w1", null, []])]);
        assert_eq!(added, vec![json!(["w1", null, ["127.0.0.1:1"]])]);
        // A known peer announcing again is no change.
        assert_eq!(again, Vec::<Value>::new());
        assert_eq!(body(&unwatched), json!(["u1", null, true]));
        assert_eq!(net.grape(b).poll_ended(), Some(watch));
        assert_eq!(after, Vec::<Value>::new());
    }

    #[test]
    fn websocket_watch_sees_a_peer_expire() {
        let mut net = Net::new(3, GrapeConfig::default).joined();
        let (a, b) = (addr(20001), addr(20003));
        let watch = net.send_ws(b, r#"["w","watch","svc"]"#);
        net.run_for(Duration::from_secs(1));
        net.call_data(a, "/announce", json!(["svc", 1]));
        let added = replies_to(&mut net, watch, Duration::from_secs(1));

        let max_age = net.grape(a).node().config().peer_max_age;
        let gone = replies_to(&mut net, watch, max_age + Duration::from_secs(1));

        assert_eq!(added.last(), Some(&json!(["w", null, ["127.0.0.1:1"]])));
        assert_eq!(gone, vec![json!(["w", null, []])]);
    }

    /// The cost of watching, with nothing changing: renewals only. docs/design.md states the
    /// bound this checks (a count of datagrams, not a speed).
    #[test]
    fn a_thousand_watched_names_cost_a_bounded_number_of_datagrams() {
        const NAMES: usize = 1000;
        let mut net = Net::new(20, || GrapeConfig {
            max_watches_per_connection: NAMES,
            ..GrapeConfig::default()
        })
        .joined();
        let w = addr(20001);
        for n in 0..NAMES {
            net.send_ws(w, &json!([n, "watch", format!("svc-{n}")]).to_string());
        }
        // Let the first watches and their first renewal settle.
        net.run_for(crate::api::RENEW + Duration::from_secs(5));
        let (out, start) = (net.grape(w).node().stats().datagrams_out, net.now);

        net.run_for(Duration::from_secs(300));

        let secs = (net.now - start).as_secs_f64();
        let sent = net.grape(w).node().stats().datagrams_out - out;
        let per_sec = sent as f64 / secs;
        eprintln!("{NAMES} watched names: {sent} datagrams in {secs:.0} s = {per_sec:.0}/s");
        assert_eq!(net.grape(w).watches.len(), (NAMES, NAMES));
        assert!(per_sec <= 700.0, "{per_sec:.0} datagrams/s");
    }

    #[test]
    fn closing_a_websocket_ends_its_watches() {
        let (mut net, a) = lone();
        let watch = net.send_ws(a, r#"["w","watch","svc"]"#);
        net.wait(watch);

        net.grape(a).ws_closed(WsConn(1));
        net.call_data(a, "/announce", json!(["svc", 1]));
        let after = replies_to(&mut net, watch, Duration::from_secs(1));

        assert_eq!(net.grape(a).poll_ended(), Some(watch));
        assert_eq!(after, Vec::<Value>::new());
    }

    #[test]
    fn watch_bad_input_and_bounds() {
        let (mut net, a) = lone();
        net.grape(a).watches = Watches::new(10, 1, 100);

        let not_a_name = net.send_ws(a, r#"["w1","watch",5]"#);
        let no_name = net.send_ws(a, r#"["w2","watch"]"#);
        let first = net.send_ws(a, r#"["w3","watch","svc"]"#);
        let second = net.send_ws(a, r#"["w4","watch","other"]"#);
        let bad_wait = get(&mut net, a, "/watch?name=svc&wait=soon");
        let bad_index = get(&mut net, a, "/watch?name=svc&index=x");
        let no_http_name = get(&mut net, a, "/watch?index=1");

        assert_eq!(
            body(&net.wait(not_a_name)),
            json!(["w1", "ERR_GRAPE_LOOKUP", null])
        );
        assert_eq!(
            body(&net.wait(no_name)),
            json!(["w2", "ERR_GRAPE_LOOKUP", null])
        );
        assert_eq!(body(&net.wait(first)), json!(["w3", null, []]));
        assert_eq!(
            body(&net.wait(second)),
            json!(["w4", "ERR_GRAPE_WATCH_LIMIT", null])
        );
        let bad_wait = net.wait(bad_wait);
        assert_eq!(
            (bad_wait.status, body(&bad_wait)),
            (400, json!("ERR_GRAPE_WATCH_WAIT"))
        );
        let bad_index = net.wait(bad_index);
        assert_eq!(
            (bad_index.status, body(&bad_index)),
            (400, json!("ERR_GRAPE_WATCH_INDEX"))
        );
        assert_eq!(body(&net.wait(no_http_name)), json!("ERR_GRAPE_LOOKUP"));
    }

    #[test]
    fn same_seed_same_replies() {
        let run = || {
            let mut net = Net::new(3, GrapeConfig::default).joined();
            net.call_data(addr(20001), "/announce", json!(["svc", 1]));
            let start = net.now;
            let r = net.call_data(addr(20002), "/announce", json!(["svc", 2]));
            (r.body, net.now - start, net.grape(addr(20001)).node().id())
        };

        assert_eq!(run(), run());
    }

    /// `GET path` on `at`, answered at once.
    fn get_now(net: &mut Net, at: SocketAddr, path: &str) -> Reply {
        let req = get(net, at, path);
        net.wait(req)
    }

    #[test]
    fn status_shows_the_id_table_services_lookups_and_stores() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let (a, b) = (addr(20001), addr(20002));
        net.grape(a).set_listeners(Listeners {
            dht: Some(a),
            api: Some(addr(30001)),
            ws: None,
        });
        net.call_data(a, "/announce", json!(["svc:a", 4001]));
        net.run_for(Duration::from_millis(100));
        let found = net.lookup(b, "svc:a");
        net.lookup(a, "svc:a");

        let here = body(&get_now(&mut net, a, "/status"));
        let there = body(&get_now(&mut net, b, "/status"));

        assert_eq!(here["id"], json!(net.grape(a).node().id().to_string()));
        assert_eq!(here["listeners"]["api"], json!("127.0.0.1:30001"));
        assert_eq!(here["routing"]["nodes"], json!(1));
        let node = &here["routing"]["ipv4"]["buckets"][0]["nodes"][0];
        assert_eq!(node["addr"], json!(b.to_string()));
        assert_eq!(node["id"], json!(net.grape(b).node().id().to_string()));
        assert_eq!(here["services"]["items"][0]["name"], json!("svc:a"));
        assert_eq!(here["services"]["items"][0]["port"], json!(4001));
        assert_eq!(there["lookups"]["items"][0]["name"], json!("svc:a"));
        assert_eq!(there["lookups"]["items"][0]["peers"], found);
        assert_eq!(there["services"]["total"], json!(0));
        let keys = &there["stored"]["keys"]["items"];
        assert_eq!(keys[0]["key"], json!("svc:a"), "{there}");
        assert_eq!(here["counters"]["api_requests"]["announce"], json!(1));
        assert_eq!(here["counters"]["api_requests"]["lookup"], json!(1));
        assert!(here["counters"]["krpc_in"]["get_peers"].as_u64() > Some(0));
        assert!(here["now_ms"].as_u64() > Some(0));
    }

    #[test]
    fn status_forgets_unannounced_services_and_caps_its_lists() {
        let (mut net, a) = lone();
        for i in 0..(MAX_ROWS_SHOWN + 5) {
            net.call_data(a, "/announce", json!([format!("svc:{i}"), 4000]));
        }
        net.call_data(a, "/unannounce", json!(["svc:0", 4000]));

        let s = body(&get_now(&mut net, a, "/status"));

        let services = &s["services"];
        assert_eq!(services["total"], json!(MAX_ROWS_SHOWN + 4));
        assert_eq!(services["truncated"], json!(true));
        assert_eq!(
            services["items"].as_array().map(Vec::len),
            Some(MAX_ROWS_SHOWN)
        );
        assert!(
            services["items"]
                .as_array()
                .is_some_and(|rows| rows.iter().all(|r| r["name"] != json!("svc:0")))
        );
        assert_eq!(s["stored"]["keys"]["truncated"], json!(true));

        let max_age = net.grape(a).node().config().peer_max_age;
        net.run_for(max_age);
        let later = body(&get_now(&mut net, a, "/status"));
        assert_eq!(
            later["services"]["total"],
            json!(0),
            "expired services are listed"
        );
    }

    #[test]
    fn the_page_is_served_at_root_and_ui_and_post_root_is_unchanged() {
        let (mut net, a) = lone();
        for path in ["/", "/ui", "/ui/"] {
            let reply = get_now(&mut net, a, path);
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.content_type, CONTENT_TYPE_HTML, "{path}");
            assert!(reply.body.starts_with(b"<!doctype html>"), "{path}");
        }
        // Node clients only POST: POST / is still the Node Grape's "no such command".
        let post = net.call(a, "/", r#"{"data":"x"}"#);
        assert_eq!(post.status, ApiError::NotFound.status());
        assert_eq!(post.body, ApiError::NotFound.http_body());
        // Commands are still served on GET, as by the Node Grape.
        let req = net.next_id();
        let now = net.now;
        net.grape(a).handle_http(
            now,
            CLIENT,
            req,
            "GET",
            "/lookup",
            HttpBody::Complete(br#"{"data":"svc"}"#),
        );
        net.collect();
        assert_eq!(body(&net.wait(req)), json!([]));
    }

    #[test]
    fn unknown_and_overlong_gets_get_clear_json_errors() {
        let (mut net, a) = lone();
        let unknown = get_now(&mut net, a, "/favicon.ico");
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.content_type, CONTENT_TYPE_JSON);
        assert_eq!(body(&unknown)["error"], json!("ERR_GRAPE_NOT_FOUND"));

        let long = format!("/status?{}", "x".repeat(64 * 1024));
        let reply = get_now(&mut net, a, &long);
        assert_eq!(reply.status, 414);
        assert_eq!(body(&reply)["error"], json!("ERR_GRAPE_URI_TOO_LONG"));
    }

    #[test]
    fn dashboard_gets_change_no_state() {
        let mut net = Net::new(2, GrapeConfig::default).joined();
        let a = addr(20001);
        net.call_data(a, "/announce", json!(["svc", 4001]));
        net.lookup(a, "svc");
        let before = net.grape(a).render_metrics();
        let status_before = body(&get_now(&mut net, a, "/status"));

        let long = format!("/?{}", "q".repeat(MAX_GET_TARGET));
        for path in [
            "/",
            "/ui",
            "/ui/",
            "/status",
            "/status?x=1",
            "/nope",
            "/",
            &long,
        ] {
            for method in ["GET", "HEAD"] {
                let req = net.next_id();
                let now = net.now;
                net.grape(a)
                    .handle_http(now, CLIENT, req, method, path, HttpBody::Complete(b""));
                net.collect();
                net.wait(req);
            }
        }

        assert_eq!(net.grape(a).render_metrics(), before);
        let status_after = body(&get_now(&mut net, a, "/status"));
        assert_eq!(without_times(status_after), without_times(status_before));
    }

    /// `v` without its clock readings (`now_ms`, ages), which move while nothing else does.
    fn without_times(v: Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(k, _)| !k.ends_with("_ms") && !k.ends_with("_ms_ago"))
                    .map(|(k, v)| (k, without_times(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(without_times).collect()),
            other => other,
        }
    }

    /// A lone Grape whose API limits apply to loopback: 3 requests a second, 2 connections.
    fn strict() -> (Net, SocketAddr) {
        let mut net = Net::new(1, || {
            let mut config = GrapeConfig::default();
            config.api_limits.exempt_loopback = false;
            config.api_limits.requests_per_second = Some(crate::dht::defence::Limit::per_second(3));
            config.api_limits.connections_per_client = Some(2);
            config
        });
        let now = net.now;
        net.grape(addr(20001)).bootstrap(now, &[]);
        (net, addr(20001))
    }

    fn counter(metrics: &str, line: &str) -> Option<u64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    }

    #[test]
    fn a_client_over_its_rate_gets_429_and_others_are_served() {
        let (mut net, a) = strict();
        // `/health` is answered inside `handle_http`, so the clock stands still.
        let health = |net: &mut Net, from: SocketAddr| {
            let req = net.next_id();
            let now = net.now;
            net.grape(a)
                .handle_http(now, from, req, "GET", "/health", HttpBody::Complete(b""));
            net.collect();
            net.wait(req)
        };

        let statuses: Vec<u16> = (0..5).map(|_| health(&mut net, CLIENT).status).collect();
        let refused = health(&mut net, CLIENT);
        let other = health(&mut net, SocketAddr::from(([127, 0, 0, 2], 1)));
        net.now += Duration::from_secs(1);
        let later = health(&mut net, CLIENT);

        assert_eq!(statuses, [200, 200, 200, 429, 429]);
        assert_eq!(refused.body, br#""ERR_GRAPE_RATE_LIMIT""#);
        assert_eq!(refused.content_type, CONTENT_TYPE_JSON);
        assert_eq!(other.status, 200, "another client has its own rate");
        assert_eq!(later.status, 200, "the bucket refills");
        let metrics = net.grape(a).render_metrics();
        assert_eq!(
            counter(&metrics, "grape_api_clients_refused_total{reason=\"rate\"}"),
            Some(3)
        );
        assert_eq!(
            counter(
                &metrics,
                "grape_api_requests_total{command=\"unknown\",outcome=\"limited\"}"
            ),
            Some(3)
        );
    }

    #[test]
    fn a_websocket_call_over_the_rate_gets_the_error_under_its_rid() {
        let (mut net, a) = strict();
        for i in 0..3 {
            // Unknown commands are answered at once, so the clock stands still.
            let req = net.send_ws(a, &format!(r#"["r{i}","nope","svc"]"#));
            assert_eq!(body(&net.wait(req))[1], json!("ERR_REQ_NOTFOUND"));
        }

        let req = net.send_ws(a, r#"{"rid":7,"type":"lookup","data":"svc"}"#);
        let reply = net.wait(req);

        assert_eq!(body(&reply), json!([7, "ERR_GRAPE_RATE_LIMIT", null]));
    }

    #[test]
    fn a_client_holds_at_most_its_cap_of_connections() {
        let (mut net, a) = strict();
        let g = net.grape(a);
        let other = SocketAddr::from(([127, 0, 0, 2], 1));

        let first = g.api_connected(CLIENT).expect("first");
        let second = g.api_connected(CLIENT).expect("second");
        let third = g.api_connected(CLIENT);
        let elsewhere = g.api_connected(other);
        g.api_disconnected(first);
        let again = g.api_connected(CLIENT);

        assert_eq!(third, Err(ApiError::ConnectionLimit));
        assert!(elsewhere.is_ok());
        assert!(again.is_ok());
        g.api_disconnected(second);
        let metrics = g.render_metrics();
        assert_eq!(
            counter(
                &metrics,
                "grape_api_clients_refused_total{reason=\"connections\"}"
            ),
            Some(1)
        );
    }

    #[test]
    fn by_default_loopback_clients_have_no_limit() {
        let (mut net, a) = lone();
        let held: Vec<_> = (0..1000)
            .map(|_| net.grape(a).api_connected(CLIENT))
            .collect();

        let statuses: Vec<u16> = (0..2500)
            .map(|_| net.call_data(a, "/lookup", json!("svc")).status)
            .collect();

        assert!(held.iter().all(Result::is_ok));
        assert!(statuses.iter().all(|s| *s == 200));
    }
}
