//! The RPC routes at work: one server per route, answering each request by calling the
//! route's TARGET through a client of the route's TO transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grenache_core::peer::Protocol;
use grenache_io::Runtime;
use grenache_io::peer::{
    PeerClient, PeerConfig, PeerError, RequestOptions, RpcError, RpcServer, RpcServerConfig,
    ServerError,
};
use serde_json::Value;

use crate::config::Settings;
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
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    replies: AtomicU64,
    target_errors: AtomicU64,
    proxy_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RouteStats {
        RouteStats {
            requests: self.requests.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            target_errors: self.target_errors.load(Ordering::Relaxed),
            proxy_errors: self.proxy_errors.load(Ordering::Relaxed),
        }
    }
}

/// One route being served.
#[derive(Debug)]
struct Running<R: Runtime> {
    route: Route,
    server: RpcServer<R>,
    counters: Arc<Counters>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Grape URL is not `http(s)://` or `ws(s)://`.
    #[error("grape URL: {0}")]
    Grape(#[from] grenache_io::peer::ConfigError),
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
}

impl<R: Runtime> Proxy<R> {
    /// Starts a server per route, announced on the Grape; returns once every route is
    /// announced (so lookups find it).
    ///
    /// # Errors
    /// A bad Grape URL, or the first route that cannot listen or announce (those started
    /// before it are stopped).
    pub async fn start(settings: &Settings) -> Result<Self, StartError> {
        let mut clients: Vec<(Protocol, PeerClient<R>)> = Vec::new();
        let mut routes = Vec::new();
        for route in &settings.rpc {
            let client = match clients.iter().find(|(p, _)| *p == route.to) {
                Some((_, client)) => client.clone(),
                None => {
                    let mut config =
                        PeerConfig::new(settings.grape.clone()).transport(route.to.rpc_transport());
                    config.client.link.lookup_cache_ttl = settings.lookup_cache;
                    let client = PeerClient::new(config)?;
                    clients.push((route.to, client.clone()));
                    client
                }
            };
            match serve(settings, route, client).await {
                Ok(running) => {
                    tracing::info!(route = %describe(route), addr = %running.server.local_addr(), "route serving");
                    routes.push(running);
                }
                Err(source) => {
                    for running in routes {
                        running.server.stop().await;
                    }
                    let route = describe(route);
                    return Err(StartError::Route { route, source });
                }
            }
        }
        Ok(Proxy { routes })
    }

    /// Each route with the address it listens on and its counters.
    pub fn routes(&self) -> Vec<(Route, SocketAddr, RouteStats)> {
        self.routes
            .iter()
            .map(|r| {
                (
                    r.route.clone(),
                    r.server.local_addr(),
                    r.counters.snapshot(),
                )
            })
            .collect()
    }

    /// Unannounces every route, then stops its server (requests in progress are answered
    /// first).
    pub async fn stop(self) {
        for running in self.routes {
            let stats = running.counters.snapshot();
            tracing::info!(route = %describe(&running.route), ?stats, "route stopping");
            running.server.stop().await;
        }
    }
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
    let counters = Arc::new(Counters::default());
    let timeout = route.timeout.unwrap_or(settings.timeout);
    let mut config =
        RpcServerConfig::new(route.from.rpc_transport()).listen_on(settings.bind, route.port);
    config.handler_timeout = timeout + HANDLER_MARGIN;
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
    counters: Arc<Counters>,
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
