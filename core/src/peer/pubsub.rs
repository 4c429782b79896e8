//! PUB/SUB over WebSocket (protocol §7): the publisher's fan-out and the subscribers'
//! connect-and-reconnect schedule.
//!
//! A publisher listens on a WebSocket port, announces the channel name like a service
//! (`start_announcing(channel, port)`), and sends every message verbatim to each connected
//! subscriber. A subscriber looks the channel up, connects to `ws://host:port/ws` and
//! receives. Node's subscriber never reconnects; this one does, after a back-off: 1 s,
//! doubling up to 30 s, each drawn in `[d/2, d]` so subscribers of a restarted publisher
//! do not return in step. A connection that stayed open 10 s resets the back-off, and a
//! failed subscriber forgets the cached lookup so it asks the Grape afresh, and tries
//! the next publisher in the list.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::peer::client::ClientEvent;
use crate::peer::error::LinkError;
use crate::peer::link::jitter_half;
use crate::peer::types::{ConnId, Ids, Io, PeerAddr, SubscriptionId, TransportError, WsMessage};
use crate::peer::zmq;
use crate::peer::zmtp::{Connection, Heartbeat, HeartbeatConfig, Security, SocketType, ZmtpEvent};

/// Which transport subscriptions use (the publisher must speak the same one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PubSubTransport {
    /// `ws://host:port/ws`, one message per WebSocket message (grenache-nodejs-ws).
    #[default]
    Ws,
    /// A ZeroMQ SUB to the publisher's PUB on `tcp://host:port`, subscribed to everything,
    /// one message per one-frame ZeroMQ message.
    Zmq,
}

/// Settings of the subscriber side.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubConfig {
    /// WebSocket or ZeroMQ.
    pub transport: PubSubTransport,
    /// First reconnect delay (default 1 s).
    pub backoff_first: Duration,
    /// Longest reconnect delay (default 30 s).
    pub backoff_max: Duration,
    /// A connection open this long resets the back-off (default 10 s).
    pub stable_after: Duration,
    /// Subscriptions at once, at most.
    pub max_subscriptions: usize,
    /// Longest message delivered; longer ones are dropped and counted.
    pub max_message_len: usize,
    /// Messages waiting to be polled, at most; past it new ones are dropped and counted.
    pub max_queued_messages: usize,
    /// Dial publishers over TLS (`wss://`); the adapter holds the certificates.
    pub secure: bool,
    /// ZeroMQ only: speak CURVE to publishers holding the server key the config has for
    /// the channel (its own, or the default); `None`: NULL.
    pub curve: Option<std::sync::Arc<crate::peer::zmtp::CurveClientConfig>>,
    /// ZeroMQ only: PING a publisher that has been silent this long, and reconnect when
    /// it stays silent (a publisher behind a pulled cable sends no FIN, and a quiet
    /// channel looks the same as a dead one). `None`: no PINGs.
    pub heartbeat: Option<HeartbeatConfig>,
}

impl Default for SubConfig {
    fn default() -> Self {
        SubConfig {
            transport: PubSubTransport::Ws,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            max_subscriptions: 1024,
            max_message_len: crate::peer::framing::DEFAULT_MAX_FRAME_LEN,
            max_queued_messages: 4096,
            secure: false,
            curve: None,
            heartbeat: Some(HeartbeatConfig::default()),
        }
    }
}

/// Subscriber counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubStats {
    /// Messages delivered.
    pub messages: u64,
    /// Messages dropped (too long, several ZeroMQ frames, or nobody polled).
    pub dropped_messages: u64,
    /// Connections attempted.
    pub connects: u64,
}

#[derive(Debug)]
pub(crate) struct Subs {
    config: SubConfig,
    subs: BTreeMap<SubscriptionId, Sub>,
    by_conn: BTreeMap<ConnId, SubscriptionId>,
    /// The ZMTP state of ZeroMQ connections.
    zmtp: BTreeMap<ConnId, Connection>,
    /// The PING clocks of ZeroMQ connections, from when they were dialled.
    beats: BTreeMap<ConnId, Heartbeat>,
    /// Subscriptions that need a lookup; the owner asks the Link.
    pub(crate) lookups: VecDeque<(SubscriptionId, String)>,
    pub(crate) transmits: VecDeque<Io>,
    pub(crate) events: VecDeque<ClientEvent>,
    /// Messages among `events`, for the queue bound.
    queued_messages: usize,
    pub(crate) stats: SubStats,
}

