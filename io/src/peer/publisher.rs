//! A PUB/SUB publisher (grenache-nodejs-ws `PeerPub`, or a ZeroMQ PUB): a server whose
//! every connection is a subscriber, sent each published message verbatim. The fan-out
//! state is the core's [`Publisher`](grenache_core::peer::Publisher); a ZeroMQ
//! subscriber's ZMTP and subscriptions are the core's
//! [`ZmqPubConn`](grenache_core::peer::ZmqPubConn).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_lite::{FutureExt as _, StreamExt as _};
use grenache_core::peer::{
    ConnId, DEFAULT_MAX_FRAME_LEN, Io, PubSubTransport, PublishError, WsMessage, ZmqPubConn,
};

use super::client::PeerClient;
use super::config::PublisherConfig;
use super::curve::{CurveStats, ZmqSecurity};
use super::error::{PeerError, ServerError};
use super::listen::{Announced, bind, write_zmq};
use super::ws_client::to_message;
use crate::listen::{AcceptLimits, accept_loop};
use crate::runtime::Runtime;
use crate::stop::{Stop, StopTrigger, stop_pair};
use crate::task::Task;
use crate::time::sleep_until;
use crate::tls::{Accepted, TlsServer, TlsStats};
use crate::ws_batch::write_batch;
use crate::ws_server;

/// The fan-out state, shared by `publish` and the connection tasks.
struct State {
    core: grenache_core::peer::Publisher,
    /// Each subscriber's write queue.
    queues: BTreeMap<ConnId, async_channel::Sender<WsMessage>>,
}

struct Shared {
    state: Mutex<State>,
    config: PublisherConfig,
    tls: Option<TlsServer>,
    zmq_security: ZmqSecurity,
    stop: Stop,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running publisher. It serves until [`stop`](Self::stop) or until dropped; both stop
/// announcing its channels and unannounce them (`stop` waits for the Grape's answer).
pub struct Publisher<R: Runtime> {
    addr: SocketAddr,
    shared: Arc<Shared>,
    announced: Announced<R>,
    stop: StopTrigger,
    task: Task<R>,
}

impl<R: Runtime> std::fmt::Debug for Publisher<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("addr", &self.addr)
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Publisher<R> {
    /// Listens for subscribers, announcing nothing: call [`announce`](Self::announce)
    /// (or use [`start`](Self::start)).
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub async fn listen(config: PublisherConfig) -> Result<Self, ServerError> {
        if config.tls.is_some() && config.transport == PubSubTransport::Zmq {
            return Err(ServerError::TlsUnsupported);
        }
        let (listener, addr) = bind::<R>(SocketAddr::new(config.bind, config.port))?;
        let (trigger, stop) = stop_pair();
        let max = config.max_subscribers.max(1);
        let limits = AcceptLimits {
            max_connections: max,
            drain: config.drain_timeout,
            busy_poll: None,
        };
        let shared = Arc::new(Shared {
            // Every publish is drained into the subscribers' queues at once, so the core's
            // queue never holds more than one copy per subscriber.
            state: Mutex::new(State {
                core: grenache_core::peer::Publisher::new(max, max),
                queues: BTreeMap::new(),
            }),
            tls: config.tls.clone().map(TlsServer::new),
            zmq_security: ZmqSecurity::new(config.curve.as_ref()),
            config,
            stop: stop.clone(),
        });
        let conn_shared = Arc::clone(&shared);
        let transport = shared.config.transport;
        let task = Task::spawn(accept_loop::<R, _, _>(
            listener,
            "publisher",
            limits,
            stop,
            move |stream, _peer| {
                let shared = Arc::clone(&conn_shared);
                async move {
                    match transport {
                        PubSubTransport::Ws => serve_subscriber::<R>(stream, shared).await,
                        PubSubTransport::Zmq => serve_zmq_subscriber::<R>(stream, shared).await,
                    }
                }
            },
        ));
        tracing::debug!(%addr, "publisher listening");
        Ok(Publisher {
            addr,
            shared,
            announced: Announced::default(),
            stop: trigger,
            task,
        })
    }

    /// [`listen`](Self::listen), then [`announce`](Self::announce) `channel`: returns once
    /// the Grape has taken the first announce, so subscribers find the publisher.
    ///
    /// # Errors
    /// [`ServerError::Bind`], or [`ServerError::Announce`] (the publisher is stopped then).
    pub async fn start(
        client: &PeerClient<R>,
        channel: &str,
        config: PublisherConfig,
    ) -> Result<Self, ServerError> {
        let publisher = Self::listen(config).await?;
        if let Err(err) = publisher.announce(client, channel).await {
            publisher.stop().await;
            return Err(ServerError::Announce(err));
        }
        Ok(publisher)
    }

    /// Announces `channel` at this publisher's port through `client`, again and again
    /// until it stops; returns when the first round ends.
    ///
    /// # Errors
    /// The first round's error (the schedule stays and retries), or
    /// [`PeerError::Refused`] for a bad name.
    pub async fn announce(&self, client: &PeerClient<R>, channel: &str) -> Result<(), PeerError> {
        self.announced.add(client, channel, self.port()).await
    }

    /// Sends `msg` to every connected subscriber; returns how many will get it. A
    /// subscriber whose queue is full is disconnected instead (it reconnects).
    ///
    /// # Errors
    /// [`PublishError::QueueFull`] cannot happen here (the queue is drained at once) but
    /// is kept for the core's contract.
    pub fn publish(&self, msg: WsMessage) -> Result<usize, PublishError> {
        let mut state = self.shared.state();
        state.core.publish(msg)?;
        let mut sent = 0;
        let mut slow = Vec::new();
        while let Some(transmit) = state.core.poll_transmit() {
            let Io::WsSend { conn, msg } = transmit else {
                continue;
            };
            match state.queues.get(&conn).map(|queue| queue.try_send(msg)) {
                Some(Ok(())) => sent += 1,
                _ => slow.push(conn),
            }
        }
        for conn in slow {
            tracing::warn!(%conn, "subscriber too slow; disconnecting it");
            // Dropping its queue makes its task close the connection.
            state.queues.remove(&conn);
            state.core.handle_closed(conn);
        }
        Ok(sent)
    }

    /// [`publish`](Self::publish) a text message.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn publish_text(&self, text: impl Into<String>) -> Result<usize, PublishError> {
        self.publish(WsMessage::Text(text.into()))
    }

