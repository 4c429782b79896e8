//! The gateway: Grenache for clients with no Grenache library. `POST /rpc/NAME` with a
//! JSON body calls NAME and answers with the JSON reply; failures are an HTTP status plus
//! `{"error": "ERR_..."}`, so curl and a browser's `fetch` can tell them apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use grenache_core::peer::{LinkError, Protocol};
use grenache_io::peer::{PeerClient, PeerError, RequestOptions, RpcError, ServerError};
use grenache_io::{Body, Runtime, WebReply, WebRequest, WebServer, WebServerConfig};
use serde_json::Value;

use crate::config::Settings;
use crate::route::Route;

const JSON: &str = "application/json";

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
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    replies: AtomicU64,
    target_errors: AtomicU64,
    call_errors: AtomicU64,
    bad_requests: AtomicU64,
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
    pub(crate) timeout: Duration,
}

impl<R: Runtime> Gateway<R> {
    /// Listens on `port` at the proxy's bind address, with the body limit of the Grape API.
    pub(crate) fn start(
        settings: &Settings,
        port: u16,
        calls: Calls<R>,
    ) -> Result<Self, ServerError> {
        let counters = Arc::new(Counters::default());
        let mut config = WebServerConfig::new();
        config.bind = settings.bind;
        config.port = port;
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
        let c = &self.counters;
        GatewayStats {
            requests: c.requests.load(Ordering::Relaxed),
            replies: c.replies.load(Ordering::Relaxed),
            target_errors: c.target_errors.load(Ordering::Relaxed),
            call_errors: c.call_errors.load(Ordering::Relaxed),
            bad_requests: c.bad_requests.load(Ordering::Relaxed),
        }
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
        body: serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    }
}

async fn answer<R: Runtime>(calls: &Calls<R>, counters: &Counters, req: WebRequest) -> WebReply {
    let reply = match parse(calls, req) {
        Ok((target, via, payload)) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let (counter, reply) = call(calls, &target, via, payload).await;
            match counter {
                Outcome::Reply => &counters.replies,
                Outcome::Target => &counters.target_errors,
                Outcome::Call => &counters.call_errors,
            }
            .fetch_add(1, Ordering::Relaxed);
            reply
        }
        Err(reply) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            reply
        }
    };
    tracing::debug!(status = reply.status, "gateway answered");
    reply
}

/// Reads `POST /rpc/NAME[?via=TO]` and its JSON body into what to call, over what, with
/// what; anything else is its error reply.
fn parse<R: Runtime>(
    calls: &Calls<R>,
    req: WebRequest,
) -> Result<(String, Protocol, Value), WebReply> {
    let Some(name) = req.path.strip_prefix("/rpc/").filter(|n| !n.is_empty()) else {
        return Err(error(404, "ERR_NOT_FOUND"));
    };
    if req.method != "POST" {
        return Err(error(405, "ERR_METHOD_NOT_ALLOWED"));
    }
    let via = match query_value(req.query.as_deref(), "via") {
        Some(via) => Some(
            via.parse::<Protocol>()
                .map_err(|_| error(400, "ERR_BAD_VIA: http, ws or zmq"))?,
        ),
        None => None,
    };
    let bytes = match req.body {
        Body::Complete(bytes) => bytes,
        Body::TooLarge(_) => return Err(error(413, "ERR_BODY_TOO_LARGE")),
    };
    let payload: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|_| error(400, "ERR_BAD_JSON"))?
    };
    // A route for NAME says how the proxy reaches it; a `?via=` names NAME itself.
    let (target, to) = match (via, calls.routes.iter().find(|r| r.name == name)) {
        (Some(via), _) => (name.to_owned(), via),
        (None, Some(route)) => (route.target.clone(), route.to),
        (None, None) => (name.to_owned(), Protocol::Http),
    };
    Ok((target, to, payload))
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
) -> (Outcome, WebReply) {
    let Some((_, client)) = calls.clients.iter().find(|(p, _)| *p == via) else {
        return (Outcome::Call, error(502, "ERR_NO_CLIENT"));
    };
    let opts = RequestOptions::default().timeout(calls.timeout);
    match client.request(target, payload, opts).await {
        Ok(value) => (
            Outcome::Reply,
            WebReply {
                status: 200,
                content_type: JSON,
                body: value.to_string().into_bytes(),
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
