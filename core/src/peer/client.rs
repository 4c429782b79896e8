//! The facade an adapter drives: a [`Link`], the RPC client and the subscriptions, with
//! one input side, one output side and one timer.
//!
//! Composition follows the house rule: `Client` drains its parts inside its own methods
//! (a lookup the RPC client asked for goes to it, not out as an event), so an adapter
//! never routes anything itself.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::dht::bep44::Target;
use crate::peer::error::{CommandError, ConfigError, LinkError, RpcError};
use crate::peer::link::{Link, LinkConfig, LinkEvent, LinkStats, Put, check_name};
use crate::peer::pubsub::{SubConfig, SubStats, Subs};
use crate::peer::rpc::{RequestOptions, Rpc, RpcConfig, RpcStats};
use crate::peer::sniff::Protocol;
use crate::peer::stream::{StreamOptions, StreamPlan};
use crate::peer::types::{
    CommandId, ConnId, HttpId, HttpResponse, Io, PeerAddr, SubscriptionId, TransportError, WatchId,
    WsMessage,
};
use crate::peer::watch::WatchEvent;

/// Settings of a [`Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The Link to the Grape.
    pub link: LinkConfig,
    /// Peer RPC.
    pub rpc: RpcConfig,
    /// Subscriptions.
    pub sub: SubConfig,
    /// User commands whose terminal event has not been polled yet, at most.
    pub max_pending: usize,
}

impl ClientConfig {
    /// Defaults for the Grape at `grape` (`http://host:port` or `ws://host:port`).
    pub fn new(grape: impl Into<String>) -> Self {
        ClientConfig {
            link: LinkConfig::new(grape),
            rpc: RpcConfig::default(),
            sub: SubConfig::default(),
            max_pending: 4096,
        }
    }
}

/// What a [`Client`] reports.
///
/// Every command's [`CommandId`] gets exactly one terminal event: `Link(Lookup | Announce |
/// Put | Get)`, `Reply` or `Map`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A Link command ended, or a scheduled announce round did.
    Link(LinkEvent),
    /// A request ended.
    Reply {
        /// The command.
        id: CommandId,
        /// The peer's result, or why there is none.
        result: Result<Value, RpcError>,
    },
    /// A map ended: one result per peer, in the order the peers were chosen.
    Map {
        /// The command.
        id: CommandId,
        /// Every result, or the first error (as Node's `async.map`).
        result: Result<Vec<Value>, RpcError>,
    },
    /// A subscription connected to a publisher.
    Subscribed {
        /// The subscription.
        sub: SubscriptionId,
        /// The publisher.
        addr: PeerAddr,
    },
    /// A published message, verbatim.
    Message {
        /// The subscription.
        sub: SubscriptionId,
        /// The message as the publisher sent it.
        msg: WsMessage,
    },
    /// A subscription lost (or could not reach) its publisher; it retries at `retry_at`.
    Disconnected {
        /// The subscription.
        sub: SubscriptionId,
        /// `ERR_TRANSPORT_CLOSE`, or why the lookup failed.
        error: LinkError,
        /// When the next lookup and connect start.
        retry_at: Instant,
    },
}

/// Counters of every part.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The Link's.
    pub link: LinkStats,
    /// The RPC client's.
    pub rpc: RpcStats,
    /// The subscriptions'.
    pub sub: SubStats,
}

impl ClientStats {
    /// These counters plus `other`'s: an adapter that spreads one client over several
    /// core `Client`s (one per core) reports their sum.
    #[must_use]
    pub fn plus(mut self, other: &ClientStats) -> ClientStats {
        // Destructured, so a new counter that is not summed fails to compile.
        let LinkStats {
            requests,
            coalesced,
            cache_hits,
            bad_frames,
            late_replies,
            dropped_events,
            watch_hits,
            watch_polls,
            watch_retries,
        } = &other.link;
        let link = &mut self.link;
        link.requests += requests;
        link.coalesced += coalesced;
        link.cache_hits += cache_hits;
        link.bad_frames += bad_frames;
        link.late_replies += late_replies;
        link.dropped_events += dropped_events;
        link.watch_hits += watch_hits;
        link.watch_polls += watch_polls;
        link.watch_retries += watch_retries;
        let RpcStats {
            attempts,
            bad_frames,
            late_replies,
            connects,
            unreached,
        } = &other.rpc;
        let rpc = &mut self.rpc;
        rpc.attempts += attempts;
        rpc.bad_frames += bad_frames;
        rpc.late_replies += late_replies;
        rpc.connects += connects;
        rpc.unreached += unreached;
        let SubStats {
            messages,
            dropped_messages,
            connects,
        } = &other.sub;
        let sub = &mut self.sub;
        sub.messages += messages;
        sub.dropped_messages += dropped_messages;
        sub.connects += connects;
        self
    }
}

/// Who waits for a lookup the Client started.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    User,
    Rpc(CommandId),
    Sub(SubscriptionId),
}

/// A Grenache client (sans-IO): Link, peer RPC and subscriptions. See the module docs of
/// [`crate::peer`] for the loop that drives it.
#[derive(Debug)]
pub struct Client {
    link: Link,
    rpc: Rpc,
    subs: Subs,
    /// Lookups started for the RPC client and subscriptions (user ones are not here).
    lookups: BTreeMap<CommandId, Waiter>,
    events: VecDeque<ClientEvent>,
    outstanding: usize,
    max_pending: usize,
    /// Seeded as [`Node`](crate::dht::Node)'s is: request ids, peer choice and jitter of
    /// the RPC client and subscriptions. The Link draws from its own, seeded from this.
    rng: ChaCha8Rng,
}