#[derive(Debug)]
struct Sub {
    channel: String,
    state: State,
    failures: u32,
    /// Which publisher of the list to try next.
    cursor: usize,
}

#[derive(Debug)]
enum State {
    Lookup,
    Connecting { conn: ConnId, addr: PeerAddr },
    Open { conn: ConnId, since: Instant },
    Waiting { until: Instant },
}

impl Subs {
    pub(crate) fn new(config: SubConfig) -> Self {
        Subs {
            config,
            subs: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            zmtp: BTreeMap::new(),
            beats: BTreeMap::new(),
            lookups: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            queued_messages: 0,
            stats: SubStats::default(),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.subs.len() >= self.config.max_subscriptions
    }

    pub(crate) fn subscribe(&mut self, sub: SubscriptionId, channel: &str) {
        self.subs.insert(
            sub,
            Sub {
                channel: channel.to_owned(),
                state: State::Lookup,
                failures: 0,
                cursor: 0,
            },
        );
        self.lookups.push_back((sub, channel.to_owned()));
    }

    pub(crate) fn unsubscribe(&mut self, sub: SubscriptionId) -> bool {
        let Some(s) = self.subs.remove(&sub) else {
            return false;
        };
        if let State::Connecting { conn, .. } | State::Open { conn, .. } = s.state {
            self.by_conn.remove(&conn);
            self.beats.remove(&conn);
            self.transmits.push_back(match self.zmtp.remove(&conn) {
                Some(_) => Io::TcpClose { conn },
                None => Io::WsClose { conn },
            });
        }
        true
    }

    pub(crate) fn owns_conn(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    /// The lookup for `sub` ended: connect to a publisher, or wait and retry.
    pub(crate) fn handle_lookup(
        &mut self,
        now: Instant,
        sub: SubscriptionId,
        result: Result<Vec<PeerAddr>, LinkError>,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let Some(s) = self.subs.get_mut(&sub) else {
            return;
        };
        if !matches!(s.state, State::Lookup) {
            return;
        }
        let peers = match result {
            Ok(peers) if !peers.is_empty() => peers,
            Ok(_) => return self.fail(now, sub, LinkError::LookupEmpty, rng),
            Err(e) => return self.fail(now, sub, e, rng),
        };
        let Some(addr) = peers.get(s.cursor % peers.len()).cloned() else {
            return;
        };
        s.cursor = s.cursor.wrapping_add(1);
        let security = Security::client_for(self.config.curve.as_ref(), &s.channel);
        let conn = ConnId(ids.next());
        s.state = State::Connecting {
            conn,
            addr: addr.clone(),
        };
        self.by_conn.insert(conn, sub);
        self.stats.connects += 1;
        match self.config.transport {
            PubSubTransport::Ws => self.transmits.push_back(Io::WsConnect {
                conn,
                url: addr.ws_url_as(self.config.secure),
            }),
            PubSubTransport::Zmq => {
                self.transmits.push_back(Io::TcpConnect {
                    conn,
                    addr: addr.clone(),
                });
                let limits = zmq::limits(self.config.max_message_len, 1);
                let mut zmtp =
                    Connection::secure(SocketType::Sub, Vec::new(), limits, &security, rng);
                if let Err(e) = zmtp.subscribe(b"") {
                    tracing::error!(error = %e, "a new SUB refused to subscribe");
                }
                self.flush(conn, &mut zmtp);
                self.zmtp.insert(conn, zmtp);
                if let Some(heartbeat) = self.config.heartbeat {
                    self.beats.insert(conn, heartbeat.start(now));
                }
            }
        }
        tracing::debug!(%sub, %addr, "subscriber connecting");
    }

    /// Bytes from a ZeroMQ publisher: the handshake, then messages. Returns the channel
    /// when the connection failed (see [`Subs::handle_closed`]).
    pub(crate) fn handle_tcp_data(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: &[u8],
        rng: &mut impl Rng,
    ) -> Option<String> {
        let mut zmtp = self.zmtp.remove(&conn)?;
        if let Some(heartbeat) = self.beats.get_mut(&conn) {
            heartbeat.heard(now);
        }
        let read = zmtp.handle_input(bytes);
        while let Some(event) = zmtp.poll_event() {
            match event {
                ZmtpEvent::Ready { .. } => self.handle_ws_open(now, conn),
                ZmtpEvent::Message(mut frames) if frames.len() == 1 => {
                    let frame = frames.pop().unwrap_or_default();
                    let msg = match String::from_utf8(frame) {
                        Ok(text) => WsMessage::Text(text),
                        Err(e) => WsMessage::Binary(e.into_bytes()),
                    };
                    self.handle_ws_message(conn, msg);
                }
                ZmtpEvent::Message(_) => {
                    self.stats.dropped_messages += 1;
                    tracing::debug!(%conn, "dropping a published message of several frames");
                }
                ZmtpEvent::Subscribe(_) | ZmtpEvent::Cancel(_) => {}
            }
        }
        self.flush(conn, &mut zmtp);
        match read {
            Ok(()) => {
                self.zmtp.insert(conn, zmtp);
                None
            }
            Err(e) => {
                tracing::debug!(%conn, error = %e, "ZeroMQ subscription failed");
                self.transmits.push_back(Io::TcpClose { conn });
                let error = if crate::peer::rpc::is_security_failure(&e) {
                    security_error(&e)
                } else {
                    LinkError::TransportClose
                };
                self.close_with(now, conn, error, rng)
            }
        }
    }

    fn flush(&mut self, conn: ConnId, zmtp: &mut Connection) {
        let bytes = zmtp.take_output();
        if !bytes.is_empty() {
            self.transmits.push_back(Io::TcpSend { conn, bytes });
        }
    }

    /// A connection is open (ZeroMQ: its handshake is done): the subscription is live.
    pub(crate) fn handle_ws_open(&mut self, now: Instant, conn: ConnId) {
        let Some(&sub) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(s) = self.subs.get_mut(&sub) else {
            return;
        };
        let State::Connecting { conn: c, addr } = &s.state else {
            return;
        };
        if *c != conn {
            return;
        }
        let addr = addr.clone();
        s.state = State::Open { conn, since: now };
        self.events.push_back(ClientEvent::Subscribed { sub, addr });
    }

    pub(crate) fn handle_ws_message(&mut self, conn: ConnId, msg: WsMessage) {
        let Some(&sub) = self.by_conn.get(&conn) else {
            return;
        };
        if msg.as_bytes().len() > self.config.max_message_len
            || self.queued_messages >= self.config.max_queued_messages
        {
            self.stats.dropped_messages += 1;
            tracing::warn!(%sub, "dropping a published message");
            return;
        }
        self.stats.messages += 1;
        self.queued_messages += 1;
        self.events.push_back(ClientEvent::Message { sub, msg });
    }

    /// A message event left the queue.
    pub(crate) fn message_polled(&mut self) {
        self.queued_messages = self.queued_messages.saturating_sub(1);
    }

    /// The connection closed or could not be made: report, and plan a reconnect.
    /// Returns the channel, whose cached lookup the owner should forget.
    pub(crate) fn handle_closed(
        &mut self,
        now: Instant,
        conn: ConnId,
        rng: &mut impl Rng,
    ) -> Option<String> {
        let error = match self.zmtp.get(&conn).and_then(Connection::close_reason) {
            Some(e) => security_error(&e),
            None => LinkError::TransportClose,
        };
        self.close_with(now, conn, error, rng)
    }

    /// Ends a connection, reporting `error` to its subscription.
    fn close_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        error: LinkError,
        rng: &mut impl Rng,
    ) -> Option<String> {
        self.zmtp.remove(&conn);
        self.beats.remove(&conn);
        let sub = self.by_conn.remove(&conn)?;
        let s = self.subs.get_mut(&sub)?;
        if let State::Open { since, .. } = s.state
            && now.saturating_duration_since(since) >= self.config.stable_after
        {
            s.failures = 0;
        }
        let channel = s.channel.clone();
        self.fail(now, sub, error, rng);
        Some(channel)
    }

    /// Waiting subscriptions whose time came go back to looking up; ZeroMQ PINGs that
    /// are due go out, and a publisher silent past the heartbeat timeout is dropped (the
    /// subscription reconnects). Returns the channels whose cached lookup the owner
    /// should forget, as [`Subs::handle_closed`] does.
    pub(crate) fn handle_timeout(&mut self, now: Instant, rng: &mut impl Rng) -> Vec<String> {
        for (&sub, s) in &mut self.subs {
            if let State::Waiting { until } = s.state
                && until <= now
            {
                s.state = State::Lookup;
                self.lookups.push_back((sub, s.channel.clone()));
            }
        }
        let mut silent = Vec::new();
        for (&conn, heartbeat) in &mut self.beats {
            let Some(zmtp) = self.zmtp.get_mut(&conn) else {
                continue;
            };
            if heartbeat.poll_timeout() > now {
                continue;
            }
            match heartbeat.tick(zmtp, now) {
                Ok(()) => {
                    let bytes = zmtp.take_output();
                    if !bytes.is_empty() {
                        self.transmits.push_back(Io::TcpSend { conn, bytes });
                    }
                }
                Err(err) => silent.push((conn, err)),
            }
        }
        let mut forget = Vec::new();
        for (conn, err) in silent {
            tracing::debug!(%conn, error = %err, "ZeroMQ publisher gone silent; reconnecting");
            self.transmits.push_back(Io::TcpClose { conn });
            let error =
                LinkError::Transport(TransportError::new(format!("ERR_HEARTBEAT_TIMEOUT: {err}")));
            forget.extend(self.close_with(now, conn, error, rng));
        }
        forget
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let waiting = self.subs.values().filter_map(|s| match s.state {
            State::Waiting { until } => Some(until),
            _ => None,
        });
        waiting
            .chain(self.beats.values().map(Heartbeat::poll_timeout))
            .min()
    }

    /// A lookup could not even be started (the Link is full): try again later, quietly.
    pub(crate) fn lookup_refused(&mut self, now: Instant, sub: SubscriptionId, rng: &mut impl Rng) {
        if let Some(s) = self.subs.get_mut(&sub) {
            s.failures = s.failures.saturating_add(1);
            let delay = backoff(&self.config, s.failures, rng);
            s.state = State::Waiting { until: now + delay };
        }
    }

    fn fail(&mut self, now: Instant, sub: SubscriptionId, error: LinkError, rng: &mut impl Rng) {
        let Some(s) = self.subs.get_mut(&sub) else {
            return;
        };
        s.failures = s.failures.saturating_add(1);
        let retry_at = now + backoff(&self.config, s.failures, rng);
        s.state = State::Waiting { until: retry_at };
        tracing::debug!(%sub, %error, ?retry_at, "subscriber disconnected");
        self.events.push_back(ClientEvent::Disconnected {
            sub,
            error,
            retry_at,
        });
    }
}

/// How a subscriber reports a failed ZeroMQ security handshake (the text of
/// [`RpcError::Security`](crate::peer::RpcError::Security)).
fn security_error(err: &crate::peer::zmtp::ZmtpError) -> LinkError {
    LinkError::Transport(TransportError::unsent(format!("ERR_ZMQ_SECURITY: {err}")))
}

/// Delay before the `failures`-th reconnect: `first × 2^(failures-1)`, capped, in `[d/2, d]`.
fn backoff(config: &SubConfig, failures: u32, rng: &mut impl Rng) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let d = config
        .backoff_first
        .saturating_mul(1 << exp)
        .min(config.backoff_max);
    jitter_half(d, rng)
}

