//! The Link: a client of one Grape's API, as grenache-nodejs-link is (protocol §3, §5).
//!
//! Commands become `POST {grape}/{command}` with `{"rid":…,"data":…}` (or, for a `ws://`
//! Grape, the text frame `[rid, command, data]` answered by `[rid, err, result]`).
//! Identical commands in flight share one request, as Node's `cbq` makes them; lookups are
//! answered from a short cache; failed requests are retried; announces can repeat on a
//! schedule. Exactly one [`LinkEvent`] ends each [`CommandId`].
//!
//! # Re-announcing
//! A Grape forgets a peer 120 s after its last announce. Node re-announces after a random
//! 0.5–1.5× its 2-minute interval, so a service vanishes for up to a minute at a time.
//! Here the next round starts a random time in `[interval/2, interval]` after the last
//! one succeeded (default interval 60 s, so 30–60 s; the spread keeps restarts from
//! announcing in step), and `[retry/2, retry]` (default 5 s) after one failed. A round
//! takes at most `request_timeout × announce_attempts` (7.5 s), so with the defaults a
//! service is re-announced at most 67.5 s after its last success, well inside 120 s,
//! even when a round fails. Keep `interval + request_timeout × attempts` under 120 s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::dht::bep44::{ImmutableItem, MutableItem, PutError, Target};
use crate::dht::id::{MAX_KEY_LEN, hex, unhex};
use crate::peer::cache::LookupCache;
use crate::peer::error::{CommandError, ConfigError, LinkError};
use crate::peer::framing::{decode_reply, json_text, push_json, push_json_str};
use crate::peer::types::{
    CommandId, ConnId, HttpId, HttpMethod, HttpRequest, HttpResponse, Ids, Io, PeerAddr,
    TransportError, WatchId, WsMessage, request_id,
};
use crate::peer::watch::{
    Poll, Removal, WatchEvent, Watches, is_refusal, query_escape, read_http_answer, read_peers,
};

/// Peers kept from one lookup reply (the Grape sends at most 100).
pub const MAX_LOOKUP_PEERS: usize = 1000;

/// Settings of a [`Link`]; `LinkConfig::new(grape_url)` gives Node's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// The Grape: `http://host:port` for its HTTP API, `ws://host:port` for the old
    /// WebSocket API.
    pub grape: String,
    /// How long one request to the Grape may take (Node: 2500 ms).
    pub request_timeout: Duration,
    /// How long a lookup result is reused (Node: 10 s).
    pub lookup_cache_ttl: Duration,
    /// Lookup results kept (Node: 2500).
    pub lookup_cache_cap: usize,
    /// Tries per lookup (Node: 3).
    pub lookup_attempts: u32,
    /// Tries per announce (Node: 3).
    pub announce_attempts: u32,
    /// Tries per put or get (Node: 1).
    pub put_get_attempts: u32,
    /// Longest gap between two scheduled announces; see the module docs (default 60 s).
    pub announce_interval: Duration,
    /// Gap after a failed scheduled announce (default 5 s, drawn in `[x/2, x]`).
    pub announce_retry: Duration,
    /// Commands whose event has not been polled yet, at most.
    pub max_pending: usize,
    /// Names announced on a schedule, at most.
    pub max_announcing: usize,
    /// Longest reply body accepted from the Grape.
    pub max_reply_len: usize,
    /// Names watched at once, at most (default 8), counting a name whose last watch ended
    /// while its long poll still runs. Over HTTP each holds one connection to the Grape
    /// open for its long poll: keep it well under the adapter's connections per peer (64),
    /// or lookups wait behind the polls.
    pub max_watches: usize,
    /// How long one HTTP watch poll may wait at the Grape for a change (default 30 s);
    /// the request's own timeout is this plus `request_timeout`.
    pub watch_wait: Duration,
}

impl LinkConfig {
    /// Node's defaults for the Grape at `grape`.
    pub fn new(grape: impl Into<String>) -> Self {
        LinkConfig {
            grape: grape.into(),
            request_timeout: Duration::from_millis(2500),
            lookup_cache_ttl: Duration::from_secs(10),
            lookup_cache_cap: 2500,
            lookup_attempts: 3,
            announce_attempts: 3,
            put_get_attempts: 1,
            announce_interval: Duration::from_secs(60),
            announce_retry: Duration::from_secs(5),
            max_pending: 4096,
            max_announcing: 1024,
            max_reply_len: 1 << 20,
            max_watches: 8,
            watch_wait: Duration::from_secs(30),
        }
    }
}

/// A value to store with `put`, already checked against BEP 44's limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Put {
    data: Value,
    target: Target,
}

impl Put {
    /// An immutable string value, stored under the SHA-1 of its bencoding.
    ///
    /// # Errors
    /// [`PutError::TooBig`] when the bencoded value passes 1000 bytes.
    pub fn immutable(v: &str) -> Result<Put, PutError> {
        let item = ImmutableItem::new(bencode_str(v.as_bytes()))?;
        Ok(Put {
            data: serde_json::json!({ "v": v }),
            target: item.target(),
        })
    }

    /// A signed mutable string value; `salt` empty for none. `cas` makes the store fail
    /// unless the stored `seq` equals it.
    ///
    /// # Errors
    /// As [`MutableItem::sign`].
    pub fn sign_mutable(
        secret: &[u8; 32],
        salt: &str,
        seq: i64,
        v: &str,
        cas: Option<i64>,
    ) -> Result<Put, PutError> {
        let item = MutableItem::sign(
            secret,
            salt.as_bytes().to_vec(),
            seq,
            bencode_str(v.as_bytes()),
        )?;
        Put::mutable(&item, cas)
    }

    /// A mutable item signed elsewhere. The Grape API carries `v` and `salt` as JSON
    /// strings, so `v` must be a bencoded UTF-8 string and `salt` UTF-8.
    ///
    /// # Errors
    /// [`PutError::InvalidValue`] when `v` or `salt` cannot travel as a string.
    pub fn mutable(item: &MutableItem, cas: Option<i64>) -> Result<Put, PutError> {
        let v = crate::dht::bencode::decode(item.v())
            .ok()
            .and_then(|b| b.as_bytes().map(<[u8]>::to_vec))
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(PutError::InvalidValue)?;
        let salt = std::str::from_utf8(item.salt()).map_err(|_| PutError::InvalidValue)?;
        let mut data = serde_json::Map::new();
        data.insert("v".into(), v.into());
        data.insert("k".into(), hex(item.k()).into());
        data.insert("sig".into(), hex(item.sig()).into());
        data.insert("seq".into(), item.seq().into());
        if !salt.is_empty() {
            data.insert("salt".into(), salt.into());
        }
        if let Some(cas) = cas {
            data.insert("cas".into(), cas.into());
        }
        Ok(Put {
            data: Value::Object(data),
            target: item.target(),
        })
    }

    /// Where the value will live; the Grape's reply must name the same target.
    pub fn target(&self) -> Target {
        self.target
    }
}

/// An item read back with `get`, as the Grape reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetItem {
    /// Hex id of the DHT node that answered.
    pub id: String,
    /// The value as a string.
    pub v: String,
    /// Public key of a mutable item.
    pub k: Option<[u8; 32]>,
    /// Signature of a mutable item.
    pub sig: Option<[u8; 64]>,
    /// Sequence number of a mutable item.
    pub seq: Option<i64>,
    /// Salt of a mutable item, if any.
    pub salt: Option<String>,
}

/// What a [`Link`] reports. Each command's [`CommandId`] gets exactly one of the first four.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A lookup ended: the peers in the Grape's order (never empty on success).
    Lookup {
        /// The command.
        id: CommandId,
        /// The name looked up.
        name: String,
        /// Peers, or why there are none.
        result: Result<Vec<PeerAddr>, LinkError>,
    },
    /// An announce ended.
    Announce {
        /// The command.
        id: CommandId,
        /// Success, or why the Grape did not take it.
        result: Result<(), LinkError>,
    },
    /// An unannounce ended.
    Unannounce {
        /// The command.
        id: CommandId,
        /// Success (the Grape forgot the peer and told the nodes that speak
        /// `unannounce_peer`), or why not.
        result: Result<(), LinkError>,
    },
    /// A put ended with the target the value is stored under.
    Put {
        /// The command.
        id: CommandId,
        /// The target, or why the put failed.
        result: Result<Target, LinkError>,
    },
    /// A get ended: `None` when nothing is stored there.
    Get {
        /// The command.
        id: CommandId,
        /// The item, or why the get failed.
        result: Result<Option<GetItem>, LinkError>,
    },
    /// A scheduled announce round (see `start_announcing`) ended; the next is scheduled.
    Announcing {
        /// Service name.
        name: String,
        /// Service port.
        port: u16,
        /// How the round went.
        result: Result<(), LinkError>,
    },
}

/// Counters for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Requests sent to the Grape (retries included).
    pub requests: u64,
    /// Commands that joined an identical request already in flight.
    pub coalesced: u64,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// WebSocket frames from the Grape that were not `[rid, err, result]`.
    pub bad_frames: u64,
    /// Replies for requests no longer pending (after a timeout, say).
    pub late_replies: u64,
    /// `Announcing` events dropped because nobody polled events.
    pub dropped_events: u64,
    /// Lookups answered from a watched set (no request, no cache).
    pub watch_hits: u64,
    /// Watch polls sent (HTTP long polls and WebSocket `watch` frames).
    pub watch_polls: u64,
    /// Watch polls that failed and wait to be retried.
    pub watch_retries: u64,
}

/// A client of one Grape's API (sans-IO).
///
/// Drive it like the other machines of this module: after a command or any `handle_*`,
/// drain [`Link::poll_transmit`] and [`Link::poll_event`], then call
/// [`Link::handle_timeout`] at [`Link::poll_timeout`]. Time must not go backwards.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    grape: Grape,
    pub(crate) ids: Ids,
    queries: BTreeMap<CommandId, Query>,
    reqs: BTreeMap<u64, GrapeReq>,
    by_hash: BTreeMap<String, u64>,
    by_http: BTreeMap<HttpId, u64>,
    by_rid: BTreeMap<String, u64>,
    deadlines: BTreeSet<(Instant, u64)>,
    ws: Option<GrapeWs>,
    cache: LookupCache,
    watches: Watches,
    schedules: BTreeMap<(String, u16), Schedule>,
    transmits: VecDeque<Io>,
    events: VecDeque<LinkEvent>,
    /// User commands whose terminal event has not been polled yet.
    outstanding: usize,
    stats: LinkStats,
    /// Request ids (uuid v4) and retry jitter; seeded, so runs replay.
    rng: ChaCha8Rng,
}

