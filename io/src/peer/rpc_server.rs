//! A peer-RPC server over HTTP (grenache-nodejs-http), WebSocket (grenache-nodejs-ws) or
//! ZeroMQ (a ROUTER, grenache-nodejs-zmq's frames): reads request frames, calls the user's
//! handler, writes reply frames. The framing, ZMTP and the error replies are the core's;
//! this file only moves bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_lite::{FutureExt as _, future};
use grenache_core::peer::{
    ACTION_HEADER, ARGS_HEADER, COMPRESS_HEADER, Compression, FrameError, GR_HEADER,
    HandlerFailure, HttpResponse, RpcTransport, StreamBudget, StreamHead, ZmqServerConn,
    decode_http_request, decode_request, header_error_reply, http_error_reply, reply_content_type,
    ws_error_reply,
};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::client::PeerClient;
use super::config::RpcServerConfig;
use super::curve::{CurveStats, ZmqSecurity};
use super::error::{PeerError, ServerError};
use super::listen::{Announced, bind, write_zmq};
use super::stream_body::{RequestBody, StreamRequest, discard};
use crate::http_server::{self, Answer, Body, read_body};
use crate::listen::{AcceptLimits, accept_loop};
use crate::read_burst::ReadBurst;
use crate::runtime::Runtime;
use crate::stop::{Stop, StopTrigger, stop_pair};
use crate::task::{Limiter, Task};
use crate::time::{sleep_until, timeout};
use crate::tls::{Accepted, FuturesIo, PeerIdentity, TlsServer, TlsStats};
use crate::ws_server::{self, Out, Taken, WsLimits};
use grenache_core::peer::zmtp::CurvePublicKey;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
type Handler = Arc<dyn Fn(String, Value, RequestContext) -> HandlerFuture + Send + Sync>;
type StreamHandler = Arc<dyn Fn(StreamRequest, RequestBody) -> HandlerFuture + Send + Sync>;

/// What a handler learns about a request besides its key and payload.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RequestContext {
    /// The client's certificate, verified against the server's CA, when the server has
    /// TLS with a CA (what Node's handlers get from `getPeerCertificate()`); `None` on
    /// plaintext servers.
    pub peer: Option<Arc<PeerIdentity>>,
    /// The client's long-term CURVE public key, on a ZeroMQ server with CURVE (checked
    /// against the allow-list when the server has one).
    pub curve_client: Option<CurvePublicKey>,
}

/// What every connection of one server shares.
struct Ctx {
    handler: Handler,
    /// The handler of HTTP request streams, if the server takes them.
    streams: Option<StreamHandler>,
    in_flight: Limiter,
    config: RpcServerConfig,
    tls: Option<TlsServer>,
    zmq_security: ZmqSecurity,
    stop: Stop,
    stats: Counters,
}

/// The server's counters, shared by its connections.
#[derive(Default)]
struct Counters {
    bad_frames: AtomicU64,
    dropped_connections: AtomicU64,
}

/// What an [`RpcServer`] has refused so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// ZeroMQ messages that were not a request (answered with an error when they had a
    /// rid, dropped otherwise).
    pub bad_frames: u64,
    /// ZeroMQ connections closed for breaking ZMTP or for not finishing the handshake
    /// within `read_timeout`.
    pub dropped_connections: u64,
    /// TLS handshakes, and those refused by reason (all zero without TLS).
    pub tls: TlsStats,
    /// ZeroMQ security handshakes: CURVE ones that succeeded, and those refused by
    /// reason (a NULL client at a CURVE server, or the reverse, counts as a mismatch).
    pub curve: CurveStats,
}

/// A running RPC server. It serves until [`stop`](Self::stop) or until dropped; both stop
/// announcing its services and unannounce them, so lookups through our Grapes stop
/// finding it at once (Node Grapes list it until their peer lifetime has passed; clients
/// retrying fail over to other peers meanwhile).
#[derive(Debug)]
pub struct RpcServer<R: Runtime> {
    addr: SocketAddr,
    transport: RpcTransport,
    announced: Announced<R>,
    stop: StopTrigger,
    task: Task<R>,
    ctx: Arc<Ctx>,
}