/// The fan-out state of one publisher (sans-IO): who is subscribed, what to send them.
///
/// The adapter accepts WebSocket connections on the publisher's port, calls
/// [`Publisher::accept`] for each (closing it on error), [`Publisher::handle_closed`] when
/// one goes, and sends what [`Publisher::poll_transmit`] gives. Announce the channel with
/// `start_announcing(channel, port)` on the Link or Client.
#[derive(Debug)]
pub struct Publisher {
    subscribers: BTreeSet<ConnId>,
    next: u64,
    max_subscribers: usize,
    max_queued: usize,
    queue: VecDeque<(ConnId, WsMessage)>,
}

/// Why a publisher refused something.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The subscriber table is full; close the new connection.
    #[error("ERR_TOO_MANY_SUBSCRIBERS")]
    TooManySubscribers,
    /// Messages are waiting to be sent; drain `poll_transmit` first.
    #[error("ERR_PUBLISH_QUEUE_FULL")]
    QueueFull,
}

impl Publisher {
    /// A publisher with room for `max_subscribers` and `max_queued` unsent messages.
    pub fn new(max_subscribers: usize, max_queued: usize) -> Self {
        Publisher {
            subscribers: BTreeSet::new(),
            next: 0,
            max_subscribers,
            max_queued,
            queue: VecDeque::new(),
        }
    }

