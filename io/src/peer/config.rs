//! Settings of the client, the RPC server and the publisher.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use grenache_core::peer::zmtp::{CurveClientConfig, CurveServerConfig};
use grenache_core::peer::{
    ClientConfig, DEFAULT_MAX_FRAME_LEN, DEFAULT_MAX_STREAM_LEN, PubSubTransport, RpcTransport,
};

use super::curve::ZmqHeartbeat;

use crate::tls::{ClientTls, ServerTls};

/// Settings of a [`PeerClient`](super::PeerClient): the core's [`ClientConfig`] plus what
/// the I/O needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PeerConfig {
    /// The core client: Grape URL, Link, RPC and subscription settings.
    pub client: ClientConfig,
    /// Seed of the client's RNG (request ids, peer choice, jitter); `None` draws one from
    /// the OS. Set it only to repeat a run.
    pub seed: Option<[u8; 32]>,
    /// HTTP connections to one peer at once, at most; more requests wait for one (default
    /// 64). Node's client has no such cap (its agent opens one per request in flight); a
    /// cap below the caller's concurrency queues the rest here, and each queued request
    /// waits out several round trips.
    pub max_connections_per_peer: usize,
    /// Peers whose HTTP connections are kept; past it, unused ones are forgotten.
    pub max_pooled_peers: usize,
    /// An idle keep-alive connection is not reused after this long (Node's server closes
    /// them after 5 s, so reusing older ones races with its close).
    pub pool_idle_timeout: Duration,
    /// Time to open a WebSocket (TCP connect plus handshake).
    pub connect_timeout: Duration,
    /// Commands waiting for the driver task, at most; past it, callers wait.
    pub command_queue: usize,
    /// Subscription events waiting to be read, per subscription; past it, new ones are
    /// dropped (and logged).
    pub subscription_queue: usize,
    /// TLS for peer RPC and subscriptions (set with [`tls`](Self::tls)): every peer is
    /// dialled at `https://` or `wss://` and must show a certificate the CA signed, for
    /// the address dialled. The Grape is still reached at its own URL.
    pub tls: Option<ClientTls>,
    /// Driver tasks, each with a core `Client` of its own (set with [`shards()`](Self::shards())).
    /// One driver is one core's serial work; requests and maps go round-robin over the
    /// drivers, so a client on a multi-thread runtime can use that many cores. Each driver
    /// keeps its own lookup cache, dead-peer list and `max_pending`; the Link's work
    /// (announces, user lookups, put, get), subscriptions, watches and requests to a
    /// watched name stay on the first. Values below 1 count as 1.
    pub shards: usize,
    /// How long a peer connection keeps its thread polling after each wake-up instead of
    /// sleeping (set with [`busy_poll`](Self::busy_poll)); `None` (the default): it sleeps
    /// at once. It buys latency at low concurrency on machines where waking a sleeping
    /// core is slow (virtual machines), for up to this much CPU per wake-up.
    pub busy_poll: Option<Duration>,
}

impl PeerConfig {
    /// Node's defaults for the Grape at `grape` (`http://127.0.0.1:30001`, say), RPC over HTTP.
    pub fn new(grape: impl Into<String>) -> Self {
        PeerConfig {
            client: ClientConfig::new(grape),
            seed: None,
            max_connections_per_peer: 64,
            max_pooled_peers: 1024,
            pool_idle_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(10),
            command_queue: 1024,
            subscription_queue: 1024,
            tls: None,
            shards: 1,
            busy_poll: None,
        }
    }