/// Reads an [`RpcServer`]'s counters; see [`RpcServer::stats_reader`].
#[derive(Clone, Debug)]
pub struct StatsReader(Arc<Ctx>);

impl StatsReader {
    /// The server's counters now.
    pub fn read(&self) -> ServerStats {
        let ctx = &self.0;
        ServerStats {
            bad_frames: ctx.stats.bad_frames.load(Ordering::Relaxed),
            dropped_connections: ctx.stats.dropped_connections.load(Ordering::Relaxed),
            tls: ctx
                .tls
                .as_ref()
                .map_or_else(TlsStats::default, TlsServer::stats),
            curve: ctx.zmq_security.snapshot(),
        }
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

impl<R: Runtime> RpcServer<R> {
    /// Listens and serves, announcing nothing: call [`announce`](Self::announce) (or
    /// use [`start`](Self::start)). `handler(key, payload)` runs once per request, many at
    /// once; `Err(message)` reaches the client as its error.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound.
    pub async fn listen<H, F>(config: RpcServerConfig, handler: H) -> Result<Self, ServerError>
    where
        H: Fn(String, Value) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Value, String>> + Send + 'static,
    {
        Self::listen_with_context(config, move |key, payload, _| handler(key, payload)).await
    }

    /// [`listen`](Self::listen) with a handler that also gets the request's
    /// [`RequestContext`] (the client's verified certificate on a mutual-TLS server).
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound;
    /// [`ServerError::TlsUnsupported`] for TLS on ZeroMQ.
    pub async fn listen_with_context<H, F>(
        config: RpcServerConfig,
        handler: H,
    ) -> Result<Self, ServerError>
    where
        H: Fn(String, Value, RequestContext) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Value, String>> + Send + 'static,
    {
        Self::serve(config, boxed(handler), None)
    }

    /// [`listen_with_context`](Self::listen_with_context) on HTTP, also taking request
    /// streams in grenache-nodejs-http's format (a chunked `POST` with a `_gr` header):
    /// `streams(request, body)` gets each stream's metadata and its body as it arrives,
    /// and answers as `handler` does. The body is read only as fast as `streams` reads it,
    /// and at most [`max_stream_len`](RpcServerConfig::max_stream_len) of it (past that the
    /// client gets 413 `ERR_STREAM_TOO_LARGE`). Stream calls count against `max_in_flight`
    /// and `handler_timeout` like any other. A bad `_gr`, or a chunked request without
    /// one, is answered as Node answers it: 500 `[null, "ERR_HEADER_PARSE_GR", null]`.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be bound;
    /// [`ServerError::StreamsNeedHttp`] on WebSocket or ZeroMQ.
    pub async fn listen_with_streams<H, F, S, G>(
        config: RpcServerConfig,
        handler: H,
        streams: S,
    ) -> Result<Self, ServerError>
    where
        H: Fn(String, Value, RequestContext) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Value, String>> + Send + 'static,
        S: Fn(StreamRequest, RequestBody) -> G + Send + Sync + 'static,
        G: Future<Output = Result<Value, String>> + Send + 'static,
    {
        if config.transport != RpcTransport::Http {
            return Err(ServerError::StreamsNeedHttp);
        }
        let streams: StreamHandler =
            Arc::new(move |request, body| -> HandlerFuture { Box::pin(streams(request, body)) });
        Self::serve(config, boxed(handler), Some(streams))
    }

    /// Binds and starts the accept loop.
    fn serve(
        config: RpcServerConfig,
        handler: Handler,
        streams: Option<StreamHandler>,
    ) -> Result<Self, ServerError> {
        if config.tls.is_some() && config.transport == RpcTransport::Zmq {
            return Err(ServerError::TlsUnsupported);
        }
        let (listener, addr) = bind::<R>(SocketAddr::new(config.bind, config.port))?;
        let (trigger, stop) = stop_pair();
        let transport = config.transport;
        let limits = AcceptLimits {
            max_connections: config.max_connections,
            drain: config.drain_timeout,
            busy_poll: config.busy_poll,
        };
        let ctx = Arc::new(Ctx {
            handler,
            streams,
            in_flight: Limiter::new(config.max_in_flight),
            tls: config.tls.clone().map(TlsServer::new),
            zmq_security: ZmqSecurity::new(config.curve.as_ref()),
            config,
            stop: stop.clone(),
            stats: Counters::default(),
        });
        let stats = Arc::clone(&ctx);
        let task = Task::spawn(accept_loop::<R, _, _>(
            listener,
            "RPC",
            limits,
            stop,
            move |stream, _peer| {
                let ctx = Arc::clone(&ctx);
                async move {
                    match transport {
                        RpcTransport::Http => serve_http::<R>(stream, ctx).await,
                        RpcTransport::Ws => serve_ws::<R>(stream, ctx).await,
                        RpcTransport::Zmq => serve_zmq::<R>(stream, ctx).await,
                    }
                }
            },
        ));
        tracing::debug!(%addr, ?transport, "RPC server listening");
        Ok(RpcServer {
            addr,
            transport,
            announced: Announced::default(),
            stop: trigger,
            task,
            ctx: stats,
        })
    }

    /// [`listen`](Self::listen), then [`announce`](Self::announce) `service`: returns once
    /// the Grape has taken the first announce, so lookups find the server.
    ///
    /// # Errors
    /// [`ServerError::Bind`], or [`ServerError::Announce`] (the server is stopped then).
    pub async fn start<H, F>(
        client: &PeerClient<R>,
        service: &str,
        config: RpcServerConfig,
        handler: H,
    ) -> Result<Self, ServerError>
    where
        H: Fn(String, Value) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Value, String>> + Send + 'static,
    {
        let server = Self::listen(config, handler).await?;
        if let Err(err) = server.announce(client, service).await {
            server.stop().await;
            return Err(ServerError::Announce(err));
        }
        Ok(server)
    }

    /// Announces `service` at this server's port through `client`, again and again until
    /// the server stops; returns when the first round ends.
    ///
    /// # Errors
    /// The first round's error (the schedule stays and retries), or
    /// [`PeerError::Refused`] for a bad name.
    pub async fn announce(&self, client: &PeerClient<R>, service: &str) -> Result<(), PeerError> {
        self.announced.add(client, service, self.port()).await
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on (and announces).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The transport it speaks.
    pub fn transport(&self) -> RpcTransport {
        self.transport
    }

    /// What it has refused so far.
    pub fn stats(&self) -> ServerStats {
        self.stats_reader().read()
    }

    /// A handle that reads [`stats`](Self::stats) without holding the server, for a
    /// metrics page that outlives borrows of it.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(Arc::clone(&self.ctx))
    }

    /// Stops announcing and unannounces (waiting for the Grape), stops accepting, gives
    /// requests in progress [`drain_timeout`](RpcServerConfig::drain_timeout) to be
    /// answered, then closes every connection.
    pub async fn stop(mut self) {
        self.announced.stop_all(self.port()).await;
        self.stop.fire();
        self.task.join().await;
    }
}

impl<R: Runtime> Drop for RpcServer<R> {
    fn drop(&mut self) {
        self.announced.stop_all_now(self.port());
        self.stop.fire();
    }
}

/// A handler behind the one type every connection calls.
fn boxed<H, F>(handler: H) -> Handler
where
    H: Fn(String, Value, RequestContext) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, String>> + Send + 'static,
{
    Arc::new(move |key, payload, context| -> HandlerFuture {
        Box::pin(handler(key, payload, context))
    })
}

/// Runs the handler within the server's bounds (see [`run_bounded`]).
async fn call_handler<R: Runtime>(
    ctx: &Ctx,
    key: String,
    payload: Value,
    context: RequestContext,
) -> Result<Value, String> {
    run_bounded::<R>(ctx, || (ctx.handler)(key, payload, context)).await
}

/// Runs a handler call (`start` makes its future) within the server's bounds: at most
/// `max_in_flight` at once, at most `handler_timeout` long, and a panic becomes an error
/// reply.
async fn run_bounded<R: Runtime>(
    ctx: &Ctx,
    start: impl FnOnce() -> HandlerFuture,
) -> Result<Value, String> {
    let _permit = ctx.in_flight.acquire().await;
    let started = std::panic::catch_unwind(AssertUnwindSafe(start));
    let Ok(fut) = started else {
        tracing::error!("RPC handler panicked");
        return Err(HandlerFailure::Panicked.error().into());
    };
    match timeout::<R, _>(
        ctx.config.handler_timeout,
        AssertUnwindSafe(fut).catch_unwind(),
    )
    .await
    {
        Some(Ok(result)) => result,
        Some(Err(_)) => {
            tracing::error!("RPC handler panicked");
            Err(HandlerFailure::Panicked.error().into())
        }
        None => {
            tracing::warn!(timeout = ?ctx.config.handler_timeout, "RPC handler timed out");
            Err(HandlerFailure::TimedOut.error().into())
        }
    }
}

/// The reply frame (the core's rules: an error frame when it would pass the frame limit).
fn reply_frame(
    ctx: &Ctx,
    rid: &str,
    result: &Result<Value, String>,
    compression: Compression,
) -> Vec<u8> {
    let result = result.as_ref().map_err(String::as_str);
    grenache_core::peer::reply_frame(rid, result, compression, ctx.config.max_frame_len)
}

// ------------------------------------------------------------------------------------
// HTTP
// ------------------------------------------------------------------------------------

/// Serves one HTTP/1.1 connection (keep-alive) until it ends or the server stops; on
/// stop, the request in progress is answered first.
async fn serve_http<R: Runtime>(stream: R::TcpStream, ctx: Arc<Ctx>) {
    let limit = ctx.config.read_timeout;
    let Some(accepted) = Accepted::<R>::new(ctx.tls.as_ref(), stream, limit).await else {
        return;
    };
    let handler_ctx = Arc::clone(&ctx);
    let (io, peer) = match accepted {
        Accepted::Plain(stream) => (Either::Left(R::hyper_io(stream)), None),
        Accepted::Tls(stream, peer) => (Either::Right(FuturesIo::<R>::new(*stream)), peer),
    };
    let context = RequestContext {
        peer,
        curve_client: None,
    };
    let handle = move |req| handle_http::<R>(req, Arc::clone(&handler_ctx), context.clone());
    match io {
        Either::Left(io) => http_server::serve::<R, _, _, _, _>(io, limit, &ctx.stop, handle).await,
        Either::Right(io) => {
            http_server::serve::<R, _, _, _, _>(io, limit, &ctx.stop, handle).await
        }
    }
}

/// One of two stream types, each served by its own instance of the generic HTTP loop.
enum Either<A, B> {
    Left(A),
    Right(B),
}

async fn handle_http<R: Runtime>(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    context: RequestContext,
) -> Answer {
    let headers = req.headers();
    let raw = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let takes_streams = ctx.streams.is_some();
    let head = StreamHead::from_headers(
        raw(GR_HEADER),
        raw(ACTION_HEADER),
        raw(ARGS_HEADER),
        chunked,
        takes_streams,
    );
    match head {
        Err(err) => {
            tracing::debug!(%err, "unreadable request stream");
            return Ok(response(header_error_reply(), Compression::None));
        }
        Ok(Some(head)) => return Ok(handle_stream::<R>(req.into_body(), head, ctx, context).await),
        Ok(None) => {}
    }
    let compress = req
        .headers()
        .get(COMPRESS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let max = ctx.config.max_frame_len;
    let body = read_body::<R>(req.into_body(), max, ctx.config.read_timeout).await?;
    let bytes = match body {
        Body::Complete(bytes) => bytes,
        Body::TooLarge(len) => {
            let too_large = FrameError::TooLarge { len, max };
            return Ok(response(http_error_reply(&too_large), Compression::None));
        }
    };
    let (request, compression) = match decode_http_request(compress.as_deref(), &bytes, max) {
        Ok(decoded) => decoded,
        Err(err) => {
            tracing::debug!(%err, "unreadable RPC request");
            return Ok(response(http_error_reply(&err), Compression::None));
        }
    };
    let result = call_handler::<R>(&ctx, request.key, request.payload, context).await;
    let body = reply_frame(&ctx, &request.rid, &result, compression);
    Ok(response(HttpResponse { status: 200, body }, compression))
}

/// Serves one request stream: the streaming handler reads the body as it comes, then
/// its result is the reply (never gzipped, as Node's stream replies are not).
async fn handle_stream<R: Runtime>(
    body: Incoming,
    head: StreamHead,
    ctx: Arc<Ctx>,
    context: RequestContext,
) -> Response<Full<Bytes>> {
    let max = ctx.config.max_stream_len;
    // A declared length past the limit is refused before the handler runs.
    if let Err(over) = StreamBudget::new(max).take(body.size_hint().lower()) {
        return response(over.reply(&head.rid), Compression::None);
    }
    let Some(streams) = ctx.streams.clone() else {
        return response(header_error_reply(), Compression::None);
    };
    let rid = head.rid.clone();
    let (body, overflow) = RequestBody::new(body, max);
    let request = StreamRequest { head, context };
    let result = run_bounded::<R>(&ctx, move || streams(request, body)).await;
    let overflow = overflow
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(overflow) = overflow {
        tracing::debug!(over = %overflow.over, "request stream over its limit");
        // Up to the limit again, within the read timeout; a client sending more is cut off.
        let cap = u64::try_from(max).unwrap_or(u64::MAX);
        let _ = timeout::<R, _>(ctx.config.read_timeout, discard(overflow.rest, cap)).await;
        return response(overflow.over.reply(&rid), Compression::None);
    }
    let body = reply_frame(&ctx, &rid, &result, Compression::None);
    response(HttpResponse { status: 200, body }, Compression::None)
}

/// Frames a reply, typed as the core says.
fn response(reply: HttpResponse, compression: Compression) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = status;
    if let Some(content_type) = reply_content_type(compression) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

// ------------------------------------------------------------------------------------
// WebSocket
// ------------------------------------------------------------------------------------

/// Serves one WebSocket connection: reads requests while fewer than
/// `max_in_flight_per_connection` are in the handler, and writes replies as they come,
/// in any order (the client matches them by rid).
async fn serve_ws<R: Runtime>(stream: R::TcpStream, ctx: Arc<Ctx>) {
    let max = ctx.config.max_frame_len;
    let limits = WsLimits {
        max_message: max,
        max_in_flight: ctx.config.max_in_flight_per_connection.max(1),
        handshake_timeout: ctx.config.read_timeout,
        idle_timeout: ctx.config.ws_idle_timeout,
        drain_timeout: ctx.config.drain_timeout,
    };
    let limit = limits.handshake_timeout;
    let Some(accepted) = Accepted::<R>::new(ctx.tls.as_ref(), stream, limit).await else {
        return;
    };
    let (stream, peer) = accepted.into_ws();
    let context = RequestContext {
        peer,
        curve_client: None,
    };
    let Some(ws) = ws_server::accept::<R>(stream, max, limit).await else {
        return;
    };
    // Never full: at most `max_in_flight` requests are in the handler, and each sends one
    // reply.
    let (out_tx, out_rx) = async_channel::bounded(limits.max_in_flight);
    let take = |bytes: Vec<u8>| {
        let taken = match decode_request(&bytes, max) {
            Ok(request) => {
                let ctx = Arc::clone(&ctx);
                let out_tx = out_tx.clone();
                let context = context.clone();
                R::spawn_detached(async move {
                    let result =
                        call_handler::<R>(&ctx, request.key, request.payload, context).await;
                    let bytes = reply_frame(&ctx, &request.rid, &result, Compression::None);
                    let _ = out_tx.send(Out::Frame { bytes, done: true }).await;
                });
                Taken::Dispatched
            }
            Err(err) => {
                tracing::debug!(%err, "unreadable RPC request");
                // Node stays silent when there is no rid to answer; so do we.
                ws_error_reply(&err).map_or(Taken::Ignored, Taken::Answer)
            }
        };
        std::future::ready(taken)
    };
    ws_server::serve::<R, _, _>(ws, &limits, &ctx.stop, &out_rx, take).await;
}

// ------------------------------------------------------------------------------------
// ZeroMQ
// ------------------------------------------------------------------------------------

/// Bytes read from a ZeroMQ connection at once.
const ZMQ_READ_BUF: usize = 64 * 1024;

/// Replies written at once, at most, so one busy connection cannot hold its task (and the
/// memory of its output) for long.
const ZMQ_REPLY_BATCH: usize = 256;

/// A handler's reply to a request, by its rid.
type ZmqReply = (String, Result<Value, String>);

/// Queues `first` and every reply already waiting (up to [`ZMQ_REPLY_BATCH`]) on `conn`,
/// to leave in one write: a write each cost a system call, and the client a wake-up, per
/// request.
fn take_replies(
    conn: &mut ZmqServerConn,
    replies: &async_channel::Receiver<ZmqReply>,
    first: ZmqReply,
    in_flight: &mut usize,
) {
    let mut reply = Some(first);
    let mut taken = 0;
    while let Some((rid, result)) = reply.take() {
        *in_flight = in_flight.saturating_sub(1);
        if let Err(err) = conn.reply(&rid, result.as_ref().map_err(String::as_str)) {
            tracing::debug!(%err, "ZeroMQ reply refused");
        }
        taken += 1;
        if taken < ZMQ_REPLY_BATCH {
            reply = replies.try_recv().ok();
        }
    }
}

/// What woke a ZeroMQ connection.
enum ZmqWake {
    Incoming(std::io::Result<usize>),
    Reply(String, Result<Value, String>),
    Stop,
    Timeout,
}

/// Serves one ZeroMQ DEALER (a client connection to our ROUTER): reads requests while
/// fewer than `max_in_flight_per_connection` are in the handler, writes replies as they
/// come, in any order. A peer that does not finish the ZMTP (and CURVE) handshake within
/// `read_timeout`, breaks ZMTP, or goes silent past the heartbeat timeout, is dropped and
/// counted.
async fn serve_zmq<R: Runtime>(mut stream: R::TcpStream, ctx: Arc<Ctx>) {
    let security = ctx.zmq_security.security();
    let mut conn =
        ZmqServerConn::secure(ctx.config.max_frame_len, security, &mut ZmqSecurity::rng());
    if !write_zmq::<R>(&mut stream, &conn.take_output()).await {
        return;
    }
    let cap = ctx.config.max_in_flight_per_connection.max(1);
    // Handlers wait on a full queue; the loop below always drains it.
    let (reply_tx, reply_rx) = async_channel::bounded(cap);
    let mut buf = vec![0u8; ZMQ_READ_BUF];
    let mut in_flight = 0usize;
    let mut reading = true;
    let mut last_active = R::now();
    let handshake_until = last_active + ctx.config.read_timeout;
    let mut drain_until = last_active;
    let mut heartbeat = ctx.config.heartbeat.start(last_active);
    let mut burst = ReadBurst::new(ReadBurst::ZMQ_SERVER);
    while reading || in_flight > 0 {
        let conn_deadline = match (reading, in_flight) {
            (false, _) => Some(drain_until),
            (true, 0) if !conn.is_ready() => Some(handshake_until),
            (true, 0) => Some(last_active + ctx.config.ws_idle_timeout),
            (true, _) => None,
        };
        let beat_at = heartbeat.poll_timeout();
        let deadline = Some(conn_deadline.map_or(beat_at, |d| d.min(beat_at)));
        let wake = {
            let incoming = async {
                if reading && in_flight < cap {
                    ZmqWake::Incoming(R::read(&mut stream, &mut buf).await)
                } else {
                    future::pending().await
                }
            };
            let reply = async {
                match reply_rx.recv().await {
                    Ok((rid, result)) => ZmqWake::Reply(rid, result),
                    // Unreachable while `reply_tx` lives in this function.
                    Err(_) => future::pending().await,
                }
            };
            let stop = async {
                if reading {
                    ctx.stop.wait().await;
                    ZmqWake::Stop
                } else {
                    future::pending().await
                }
            };
            let timer = async {
                sleep_until::<R>(deadline).await;
                ZmqWake::Timeout
            };
            incoming.race(reply).race(stop).race(timer).await
        };
        match wake {
            ZmqWake::Incoming(Ok(0)) => {
                reading = false;
                drain_until = R::now() + ctx.config.drain_timeout;
            }
            ZmqWake::Incoming(Ok(n)) => {
                last_active = R::now();
                heartbeat.heard(last_active);
                let bad_before = conn.stats().bad_frames;
                let was_ready = conn.is_ready();
                let read = conn.handle_input(buf.get(..n).unwrap_or_default());
                ctx.zmq_security
                    .record(conn.zmtp(), was_ready, read.as_ref().map(|_| ()));
                let bad = conn.stats().bad_frames - bad_before;
                ctx.stats.bad_frames.fetch_add(bad, Ordering::Relaxed);
                let curve_client = conn.curve_client_key();
                let mut broken = false;
                while let Some(request) = conn.poll_request() {
                    in_flight += 1;
                    let ctx = Arc::clone(&ctx);
                    let reply_tx = reply_tx.clone();
                    R::spawn_detached(async move {
                        let context = RequestContext {
                            curve_client,
                            ..RequestContext::default()
                        };
                        let result =
                            call_handler::<R>(&ctx, request.key, request.payload, context).await;
                        let _ = reply_tx.send((request.rid, result)).await;
                    });
                    if let Some(first) = burst.after_one::<R, _>(|| reply_rx.try_recv().ok()).await
                    {
                        take_replies(&mut conn, &reply_rx, first, &mut in_flight);
                        if !write_zmq::<R>(&mut stream, &conn.take_output()).await {
                            broken = true;
                            break;
                        }
                    }
                }
                let written = !broken && write_zmq::<R>(&mut stream, &conn.take_output()).await;
                if let Err(err) = read {
                    tracing::debug!(%err, "ZeroMQ peer broke ZMTP; dropping it");
                    ctx.stats
                        .dropped_connections
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if !written {
                    break;
                }
            }
            ZmqWake::Incoming(Err(err)) => {
                tracing::debug!(%err, "ZeroMQ read failed");
                break;
            }
            ZmqWake::Reply(rid, result) => {
                burst.wrote();
                take_replies(&mut conn, &reply_rx, (rid, result), &mut in_flight);
                last_active = R::now();
                if !write_zmq::<R>(&mut stream, &conn.take_output()).await {
                    break;
                }
            }
            ZmqWake::Stop => {
                reading = false;
                drain_until = R::now() + ctx.config.drain_timeout;
            }
            ZmqWake::Timeout => {
                let now = R::now();
                if conn_deadline.is_none_or(|d| now < d) {
                    // Only the heartbeat's time: a PING, or a peer gone silent.
                    if let Err(err) = heartbeat.tick(conn.zmtp(), now) {
                        tracing::debug!(%err, "ZeroMQ client gone silent; dropping it");
                        ctx.stats
                            .dropped_connections
                            .fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if !write_zmq::<R>(&mut stream, &conn.take_output()).await {
                        break;
                    }
                    continue;
                }
                if !conn.is_ready() {
                    tracing::debug!("ZeroMQ peer did not finish its handshake; dropping it");
                    ctx.stats
                        .dropped_connections
                        .fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        }
    }
}
