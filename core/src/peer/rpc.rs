//! The RPC client's bookkeeping: attempts, peer choice, connections, timeouts (§6, §7).
//!
//! A call (request or map) waits for its lookup, then sends one attempt per chosen peer.
//! Each attempt has its own rid (uuid v4), deadline and transport: one HTTP exchange, or a
//! frame on the peer's WebSocket (one connection per peer, many frames in flight, matched
//! by rid). The owner ([`crate::peer::Client`]) feeds lookups in and drains events out.
//!
//! A peer that cannot be reached (the adapter reports [`Delivery::Unsent`], or a connection
//! closes before any request went out on it) costs no attempt: the request goes on to the
//! next peer at once, and the peer is skipped for [`RpcConfig::dead_peer_ttl`]. A request
//! that may have reached its peer is never sent again unless the caller asked for
//! `attempts` (Node's `retry`, for handlers that may run twice).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::peer::balance::{Balancer, DeadPeers, PeerChoice, map_targets};
use crate::peer::client::ClientEvent;
use crate::peer::error::{CommandError, LinkError, RpcError};
use crate::peer::framing::{
    Compression, DEFAULT_MAX_FRAME_LEN, FrameError, decode_reply, encode_request_json, gunzip,
    gzip, json_text, push_json,
};
use crate::peer::sniff::Protocol;
use crate::peer::stream::{StreamHead, StreamOptions, StreamPlan};
use crate::peer::types::{
    CommandId, ConnId, Delivery, HttpId, HttpMethod, HttpRequest, HttpResponse, Ids, Io, PeerAddr,
    Rid, TransportError, WsMessage, request_id,
};
use crate::peer::zmq::{self, decode_zmq_reply};
use crate::peer::zmtp::{
    Connection, CurveClientConfig, Heartbeat, HeartbeatConfig, Security, SocketType, ZmtpError,
    ZmtpEvent,
};
use std::sync::Arc;

/// Longest error body from a peer kept in [`RpcError::Request`].
const MAX_ERROR_BODY: usize = 1024;

/// Requests one ZeroMQ connection holds while its handshake is under way.
const MAX_ZMQ_QUEUED: usize = 4096;

/// Which transport peer RPC uses (the server must speak the same one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RpcTransport {
    /// `POST http://host:port/` per request (grenache-nodejs-http).
    #[default]
    Http,
    /// Text frames on `ws://host:port/ws` (grenache-nodejs-ws).
    Ws,
    /// A ZeroMQ DEALER to the peer's ROUTER on `tcp://host:port` (grenache-nodejs-zmq's
    /// frames; see [`ZmqServerConn`](crate::peer::ZmqServerConn) and docs/zeromq-wire.md).
    Zmq,
}

/// Settings of the RPC client.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcConfig {
    /// Transport to the peers.
    pub transport: RpcTransport,
    /// Default time for one attempt (Node's transport default: 60 s).
    pub timeout: Duration,
    /// How a request picks its peer.
    pub choice: PeerChoice,
    /// Default for gzip on HTTP (`grc-compress`).
    pub compress: bool,
    /// Longest request or reply frame.
    pub max_frame_len: usize,
    /// WebSocket or ZeroMQ connections open at once, at most.
    pub max_connections: usize,
    /// A WebSocket or ZeroMQ connection with nothing in flight for this long is closed
    /// (Node: 120 s).
    pub idle_timeout: Duration,
    /// How long a peer that could not be reached is left out of the choice (unless every
    /// peer is). A Grape lists a stopped server until its announce expires (2 min).
    pub dead_peer_ttl: Duration,
    /// Dial peers over TLS (`https://`, `wss://`); the adapter holds the certificates.
    pub secure: bool,
    /// ZeroMQ only: speak CURVE with these keys to servers holding the server key the
    /// config has for the called service (its own, or the default: a service network's
    /// key). `None`: the NULL mechanism. A mismatch either way fails at once with
    /// [`RpcError::Security`].
    pub curve: Option<Arc<CurveClientConfig>>,
    /// ZeroMQ only: PING a server that has been silent this long, and fail the requests
    /// on its connection with [`RpcError::HeartbeatTimeout`] when it stays silent (a
    /// server behind a pulled cable sends no FIN). `None`: no PINGs; a silent server is
    /// noticed only by each request's timeout.
    pub heartbeat: Option<HeartbeatConfig>,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            transport: RpcTransport::Http,
            timeout: Duration::from_secs(60),
            choice: PeerChoice::RoundRobin,
            compress: false,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_connections: 256,
            idle_timeout: Duration::from_secs(120),
            dead_peer_ttl: Duration::from_secs(10),
            secure: false,
            curve: None,
            heartbeat: Some(HeartbeatConfig::default()),
        }
    }
}