#[derive(Debug)]
enum Grape {
    Http { base: String },
    Ws { url: String },
}

#[derive(Debug)]
struct Query {
    command: Command,
    attempts_left: u32,
    /// False for a scheduled announce round, which reports `Announcing` instead.
    user: bool,
}

#[derive(Clone, Debug)]
enum Command {
    Lookup { name: String },
    Announce { name: String, port: u16 },
    Unannounce { name: String, port: u16 },
    Put { data: Value, target: Target },
    Get { data: Value },
}

impl Command {
    fn kind(&self) -> &'static str {
        match self {
            Command::Lookup { .. } => "lookup",
            Command::Announce { .. } => "announce",
            Command::Unannounce { .. } => "unannounce",
            Command::Put { .. } => "put",
            Command::Get { .. } => "get",
        }
    }

    fn data(&self) -> Value {
        match self {
            Command::Lookup { name } => Value::from(name.as_str()),
            Command::Announce { name, port } | Command::Unannounce { name, port } => {
                serde_json::json!([name, port])
            }
            Command::Put { data, .. } | Command::Get { data } => data.clone(),
        }
    }
}

#[derive(Debug)]
struct GrapeReq {
    rid: String,
    qhash: String,
    waiters: Vec<CommandId>,
    deadline: Instant,
    http: Option<HttpId>,
}

#[derive(Debug)]
struct GrapeWs {
    conn: ConnId,
    open: bool,
    /// Frames waiting for the connection to open, by request.
    queued: Vec<(u64, String)>,
}

#[derive(Debug)]
struct Schedule {
    next_at: Option<Instant>,
    round: Option<CommandId>,
}

impl Link {
    /// A Link to the Grape in `config.grape`; its request ids and jitter come from a
    /// ChaCha8 RNG seeded with `seed`, so a run can be replayed.
    ///
    /// # Errors
    /// [`ConfigError::GrapeUrl`] when the URL's scheme is not http(s) or ws(s).
    pub fn new(config: LinkConfig, seed: [u8; 32]) -> Result<Link, ConfigError> {
        let url = config.grape.trim_end_matches('/').to_owned();
        let grape = if url.starts_with("http://") || url.starts_with("https://") {
            Grape::Http { base: url }
        } else if url.starts_with("ws://") || url.starts_with("wss://") {
            Grape::Ws { url }
        } else {
            return Err(ConfigError::GrapeUrl(config.grape));
        };
        Ok(Link {
            cache: LookupCache::new(config.lookup_cache_ttl, config.lookup_cache_cap),
            watches: Watches::new(config.max_watches, config.max_pending),
            config,
            grape,
            ids: Ids::default(),
            queries: BTreeMap::new(),
            reqs: BTreeMap::new(),
            by_hash: BTreeMap::new(),
            by_http: BTreeMap::new(),
            by_rid: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            ws: None,
            schedules: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            outstanding: 0,
            stats: LinkStats::default(),
            rng: ChaCha8Rng::from_seed(seed),
        })
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Whether `http` is an exchange this Link started (for a parent routing replies).
    pub fn owns_http(&self, http: HttpId) -> bool {
        self.by_http.contains_key(&http) || self.watches.name_of_http(http).is_some()
    }

    /// Whether `conn` is this Link's WebSocket to the Grape.
    pub fn owns_conn(&self, conn: ConnId) -> bool {
        self.ws.as_ref().is_some_and(|ws| ws.conn == conn)
    }

    /// Looks up the peers announcing `name`; ends with [`LinkEvent::Lookup`]. While `name`
    /// is watched and its set is current, that set answers (an empty one as
    /// [`LinkError::LookupEmpty`]), with no request and no expiry; otherwise a cached result
    /// does. Either is reported at once (still through `poll_event`).
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::TooManyPending`].
    pub fn lookup(&mut self, now: Instant, name: &str) -> Result<CommandId, CommandError> {
        check_name(name)?;
        let id = self.reserve()?;
        if let Some(peers) = self.watches.current(name) {
            self.stats.watch_hits += 1;
            let result = if peers.is_empty() {
                Err(LinkError::LookupEmpty)
            } else {
                Ok(peers.to_vec())
            };
            self.events.push_back(LinkEvent::Lookup {
                id,
                name: name.to_owned(),
                result,
            });
            return Ok(id);
        }
        if let Some(peers) = self.cache.get(now, name) {
            self.stats.cache_hits += 1;
            self.events.push_back(LinkEvent::Lookup {
                id,
                name: name.to_owned(),
                result: Ok(peers),
            });
            return Ok(id);
        }
        let command = Command::Lookup {
            name: name.to_owned(),
        };
        self.start(now, id, command, self.config.lookup_attempts, true);
        Ok(id)
    }

    /// Announces `name` at `port` once; ends with [`LinkEvent::Announce`].
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::InvalidPort`],
    /// [`CommandError::TooManyPending`].
    pub fn announce(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
    ) -> Result<CommandId, CommandError> {
        let announce = |name, port| Command::Announce { name, port };
        self.start_service_command(now, name, port, announce)
    }