    /// The same settings with peer connections busy-polling for `window` after each
    /// wake-up (see the field `busy_poll`); a zero window turns it off.
    #[must_use]
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = crate::busy_poll::window(window);
        self
    }

    /// The same settings with `n` driver tasks (see the field `shards`); a client
    /// meant to use every core it is given takes [`available_cores`].
    #[must_use]
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }

    /// The same settings with TLS to every peer (RPC over HTTP or WebSocket, and
    /// WebSocket subscriptions): the servers must speak TLS.
    #[must_use]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.client.rpc.secure = true;
        self.client.sub.secure = true;
        self.tls = Some(tls);
        self
    }

    /// The same settings with CURVE on ZeroMQ RPC and subscriptions (docs/security.md):
    /// every ZeroMQ server and publisher this client dials must hold the secret of the
    /// key `curve` has for its service or channel (its own, else the default). Other
    /// transports are unchanged.
    #[must_use]
    pub fn curve(mut self, curve: CurveClientConfig) -> Self {
        let curve = Arc::new(curve);
        self.client.rpc.curve = Some(Arc::clone(&curve));
        self.client.sub.curve = Some(curve);
        self
    }

    /// The same settings with peer RPC over `transport` (the servers must speak it).
    #[must_use]
    pub fn transport(mut self, transport: RpcTransport) -> Self {
        self.client.rpc.transport = transport;
        self
    }

    /// The same settings with subscriptions over `transport` (the publishers must speak it).
    #[must_use]
    pub fn pubsub_transport(mut self, transport: PubSubTransport) -> Self {
        self.client.sub.transport = transport;
        self
    }
}

/// The cores this process may run on (its CPU affinity and cgroup quota), at least 1: the
/// number of drivers for a client that should use all of them.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Settings of an [`RpcServer`](super::RpcServer).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RpcServerConfig {
    /// HTTP (grenache-nodejs-http), WebSocket (grenache-nodejs-ws) or ZeroMQ (a ROUTER,
    /// grenache-nodejs-zmq's frames).
    pub transport: RpcTransport,
    /// Address to listen on (Node listens on all interfaces).
    pub bind: IpAddr,
    /// Port to listen on; 0 lets the OS pick one (read it with `port()`).
    pub port: u16,
    /// Longest request or reply frame, compressed or not; longer requests get an error reply.
    pub max_frame_len: usize,
    /// Open connections at once, at most; past it, accepting waits.
    pub max_connections: usize,
    /// Handler calls running at once, at most; past it, requests wait.
    pub max_in_flight: usize,
    /// Requests one WebSocket connection may have in the handler at once; past it, reading
    /// that socket waits.
    pub max_in_flight_per_connection: usize,
    /// A handler call that takes longer is abandoned and answered `ERR_HANDLER_TIMEOUT`.
    pub handler_timeout: Duration,
    /// Time a client gets to send a request (headers and body) or finish a WebSocket or
    /// ZeroMQ handshake; also how long an idle keep-alive connection stays open.
    pub read_timeout: Duration,
    /// An idle WebSocket or ZeroMQ connection (nothing in flight, no message) is closed
    /// after this.
    pub ws_idle_timeout: Duration,
    /// On stop, time open connections get to finish their requests.
    pub drain_timeout: Duration,
    /// TLS (HTTPS or WSS; not ZeroMQ), with client certificates when it has a CA. The
    /// handshake must finish within `read_timeout`.
    pub tls: Option<ServerTls>,
    /// ZeroMQ only: CURVE (set with [`curve`](Self::curve)); clients must know the
    /// server's public key, and be on its allow-list when it has one.
    pub curve: Option<Arc<CurveServerConfig>>,
    /// ZeroMQ only: PINGs to a silent client, and when to give it up.
    pub heartbeat: ZmqHeartbeat,
    /// HTTP request streams only: the longest body one stream may send; past it the
    /// handler's body ends with an error and the client gets 413 `ERR_STREAM_TOO_LARGE`.
    pub max_stream_len: usize,
    /// How long a client's connection keeps the server's thread polling after each
    /// wake-up instead of sleeping (set with [`busy_poll`](Self::busy_poll)); `None` (the
    /// default): it sleeps at once. See [`PeerConfig::busy_poll`].
    pub busy_poll: Option<Duration>,
}