    /// TLS handshakes, and those refused by reason (all zero without TLS).
    pub fn tls_stats(&self) -> TlsStats {
        self.shared
            .tls
            .as_ref()
            .map_or_else(TlsStats::default, TlsServer::stats)
    }

    /// ZeroMQ security handshakes: CURVE ones that succeeded, and those refused by reason.
    pub fn curve_stats(&self) -> CurveStats {
        self.shared.zmq_security.snapshot()
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.shared.state().core.subscribers().count()
    }

    /// The address the publisher listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the publisher listens on (and announces).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops announcing and unannounces (waiting for the Grape), closes every subscriber
    /// connection and stops listening.
    pub async fn stop(mut self) {
        self.announced.stop_all(self.port()).await;
        self.stop.fire();
        self.task.join().await;
    }
}

impl<R: Runtime> Drop for Publisher<R> {
    fn drop(&mut self) {
        self.announced.stop_all_now(self.port());
        self.stop.fire();
    }
}

/// Registers a subscriber's write queue with the core; `None` when the table is full.
fn register(shared: &Shared) -> Option<(ConnId, async_channel::Receiver<WsMessage>)> {
    let (queue, outgoing) = async_channel::bounded(shared.config.subscriber_queue.max(1));
    let mut state = shared.state();
    match state.core.accept() {
        Ok(conn) => {
            state.queues.insert(conn, queue);
            Some((conn, outgoing))
        }
        Err(err) => {
            tracing::warn!(%err, "subscriber refused");
            None
        }
    }
}

/// Forgets a subscriber that left.
fn unregister(shared: &Shared, conn: ConnId) {
    let mut state = shared.state();
    state.queues.remove(&conn);
    state.core.handle_closed(conn);
}

