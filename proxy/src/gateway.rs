//! The gateway: Grenache for clients with no Grenache library. `POST /rpc/NAME` with a
//! JSON body calls NAME and answers with the JSON reply; failures are an HTTP status plus
//! `{"error": "ERR_..."}`, so curl and a browser's `fetch` can tell them apart.
//! `GET /sub/NAME` streams NAME's publications as server-sent events, subscribed only
//! while the HTTP client stays. `GET /metrics` shows the whole proxy's counters.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::Stream;
use grenache_core::peer::{LinkError, Protocol};
use grenache_io::peer::{
    PeerClient, PeerError, PubSubTransport, RequestOptions, RpcError, ServerError, Subscription,
    WsMessage,
};
use grenache_io::{Body, Runtime, WebBody, WebReply, WebRequest, WebServer, WebServerConfig};
use serde_json::Value;

use crate::config::Settings;
use crate::metrics::Sources;
use crate::pubsub::pubsub_transport;
use crate::route::Route;

const JSON: &str = "application/json";
/// Prometheus' text exposition format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The gateway's counters so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Calls made (well-formed requests).
    pub requests: u64,
    /// Answered 200 with the service's result.
    pub replies: u64,
    /// Answered 502 with the service's own error.
    pub target_errors: u64,
    /// Answered 404, 502 or 504 for a failure of ours: nobody serves NAME, no reply in
    /// time, the service unreachable or speaking another transport.
    pub call_errors: u64,
    /// Refused before any call: unknown path, wrong method, bad JSON, a body too large or
    /// a bad `?via=` (400, 404, 405, 413).
    pub bad_requests: u64,
    /// Event streams opened (`GET /sub/NAME`).
    pub streams: u64,
    /// Event streams ended (the client went away, or the gateway stopped): each one
    /// unsubscribed.
    pub streams_ended: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    replies: AtomicU64,
    target_errors: AtomicU64,
    call_errors: AtomicU64,
    bad_requests: AtomicU64,
    streams: AtomicU64,
    streams_ended: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> GatewayStats {
        GatewayStats {
            requests: self.requests.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            target_errors: self.target_errors.load(Ordering::Relaxed),
            call_errors: self.call_errors.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            streams_ended: self.streams_ended.load(Ordering::Relaxed),
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway<R: Runtime> {
    server: WebServer<R>,
    counters: Arc<Counters>,
}

/// How the gateway calls: a client per transport, and the routes that pick one for a NAME.
pub(crate) struct Calls<R: Runtime> {
    /// One client for each of http, ws and zmq.
    pub(crate) clients: Vec<(Protocol, PeerClient<R>)>,
    pub(crate) routes: Vec<Route>,
    /// One subscribing client for each of ws and zmq.
    pub(crate) subscribers: Vec<(PubSubTransport, PeerClient<R>)>,
    /// The PUB/SUB routes: NAME's TARGET and TO for `GET /sub/NAME`.
    pub(crate) pubsub_routes: Vec<Route>,
    pub(crate) timeout: Duration,
    /// The counters `GET /metrics` shows.
    pub(crate) metrics: Sources,
    /// How long an event stream may stay quiet before a keep-alive comment.
    pub(crate) keep_alive: Duration,
}

impl<R: Runtime> Gateway<R> {
    /// Listens on `port` at the proxy's bind address, within the settings' gateway limits.
    pub(crate) fn start(
        settings: &Settings,
        port: u16,
        calls: Calls<R>,
    ) -> Result<Self, ServerError> {
        let counters = Arc::new(Counters::default());
        let mut config = WebServerConfig::new();
        config.bind = settings.bind;
        config.port = port;
        config.max_body = settings.gateway_limits.max_body;
        config.max_connections = settings.gateway_limits.max_connections;
        config.cors = settings.gateway_limits.cors.clone();
        let ctx = Arc::new((calls, Arc::clone(&counters)));
        let server = WebServer::listen(config, move |req| {
            let ctx = Arc::clone(&ctx);
            async move { answer(&ctx.0, &ctx.1, req).await }
        })?;
        Ok(Gateway { server, counters })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// Its counters.
    pub fn stats(&self) -> GatewayStats {
        self.counters.snapshot()
    }

    /// Stops it (requests in progress are answered first).
    pub async fn stop(self) {
        tracing::info!(stats = ?self.stats(), "gateway stopping");
        self.server.stop().await;
    }
}

/// An error reply: `status` and `{"error": message}`.
fn error(status: u16, message: &str) -> WebReply {
    WebReply {
        status,
        content_type: JSON,
        body: WebBody::Full(
            serde_json::json!({ "error": message })
                .to_string()
                .into_bytes(),
        ),
    }
}

async fn answer<R: Runtime>(
    calls: &Calls<R>,
    counters: &Arc<Counters>,
    req: WebRequest,
) -> WebReply {
    let reply = match parse(calls, req) {
        Ok(Action::Call(target, via, payload, timeout)) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let (counter, reply) = call(calls, &target, via, payload, timeout).await;
            match counter {
                Outcome::Reply => &counters.replies,
                Outcome::Target => &counters.target_errors,
                Outcome::Call => &counters.call_errors,
            }
            .fetch_add(1, Ordering::Relaxed);
            reply
        }
        Ok(Action::Subscribe(target, via)) => subscribe(calls, counters, &target, via).await,
        Ok(Action::Metrics) => WebReply {
            status: 200,
            content_type: METRICS,
            body: WebBody::Full(calls.metrics.render(counters.snapshot()).into_bytes()),
        },
        Err(reply) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            reply
        }
    };
    tracing::debug!(status = reply.status, "gateway answered");
    reply
}

/// What a well-formed request asks for.
enum Action {
    /// Call TARGET over a transport with a payload, within a timeout (its route's, if any).
    Call(String, Protocol, Value, Duration),
    /// Stream TARGET's publications, subscribed over a transport.
    Subscribe(String, PubSubTransport),
    /// Show the proxy's counters.
    Metrics,
}

/// Reads `POST /rpc/NAME[?via=TO]` with its JSON body, or `GET /sub/NAME[?via=TO]`, into
/// what to do; anything else is its error reply.
fn parse<R: Runtime>(calls: &Calls<R>, req: WebRequest) -> Result<Action, WebReply> {
    if req.path == "/metrics" {
        return match req.method.as_str() {
            "GET" | "HEAD" => Ok(Action::Metrics),
            _ => Err(error(405, "ERR_METHOD_NOT_ALLOWED")),
        };
    }
    let (name, method, routes) = if let Some(name) = req.path.strip_prefix("/rpc/") {
        (name, "POST", &calls.routes)
    } else if let Some(name) = req.path.strip_prefix("/sub/") {
        (name, "GET", &calls.pubsub_routes)
    } else {
        return Err(error(404, "ERR_NOT_FOUND"));
    };
    if name.is_empty() {
        return Err(error(404, "ERR_NOT_FOUND"));
    }
    if req.method != method {
        return Err(error(405, "ERR_METHOD_NOT_ALLOWED"));
    }
    let via = match query_value(req.query.as_deref(), "via") {
        Some(via) => Some(
            via.parse::<Protocol>()
                .map_err(|_| error(400, "ERR_BAD_VIA: http, ws or zmq"))?,
        ),
        None => None,
    };
    // A route for NAME says how the proxy reaches it; a `?via=` names NAME itself.
    let route = routes.iter().find(|r| r.name == name);
    let timeout = route.and_then(|r| r.timeout).unwrap_or(calls.timeout);
    let (target, to) = match (via, route) {
        (Some(via), _) => (name.to_owned(), Some(via)),
        (None, Some(route)) => (route.target.clone(), Some(route.to)),
        (None, None) => (name.to_owned(), None),
    };
    if method == "GET" {
        let to = to.unwrap_or(Protocol::Ws);
        let to = pubsub_transport(to).ok_or_else(|| error(400, "ERR_BAD_VIA: ws or zmq"))?;
        return Ok(Action::Subscribe(target, to));
    }
    let bytes = match req.body {
        Body::Complete(bytes) => bytes,
        Body::TooLarge(_) => return Err(error(413, "ERR_BODY_TOO_LARGE")),
    };
    let payload: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|_| error(400, "ERR_BAD_JSON"))?
    };
    let to = to.unwrap_or(Protocol::Http);
    Ok(Action::Call(target, to, payload, timeout))
}