/// Per-call options; `RequestOptions::default()` takes everything from [`RpcConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Time for one attempt, instead of [`RpcConfig::timeout`].
    pub timeout: Option<Duration>,
    /// Tries of a request, each to the next chosen peer (Node's `retry`; 0 and 1 mean one).
    /// A try that may have reached its peer (timeout, reset, error reply) is repeated only
    /// within this count, so set it above one only for handlers that may run twice. A peer
    /// that could not be reached costs no try. A map tries each peer once.
    pub attempts: u32,
    /// gzip for this call, instead of [`RpcConfig::compress`] (HTTP only).
    pub compress: Option<bool>,
    /// For a map: this many peers drawn at random; 0 means every peer.
    pub limit: usize,
}

impl RequestOptions {
    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the number of tries.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Turns gzip on or off.
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = Some(compress);
        self
    }

    /// Limits a map to `limit` random peers.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

/// Counters for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcStats {
    /// Attempts sent (retries and map branches included).
    pub attempts: u64,
    /// WebSocket or ZeroMQ messages from peers that were not a reply.
    pub bad_frames: u64,
    /// Replies for attempts no longer pending.
    pub late_replies: u64,
    /// WebSocket or ZeroMQ connections opened.
    pub connects: u64,
    /// Attempts that never reached their peer (refused or failed connect) and went on to
    /// another one, or failed the call when none was left.
    pub unreached: u64,
}

#[derive(Debug)]
pub(crate) struct Rpc {
    config: RpcConfig,
    calls: BTreeMap<CommandId, Call>,
    attempts: BTreeMap<Rid, Attempt>,
    by_http: BTreeMap<HttpId, Rid>,
    conns: BTreeMap<ConnId, Conn>,
    by_addr: BTreeMap<PeerAddr, ConnId>,
    deadlines: BTreeSet<(Instant, Rid)>,
    balancer: Balancer,
    dead: DeadPeers,
    /// Calls that want a fresh lookup of a name (see [`Refresh`]); the owner forgets its
    /// cached lookup and answers through [`Rpc::handle_lookup`].
    pub(crate) lookups: VecDeque<(CommandId, String)>,
    pub(crate) transmits: VecDeque<Io>,
    pub(crate) events: VecDeque<ClientEvent>,
    pub(crate) stats: RpcStats,
}

#[derive(Debug)]
struct Call {
    name: String,
    payload: Vec<u8>,
    timeout: Duration,
    compress: bool,
    limit: usize,
    kind: Kind,
    /// The peers still to choose from: a request drops those that failed it.
    peers: Vec<PeerAddr>,
    /// Peers this request could not connect to.
    unreachable: Vec<PeerAddr>,
    /// Whether the request has asked the Grape again (see [`Refresh`]).
    refresh: Refresh,
}

/// A request that could reach none of its peers asks the Grape once more before it fails:
/// its peers may have come from a cached lookup that a restarted server (on a new port, or
/// a new host) has made stale, and a proxy or client should find the new one at once
/// rather than fail until the cache expires.
#[derive(Debug, Default)]
enum Refresh {
    /// Not asked again (yet).
    #[default]
    NotYet,
    /// Asking; the error to report if the fresh answer holds no peer not yet tried.
    Asking(RpcError),
    /// Asked once; a call asks only once.
    Done,
}

#[derive(Debug)]
enum Kind {
    Request { attempts_left: u32 },
    Map { results: Vec<Option<Value>> },
}

#[derive(Debug)]
struct Attempt {
    call: CommandId,
    /// Where it went: if it fails, a retry goes elsewhere.
    peer: PeerAddr,
    slot: usize,
    deadline: Instant,
    via: Via,
    compress: bool,
}

/// How one attempt ended.
#[derive(Debug)]
enum End {
    /// The peer answered, or the request may have reached it before it failed.
    Done(Result<Value, RpcError>),
    /// The request never reached the peer (the error says why): the peer is dead, and
    /// the request may go to another one.
    Unreached(RpcError),
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Http(HttpId),
    /// A WebSocket or ZeroMQ connection.
    Conn(ConnId),
}