    /// Announces `name` at `port` now and then again and again (module docs); each round
    /// ends with [`LinkEvent::Announcing`]. Returns `false` if it was already scheduled.
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::InvalidPort`],
    /// [`CommandError::TooManyAnnounces`].
    pub fn start_announcing(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
    ) -> Result<bool, CommandError> {
        check_name(name)?;
        check_port(port)?;
        let key = (name.to_owned(), port);
        if self.schedules.contains_key(&key) {
            return Ok(false);
        }
        if self.schedules.len() >= self.config.max_announcing {
            return Err(CommandError::TooManyAnnounces);
        }
        self.schedules.insert(
            key.clone(),
            Schedule {
                next_at: None,
                round: None,
            },
        );
        self.start_round(now, key);
        Ok(true)
    }

    /// Withdraws `name` at `port` from the Grape and the DHT (our Grapes drop it at once,
    /// Node Grapes when it expires); ends with [`LinkEvent::Unannounce`]. Stops its
    /// schedule too, so no later round announces it again, and forgets cached lookups of
    /// `name`.
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::InvalidPort`],
    /// [`CommandError::TooManyPending`].
    pub fn unannounce(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
    ) -> Result<CommandId, CommandError> {
        let unannounce = |name, port| Command::Unannounce { name, port };
        let id = self.start_service_command(now, name, port, unannounce)?;
        self.stop_announcing(name, port);
        self.forget_lookup(name);
        Ok(id)
    }

    /// Checks `name` and `port`, then sends the command `make` builds of them.
    fn start_service_command(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
        make: fn(String, u16) -> Command,
    ) -> Result<CommandId, CommandError> {
        check_name(name)?;
        check_port(port)?;
        let id = self.reserve()?;
        let command = make(name.to_owned(), port);
        self.start(now, id, command, self.config.announce_attempts, true);
        Ok(id)
    }

    /// Stops the schedule for `name` at `port`; a round in flight ends unreported.
    /// Returns `false` if there was none. (The Grape keeps the peer until it expires:
    /// see [`unannounce`](Self::unannounce).)
    pub fn stop_announcing(&mut self, name: &str, port: u16) -> bool {
        self.schedules.remove(&(name.to_owned(), port)).is_some()
    }

    /// Whether `name` at `port` is announced on a schedule.
    pub fn is_announcing(&self, name: &str, port: u16) -> bool {
        self.schedules.contains_key(&(name.to_owned(), port))
    }

    /// Stores a value; ends with [`LinkEvent::Put`].
    ///
    /// # Errors
    /// [`CommandError::TooManyPending`].
    pub fn put(&mut self, now: Instant, put: Put) -> Result<CommandId, CommandError> {
        let id = self.reserve()?;
        let command = Command::Put {
            data: put.data,
            target: put.target,
        };
        self.start(now, id, command, self.config.put_get_attempts, true);
        Ok(id)
    }

    /// Reads the item at `target` (with `salt` for a salted mutable item); ends with
    /// [`LinkEvent::Get`].
    ///
    /// # Errors
    /// [`CommandError::TooManyPending`].
    pub fn get(
        &mut self,
        now: Instant,
        target: Target,
        salt: Option<&str>,
    ) -> Result<CommandId, CommandError> {
        let id = self.reserve()?;
        let hash = Value::from(hex(target.as_bytes()));
        let data = match salt {
            None => hash,
            Some(salt) => serde_json::json!({ "hash": hash, "salt": salt }),
        };
        self.start(
            now,
            id,
            Command::Get { data },
            self.config.put_get_attempts,
            true,
        );
        Ok(id)
    }

    /// Follows the peers serving `name`: [`Link::poll_watch`] reports the set when the
    /// Grape first answers and after every change, until [`Link::unwatch`] or the Grape
    /// refuses the watch (its last report, an error). While the set is current, lookups of
    /// `name` are answered from it.
    ///
    /// Watches of one name share one Grape watch. Over HTTP it is a long poll (`GET
    /// /watch`, waiting up to `watch_wait`, with the index of the last answer); over a
    /// WebSocket Grape, `[rid, "watch", name]` and its pushes, sent again on a new
    /// connection when the old one closes. A failed poll is retried after
    /// `[announce_retry/2, announce_retry]`, from index 0, so a restarted Grape answers at
    /// once; meanwhile lookups go to the Grape as usual.
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::TooManyWatches`].
    pub fn watch(&mut self, now: Instant, name: &str) -> Result<WatchId, CommandError> {
        check_name(name)?;
        let id = WatchId(self.ids.next());
        if self.watches.add(now, name, id)? {
            self.send_watch(now, name);
        }
        Ok(id)
    }

    /// Ends a watch; the Grape watch ends with the last watch of its name, and lookups of
    /// it go back to the Grape and the cache. `false` if the watch was unknown (or ended).
    ///
    /// An HTTP long poll cannot be called back: until it ends (at the Grape's next answer,
    /// at most `watch_wait + request_timeout`) the name still counts against
    /// `max_watches`, and a new watch of it takes the poll over.
    pub fn unwatch(&mut self, watch: WatchId) -> bool {
        match self.watches.remove(watch) {
            Removal::Unknown => false,
            Removal::Shared => true,
            Removal::Last { name, poll } => {
                // An HTTP poll in flight runs out (see `watch`'s idle names); a closed
                // WebSocket took its watches with it.
                if let Poll::Ws { .. } = poll
                    && self.ws.is_some()
                {
                    let rid = request_id(&mut self.rng);
                    self.ws_send(0, ws_frame(&rid, "unwatch", Value::from(name.as_str())));
                }
                true
            }
        }
    }

    /// Whether `name` is watched (its set may not be known yet).
    pub fn is_watched(&self, name: &str) -> bool {
        self.watches.contains(name)
    }

    /// The next report of a watch, if any: at most one is kept per watch (a newer set
    /// replaces one not yet polled), so nothing piles up while nobody polls.
    #[must_use]
    pub fn poll_watch(&mut self) -> Option<WatchEvent> {
        self.watches.poll_event()
    }

    /// Asks the Grape about `name` now: a long poll from the last index, or a `watch`
    /// frame on the Grape WebSocket.
    fn send_watch(&mut self, now: Instant, name: &str) {
        self.stats.watch_polls += 1;
        let poll = match &self.grape {
            Grape::Http { base } => {
                let http = HttpId(self.ids.next());
                let deadline = now + self.config.watch_wait + self.config.request_timeout;
                let url = format!(
                    "{base}/watch?name={}&index={}&wait={}ms",
                    query_escape(name),
                    self.watches.index(name),
                    self.config.watch_wait.as_millis()
                );
                self.transmits.push_back(Io::Http(HttpRequest {
                    id: http,
                    method: HttpMethod::Get,
                    url,
                    headers: Vec::new(),
                    body: Vec::new(),
                    deadline,
                }));
                Poll::Http { http, deadline }
            }
            Grape::Ws { .. } => {
                let rid = request_id(&mut self.rng);
                self.ws_send(0, ws_frame(&rid, "watch", Value::from(name)));
                Poll::Ws { rid }
            }
        };
        self.watches.set_poll(name, poll);
    }

    /// The answer to the long poll of `name`.
    fn on_watch_http(
        &mut self,
        now: Instant,
        name: &str,
        reply: Result<HttpResponse, TransportError>,
    ) {
        let answer = self
            .read_http_reply(reply)
            .and_then(|v| read_http_answer(v, MAX_LOOKUP_PEERS));
        let previous = self.watches.index(name);
        // Answered in the first half of its wait: the Grape (or a proxy) did not hold it.
        let early = self
            .watches
            .poll_deadline(name)
            .is_some_and(|d| now + self.config.watch_wait / 2 + self.config.request_timeout < d);
        let unchanged = match answer {
            // Index 0: the Grape does not know the set yet (its first lookup is running).
            Ok((0, _)) => true,
            Ok((index, peers)) => {
                if index < previous {
                    tracing::debug!(name, index, "watch index went back: the grape restarted");
                }
                self.watched_set(name, peers, Some(index));
                index == previous
            }
            Err(e) => return self.watch_failed(now, name, &e),
        };
        if !self.watches.keep_polling(name) {
            return;
        }
        if unchanged && early {
            // Polling again at once would spin: wait the retry gap, keeping the set.
            let at = now + jitter_half(self.config.announce_retry, &mut self.rng);
            self.watches.set_poll(name, Poll::Retry { at });
        } else {
            self.send_watch(now, name);
        }
    }

    /// A WebSocket watch answer or push for `name`.
    fn on_watch_ws(&mut self, now: Instant, name: &str, result: Result<Value, String>) {
        match result {
            Ok(Value::Array(items)) => {
                let peers = read_peers(items, MAX_LOOKUP_PEERS);
                self.watched_set(name, peers, None);
            }
            Ok(other) => {
                self.stats.bad_frames += 1;
                tracing::debug!(name, ?other, "watch push is not a peer list");
            }
            Err(message) => self.watch_failed(now, name, &LinkError::Grape(message)),
        }
    }

    /// The Grape told the set of `name`; the cache's older lookup of it is dropped, so
    /// that lookups after the watch ends ask again.
    fn watched_set(&mut self, name: &str, peers: Vec<PeerAddr>, index: Option<u64>) {
        self.cache.forget(name);
        self.watches.answered(name, peers, index);
    }

    /// A watch poll failed: a refusal ends the watches of `name`, anything else is retried.
    fn watch_failed(&mut self, now: Instant, name: &str, error: &LinkError) {
        if is_refusal(error) {
            tracing::warn!(name, %error, "the grape refused a watch");
            self.watches.refused(name, error);
            return;
        }
        self.stats.watch_retries += 1;
        tracing::debug!(name, %error, "watch poll failed; retrying");
        let at = now + jitter_half(self.config.announce_retry, &mut self.rng);
        self.watches.failed(name, at);
    }

    /// Drops a cached lookup, so the next lookup of `name` asks the Grape (a subscriber
    /// does this when its publisher went away).
    pub fn forget_lookup(&mut self, name: &str) {
        self.cache.forget(name);
    }

    /// Takes the reply to an HTTP request from [`Io::Http`] (unknown ids are ignored).
    pub fn handle_http_reply(
        &mut self,
        now: Instant,
        http: HttpId,
        reply: Result<HttpResponse, TransportError>,
    ) {
        if let Some(name) = self.watches.name_of_http(http) {
            return self.on_watch_http(now, &name, reply);
        }
        let Some(&key) = self.by_http.get(&http) else {
            self.stats.late_replies += 1;
            return;
        };
        let outcome = self.read_http_reply(reply);
        self.finish(now, key, outcome);
    }

    /// The Grape WebSocket `conn` opened: queued frames go out.
    pub fn handle_ws_open(&mut self, _now: Instant, conn: ConnId) {
        let Some(ws) = self.ws.as_mut().filter(|ws| ws.conn == conn) else {
            return;
        };
        ws.open = true;
        for (_, text) in ws.queued.drain(..) {
            self.transmits.push_back(Io::WsSend {
                conn,
                msg: WsMessage::Text(text),
            });
        }
    }

    /// A message from the Grape WebSocket: `[rid, err, result]`.
    pub fn handle_ws_message(&mut self, now: Instant, conn: ConnId, msg: &WsMessage) {
        if !self.owns_conn(conn) {
            return;
        }
        let Ok(reply) = decode_reply(msg.as_bytes(), self.config.max_reply_len) else {
            self.stats.bad_frames += 1;
            tracing::debug!("unreadable frame from the grape");
            return;
        };
        if let Some(name) = self.watches.name_of_rid(&reply.rid) {
            return self.on_watch_ws(now, &name, reply.result);
        }
        let Some(&key) = self.by_rid.get(&reply.rid) else {
            self.stats.late_replies += 1;
            return;
        };
        let outcome = reply.result.map_err(LinkError::Grape);
        self.finish(now, key, outcome);
    }

    /// The Grape WebSocket closed (or never opened): its requests fail with
    /// `ERR_TRANSPORT_CLOSE` (and are retried on a new connection while tries remain), and
    /// its watches are sent again on a new connection after the retry gap.
    pub fn handle_ws_closed(&mut self, now: Instant, conn: ConnId) {
        if !self.owns_conn(conn) {
            return;
        }
        self.ws = None;
        for name in self.watches.on_ws() {
            self.watch_failed(now, &name, &LinkError::TransportClose);
        }
        let keys: Vec<u64> = self.by_rid.values().copied().collect();
        for key in keys {
            self.finish(now, key, Err(LinkError::TransportClose));
        }
    }

    /// Fires due timeouts and scheduled announces; does nothing when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.finish(now, key, Err(LinkError::Timeout));
        }
        for (name, timed_out) in self.watches.due(now) {
            if timed_out {
                self.watch_failed(now, &name, &LinkError::Timeout);
            } else {
                self.send_watch(now, &name);
            }
        }
        let due: Vec<(String, u16)> = self
            .schedules
            .iter()
            .filter(|(_, s)| s.next_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.start_round(now, key);
        }
    }

    /// The next network action, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Io> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        let event = self.events.pop_front()?;
        if !matches!(event, LinkEvent::Announcing { .. }) {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        Some(event)
    }

    /// When [`Link::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|&(t, _)| t);
        let round = self.schedules.values().filter_map(|s| s.next_at).min();
        let watch = self.watches.next_timer();
        [deadline, round, watch].into_iter().flatten().min()
    }

    fn reserve(&mut self) -> Result<CommandId, CommandError> {
        if self.outstanding >= self.config.max_pending {
            return Err(CommandError::TooManyPending);
        }
        self.outstanding += 1;
        Ok(CommandId(self.ids.next()))
    }

    fn start_round(&mut self, now: Instant, key: (String, u16)) {
        let id = CommandId(self.ids.next());
        let Some(schedule) = self.schedules.get_mut(&key) else {
            return;
        };
        schedule.next_at = None;
        schedule.round = Some(id);
        let command = Command::Announce {
            name: key.0,
            port: key.1,
        };
        self.start(now, id, command, self.config.announce_attempts, false);
    }

    /// Registers a command and sends it (or joins an identical request in flight).
    fn start(&mut self, now: Instant, id: CommandId, command: Command, attempts: u32, user: bool) {
        let qhash = request_hash(&command);
        self.queries.insert(
            id,
            Query {
                command: command.clone(),
                attempts_left: attempts.max(1),
                user,
            },
        );
        self.send(now, id, &command, qhash);
    }

    fn send(&mut self, now: Instant, id: CommandId, command: &Command, qhash: String) {
        if let Some(key) = self.by_hash.get(&qhash)
            && let Some(req) = self.reqs.get_mut(key)
        {
            self.stats.coalesced += 1;
            req.waiters.push(id);
            return;
        }
        self.stats.requests += 1;
        let key = self.ids.next();
        let rid = request_id(&mut self.rng);
        let deadline = now + self.config.request_timeout;
        let data = command.data();
        let mut http = None;
        match &self.grape {
            Grape::Http { base } => {
                let hid = HttpId(self.ids.next());
                let mut body = Vec::new();
                body.extend_from_slice(b"{\"rid\":");
                push_json_str(&mut body, rid.as_str());
                body.extend_from_slice(b",\"data\":");
                push_json(&mut body, &data);
                body.push(b'}');
                self.transmits.push_back(Io::Http(HttpRequest {
                    id: hid,
                    method: HttpMethod::Post,
                    url: format!("{base}/{}", command.kind()),
                    headers: vec![("content-type", "application/json")],
                    body,
                    deadline,
                }));
                self.by_http.insert(hid, key);
                http = Some(hid);
            }
            Grape::Ws { .. } => {
                self.ws_send(key, ws_frame(&rid, command.kind(), data));
                self.by_rid.insert(rid.clone(), key);
            }
        }
        self.deadlines.insert((deadline, key));
        self.by_hash.insert(qhash.clone(), key);
        self.reqs.insert(
            key,
            GrapeReq {
                rid,
                qhash,
                waiters: vec![id],
                deadline,
                http,
            },
        );
    }

    /// Sends a frame on the Grape WebSocket, opening it first if needed (frames wait in
    /// order until it is open). `key` names the request the frame belongs to, so a
    /// request that ends first takes its frame back; watches use 0, which names none.
    fn ws_send(&mut self, key: u64, text: String) {
        let Grape::Ws { url } = &self.grape else {
            return;
        };
        let ws = match &mut self.ws {
            Some(ws) => ws,
            None => {
                let conn = ConnId(self.ids.next());
                self.transmits.push_back(Io::WsConnect {
                    conn,
                    url: url.clone(),
                });
                self.ws.insert(GrapeWs {
                    conn,
                    open: false,
                    queued: Vec::new(),
                })
            }
        };
        if ws.open {
            self.transmits.push_back(Io::WsSend {
                conn: ws.conn,
                msg: WsMessage::Text(text),
            });
        } else {
            ws.queued.push((key, text));
        }
    }

    fn read_http_reply(
        &mut self,
        reply: Result<HttpResponse, TransportError>,
    ) -> Result<Value, LinkError> {
        let reply = reply.map_err(LinkError::Transport)?;
        if reply.body.len() > self.config.max_reply_len {
            return Err(LinkError::BadReply("reply too long"));
        }
        let text = String::from_utf8_lossy(&reply.body);
        // Like Node: JSON if it parses, else the text itself; an empty body is "nothing".
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.to_string()))
        };
        if !(200..300).contains(&reply.status) {
            let message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            return Err(LinkError::Http {
                status: reply.status,
                message,
            });
        }
        Ok(value)
    }

    /// Ends a Grape request and hands its outcome to every command waiting on it.
    fn finish(&mut self, now: Instant, key: u64, outcome: Result<Value, LinkError>) {
        let Some(req) = self.reqs.remove(&key) else {
            return;
        };
        self.deadlines.remove(&(req.deadline, key));
        self.by_hash.remove(&req.qhash);
        self.by_rid.remove(&req.rid);
        if let Some(http) = req.http {
            self.by_http.remove(&http);
        }
        if let Some(ws) = &mut self.ws {
            ws.queued.retain(|(k, _)| *k != key);
        }
        for id in req.waiters {
            self.complete(now, id, &outcome);
        }
    }

    fn complete(&mut self, now: Instant, id: CommandId, outcome: &Result<Value, LinkError>) {
        let Some(query) = self.queries.get_mut(&id) else {
            return;
        };
        let result = outcome
            .clone()
            .and_then(|v| interpret(&query.command, v, MAX_LOOKUP_PEERS));
        if let Err(e) = &result
            && e.is_retryable()
            && query.attempts_left > 1
        {
            query.attempts_left -= 1;
            let command = query.command.clone();
            tracing::debug!(%id, error = %e, "retrying grape command");
            self.send(now, id, &command, request_hash(&command));
            return;
        }
        let Some(query) = self.queries.remove(&id) else {
            return;
        };
        if let (Command::Lookup { name }, Ok(Reply::Peers(peers))) = (&query.command, &result) {
            self.cache.insert(now, name, peers.clone());
        }
        if let Command::Unannounce { name, port } = &query.command {
            self.reannounce_after_unannounce(now, (name.clone(), *port));
        }
        if !query.user {
            self.end_round(now, id, query.command, result.map(|_| ()));
            return;
        }
        let event = match query.command {
            Command::Lookup { name } => LinkEvent::Lookup {
                id,
                name,
                result: result.and_then(Reply::into_peers),
            },
            Command::Announce { .. } => LinkEvent::Announce {
                id,
                result: result.map(|_| ()),
            },
            Command::Unannounce { .. } => LinkEvent::Unannounce {
                id,
                result: result.map(|_| ()),
            },
            Command::Put { .. } => LinkEvent::Put {
                id,
                result: result.and_then(Reply::into_target),
            },
            Command::Get { .. } => LinkEvent::Get {
                id,
                result: result.and_then(Reply::into_item),
            },
        };
        self.events.push_back(event);
    }

    /// A schedule of `key` started while its unannounce was in flight (a server restarted
    /// on the same port) may have had its round reach the Grape first, over another
    /// connection, and the unannounce then undid it: announce again, now that the
    /// unannounce is done. The new round replaces the one in flight, and is a new request
    /// rather than joining that round's (whose answer may just be late).
    fn reannounce_after_unannounce(&mut self, now: Instant, key: (String, u16)) {
        if self.schedules.contains_key(&key) {
            let round = Command::Announce {
                name: key.0.clone(),
                port: key.1,
            };
            self.by_hash.remove(&request_hash(&round));
            self.start_round(now, key);
        }
    }

    fn end_round(
        &mut self,
        now: Instant,
        id: CommandId,
        command: Command,
        result: Result<(), LinkError>,
    ) {
        let Command::Announce { name, port } = command else {
            return;
        };
        let key = (name, port);
        let Some(schedule) = self.schedules.get_mut(&key) else {
            return;
        };
        if schedule.round != Some(id) {
            return;
        }
        let base = if result.is_ok() {
            self.config.announce_interval
        } else {
            self.config.announce_retry
        };
        schedule.round = None;
        schedule.next_at = Some(now + jitter_half(base, &mut self.rng));
        if let Err(e) = &result {
            tracing::warn!(name = %key.0, port = key.1, error = %e, "announce round failed");
        }
        if self.events.len() >= self.config.max_pending + self.config.max_announcing {
            self.stats.dropped_events += 1;
            return;
        }
        self.events.push_back(LinkEvent::Announcing {
            name: key.0,
            port: key.1,
            result,
        });
    }
}

