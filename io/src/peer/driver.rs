//! A task that owns one core [`Client`] (a client has one per shard, see `shards`): it
//! turns commands into core calls, the core's transmits into HTTP exchanges, WebSocket
//! connections and TCP streams (ZeroMQ), and the core's events into answers.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{FutureExt as _, StreamExt as _};
use futures_util::stream::FuturesUnordered;
use grenache_core::dht::bep44::Target;
use grenache_core::peer::{
    Client, ClientEvent, ClientStats, CommandId, ConnId, GetItem, HttpId, HttpRequest,
    HttpResponse, Io, LinkEvent, PeerAddr, Protocol, Put, RequestOptions, StreamOptions,
    StreamPlan, SubscriptionId, TransportError, WatchEvent, WatchId, WsMessage,
};
use serde_json::Value;

use super::config::PeerConfig;
use super::error::PeerError;
use super::http_client::HttpPool;
use super::subscription::SubEvent;
use super::watch::WatchUpdate;
use super::ws_client::{self, WsSettings};
use super::{http_client, tcp_client};
use crate::busy_poll;
use crate::runtime::Runtime;
use crate::time::Timer;
use crate::tls::TlsClient;

/// Where one answer goes: a one-shot channel, the cheapest to make, since every request
/// makes one.
pub(crate) type Reply<T> = futures_channel::oneshot::Sender<T>;

/// Where the answer to an announce goes.
type Done = Reply<Result<(), PeerError>>;

/// Callers waiting for the first round of one announce schedule, at most; later callers
/// are answered at once (the schedule exists).
const MAX_FIRST_ROUND_WAITERS: usize = 256;

/// Reports from I/O tasks waiting for the driver, at most; past it, those tasks wait.
const IO_QUEUE: usize = 1024;

/// Messages waiting to be written on one WebSocket (or writes on one TCP stream), at most;
/// past it, the connection is treated as broken.
const CONN_QUEUE: usize = 1024;

/// Commands, and I/O reports, handled at most per pass of the driver's loop beyond the
/// one that woke it.
const BATCH: usize = 64;

/// What a [`PeerClient`](super::PeerClient) asks of the driver.
pub(crate) enum Command {
    Lookup {
        name: String,
        reply: Reply<Result<Vec<PeerAddr>, PeerError>>,
    },
    Announce {
        name: String,
        port: u16,
        reply: Done,
    },
    StartAnnouncing {
        name: String,
        port: u16,
        reply: Done,
    },
    StopAnnouncing {
        name: String,
        port: u16,
        reply: Option<Reply<bool>>,
    },
    /// `reply: None` for `Drop`, which cannot wait.
    Unannounce {
        name: String,
        port: u16,
        reply: Option<Done>,
    },
    Put {
        put: Put,
        reply: Reply<Result<Target, PeerError>>,
    },
    Get {
        target: Target,
        salt: Option<String>,
        reply: Reply<Result<Option<GetItem>, PeerError>>,
    },
    Request {
        name: String,
        payload: Value,
        opts: RequestOptions,
        reply: Reply<Result<Value, PeerError>>,
    },
    Map {
        name: String,
        payload: Value,
        opts: RequestOptions,
        reply: Reply<Result<Vec<Value>, PeerError>>,
    },
    Subscribe {
        channel: String,
        #[allow(clippy::type_complexity)]
        reply: Reply<Result<(SubscriptionId, async_channel::Receiver<SubEvent>), PeerError>>,
    },
    Unsubscribe {
        sub: SubscriptionId,
    },
    Watch {
        name: String,
        #[allow(clippy::type_complexity)]
        reply: Reply<Result<(WatchId, async_channel::Receiver<WatchUpdate>), PeerError>>,
    },
    Unwatch {
        watch: WatchId,
    },
    Stats {
        reply: Reply<ClientStats>,
    },
    /// The peer and rid of a request stream's next attempt, among `peers`.
    PlanStream {
        name: String,
        peers: Vec<PeerAddr>,
        opts: StreamOptions,
        reply: Reply<Option<StreamPlan>>,
    },
    /// A request stream could not reach `peer`.
    StreamUnreached {
        peer: PeerAddr,
    },
}

