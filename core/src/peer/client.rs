//! The facade an adapter drives: a [`Link`], the RPC client and the subscriptions, with
//! one input side, one output side and one timer.
//!
//! Composition follows the house rule: `Client` drains its parts inside its own methods
//! (a lookup the RPC client asked for goes to it, not out as an event), so an adapter
//! never routes anything itself.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rand::Rng;
use serde_json::Value;

use crate::bep44::Target;
use crate::peer::error::{CommandError, ConfigError, LinkError, RpcError};
use crate::peer::link::{Link, LinkConfig, LinkEvent, LinkStats, Put, check_name};
use crate::peer::pubsub::{SubConfig, SubStats, Subs};
use crate::peer::rpc::{RequestOptions, Rpc, RpcConfig, RpcStats};
use crate::peer::types::{
    ConnId, HttpId, HttpResponse, PeerAddr, QueryId, SubscriptionId, Transmit, TransportError,
    WsMessage,
};

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
/// Every command's [`QueryId`] gets exactly one terminal event: `Link(Lookup | Announce |
/// Put | Get)`, `Reply` or `Map`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A Link command ended, or a scheduled announce round did.
    Link(LinkEvent),
    /// A request ended.
    Reply {
        /// The command.
        id: QueryId,
        /// The peer's result, or why there is none.
        result: Result<Value, RpcError>,
    },
    /// A map ended: one result per peer, in the order the peers were chosen.
    Map {
        /// The command.
        id: QueryId,
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

/// Who waits for a lookup the Client started.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    User,
    Rpc(QueryId),
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
    lookups: BTreeMap<QueryId, Waiter>,
    events: VecDeque<Event>,
    outstanding: usize,
    max_pending: usize,
}

impl Client {
    /// A client for the Grape in `config.link.grape`.
    ///
    /// # Errors
    /// [`ConfigError::GrapeUrl`] for a Grape URL that is not http(s) or ws(s).
    pub fn new(config: ClientConfig) -> Result<Client, ConfigError> {
        let mut link_config = config.link;
        // The Client bounds user commands itself; the Link must also fit internal lookups.
        link_config.max_pending = config
            .max_pending
            .saturating_add(config.sub.max_subscriptions)
            .saturating_add(config.max_pending);
        Ok(Client {
            link: Link::new(link_config)?,
            rpc: Rpc::new(config.rpc),
            subs: Subs::new(config.sub),
            lookups: BTreeMap::new(),
            events: VecDeque::new(),
            outstanding: 0,
            max_pending: config.max_pending,
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

    /// Looks `name` up; ends with `Event::Link(LinkEvent::Lookup)`.
    ///
    /// # Errors
    /// As [`Link::lookup`].
    pub fn lookup(
        &mut self,
        now: Instant,
        name: &str,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.reserve()?;
        let id = self.link.lookup(now, name, rng);
        self.user_command(now, id, rng)
    }

    /// Announces once; ends with `Event::Link(LinkEvent::Announce)`.
    ///
    /// # Errors
    /// As [`Link::announce`].
    pub fn announce(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.reserve()?;
        let id = self.link.announce(now, name, port, rng);
        self.user_command(now, id, rng)
    }

    /// Announces on a schedule (see [`crate::peer::Link`]); rounds report
    /// `Event::Link(LinkEvent::Announcing)`. `false` if already scheduled.
    ///
    /// # Errors
    /// As [`Link::start_announcing`].
    pub fn start_announcing(
        &mut self,
        now: Instant,
        name: &str,
        port: u16,
        rng: &mut impl Rng,
    ) -> Result<bool, CommandError> {
        let started = self.link.start_announcing(now, name, port, rng);
        self.drain(now, rng);
        started
    }

    /// Stops a schedule; `false` if there was none.
    pub fn stop_announcing(&mut self, name: &str, port: u16) -> bool {
        self.link.stop_announcing(name, port)
    }

    /// Stores a value; ends with `Event::Link(LinkEvent::Put)`.
    ///
    /// # Errors
    /// [`CommandError::TooManyPending`].
    pub fn put(
        &mut self,
        now: Instant,
        put: Put,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.reserve()?;
        let id = self.link.put(now, put, rng);
        self.user_command(now, id, rng)
    }

    /// Reads an item; ends with `Event::Link(LinkEvent::Get)`.
    ///
    /// # Errors
    /// [`CommandError::TooManyPending`].
    pub fn get(
        &mut self,
        now: Instant,
        target: Target,
        salt: Option<&str>,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.reserve()?;
        let id = self.link.get(now, target, salt, rng);
        self.user_command(now, id, rng)
    }

    /// Sends `payload` to one peer serving `name` (looked up first); ends with
    /// [`Event::Reply`].
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
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.call(now, name, payload, opts, false, rng)
    }

    /// Sends `payload` to every peer serving `name` (or `opts.limit` of them); ends with
    /// [`Event::Map`].
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn map(
        &mut self,
        now: Instant,
        name: &str,
        payload: &Value,
        opts: &RequestOptions,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.call(now, name, payload, opts, true, rng)
    }

    /// Subscribes to `channel`: look it up, connect, receive, reconnect when it drops.
    ///
    /// # Errors
    /// [`CommandError::InvalidName`], [`CommandError::TooManySubscriptions`].
    pub fn subscribe(
        &mut self,
        now: Instant,
        channel: &str,
        rng: &mut impl Rng,
    ) -> Result<SubscriptionId, CommandError> {
        check_name(channel)?;
        if self.subs.is_full() {
            return Err(CommandError::TooManySubscriptions);
        }
        let sub = SubscriptionId(self.link.ids.next());
        self.subs.subscribe(sub, channel);
        self.drain(now, rng);
        Ok(sub)
    }

    /// Ends a subscription (closing its connection); `false` if unknown.
    pub fn unsubscribe(&mut self, sub: SubscriptionId) -> bool {
        self.subs.unsubscribe(sub)
    }

    /// Takes the reply to a [`Transmit::Http`]; unknown ids are ignored.
    pub fn handle_http_reply(
        &mut self,
        now: Instant,
        http: HttpId,
        reply: Result<HttpResponse, TransportError>,
        rng: &mut impl Rng,
    ) {
        if self.link.owns_http(http) {
            self.link.handle_http_reply(now, http, reply, rng);
        } else if self.rpc.owns_http(http) {
            self.rpc
                .handle_http_reply(now, http, reply, &mut self.link.ids, rng);
        } else {
            tracing::debug!(%http, "reply for an exchange nobody waits for");
        }
        self.drain(now, rng);
    }

    /// A connection from [`Transmit::WsConnect`] is open.
    pub fn handle_ws_open(&mut self, now: Instant, conn: ConnId, rng: &mut impl Rng) {
        if self.link.owns_conn(conn) {
            self.link.handle_ws_open(now, conn);
        } else if self.rpc.owns_conn(conn) {
            self.rpc.handle_ws_open(now, conn);
        } else if self.subs.owns_conn(conn) {
            self.subs.handle_ws_open(now, conn);
        }
        self.drain(now, rng);
    }

    /// A message arrived on a connection.
    pub fn handle_ws_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        msg: WsMessage,
        rng: &mut impl Rng,
    ) {
        if self.link.owns_conn(conn) {
            self.link.handle_ws_message(now, conn, &msg, rng);
        } else if self.rpc.owns_conn(conn) {
            self.rpc
                .handle_ws_message(now, conn, &msg, &mut self.link.ids, rng);
        } else if self.subs.owns_conn(conn) {
            self.subs.handle_ws_message(conn, msg);
        }
        self.drain(now, rng);
    }

    /// A connection closed, or could not be opened.
    pub fn handle_ws_closed(&mut self, now: Instant, conn: ConnId, rng: &mut impl Rng) {
        if self.link.owns_conn(conn) {
            self.link.handle_ws_closed(now, conn, rng);
        } else if self.rpc.owns_conn(conn) {
            self.rpc
                .handle_ws_closed(now, conn, &mut self.link.ids, rng);
        } else if let Some(channel) = self.subs.handle_ws_closed(now, conn, rng) {
            self.link.forget_lookup(&channel);
        }
        self.drain(now, rng);
    }

    /// Fires whatever is due; does nothing when nothing is.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl Rng) {
        self.link.handle_timeout(now, rng);
        self.rpc.handle_timeout(now, &mut self.link.ids, rng);
        self.subs.handle_timeout(now);
        self.drain(now, rng);
    }