/// A reply, read according to the command that asked.
enum Reply {
    Peers(Vec<PeerAddr>),
    Done,
    Target(Target),
    Item(Option<GetItem>),
}

impl Reply {
    fn into_peers(self) -> Result<Vec<PeerAddr>, LinkError> {
        match self {
            Reply::Peers(p) => Ok(p),
            _ => Err(LinkError::BadReply("not a lookup reply")),
        }
    }

    fn into_target(self) -> Result<Target, LinkError> {
        match self {
            Reply::Target(t) => Ok(t),
            _ => Err(LinkError::BadReply("not a put reply")),
        }
    }

    fn into_item(self) -> Result<Option<GetItem>, LinkError> {
        match self {
            Reply::Item(i) => Ok(i),
            _ => Err(LinkError::BadReply("not a get reply")),
        }
    }
}

fn interpret(command: &Command, value: Value, max_peers: usize) -> Result<Reply, LinkError> {
    // The Grape answers a refused command with status 200 and the error message as a
    // JSON string; no successful reply is a string starting with "ERR_".
    if let Value::String(s) = &value
        && s.starts_with("ERR_")
    {
        return Err(LinkError::Grape(s.clone()));
    }
    match command {
        Command::Lookup { .. } => {
            // Node turns anything but a non-empty array into ERR_GRAPE_LOOKUP_EMPTY.
            let Value::Array(items) = value else {
                return Err(LinkError::LookupEmpty);
            };
            let peers = read_peers(items, max_peers);
            if peers.is_empty() {
                return Err(LinkError::LookupEmpty);
            }
            Ok(Reply::Peers(peers))
        }
        // Like announce, a DHT with nobody to tell ("No nodes to query") is no failure:
        // the Grape itself has forgotten the peer.
        Command::Announce { .. } | Command::Unannounce { .. } => Ok(Reply::Done),
        Command::Put { target, .. } => {
            let got = match &value {
                Value::String(s) => match unhex(s).and_then(|b| Target::from_slice(&b)) {
                    Some(got) => got,
                    // A failed DHT put comes back as its message ("No nodes to query",
                    // Node's "All queries failed"), with status 200 and no ERR_ prefix.
                    None => return Err(LinkError::Grape(s.clone())),
                },
                _ => return Err(LinkError::BadReply("put reply is not a hex target")),
            };
            if got != *target {
                return Err(LinkError::BadReply("put reply names another target"));
            }
            Ok(Reply::Target(got))
        }
        Command::Get { .. } => read_item(value).map(Reply::Item),
    }
}

fn read_item(value: Value) -> Result<Option<GetItem>, LinkError> {
    let obj = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::Object(obj) => obj,
        _ => return Err(LinkError::BadReply("get reply is not an object")),
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let bytes = |k: &str| -> Result<Option<Vec<u8>>, LinkError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(unhex)
                .map(Some)
                .ok_or(LinkError::BadReply("get reply field is not hex")),
        }
    };
    let k = bytes("k")?
        .map(|b| <[u8; 32]>::try_from(b.as_slice()))
        .transpose()
        .map_err(|_| LinkError::BadReply("get reply k is not 32 bytes"))?;
    let sig = bytes("sig")?
        .map(|b| <[u8; 64]>::try_from(b.as_slice()))
        .transpose()
        .map_err(|_| LinkError::BadReply("get reply sig is not 64 bytes"))?;
    Ok(Some(GetItem {
        id: text("id").unwrap_or_default(),
        v: text("v").ok_or(LinkError::BadReply("get reply has no string v"))?,
        k,
        sig,
        seq: obj.get("seq").and_then(Value::as_i64),
        salt: text("salt"),
    }))
}

/// `[rid, kind, data]` as a WebSocket text frame.
fn ws_frame(rid: &str, kind: &str, data: Value) -> String {
    let mut frame = Vec::new();
    push_json(
        &mut frame,
        &Value::Array(vec![rid.into(), kind.into(), data]),
    );
    json_text(frame)
}

/// Node's coalescing key: `type:JSON(payload)`.
fn request_hash(command: &Command) -> String {
    let mut out = Vec::new();
    push_json(&mut out, &command.data());
    format!("{}:{}", command.kind(), String::from_utf8_lossy(&out))
}

fn bencode_str(v: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", v.len()).into_bytes();
    out.extend_from_slice(v);
    out
}

/// A random duration in `[d/2, d]`.
pub(crate) fn jitter_half(d: Duration, rng: &mut impl Rng) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(ms / 2..=ms))
}