#[derive(Debug)]
struct Conn {
    addr: PeerAddr,
    open: bool,
    /// A request may have gone out on it: the WebSocket opened, or the ZeroMQ handshake
    /// finished (ZMTP holds requests until then). Until then a close reached nobody.
    reached: bool,
    /// Frames waiting for a WebSocket to open, by rid (ZMTP queues its own).
    queued: Vec<(Rid, String)>,
    inflight: BTreeSet<Rid>,
    idle_since: Instant,
    /// The ZMTP state of a ZeroMQ connection; `None` for a WebSocket.
    zmtp: Option<Connection>,
    /// A ZeroMQ connection's PING clock, from when its TCP stream opened.
    heartbeat: Option<Heartbeat>,
}

impl Rpc {
    pub(crate) fn new(config: RpcConfig) -> Self {
        Rpc {
            dead: DeadPeers::new(config.dead_peer_ttl),
            lookups: VecDeque::new(),
            config,
            calls: BTreeMap::new(),
            attempts: BTreeMap::new(),
            by_http: BTreeMap::new(),
            conns: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            balancer: Balancer::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: RpcStats::default(),
        }
    }

    /// Serializes the payload and checks the frame fits, before any lookup is started.
    pub(crate) fn prepare(&self, name: &str, payload: &Value) -> Result<Vec<u8>, CommandError> {
        let mut json = Vec::new();
        push_json(&mut json, payload);
        // 36-byte rid, the key, quotes, commas and brackets; escaping only grows it.
        let frame_len = json.len() + name.len() + 48;
        if frame_len > self.config.max_frame_len {
            return Err(CommandError::PayloadTooLarge);
        }
        Ok(json)
    }

    /// Registers a call waiting for the lookup of `name`.
    pub(crate) fn begin(
        &mut self,
        id: CommandId,
        name: &str,
        payload: Vec<u8>,
        opts: &RequestOptions,
        map: bool,
    ) {
        let kind = if map {
            Kind::Map {
                results: Vec::new(),
            }
        } else {
            Kind::Request {
                attempts_left: opts.attempts.max(1),
            }
        };
        self.calls.insert(
            id,
            Call {
                name: name.to_owned(),
                payload,
                timeout: opts.timeout.unwrap_or(self.config.timeout),
                compress: opts.compress.unwrap_or(self.config.compress),
                limit: opts.limit,
                kind,
                peers: Vec::new(),
                unreachable: Vec::new(),
                refresh: Refresh::NotYet,
            },
        );
    }

    /// The lookup for call `id` ended: send the attempts, or fail the call.
    pub(crate) fn handle_lookup(
        &mut self,
        now: Instant,
        id: CommandId,
        result: Result<Vec<PeerAddr>, LinkError>,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let refreshing = match std::mem::take(&mut call.refresh) {
            Refresh::Asking(unreached) => {
                call.refresh = Refresh::Done;
                Some(unreached)
            }
            other => {
                call.refresh = other;
                None
            }
        };
        let peers = match result {
            Ok(peers) => peers,
            Err(e) => {
                // A failed refresh reports what the call met first, which says more.
                self.end(id, Err(refreshing.unwrap_or(RpcError::Lookup(e))));
                return;
            }
        };
        match &mut call.kind {
            Kind::Request { .. } => {
                let unreachable = &call.unreachable;
                call.peers = peers
                    .into_iter()
                    .filter(|p| !unreachable.contains(p))
                    .collect();
                if let (Some(unreached), true) = (refreshing, call.peers.is_empty()) {
                    self.end_request(id, Err(unreached));
                    return;
                }
                self.send_next(now, id, ids, rng);
            }
            Kind::Map { results } => {
                let targets = map_targets(&peers, call.limit, &self.dead, now, rng);
                *results = vec![None; targets.len()];
                call.peers = targets.clone();
                if targets.is_empty() {
                    self.end(id, Ok(Vec::new()));
                    return;
                }
                for (slot, addr) in targets.into_iter().enumerate() {
                    if self.calls.contains_key(&id) {
                        self.send(now, id, slot, addr, ids, rng);
                    }
                }
            }
        }
    }