impl RpcServerConfig {
    /// Defaults for `transport`, on all interfaces, on a port the OS picks.
    pub fn new(transport: RpcTransport) -> Self {
        RpcServerConfig {
            transport,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_connections: 1024,
            max_in_flight: 1024,
            max_in_flight_per_connection: 64,
            handler_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(30),
            ws_idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(1),
            tls: None,
            curve: None,
            heartbeat: ZmqHeartbeat::default(),
            max_stream_len: DEFAULT_MAX_STREAM_LEN,
            busy_poll: None,
        }
    }

    /// The same settings on `bind:port`.
    #[must_use]
    pub fn listen_on(mut self, bind: IpAddr, port: u16) -> Self {
        self.bind = bind;
        self.port = port;
        self
    }

    /// The same settings over TLS.
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same settings with CURVE (ZeroMQ only).
    #[must_use]
    pub fn curve(mut self, curve: CurveServerConfig) -> Self {
        self.curve = Some(Arc::new(curve));
        self
    }

    /// The same settings with connections busy-polling for `window` after each wake-up
    /// (see the field `busy_poll`); a zero window turns it off.
    #[must_use]
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = crate::busy_poll::window(window);
        self
    }
}

impl Default for RpcServerConfig {
    fn default() -> Self {
        RpcServerConfig::new(RpcTransport::Http)
    }
}

/// Settings of a [`Publisher`](super::Publisher).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PublisherConfig {
    /// WebSocket (grenache-nodejs-ws) or ZeroMQ (a PUB socket).
    pub transport: PubSubTransport,
    /// Address to listen on (Node listens on all interfaces).
    pub bind: IpAddr,
    /// Port to listen on; 0 lets the OS pick one (read it with `port()`).
    pub port: u16,
    /// Subscribers at once, at most; more are refused (WebSocket close code 1013; a
    /// ZeroMQ subscriber is disconnected).
    pub max_subscribers: usize,
    /// Messages waiting to be written to one subscriber, at most; a subscriber that falls
    /// further behind is disconnected (it reconnects and misses what it missed).
    pub subscriber_queue: usize,
    /// Longest message a subscriber may send us (they have no reason to send anything).
    pub max_message_len: usize,
    /// Time a subscriber gets to finish the WebSocket or ZeroMQ handshake.
    pub handshake_timeout: Duration,
    /// On stop, time given to close each connection cleanly.
    pub drain_timeout: Duration,
    /// TLS for WebSocket subscribers (WSS; not ZeroMQ), with client certificates when it
    /// has a CA. The handshake must finish within `handshake_timeout`.
    pub tls: Option<ServerTls>,
    /// ZeroMQ only: CURVE (set with [`curve`](Self::curve)).
    pub curve: Option<Arc<CurveServerConfig>>,
    /// ZeroMQ only: PINGs to a silent subscriber, and when to give it up.
    pub heartbeat: ZmqHeartbeat,
}

impl PublisherConfig {
    /// Defaults, on all interfaces, on a port the OS picks.
    pub fn new() -> Self {
        PublisherConfig {
            transport: PubSubTransport::Ws,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            max_subscribers: 1024,
            subscriber_queue: 1024,
            max_message_len: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(1),
            tls: None,
            curve: None,
            heartbeat: ZmqHeartbeat::default(),
        }
    }

    /// The same settings on `bind:port`.
    #[must_use]
    pub fn listen_on(mut self, bind: IpAddr, port: u16) -> Self {
        self.bind = bind;
        self.port = port;
        self
    }

    /// The same settings with CURVE (ZeroMQ only).
    #[must_use]
    pub fn curve(mut self, curve: CurveServerConfig) -> Self {
        self.curve = Some(Arc::new(curve));
        self
    }

    /// The same settings over `transport`.
    #[must_use]
    pub fn transport(mut self, transport: PubSubTransport) -> Self {
        self.transport = transport;
        self
    }

    /// The same settings over TLS.
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig::new()
    }
}