/// What woke a subscriber connection.
enum Wake {
    Incoming(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Outgoing(Option<WsMessage>),
    Stop,
}

/// Serves one subscriber: writes what `publish` queues, ignores what it sends, ends when
/// it leaves, falls behind or the publisher stops.
async fn serve_subscriber<R: Runtime>(stream: R::TcpStream, shared: Arc<Shared>) {
    let config = &shared.config;
    let limit = config.handshake_timeout;
    let Some(accepted) = Accepted::<R>::new(shared.tls.as_ref(), stream, limit).await else {
        return;
    };
    let (stream, _peer) = accepted.into_ws();
    // Registered before the handshake's 101 goes out: a subscriber that has seen it is
    // counted, and every message published from then on is queued for it.
    let registered = register(&shared);
    let Some(mut ws) = ws_server::accept::<R>(stream, config.max_message_len, limit).await else {
        if let Some((conn, _)) = registered {
            unregister(&shared, conn);
        }
        return;
    };
    let Some((conn, outgoing)) = registered else {
        ws_server::close::<R>(&mut ws, CloseCode::Again, config.drain_timeout).await;
        return;
    };
    tracing::debug!(%conn, "subscriber connected");
    loop {
        let wake = async { Wake::Incoming(ws.next().await) }
            .race(async { Wake::Outgoing(outgoing.recv().await.ok()) })
            .race(async {
                shared.stop.wait().await;
                Wake::Stop
            })
            .await;
        match wake {
            Wake::Incoming(Some(Ok(_))) => {} // subscribers have nothing to say
            Wake::Incoming(Some(Err(_)) | None) | Wake::Outgoing(None) | Wake::Stop => break,
            Wake::Outgoing(Some(msg)) => {
                // What else is queued goes out with it, in one write.
                let next = || outgoing.try_recv().ok().map(to_message);
                if let Err(err) = write_batch(&mut ws, to_message(msg), next).await {
                    tracing::debug!(%conn, %err, "subscriber write failed");
                    break;
                }
            }
        }
    }
    unregister(&shared, conn);
    tracing::debug!(%conn, "subscriber gone");
    ws_server::close::<R>(&mut ws, CloseCode::Normal, config.drain_timeout).await;
}

/// What woke a ZeroMQ subscriber connection.
enum ZmqWake {
    Incoming(std::io::Result<usize>),
    Outgoing(Option<WsMessage>),
    Stop,
    Timeout,
}

/// Serves one ZeroMQ subscriber: reads its handshake and subscriptions, writes each
/// published message it subscribed to as one frame, ends when it leaves, breaks ZMTP,
/// does not finish its handshake in time, falls behind, or the publisher stops.
async fn serve_zmq_subscriber<R: Runtime>(mut stream: R::TcpStream, shared: Arc<Shared>) {
    let config = &shared.config;
    // The ZMTP limit bounds what we send as well as what we read: size it for published
    // messages (as large as a subscriber takes by default), not for the subscriptions
    // that `max_message_len` is about.
    let max = DEFAULT_MAX_FRAME_LEN.max(config.max_message_len);
    let security = shared.zmq_security.security();
    let mut zmq = ZmqPubConn::secure(max, security, &mut ZmqSecurity::rng());
    let Some((conn, outgoing)) = register(&shared) else {
        return;
    };
    let handshake_until = R::now() + config.handshake_timeout;
    let mut heartbeat = config.heartbeat.start(R::now());
    let mut buf = vec![0u8; 4096];
    loop {
        if !write_zmq::<R>(&mut stream, &zmq.take_output()).await {
            break;
        }
        let handshake = (!zmq.is_ready()).then_some(handshake_until);
        let beat_at = heartbeat.poll_timeout();
        let deadline = Some(handshake.map_or(beat_at, |d| d.min(beat_at)));
        let wake = async { ZmqWake::Incoming(R::read(&mut stream, &mut buf).await) }
            .race(async { ZmqWake::Outgoing(outgoing.recv().await.ok()) })
            .race(async {
                shared.stop.wait().await;
                ZmqWake::Stop
            })
            .race(async {
                sleep_until::<R>(deadline).await;
                ZmqWake::Timeout
            })
            .await;
        match wake {
            ZmqWake::Incoming(Ok(n)) if n > 0 => {
                heartbeat.heard(R::now());
                let was_ready = zmq.is_ready();
                let read = zmq.handle_input(buf.get(..n).unwrap_or_default());
                shared
                    .zmq_security
                    .record(zmq.zmtp(), was_ready, read.as_ref().map(|_| ()));
                if let Err(err) = read {
                    tracing::debug!(%conn, %err, "ZeroMQ subscriber broke ZMTP");
                    let _ = write_zmq::<R>(&mut stream, &zmq.take_output()).await;
                    break;
                }
            }
            ZmqWake::Outgoing(Some(msg)) => {
                if let Err(err) = zmq.publish(msg.as_bytes()) {
                    tracing::debug!(%conn, %err, "message not sent to a ZeroMQ subscriber");
                }
            }
            ZmqWake::Timeout => {
                let now = R::now();
                if handshake.is_some_and(|d| now >= d) {
                    tracing::debug!(%conn, "ZeroMQ subscriber did not finish its handshake");
                    break;
                }
                if let Err(err) = heartbeat.tick(zmq.zmtp(), now) {
                    tracing::debug!(%conn, %err, "ZeroMQ subscriber gone silent");
                    break;
                }
            }
            ZmqWake::Incoming(_) | ZmqWake::Outgoing(None) | ZmqWake::Stop => break,
        }
    }
    unregister(&shared, conn);
    tracing::debug!(%conn, "ZeroMQ subscriber gone");
}
