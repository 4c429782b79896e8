//! The one task that owns the core's [`Grape`], the DHT socket and the request queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use grenache_core::api::{
    ApiConnection, ApiError, Grape, HttpBody, MAX_WATCH_WAIT, Reply, RequestId, WsConn,
};
use grenache_core::dht::Transmit;
use hyper::{Method, Uri};

use super::hot::HotLookups;
use crate::config::Limits;
use crate::http_server::Body;
use crate::runtime::Runtime;
use crate::state::StateSaver;
use crate::stop::Stop;
use crate::time::Timer;
use crate::udp::DhtSocket;
use crate::ws_server::Out;

/// Datagrams read per wake-up when they queue up: each trip round the loop sets up a fresh
/// timer and a four-way wait, so under a flood one trip serves a burst (two batched reads).
/// Small enough that API requests and timers still get their turn between bursts.
const RECV_BURST: usize = 64;

/// Commands taken per wake-up when they queue up: under load the loop's fixed cost (a
/// fresh timer, a four-way wait, a flush) is paid once per burst instead of once per
/// request, and the replies of a burst leave together. Small enough that datagrams and
/// timers still get their turn between bursts.
const COMMAND_BURST: usize = 64;

/// How often HTTP requests past their reply deadline are looked for (only while some wait).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What an HTTP request's connection gets back from the driver.
#[derive(Debug)]
pub(crate) enum Answered {
    /// The core's reply.
    Reply(Reply),
    /// The core did not answer by the request's deadline (a bug there: it answers every
    /// request itself).
    TimedOut,
}

/// A request for the core, sent by an API connection.
pub(crate) enum Command {
    /// A client opened an API connection: may it keep it?
    Connect {
        client: SocketAddr,
        reply: async_channel::Sender<Result<ApiConnection, ApiError>>,
    },
    /// An API connection that held a client's slot ended.
    Disconnected(ApiConnection),
    /// One HTTP request from `client`; the reply goes back on `reply`.
    Http {
        client: SocketAddr,
        method: Method,
        uri: Uri,
        body: Body,
        reply: async_channel::Sender<Answered>,
    },
    /// One WebSocket message on connection `conn` from `client`; the reply goes back on
    /// its queue.
    Ws {
        conn: WsConn,
        client: SocketAddr,
        text: Vec<u8>,
        reply: async_channel::Sender<Out>,
    },
    /// A WebSocket connection closed: its watches end.
    WsClosed(WsConn),
    /// Tests only: the driver says so on `held`, then serves nothing until `until` closes.
    #[cfg(feature = "testkit")]
    Hold {
        held: async_channel::Sender<()>,
        until: async_channel::Receiver<()>,
    },
}

/// Where a WebSocket connection's replies go.
type WsSender = async_channel::Sender<Out>;

/// Counters of I/O trouble, shared with [`GrapeServer`](super::server::GrapeServer).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) send_errors: AtomicU64,
    pub(crate) recv_errors: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

/// Where a pending request's reply goes.
enum Pending {
    /// An HTTP request, answered [`Answered::TimedOut`] if the core has not answered by
    /// `deadline`.
    Http {
        tx: async_channel::Sender<Answered>,
        deadline: Instant,
    },
    Ws(async_channel::Sender<Out>),
}

impl Pending {
    fn is_closed(&self) -> bool {
        match self {
            Self::Http { tx, .. } => tx.is_closed(),
            Self::Ws(tx) => tx.is_closed(),
        }
    }

    fn deliver(self, reply: Reply) {
        // A full or closed queue means the client left (or a WS client overran its cap,
        // which its connection prevents): the reply has nowhere to go.
        let delivered = match self {
            Self::Http { tx, .. } => tx.try_send(Answered::Reply(reply)).is_ok(),
            Self::Ws(tx) => tx.try_send(ws_frame(reply)).is_ok(),
        };
        if !delivered {
            tracing::debug!("reply dropped: its client is gone");
        }
    }
}

/// What woke the driver.
enum Wake {
    /// The DHT socket is readable (or failed).
    Readable(std::io::Result<()>),
    Timer,
    Command(Command),
    Stop,
}