/// An HTTP exchange the driver runs itself: its id and reply, `None` past its deadline.
type Exchange = Pin<Box<dyn Future<Output = Option<HttpReply>> + Send>>;

/// A finished exchange: its id and what came back.
type HttpReply = (HttpId, Result<HttpResponse, TransportError>);

/// The next finished exchange the core still waits for (one past its deadline yields
/// `None` and is skipped: the core has given up on it); `None` when none is under way.
async fn next_reply(exchanges: &mut FuturesUnordered<Exchange>) -> Option<HttpReply> {
    loop {
        match exchanges.next().await {
            Some(Some(reply)) => return Some(reply),
            Some(None) => {}
            None => return None,
        }
    }
}

/// What an I/O task reports.
pub(crate) enum IoEvent {
    WsOpen(ConnId),
    WsMessage(ConnId, WsMessage),
    WsClosed(ConnId),
    /// The dial met a server of another protocol (in place of `WsClosed`).
    WsWrongTransport(ConnId, Protocol),
    TcpOpen(ConnId),
    TcpData(ConnId, Vec<u8>),
    TcpClosed(ConnId),
}

/// Who waits for a command's terminal event.
enum Waiter {
    Lookup(Reply<Result<Vec<PeerAddr>, PeerError>>),
    Announce(Done),
    Put(Reply<Result<Target, PeerError>>),
    Get(Reply<Result<Option<GetItem>, PeerError>>),
    Request(Reply<Result<Value, PeerError>>),
    Map(Reply<Result<Vec<Value>, PeerError>>),
}

/// What woke the driver.
enum Wake {
    Command(Command),
    Io(IoEvent),
    Http(HttpId, Result<HttpResponse, TransportError>),
    Timer,
    Stop,
}