/// Subscribes to `target` and answers with its messages as server-sent events.
async fn subscribe<R: Runtime>(
    calls: &Calls<R>,
    counters: &Arc<Counters>,
    target: &str,
    via: PubSubTransport,
) -> WebReply {
    let Some((_, client)) = calls.subscribers.iter().find(|(p, _)| *p == via) else {
        return error(502, "ERR_NO_CLIENT");
    };
    let subscription = match client.subscribe(target).await {
        Ok(subscription) => subscription,
        Err(err) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(400, &err.to_string());
        }
    };
    counters.streams.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(target, "event stream opened");
    WebReply {
        status: 200,
        content_type: "text/event-stream",
        body: WebBody::Stream(Box::pin(Events {
            subscription,
            counters: Arc::clone(counters),
            keep_alive: KeepAlive::new::<R>(calls.keep_alive),
        })),
    }
}

/// A comment line: clients ignore it, intermediaries see traffic.
const KEEP_ALIVE_LINE: &[u8] = b": keep-alive\n\n";

/// The quiet timer of an event stream: proxies and load balancers close HTTP responses
/// idle for 30 to 60 s, and a client whose publisher is quiet would otherwise lose its
/// stream without knowing.
struct KeepAlive {
    every: Duration,
    sleep: Pin<Box<dyn Future<Output = ()> + Send>>,
    restart: fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl KeepAlive {
    fn new<R: Runtime>(every: Duration) -> Self {
        fn sleep<R: Runtime>(every: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(R::sleep_until(R::now() + every))
        }
        KeepAlive {
            every,
            sleep: sleep::<R>(every),
            restart: sleep::<R>,
        }
    }

    fn reset(&mut self) {
        self.sleep = (self.restart)(self.every);
    }
}

/// A subscription read as server-sent events, with a comment line after each quiet
/// keep-alive period; dropping it (the client went away) unsubscribes and counts the
/// stream ended.
struct Events {
    subscription: Subscription,
    counters: Arc<Counters>,
    keep_alive: KeepAlive,
}

impl Stream for Events {
    type Item = Vec<u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let this = &mut *self;
        if let Poll::Ready(message) = Pin::new(&mut this.subscription).poll_next(cx) {
            this.keep_alive.reset();
            return Poll::Ready(message.map(|m| event(&m)));
        }
        match this.keep_alive.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.keep_alive.reset();
                Poll::Ready(Some(KEEP_ALIVE_LINE.to_vec()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.counters.streams_ended.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("event stream ended");
    }
}

/// One message as an event: each of its lines a `data:` line, then a blank line (an event
/// cannot hold a bare newline).
fn event(message: &WsMessage) -> Vec<u8> {
    let text = String::from_utf8_lossy(message.as_bytes());
    let mut event = String::with_capacity(text.len() + 8);
    for line in text.split('\n') {
        event.push_str("data: ");
        event.push_str(line.strip_suffix('\r').unwrap_or(line));
        event.push('\n');
    }
    event.push('\n');
    event.into_bytes()
}

/// The value of `key` in a query string (no percent-decoding: transport names need none).
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

enum Outcome {
    Reply,
    Target,
    Call,
}

async fn call<R: Runtime>(
    calls: &Calls<R>,
    target: &str,
    via: Protocol,
    payload: Value,
    timeout: Duration,
) -> (Outcome, WebReply) {
    let Some((_, client)) = calls.clients.iter().find(|(p, _)| *p == via) else {
        return (Outcome::Call, error(502, "ERR_NO_CLIENT"));
    };
    let opts = RequestOptions::default().timeout(timeout);
    match client.request(target, payload, opts).await {
        Ok(value) => (
            Outcome::Reply,
            WebReply {
                status: 200,
                content_type: JSON,
                body: WebBody::Full(value.to_string().into_bytes()),
            },
        ),
        Err(PeerError::Rpc(RpcError::Remote(message))) => (Outcome::Target, error(502, &message)),
        Err(err) => {
            tracing::debug!(target, %err, "gateway call failed");
            let status = match &err {
                e if e.is_timeout() => 504,
                PeerError::Rpc(RpcError::Lookup(LinkError::LookupEmpty)) => 404,
                PeerError::Refused(_) => 400,
                _ => 502,
            };
            (Outcome::Call, error(status, &err.to_string()))
        }
    }
}