/// The driver task's state.
pub(crate) struct Driver<R: Runtime> {
    grape: Grape,
    socket: DhtSocket<R>,
    /// The core's datagrams, gathered so they leave in batches.
    outbox: Vec<Transmit>,
    commands: async_channel::Receiver<Command>,
    stop: Stop,
    counters: Arc<Counters>,
    /// The connections' copy of the lookup cache, whose hits are reported to the core.
    hot: Arc<HotLookups>,
    max_pending: usize,
    pending: HashMap<RequestId, Pending>,
    next_req: u64,
    state: StateSaver,
    /// The backstop on the core's answer to an HTTP request ([`Limits::reply_timeout`]).
    ///
    /// [`Limits::reply_timeout`]: crate::Limits::reply_timeout
    reply_timeout: Duration,
    /// When to look next for HTTP requests past their deadline: one timer for all of them,
    /// where a timer per request cost a share of each request's CPU.
    next_sweep: Instant,
    /// Tests only: what the driver waits on before it serves anything else.
    #[cfg(feature = "testkit")]
    held: Option<(async_channel::Sender<()>, async_channel::Receiver<()>)>,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        mut grape: Grape,
        socket: DhtSocket<R>,
        commands: async_channel::Receiver<Command>,
        stop: Stop,
        counters: Arc<Counters>,
        limits: &Limits,
        state: StateSaver,
    ) -> Self {
        let hot = Arc::new(HotLookups::new(R::now()));
        grape.mirror_lookup_cache(hot.writer());
        Self {
            grape,
            socket,
            outbox: Vec::new(),
            commands,
            stop,
            counters,
            hot,
            max_pending: limits.max_pending(),
            pending: HashMap::new(),
            next_req: 0,
            state,
            reply_timeout: limits.reply_timeout,
            next_sweep: R::now() + SWEEP_EVERY,
            #[cfg(feature = "testkit")]
            held: None,
        }
    }

    /// The copy of the core's lookup cache, for the connections to answer hot lookups from.
    pub(crate) fn hot_lookups(&self) -> Arc<HotLookups> {
        Arc::clone(&self.hot)
    }

    /// Runs until `stop` fires: drains the core's output, then sleeps on whichever input
    /// comes first (datagram, timer, request, stop). Saves the state file (if any) when due
    /// and once more on the way out.
    ///
    /// The timer is kept across passes and re-armed only for an earlier deadline: under
    /// load the loop turns tens of thousands of times a second, and a new sleep each pass
    /// registered and dropped a runtime timer every time. A timer that fires early only
    /// costs a pass.
    pub(crate) async fn run(mut self) {
        let mut timer = Timer::<R>::default();
        loop {
            self.flush().await;
            let deadline = self.grape.poll_timeout();
            let wake_at = self.state.wake_at(deadline);
            let wake_at = if self.pending.is_empty() {
                wake_at
            } else {
                Some(wake_at.map_or(self.next_sweep, |at| at.min(self.next_sweep)))
            };
            timer.arm(wake_at);
            let wake = {
                let datagram = async { Wake::Readable(self.socket.readable().await) };
                let fired = async {
                    timer.wait().await;
                    Wake::Timer
                };
                let command = async {
                    match self.commands.recv().await {
                        Ok(cmd) => Wake::Command(cmd),
                        Err(_) => Wake::Stop,
                    }
                };
                let stop = async {
                    self.stop.wait().await;
                    Wake::Stop
                };
                // `race` picks a random ready branch, so a flood of one input cannot starve another.
                stop.race(command).race(datagram).race(fired).await
            };
            let now = R::now();
            match wake {
                Wake::Readable(Ok(())) => self.read_burst(now),
                Wake::Readable(Err(err)) => self.recv_failed(&err),
                Wake::Timer => {}
                Wake::Command(cmd) => self.command_burst(now, cmd),
                Wake::Stop => break,
            }
            if deadline.is_some_and(|at| at <= now) {
                self.grape.handle_timeout(now);
            }
            self.state.tick(now, &self.grape);
            if now >= self.next_sweep {
                self.sweep(now);
            }
            #[cfg(feature = "testkit")]
            if let Some((held, until)) = self.held.take() {
                let _ = held.try_send(());
                let _ = until.recv().await;
            }
        }
        self.flush().await;
        self.state.save(R::now(), &self.grape);
        tracing::debug!(pending = self.pending.len(), "driver stopped");
    }

    /// Hands the core what the socket has queued, up to [`RECV_BURST`] datagrams.
    fn read_burst(&mut self, now: Instant) {
        let mut read = 0;
        while read < RECV_BURST {
            let grape = &mut self.grape;
            match self
                .socket
                .recv(|from, bytes| grape.handle_datagram(now, from, bytes))
            {
                Ok(n) => read += n.max(1),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    self.recv_failed(&err);
                    read += 1;
                }
            }
        }
    }

    fn recv_failed(&self, err: &std::io::Error) {
        let n = self.counters.recv_errors.fetch_add(1, Ordering::Relaxed) + 1;
        log_io_error(n, "DHT socket read failed", err, None);
    }

    /// Sends every queued datagram and hands every queued reply to its requester.
    async fn flush(&mut self) {
        self.outbox
            .extend(std::iter::from_fn(|| self.grape.poll_transmit()));
        let counters = &self.counters;
        self.socket
            .send_all(&mut self.outbox, |err, to| {
                let n = counters.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                log_io_error(n, "DHT send failed", err, Some(to));
            })
            .await;
        while let Some(reply) = self.grape.poll_reply() {
            if reply.more {
                // A watch's push: the request stays routed until the core ends it.
                match self.pending.get(&reply.req) {
                    Some(Pending::Ws(tx)) => push_ws(tx, ws_frame(reply)),
                    _ => tracing::debug!(req = reply.req.0, "push to a closed watch"),
                }
                continue;
            }
            match self.pending.remove(&reply.req) {
                Some(pending) => pending.deliver(reply),
                None => tracing::warn!(req = reply.req.0, "reply to an unknown request"),
            }
        }
        while let Some(req) = self.grape.poll_ended() {
            if let Some(Pending::Ws(tx)) = self.pending.remove(&req) {
                push_ws(&tx, Out::Ended);
            }
        }
    }

    /// Handles `first`, then whatever else is queued, up to [`COMMAND_BURST`] in all.
    fn command_burst(&mut self, now: Instant, first: Command) {
        // Hits answered on the connections count before anything that reads the counts.
        self.hot.report(&mut self.grape);
        self.handle_command(now, first);
        for _ in 1..COMMAND_BURST {
            let Ok(cmd) = self.commands.try_recv() else {
                break;
            };
            self.handle_command(now, cmd);
        }
    }

    /// Answers [`Answered::TimedOut`] to HTTP requests past their deadline.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_EVERY;
        self.pending.retain(|_, pending| match pending {
            Pending::Http { tx, deadline } if *deadline <= now => {
                tracing::warn!("no reply from the core in time");
                let _ = tx.try_send(Answered::TimedOut);
                false
            }
            _ => true,
        });
    }

    fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Connect { client, reply } => {
                // The connection waits on this answer; a closed queue means it is gone.
                if let Err(refused) = reply.try_send(self.grape.api_connected(client))
                    && let Ok(conn) = refused.into_inner()
                {
                    self.grape.api_disconnected(conn);
                }
            }
            Command::Disconnected(conn) => self.grape.api_disconnected(conn),
            Command::Http {
                client,
                method,
                uri,
                body,
                reply,
            } => {
                // A `/watch` waits for a change, up to its `wait`; the core answers it by then.
                let wait = if uri.path() == "/watch" {
                    MAX_WATCH_WAIT
                } else {
                    Duration::ZERO
                };
                let deadline = now + self.reply_timeout + wait;
                let Some(req) = self.admit(Pending::Http {
                    tx: reply,
                    deadline,
                }) else {
                    return;
                };
                let body = match &body {
                    Body::Complete(bytes) => HttpBody::Complete(bytes),
                    Body::TooLarge(_) => HttpBody::TooLarge,
                };
                let target = super::http::target(&uri);
                self.grape
                    .handle_http(now, client, req, method.as_str(), target, body);
            }
            Command::WsClosed(conn) => self.grape.ws_closed(conn),
            #[cfg(feature = "testkit")]
            Command::Hold { held, until } => self.held = Some((held, until)),
            Command::Ws {
                conn,
                client,
                text,
                reply,
            } => {
                let Some(req) = self.admit(Pending::Ws(reply.clone())) else {
                    // The connection closes itself on this, so its client sees the failure.
                    let _ = reply.try_send(Out::Overloaded);
                    return;
                };
                self.grape.handle_ws(now, conn, client, req, &text);
            }
        }
    }

    /// Files a request under a fresh id, or refuses it when the pending table is full
    /// even after dropping entries whose client has gone.
    fn admit(&mut self, pending: Pending) -> Option<RequestId> {
        if self.pending.len() >= self.max_pending {
            self.pending.retain(|_, p| !p.is_closed());
        }
        if self.pending.len() >= self.max_pending {
            let n = self.counters.rejected.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(total = n, "request refused: too many waiting for the core");
            return None;
        }
        let req = RequestId(self.next_req);
        self.next_req = self.next_req.wrapping_add(1);
        self.pending.insert(req, pending);
        Some(req)
    }
}

/// A reply as a WebSocket answer: a watch's pushes ([`Reply::more`]) leave it in flight.
fn ws_frame(reply: Reply) -> Out {
    Out::Frame {
        done: !reply.more,
        bytes: reply.body,
    }
}

/// Queues a watch's push or end for its connection; a connection too slow to read its
/// pushes loses them (its queue holds twice its in-flight cap).
fn push_ws(tx: &WsSender, out: Out) {
    if tx.try_send(out).is_err() {
        tracing::debug!("watch push dropped: its connection is gone or not reading");
    }
}

/// Logs the `n`th I/O error: at warn level for the 1st, 2nd, 4th, 8th... so a burst (a
/// route gone, say) is visible without flooding the log; the rest at debug level.
fn log_io_error(n: u64, what: &str, err: &std::io::Error, peer: Option<SocketAddr>) {
    if n.is_power_of_two() {
        tracing::warn!(%err, ?peer, total = n, "{what}");
    } else {
        tracing::debug!(%err, ?peer, total = n, "{what}");
    }
}