pub(crate) fn check_name(name: &str) -> Result<(), CommandError> {
    if name.is_empty() || name.len() > MAX_KEY_LEN {
        return Err(CommandError::InvalidName);
    }
    Ok(())
}

fn check_port(port: u16) -> Result<(), CommandError> {
    if port == 0 {
        return Err(CommandError::InvalidPort);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde_json::json;

    const MS: Duration = Duration::from_millis(1);

    struct Harness {
        link: Link,
        t0: Instant,
    }

    impl Harness {
        fn new(grape: &str) -> Self {
            Self::with(LinkConfig::new(grape))
        }

        fn with(config: LinkConfig) -> Self {
            Harness {
                link: Link::new(config, [42; 32]).expect("valid config"),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + MS * u32::try_from(ms).expect("small")
        }

        fn transmits(&mut self) -> Vec<Io> {
            std::iter::from_fn(|| self.link.poll_transmit()).collect()
        }

        fn events(&mut self) -> Vec<LinkEvent> {
            std::iter::from_fn(|| self.link.poll_event()).collect()
        }

        fn http(&mut self) -> Vec<HttpRequest> {
            self.transmits()
                .into_iter()
                .map(|t| match t {
                    Io::Http(r) => r,
                    other => panic!("expected HTTP, got {other:?}"),
                })
                .collect()
        }

        fn reply(&mut self, ms: u64, req: &HttpRequest, status: u16, body: &str) {
            let now = self.at(ms);
            let reply = Ok(HttpResponse {
                status,
                body: body.as_bytes().to_vec(),
            });
            self.link.handle_http_reply(now, req.id, reply);
        }

        fn tick(&mut self, ms: u64) {
            let now = self.at(ms);
            self.link.handle_timeout(now);
        }
    }

    fn rid_of(body: &[u8]) -> String {
        let v: Value = serde_json::from_slice(body).expect("json body");
        v["rid"].as_str().expect("rid").to_owned()
    }

    pub(crate) fn addrs(list: &[&str]) -> Vec<PeerAddr> {
        list.iter()
            .map(|s| PeerAddr::parse(s).expect("valid"))
            .collect()
    }

    #[test]
    fn lookup_posts_what_node_posts() {
        let mut h = Harness::new("http://127.0.0.1:30001");

        let t0 = h.t0;
        h.link.lookup(t0, "rpc_test").expect("accepted");
        let reqs = h.http();

        assert_eq!(reqs.len(), 1);
        let rid = rid_of(&reqs[0].body);
        assert_eq!(reqs[0].url, "http://127.0.0.1:30001/lookup");
        assert_eq!(reqs[0].headers, vec![("content-type", "application/json")]);
        assert_eq!(
            reqs[0].body,
            format!(r#"{{"rid":"{rid}","data":"rpc_test"}}"#).as_bytes()
        );
        assert_eq!(reqs[0].deadline, h.at(2500));
    }

    #[test]
    fn lookup_reply_gives_peers_and_fills_the_cache() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let id = h.link.lookup(t0, "svc").expect("accepted");
        let req = h.http().remove(0);

        h.reply(
            10,
            &req,
            200,
            r#"["127.0.0.1:1337","127.0.0.1:1338","bad"]"#,
        );
        let again = h.link.lookup(h.at(9_000), "svc").expect("ok");

        assert_eq!(
            h.events(),
            vec![
                LinkEvent::Lookup {
                    id,
                    name: "svc".into(),
                    result: Ok(addrs(&["127.0.0.1:1337", "127.0.0.1:1338"]))
                },
                LinkEvent::Lookup {
                    id: again,
                    name: "svc".into(),
                    result: Ok(addrs(&["127.0.0.1:1337", "127.0.0.1:1338"]))
                }
            ]
        );
        assert!(h.transmits().is_empty());
        assert_eq!(h.link.stats().cache_hits, 1);
    }

    #[test]
    fn cache_expires_after_ten_seconds() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        h.link.lookup(t0, "svc").expect("accepted");
        let req = h.http().remove(0);
        h.reply(0, &req, 200, r#"["h:1"]"#);
        let _ = h.events();

        h.link.lookup(h.at(10_000), "svc").expect("ok");

        assert_eq!(h.http().len(), 1);
    }

    #[test]
    fn empty_lookup_is_lookup_empty_and_not_retried_or_cached() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let id = h.link.lookup(t0, "svc").expect("accepted");
        let req = h.http().remove(0);

        h.reply(5, &req, 200, "[]");

        assert_eq!(
            h.events(),
            vec![LinkEvent::Lookup {
                id,
                name: "svc".into(),
                result: Err(LinkError::LookupEmpty)
            }]
        );
        assert!(h.transmits().is_empty());
        h.link.lookup(h.at(6), "svc").expect("ok");
        assert_eq!(h.http().len(), 1);
    }

    #[test]
    fn silent_grape_times_out_after_three_tries() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let id = h.link.lookup(t0, "svc").expect("accepted");
        let first = h.http();

        h.tick(2_499);
        let early = h.transmits();
        h.tick(2_500);
        let second = h.http();
        h.tick(5_000);
        let third = h.http();
        let before_end = h.events();
        h.tick(7_500);

        assert_eq!(first.len(), 1);
        assert!(early.is_empty());
        assert_eq!(second.len(), 1);
        assert_ne!(rid_of(&first[0].body), rid_of(&second[0].body));
        assert_eq!(third.len(), 1);
        assert!(before_end.is_empty());
        assert_eq!(
            h.events(),
            vec![LinkEvent::Lookup {
                id,
                name: "svc".into(),
                result: Err(LinkError::Timeout)
            }]
        );
        assert_eq!(h.link.poll_timeout(), None);
    }

    #[test]
    fn late_reply_after_timeout_is_ignored() {
        let mut h = Harness::with(LinkConfig {
            lookup_attempts: 1,
            ..LinkConfig::new("http://g:1")
        });
        let t0 = h.t0;
        h.link.lookup(t0, "svc").expect("accepted");
        let req = h.http().remove(0);
        h.tick(2_500);
        let _ = h.events();

        h.reply(3_000, &req, 200, r#"["h:1"]"#);

        assert!(h.events().is_empty());
        assert_eq!(h.link.stats().late_replies, 1);
    }

    #[test]
    fn identical_commands_share_one_request() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let a = h.link.lookup(t0, "svc").expect("ok");
        let b = h.link.lookup(t0, "svc").expect("ok");
        let reqs = h.http();

        h.reply(1, &reqs[0], 200, r#"["h:1"]"#);

        assert_eq!(reqs.len(), 1);
        let ids: Vec<CommandId> = h
            .events()
            .into_iter()
            .map(|e| match e {
                LinkEvent::Lookup { id, .. } => id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![a, b]);
    }

    #[test]
    fn grape_error_string_is_an_error_without_retry() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let id = h.link.announce(t0, "svc", 80).expect("ok");
        let req = h.http().remove(0);

        h.reply(1, &req, 200, r#""ERR_GRAPE_SERVICE_PORT""#);

        assert_eq!(
            h.events(),
            vec![LinkEvent::Announce {
                id,
                result: Err(LinkError::Grape("ERR_GRAPE_SERVICE_PORT".into()))
            }]
        );
        assert!(h.transmits().is_empty());
    }

    #[test]
    fn http_error_is_retried_then_reported_with_nodes_message() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let id = h.link.lookup(t0, "svc").expect("ok");

        for ms in 1..=3 {
            let req = h.http().remove(0);
            h.reply(ms, &req, 500, "ERR_GRAPE_PAYLOAD_INVALID");
        }

        let events = h.events();
        assert_eq!(
            events,
            vec![LinkEvent::Lookup {
                id,
                name: "svc".into(),
                result: Err(LinkError::Http {
                    status: 500,
                    message: "ERR_GRAPE_PAYLOAD_INVALID".into()
                })
            }]
        );
        let LinkEvent::Lookup { result: Err(e), .. } = &events[0] else {
            panic!("an error");
        };
        assert_eq!(e.to_string(), "ERR_GRAPE_PAYLOAD_INVALID");
        assert_eq!(h.link.stats().requests, 3);
    }

    #[test]
    fn transport_error_reports_the_adapters_message() {
        let mut h = Harness::with(LinkConfig {
            lookup_attempts: 1,
            ..LinkConfig::new("http://g:1")
        });
        let t0 = h.t0;
        h.link.lookup(t0, "svc").expect("ok");
        let req = h.http().remove(0);

        let err = Err(TransportError::new("connect ECONNREFUSED"));
        h.link.handle_http_reply(t0, req.id, err);

        let Some(LinkEvent::Lookup { result: Err(e), .. }) = h.events().pop() else {
            panic!("an error");
        };
        assert_eq!(e.to_string(), "connect ECONNREFUSED");
    }

    #[test]
    fn announce_body_is_name_and_port() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;

        h.link.announce(t0, "rpc_test", 1337).expect("ok");
        let req = h.http().remove(0);

        assert_posts_rpc_test_1337(&req, "announce");
    }

    /// `req` is `POST http://g:1/{command}` of `["rpc_test", 1337]`.
    fn assert_posts_rpc_test_1337(req: &HttpRequest, command: &str) {
        let rid = rid_of(&req.body);
        assert_eq!(req.url, format!("http://g:1/{command}"));
        assert_eq!(
            req.body,
            format!(r#"{{"rid":"{rid}","data":["rpc_test",1337]}}"#).as_bytes()
        );
    }

    #[test]
    fn unannounce_stops_the_schedule_and_posts_name_and_port() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        h.link.start_announcing(t0, "rpc_test", 1337).expect("ok");
        let round = h.http().remove(0);
        h.reply(1, &round, 200, "1");
        h.events();

        let id = h.link.unannounce(h.at(2), "rpc_test", 1337).expect("ok");
        let req = h.http().remove(0);
        h.reply(3, &req, 200, "2");

        assert_posts_rpc_test_1337(&req, "unannounce");
        assert_eq!(
            h.events(),
            vec![LinkEvent::Unannounce { id, result: Ok(()) }]
        );
        assert!(!h.link.is_announcing("rpc_test", 1337));
        h.tick(120_000);
        assert!(h.transmits().is_empty(), "no round after the unannounce");
    }

    #[test]
    fn a_schedule_started_during_an_unannounce_announces_again_after_it() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let id = h.link.unannounce(t0, "svc", 80).expect("ok");
        let unannounce = h.http().remove(0);
        h.link.start_announcing(t0, "svc", 80).expect("ok");
        let first_round = h.http().remove(0);
        // The round overtook the unannounce at the Grape, which then forgot the peer, but
        // the round's answer comes last.
        h.reply(2, &unannounce, 200, "1");

        let again = h.http();
        assert_eq!(
            h.events(),
            vec![LinkEvent::Unannounce { id, result: Ok(()) }]
        );
        assert_eq!(again.len(), 1, "a new request: {again:?}");
        assert_eq!(again[0].url, "http://g:1/announce");
        h.reply(3, &first_round, 200, "1");
        assert_eq!(h.events(), vec![], "the replaced round ends unreported");
        h.reply(4, &again[0], 200, "1");
        assert_eq!(
            h.events(),
            vec![LinkEvent::Announcing {
                name: "svc".into(),
                port: 80,
                result: Ok(())
            }]
        );
    }

    #[test]
    fn bad_names_and_ports_are_refused() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;

        assert_eq!(h.link.lookup(t0, ""), Err(CommandError::InvalidName));
        assert_eq!(
            h.link.lookup(t0, &"x".repeat(257)),
            Err(CommandError::InvalidName)
        );
        assert_eq!(
            h.link.announce(t0, "svc", 0),
            Err(CommandError::InvalidPort)
        );
        assert_eq!(
            h.link.unannounce(t0, "", 80),
            Err(CommandError::InvalidName)
        );
        assert_eq!(
            h.link.unannounce(t0, "svc", 0),
            Err(CommandError::InvalidPort)
        );
        assert!(h.transmits().is_empty());
    }

    #[test]
    fn pending_commands_are_capped_until_polled() {
        let mut h = Harness::with(LinkConfig {
            max_pending: 2,
            ..LinkConfig::new("http://g:1")
        });
        let t0 = h.t0;
        h.link.lookup(t0, "a").expect("ok");
        h.link.lookup(t0, "b").expect("ok");

        let third = h.link.lookup(t0, "c");
        let reqs = h.http();
        h.reply(1, &reqs[0], 200, "[]");
        let still_full = h.link.lookup(t0, "c");
        let _ = h.events();
        let after_poll = h.link.lookup(t0, "c");

        assert_eq!(third, Err(CommandError::TooManyPending));
        assert_eq!(still_full, Err(CommandError::TooManyPending));
        assert!(after_poll.is_ok());
    }

    #[test]
    fn put_immutable_matches_the_grape_target() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let put = Put::immutable("hello").expect("small");
        let id = h.link.put(t0, put).expect("ok");
        let req = h.http().remove(0);

        // Observed from a Node Grape: put {"v":"hello"} -> this target.
        h.reply(
            1,
            &req,
            200,
            r#""e28910ea0adb94dd45ced75fbff3e135c01bc437""#,
        );

        let rid = rid_of(&req.body);
        assert_eq!(req.url, "http://g:1/put");
        assert_eq!(
            req.body,
            format!(r#"{{"rid":"{rid}","data":{{"v":"hello"}}}}"#).as_bytes()
        );
        let Some(LinkEvent::Put { id: got, result }) = h.events().pop() else {
            panic!("a put event");
        };
        assert_eq!(got, id);
        assert_eq!(
            result.map(|t| t.to_string()),
            Ok("e28910ea0adb94dd45ced75fbff3e135c01bc437".into())
        );
    }

    #[test]
    fn put_reply_for_another_target_is_a_bad_reply() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let put = Put::immutable("hello").expect("small");
        h.link.put(t0, put).expect("ok");
        let req = h.http().remove(0);

        h.reply(
            1,
            &req,
            200,
            r#""0000000000000000000000000000000000000000""#,
        );

        let Some(LinkEvent::Put { result, .. }) = h.events().pop() else {
            panic!("a put event");
        };
        assert!(matches!(result, Err(LinkError::BadReply(_))));
    }

    #[test]
    fn put_failure_message_is_a_grape_error() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let put = Put::immutable("hello").expect("small");
        h.link.put(t0, put).expect("ok");
        let req = h.http().remove(0);

        // A lone Grape has no DHT node to store at.
        h.reply(1, &req, 200, r#""No nodes to query""#);

        let Some(LinkEvent::Put { result, .. }) = h.events().pop() else {
            panic!("a put event");
        };
        assert_eq!(result, Err(LinkError::Grape("No nodes to query".into())));
    }

    #[test]
    fn oversized_values_are_refused_before_sending() {
        assert_eq!(Put::immutable(&"x".repeat(2000)), Err(PutError::TooBig));
    }

    #[test]
    fn mutable_put_carries_key_signature_seq_salt_and_cas() {
        let put = Put::sign_mutable(&[7; 32], "s1", 3, "hi", Some(2)).expect("valid");
        let item = MutableItem::sign(&[7; 32], b"s1".to_vec(), 3, b"2:hi".to_vec()).expect("valid");

        assert_eq!(put.target(), item.target());
        assert_eq!(
            put.data,
            json!({
                "v": "hi",
                "k": hex(item.k()),
                "sig": hex(item.sig()),
                "seq": 3,
                "salt": "s1",
                "cas": 2
            })
        );
    }

    #[test]
    fn get_sends_hash_or_hash_and_salt() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let target = Target([0xab; 20]);

        h.link.get(t0, target, None).expect("ok");
        h.link.get(t0, target, Some("s")).expect("ok");
        let reqs = h.http();

        let hash = "ab".repeat(20);
        let rid0 = rid_of(&reqs[0].body);
        let rid1 = rid_of(&reqs[1].body);
        assert_eq!(
            reqs[0].body,
            format!(r#"{{"rid":"{rid0}","data":"{hash}"}}"#).as_bytes()
        );
        assert_eq!(
            reqs[1].body,
            format!(r#"{{"rid":"{rid1}","data":{{"hash":"{hash}","salt":"s"}}}}"#).as_bytes()
        );
    }

    #[test]
    fn get_reads_items_and_nothing() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let a = h.link.get(t0, Target([1; 20]), None).expect("ok");
        let b = h.link.get(t0, Target([2; 20]), None).expect("ok");
        let reqs = h.http();
        let k = "11".repeat(32);
        let sig = "22".repeat(64);

        h.reply(
            1,
            &reqs[0],
            200,
            &format!(r#"{{"id":"ff","v":"hi","k":"{k}","sig":"{sig}","seq":4,"salt":"s"}}"#),
        );
        h.reply(1, &reqs[1], 200, "");

        assert_eq!(
            h.events(),
            vec![
                LinkEvent::Get {
                    id: a,
                    result: Ok(Some(GetItem {
                        id: "ff".into(),
                        v: "hi".into(),
                        k: Some([0x11; 32]),
                        sig: Some([0x22; 64]),
                        seq: Some(4),
                        salt: Some("s".into()),
                    }))
                },
                LinkEvent::Get {
                    id: b,
                    result: Ok(None)
                }
            ]
        );
    }

    #[test]
    fn announcing_starts_now_and_repeats_within_the_interval() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;

        let started = h.link.start_announcing(t0, "svc", 80);
        let again = h.link.start_announcing(t0, "svc", 80);
        let req = h.http().remove(0);
        h.reply(100, &req, 200, "1");
        let next = h.link.poll_timeout().expect("scheduled");

        assert_eq!(started, Ok(true));
        assert_eq!(again, Ok(false));
        assert_eq!(
            h.events(),
            vec![LinkEvent::Announcing {
                name: "svc".into(),
                port: 80,
                result: Ok(())
            }]
        );
        assert!(next >= h.at(100 + 30_000) && next <= h.at(100 + 60_000));
        h.link.handle_timeout(next);
        assert_eq!(h.http().len(), 1);
    }

    #[test]
    fn failed_round_is_retried_soon() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        h.link.start_announcing(t0, "svc", 80).expect("ok");
        for ms in [0, 2_500, 5_000] {
            assert_eq!(h.http().len(), 1);
            h.tick(ms + 2_500);
        }

        let next = h.link.poll_timeout().expect("scheduled");

        assert!(matches!(
            h.events().as_slice(),
            [LinkEvent::Announcing {
                result: Err(LinkError::Timeout),
                ..
            }]
        ));
        assert!(next >= h.at(7_500 + 2_500) && next <= h.at(7_500 + 5_000));
    }

    #[test]
    fn a_service_is_always_reannounced_within_the_peer_lifetime() {
        // Rounds fail at random (every try times out) or succeed after a delay; the
        // gap between successes must stay under the Grape's 120 s peer lifetime.
        let mut h = Harness::new("http://g:1");
        let mut outcome_rng = ChaCha8Rng::seed_from_u64(9);
        let mut now = h.t0;
        h.link.start_announcing(now, "svc", 80).expect("ok");
        let mut last_success = now;
        let mut worst = Duration::ZERO;
        for _ in 0..2_000 {
            for req in h.http() {
                if outcome_rng.random_bool(0.7) {
                    now += MS * outcome_rng.random_range(0..2_500);
                    h.link.handle_http_reply(
                        now,
                        req.id,
                        Ok(HttpResponse {
                            status: 200,
                            body: b"1".to_vec(),
                        }),
                    );
                }
            }
            for e in h.events() {
                if let LinkEvent::Announcing { result: Ok(()), .. } = e {
                    worst = worst.max(now - last_success);
                    last_success = now;
                }
            }
            now = h.link.poll_timeout().expect("always scheduled").max(now);
            h.link.handle_timeout(now);
        }

        assert!(worst < Duration::from_secs(120), "worst gap {worst:?}");
        assert!(worst > Duration::from_secs(30));
    }

    #[test]
    fn stop_announcing_ends_the_schedule() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        h.link.start_announcing(t0, "svc", 80).expect("ok");
        let req = h.http().remove(0);

        let stopped = h.link.stop_announcing("svc", 80);
        h.reply(1, &req, 200, "1");

        assert!(stopped);
        assert!(!h.link.is_announcing("svc", 80));
        assert!(h.events().is_empty());
        assert_eq!(h.link.poll_timeout(), None);
    }

    #[test]
    fn ws_grape_connects_queues_and_matches_by_rid() {
        let mut h = Harness::new("ws://127.0.0.1:30002");
        let t0 = h.t0;
        let a = h.link.lookup(t0, "svc").expect("ok");
        let b = h.link.announce(t0, "svc", 80).expect("ok");
        let connect = h.transmits();
        let Io::WsConnect { conn, url } = &connect[0] else {
            panic!("connect first: {connect:?}");
        };
        let conn = *conn;

        h.link.handle_ws_open(t0, conn);
        let sent: Vec<String> = h
            .transmits()
            .into_iter()
            .map(|t| match t {
                Io::WsSend {
                    msg: WsMessage::Text(s),
                    ..
                } => s,
                other => panic!("{other:?}"),
            })
            .collect();
        let rid = |s: &str| -> String {
            let v: Value = serde_json::from_str(s).expect("json");
            v[0].as_str().expect("rid").to_owned()
        };
        let (ra, rb) = (rid(&sent[0]), rid(&sent[1]));
        let reply_b = WsMessage::Text(format!(r#"["{rb}",null,1]"#));
        let reply_a = WsMessage::Text(format!(r#"["{ra}",null,["h:1"]]"#));
        h.link.handle_ws_message(t0, conn, &reply_b);
        h.link.handle_ws_message(t0, conn, &reply_a);

        assert_eq!(connect.len(), 1);
        assert_eq!(url, "ws://127.0.0.1:30002");
        assert_eq!(sent[0], format!(r#"["{ra}","lookup","svc"]"#));
        assert_eq!(sent[1], format!(r#"["{rb}","announce",["svc",80]]"#));
        assert_eq!(
            h.events(),
            vec![
                LinkEvent::Announce {
                    id: b,
                    result: Ok(())
                },
                LinkEvent::Lookup {
                    id: a,
                    name: "svc".into(),
                    result: Ok(addrs(&["h:1"]))
                }
            ]
        );
    }

    #[test]
    fn ws_grape_error_and_garbage() {
        let mut h = Harness::new("ws://g:1");
        let t0 = h.t0;
        let id = h.link.lookup(t0, "svc").expect("ok");
        let Some(Io::WsConnect { conn, .. }) = h.link.poll_transmit() else {
            panic!("connect");
        };
        h.link.handle_ws_open(t0, conn);
        let Some(Io::WsSend { msg, .. }) = h.link.poll_transmit() else {
            panic!("send");
        };
        let v: Value = serde_json::from_slice(msg.as_bytes()).expect("json");
        let rid = v[0].as_str().expect("rid");

        let garbage = WsMessage::Text("{not json".into());
        h.link.handle_ws_message(t0, conn, &garbage);
        let err = WsMessage::Text(format!(r#"["{rid}","ERR_GRAPE_LOOKUP",null]"#));
        h.link.handle_ws_message(t0, conn, &err);

        assert_eq!(h.link.stats().bad_frames, 1);
        assert_eq!(
            h.events(),
            vec![LinkEvent::Lookup {
                id,
                name: "svc".into(),
                result: Err(LinkError::Grape("ERR_GRAPE_LOOKUP".into()))
            }]
        );
    }

    #[test]
    fn ws_close_fails_requests_and_reconnects_for_retries() {
        let mut h = Harness::with(LinkConfig {
            lookup_attempts: 2,
            ..LinkConfig::new("ws://g:1")
        });
        let t0 = h.t0;
        let id = h.link.lookup(t0, "svc").expect("ok");
        let Some(Io::WsConnect { conn: first, .. }) = h.link.poll_transmit() else {
            panic!("connect");
        };

        h.link.handle_ws_closed(t0, first);
        let Some(Io::WsConnect { conn: second, .. }) = h.link.poll_transmit() else {
            panic!("reconnect for the retry");
        };
        h.link.handle_ws_closed(t0, second);

        assert_ne!(first, second);
        assert_eq!(
            h.events(),
            vec![LinkEvent::Lookup {
                id,
                name: "svc".into(),
                result: Err(LinkError::TransportClose)
            }]
        );
        assert_eq!(LinkError::TransportClose.to_string(), "ERR_TRANSPORT_CLOSE");
    }

    // --- watches ---------------------------------------------------------------------

    fn watch_events(h: &mut Harness) -> Vec<WatchEvent> {
        std::iter::from_fn(|| h.link.poll_watch()).collect()
    }

    fn sets(events: &[WatchEvent]) -> Vec<(WatchId, Result<Vec<PeerAddr>, LinkError>)> {
        events.iter().map(|e| (e.watch, e.peers.clone())).collect()
    }

    fn watch_body(index: u64, peers: &[&str]) -> String {
        json!({ "index": index, "peers": peers }).to_string()
    }

    /// The one long poll the Link has out now, and the index it sends.
    fn one_poll(h: &mut Harness) -> (HttpRequest, u64) {
        let reqs = h.http();
        assert_eq!(reqs.len(), 1, "one poll: {reqs:?}");
        let req = reqs.into_iter().next().expect("one");
        let index = req
            .url
            .split("index=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .and_then(|i| i.parse().ok())
            .expect("an index in the URL");
        (req, index)
    }

    #[test]
    fn http_watch_long_polls_from_the_last_index() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let w = h.link.watch(t0, "rest:svc").expect("ok");
        let (first, index0) = one_poll(&mut h);

        h.reply(10, &first, 200, &watch_body(5, &["h:2", "h:1"]));
        let after_first = watch_events(&mut h);
        let (second, index1) = one_poll(&mut h);
        // The wait ended with no change.
        h.reply(30_010, &second, 200, &watch_body(5, &["h:1", "h:2"]));
        let unchanged = watch_events(&mut h);
        let (third, index2) = one_poll(&mut h);
        h.reply(30_020, &third, 200, &watch_body(6, &[]));
        let emptied = watch_events(&mut h);
        let (_, index3) = one_poll(&mut h);

        assert_eq!(first.method, HttpMethod::Get);
        assert_eq!(
            first.url,
            "http://g:1/watch?name=rest%3Asvc&index=0&wait=30000ms"
        );
        assert!(first.body.is_empty());
        assert_eq!(first.deadline, t0 + Duration::from_millis(32_500));
        assert_eq!((index0, index1, index2, index3), (0, 5, 5, 6));
        assert_eq!(sets(&after_first), vec![(w, Ok(addrs(&["h:1", "h:2"])))]);
        assert!(unchanged.is_empty(), "{unchanged:?}");
        assert_eq!(sets(&emptied), vec![(w, Ok(vec![]))]);
        assert_eq!(emptied[0].name, "rest:svc");
        assert_eq!(h.link.stats().requests, 0);
        assert_eq!(h.link.stats().watch_polls, 4);
    }

    #[test]
    fn http_watch_restarts_from_index_0_after_a_failure_and_follows_a_restarted_grape() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let w = h.link.watch(t0, "svc").expect("ok");
        let (first, _) = one_poll(&mut h);
        h.reply(0, &first, 200, &watch_body(40, &["h:1"]));
        let (second, _) = one_poll(&mut h);

        // The Grape went away: refused, then no poll until the retry gap has passed.
        let refused = Err(TransportError::unsent("connection refused"));
        h.link.handle_http_reply(h.at(100), second.id, refused);
        let retry_at = h.link.poll_timeout().expect("a retry");
        let waiting = h.transmits();
        let lookup = h.link.lookup(h.at(100), "svc").expect("ok");
        let lookup_req = h.http();
        h.reply(200, &lookup_req[0], 200, r#"["h:1"]"#);
        h.link.handle_timeout(retry_at);
        let (third, index_after_failure) = one_poll(&mut h);
        // The restarted Grape counts from 1 again: its answer is taken as it is.
        h.link.handle_http_reply(
            retry_at,
            third.id,
            Ok(HttpResponse {
                status: 200,
                body: watch_body(3, &["h:9"]).into_bytes(),
            }),
        );
        let (_, index_after_restart) = one_poll(&mut h);

        assert!(waiting.is_empty(), "{waiting:?}");
        assert!(retry_at >= h.at(100 + 2500) && retry_at <= h.at(100 + 5000));
        assert_eq!(
            lookup_req.len(),
            1,
            "no current set: the lookup asks the grape"
        );
        assert_eq!(lookup_req[0].url, "http://g:1/lookup");
        assert_ne!(lookup_req[0].id, third.id);
        assert_eq!(index_after_failure, 0);
        assert_eq!(index_after_restart, 3);
        assert_eq!(
            sets(&watch_events(&mut h)),
            vec![(w, Ok(addrs(&["h:9"])))],
            "the first set was replaced before it was polled"
        );
        assert_eq!(h.link.stats().watch_retries, 1);
        let _ = lookup;
    }

    #[test]
    fn a_grape_that_does_not_hold_polls_is_not_polled_in_a_loop() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let w = h.link.watch(t0, "svc").expect("ok");
        let (first, _) = one_poll(&mut h);
        h.reply(0, &first, 200, &watch_body(4, &["h:1"]));
        let (second, _) = one_poll(&mut h);

        // The same index again, at once: no change, and the poll was not held.
        h.reply(1, &second, 200, &watch_body(4, &["h:1"]));
        let right_after = h.transmits();
        let retry_at = h.link.poll_timeout().expect("a later poll");
        let still = h.link.lookup(h.at(1), "svc").expect("ok");
        h.link.handle_timeout(retry_at);
        let (_, index) = one_poll(&mut h);

        assert!(right_after.is_empty(), "{right_after:?}");
        assert!(retry_at >= h.at(1 + 2500), "{:?}", retry_at - h.t0);
        assert_eq!(index, 4);
        assert_eq!(sets(&watch_events(&mut h)), vec![(w, Ok(addrs(&["h:1"])))]);
        assert_eq!(
            h.events(),
            vec![LinkEvent::Lookup {
                id: still,
                name: "svc".into(),
                result: Ok(addrs(&["h:1"]))
            }],
            "the set is still current"
        );
    }

    #[test]
    fn a_silent_poll_times_out_after_its_wait_and_is_retried() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        h.link.watch(t0, "svc").expect("ok");
        let (first, _) = one_poll(&mut h);

        h.link.handle_timeout(first.deadline);
        let at_deadline = h.transmits();
        let retry_at = h.link.poll_timeout().expect("a retry");
        h.link.handle_timeout(retry_at);
        let (_, index) = one_poll(&mut h);
        // The late answer of the abandoned poll changes nothing.
        h.link.handle_http_reply(
            retry_at,
            first.id,
            Ok(HttpResponse {
                status: 200,
                body: watch_body(9, &["h:1"]).into_bytes(),
            }),
        );

        assert!(at_deadline.is_empty());
        assert!(retry_at > first.deadline);
        assert_eq!(index, 0);
        assert!(watch_events(&mut h).is_empty());
        assert!(h.transmits().is_empty());
    }

    #[test]
    fn a_refused_watch_ends_with_the_grapes_error() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let limited = h.link.watch(t0, "a").expect("ok");
        let (poll, _) = one_poll(&mut h);
        h.reply(0, &poll, 429, "\"ERR_GRAPE_WATCH_LIMIT\"");
        // A Node Grape does not speak watch: it cannot read the GET's empty body.
        let node = h.link.watch(t0, "b").expect("ok");
        let (poll, _) = one_poll(&mut h);
        h.reply(0, &poll, 500, "ERR_GRAPE_PAYLOAD_INVALID");

        let events = watch_events(&mut h);
        assert_eq!(
            sets(&events),
            vec![
                (
                    limited,
                    Err(LinkError::Http {
                        status: 429,
                        message: "ERR_GRAPE_WATCH_LIMIT".into()
                    })
                ),
                (
                    node,
                    Err(LinkError::Http {
                        status: 500,
                        message: "ERR_GRAPE_PAYLOAD_INVALID".into()
                    })
                ),
            ]
        );
        assert_eq!(
            events[0].peers.as_ref().map_err(ToString::to_string),
            Err("ERR_GRAPE_WATCH_LIMIT".into())
        );
        assert!(h.transmits().is_empty());
        assert_eq!(h.link.poll_timeout(), None);
        assert!(!h.link.is_watched("a") && !h.link.is_watched("b"));
        assert!(!h.link.unwatch(limited));
    }

    #[test]
    fn watches_are_bounded_per_link_and_share_one_grape_watch_per_name() {
        let mut h = Harness::with(LinkConfig {
            max_watches: 2,
            ..LinkConfig::new("http://g:1")
        });
        let t0 = h.t0;
        let a1 = h.link.watch(t0, "a").expect("ok");
        let _b = h.link.watch(t0, "b").expect("ok");
        let over = h.link.watch(t0, "c");
        let a2 = h
            .link
            .watch(t0, "a")
            .expect("a shared name is no new watch");
        let polls = h.http();
        let poll_a = polls.iter().find(|r| r.url.contains("name=a&")).expect("a");
        h.reply(0, poll_a, 200, &watch_body(1, &["h:1"]));
        let both = watch_events(&mut h);
        let (next_a, _) = one_poll(&mut h);
        let a3 = h.link.watch(t0, "a").expect("ok");
        let late_joiner = watch_events(&mut h);

        assert_eq!(over, Err(CommandError::TooManyWatches));
        assert_eq!(
            over.map_err(|e| e.to_string()),
            Err("ERR_TOO_MANY_WATCHES".into())
        );
        assert_eq!(polls.len(), 2, "one poll per name: {polls:?}");
        assert_eq!(
            sets(&both),
            vec![(a1, Ok(addrs(&["h:1"]))), (a2, Ok(addrs(&["h:1"])))]
        );
        assert_eq!(sets(&late_joiner), vec![(a3, Ok(addrs(&["h:1"])))]);

        // The Grape watch ends with the last watch of the name; its poll's answer is dropped.
        assert!(h.link.unwatch(a1));
        assert!(h.link.unwatch(a2));
        assert!(h.link.is_watched("a"));
        assert!(h.link.unwatch(a3));
        assert!(!h.link.is_watched("a"));
        h.reply(5, &next_a, 200, &watch_body(2, &["h:2"]));
        assert!(h.transmits().is_empty());
        assert!(watch_events(&mut h).is_empty());
        assert!(h.link.watch(t0, "c").is_ok(), "room again");
    }

    #[test]
    fn an_unwatched_long_poll_counts_until_it_ends_and_a_new_watch_takes_it_over() {
        let mut h = Harness::with(LinkConfig {
            max_watches: 1,
            ..LinkConfig::new("http://g:1")
        });
        let t0 = h.t0;
        let gone = h.link.watch(t0, "a").expect("ok");
        let (poll, _) = one_poll(&mut h);
        h.link.unwatch(gone);

        let other = h.link.watch(t0, "b");
        let back = h.link.watch(t0, "a").expect("takes the poll over");
        let sent_for_back = h.transmits();
        h.reply(10, &poll, 200, &watch_body(3, &["h:1"]));
        let (_, index) = one_poll(&mut h);

        assert_eq!(other, Err(CommandError::TooManyWatches));
        assert!(sent_for_back.is_empty(), "{sent_for_back:?}");
        assert_eq!(
            sets(&watch_events(&mut h)),
            vec![(back, Ok(addrs(&["h:1"])))]
        );
        assert_eq!(index, 3);
    }

    #[test]
    fn lookups_of_a_watched_name_use_its_set_without_asking_the_grape() {
        let mut h = Harness::new("http://g:1");
        let t0 = h.t0;
        let w = h.link.watch(t0, "svc").expect("ok");
        let (poll, _) = one_poll(&mut h);
        h.reply(0, &poll, 200, &watch_body(1, &["h:1", "h:2"]));
        let (poll, _) = one_poll(&mut h);

        // Far past the cache's 10 s: the watched set does not expire.
        let late = h.at(60_000);
        let found = h.link.lookup(late, "svc").expect("ok");
        let asked = h.transmits();
        h.reply(60_000, &poll, 200, &watch_body(2, &[]));
        let (_, _) = one_poll(&mut h);
        let nobody = h.link.lookup(late, "svc").expect("ok");
        h.link.unwatch(w);
        let after = h.link.lookup(late, "svc").expect("ok");
        let asked_after = h.http();

        assert!(asked.is_empty(), "{asked:?}");
        assert_eq!(
            h.events()[..2],
            [
                LinkEvent::Lookup {
                    id: found,
                    name: "svc".into(),
                    result: Ok(addrs(&["h:1", "h:2"]))
                },
                LinkEvent::Lookup {
                    id: nobody,
                    name: "svc".into(),
                    result: Err(LinkError::LookupEmpty)
                },
            ]
        );
        assert_eq!(h.link.stats().watch_hits, 2);
        assert_eq!(h.link.stats().requests, 1);
        assert_eq!(asked_after.len(), 1);
        assert_eq!(asked_after[0].url, "http://g:1/lookup");
        let _ = after;
    }

    fn ws_sent(h: &mut Harness) -> Vec<Value> {
        h.transmits()
            .into_iter()
            .map(|t| match t {
                Io::WsSend {
                    msg: WsMessage::Text(s),
                    ..
                } => serde_json::from_str(&s).expect("json"),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn ws_connect(h: &mut Harness) -> ConnId {
        match h.link.poll_transmit() {
            Some(Io::WsConnect { conn, .. }) => conn,
            other => panic!("connect first: {other:?}"),
        }
    }

    fn push(h: &mut Harness, conn: ConnId, rid: &Value, err: Value, peers: Value) {
        let msg = WsMessage::Text(json!([rid, err, peers]).to_string());
        let t0 = h.t0;
        h.link.handle_ws_message(t0, conn, &msg);
    }

    #[test]
    fn ws_watch_takes_pushes_and_is_sent_again_after_a_reconnect() {
        let mut h = Harness::new("ws://g:1");
        let t0 = h.t0;
        let w = h.link.watch(t0, "svc").expect("ok");
        let first = ws_connect(&mut h);
        h.link.handle_ws_open(t0, first);
        let sent = ws_sent(&mut h);
        let rid = sent[0][0].clone();
        push(&mut h, first, &rid, Value::Null, json!(["h:1"]));
        let initial = watch_events(&mut h);
        push(&mut h, first, &rid, Value::Null, json!(["h:1", "h:2"]));
        let grown = watch_events(&mut h);
        let hit = h.link.lookup(t0, "svc").expect("ok");

        h.link.handle_ws_closed(h.at(10), first);
        let right_after = h.transmits();
        let retry_at = h.link.poll_timeout().expect("a reconnect");
        h.link.handle_timeout(retry_at);
        let second = ws_connect(&mut h);
        h.link.handle_ws_open(retry_at, second);
        let resent = ws_sent(&mut h);
        let rid2 = resent[0][0].clone();
        push(&mut h, second, &rid2, Value::Null, json!(["h:2"]));
        let after = watch_events(&mut h);
        h.link.unwatch(w);
        let unwatch = ws_sent(&mut h);

        assert_eq!(sent, vec![json!([rid, "watch", "svc"])]);
        assert_eq!(sets(&initial), vec![(w, Ok(addrs(&["h:1"])))]);
        assert_eq!(sets(&grown), vec![(w, Ok(addrs(&["h:1", "h:2"])))]);
        assert_eq!(
            h.events(),
            vec![LinkEvent::Lookup {
                id: hit,
                name: "svc".into(),
                result: Ok(addrs(&["h:1", "h:2"]))
            }]
        );
        assert!(right_after.is_empty(), "{right_after:?}");
        assert_ne!(first, second);
        assert_ne!(rid, rid2);
        assert_eq!(resent, vec![json!([rid2, "watch", "svc"])]);
        assert_eq!(sets(&after), vec![(w, Ok(addrs(&["h:2"])))]);
        assert_eq!(unwatch.len(), 1);
        assert_eq!(
            (&unwatch[0][1], &unwatch[0][2]),
            (&json!("unwatch"), &json!("svc"))
        );
        assert_eq!(h.link.stats().watch_retries, 1);
    }

    #[test]
    fn ws_watch_refused_by_the_grape_ends() {
        let mut h = Harness::new("ws://g:1");
        let t0 = h.t0;
        let w = h.link.watch(t0, "svc").expect("ok");
        let conn = ws_connect(&mut h);
        h.link.handle_ws_open(t0, conn);
        let rid = ws_sent(&mut h)[0][0].clone();

        push(&mut h, conn, &rid, json!("ERR_REQ_NOTFOUND"), Value::Null);

        assert_eq!(
            sets(&watch_events(&mut h)),
            vec![(w, Err(LinkError::Grape("ERR_REQ_NOTFOUND".into())))]
        );
        assert!(!h.link.is_watched("svc"));
        h.link.handle_ws_closed(t0, conn);
        assert_eq!(h.link.poll_timeout(), None);
    }

    #[test]
    fn bad_grape_url_is_refused() {
        assert!(matches!(
            Link::new(LinkConfig::new("127.0.0.1:30001"), [42; 32]),
            Err(ConfigError::GrapeUrl(_))
        ));
    }
}
