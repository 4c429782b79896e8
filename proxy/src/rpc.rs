//! The RPC routes at work: one server per route, answering each request by calling the
//! route's TARGET through a client of the route's TO transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grenache_core::peer::Protocol;
use grenache_io::Runtime;
use grenache_io::peer::{
    PeerClient, PeerConfig, PeerError, PubSubTransport, RequestOptions, RpcError, RpcServer,
    RpcServerConfig, ServerError, ServerStats,
};
use serde_json::Value;

use crate::config::Settings;
use crate::gateway::{Calls, Gateway};
use crate::metrics::Sources;
use crate::pubsub::{Relay, RelayStats, pubsub_transport};
use crate::route::{FanOut, Route};

/// What the proxy's own failures start with: a caller can tell them from the target's
/// errors, which come back unchanged (`ERR_PROXY: ERR_GRAPE_LOOKUP_EMPTY`,
/// `ERR_PROXY: ERR_TIMEOUT`, `ERR_PROXY: ERR_WRONG_TRANSPORT: http`, ...).
pub const ERR_PROXY: &str = "ERR_PROXY";

/// Time the server gives a handler beyond the route's timeout, so the call's own timeout
/// (`ERR_PROXY: ERR_TIMEOUT`) answers first.
const HANDLER_MARGIN: Duration = Duration::from_secs(1);

/// A route's counters so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Requests taken.
    pub requests: u64,
    /// Answered with TARGET's result.
    pub replies: u64,
    /// Answered with TARGET's own error, unchanged.
    pub target_errors: u64,
    /// Answered with an `ERR_PROXY: ...` error: TARGET not found, not answering in time,
    /// unreachable, or speaking another transport.
    pub proxy_errors: u64,
    /// Callers' ZeroMQ messages that were not a request (a `zmq` FROM only; HTTP and
    /// WebSocket callers get an error reply, not counted here).
    pub bad_frames: u64,
    /// Callers' connections dropped for breaking ZeroMQ's protocol or stalling its handshake.
    pub dropped_connections: u64,
}

/// A route's own counters; the server's are read beside them.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    requests: AtomicU64,
    replies: AtomicU64,
    target_errors: AtomicU64,
    proxy_errors: AtomicU64,
}

impl RouteCounters {
    pub(crate) fn snapshot(&self, server: ServerStats) -> RouteStats {
        RouteStats {
            requests: self.requests.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            target_errors: self.target_errors.load(Ordering::Relaxed),
            proxy_errors: self.proxy_errors.load(Ordering::Relaxed),
            bad_frames: server.bad_frames,
            dropped_connections: server.dropped_connections,
        }
    }
}

