//! The public handle of a client: every method queues a command for a driver task (a
//! shard, see `shards`) and waits for its one answer (`request_stream` also sends its body
//! itself, on a connection of its own).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::{Stream, StreamExt as _};
use grenache_core::dht::bep44::Target;
use grenache_core::peer::{
    ClientStats, ConfigError, GetItem, LinkError, PeerAddr, Put, RequestOptions, RpcError,
    StreamOptions,
};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::config::PeerConfig;
use super::driver::{Command, Reply};
use super::error::PeerError;
use super::http_client::{self, ChunkedBody};
use super::shards::{Shard, Shards};
use super::subscription::Subscription;
use super::watch::Watch;
use crate::runtime::Runtime;
use crate::time::timeout;
use crate::tls::{TlsClient, TlsStats};

/// A Grenache client: the Link to a Grape (lookup, announce, put, get), peer RPC
/// (request, map) and subscriptions, run by [`PeerConfig::shards()`] driver tasks (one by
/// default); requests and maps are spread over them.
///
/// Cloning is cheap and every clone talks to the same drivers. A driver task starts with
/// its first command, on the runtime that awaits it (so `new` works anywhere), and stops
/// when the last clone (and, for the first driver, the last [`Subscription`], [`Watch`],
/// server or publisher holding one) is gone. Commands are not cancelled by dropping their
/// future: the core still ends them, and the answer is thrown away.
pub struct PeerClient<R: Runtime> {
    shards: Arc<Shards<R>>,
    /// TLS settings and counters, shared with the drivers' connections.
    tls: Option<Arc<TlsClient>>,
}

