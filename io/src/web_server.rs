//! A plain HTTP server for handlers that are not Grenache RPC (the proxy's gateway): it
//! shares the RPC server's accept loop, connection bounds, hyper serve loop and bounded
//! body reader, and hands the handler a request already read within those limits, so a
//! caller never needs hyper's types.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{Stream, StreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode, header};

use crate::http_server::{self, Body, ConnectionError, read_body};
use crate::listen::{AcceptLimits, accept_loop};
use crate::peer::ServerError;
use crate::runtime::Runtime;
use crate::stop::{Stop, StopTrigger, stop_pair};
use crate::task::Task;

/// Where a [`WebServer`] listens and how it bounds its callers.
#[derive(Clone, Debug)]
pub struct WebServerConfig {
    /// The address to listen on.
    pub bind: IpAddr,
    /// The port (0: the OS picks one).
    pub port: u16,
    /// A request body longer than this is not read: the handler sees [`Body::TooLarge`].
    pub max_body: usize,
    /// How long a client may take to send its head, and then its body.
    pub read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// How long requests in progress get to finish after `stop`.
    pub drain_timeout: Duration,
    /// The origin browsers may call from (CORS): every reply says so, and a preflight
    /// `OPTIONS` is answered here. `None`: same-origin callers and non-browsers only.
    pub cors: Option<CorsOrigin>,
}

/// An origin allowed to call a [`WebServer`] from a browser: `*`, or a scheme, host and
/// optional port such as `https://app.example.com`. Checked when made, so a bad one is
/// refused at start rather than sent as a broken header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsOrigin(hyper::header::HeaderValue);

impl std::str::FromStr for CorsOrigin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let well_formed = s == "*"
            || ["http://", "https://"].iter().any(|scheme| {
                s.strip_prefix(scheme).is_some_and(|host| {
                    !host.is_empty()
                        && !host.contains('/')
                        && host.bytes().all(|b| b.is_ascii_graphic())
                })
            });
        match hyper::header::HeaderValue::from_str(s) {
            Ok(value) if well_formed => Ok(CorsOrigin(value)),
            _ => Err(format!(
                "{s:?} is not an origin: give * or scheme://host[:port], e.g. https://app.example.com"
            )),
        }
    }
}

impl WebServerConfig {
    /// Loopback, an OS-chosen port, 1 MiB bodies, 10 s reads, 1024 connections, 5 s drain,
    /// no CORS.
    pub fn new() -> Self {
        WebServerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            max_body: 1024 * 1024,
            read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(5),
            cors: None,
        }
    }
}

impl Default for WebServerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// One request, its body read within the server's limits.
#[derive(Debug)]
pub struct WebRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any (`via=zmq`).
    pub query: Option<String>,
    /// The body, or how long it was when it passed the limit.
    pub body: Body,
}

/// What the handler answers.
#[derive(Debug)]
pub struct WebReply {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: WebBody,
}

/// A reply's body: whole, or streamed chunk by chunk (server-sent events).
pub enum WebBody {
    /// All of it at once.
    Full(Vec<u8>),
    /// Sent as each chunk comes; the stream is dropped when the client goes away or the
    /// server stops, so whatever feeds it can let go then.
    Stream(Pin<Box<dyn Stream<Item = Vec<u8>> + Send>>),
}

impl std::fmt::Debug for WebBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebBody::Full(bytes) => f.debug_tuple("Full").field(&bytes.len()).finish(),
            WebBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

type Handler = Arc<
    dyn Fn(WebRequest) -> std::pin::Pin<Box<dyn Future<Output = WebReply> + Send>> + Send + Sync,
>;

/// A running plain HTTP server; it serves until [`stop`](Self::stop) or until dropped.
#[derive(Debug)]
pub struct WebServer<R: Runtime> {
    addr: SocketAddr,
    stop: StopTrigger,
    task: Task<R>,
}

impl<R: Runtime> WebServer<R> {
    /// Listens and serves: `handler` runs once per request, many at once.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub fn listen<H, F>(config: WebServerConfig, handler: H) -> Result<Self, ServerError>
    where
        H: Fn(WebRequest) -> F + Send + Sync + 'static,
        F: Future<Output = WebReply> + Send + 'static,
    {
        let (listener, addr) = crate::peer::bind::<R>(SocketAddr::new(config.bind, config.port))?;
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let (trigger, stop) = stop_pair();
        let limits = AcceptLimits {
            max_connections: config.max_connections,
            drain: config.drain_timeout,
            busy_poll: None,
        };
        let config = Arc::new(config);
        let serving = stop.clone();
        let task = Task::spawn(accept_loop::<R, _, _>(
            listener,
            "web",
            limits,
            stop,
            move |stream, _peer| {
                serve::<R>(
                    stream,
                    Arc::clone(&config),
                    Arc::clone(&handler),
                    serving.clone(),
                )
            },
        ));
        tracing::debug!(%addr, "web server listening");
        Ok(WebServer {
            addr,
            stop: trigger,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, gives requests in progress the drain time, then closes every
    /// connection.
    pub async fn stop(mut self) {
        self.stop.fire();
        self.task.join().await;
    }
}

impl<R: Runtime> Drop for WebServer<R> {
    fn drop(&mut self) {
        self.stop.fire();
    }
}

async fn serve<R: Runtime>(
    stream: R::TcpStream,
    config: Arc<WebServerConfig>,
    handler: Handler,
    stop: Stop,
) {
    let timeout = config.read_timeout;
    let handle = move |req| handle::<R>(req, Arc::clone(&config), Arc::clone(&handler));
    http_server::serve::<R, _, _, _, _>(R::hyper_io(stream), timeout, &stop, handle).await;
}

async fn handle<R: Runtime>(
    req: Request<Incoming>,
    config: Arc<WebServerConfig>,
    handler: Handler,
) -> Result<Response<UnsyncBoxBody<Bytes, Infallible>>, ConnectionError> {
    let (parts, body) = req.into_parts();
    if let (Some(origin), &hyper::Method::OPTIONS) = (&config.cors, &parts.method) {
        return Ok(preflight(origin));
    }
    let body = read_body::<R>(body, config.max_body, config.read_timeout).await?;
    let request = WebRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        body,
    };
    let reply = handler(request).await;
    let body = match reply.body {
        WebBody::Full(bytes) => Full::new(Bytes::from(bytes)).boxed_unsync(),
        WebBody::Stream(chunks) => {
            StreamBody::new(chunks.map(|chunk| Ok(Frame::data(Bytes::from(chunk))))).boxed_unsync()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    if let Some(CorsOrigin(origin)) = &config.cors {
        (response.headers_mut()).insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    Ok(response)
}

/// The answer to a browser's CORS preflight: the origin may `GET` and `POST` JSON.
fn preflight(CorsOrigin(origin): &CorsOrigin) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
        (header::ACCESS_CONTROL_MAX_AGE, "600"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}