    /// Registers a new subscriber connection and names it.
    ///
    /// # Errors
    /// [`PublishError::TooManySubscribers`].
    pub fn accept(&mut self) -> Result<ConnId, PublishError> {
        if self.subscribers.len() >= self.max_subscribers {
            return Err(PublishError::TooManySubscribers);
        }
        self.next += 1;
        let conn = ConnId(self.next);
        self.subscribers.insert(conn);
        Ok(conn)
    }

    /// A subscriber connection closed; its unsent messages are dropped.
    pub fn handle_closed(&mut self, conn: ConnId) {
        self.subscribers.remove(&conn);
        self.queue.retain(|(c, _)| *c != conn);
    }

    /// Queues `msg`, verbatim, for every subscriber; returns how many will get it.
    ///
    /// # Errors
    /// [`PublishError::QueueFull`] when the copies would not fit; nothing is queued then.
    pub fn publish(&mut self, msg: WsMessage) -> Result<usize, PublishError> {
        if self.queue.len() + self.subscribers.len() > self.max_queued {
            return Err(PublishError::QueueFull);
        }
        for &conn in &self.subscribers {
            self.queue.push_back((conn, msg.clone()));
        }
        Ok(self.subscribers.len())
    }

    /// Connected subscribers, in the order they came.
    pub fn subscribers(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.subscribers.iter().copied()
    }

