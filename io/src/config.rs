//! What a [`GrapeServer`](crate::GrapeServer) binds to, and the bounds it keeps.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use grenache_core::api::GrapeConfig;
use grenache_core::dht::krpc::NodeInfo;

/// Everything [`GrapeServer::start`](crate::GrapeServer::start) needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address both the DHT socket and the API listeners bind to (Grape `--bind`).
    pub bind: IpAddr,
    /// UDP port of the DHT node; 0 picks a free one (Grape `--dp`).
    pub dht_port: u16,
    /// TCP port of the HTTP API; 0 picks a free one (Grape `--aph`).
    pub api_port: u16,
    /// TCP port of the WebSocket API, if it is wanted at all (Grape `--apw`).
    pub ws_port: Option<u16>,
    /// DHT nodes to join through, already resolved; empty for a lone Grape.
    pub bootstrap: Vec<SocketAddr>,
    /// Nodes an earlier run knew (read from its state file, Grape `--state`): they seed
    /// the routing table, unverified, and the node joins through them as through
    /// `bootstrap`. Set `grape.node.id` to that run's id too, so the node keeps it.
    pub known_nodes: Vec<NodeInfo>,
    /// Where the node's id and routing table are saved, every few minutes and at
    /// [`shutdown`](crate::GrapeServer::shutdown), for a warm restart; `None` saves nothing.
    pub state_file: Option<PathBuf>,
    /// The protocol settings, handed to the core unchanged.
    pub grape: GrapeConfig,
    /// Seed of the core's RNG (node id, tokens, transaction ids): draw it from the OS.
    pub seed: [u8; 32],
    /// Bounds on connections, time and queues.
    pub limits: Limits,
    /// Read and send DHT datagrams in batches (`recvmmsg`, GSO) where the OS can; off, the
    /// socket makes one system call per datagram, as a benchmark's baseline. On by default.
    pub udp_batching: bool,
}

impl ServerConfig {
    /// Builds the Node Grape's defaults (all interfaces, DHT 20001, API 30001, no WebSocket
    /// API, no bootstrap nodes) around a seed, which has no safe default.
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dht_port: 20001,
            api_port: 30001,
            ws_port: None,
            bootstrap: Vec::new(),
            known_nodes: Vec::new(),
            state_file: None,
            grape: GrapeConfig::default(),
            seed,
            limits: Limits::default(),
            udp_batching: true,
        }
    }
}

/// Bounds that keep slow, idle or numerous clients from pinning memory, sockets or tasks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections per listener (HTTP and WebSocket each); past it, accepting waits.
    pub max_connections: usize,
    /// Time a client gets to send a request's headers. Hyper also runs this timer while a
    /// keep-alive connection waits for its next request, so it is the idle timeout too.
    pub header_read_timeout: Duration,
    /// Time a client gets to send a request body; past it the connection is closed.
    pub body_read_timeout: Duration,
    /// Backstop on the core's answer to one request. The core answers every request itself;
    /// this only guards against a bug there (the client then gets an empty 504).
    pub reply_timeout: Duration,
    /// Time a client gets to finish the WebSocket handshake.
    pub ws_handshake_timeout: Duration,
    /// A WebSocket connection with nothing in flight and no message for this long is closed.
    pub ws_idle_timeout: Duration,
    /// Requests in flight on one WebSocket connection; past it, reading that socket waits.
    pub ws_max_in_flight: usize,
    /// On shutdown, time open connections get to finish what they are doing.
    pub drain_timeout: Duration,
    /// Requests queued for the driver task; past it, request handlers wait.
    pub command_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
            ws_handshake_timeout: Duration::from_secs(10),
            ws_idle_timeout: Duration::from_secs(300),
            ws_max_in_flight: 64,
            drain_timeout: Duration::from_millis(500),
            command_queue: 1024,
        }
    }
}

impl Limits {
    /// Bound on requests waiting for the core at once: every connection at its own cap.
    pub(crate) fn max_pending(&self) -> usize {
        let ws = self.max_connections.saturating_mul(self.ws_max_in_flight);
        self.max_connections.saturating_add(ws)
    }
}