impl<R: Runtime> Clone for PeerClient<R> {
    fn clone(&self) -> Self {
        PeerClient {
            shards: Arc::clone(&self.shards),
            tls: self.tls.clone(),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for PeerClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("queued", &self.shards.queued())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> PeerClient<R> {
    /// Starts a client for the Grape in `config.client.link.grape`.
    ///
    /// # Errors
    /// [`ConfigError::GrapeUrl`] when the Grape URL is not `http(s)://` or `ws(s)://`.
    pub fn new(config: PeerConfig) -> Result<Self, ConfigError> {
        let tls = config.tls.clone().map(|tls| Arc::new(TlsClient::new(tls)));
        let shards = Arc::new(Shards::new(&config, tls.as_ref())?);
        Ok(PeerClient { shards, tls })
    }

    /// The peers serving `name` (`host:port`, never empty), from a cache of a few seconds.
    ///
    /// # Errors
    /// [`PeerError::Link`] with `LookupEmpty` when nobody serves it, or the Grape's error.
    pub async fn lookup(&self, name: &str) -> Result<Vec<PeerAddr>, PeerError> {
        let name = name.to_owned();
        self.ask(|reply| Command::Lookup { name, reply }).await?
    }

    /// Announces once that `name` is served on `port` of this host (the Grape takes the
    /// address from the connection); it expires on the Grape after its peer lifetime.
    ///
    /// # Errors
    /// [`PeerError::Refused`] for an empty name or port 0, [`PeerError::Link`] otherwise.
    pub async fn announce(&self, name: &str, port: u16) -> Result<(), PeerError> {
        let name = name.to_owned();
        self.ask(|reply| Command::Announce { name, port, reply })
            .await?
    }

    /// Announces `name` on `port` now and again before the Grape forgets it, until
    /// [`stop_announcing`](Self::stop_announcing); returns when the first round ends.
    ///
    /// # Errors
    /// The first round's error ([`PeerError::Link`]); the schedule stays and retries.
    /// [`PeerError::Refused`] (no schedule) for a bad name or port, or too many schedules.
    pub async fn start_announcing(&self, name: &str, port: u16) -> Result<(), PeerError> {
        let name = name.to_owned();
        self.ask(|reply| Command::StartAnnouncing { name, port, reply })
            .await?
    }

    /// Stops announcing `name` on `port`; `false` if it was not announced. The Grape
    /// still lists it until its peer lifetime (120 s by default) has passed.
    pub async fn stop_announcing(&self, name: &str, port: u16) -> bool {
        let name = name.to_owned();
        self.ask(|reply| Command::StopAnnouncing {
            name,
            port,
            reply: Some(reply),
        })
        .await
        .unwrap_or(false)
    }

    /// Withdraws `name` on `port`: stops announcing it, and the Grape forgets it and tells
    /// the DHT nodes that speak `unannounce_peer` (our Grapes); Node Grapes still list it
    /// until its peer lifetime has passed.
    ///
    /// # Errors
    /// [`PeerError::Refused`] for an empty name or port 0, [`PeerError::Link`] otherwise
    /// (`ERR_GRAPE_NOT_ANNOUNCED` when the Grape does not hold it).
    pub async fn unannounce(&self, name: &str, port: u16) -> Result<(), PeerError> {
        let name = name.to_owned();
        self.ask(|reply| Command::Unannounce {
            name,
            port,
            reply: Some(reply),
        })
        .await?
    }

    /// Stores a value in the DHT and returns where it lives.
    ///
    /// # Errors
    /// [`PeerError::Link`]: the Grape's error, or a reply naming another target. A lone
    /// Grape answers `LinkError::Grape("No nodes to query")`: it kept the item (a get
    /// through it finds it), but no other node has it.
    pub async fn put(&self, put: Put) -> Result<Target, PeerError> {
        self.ask(|reply| Command::Put { put, reply }).await?
    }

    /// Reads the item at `target` (with its `salt`, for a salted mutable item); `None`
    /// when nothing is stored there.
    ///
    /// # Errors
    /// [`PeerError::Link`].
    pub async fn get(
        &self,
        target: Target,
        salt: Option<&str>,
    ) -> Result<Option<GetItem>, PeerError> {
        let salt = salt.map(str::to_owned);
        self.ask(|reply| Command::Get {
            target,
            salt,
            reply,
        })
        .await?
    }

    /// Sends `payload` to one peer serving `name` and returns its result.
    ///
    /// A peer that cannot be reached (connection refused or failed before the request
    /// went out) costs nothing: the request goes to the next peer at once, and that peer
    /// is left out for [`RpcConfig::dead_peer_ttl`](grenache_core::peer::RpcConfig). A
    /// request that may have reached its peer is sent again only with `opts.attempts`.
    ///
    /// # Errors
    /// [`PeerError::Refused`] (payload over the frame limit, bad name, too many pending),
    /// or [`PeerError::Rpc`]: lookup failure, `Timeout`, transport failure, the peer's
    /// error (`Remote`), a reply that is not a Grenache frame.
    pub async fn request(
        &self,
        name: &str,
        payload: Value,
        opts: RequestOptions,
    ) -> Result<Value, PeerError> {
        let shard = self.shards.for_call(name);
        let name = name.to_owned();
        self.ask_on(shard, |reply| Command::Request {
            name,
            payload,
            opts,
            reply,
        })
        .await?
    }

    /// Sends `payload` to every peer serving `name` (or `opts.limit` of them) and returns
    /// their results in the order the peers were asked.
    ///
    /// Peers known dead (one that refused a recent request) are left out, unless all are.
    /// A map never answers without a peer it meant to ask: one that cannot be reached
    /// fails the map (and is left out of the maps that follow).
    ///
    /// # Errors
    /// As [`request`](Self::request); the first failing peer fails the map.
    pub async fn map(
        &self,
        name: &str,
        payload: Value,
        opts: RequestOptions,
    ) -> Result<Vec<Value>, PeerError> {
        let shard = self.shards.for_call(name);
        let name = name.to_owned();
        self.ask_on(shard, |reply| Command::Map {
            name,
            payload,
            opts,
            reply,
        })
        .await?
    }

    /// Sends a request stream to one peer serving `name`, as grenache-nodejs-http's
    /// `requestStream` does: a chunked `POST` whose `_gr` header names the rid and `name`
    /// (and `_a`/`_ar` carry `opts`' action and arguments), with `body`'s chunks as the
    /// body; returns the peer's reply as [`request`](Self::request) does.
    ///
    /// Each stream has a connection of its own. `body` is polled only when the socket has
    /// taken the last chunk, so a slow server slows the producer and nothing piles up in
    /// memory. A peer that cannot be reached costs nothing: the stream goes to the next
    /// one (nothing of `body` was taken yet); once the body has started it is not sent
    /// again. `opts.timeout` (default [`RpcConfig::timeout`](grenache_core::peer::RpcConfig))
    /// bounds the whole exchange.
    ///
    /// # Errors
    /// [`PeerError::Rpc`]: the lookup's error, `Timeout`, a transport failure or non-2xx
    /// answer as `Request` (a server's 413 `ERR_STREAM_TOO_LARGE` among them), the
    /// handler's error as `Remote`, or a reply that is not a frame for this stream.
    pub async fn request_stream<S, B>(
        &self,
        name: &str,
        opts: StreamOptions,
        body: S,
    ) -> Result<Value, PeerError>
    where
        S: Stream<Item = B> + Send + 'static,
        B: Into<Bytes>,
    {
        let mut peers = self.lookup(name).await.map_err(|e| match e {
            PeerError::Link(e) => PeerError::Rpc(RpcError::Lookup(e)),
            other => other,
        })?;
        let body: ChunkedBody = StreamBody::new(body.map(|chunk| {
            let chunk: Bytes = chunk.into();
            Ok::<_, Infallible>(Frame::data(chunk))
        }))
        .boxed_unsync();
        let mut unreached = RpcError::Lookup(LinkError::LookupEmpty);
        loop {
            let plan = self
                .ask(|reply| Command::PlanStream {
                    name: name.to_owned(),
                    peers: peers.clone(),
                    opts: opts.clone(),
                    reply,
                })
                .await?;
            let Some(plan) = plan else {
                return Err(PeerError::Rpc(unreached));
            };
            let left = plan.deadline.saturating_duration_since(R::now());
            let opened = timeout::<R, _>(
                left,
                http_client::open_stream::<R>(&plan.url, self.tls.as_ref()),
            )
            .await
            .ok_or(PeerError::Rpc(RpcError::Timeout))?;
            let conn = match opened {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::debug!(peer = %plan.peer, %err, "stream peer unreachable; trying the next");
                    peers.retain(|p| *p != plan.peer);
                    let peer = plan.peer;
                    let home = self.shards.home().commands();
                    let _ = home.send(Command::StreamUnreached { peer }).await;
                    unreached = RpcError::Request(err.message);
                    continue;
                }
            };
            let left = plan.deadline.saturating_duration_since(R::now());
            let headers = plan.head.headers();
            let max = plan.max_reply_len();
            let reply = timeout::<R, _>(left, http_client::send_stream(conn, headers, body, max))
                .await
                .ok_or(PeerError::Rpc(RpcError::Timeout))?;
            return plan.read_reply(reply).map_err(PeerError::Rpc);
        }
    }

    /// Subscribes to `channel`: looks it up, connects to a publisher, and reconnects
    /// (with back-off) whenever the connection drops, until the [`Subscription`] is dropped.
    ///
    /// # Errors
    /// [`PeerError::Refused`] for a bad name or too many subscriptions.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, PeerError> {
        let channel = channel.to_owned();
        let (id, events) = self
            .ask(|reply| Command::Subscribe { channel, reply })
            .await??;
        let commands = self.shards.home().commands().clone();
        Ok(Subscription::new(id, events, commands))
    }

    /// Follows the peers serving `name`: the [`Watch`] yields the set when the Grape first
    /// answers and after every change, until it is dropped. While it exists, requests,
    /// maps and subscriptions to `name` use the watched set instead of a lookup (no request
    /// to the Grape, no cache expiry; an empty set fails them at once with
    /// `ERR_GRAPE_LOOKUP_EMPTY`). Watches of one name share one Grape watch.
    ///
    /// # Errors
    /// [`PeerError::Refused`] for a bad name or too many watched names
    /// ([`LinkConfig::max_watches`](grenache_core::peer::LinkConfig)). A Grape that
    /// refuses the watch ends it: [`Watch::next`] returns `None` and [`Watch::error`] says
    /// why.
    pub async fn watch(&self, name: &str) -> Result<Watch, PeerError> {
        let name = name.to_owned();
        // Held before the watch starts, so no call to `name` leaves home once it exists.
        let watched = self.shards.watching(&name);
        let (id, updates) = self
            .ask(|reply| Command::Watch {
                name: name.clone(),
                reply,
            })
            .await??;
        let commands = self.shards.home().commands().clone();
        Ok(Watch::new(id, name, updates, commands, watched))
    }

    /// The core's counters (requests, retries, cache hits, bad frames, ...), summed over
    /// the drivers.
    ///
    /// # Errors
    /// [`PeerError::Closed`] if a driver has stopped.
    pub async fn stats(&self) -> Result<ClientStats, PeerError> {
        let mut stats = self.ask(|reply| Command::Stats { reply }).await?;
        // The home shard is started by now; the others count only if they ever ran.
        for shard in self.shards.started().skip(1) {
            let more = self.ask_on(shard, |reply| Command::Stats { reply }).await?;
            stats = stats.plus(&more);
        }
        Ok(stats)
    }

    /// TLS handshakes with peers, and those that failed by reason (all zero without TLS).
    pub fn tls_stats(&self) -> TlsStats {
        self.tls
            .as_ref()
            .map_or_else(TlsStats::default, |tls| tls.stats())
    }

    /// Unannounces without waiting (for `Drop`); a full queue drops the request, and the
    /// Grape forgets the service when its lifetime ends anyway.
    pub(crate) fn unannounce_now(&self, name: &str, port: u16) {
        let command = Command::Unannounce {
            name: name.to_owned(),
            port,
            reply: None,
        };
        if self.shards.home().queue().try_send(command).is_err() {
            tracing::debug!(name, port, "unannounce not queued");
        }
    }

    /// Queues a command for the home shard and waits for the answer.
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, PeerError> {
        self.ask_on(self.shards.home(), make).await
    }

    /// Queues a command built around a reply channel on `shard` and waits for the answer.
    async fn ask_on<T>(
        &self,
        shard: &Shard<R>,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, PeerError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        shard
            .commands()
            .send(make(reply))
            .await
            .map_err(|_| PeerError::Closed)?;
        answer.await.map_err(|_| PeerError::Closed)
    }
}