/// The driver task's state.
pub(crate) struct Driver<R: Runtime> {
    client: Client,
    /// Pinned, so that the loop can poll it as a stream (see [`Driver::run`]).
    commands: Pin<Box<async_channel::Receiver<Command>>>,
    io_tx: async_channel::Sender<IoEvent>,
    io_rx: Pin<Box<async_channel::Receiver<IoEvent>>>,
    /// Bounded by the core, which refuses commands past `max_pending`.
    waiters: BTreeMap<CommandId, Waiter>,
    /// Bounded by the core's schedule cap times [`MAX_FIRST_ROUND_WAITERS`].
    first_rounds: BTreeMap<(String, u16), Vec<Done>>,
    /// Bounded by the core's subscription cap.
    subs: BTreeMap<SubscriptionId, async_channel::Sender<SubEvent>>,
    /// Bounded by the core's watch caps; each holds only the latest update.
    watches: BTreeMap<WatchId, async_channel::Sender<WatchUpdate>>,
    /// Bounded by the core's connection caps.
    conns: BTreeMap<ConnId, async_channel::Sender<WsMessage>>,
    /// The write queues of TCP streams; bounded like `conns`.
    streams: BTreeMap<ConnId, async_channel::Sender<Vec<u8>>>,
    http: Arc<HttpPool>,
    /// HTTP exchanges under way, polled by this task: no task spawned and no report queued
    /// per request. Bounded by the core's `max_pending` (one exchange per attempt).
    exchanges: FuturesUnordered<Exchange>,
    max_body: usize,
    ws: WsSettings,
    /// The busy-poll window of the connections this driver opens ([`crate::busy_poll`]).
    busy_poll: Option<Duration>,
    subscription_queue: usize,
    dropped_sub_events: u64,
    runtime: PhantomData<R>,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        client: Client,
        commands: async_channel::Receiver<Command>,
        config: &PeerConfig,
        tls: Option<Arc<TlsClient>>,
        http: Arc<HttpPool>,
    ) -> Self {
        let (io_tx, io_rx) = async_channel::bounded(IO_QUEUE);
        let c = &config.client;
        // The largest thing any part of the core reads; each part checks its own limit,
        // so a body cut one byte past this is still reported as too long.
        let max_body = c.link.max_reply_len.max(c.rpc.max_frame_len);
        let max_message = max_body.max(c.sub.max_message_len);
        Driver {
            client,
            commands: Box::pin(commands),
            io_tx,
            io_rx: Box::pin(io_rx),
            waiters: BTreeMap::new(),
            first_rounds: BTreeMap::new(),
            subs: BTreeMap::new(),
            watches: BTreeMap::new(),
            conns: BTreeMap::new(),
            streams: BTreeMap::new(),
            http,
            exchanges: FuturesUnordered::new(),
            max_body,
            ws: WsSettings {
                connect_timeout: config.connect_timeout,
                max_message_len: max_message,
                tls,
            },
            busy_poll: config.busy_poll,
            subscription_queue: config.subscription_queue.max(1),
            dropped_sub_events: 0,
            runtime: PhantomData,
        }
    }

    /// Runs until every handle is gone: drains the core's output, then sleeps on whichever
    /// comes first (command, I/O report, timer).
    ///
    /// The receivers are polled as streams, which keep their listener from one pass to the
    /// next, and the timer stays armed while the core's deadline is no earlier than it: a
    /// pass (twice per request at one in flight) then makes neither a listener for the
    /// input that did not fire nor a timer. A timer that fires early only costs a pass.
    pub(crate) async fn run(mut self) {
        let mut now = R::now();
        let mut timer = Timer::<R>::default();
        loop {
            self.flush(now);
            let deadline = self.client.poll_timeout();
            timer.arm(deadline);
            let wake = {
                let commands = &mut self.commands;
                let io_rx = &mut self.io_rx;
                let command = async {
                    match commands.next().await {
                        Some(command) => Wake::Command(command),
                        None => Wake::Stop,
                    }
                };
                let io = async {
                    match io_rx.next().await {
                        Some(event) => Wake::Io(event),
                        // Unreachable while `io_tx` lives in `self`.
                        None => std::future::pending().await,
                    }
                };
                let exchanges = &mut self.exchanges;
                let http = async {
                    match next_reply(exchanges).await {
                        Some((id, reply)) => Wake::Http(id, reply),
                        None => std::future::pending().await,
                    }
                };
                let fired = async {
                    timer.wait().await;
                    Wake::Timer
                };
                // `race` picks a random ready branch, so a flood of one input cannot starve another.
                command.race(io).race(http).race(fired).await
            };
            now = R::now();
            match wake {
                Wake::Command(command) => self.handle_command(now, command),
                Wake::Io(event) => self.handle_io(now, event),
                Wake::Http(id, reply) => self.client.handle_http_reply(now, id, reply),
                Wake::Timer => {}
                Wake::Stop => break,
            }
            self.take_queued(now);
            self.take_replies(now).await;
            if deadline.is_some_and(|at| at <= now) {
                self.client.handle_timeout(now);
            }
        }
        tracing::debug!(
            waiting = self.waiters.len(),
            conns = self.conns.len(),
            "peer client stopped"
        );
    }

    /// Handles what else is already queued (up to [`BATCH`] of each kind) before the next
    /// flush: under load many callers queue at once, and one pass of the loop (a flush, a
    /// timer armed, the receivers polled) for all of them costs far less than one each. It
    /// also lets a connection's writes for many requests go out together. Bounded, so
    /// neither kind can keep the other (or the timer) waiting long.
    fn take_queued(&mut self, now: Instant) {
        for _ in 0..BATCH {
            let Ok(command) = self.commands.try_recv() else {
                break;
            };
            self.handle_command(now, command);
        }
        for _ in 0..BATCH {
            let Ok(event) = self.io_rx.try_recv() else {
                break;
            };
            self.handle_io(now, event);
        }
    }

    /// Hands the core the replies of every exchange already finished (up to [`BATCH`]), as
    /// [`take_queued`](Self::take_queued) does for reports: one pass for many of them.
    async fn take_replies(&mut self, now: Instant) {
        for _ in 0..BATCH {
            let Some(Some((id, reply))) =
                futures_lite::future::poll_once(next_reply(&mut self.exchanges)).await
            else {
                break;
            };
            self.client.handle_http_reply(now, id, reply);
        }
    }

    /// Performs every queued transmit and answers every queued event, until neither is left
    /// (a failed hand-off is itself reported to the core, which may queue more).
    fn flush(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(transmit) = self.client.poll_transmit() {
                moved = true;
                self.perform(now, transmit);
            }
            while let Some(event) = self.client.poll_event() {
                moved = true;
                self.deliver(event);
            }
            while let Some(event) = self.client.poll_watch() {
                moved = true;
                self.deliver_watch(event);
            }
            if !moved {
                break;
            }
        }
    }

    fn perform(&mut self, now: Instant, transmit: Io) {
        match transmit {
            Io::Http(request) => self.exchanges.push(exchange::<R>(
                Arc::clone(&self.http),
                request,
                self.max_body,
            )),
            Io::WsConnect { conn, url } => {
                let (tx, rx) = async_channel::bounded(CONN_QUEUE);
                self.conns.insert(conn, tx);
                busy_poll::spawn_detached::<R>(
                    self.busy_poll,
                    ws_client::run::<R>(conn, url, rx, self.io_tx.clone(), self.ws.clone()),
                );
            }
            Io::WsSend { conn, msg } => {
                let Some(tx) = self.conns.get(&conn) else {
                    tracing::debug!(%conn, "send on a connection already gone");
                    return;
                };
                if let Err(err) = tx.try_send(msg) {
                    // The socket does not keep up (or its task ended): treat it as closed.
                    tracing::warn!(%conn, full = err.is_full(), "WebSocket write queue refused a message; closing");
                    self.conns.remove(&conn);
                    self.client.handle_ws_closed(now, conn);
                }
            }
            Io::WsClose { conn } => {
                // Dropping the queue makes the connection task close the socket, quietly.
                self.conns.remove(&conn);
            }
            Io::TcpConnect { conn, addr } => {
                let (tx, rx) = async_channel::bounded(CONN_QUEUE);
                self.streams.insert(conn, tx);
                let connect_timeout = self.ws.connect_timeout;
                busy_poll::spawn_detached::<R>(
                    self.busy_poll,
                    tcp_client::run::<R>(conn, addr, rx, self.io_tx.clone(), connect_timeout),
                );
            }
            Io::TcpSend { conn, bytes } => {
                let Some(tx) = self.streams.get(&conn) else {
                    tracing::debug!(%conn, "write on a stream already gone");
                    return;
                };
                if let Err(err) = tx.try_send(bytes) {
                    tracing::warn!(%conn, full = err.is_full(), "TCP write queue refused bytes; closing");
                    self.streams.remove(&conn);
                    self.client.handle_tcp_closed(now, conn);
                }
            }
            Io::TcpClose { conn } => {
                self.streams.remove(&conn);
            }
        }
    }

    fn deliver(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Link(LinkEvent::Lookup { id, result, .. }) => {
                match self.waiters.remove(&id) {
                    Some(Waiter::Lookup(reply)) => send(reply, result.map_err(PeerError::Link)),
                    other => unexpected(id, other.is_some()),
                }
            }
            ClientEvent::Link(
                LinkEvent::Announce { id, result } | LinkEvent::Unannounce { id, result },
            ) => match self.waiters.remove(&id) {
                Some(Waiter::Announce(reply)) => send(reply, result.map_err(PeerError::Link)),
                other => unexpected(id, other.is_some()),
            },
            ClientEvent::Link(LinkEvent::Put { id, result }) => match self.waiters.remove(&id) {
                Some(Waiter::Put(reply)) => send(reply, result.map_err(PeerError::Link)),
                other => unexpected(id, other.is_some()),
            },
            ClientEvent::Link(LinkEvent::Get { id, result }) => match self.waiters.remove(&id) {
                Some(Waiter::Get(reply)) => send(reply, result.map_err(PeerError::Link)),
                other => unexpected(id, other.is_some()),
            },
            ClientEvent::Link(LinkEvent::Announcing { name, port, result }) => {
                if let Err(err) = &result {
                    tracing::warn!(name, port, %err, "announce round failed; retrying soon");
                }
                if let Some(waiters) = self.first_rounds.remove(&(name, port)) {
                    for reply in waiters {
                        send(reply, result.clone().map_err(PeerError::Link));
                    }
                }
            }
            ClientEvent::Reply { id, result } => match self.waiters.remove(&id) {
                Some(Waiter::Request(reply)) => send(reply, result.map_err(PeerError::Rpc)),
                other => unexpected(id, other.is_some()),
            },
            ClientEvent::Map { id, result } => match self.waiters.remove(&id) {
                Some(Waiter::Map(reply)) => send(reply, result.map_err(PeerError::Rpc)),
                other => unexpected(id, other.is_some()),
            },
            ClientEvent::Subscribed { sub, addr } => self.forward(sub, SubEvent::Subscribed(addr)),
            ClientEvent::Message { sub, msg } => self.forward(sub, SubEvent::Message(msg)),
            ClientEvent::Disconnected {
                sub,
                error,
                retry_at,
            } => self.forward(sub, SubEvent::Disconnected { error, retry_at }),
            other => tracing::debug!(?other, "event with no receiver"),
        }
    }

    /// Hands a watch its latest update, replacing one it has not read yet; an update
    /// for a dropped watch ends it.
    fn deliver_watch(&mut self, event: WatchEvent) {
        let Some(tx) = self.watches.get(&event.watch) else {
            return;
        };
        let ended = event.peers.is_err();
        if tx.force_send(event.peers).is_err() {
            self.watches.remove(&event.watch);
            self.client.unwatch(event.watch);
        } else if ended {
            // Dropping the sender closes the channel after the last update is read.
            self.watches.remove(&event.watch);
        }
    }

    fn forward(&mut self, sub: SubscriptionId, event: SubEvent) {
        let Some(tx) = self.subs.get(&sub) else {
            return;
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(async_channel::TrySendError::Full(_)) => {
                self.dropped_sub_events += 1;
                let n = self.dropped_sub_events;
                if n.is_power_of_two() {
                    tracing::warn!(%sub, total = n, "subscription not read fast enough; event dropped");
                }
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                self.subs.remove(&sub);
                self.client.unsubscribe(sub);
            }
        }
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Lookup { name, reply } => {
                let id = self.client.lookup(now, &name);
                self.wait(id, reply, Waiter::Lookup);
            }
            Command::Announce { name, port, reply } => {
                let id = self.client.announce(now, &name, port);
                self.wait(id, reply, Waiter::Announce);
            }
            Command::StartAnnouncing { name, port, reply } => {
                match self.client.start_announcing(now, &name, port) {
                    Ok(true) => self
                        .first_rounds
                        .entry((name, port))
                        .or_default()
                        .push(reply),
                    Ok(false) => match self.first_rounds.get_mut(&(name, port)) {
                        Some(waiters) if waiters.len() < MAX_FIRST_ROUND_WAITERS => {
                            waiters.push(reply);
                        }
                        _ => send(reply, Ok(())),
                    },
                    Err(err) => send(reply, Err(PeerError::Refused(err))),
                }
            }
            Command::StopAnnouncing { name, port, reply } => {
                let stopped = self.client.stop_announcing(&name, port);
                self.cancel_first_round(name, port);
                if let Some(reply) = reply {
                    send(reply, stopped);
                }
            }
            Command::Unannounce { name, port, reply } => {
                // The core stops the schedule too.
                let id = self.client.unannounce(now, &name, port);
                self.cancel_first_round(name, port);
                match reply {
                    Some(reply) => self.wait(id, reply, Waiter::Announce),
                    None => {
                        if let Err(err) = id {
                            tracing::debug!(%err, "unannounce on drop refused");
                        }
                    }
                }
            }
            Command::Put { put, reply } => {
                let id = self.client.put(now, put);
                self.wait(id, reply, Waiter::Put);
            }
            Command::Get {
                target,
                salt,
                reply,
            } => {
                let id = self.client.get(now, target, salt.as_deref());
                self.wait(id, reply, Waiter::Get);
            }
            Command::Request {
                name,
                payload,
                opts,
                reply,
            } => {
                let id = self.client.request(now, &name, &payload, &opts);
                self.wait(id, reply, Waiter::Request);
            }
            Command::Map {
                name,
                payload,
                opts,
                reply,
            } => {
                let id = self.client.map(now, &name, &payload, &opts);
                self.wait(id, reply, Waiter::Map);
            }
            Command::Subscribe { channel, reply } => match self.client.subscribe(now, &channel) {
                Ok(sub) => {
                    let (tx, rx) = async_channel::bounded(self.subscription_queue);
                    self.subs.insert(sub, tx);
                    send(reply, Ok((sub, rx)));
                }
                Err(err) => send(reply, Err(PeerError::Refused(err))),
            },
            Command::Unsubscribe { sub } => {
                self.subs.remove(&sub);
                self.client.unsubscribe(sub);
            }
            Command::Watch { name, reply } => match self.client.watch(now, &name) {
                Ok(watch) => {
                    let (tx, rx) = async_channel::bounded(1);
                    self.watches.insert(watch, tx);
                    send(reply, Ok((watch, rx)));
                }
                Err(err) => send(reply, Err(PeerError::Refused(err))),
            },
            Command::Unwatch { watch } => {
                self.watches.remove(&watch);
                self.client.unwatch(watch);
            }
            Command::Stats { reply } => send(reply, self.client.stats()),
            Command::PlanStream {
                name,
                peers,
                opts,
                reply,
            } => send(reply, self.client.plan_stream(now, &name, &peers, &opts)),
            Command::StreamUnreached { peer } => self.client.stream_unreached(now, &peer),
        }
    }

    /// Answers the waiters of a schedule's first round, which ends unreported once the
    /// schedule is stopped.
    fn cancel_first_round(&mut self, name: String, port: u16) {
        for waiter in self.first_rounds.remove(&(name, port)).unwrap_or_default() {
            send(waiter, Err(PeerError::Cancelled));
        }
    }

    /// Files the waiter of a command the core took, or answers a refused one at once.
    fn wait<T>(
        &mut self,
        id: Result<CommandId, grenache_core::peer::CommandError>,
        reply: Reply<Result<T, PeerError>>,
        waiter: impl FnOnce(Reply<Result<T, PeerError>>) -> Waiter,
    ) {
        match id {
            Ok(id) => {
                self.waiters.insert(id, waiter(reply));
            }
            Err(err) => send(reply, Err(PeerError::Refused(err))),
        }
    }

    fn handle_io(&mut self, now: Instant, event: IoEvent) {
        match event {
            IoEvent::WsOpen(conn) => self.client.handle_ws_open(now, conn),
            IoEvent::WsMessage(conn, msg) => self.client.handle_ws_message(now, conn, msg),
            IoEvent::WsClosed(conn) => {
                self.conns.remove(&conn);
                self.client.handle_ws_closed(now, conn);
            }
            IoEvent::WsWrongTransport(conn, met) => {
                self.conns.remove(&conn);
                self.client.handle_ws_wrong_transport(now, conn, met);
            }
            IoEvent::TcpOpen(conn) => self.client.handle_tcp_open(now, conn),
            IoEvent::TcpData(conn, bytes) => self.client.handle_tcp_data(now, conn, &bytes),
            IoEvent::TcpClosed(conn) => {
                self.streams.remove(&conn);
                self.client.handle_tcp_closed(now, conn);
            }
        }
    }
}

/// One HTTP exchange, to be polled by the driver; `None` once its deadline passed.
fn exchange<R: Runtime>(pool: Arc<HttpPool>, request: HttpRequest, max_body: usize) -> Exchange {
    Box::pin(async move {
        let id = request.id;
        let reply = http_client::exchange::<R>(&pool, request, max_body).await?;
        Some((id, reply))
    })
}

/// Logs a terminal event nobody waits for (or, a bug, a waiter of another kind).
fn unexpected(id: CommandId, kind_mismatch: bool) {
    if kind_mismatch {
        tracing::error!(%id, "event of another kind than its command");
    } else {
        tracing::debug!(%id, "event for a command nobody waits for");
    }
}

/// Answers a caller; one that stopped waiting (its future was dropped) is no error.
fn send<T>(reply: Reply<T>, value: T) {
    let _ = reply.send(value);
}