    pub(crate) fn owns_conn(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    pub(crate) fn handle_http_reply(
        &mut self,
        now: Instant,
        http: HttpId,
        reply: Result<HttpResponse, TransportError>,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let Some(&rid) = self.by_http.get(&http) else {
            self.stats.late_replies += 1;
            return;
        };
        let met = match &reply {
            Err(e) => match e.delivery {
                Delivery::WrongTransport(met) => Some(met),
                _ => None,
            },
            Ok(r) => Protocol::from_http_status(r.status),
        };
        let end = match (self.wrong(met), reply) {
            (Some(met), _) => End::Unreached(RpcError::WrongTransport(met)),
            (None, Err(e)) if e.delivery == Delivery::Unsent => {
                End::Unreached(RpcError::Request(e.message))
            }
            (None, reply) => {
                let compress = self.attempts.get(&rid).is_some_and(|a| a.compress);
                let max = self.config.max_frame_len;
                End::Done(read_http_reply(rid.as_str(), compress, reply, max))
            }
        };
        self.finish(now, rid, end, ids, rng);
    }

    pub(crate) fn handle_ws_open(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.open = true;
        c.reached = true;
        c.idle_since = now;
        for (rid, text) in c.queued.drain(..) {
            c.inflight.insert(rid);
            self.transmits.push_back(Io::WsSend {
                conn,
                msg: WsMessage::Text(text),
            });
        }
    }

    pub(crate) fn handle_ws_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        msg: &WsMessage,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let reply = decode_reply(msg.as_bytes(), self.config.max_frame_len);
        self.handle_reply(now, conn, reply, ids, rng);
    }