    /// The next message to send: as a [`Io::WsSend`].
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Io> {
        self.queue
            .pop_front()
            .map(|(conn, msg)| Io::WsSend { conn, msg })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn publisher_sends_every_message_to_every_subscriber_verbatim() {
        let mut p = Publisher::new(10, 100);
        let a = p.accept().expect("room");
        let b = p.accept().expect("room");

        let n = p.publish(WsMessage::Text("hello".into())).expect("room");
        let sent: Vec<Io> = std::iter::from_fn(|| p.poll_transmit()).collect();

        assert_eq!(n, 2);
        assert_eq!(
            sent,
            vec![
                Io::WsSend {
                    conn: a,
                    msg: WsMessage::Text("hello".into())
                },
                Io::WsSend {
                    conn: b,
                    msg: WsMessage::Text("hello".into())
                }
            ]
        );
    }

    #[test]
    fn publisher_caps_subscribers_and_queue() {
        let mut p = Publisher::new(2, 3);
        let a = p.accept().expect("room");
        let _b = p.accept().expect("room");

        let third = p.accept();
        p.publish(WsMessage::Binary(vec![1])).expect("room");
        let full = p.publish(WsMessage::Binary(vec![2]));
        p.handle_closed(a);

        assert_eq!(third, Err(PublishError::TooManySubscribers));
        assert_eq!(full, Err(PublishError::QueueFull));
        assert_eq!(p.subscribers().count(), 1);
        assert_eq!(std::iter::from_fn(|| p.poll_transmit()).count(), 1);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let config = SubConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(2);

        let delays: Vec<Duration> = (1..=8).map(|n| backoff(&config, n, &mut rng)).collect();

        let bounds = [1, 2, 4, 8, 16, 30, 30, 30];
        for (d, hi) in delays.iter().zip(bounds) {
            let hi = Duration::from_secs(hi);
            assert!(
                *d >= hi / 2 && *d <= hi,
                "{d:?} not in [{:?}, {hi:?}]",
                hi / 2
            );
        }
    }
}