impl Client {
    /// A client for the Grape in `config.link.grape`. Everything random it does (request
    /// ids, peer choice, jitter) comes from a ChaCha8 RNG seeded with `seed`, so a run can
    /// be replayed; an adapter seeds it from the OS.
    ///
    /// # Errors
    /// [`ConfigError::GrapeUrl`] for a Grape URL that is not http(s) or ws(s).
    pub fn new(config: ClientConfig, seed: [u8; 32]) -> Result<Client, ConfigError> {
        let mut rng = ChaCha8Rng::from_seed(seed);
        let mut link_config = config.link;
        // The Client bounds user commands itself; the Link must also fit internal lookups.
        link_config.max_pending = config
            .max_pending
            .saturating_add(config.sub.max_subscriptions)
            .saturating_add(config.max_pending);
        Ok(Client {
            link: Link::new(link_config, rng.random())?,
            rpc: Rpc::new(config.rpc),
            subs: Subs::new(config.sub),
            lookups: BTreeMap::new(),
            events: VecDeque::new(),
            outstanding: 0,
            max_pending: config.max_pending,
            rng,
        })
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            link: self.link.stats().clone(),
            rpc: self.rpc.stats.clone(),
            sub: self.subs.stats.clone(),
        }
    }

    /// Looks `name` up; ends with `ClientEvent::Link(LinkEvent::Lookup)`.
    ///
    /// # Errors
    /// As [`Link::lookup`].
    pub fn lookup(&mut self, now: Instant, name: &str) -> Result<CommandId, CommandError> {
        self.reserve()?;
        let id = self.link.lookup(now, name);
        self.user_command(now, id)
    }

    /// Announces once; ends with `ClientEvent::Link(LinkEvent::Announce)`.
    ///
    /// # Errors
    /// As [`Link::announce`].
    pub fn announce(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
    ) -> Result<CommandId, CommandError> {
        self.reserve()?;
        let id = self.link.announce(now, name, port);
        self.user_command(now, id)
    }

    /// Withdraws an announce (and stops its schedule); ends with
    /// `ClientEvent::Link(LinkEvent::Unannounce)`.
    ///
    /// # Errors
    /// As [`Link::unannounce`].
    pub fn unannounce(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
    ) -> Result<CommandId, CommandError> {
        self.reserve()?;
        let id = self.link.unannounce(now, name, port);
        self.user_command(now, id)
    }

    /// Announces on a schedule (see [`crate::peer::Link`]); rounds report
    /// `ClientEvent::Link(LinkEvent::Announcing)`. `false` if already scheduled.
    ///
    /// # Errors
    /// As [`Link::start_announcing`].
    pub fn start_announcing(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
    ) -> Result<bool, CommandError> {
        let started = self.link.start_announcing(now, name, port);
        self.drain(now);
        started
    }

    /// Stops a schedule; `false` if there was none.
    pub fn stop_announcing(&mut self, name: &str, port: u16) -> bool {
        self.link.stop_announcing(name, port)
    }

    /// Stores a value; ends with `ClientEvent::Link(LinkEvent::Put)`.
    ///
    /// # Errors
    /// [`CommandError::TooManyPending`].
    pub fn put(&mut self, now: Instant, put: Put) -> Result<CommandId, CommandError> {
        self.reserve()?;
        let id = self.link.put(now, put);
        self.user_command(now, id)
    }

    /// Reads an item; ends with `ClientEvent::Link(LinkEvent::Get)`.
    ///
    /// # Errors
    /// [`CommandError::TooManyPending`].
    pub fn get(
        &mut self,
        now: Instant,
        target: Target,
        salt: Option<&str>,
    ) -> Result<CommandId, CommandError> {
        self.reserve()?;
        let id = self.link.get(now, target, salt);
        self.user_command(now, id)
    }

    /// Sends `payload` to one peer serving `name` (looked up first); ends with
    /// [`ClientEvent::Reply`].
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::PayloadTooLarge`],
    /// [`CommandError::TooManyPending`].
    pub fn request(
        &mut self,
        now: Instant,
        name: &str,
        payload: &Value,
        opts: &RequestOptions,
    ) -> Result<CommandId, CommandError> {
        self.call(now, name, payload, opts, false)
    }

    /// Sends `payload` to every peer serving `name` (or `opts.limit` of them); ends with
    /// [`ClientEvent::Map`].
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn map(
        &mut self,
        now: Instant,
        name: &str,
        payload: &Value,
        opts: &RequestOptions,
    ) -> Result<CommandId, CommandError> {
        self.call(now, name, payload, opts, true)
    }

    /// Subscribes to `channel`: look it up, connect, receive, reconnect when it drops.
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::TooManySubscriptions`].
    pub fn subscribe(
        &mut self,
        now: Instant,
        channel: &str,
    ) -> Result<SubscriptionId, CommandError> {
        check_name(channel)?;
        if self.subs.is_full() {
            return Err(CommandError::TooManySubscriptions);
        }
        let sub = SubscriptionId(self.link.ids.next());
        self.subs.subscribe(sub, channel);
        self.drain(now);
        Ok(sub)
    }

    /// Ends a subscription (closing its connection); `false` if unknown.
    pub fn unsubscribe(&mut self, sub: SubscriptionId) -> bool {
        self.subs.unsubscribe(sub)
    }

    /// Follows the peers serving `name` (see [`Link::watch`]); reports come from
    /// [`Client::poll_watch`]. While the set is current, requests, maps and subscriptions
    /// to `name` use it instead of a lookup: no request to the Grape, no cache expiry, and
    /// an empty set fails them at once with `ERR_GRAPE_LOOKUP_EMPTY`, as a lookup that
    /// found nobody does.
    ///
    /// # Errors
    /// As [`Link::watch`].
    pub fn watch(&mut self, now: Instant, name: &str) -> Result<WatchId, CommandError> {
        self.link.watch(now, name)
    }

    /// Ends a watch (see [`Link::unwatch`]); `false` if unknown or ended.
    pub fn unwatch(&mut self, watch: WatchId) -> bool {
        self.link.unwatch(watch)
    }

    /// The next report of a watch (see [`Link::poll_watch`]).
    #[must_use]
    pub fn poll_watch(&mut self) -> Option<WatchEvent> {
        self.link.poll_watch()
    }

    /// Takes the reply to a [`Io::Http`]; unknown ids are ignored.
    pub fn handle_http_reply(
        &mut self,
        now: Instant,
        http: HttpId,
        reply: Result<HttpResponse, TransportError>,
    ) {
        if self.link.owns_http(http) {
            self.link.handle_http_reply(now, http, reply);
        } else {
            // Counts it as late when nobody waits for it any more.
            self.rpc
                .handle_http_reply(now, http, reply, &mut self.link.ids, &mut self.rng);
        }
        self.drain(now);
    }

    /// A connection from [`Io::WsConnect`] is open.
    pub fn handle_ws_open(&mut self, now: Instant, conn: ConnId) {
        if self.link.owns_conn(conn) {
            self.link.handle_ws_open(now, conn);
        } else if self.rpc.owns_conn(conn) {
            self.rpc.handle_ws_open(now, conn);
        } else if self.subs.owns_conn(conn) {
            self.subs.handle_ws_open(now, conn);
        }
        self.drain(now);
    }

    /// A message arrived on a connection.
    pub fn handle_ws_message(&mut self, now: Instant, conn: ConnId, msg: WsMessage) {
        if self.link.owns_conn(conn) {
            self.link.handle_ws_message(now, conn, &msg);
        } else if self.rpc.owns_conn(conn) {
            self.rpc
                .handle_ws_message(now, conn, &msg, &mut self.link.ids, &mut self.rng);
        } else if self.subs.owns_conn(conn) {
            self.subs.handle_ws_message(conn, msg);
        }
        self.drain(now);
    }

    /// A connection closed, or could not be opened.
    pub fn handle_ws_closed(&mut self, now: Instant, conn: ConnId) {
        if self.link.owns_conn(conn) {
            self.link.handle_ws_closed(now, conn);
        } else if self.rpc.owns_conn(conn) {
            self.rpc
                .handle_closed(now, conn, &mut self.link.ids, &mut self.rng);
        } else if let Some(channel) = self.subs.handle_closed(now, conn, &mut self.rng) {
            self.link.forget_lookup(&channel);
        }
        self.drain(now);
    }

    /// A connection from [`Io::WsConnect`] failed to open because the server answered in
    /// protocol `met` (the adapter's [`Protocol::sniff`] of the answer, or
    /// [`Protocol::Http`] for an HTTP answer without the upgrade). Requests waiting on it
    /// fail with `ERR_WRONG_TRANSPORT` and go on to the next peer; for anything else it
    /// is a close.
    pub fn handle_ws_wrong_transport(&mut self, now: Instant, conn: ConnId, met: Protocol) {
        if self.rpc.owns_conn(conn) {
            self.rpc
                .handle_wrong_transport(now, conn, met, &mut self.link.ids, &mut self.rng);
            self.drain(now);
        } else {
            self.handle_ws_closed(now, conn);
        }
    }

    /// Plans one attempt of a request stream to `name`: one of `peers` (a lookup's
    /// answer; leave out those already tried) chosen as a request's peer would be, and a
    /// fresh rid. The adapter sends the body (see [`StreamPlan`]); nothing here waits for
    /// it, so a stream holds no command slot. `None` when `peers` is empty.
    pub fn plan_stream(
        &mut self,
        now: Instant,
        name: &str,
        peers: &[PeerAddr],
        opts: &StreamOptions,
    ) -> Option<StreamPlan> {
        self.rpc.plan_stream(now, name, peers, opts, &mut self.rng)
    }

    /// A stream's peer could not be reached (nothing was sent): later requests and
    /// streams leave it out for [`RpcConfig::dead_peer_ttl`](crate::peer::RpcConfig).
    pub fn stream_unreached(&mut self, now: Instant, peer: &PeerAddr) {
        self.rpc.stream_unreached(now, peer);
    }

    /// A connection from [`Io::TcpConnect`] is open.
    pub fn handle_tcp_open(&mut self, now: Instant, conn: ConnId) {
        self.rpc.handle_tcp_open(now, conn);
        self.drain(now);
    }

    /// Bytes were read on a connection from [`Io::TcpConnect`].
    pub fn handle_tcp_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        if self.rpc.owns_conn(conn) {
            self.rpc
                .handle_tcp_data(now, conn, bytes, &mut self.link.ids, &mut self.rng);
        } else if let Some(channel) = self.subs.handle_tcp_data(now, conn, bytes, &mut self.rng) {
            self.link.forget_lookup(&channel);
        }
        self.drain(now);
    }

    /// A connection from [`Io::TcpConnect`] closed, or could not be opened.
    pub fn handle_tcp_closed(&mut self, now: Instant, conn: ConnId) {
        self.handle_ws_closed(now, conn);
    }

    /// Fires whatever is due; does nothing when nothing is.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now);
        self.rpc
            .handle_timeout(now, &mut self.link.ids, &mut self.rng);
        for channel in self.subs.handle_timeout(now, &mut self.rng) {
            self.link.forget_lookup(&channel);
        }
        self.drain(now);
    }

    /// The next network action.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Io> {
        self.link
            .poll_transmit()
            .or_else(|| self.rpc.transmits.pop_front())
            .or_else(|| self.subs.transmits.pop_front())
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let event = self.events.pop_front()?;
        match &event {
            ClientEvent::Link(LinkEvent::Announcing { .. })
            | ClientEvent::Subscribed { .. }
            | ClientEvent::Disconnected { .. } => {}
            ClientEvent::Message { .. } => self.subs.message_polled(),
            _ => self.outstanding = self.outstanding.saturating_sub(1),
        }
        Some(event)
    }

    /// When [`Client::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.link.poll_timeout(),
            self.rpc.poll_timeout(),
            self.subs.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn reserve(&self) -> Result<(), CommandError> {
        if self.outstanding >= self.max_pending {
            return Err(CommandError::TooManyPending);
        }
        Ok(())
    }

    fn user_command(
        &mut self,
        now: Instant,
        id: Result<CommandId, CommandError>,
    ) -> Result<CommandId, CommandError> {
        let id = id?;
        self.outstanding += 1;
        self.drain(now);
        Ok(id)
    }

    fn call(
        &mut self,
        now: Instant,
        name: &str,
        payload: &Value,
        opts: &RequestOptions,
        map: bool,
    ) -> Result<CommandId, CommandError> {
        self.reserve()?;
        check_name(name)?;
        let json = self.rpc.prepare(name, payload)?;
        let lookup = self.link.lookup(now, name)?;
        let id = CommandId(self.link.ids.next());
        self.outstanding += 1;
        self.rpc.begin(id, name, json, opts, map);
        self.lookups.insert(lookup, Waiter::Rpc(id));
        self.drain(now);
        Ok(id)
    }

    /// Moves the parts' output along until nothing more happens: lookups to whoever
    /// waits for them, lookups the subscriptions need to the Link, events to the queue.
    fn drain(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(event) = self.link.poll_event() {
                moved = true;
                self.route(now, event);
            }
            while let Some((sub, channel)) = self.subs.lookups.pop_front() {
                moved = true;
                match self.link.lookup(now, &channel) {
                    Ok(id) => {
                        self.lookups.insert(id, Waiter::Sub(sub));
                    }
                    Err(e) => {
                        tracing::warn!(%sub, error = %e, "subscriber lookup refused");
                        self.subs.lookup_refused(now, sub, &mut self.rng);
                    }
                }
            }
            while let Some((call, name)) = self.rpc.lookups.pop_front() {
                moved = true;
                self.link.forget_lookup(&name);
                match self.link.lookup(now, &name) {
                    Ok(id) => {
                        self.lookups.insert(id, Waiter::Rpc(call));
                    }
                    Err(e) => {
                        tracing::warn!(%call, error = %e, "request's fresh lookup refused");
                        let refused = Err(LinkError::LookupEmpty);
                        (self.rpc).handle_lookup(
                            now,
                            call,
                            refused,
                            &mut self.link.ids,
                            &mut self.rng,
                        );
                    }
                }
            }
            if !moved {
                break;
            }
        }
        self.events.extend(self.rpc.events.drain(..));
        self.events.extend(self.subs.events.drain(..));
    }

    fn route(&mut self, now: Instant, event: LinkEvent) {
        let waiter = match &event {
            LinkEvent::Lookup { id, .. }
            | LinkEvent::Announce { id, .. }
            | LinkEvent::Unannounce { id, .. }
            | LinkEvent::Put { id, .. }
            | LinkEvent::Get { id, .. } => self.lookups.remove(id).unwrap_or(Waiter::User),
            _ => Waiter::User,
        };
        match (waiter, event) {
            (Waiter::Rpc(call), LinkEvent::Lookup { result, .. }) => {
                self.rpc
                    .handle_lookup(now, call, result, &mut self.link.ids, &mut self.rng);
            }
            (Waiter::Sub(sub), LinkEvent::Lookup { result, .. }) => {
                self.subs
                    .handle_lookup(now, sub, result, &mut self.link.ids, &mut self.rng);
            }
            (_, LinkEvent::Announcing { .. }) if self.events.len() >= self.max_pending => {
                // Nobody polls: a round's report is informational, so it goes first.
                tracing::debug!("dropping an announce round report");
            }
            (_, event) => self.events.push_back(ClientEvent::Link(event)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::framing::{gunzip, gzip};
    use crate::peer::rpc::RpcTransport;
    use crate::peer::types::HttpRequest;
    use serde_json::json;
    use std::time::Duration;

    const GRAPE: &str = "http://127.0.0.1:30001";

    struct Harness {
        client: Client,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(ClientConfig::new(GRAPE))
        }

        fn ws() -> Self {
            let mut config = ClientConfig::new(GRAPE);
            config.rpc.transport = RpcTransport::Ws;
            Self::with(config)
        }

        fn zmq() -> Self {
            let mut config = ClientConfig::new(GRAPE);
            config.rpc.transport = RpcTransport::Zmq;
            Self::with(config)
        }

        fn with(config: ClientConfig) -> Self {
            Harness {
                client: Client::new(config, [11; 32]).expect("valid"),
                now: Instant::now(),
            }
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.client.handle_timeout(self.now);
        }

        fn transmits(&mut self) -> Vec<Io> {
            std::iter::from_fn(|| self.client.poll_transmit()).collect()
        }

        fn events(&mut self) -> Vec<ClientEvent> {
            std::iter::from_fn(|| self.client.poll_event()).collect()
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

        fn request(&mut self, name: &str, payload: Value, opts: RequestOptions) -> CommandId {
            let now = self.now;
            self.client
                .request(now, name, &payload, &opts)
                .expect("accepted")
        }

        fn map(&mut self, name: &str, opts: RequestOptions) -> CommandId {
            let now = self.now;
            self.client
                .map(now, name, &json!("ping"), &opts)
                .expect("accepted")
        }

        fn reply(&mut self, req: &HttpRequest, status: u16, body: Vec<u8>) {
            let now = self.now;
            self.client
                .handle_http_reply(now, req.id, Ok(HttpResponse { status, body }));
        }

        /// Answers the pending Grape lookup with `peers`.
        fn grape_lookup(&mut self, peers: &[&str]) {
            let reqs = self.http();
            assert_eq!(reqs.len(), 1, "one lookup: {reqs:?}");
            assert_eq!(reqs[0].url, format!("{GRAPE}/lookup"));
            self.reply(&reqs[0], 200, json!(peers).to_string().into_bytes());
        }

        /// Answers a peer request with `[rid, null, result]`.
        fn answer(&mut self, req: &HttpRequest, result: Value) {
            let rid = frame_rid(&req.body);
            self.reply(req, 200, encode_reply_for(&rid, Ok(&result)));
        }

        fn send_ws(&mut self, conn: ConnId, text: String) {
            let now = self.now;
            self.client
                .handle_ws_message(now, conn, WsMessage::Text(text));
        }
    }

    fn encode_reply_for(rid: &str, result: Result<&Value, &str>) -> Vec<u8> {
        crate::peer::framing::encode_reply(rid, result)
    }

    fn frame_rid(frame: &[u8]) -> String {
        let v: Value = serde_json::from_slice(frame).expect("json frame");
        v[0].as_str().expect("rid").to_owned()
    }

    fn reply_of(events: &[ClientEvent], want: CommandId) -> Result<Value, RpcError> {
        let found: Vec<&Result<Value, RpcError>> = events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Reply { id, result } if *id == want => Some(result),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "exactly one reply for {want:?}: {events:?}");
        found[0].clone()
    }

    #[test]
    fn http_request_end_to_end_is_byte_exact() {
        let mut h = Harness::new();
        let id = h.request(
            "rpc_test",
            json!({"action": "ping"}),
            RequestOptions::default(),
        );

        h.grape_lookup(&["127.0.0.1:1337"]);
        let reqs = h.http();
        let rid = frame_rid(&reqs[0].body);
        h.answer(&reqs[0], json!("pong"));

        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].url, "http://127.0.0.1:1337/");
        assert_eq!(reqs[0].headers, vec![("grc-compress", "none")]);
        assert_eq!(
            reqs[0].body,
            format!(r#"["{rid}","rpc_test",{{"action":"ping"}}]"#).as_bytes()
        );
        assert_eq!(reply_of(&h.events(), id), Ok(json!("pong")));
        assert_eq!(h.client.poll_timeout(), None);
    }

    #[test]
    fn requests_go_round_robin_and_reuse_the_cached_lookup() {
        let mut h = Harness::new();
        let first = h.request("svc", json!(0), RequestOptions::default());
        h.grape_lookup(&["h:3", "h:1", "h:2"]);
        let mut urls = vec![h.http().remove(0).url];

        for i in 1..4 {
            h.request("svc", json!(i), RequestOptions::default());
            urls.push(h.http().remove(0).url);
        }

        assert_eq!(
            urls,
            ["http://h:1/", "http://h:2/", "http://h:3/", "http://h:1/"]
        );
        assert!(h.events().is_empty(), "{first:?} still pending");
    }

    #[test]
    fn requests_to_a_watched_name_use_the_watched_set_without_lookups() {
        let mut config = ClientConfig::new(GRAPE);
        config.link.lookup_cache_ttl = Duration::ZERO;
        let mut h = Harness::with(config);
        let now = h.now;
        let watch = h.client.watch(now, "svc").expect("ok");
        let poll = h.http().remove(0);
        h.reply(&poll, 200, br#"{"index":1,"peers":["h:1","h:2"]}"#.to_vec());
        let poll = h.http().remove(0);
        let set = h.client.poll_watch();

        let mut urls = Vec::new();
        for i in 0..4 {
            h.advance(Duration::from_secs(5));
            h.request("svc", json!(i), RequestOptions::default());
            let reqs = h.http();
            assert_eq!(reqs.len(), 1, "the request alone, no lookup: {reqs:?}");
            urls.push(reqs[0].url.clone());
            h.answer(&reqs[0], json!(i));
        }
        // h:1 stops: the Grape's next answer leaves h:2 only, and requests follow at once.
        h.reply(&poll, 200, br#"{"index":2,"peers":["h:2"]}"#.to_vec());
        let _next_poll = h.http();
        let after = h.request("svc", json!("after"), RequestOptions::default());
        let to_h2 = h.http();
        h.answer(&to_h2[0], json!("ok"));
        let events = h.events();

        assert_eq!(
            set.map(|e| (e.watch, e.peers.map(|p| p.len()))),
            Some((watch, Ok(2)))
        );
        assert_eq!(
            urls,
            ["http://h:1/", "http://h:2/", "http://h:1/", "http://h:2/"]
        );
        assert_eq!(to_h2.len(), 1);
        assert_eq!(to_h2[0].url, "http://h:2/");
        assert_eq!(reply_of(&events, after), Ok(json!("ok")));
        let stats = h.client.stats();
        assert_eq!(stats.link.requests, 0, "no lookup went to the Grape");
        assert_eq!(stats.link.watch_hits, 5);
    }

    #[test]
    fn an_emptied_watched_set_fails_requests_at_once_as_lookup_empty() {
        let mut h = Harness::new();
        let now = h.now;
        h.client.watch(now, "svc").expect("ok");
        let poll = h.http().remove(0);
        h.reply(&poll, 200, br#"{"index":4,"peers":[]}"#.to_vec());
        let _next_poll = h.http();

        let id = h.request("svc", json!(1), RequestOptions::default());

        assert!(h.transmits().is_empty());
        assert_eq!(
            reply_of(&h.events(), id),
            Err(RpcError::Lookup(LinkError::LookupEmpty))
        );
    }

    #[test]
    fn no_peer_is_err_grape_lookup_empty() {
        let mut h = Harness::new();
        let id = h.request("svc", json!(1), RequestOptions::default());

        h.grape_lookup(&[]);

        let result = reply_of(&h.events(), id);
        assert_eq!(result, Err(RpcError::Lookup(LinkError::LookupEmpty)));
        assert_eq!(
            result.expect_err("error").to_string(),
            "ERR_GRAPE_LOOKUP_EMPTY"
        );
    }

    #[test]
    fn silent_server_gives_err_timeout_at_the_deadline() {
        let mut h = Harness::new();
        let opts = RequestOptions::default().timeout(Duration::from_secs(5));
        let id = h.request("svc", json!(1), opts);
        h.grape_lookup(&["h:1"]);
        let req = h.http().remove(0);

        assert_eq!(req.deadline, h.now + Duration::from_secs(5));
        h.advance(Duration::from_millis(4_999));
        assert!(h.events().is_empty());
        h.advance(Duration::from_millis(1));
        let events = h.events();
        h.answer(&req, json!("too late"));

        assert_eq!(reply_of(&events, id), Err(RpcError::Timeout));
        assert_eq!(RpcError::Timeout.to_string(), "ERR_TIMEOUT");
        assert!(h.events().is_empty());
        assert_eq!(h.client.stats().rpc.late_replies, 1);
    }

    #[test]
    fn default_timeout_is_a_minute() {
        let mut h = Harness::new();
        h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);

        let req = h.http().remove(0);

        assert_eq!(req.deadline, h.now + Duration::from_secs(60));
    }

    #[test]
    fn retries_go_to_the_next_peer() {
        let mut h = Harness::new();
        let opts = RequestOptions::default()
            .attempts(2)
            .timeout(Duration::from_secs(1));
        let id = h.request("svc", json!(1), opts);
        h.grape_lookup(&["h:1", "h:2"]);
        let first = h.http().remove(0);

        h.advance(Duration::from_secs(1));
        let second = h.http().remove(0);
        h.answer(&second, json!("ok"));

        assert_eq!(first.url, "http://h:1/");
        assert_eq!(second.url, "http://h:2/");
        assert_ne!(frame_rid(&first.body), frame_rid(&second.body));
        assert_eq!(reply_of(&h.events(), id), Ok(json!("ok")));
    }

    #[test]
    fn a_retry_avoids_the_peer_that_failed() {
        let mut h = Harness::new();
        let a = h.request("svc", json!("a"), RequestOptions::default().attempts(2));
        h.grape_lookup(&["h:1", "h:2", "h:3"]);
        let first = h.http().remove(0);
        // Two more requests move the shared round-robin cursor round to h:1 again.
        h.request("svc", json!("b"), RequestOptions::default());
        h.request("svc", json!("c"), RequestOptions::default());
        let _ = h.http();

        h.reply(&first, 500, b"gone".to_vec());
        let retry = h.http().remove(0);
        h.answer(&retry, json!("ok"));

        assert_eq!(first.url, "http://h:1/");
        assert_ne!(retry.url, "http://h:1/");
        assert_eq!(reply_of(&h.events(), a), Ok(json!("ok")));
    }

    /// Reports the transport failure `err` for `req`.
    fn fail(h: &mut Harness, req: &HttpRequest, err: TransportError) {
        let now = h.now;
        h.client.handle_http_reply(now, req.id, Err(err));
    }

    /// A request to `svc`, served by h:1 and h:2, with its first try out (to h:1).
    fn sent_to_one_of_two() -> (Harness, CommandId, HttpRequest) {
        let mut h = Harness::new();
        let id = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2"]);
        let first = h.http().remove(0);
        (h, id, first)
    }

    #[test]
    fn a_refused_connect_goes_to_the_next_peer_at_once() {
        let (mut h, id, first) = sent_to_one_of_two();

        fail(
            &mut h,
            &first,
            TransportError::unsent("connect h:1: refused"),
        );
        let events = h.events();
        let next = h.http().remove(0);
        h.answer(&next, json!("ok"));

        assert_eq!(first.url, "http://h:1/");
        assert!(
            events.is_empty(),
            "no failure reaches the caller: {events:?}"
        );
        assert_eq!(next.url, "http://h:2/");
        assert_eq!(reply_of(&h.events(), id), Ok(json!("ok")));
        assert_eq!(h.client.stats().rpc.unreached, 1);
    }

    #[test]
    fn a_dead_peer_is_skipped_for_a_while() {
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.dead_peer_ttl = Duration::from_secs(10);
        config.link.lookup_cache_ttl = Duration::from_secs(60);
        let mut h = Harness::with(config);
        h.request("svc", json!(0), RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2"]);
        let first = h.http().remove(0);
        fail(&mut h, &first, TransportError::unsent("refused"));
        let _ = h.http();

        let mut urls = Vec::new();
        for i in 1..4 {
            h.request("svc", json!(i), RequestOptions::default());
            urls.push(h.http().remove(0).url);
        }
        h.advance(Duration::from_secs(10));
        let mut later = Vec::new();
        for i in 4..6 {
            h.request("svc", json!(i), RequestOptions::default());
            later.push(h.http().remove(0).url);
        }

        assert_eq!(urls, ["http://h:2/"; 3]);
        assert!(later.contains(&"http://h:1/".to_owned()), "{later:?}");
    }

    #[test]
    fn a_request_that_may_have_arrived_is_not_sent_again() {
        let (mut h, id, first) = sent_to_one_of_two();

        fail(&mut h, &first, TransportError::new("h:1: connection reset"));

        assert!(h.transmits().is_empty(), "nothing is re-sent");
        assert_eq!(
            reply_of(&h.events(), id),
            Err(RpcError::Request("h:1: connection reset".into()))
        );
        assert_eq!(h.client.stats().rpc.unreached, 0);
    }

    #[test]
    fn when_every_peer_is_dead_each_is_tried_once_then_it_fails() {
        let mut h = Harness::new();
        let id = h.request("svc", json!(1), RequestOptions::default().attempts(5));
        h.grape_lookup(&["h:1", "h:2", "h:3"]);

        let mut tried = Vec::new();
        let mut refreshes = 0;
        while let Some(req) = h.http().pop() {
            if req.url.ends_with("/lookup") {
                // Every peer refused: the Grape is asked again, and lists the same ones.
                refreshes += 1;
                h.reply(&req, 200, br#"["h:1","h:2","h:3"]"#.to_vec());
                continue;
            }
            tried.push(req.url.clone());
            let err = TransportError::unsent(format!("connect {}: refused", req.url));
            fail(&mut h, &req, err);
        }
        tried.sort();

        assert_eq!(tried, ["http://h:1/", "http://h:2/", "http://h:3/"]);
        assert_eq!(refreshes, 1);
        let result = reply_of(&h.events(), id);
        assert!(
            matches!(&result, Err(RpcError::Request(m)) if m.contains("refused")),
            "{result:?}"
        );
        // Dead as they all are, the next request still tries one.
        h.request("svc", json!(2), RequestOptions::default());
        assert_eq!(h.http().len(), 1);
    }

    #[test]
    fn when_every_cached_peer_refuses_a_fresh_lookup_finds_the_restarted_one() {
        let mut config = ClientConfig::new(GRAPE);
        config.link.lookup_cache_ttl = Duration::from_secs(60);
        let mut h = Harness::with(config);
        h.request("svc", json!(0), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let first = h.http().remove(0);
        h.answer(&first, json!("old"));
        let _ = h.events();
        // The server restarts on another port; the cached lookup still names the old one.
        let id = h.request("svc", json!(1), RequestOptions::default());
        let stale = h.http().remove(0);

        fail(
            &mut h,
            &stale,
            TransportError::unsent("connect h:1: refused"),
        );
        h.grape_lookup(&["h:2"]);
        let fresh = h.http().remove(0);
        h.answer(&fresh, json!("new"));

        assert_eq!(stale.url, "http://h:1/");
        assert_eq!(fresh.url, "http://h:2/");
        assert_eq!(reply_of(&h.events(), id), Ok(json!("new")));
        // The fresh answer replaced the stale one in the cache.
        h.request("svc", json!(2), RequestOptions::default());
        assert_eq!(h.http().remove(0).url, "http://h:2/");
    }

    #[test]
    fn a_map_fails_on_a_dead_peer_and_the_next_one_skips_it() {
        let mut h = Harness::new();
        let first = h.map("svc", RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2"]);
        let reqs = h.http();
        h.answer(&reqs[1], json!(2));
        fail(
            &mut h,
            &reqs[0],
            TransportError::unsent("connect h:1: refused"),
        );
        let failed = h.events();

        let second = h.map("svc", RequestOptions::default());
        let again = h.http();
        h.answer(&again[0], json!(2));

        assert_eq!(
            failed,
            vec![ClientEvent::Map {
                id: first,
                result: Err(RpcError::Request("connect h:1: refused".into()))
            }]
        );
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].url, "http://h:2/");
        assert_eq!(
            h.events(),
            vec![ClientEvent::Map {
                id: second,
                result: Ok(vec![json!(2)])
            }]
        );
    }

    #[test]
    fn ws_connect_refused_goes_to_the_next_peer() {
        let mut h = Harness::ws();
        let id = h.request("svc", json!("a"), RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2"]);
        let Some(Io::WsConnect { conn, url }) = h.client.poll_transmit() else {
            panic!("connect");
        };
        let now = h.now;

        h.client.handle_ws_closed(now, conn);
        let events = h.events();
        let Some(Io::WsConnect {
            conn: next,
            url: next_url,
        }) = h.client.poll_transmit()
        else {
            panic!("a connect to the next peer");
        };
        h.client.handle_ws_open(now, next);
        let Some(Io::WsSend { msg, .. }) = h.client.poll_transmit() else {
            panic!("send");
        };
        let rid = frame_rid(msg.as_bytes());
        h.send_ws(next, format!(r#"["{rid}",null,"A"]"#));

        assert_eq!(url, "ws://h:1/ws");
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(next_url, "ws://h:2/ws");
        assert_eq!(reply_of(&h.events(), id), Ok(json!("A")));
    }

    #[test]
    fn ws_reset_after_the_request_went_out_is_an_error() {
        let mut h = Harness::ws();
        let id = h.request("svc", json!("a"), RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2"]);
        let Some(Io::WsConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("connect");
        };
        let now = h.now;
        h.client.handle_ws_open(now, conn);
        assert!(matches!(h.client.poll_transmit(), Some(Io::WsSend { .. })));

        h.client.handle_ws_closed(now, conn);

        assert!(h.transmits().is_empty(), "nothing is re-sent");
        assert_eq!(reply_of(&h.events(), id), Err(RpcError::TransportClose));
    }

    #[test]
    fn zmq_connect_refused_or_handshake_unfinished_goes_to_the_next_peer() {
        let mut h = Harness::zmq();
        let id = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2", "h:3"]);
        let now = h.now;
        // A connect asked for, with the bytes to write once it opens.
        let connect = |h: &mut Harness| -> (ConnId, String, Vec<u8>) {
            let mut found = None;
            let mut bytes = Vec::new();
            for t in h.transmits() {
                match t {
                    Io::TcpConnect { conn, addr } => found = Some((conn, addr.to_string())),
                    Io::TcpSend { bytes: b, .. } => bytes.extend_from_slice(&b),
                    other => panic!("{other:?}"),
                }
            }
            let (conn, addr) = found.expect("a connect");
            (conn, addr, bytes)
        };
        let (refused, a, _) = connect(&mut h);

        // Refused: never opened.
        h.client.handle_tcp_closed(now, refused);
        let (half, b, _) = connect(&mut h);
        // Opened, then closed before the ZMTP handshake let the request out.
        h.client.handle_tcp_open(now, half);
        h.client.handle_tcp_closed(now, half);
        let (good, c, greeting) = connect(&mut h);
        h.client.handle_tcp_open(now, good);
        let mut server = crate::peer::ZmqServerConn::new(1 << 20);
        server.handle_input(&greeting).expect("a greeting");
        zmq_pump(&mut h, good, &mut server);
        let req = server.poll_request().expect("the request");
        server.reply(&req.rid, Ok(&json!("C"))).expect("reply");
        zmq_pump(&mut h, good, &mut server);

        let mut tried = vec![a, b, c];
        tried.sort();
        assert_eq!(tried, ["h:1", "h:2", "h:3"]);
        assert_eq!(reply_of(&h.events(), id), Ok(json!("C")));
        assert_eq!(h.client.stats().rpc.unreached, 2);
    }

    #[test]
    fn remote_and_transport_errors_read_like_node() {
        let mut h = Harness::new();
        let a = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let ra = h.http().remove(0);
        let b = h.request("svc", json!(2), RequestOptions::default());
        let rb = h.http().remove(0);
        let c = h.request("svc", json!(3), RequestOptions::default());
        let rc = h.http().remove(0);

        let rid = frame_rid(&ra.body);
        h.reply(&ra, 200, encode_reply_for(&rid, Err("ERR_BAD_THING")));
        h.reply(&rb, 500, b"boom".to_vec());
        let now = h.now;
        h.client
            .handle_http_reply(now, rc.id, Err(TransportError::new("connect ECONNREFUSED")));

        let events = h.events();
        let msg = |id| reply_of(&events, id).expect_err("an error").to_string();
        assert_eq!(msg(a), "ERR_BAD_THING");
        assert_eq!(msg(b), "ERR_REQUEST_GENERIC: boom");
        assert_eq!(msg(c), "ERR_REQUEST_GENERIC: connect ECONNREFUSED");
    }

    #[test]
    fn malformed_replies_give_typed_errors() {
        let mut h = Harness::new();
        let a = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let ra = h.http().remove(0);
        let b = h.request("svc", json!(2), RequestOptions::default());
        let rb = h.http().remove(0);
        let c = h.request("svc", json!(3), RequestOptions::default());
        let rc = h.http().remove(0);
        let d = h.request("svc", json!(4), RequestOptions::default());
        let rd = h.http().remove(0);

        h.reply(&ra, 200, b"<html>".to_vec());
        h.reply(&rb, 200, br#"["another-rid",null,1]"#.to_vec());
        h.reply(&rc, 200, br#"{"rid":1}"#.to_vec());
        let lone = format!(r#"["{}",null,"\ud800"]"#, frame_rid(&rd.body));
        h.reply(&rd, 200, lone.into_bytes());

        let events = h.events();
        assert_eq!(reply_of(&events, a), Err(RpcError::ReplyEmpty));
        assert_eq!(reply_of(&events, b), Err(RpcError::ReplyInvalid));
        assert_eq!(reply_of(&events, c), Err(RpcError::ReplyInvalid));
        assert_eq!(
            reply_of(&events, d),
            Err(RpcError::ReplyPayload(
                crate::peer::PayloadError::LoneSurrogate
            ))
        );
    }

    #[test]
    fn gzip_requests_and_replies() {
        let mut h = Harness::new();
        let opts = RequestOptions::default().compress(true);
        let a = h.request("svc", json!({"big": "z".repeat(500)}), opts.clone());
        h.grape_lookup(&["h:1"]);
        let ra = h.http().remove(0);
        let b = h.request("svc", json!(1), opts);
        let rb = h.http().remove(0);

        let plain = gunzip(&ra.body, 1 << 20).expect("gzip body");
        let rid = frame_rid(&plain);
        h.reply(&ra, 200, gzip(&encode_reply_for(&rid, Ok(&json!(7)))));
        let rid_b = frame_rid(&gunzip(&rb.body, 1 << 20).expect("gzip body"));
        h.reply(&rb, 200, encode_reply_for(&rid_b, Ok(&json!(8))));

        assert_eq!(ra.headers, vec![("grc-compress", "gzip")]);
        let events = h.events();
        assert_eq!(reply_of(&events, a), Ok(json!(7)));
        assert_eq!(reply_of(&events, b), Err(RpcError::ReplyCompression));
    }

    #[test]
    fn oversized_payloads_are_refused_at_once() {
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.max_frame_len = 100;
        let mut h = Harness::with(config);
        let now = h.now;

        let big = h.client.request(
            now,
            "svc",
            &json!("x".repeat(100)),
            &RequestOptions::default(),
        );

        assert_eq!(big, Err(CommandError::PayloadTooLarge));
        assert!(h.transmits().is_empty());
    }

    #[test]
    fn oversized_reply_is_an_error() {
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.max_frame_len = 100;
        let mut h = Harness::with(config);
        let id = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let req = h.http().remove(0);

        h.reply(&req, 200, vec![b' '; 101]);

        assert_eq!(reply_of(&h.events(), id), Err(RpcError::ReplyTooLarge));
    }

    #[test]
    fn map_collects_every_peer_in_order() {
        let mut h = Harness::new();
        let id = h.map("svc", RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2", "h:3"]);
        let reqs = h.http();

        for req in reqs.iter().rev() {
            let n = req.url.clone();
            h.answer(req, json!(n));
        }

        assert_eq!(reqs.len(), 3);
        assert_eq!(
            h.events(),
            vec![ClientEvent::Map {
                id,
                result: Ok(vec![
                    json!("http://h:1/"),
                    json!("http://h:2/"),
                    json!("http://h:3/")
                ])
            }]
        );
    }

    #[test]
    fn map_fails_on_the_first_error_and_only_once() {
        let mut h = Harness::new();
        let id = h.map("svc", RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2", "h:3"]);
        let reqs = h.http();

        h.answer(&reqs[0], json!(1));
        let rid = frame_rid(&reqs[1].body);
        h.reply(&reqs[1], 200, encode_reply_for(&rid, Err("ERR_NOPE")));
        h.answer(&reqs[2], json!(3));

        assert_eq!(
            h.events(),
            vec![ClientEvent::Map {
                id,
                result: Err(RpcError::Remote("ERR_NOPE".into()))
            }]
        );
        assert_eq!(h.client.poll_timeout(), None);
    }

    #[test]
    fn map_limit_asks_a_random_subset() {
        let mut h = Harness::new();
        h.map("svc", RequestOptions::default().limit(2));

        h.grape_lookup(&["h:1", "h:2", "h:3", "h:4"]);
        let reqs = h.http();

        assert_eq!(reqs.len(), 2);
        assert_ne!(reqs[0].url, reqs[1].url);
    }

    #[test]
    fn ws_requests_share_a_connection_and_match_by_rid() {
        let mut h = Harness::ws();
        let a = h.request("svc", json!("a"), RequestOptions::default());
        h.grape_lookup(&["127.0.0.1:1337"]);
        let b = h.request("svc", json!("b"), RequestOptions::default());
        let connect = h.transmits();
        let [Io::WsConnect { conn, url }] = connect.as_slice() else {
            panic!("one connect: {connect:?}");
        };
        let conn = *conn;

        let now = h.now;
        h.client.handle_ws_open(now, conn);
        let frames: Vec<String> = h
            .transmits()
            .into_iter()
            .map(|t| match t {
                Io::WsSend {
                    conn: c,
                    msg: WsMessage::Text(s),
                } if c == conn => s,
                other => panic!("{other:?}"),
            })
            .collect();
        let (ra, rb) = (
            frame_rid(frames[0].as_bytes()),
            frame_rid(frames[1].as_bytes()),
        );
        h.send_ws(conn, format!(r#"["{rb}",null,"B"]"#));
        h.send_ws(conn, format!(r#"["{ra}",null,"A"]"#));

        assert_eq!(url, "ws://127.0.0.1:1337/ws");
        assert_eq!(frames[0], format!(r#"["{ra}","svc","a"]"#));
        let events = h.events();
        assert_eq!(reply_of(&events, a), Ok(json!("A")));
        assert_eq!(reply_of(&events, b), Ok(json!("B")));
    }

    /// The server side of a ZeroMQ connection in a test: bytes between it and the client.
    fn zmq_pump(h: &mut Harness, conn: ConnId, server: &mut crate::peer::ZmqServerConn) {
        loop {
            let mut to_server = Vec::new();
            for t in h.transmits() {
                match t {
                    Io::TcpSend { conn: c, bytes } if c == conn => {
                        to_server.extend_from_slice(&bytes);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let to_client = server.take_output();
            if to_server.is_empty() && to_client.is_empty() {
                return;
            }
            server.handle_input(&to_server).expect("server reads");
            if !to_client.is_empty() {
                let now = h.now;
                h.client.handle_tcp_data(now, conn, &to_client);
            }
        }
    }

    #[test]
    fn zmq_requests_share_a_dealer_and_errors_are_typed() {
        let mut h = Harness::zmq();
        let a = h.request("svc", json!({"n": 1}), RequestOptions::default());
        h.grape_lookup(&["127.0.0.1:1337"]);
        let b = h.request("svc", json!("b"), RequestOptions::default());
        let Some(Io::TcpConnect { conn, addr }) = h.client.poll_transmit() else {
            panic!("a TCP connect first");
        };
        let now = h.now;
        h.client.handle_tcp_open(now, conn);
        let mut server = crate::peer::ZmqServerConn::new(1 << 20);

        zmq_pump(&mut h, conn, &mut server);
        let first = server.poll_request().expect("request a");
        let second = server.poll_request().expect("request b");
        server.reply(&second.rid, Err("ERR_NOPE")).expect("reply");
        server.reply(&first.rid, Ok(&json!("A"))).expect("reply");
        zmq_pump(&mut h, conn, &mut server);

        assert_eq!(addr.as_str(), "127.0.0.1:1337");
        assert_eq!(
            (first.key.as_str(), &first.payload),
            ("svc", &json!({"n": 1}))
        );
        let events = h.events();
        assert_eq!(reply_of(&events, a), Ok(json!("A")));
        assert_eq!(
            reply_of(&events, b),
            Err(RpcError::Remote("ERR_NOPE".into()))
        );
        assert_eq!(h.client.stats().rpc.connects, 1);
    }

    /// A ZeroMQ client harness, its request, and the connection it dials.
    fn zmq_call(config: ClientConfig) -> (Harness, CommandId, ConnId) {
        let mut h = Harness::with(config);
        let id = h.request("svc", json!({"n": 1}), RequestOptions::default());
        h.grape_lookup(&["127.0.0.1:1337"]);
        let Some(Io::TcpConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("a TCP connect first");
        };
        let now = h.now;
        h.client.handle_tcp_open(now, conn);
        (h, id, conn)
    }

    fn curve_server() -> (
        crate::peer::ZmqServerConn,
        crate::peer::zmtp::CurvePublicKey,
    ) {
        use crate::peer::zmtp::{CurveKeyPair, CurveServerConfig, Security};
        let keys = CurveKeyPair::from_secret([3; 32]);
        let public = keys.public();
        let security = Security::CurveServer(std::sync::Arc::new(CurveServerConfig::new(keys)));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let server = crate::peer::ZmqServerConn::secure(1 << 20, &security, &mut rng);
        (server, public)
    }

    #[test]
    fn zmq_curve_client_calls_a_curve_server() {
        use crate::peer::zmtp::{CurveClientConfig, CurveKeyPair};
        let (mut server, key) = curve_server();
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.transport = RpcTransport::Zmq;
        let client_keys = CurveKeyPair::from_secret([4; 32]);
        let client_public = client_keys.public();
        config.rpc.curve = Some(std::sync::Arc::new(CurveClientConfig::new(
            client_keys,
            key,
        )));
        let (mut h, id, conn) = zmq_call(config);

        zmq_pump(&mut h, conn, &mut server);
        let req = server.poll_request().expect("the request");
        server.reply(&req.rid, Ok(&json!("secret"))).expect("reply");
        zmq_pump(&mut h, conn, &mut server);

        assert_eq!(reply_of(&h.events(), id), Ok(json!("secret")));
        assert_eq!(server.curve_client_key(), Some(client_public));
    }

    #[test]
    fn zmq_null_client_at_a_curve_server_fails_typed_at_once() {
        let (mut server, _) = curve_server();
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.transport = RpcTransport::Zmq;
        let (mut h, id, conn) = zmq_call(config);

        // The client's first bytes (signature, version) draw the server's mechanism.
        use crate::peer::zmtp::frame::{GREETING_HEAD_LEN, greeting};
        let head = greeting();
        server
            .handle_input(&head[..GREETING_HEAD_LEN])
            .expect("a greeting's first part");
        let to_client = server.take_output();
        let now = h.now;
        h.client.handle_tcp_data(now, conn, &to_client);

        let err = reply_of(&h.events(), id).expect_err("refused");
        assert!(matches!(err, RpcError::Security(_)), "{err:?}");
        assert!(err.to_string().starts_with("ERR_ZMQ_SECURITY"), "{err}");
    }

    #[test]
    fn zmq_reply_over_the_frame_limit_is_reply_too_large() {
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.transport = RpcTransport::Zmq;
        config.rpc.max_frame_len = 1024;
        let (mut h, id, conn) = zmq_call(config);
        let mut server = crate::peer::ZmqServerConn::new(1 << 20);

        zmq_pump(&mut h, conn, &mut server);
        let req = server.poll_request().expect("the request");
        server
            .reply(&req.rid, Ok(&json!("x".repeat(5000))))
            .expect("reply");
        let to_client = server.take_output();
        let now = h.now;
        h.client.handle_tcp_data(now, conn, &to_client);

        assert_eq!(reply_of(&h.events(), id), Err(RpcError::ReplyTooLarge));
    }

    #[test]
    fn zmq_peer_answering_in_http_is_left_for_the_next_then_fails_typed() {
        let mut h = Harness::zmq();
        let a = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1", "h:2"]);
        let now = h.now;
        let mut dialled = Vec::new();
        let mut closed = Vec::new();

        // Both peers answer the ZMTP greeting with an HTTP error.
        for _ in 0..2 {
            let Some(Io::TcpConnect { conn, addr }) = h.client.poll_transmit() else {
                panic!("connect");
            };
            dialled.push(addr.to_string());
            let _ = h.transmits();
            h.client.handle_tcp_open(now, conn);
            h.client
                .handle_tcp_data(now, conn, b"HTTP/1.1 400 Bad Request\r\n\r\n");
            closed.push(h.client.poll_transmit() == Some(Io::TcpClose { conn }));
        }

        assert_eq!(dialled.len(), 2);
        assert_ne!(dialled[0], dialled[1]);
        assert_eq!(closed, [true, true]);
        assert_eq!(
            reply_of(&h.events(), a),
            Err(RpcError::WrongTransport(Protocol::Http))
        );
        assert_eq!(h.client.stats().rpc.unreached, 2);
        assert_eq!(h.client.poll_timeout(), None);
    }

    #[test]
    fn http_peer_speaking_zmq_or_ws_fails_typed_and_goes_to_the_next_peer() {
        let (mut h, id, first) = sent_to_one_of_two();

        fail(
            &mut h,
            &first,
            TransportError::wrong_transport(Protocol::Zmq),
        );
        let next = h.http().remove(0);
        h.reply(&next, 426, b"Upgrade Required".to_vec());

        assert_eq!(next.url, "http://h:2/");
        let err = reply_of(&h.events(), id).expect_err("both peers are misdirected");
        assert_eq!(err, RpcError::WrongTransport(Protocol::Ws));
        assert_eq!(err.to_string(), "ERR_WRONG_TRANSPORT: ws");
        assert_eq!(h.client.stats().rpc.unreached, 2);
    }

    #[test]
    fn ws_dial_answered_without_upgrade_fails_typed_at_once() {
        let mut h = Harness::ws();
        let id = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let Some(Io::WsConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("connect");
        };
        let now = h.now;

        h.client
            .handle_ws_wrong_transport(now, conn, Protocol::Http);

        assert_eq!(
            reply_of(&h.events(), id),
            Err(RpcError::WrongTransport(Protocol::Http))
        );
    }

    /// A ZeroMQ subscription to `chan` at `h:9`, its handshake with a publisher done.
    fn zmq_subscribed(
        config: ClientConfig,
    ) -> (Harness, SubscriptionId, ConnId, crate::peer::ZmqPubConn) {
        let mut h = Harness::with(config);
        let now = h.now;
        let sub = h.client.subscribe(now, "chan").expect("ok");
        h.grape_lookup(&["h:9"]);
        let Some(Io::TcpConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("connect");
        };
        let mut publisher = crate::peer::ZmqPubConn::new(1024);
        for _ in 0..3 {
            for t in h.transmits() {
                if let Io::TcpSend { bytes, .. } = t {
                    publisher.handle_input(&bytes).expect("pub reads");
                }
            }
            let out = publisher.take_output();
            h.client.handle_tcp_data(now, conn, &out);
        }
        (h, sub, conn, publisher)
    }

    #[test]
    fn zmq_subscription_subscribes_to_everything_and_delivers_frames() {
        let mut config = ClientConfig::new(GRAPE);
        config.sub.transport = crate::peer::PubSubTransport::Zmq;
        let (mut h, sub, conn, mut publisher) = zmq_subscribed(config);
        let now = h.now;

        assert!(publisher.publish(b"{\"n\":1}").expect("sent"));
        let out = publisher.take_output();
        h.client.handle_tcp_data(now, conn, &out);
        h.client.handle_tcp_closed(now, conn);

        let events = h.events();
        assert!(
            matches!(&events[0], ClientEvent::Subscribed { sub: s, addr } if *s == sub && addr.as_str() == "h:9")
        );
        assert_eq!(
            events[1],
            ClientEvent::Message {
                sub,
                msg: WsMessage::Text("{\"n\":1}".into())
            }
        );
        assert!(matches!(
            &events[2],
            ClientEvent::Disconnected {
                error: LinkError::TransportClose,
                ..
            }
        ));
    }

    #[test]
    fn stream_plans_pick_live_peers_with_fresh_rids() {
        let mut h = Harness::new();
        let peers: Vec<PeerAddr> = ["h:1", "h:2"]
            .iter()
            .map(|p| PeerAddr::parse(p).expect("valid"))
            .collect();
        let opts = StreamOptions::default()
            .action("upload")
            .timeout(Duration::from_secs(5));
        let now = h.now;

        let a = h
            .client
            .plan_stream(now, "svc", &peers, &opts)
            .expect("a plan");
        h.client.stream_unreached(now, &a.peer);
        let b = h
            .client
            .plan_stream(now, "svc", &peers, &opts)
            .expect("a plan");
        let c = h
            .client
            .plan_stream(now, "svc", &peers, &opts)
            .expect("a plan");

        assert_ne!(a.peer, b.peer, "the unreached peer is left out");
        assert_eq!(b.peer, c.peer, "still left out");
        assert_eq!(b.url, format!("http://{}/", b.peer.as_str()));
        assert_eq!(b.head.key, "svc");
        assert_eq!(b.head.action.as_deref(), Some("upload"));
        assert_eq!(b.head.rid.len(), 36);
        assert_ne!(b.head.rid, c.head.rid);
        assert_eq!(b.deadline, now + Duration::from_secs(5));
        assert!(h.client.plan_stream(now, "svc", &[], &opts).is_none());
        assert_eq!(h.client.stats().rpc.unreached, 1);
        // The answer reads as a request's does.
        let ok = encode_reply_for(&b.head.rid, Ok(&json!("stored")));
        let reply = Ok(HttpResponse {
            status: 200,
            body: ok,
        });
        assert_eq!(b.read_reply(reply), Ok(json!("stored")));
        let other = encode_reply_for(&c.head.rid, Ok(&json!(1)));
        let reply = Ok(HttpResponse {
            status: 200,
            body: other,
        });
        assert_eq!(b.read_reply(reply), Err(RpcError::ReplyInvalid));
    }

    /// What the client wrote on `conn` since the last call (and nothing else).
    fn tcp_bytes(h: &mut Harness, conn: ConnId) -> Vec<u8> {
        let mut out = Vec::new();
        for t in h.transmits() {
            match t {
                Io::TcpSend { conn: c, bytes } if c == conn => out.extend(bytes),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn zmq_client_pings_a_quiet_server_and_fails_typed_when_it_goes_silent() {
        // Arrange: a request in flight on a ready connection, a server that never replies.
        let s = Duration::from_secs;
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.transport = RpcTransport::Zmq;
        config.rpc.timeout = s(600);
        config.rpc.heartbeat = Some(crate::peer::zmtp::HeartbeatConfig {
            interval: s(10),
            timeout: s(30),
        });
        let (mut h, id, conn) = zmq_call(config);
        let mut server = crate::peer::ZmqServerConn::new(1 << 20);
        zmq_pump(&mut h, conn, &mut server);
        assert!(server.poll_request().is_some(), "the request arrived");

        // Act 1: ten quiet seconds; the PING goes to the server, which answers PONG.
        h.advance(s(10));
        let ping = tcp_bytes(&mut h, conn);
        server.handle_input(&ping).expect("server reads the PING");
        let pong = server.take_output();
        h.now += s(1);
        let now = h.now;
        h.client.handle_tcp_data(now, conn, &pong);

        // Assert 1: a PING went out, the server answered, the request still waits.
        assert!(!ping.is_empty(), "a PING after 10 s of silence");
        assert!(!pong.is_empty(), "the server answered the PING");
        assert!(h.events().is_empty());

        // Act 2: the server goes silent; PINGs go unanswered.
        h.advance(s(10));
        assert!(!tcp_bytes(&mut h, conn).is_empty(), "another PING");
        h.advance(s(10));
        assert!(!tcp_bytes(&mut h, conn).is_empty(), "another PING");
        assert!(h.events().is_empty(), "20 s of silence is not yet 30");
        h.advance(s(10));

        // Assert 2: 30 s after the PONG the connection is closed and the request failed typed.
        let closed = h.transmits();
        assert!(
            matches!(closed.as_slice(), [Io::TcpClose { conn: c }] if *c == conn),
            "{closed:?}"
        );
        let err = reply_of(&h.events(), id).expect_err("failed");
        assert_eq!(err, RpcError::HeartbeatTimeout(s(30)));
        assert!(
            err.to_string().starts_with("ERR_HEARTBEAT_TIMEOUT"),
            "{err}"
        );
    }

    #[test]
    fn zmq_client_without_heartbeat_sends_no_ping() {
        let s = Duration::from_secs;
        let mut config = ClientConfig::new(GRAPE);
        config.rpc.transport = RpcTransport::Zmq;
        config.rpc.timeout = s(600);
        config.rpc.heartbeat = None;
        let (mut h, _id, conn) = zmq_call(config);
        let mut server = crate::peer::ZmqServerConn::new(1 << 20);
        zmq_pump(&mut h, conn, &mut server);

        h.advance(s(100));

        assert!(tcp_bytes(&mut h, conn).is_empty());
        assert!(h.events().is_empty());
    }

    #[test]
    fn zmq_subscriber_resubscribes_when_its_publisher_goes_silent() {
        // Arrange: a live ZeroMQ subscription.
        let s = Duration::from_secs;
        let mut config = ClientConfig::new(GRAPE);
        config.sub.transport = crate::peer::PubSubTransport::Zmq;
        config.sub.heartbeat = Some(crate::peer::zmtp::HeartbeatConfig {
            interval: s(5),
            timeout: s(15),
        });
        let (mut h, sub, conn, mut publisher) = zmq_subscribed(config);
        assert!(matches!(
            h.events().as_slice(),
            [ClientEvent::Subscribed { sub: s, .. }] if *s == sub
        ));

        // Act: the publisher answers the first PING, then nothing more.
        h.advance(s(5));
        let ping = tcp_bytes(&mut h, conn);
        publisher.handle_input(&ping).expect("pub reads the PING");
        let pong = publisher.take_output();
        let now = h.now;
        h.client.handle_tcp_data(now, conn, &pong);
        for _ in 0..3 {
            h.advance(s(5));
        }

        // Assert: a PING went out and was answered; 15 s after that the subscription
        // was dropped with a typed error and will reconnect (a fresh lookup follows).
        assert!(!ping.is_empty() && !pong.is_empty());
        let closed = h.transmits();
        assert!(
            closed
                .iter()
                .any(|t| matches!(t, Io::TcpClose { conn: c } if *c == conn)),
            "{closed:?}"
        );
        let events = h.events();
        let [
            ClientEvent::Disconnected {
                sub: s1,
                error,
                retry_at,
            },
        ] = events.as_slice()
        else {
            panic!("one disconnect: {events:?}");
        };
        assert_eq!(*s1, sub);
        assert!(
            error.to_string().contains("ERR_HEARTBEAT_TIMEOUT"),
            "{error}"
        );
        let retry_at = *retry_at;
        h.advance(retry_at.saturating_duration_since(h.now));
        let lookup = h.http();
        assert_eq!(lookup.len(), 1, "the subscriber looks the channel up again");
    }

    #[test]
    fn ws_drop_fails_in_flight_requests_and_reconnects_next_time() {
        let mut h = Harness::ws();
        let a = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let Some(Io::WsConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("connect");
        };
        let now = h.now;
        h.client.handle_ws_open(now, conn);
        let _ = h.transmits();

        h.send_ws(conn, "garbage".into());
        h.client.handle_ws_closed(now, conn);
        let events = h.events();
        h.request("svc", json!(2), RequestOptions::default());
        let again = h.transmits();

        assert_eq!(reply_of(&events, a), Err(RpcError::TransportClose));
        assert_eq!(RpcError::TransportClose.to_string(), "ERR_TRANSPORT_CLOSE");
        assert_eq!(h.client.stats().rpc.bad_frames, 1);
        assert!(
            matches!(again.as_slice(), [Io::WsConnect { conn: c, .. }] if *c != conn),
            "{again:?}"
        );
    }

    #[test]
    fn idle_ws_connections_are_closed() {
        let mut h = Harness::ws();
        let id = h.request("svc", json!(1), RequestOptions::default());
        h.grape_lookup(&["h:1"]);
        let Some(Io::WsConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("connect");
        };
        let now = h.now;
        h.client.handle_ws_open(now, conn);
        let Some(Io::WsSend { msg, .. }) = h.client.poll_transmit() else {
            panic!("send");
        };
        let rid = frame_rid(msg.as_bytes());
        h.send_ws(conn, format!(r#"["{rid}",null,1]"#));
        assert_eq!(reply_of(&h.events(), id), Ok(json!(1)));

        h.advance(Duration::from_secs(119));
        let early = h.transmits();
        h.advance(Duration::from_secs(1));

        assert!(early.is_empty());
        assert_eq!(h.transmits(), vec![Io::WsClose { conn }]);
    }

    #[test]
    fn subscriber_connects_receives_and_reconnects_with_backoff() {
        let mut h = Harness::new();
        let now = h.now;
        let sub = h.client.subscribe(now, "chan").expect("ok");
        h.grape_lookup(&["h:1", "h:2"]);
        let Some(Io::WsConnect { conn, url }) = h.client.poll_transmit() else {
            panic!("connect");
        };

        h.client.handle_ws_open(now, conn);
        h.client
            .handle_ws_message(now, conn, WsMessage::Binary(vec![1, 2]));
        h.client.handle_ws_closed(now, conn);
        let events = h.events();
        let retry_at = h.client.poll_timeout().expect("reconnect scheduled");
        h.advance(retry_at - now);
        h.grape_lookup(&["h:1", "h:2"]);
        let reconnect = h.transmits();

        assert_eq!(url, "ws://h:1/ws");
        assert_eq!(
            events,
            vec![
                ClientEvent::Subscribed {
                    sub,
                    addr: PeerAddr::parse("h:1").expect("valid")
                },
                ClientEvent::Message {
                    sub,
                    msg: WsMessage::Binary(vec![1, 2])
                },
                ClientEvent::Disconnected {
                    sub,
                    error: LinkError::TransportClose,
                    retry_at
                }
            ]
        );
        assert!(retry_at >= now + Duration::from_millis(500));
        assert!(retry_at <= now + Duration::from_secs(1));
        assert!(
            matches!(reconnect.as_slice(), [Io::WsConnect { url, .. }] if url == "ws://h:2/ws"),
            "{reconnect:?}"
        );
    }

    #[test]
    fn subscriber_backoff_grows_while_publishers_are_unreachable() {
        let mut h = Harness::new();
        let now = h.now;
        let sub = h.client.subscribe(now, "chan").expect("ok");
        let mut delays = Vec::new();

        for _ in 0..4 {
            h.grape_lookup(&["h:1"]);
            let Some(Io::WsConnect { conn, .. }) = h.client.poll_transmit() else {
                panic!("connect");
            };
            let t = h.now;
            h.client.handle_ws_closed(t, conn);
            let Some(ClientEvent::Disconnected { retry_at, .. }) = h.events().pop() else {
                panic!("disconnected");
            };
            delays.push(retry_at - t);
            h.advance(retry_at - t);
        }

        let caps = [1, 2, 4, 8];
        for (d, cap) in delays.iter().zip(caps) {
            let cap = Duration::from_secs(cap);
            assert!(*d >= cap / 2 && *d <= cap, "{d:?} vs {cap:?}");
        }
        assert!(h.client.unsubscribe(sub));
    }

    #[test]
    fn unsubscribe_closes_the_connection() {
        let mut h = Harness::new();
        let now = h.now;
        let sub = h.client.subscribe(now, "chan").expect("ok");
        h.grape_lookup(&["h:1"]);
        let Some(Io::WsConnect { conn, .. }) = h.client.poll_transmit() else {
            panic!("connect");
        };

        let done = h.client.unsubscribe(sub);

        assert!(done);
        assert_eq!(h.transmits(), vec![Io::WsClose { conn }]);
        assert_eq!(h.client.poll_timeout(), None);
    }

    #[test]
    fn user_lookups_still_reach_the_user() {
        let mut h = Harness::new();
        let now = h.now;
        let id = h.client.lookup(now, "svc").expect("ok");

        h.grape_lookup(&["h:1"]);

        assert_eq!(
            h.events(),
            vec![ClientEvent::Link(LinkEvent::Lookup {
                id,
                name: "svc".into(),
                result: Ok(vec![PeerAddr::parse("h:1").expect("valid")])
            })]
        );
    }

    #[test]
    fn pending_commands_are_capped() {
        let mut config = ClientConfig::new(GRAPE);
        config.max_pending = 1;
        let mut h = Harness::with(config);
        h.request("svc", json!(1), RequestOptions::default());
        let now = h.now;

        let second = h.client.lookup(now, "x");

        assert_eq!(second, Err(CommandError::TooManyPending));
    }
}