/// One route being served.
#[derive(Debug)]
struct Running<R: Runtime> {
    route: Route,
    server: RpcServer<R>,
    counters: Arc<RouteCounters>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Grape URL is not `http(s)://` or `ws(s)://`.
    #[error("grape URL: {0}")]
    Grape(#[from] grenache_io::peer::ConfigError),
    /// The gateway could not listen.
    #[error("gateway: {0}")]
    Gateway(#[source] ServerError),
    /// A PUB/SUB route names `http`, which has no PUB/SUB.
    #[error("pubsub route {0}: FROM and TO must be ws or zmq")]
    NoPubSub(String),
    /// A route's server could not listen or announce.
    #[error("route {route}: {source}")]
    Route {
        /// The route, as `NAME@FROM=TARGET@TO`.
        route: String,
        /// Why.
        source: ServerError,
    },
}

/// A running proxy: every route served and announced.
#[derive(Debug)]
pub struct Proxy<R: Runtime> {
    routes: Vec<Running<R>>,
    relays: Vec<Relay<R>>,
    gateway: Option<Gateway<R>>,
}

/// The proxy's clients, one per transport it calls or subscribes over.
struct Clients<R: Runtime> {
    grape: String,
    lookup_cache: Duration,
    shards: usize,
    connections_per_peer: Option<usize>,
    busy_poll: Option<Duration>,
    rpc: Vec<(Protocol, PeerClient<R>)>,
    pubsub: Vec<(PubSubTransport, PeerClient<R>)>,
}

impl<R: Runtime> Clients<R> {
    fn config(&self) -> PeerConfig {
        let mut config = PeerConfig::new(self.grape.clone()).shards(self.shards);
        config.client.link.lookup_cache_ttl = self.lookup_cache;
        if let Some(n) = self.connections_per_peer {
            config.max_connections_per_peer = n;
        }
        config.busy_poll = self.busy_poll;
        config
    }

    fn rpc(&mut self, to: Protocol) -> Result<PeerClient<R>, StartError> {
        if let Some((_, client)) = self.rpc.iter().find(|(p, _)| *p == to) {
            return Ok(client.clone());
        }
        let client = PeerClient::new(self.config().transport(to.rpc_transport()))?;
        self.rpc.push((to, client.clone()));
        Ok(client)
    }

    fn pubsub(&mut self, to: PubSubTransport) -> Result<PeerClient<R>, StartError> {
        if let Some((_, client)) = self.pubsub.iter().find(|(p, _)| *p == to) {
            return Ok(client.clone());
        }
        let client = PeerClient::new(self.config().pubsub_transport(to))?;
        self.pubsub.push((to, client.clone()));
        Ok(client)
    }
}

impl<R: Runtime> Proxy<R> {
    /// Starts a server per route, announced on the Grape; returns once every route is
    /// announced (so lookups find it).
    ///
    /// # Errors
    /// A bad Grape URL, or the first route that cannot listen or announce (those started
    /// before it are stopped).
    pub async fn start(settings: &Settings) -> Result<Self, StartError> {
        let mut clients = Clients {
            grape: settings.grape.clone(),
            lookup_cache: settings.lookup_cache,
            shards: settings.shards(),
            connections_per_peer: settings.connections_per_peer,
            busy_poll: settings.busy_poll,
            rpc: Vec::new(),
            pubsub: Vec::new(),
        };
        let mut proxy = Proxy {
            routes: Vec::new(),
            relays: Vec::new(),
            gateway: None,
        };
        for route in &settings.rpc {
            let started = match clients.rpc(route.to) {
                Ok(client) => {
                    serve(settings, route, client)
                        .await
                        .map_err(|source| StartError::Route {
                            route: describe(route),
                            source,
                        })
                }
                Err(err) => Err(err),
            };
            match started {
                Ok(running) => {
                    tracing::info!(route = %describe(route), addr = %running.server.local_addr(), "route serving");
                    proxy.routes.push(running);
                }
                Err(err) => {
                    proxy.stop().await;
                    return Err(err);
                }
            }
        }
        for route in &settings.pubsub {
            let started = match (pubsub_transport(route.from), pubsub_transport(route.to)) {
                (Some(from), Some(to)) => match clients.pubsub(to) {
                    Ok(client) => Relay::start(route, from, settings.bind, client)
                        .await
                        .map_err(|source| StartError::Route {
                            route: describe(route),
                            source,
                        }),
                    Err(err) => Err(err),
                },
                _ => Err(StartError::NoPubSub(describe(route))),
            };
            match started {
                Ok(relay) => {
                    tracing::info!(route = %describe(route), addr = %relay.addr, "pubsub route publishing");
                    proxy.relays.push(relay);
                }
                Err(err) => {
                    proxy.stop().await;
                    return Err(err);
                }
            }
        }
        if let Some(port) = settings.gateway {
            let metrics = Sources {
                routes: (proxy.routes.iter())
                    .map(|r| {
                        // Labelled with the port it got, not the 0 it may have asked for.
                        let route = Route {
                            port: r.server.local_addr().port(),
                            ..r.route.clone()
                        };
                        (route, Arc::clone(&r.counters), r.server.stats_reader())
                    })
                    .collect(),
                relays: (proxy.relays.iter())
                    .map(|r| {
                        let route = Route {
                            port: r.addr.port(),
                            ..r.route.clone()
                        };
                        (route, Arc::clone(&r.counters))
                    })
                    .collect(),
            };
            match start_gateway(settings, port, &mut clients, metrics) {
                Ok(gateway) => {
                    tracing::info!(addr = %gateway.local_addr(), "gateway serving");
                    proxy.gateway = Some(gateway);
                }
                Err(err) => {
                    proxy.stop().await;
                    return Err(err);
                }
            }
        }
        Ok(proxy)
    }

    /// The gateway, when one is served.
    pub fn gateway(&self) -> Option<&Gateway<R>> {
        self.gateway.as_ref()
    }

    /// Each PUB/SUB route with the address it publishes on and its counters.
    pub fn relays(&self) -> Vec<(Route, SocketAddr, RelayStats)> {
        self.relays
            .iter()
            .map(|r| (r.route.clone(), r.addr, r.counters.snapshot()))
            .collect()
    }

    /// Each route with the address it listens on and its counters.
    pub fn routes(&self) -> Vec<(Route, SocketAddr, RouteStats)> {
        self.routes
            .iter()
            .map(|r| {
                (
                    r.route.clone(),
                    r.server.local_addr(),
                    r.counters.snapshot(r.server.stats()),
                )
            })
            .collect()
    }

    /// Unannounces every route, then stops its server (requests in progress are answered
    /// first).
    pub async fn stop(self) {
        if let Some(gateway) = self.gateway {
            gateway.stop().await;
        }
        for running in self.routes {
            let stats = running.counters.snapshot(running.server.stats());
            tracing::info!(route = %describe(&running.route), ?stats, "route stopping");
            running.server.stop().await;
        }
        for relay in self.relays {
            let stats = relay.counters.snapshot();
            tracing::info!(route = %describe(&relay.route), ?stats, "pubsub route stopping");
            relay.stop().await;
        }
    }
}

/// The gateway, with a client for every transport (a caller may name any with `?via=`).
fn start_gateway<R: Runtime>(
    settings: &Settings,
    port: u16,
    clients: &mut Clients<R>,
    metrics: Sources,
) -> Result<Gateway<R>, StartError> {
    let mut all = Vec::new();
    for protocol in [Protocol::Http, Protocol::Ws, Protocol::Zmq] {
        all.push((protocol, clients.rpc(protocol)?));
    }
    let mut subscribers = Vec::new();
    for transport in [PubSubTransport::Ws, PubSubTransport::Zmq] {
        subscribers.push((transport, clients.pubsub(transport)?));
    }
    let calls = Calls {
        clients: all,
        routes: settings.rpc.clone(),
        subscribers,
        pubsub_routes: settings.pubsub.clone(),
        timeout: settings.timeout,
        metrics,
        keep_alive: settings.gateway_limits.keep_alive,
    };
    Gateway::start(settings, port, calls).map_err(StartError::Gateway)
}

/// `NAME@FROM:PORT=TARGET@TO`, for logs and errors.
pub fn describe(route: &Route) -> String {
    let map = if route.fan_out == FanOut::Map {
        " (map)"
    } else {
        ""
    };
    format!(
        "{}@{}:{}={}@{}{map}",
        route.name, route.from, route.port, route.target, route.to
    )
}

/// Starts and announces one route's server.
async fn serve<R: Runtime>(
    settings: &Settings,
    route: &Route,
    client: PeerClient<R>,
) -> Result<Running<R>, ServerError> {
    let counters = Arc::new(RouteCounters::default());
    let timeout = route.timeout.unwrap_or(settings.timeout);
    let mut config =
        RpcServerConfig::new(route.from.rpc_transport()).listen_on(settings.bind, route.port);
    config.handler_timeout = timeout + HANDLER_MARGIN;
    config.busy_poll = settings.busy_poll;
    let call = Call {
        client: client.clone(),
        target: route.target.clone(),
        fan_out: route.fan_out,
        timeout,
        counters: Arc::clone(&counters),
    };
    let call = Arc::new(call);
    let handler = move |_key: String, payload: Value| {
        let call = Arc::clone(&call);
        async move { call.forward(payload).await }
    };
    let server = RpcServer::start(&client, &route.name, config, handler).await?;
    Ok(Running {
        route: route.clone(),
        server,
        counters,
    })
}

/// What a route's handler needs.
struct Call<R: Runtime> {
    client: PeerClient<R>,
    target: String,
    fan_out: FanOut,
    timeout: Duration,
    counters: Arc<RouteCounters>,
}

impl<R: Runtime> Call<R> {
    /// Calls TARGET with `payload`: its result, its error unchanged, or the proxy's own.
    async fn forward(&self, payload: Value) -> Result<Value, String> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let opts = RequestOptions::default().timeout(self.timeout);
        let result = match self.fan_out {
            FanOut::One => self.client.request(&self.target, payload, opts).await,
            FanOut::Map => (self.client.map(&self.target, payload, opts).await).map(Value::Array),
        };
        let (counter, answer) = match result {
            Ok(value) => (&self.counters.replies, Ok(value)),
            Err(PeerError::Rpc(RpcError::Remote(message))) => {
                (&self.counters.target_errors, Err(message))
            }
            Err(err) => {
                tracing::debug!(target = self.target, %err, "call through the proxy failed");
                (
                    &self.counters.proxy_errors,
                    Err(format!("{ERR_PROXY}: {err}")),
                )
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }
}