    /// The next network action.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.link
            .poll_transmit()
            .or_else(|| self.rpc.transmits.pop_front())
            .or_else(|| self.subs.transmits.pop_front())
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        match &event {
            Event::Link(LinkEvent::Announcing { .. })
            | Event::Subscribed { .. }
            | Event::Disconnected { .. } => {}
            Event::Message { .. } => self.subs.message_polled(),
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
        id: Result<QueryId, CommandError>,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        let id = id?;
        self.outstanding += 1;
        self.drain(now, rng);
        Ok(id)
    }

    fn call(
        &mut self,
        now: Instant,
        name: &str,
        payload: &Value,
        opts: &RequestOptions,
        map: bool,
        rng: &mut impl Rng,
    ) -> Result<QueryId, CommandError> {
        self.reserve()?;
        check_name(name)?;
        let json = self.rpc.prepare(name, payload)?;
        let lookup = self.link.lookup(now, name, rng)?;
        let id = QueryId(self.link.ids.next());
        self.outstanding += 1;
        self.rpc.begin(id, name, json, opts, map);
        self.lookups.insert(lookup, Waiter::Rpc(id));
        self.drain(now, rng);
        Ok(id)
    }

    /// Moves the parts' output along until nothing more happens: lookups to whoever
    /// waits for them, lookups the subscriptions need to the Link, events to the queue.
    fn drain(&mut self, now: Instant, rng: &mut impl Rng) {
        loop {
            let mut moved = false;
            while let Some(event) = self.link.poll_event() {
                moved = true;
                self.route(now, event, rng);
            }
            while let Some((sub, channel)) = self.subs.lookups.pop_front() {
                moved = true;
                match self.link.lookup(now, &channel, rng) {
                    Ok(id) => {
                        self.lookups.insert(id, Waiter::Sub(sub));
                    }
                    Err(e) => {
                        tracing::warn!(%sub, error = %e, "subscriber lookup refused");
                        self.subs.lookup_refused(now, sub, rng);
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

    fn route(&mut self, now: Instant, event: LinkEvent, rng: &mut impl Rng) {
        let waiter = match &event {
            LinkEvent::Lookup { id, .. }
            | LinkEvent::Announce { id, .. }
            | LinkEvent::Put { id, .. }
            | LinkEvent::Get { id, .. } => self.lookups.remove(id).unwrap_or(Waiter::User),
            _ => Waiter::User,
        };
        match (waiter, event) {
            (Waiter::Rpc(call), LinkEvent::Lookup { result, .. }) => {
                self.rpc
                    .handle_lookup(now, call, result, &mut self.link.ids, rng);
            }
            (Waiter::Sub(sub), LinkEvent::Lookup { result, .. }) => {
                self.subs
                    .handle_lookup(now, sub, result, &mut self.link.ids, rng);
            }
            (_, event) => self.events.push_back(Event::Link(event)),
        }
    }
}