    /// A ZeroMQ connection from [`Io::TcpConnect`] is open: ZMTP already queued
    /// its handshake and the requests.
    pub(crate) fn handle_tcp_open(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open = true;
            c.idle_since = now;
            if c.zmtp.is_some() {
                c.heartbeat = self.config.heartbeat.map(|h| h.start(now));
            }
        }
    }

    /// Bytes from a ZeroMQ connection: the handshake, then replies.
    pub(crate) fn handle_tcp_data(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: &[u8],
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(zmtp) = c.zmtp.as_mut() else {
            return;
        };
        if let Some(heartbeat) = c.heartbeat.as_mut() {
            heartbeat.heard(now);
        }
        // Before the handshake ends, a peer that breaks ZMTP may be speaking another
        // protocol altogether; its first bytes say which.
        let before_handshake = !c.reached;
        let read = zmtp.handle_input(bytes);
        // The requests ZMTP held go out as the handshake ends.
        c.reached |= zmtp.is_ready();
        // A reply over the frame limit kills the connection, but its rid had arrived:
        // that request fails as too large, not as a lost connection.
        let too_large = zmtp.cut_message_head().map(<[u8]>::to_vec);
        let mut replies = Vec::new();
        while let Some(event) = zmtp.poll_event() {
            if let ZmtpEvent::Message(frames) = event {
                replies.push(decode_zmq_reply(&frames));
            }
        }
        flush(&mut self.transmits, conn, zmtp);
        for reply in replies {
            self.handle_reply(now, conn, reply, ids, rng);
        }
        if let Err(e) = read {
            tracing::debug!(%conn, error = %e, "ZeroMQ connection failed");
            self.transmits.push_back(Io::TcpClose { conn });
            if let Some(rid) = too_large
                .as_deref()
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(Rid::parse)
            {
                self.finish(now, rid, End::Done(Err(RpcError::ReplyTooLarge)), ids, rng);
            }
            let met = before_handshake.then(|| Protocol::sniff(bytes)).flatten();
            let why = match self.wrong(met) {
                Some(met) => Some(RpcError::WrongTransport(met)),
                None if before_handshake && is_security_failure(&e) => Some(RpcError::Security(e)),
                None => None,
            };
            self.close_conn(now, conn, why, ids, rng);
        }
    }

    fn handle_reply(
        &mut self,
        now: Instant,
        conn: ConnId,
        reply: Result<crate::peer::framing::ReplyFrame, FrameError>,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let (rid, result) = match reply {
            Ok(reply) => (reply.rid, reply.result.map_err(RpcError::Remote)),
            // A result we cannot hold fails its request now, with the reason.
            Err(FrameError::Payload { rid, why }) => (rid, Err(RpcError::ReplyPayload(why))),
            Err(e) => {
                self.stats.bad_frames += 1;
                tracing::debug!(%conn, error = %e, "unreadable frame from a peer");
                return;
            }
        };
        // A rid that is not one of ours (not even its length) answers nothing we sent.
        let ours = Rid::parse(&rid).filter(|rid| {
            self.attempts
                .get(rid)
                .is_some_and(|a| matches!(a.via, Via::Conn(c) if c == conn))
        });
        let Some(rid) = ours else {
            self.stats.late_replies += 1;
            return;
        };
        self.finish(now, rid, End::Done(result), ids, rng);
    }

    /// A WebSocket or ZeroMQ connection closed, or could not be opened.
    pub(crate) fn handle_closed(
        &mut self,
        now: Instant,
        conn: ConnId,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let why = self
            .conns
            .get(&conn)
            .and_then(|c| c.zmtp.as_ref())
            .and_then(Connection::close_reason)
            .map(RpcError::Security);
        self.close_conn(now, conn, why, ids, rng);
    }

    /// A WebSocket dial met a server of protocol `met` (an HTTP answer without the
    /// upgrade, a ZMTP greeting): a plain close unless `met` is really another transport.
    pub(crate) fn handle_wrong_transport(
        &mut self,
        now: Instant,
        conn: ConnId,
        met: Protocol,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let why = self.wrong(Some(met)).map(RpcError::WrongTransport);
        self.close_conn(now, conn, why, ids, rng);
    }

    /// `met` when it is not the transport this client speaks: the peer is misdirected.
    fn wrong(&self, met: Option<Protocol>) -> Option<Protocol> {
        met.filter(|m| *m != Protocol::of(self.config.transport))
    }

    /// Ends a connection and its requests. With `unreached` (a peer of another protocol,
    /// a failed security handshake) nothing reached a handler, so every request may go on
    /// to the next peer, and fails with that error when none is left.
    fn close_conn(
        &mut self,
        now: Instant,
        conn: ConnId,
        unreached: Option<RpcError>,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        self.close_conn_with(now, conn, unreached, RpcError::TransportClose, ids, rng);
    }

    /// [`close_conn`](Self::close_conn), failing the requests that may have reached the
    /// peer with `lost`.
    fn close_conn_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        unreached: Option<RpcError>,
        lost: RpcError,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.by_addr.remove(&c.addr);
        if let Some(err) = unreached {
            let all = c.queued.into_iter().map(|(rid, _)| rid).chain(c.inflight);
            for rid in all.collect::<Vec<_>>() {
                self.finish(now, rid, End::Unreached(err.clone()), ids, rng);
            }
            return;
        }
        // Frames still queued never went out; nothing went out on a connection that never
        // opened (or whose ZeroMQ handshake never finished).
        let unsent = c.queued.into_iter().map(|(rid, _)| rid);
        let (unsent, sent): (Vec<Rid>, Vec<Rid>) = if c.reached {
            (unsent.collect(), c.inflight.into_iter().collect())
        } else {
            (unsent.chain(c.inflight).collect(), Vec::new())
        };
        for rid in unsent {
            let end = End::Unreached(RpcError::TransportClose);
            self.finish(now, rid, end, ids, rng);
        }
        for rid in sent {
            let end = End::Done(Err(lost.clone()));
            self.finish(now, rid, end, ids, rng);
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, ids: &mut Ids, rng: &mut impl Rng) {
        while let Some(&(at, rid)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.finish(now, rid, End::Done(Err(RpcError::Timeout)), ids, rng);
        }
        self.beat(now, ids, rng);
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_idle() && c.idle_since + self.config.idle_timeout <= now)
            .map(|(&id, _)| id)
            .collect();
        for conn in idle {
            if let Some(c) = self.conns.remove(&conn) {
                self.by_addr.remove(&c.addr);
                self.transmits.push_back(match c.zmtp {
                    Some(_) => Io::TcpClose { conn },
                    None => Io::WsClose { conn },
                });
            }
        }
    }

    /// Ticks every ZeroMQ connection's heartbeat: PINGs that are due go out, and a
    /// server silent past the timeout is closed, failing what it holds.
    fn beat(&mut self, now: Instant, ids: &mut Ids, rng: &mut impl Rng) {
        let mut silent = Vec::new();
        for (&conn, c) in &mut self.conns {
            let (Some(heartbeat), Some(zmtp)) = (c.heartbeat.as_mut(), c.zmtp.as_mut()) else {
                continue;
            };
            if heartbeat.poll_timeout() > now {
                continue;
            }
            match heartbeat.tick(zmtp, now) {
                Ok(()) => flush(&mut self.transmits, conn, zmtp),
                Err(err) => silent.push((conn, err)),
            }
        }
        for (conn, err) in silent {
            tracing::debug!(%conn, error = %err, "ZeroMQ server gone silent; closing");
            self.transmits.push_back(Io::TcpClose { conn });
            let lost = match err {
                ZmtpError::HeartbeatTimeout(after) => RpcError::HeartbeatTimeout(after),
                _ => RpcError::TransportClose,
            };
            self.close_conn_with(now, conn, None, lost, ids, rng);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(t, _)| *t);
        let idle = self
            .conns
            .values()
            .filter(|c| c.is_idle())
            .map(|c| c.idle_since + self.config.idle_timeout)
            .min();
        let beat = self
            .conns
            .values()
            .filter_map(|c| c.heartbeat.as_ref())
            .map(Heartbeat::poll_timeout)
            .min();
        [deadline, idle, beat].into_iter().flatten().min()
    }

    /// One attempt of a request stream to `name`: a peer of `peers` chosen as a request's
    /// would be (dead ones left out), and a fresh rid. `None` when `peers` is empty.
    pub(crate) fn plan_stream(
        &mut self,
        now: Instant,
        name: &str,
        peers: &[PeerAddr],
        opts: &StreamOptions,
        rng: &mut impl Rng,
    ) -> Option<StreamPlan> {
        let choice = self.config.choice;
        let peer = self
            .balancer
            .pick(name, peers, choice, &self.dead, now, rng)?;
        self.stats.attempts += 1;
        let mut head = StreamHead::new(request_id(rng), name);
        head.action.clone_from(&opts.action);
        if let Some(args) = &opts.args {
            head.args = args.clone();
        }
        Some(StreamPlan {
            url: peer.http_url_as(self.config.secure),
            peer,
            head,
            deadline: now + opts.timeout.unwrap_or(self.config.timeout),
            max_reply_len: self.config.max_frame_len,
        })
    }

    /// A stream's peer could not be reached: it is left out for a while, as a request's is.
    pub(crate) fn stream_unreached(&mut self, now: Instant, peer: &PeerAddr) {
        self.stats.unreached += 1;
        self.dead.mark(peer, now);
    }

    /// Sends the next try of a request to the next chosen peer.
    fn send_next(&mut self, now: Instant, id: CommandId, ids: &mut Ids, rng: &mut impl Rng) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let choice = self.config.choice;
        let picked = self
            .balancer
            .pick(&call.name, &call.peers, choice, &self.dead, now, rng);
        let Some(addr) = picked else {
            self.end(id, Err(RpcError::Lookup(LinkError::LookupEmpty)));
            return;
        };
        self.send(now, id, 0, addr, ids, rng);
    }

    fn send(
        &mut self,
        now: Instant,
        id: CommandId,
        slot: usize,
        addr: PeerAddr,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let rid = Rid::new(rng);
        let deadline = now + call.timeout;
        let compress = call.compress && self.config.transport == RpcTransport::Http;
        self.stats.attempts += 1;
        let via = match self.config.transport {
            RpcTransport::Http => {
                let frame = encode_request_json(rid.as_str(), &call.name, &call.payload);
                let http = HttpId(ids.next());
                let (body, comp) = if compress {
                    (gzip(&frame), Compression::Gzip)
                } else {
                    (frame, Compression::None)
                };
                self.transmits.push_back(Io::Http(HttpRequest {
                    id: http,
                    method: HttpMethod::Post,
                    url: addr.http_url_as(self.config.secure),
                    headers: vec![(crate::peer::framing::COMPRESS_HEADER, comp.header_value())],
                    body,
                    deadline,
                }));
                self.by_http.insert(http, rid);
                Via::Http(http)
            }
            RpcTransport::Ws | RpcTransport::Zmq => {
                match self.send_on_conn(now, id, rid, &addr, ids, rng) {
                    Ok(conn) => Via::Conn(conn),
                    Err(err) => {
                        let attempt = Attempt {
                            call: id,
                            peer: addr,
                            slot,
                            deadline,
                            via: Via::Conn(ConnId(0)),
                            compress,
                        };
                        self.attempts.insert(rid, attempt);
                        self.finish(now, rid, End::Done(Err(err)), ids, rng);
                        return;
                    }
                }
            }
        };
        self.deadlines.insert((deadline, rid));
        self.attempts.insert(
            rid,
            Attempt {
                call: id,
                peer: addr,
                slot,
                deadline,
                via,
                compress,
            },
        );
    }

    /// Sends a request on the peer's WebSocket or ZeroMQ connection (opened if needed; a
    /// WebSocket that is still opening holds it), and returns the connection.
    fn send_on_conn(
        &mut self,
        now: Instant,
        id: CommandId,
        rid: Rid,
        addr: &PeerAddr,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) -> Result<ConnId, RpcError> {
        let conn = self
            .conn_for(now, id, addr, ids, rng)
            .ok_or(RpcError::TooManyConnections)?;
        let (Some(call), Some(c)) = (self.calls.get(&id), self.conns.get_mut(&conn)) else {
            return Ok(conn);
        };
        if let Some(zmtp) = c.zmtp.as_mut() {
            // ZMTP holds messages until its handshake is done.
            let sent = zmtp.send(&[rid.as_str().as_bytes(), call.name.as_bytes(), &call.payload]);
            flush(&mut self.transmits, conn, zmtp);
            if let Err(e) = sent {
                tracing::debug!(%conn, error = %e, "ZeroMQ connection refused a request");
                return Err(RpcError::Request(e.to_string()));
            }
            c.inflight.insert(rid);
        } else {
            let text = json_text(encode_request_json(rid.as_str(), &call.name, &call.payload));
            if c.open {
                c.inflight.insert(rid);
                self.transmits.push_back(Io::WsSend {
                    conn,
                    msg: WsMessage::Text(text),
                });
            } else {
                c.queued.push((rid, text));
            }
        }
        Ok(conn)
    }

    /// The peer's connection, opened if needed (for call `id`, whose service names the
    /// CURVE server key); `None` when the table is full.
    fn conn_for(
        &mut self,
        now: Instant,
        id: CommandId,
        addr: &PeerAddr,
        ids: &mut Ids,
        rng: &mut impl Rng,
    ) -> Option<ConnId> {
        if let Some(&conn) = self.by_addr.get(addr) {
            return Some(conn);
        }
        if self.conns.len() >= self.config.max_connections {
            return None;
        }
        let conn = ConnId(ids.next());
        self.stats.connects += 1;
        let zmtp = if self.config.transport == RpcTransport::Zmq {
            self.transmits.push_back(Io::TcpConnect {
                conn,
                addr: addr.clone(),
            });
            // A uuid v4 identity, as grenache-nodejs-zmq's DEALER has.
            let identity = request_id(rng).into_bytes();
            let limits = zmq::limits(self.config.max_frame_len, MAX_ZMQ_QUEUED);
            let service = self.calls.get(&id).map_or("", |c| c.name.as_str());
            let security = Security::client_for(self.config.curve.as_ref(), service);
            let mut zmtp = Connection::secure(SocketType::Dealer, identity, limits, &security, rng);
            flush(&mut self.transmits, conn, &mut zmtp);
            Some(zmtp)
        } else {
            self.transmits.push_back(Io::WsConnect {
                conn,
                url: addr.ws_url_as(self.config.secure),
            });
            None
        };
        self.conns.insert(
            conn,
            Conn {
                addr: addr.clone(),
                open: false,
                reached: false,
                queued: Vec::new(),
                inflight: BTreeSet::new(),
                idle_since: now,
                zmtp,
                heartbeat: None,
            },
        );
        self.by_addr.insert(addr.clone(), conn);
        Some(conn)
    }

    /// Ends one attempt and moves its call on: done, sent on, retried, or failed.
    fn finish(&mut self, now: Instant, rid: Rid, end: End, ids: &mut Ids, rng: &mut impl Rng) {
        let Some(attempt) = self.forget_attempt(now, rid) else {
            return;
        };
        let result = match end {
            End::Done(result) => {
                if matches!(result, Ok(_) | Err(RpcError::Remote(_))) {
                    self.dead.revive(&attempt.peer);
                }
                result
            }
            End::Unreached(err) => {
                self.stats.unreached += 1;
                self.dead.mark(&attempt.peer, now);
                // Costs a request no attempt: nothing reached a handler.
                if let Some(call) = self.calls.get_mut(&attempt.call)
                    && matches!(call.kind, Kind::Request { .. })
                {
                    call.peers.retain(|p| *p != attempt.peer);
                    call.unreachable.push(attempt.peer.clone());
                    if !call.peers.is_empty() {
                        tracing::debug!(id = %attempt.call, peer = %attempt.peer, error = %err,
                            "peer unreachable; sending to the next one");
                        self.send_next(now, attempt.call, ids, rng);
                        return;
                    }
                    // A peer that answered in another protocol or another security
                    // mechanism is there: asking again would find it again, so
                    // ERR_WRONG_TRANSPORT and ERR_ZMQ_SECURITY are reported at once.
                    let gone = !matches!(err, RpcError::WrongTransport(_) | RpcError::Security(_));
                    if gone && matches!(call.refresh, Refresh::NotYet) {
                        tracing::debug!(id = %attempt.call, name = call.name, error = %err,
                            "no peer reachable; asking the Grape again");
                        call.refresh = Refresh::Asking(err);
                        self.lookups.push_back((attempt.call, call.name.clone()));
                        return;
                    }
                }
                // A map fails loudly rather than answer without a peer it was to ask.
                Err(err)
            }
        };
        let id = attempt.call;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match &mut call.kind {
            Kind::Request { attempts_left } => match result {
                Ok(v) => self.end_request(id, Ok(v)),
                Err(e) if *attempts_left > 1 && !call.peers.is_empty() => {
                    *attempts_left -= 1;
                    // Route around a peer that failed (gone, say) while others remain; with
                    // round-robin alone, concurrent calls could land on it again and again.
                    if call.peers.len() > 1 {
                        call.peers.retain(|p| *p != attempt.peer);
                    }
                    tracing::debug!(%id, error = %e, "retrying request on the next peer");
                    self.send_next(now, id, ids, rng);
                }
                Err(e) => self.end_request(id, Err(e)),
            },
            Kind::Map { results } => match result {
                Ok(v) => {
                    if let Some(slot) = results.get_mut(attempt.slot) {
                        *slot = Some(v);
                    }
                    if results.iter().all(Option::is_some) {
                        let values = results.iter_mut().filter_map(Option::take).collect();
                        self.end(id, Ok(values));
                    }
                }
                // Like async.map: the first error ends the map; other replies are dropped.
                Err(e) => {
                    self.end(id, Err(e));
                    let rest: Vec<Rid> = self
                        .attempts
                        .iter()
                        .filter(|(_, a)| a.call == id)
                        .map(|(&r, _)| r)
                        .collect();
                    for r in rest {
                        self.forget_attempt(now, r);
                    }
                }
            },
        }
    }

    fn forget_attempt(&mut self, now: Instant, rid: Rid) -> Option<Attempt> {
        let attempt = self.attempts.remove(&rid)?;
        self.deadlines.remove(&(attempt.deadline, rid));
        match attempt.via {
            Via::Http(http) => {
                self.by_http.remove(&http);
            }
            Via::Conn(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.inflight.remove(&rid);
                    c.queued.retain(|(r, _)| *r != rid);
                    if c.is_idle() {
                        c.idle_since = now;
                    }
                }
            }
        }
        Some(attempt)
    }

    fn end_request(&mut self, id: CommandId, result: Result<Value, RpcError>) {
        if self.calls.remove(&id).is_some() {
            self.events.push_back(ClientEvent::Reply { id, result });
        }
    }

    fn end(&mut self, id: CommandId, result: Result<Vec<Value>, RpcError>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let event = match call.kind {
            Kind::Map { .. } => ClientEvent::Map { id, result },
            Kind::Request { .. } => ClientEvent::Reply {
                id,
                result: result.map(|mut v| v.pop().unwrap_or(Value::Null)),
            },
        };
        self.events.push_back(event);
    }
}

/// What an HTTP answer to an attempt with `rid` means (a request's or a stream's).
pub(crate) fn read_http_reply(
    rid: &str,
    compress: bool,
    reply: Result<HttpResponse, TransportError>,
    max: usize,
) -> Result<Value, RpcError> {
    let reply = reply.map_err(|e| RpcError::Request(e.message))?;
    if !(200..300).contains(&reply.status) {
        let end = reply.body.len().min(MAX_ERROR_BODY);
        let body = reply.body.get(..end).unwrap_or_default();
        return Err(RpcError::Request(
            String::from_utf8_lossy(body).into_owned(),
        ));
    }
    if reply.body.len() > max {
        return Err(RpcError::ReplyTooLarge);
    }
    let plain = if compress {
        match gunzip(&reply.body, max) {
            Ok(plain) => plain,
            Err(FrameError::TooLarge { .. }) => return Err(RpcError::ReplyTooLarge),
            Err(_) => return Err(RpcError::ReplyCompression),
        }
    } else {
        reply.body
    };
    let decoded = decode_reply(&plain, max).map_err(|e| match e {
        FrameError::TooLarge { .. } => RpcError::ReplyTooLarge,
        FrameError::NotJson => RpcError::ReplyEmpty,
        FrameError::Payload { why, .. } => RpcError::ReplyPayload(why),
        _ => RpcError::ReplyInvalid,
    })?;
    // Node would ignore a reply naming another rid and wait for the timeout.
    if decoded.rid != rid {
        return Err(RpcError::ReplyInvalid);
    }
    decoded.result.map_err(RpcError::Remote)
}

/// Whether a ZMTP failure is the security handshake's: the mechanisms differ, or CURVE
/// failed (a peer that is simply not ZeroMQ is told apart by its first bytes instead).
pub(crate) fn is_security_failure(err: &ZmtpError) -> bool {
    matches!(
        err,
        ZmtpError::MechanismMismatch { .. } | ZmtpError::Curve(_) | ZmtpError::ClosedInGreeting
    )
}

/// Hands what ZMTP has to write to the adapter, if anything.
fn flush(transmits: &mut VecDeque<Io>, conn: ConnId, zmtp: &mut Connection) {
    let bytes = zmtp.take_output();
    if !bytes.is_empty() {
        transmits.push_back(Io::TcpSend { conn, bytes });
    }
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.open && self.queued.is_empty() && self.inflight.is_empty()
    }
}
