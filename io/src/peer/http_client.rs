//! HTTP/1.1 exchanges for the core's [`Io::Http`](grenache_core::peer::Io):
//! hyper's client over the runtime's TCP (or TLS over it, for `https://` URLs), with a
//! keep-alive pool bounded per peer. Request streams ([`send_stream`]) go the same way
//! on a connection of their own, as Node's `requestStream` sends `connection: close`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_lock::Semaphore;
use bytes::Bytes;
use grenache_core::peer::{
    Delivery, HttpMethod, HttpRequest, HttpResponse, Protocol, TransportError,
};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, TRANSFER_ENCODING};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Uri};

use super::first_bytes::{FirstBytes, Recording};
use crate::busy_poll;
use crate::net::connect;
use crate::runtime::Runtime;
use crate::time::timeout;
use crate::tls::{FuturesIo, TlsClient, TlsFailure};

type Sender = SendRequest<Full<Bytes>>;

/// A request stream's body: the caller's chunks, pulled only as the socket takes them.
pub(crate) type ChunkedBody = UnsyncBoxBody<Bytes, Infallible>;

/// Keep-alive connections by peer (`scheme://host:port`), and each URL's [`Target`] read
/// once: a client calls the same few peers again and again, so a request costs one lookup
/// under the pool's lock, not a URL parse and four `String`s.
#[derive(Debug)]
pub(crate) struct HttpPool {
    peers: Mutex<Peers>,
    max_per_peer: usize,
    max_peers: usize,
    idle_timeout: Duration,
    /// For `https://` URLs; without it they are refused.
    tls: Option<Arc<TlsClient>>,
    /// Each connection's busy-poll window ([`crate::busy_poll`]); `None`: off.
    busy_poll: Option<Duration>,
}

/// The pool's maps, behind one lock.
#[derive(Debug, Default)]
struct Peers {
    /// By pool key; a slot nobody else holds is unused.
    slots: BTreeMap<String, Arc<Slot>>,
    /// URLs seen, parsed; at most `max_peers`, then forgotten all at once (a re-parse is cheap).
    targets: BTreeMap<String, Arc<Target>>,
}

/// One peer's connections: a limit on those in use, and the idle ones.
#[derive(Debug)]
struct Slot {
    in_use: Semaphore,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl Slot {
    /// The most recently used idle connection that is still open and fresh.
    fn take_idle(&self, now: Instant, idle_timeout: Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && now.saturating_duration_since(since) < idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps a connection whose exchange ended cleanly for the next request, up to `max`.
    fn put_idle(&self, sender: Sender, now: Instant, idle_timeout: Duration, max: usize) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(s, since)| {
            !s.is_closed() && now.saturating_duration_since(*since) < idle_timeout
        });
        if idle.len() < max {
            idle.push((sender, now));
        }
    }
}

impl HttpPool {
    pub(crate) fn new(max_per_peer: usize, max_peers: usize, idle_timeout: Duration) -> Self {
        HttpPool {
            peers: Mutex::new(Peers::default()),
            max_per_peer: max_per_peer.max(1),
            max_peers: max_peers.max(1),
            idle_timeout,
            tls: None,
            busy_poll: None,
        }
    }

    /// The same pool, its connections busy-polling for `window` after each wake-up.
    pub(crate) fn with_busy_poll(mut self, window: Option<Duration>) -> Self {
        self.busy_poll = window;
        self
    }

    /// The same pool, able to dial `https://` URLs.
    pub(crate) fn with_tls(mut self, tls: Option<Arc<TlsClient>>) -> Self {
        self.tls = tls;
        self
    }

    /// Where `url` goes and its peer's slot, under one lock: a new peer makes room by
    /// forgetting unused ones (their idle connections close).
    fn route(&self, url: &str) -> Result<(Arc<Target>, Arc<Slot>), TransportError> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let target = match peers.targets.get(url) {
            Some(target) => Arc::clone(target),
            None => {
                let target = Arc::new(Target::parse(url)?);
                if peers.targets.len() >= self.max_peers {
                    peers.targets.clear();
                }
                peers.targets.insert(url.to_owned(), Arc::clone(&target));
                target
            }
        };
        if let Some(slot) = peers.slots.get(&target.key) {
            return Ok((target, Arc::clone(slot)));
        }
        if peers.slots.len() >= self.max_peers {
            peers.slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        let slot = Arc::new(Slot {
            in_use: Semaphore::new(self.max_per_peer),
            idle: Mutex::new(Vec::new()),
        });
        peers.slots.insert(target.key.clone(), Arc::clone(&slot));
        Ok((target, slot))
    }
}

/// Performs one request (a POST, or a watch's GET); `None` if its deadline passed first (the core has given up then).
///
/// A body longer than `max_body` is cut one byte past it, so the core sees it is too long
/// without this reading it all.
pub(crate) async fn exchange<R: Runtime>(
    pool: &HttpPool,
    request: HttpRequest,
    max_body: usize,
) -> Option<Result<HttpResponse, TransportError>> {
    let left = request.deadline.saturating_duration_since(R::now());
    timeout::<R, _>(left, attempt::<R>(pool, request, max_body)).await
}

/// Where a request goes, read off its URL.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    /// Whether it is an `https://` URL.
    secure: bool,
    /// `host:port`, for messages.
    authority: String,
    /// The same, as the `Host` header (a clone is a count).
    host_header: HeaderValue,
    /// `scheme://host:port`, the pool key: a TLS connection is not a plain one.
    key: String,
    /// The request target (a clone is a count, where a `&str` is parsed and copied).
    path: PathAndQuery,
}

impl Target {
    fn parse(url: &str) -> Result<Target, TransportError> {
        let bad = || TransportError::new(format!("ERR_URL_INVALID: {url}"));
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(TransportError::new(format!(
                    "ERR_URL_SCHEME: only http:// and https:// are supported, got {url}"
                )));
            }
        };
        let host = uri.host().ok_or_else(bad)?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let scheme = if secure { "https" } else { "http" };
        let authority = format!("{host}:{port}");
        Ok(Target {
            secure,
            key: format!("{scheme}://{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            host_header: HeaderValue::from_str(&authority).map_err(|_| bad())?,
            authority,
            path: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        })
    }
}

async fn attempt<R: Runtime>(
    pool: &HttpPool,
    request: HttpRequest,
    max_body: usize,
) -> Result<HttpResponse, TransportError> {
    let (target, slot) = pool.route(&request.url)?;
    let target = &*target;
    let body = Bytes::from(request.body);
    let _permit = slot.in_use.acquire().await;
    if let Some(sender) = slot.take_idle(R::now(), pool.idle_timeout) {
        match send(
            sender,
            target,
            request.method,
            &request.headers,
            body.clone(),
            max_body,
            target.secure,
        )
        .await
        {
            Ok((response, reusable)) => {
                if let Some(sender) = reusable {
                    slot.put_idle(sender, R::now(), pool.idle_timeout, pool.max_per_peer);
                }
                return Ok(response);
            }
            // The peer closed it while it sat idle, before the request went out: the
            // request is still unsent, so a new connection may carry it.
            Err(error) if error.delivery == Delivery::Unsent => {
                tracing::debug!(peer = target.authority, %error, "stale keep-alive connection; reconnecting");
            }
            Err(error) => return Err(error),
        }
    }
    // Boxed: a new connection (TCP, TLS, hyper's handshake) is the rare path, and inline its
    // state would make every exchange's future many KB.
    let (sender, first) = Box::pin(open::<R, _>(target, pool.tls.as_ref(), pool.busy_poll)).await?;
    let sent = send(
        sender,
        target,
        request.method,
        &request.headers,
        body,
        max_body,
        target.secure,
    )
    .await;
    // hyper could not read an answer: the server may speak another protocol.
    let (response, reusable) = sent.map_err(|error| match first.protocol() {
        Some(met) if met != Protocol::Http => TransportError::wrong_transport(met),
        _ => error,
    })?;
    if let Some(sender) = reusable {
        slot.put_idle(sender, R::now(), pool.idle_timeout, pool.max_per_peer);
    }
    Ok(response)
}

/// Opens a connection and runs its hyper half in the background (it ends when the
/// connection closes or its sender is dropped). Every failure here comes before the
/// request is written, so it is [`Delivery::Unsent`].
/// The connection's first bytes are kept (after TLS, if any), to name the protocol of a
/// server that does not answer in HTTP.
async fn open<R: Runtime, B>(
    target: &Target,
    tls: Option<&Arc<TlsClient>>,
    busy_poll: Option<Duration>,
) -> Result<(SendRequest<B>, FirstBytes), TransportError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = match (target.secure, tls) {
        (false, _) => None,
        (true, Some(tls)) => Some(tls),
        (true, None) => {
            return Err(TransportError::new(format!(
                "ERR_TLS_NOT_CONFIGURED: {} needs a client with TLS settings",
                target.key
            )));
        }
    };
    let stream = connect::<R>(&target.host, target.port)
        .await
        .map_err(|e| TransportError::unsent(format!("connect {}: {e}", target.authority)))?;
    match tls {
        None => handshake::<R, _, B>(target, R::hyper_io(stream), None, busy_poll).await,
        Some(tls) => {
            let stream = tls
                .connect::<R>(&target.host, stream)
                .await
                .map_err(|failure| TransportError::unsent(format!("{failure}: {}", target.key)))?;
            handshake::<R, _, B>(
                target,
                FuturesIo::<R>::new(stream),
                Some(Arc::clone(tls)),
                busy_poll,
            )
            .await
        }
    }
}

/// hyper's client handshake on an open stream, recording its first bytes; its connection
/// half runs in the background.
async fn handshake<R, I, B>(
    target: &Target,
    io: I,
    tls: Option<Arc<TlsClient>>,
    busy_poll: Option<Duration>,
) -> Result<(SendRequest<B>, FirstBytes), TransportError>
where
    R: Runtime,
    I: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (io, first) = Recording::new(io);
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| TransportError::unsent(format!("{}: {e}", target.authority)))?;
    busy_poll::spawn_detached::<R>(busy_poll, async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "HTTP client connection ended");
            // Counted here, where every connection's end is seen once.
            if let Some(tls) = tls {
                tls.count_end(&err);
            }
        }
    });
    Ok((sender, first))
}

/// Sends one request and reads the response; gives the connection back when it can
/// carry another request. An error is [`Delivery::Unsent`] only when hyper says it never
/// began writing the request; one that TLS caused (the server refused our certificate)
/// starts with its [`TlsFailure`](crate::tls::TlsFailure) code.
async fn send(
    mut sender: Sender,
    target: &Target,
    method: HttpMethod,
    headers: &[(&'static str, &'static str)],
    body: Bytes,
    max_body: usize,
    tls: bool,
) -> Result<(HttpResponse, Option<Sender>), TransportError> {
    let described = |err: &hyper::Error, what: &str| {
        let code = if tls { TlsFailure::behind(err) } else { None };
        let code = code.map(|c| format!("{c}: ")).unwrap_or_default();
        format!("{code}{}: {what}{err}", target.authority)
    };
    if let Err(err) = sender.ready().await {
        return Err(TransportError::unsent(format!(
            "{}: {err}",
            target.authority
        )));
    }
    let builder = match method {
        HttpMethod::Post => Request::post(Uri::from(target.path.clone())),
        HttpMethod::Get => Request::get(Uri::from(target.path.clone())),
    };
    let mut builder = builder.header(HOST, target.host_header.clone());
    if method == HttpMethod::Post
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| TransportError::new(format!("ERR_REQUEST_BUILD: {e}")))?;
    let response = sender.try_send_request(request).await.map_err(|mut err| {
        let message = described(err.error(), "");
        // hyper hands the request back only when it wrote none of it.
        match err.take_message() {
            Some(_) => TransportError::unsent(message),
            None => TransportError::new(message),
        }
    })?;
    let status = response.status().as_u16();
    let (bytes, complete) = read_reply(response.into_body(), max_body, &described).await?;
    let response = HttpResponse {
        status,
        body: bytes,
    };
    // A body left unread makes the connection useless; dropping the sender closes it.
    Ok((response, complete.then_some(sender)))
}

/// Reads a reply body, cut one byte past `max_body` (then `false`: not read to its end).
async fn read_reply(
    mut incoming: Incoming,
    max_body: usize,
    described: &impl Fn(&hyper::Error, &str) -> String,
) -> Result<(Vec<u8>, bool), TransportError> {
    let cap = max_body.saturating_add(1);
    let mut bytes = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame =
            frame.map_err(|err| TransportError::new(described(&err, "reading the reply: ")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let take = data.len().min(cap.saturating_sub(bytes.len()));
        bytes.extend_from_slice(data.get(..take).unwrap_or_default());
        if bytes.len() >= cap {
            return Ok((bytes, false));
        }
    }
    Ok((bytes, true))
}

/// A fresh connection for one request stream.
pub(crate) struct StreamConn {
    sender: SendRequest<ChunkedBody>,
    target: Target,
    first: FirstBytes,
}

/// Opens the connection a request stream goes on. Every error is
/// [`Delivery::Unsent`]: the body is untouched and may go to another peer.
pub(crate) async fn open_stream<R: Runtime>(
    url: &str,
    tls: Option<&Arc<TlsClient>>,
) -> Result<StreamConn, TransportError> {
    let target = Target::parse(url)?;
    let (sender, first) = open::<R, ChunkedBody>(&target, tls, None).await?;
    Ok(StreamConn {
        sender,
        target,
        first,
    })
}

/// Sends a request stream (`headers`, then `body` chunked) and reads the reply, cut one
/// byte past `max_body`. hyper pulls the body's next chunk only when the socket has taken
/// the last one, so a slow server slows the body's producer.
pub(crate) async fn send_stream(
    conn: StreamConn,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: ChunkedBody,
    max_body: usize,
) -> Result<HttpResponse, TransportError> {
    let StreamConn {
        mut sender,
        target,
        first,
    } = conn;
    let tls = target.secure;
    let described = |err: &hyper::Error, what: &str| {
        let code = if tls { TlsFailure::behind(err) } else { None };
        let code = code.map(|c| format!("{c}: ")).unwrap_or_default();
        format!("{code}{}: {what}{err}", target.authority)
    };
    let mut builder = Request::post(Uri::from(target.path.clone()))
        .header(HOST, target.host_header.clone())
        .header(CONNECTION, "close")
        .header(TRANSFER_ENCODING, "chunked");
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(&value).map_err(|_| {
            TransportError::unsent(format!("ERR_REQUEST_BUILD: {name} is not a header value"))
        })?;
        builder = builder.header(HeaderName::from_static(name), value);
    }
    let request = builder
        .body(body)
        .map_err(|e| TransportError::unsent(format!("ERR_REQUEST_BUILD: {e}")))?;
    if let Err(err) = sender.ready().await {
        return Err(TransportError::unsent(described(&err, "")));
    }
    let sent = sender.try_send_request(request).await.map_err(|mut err| {
        let message = described(err.error(), "");
        match err.take_message() {
            Some(_) => TransportError::unsent(message),
            None => TransportError::new(message),
        }
    });
    // hyper could not read an answer: the server may speak another protocol.
    let response = sent.map_err(|error| match first.protocol() {
        Some(met) if met != Protocol::Http => TransportError::wrong_transport(met),
        _ => error,
    })?;
    let status = response.status().as_u16();
    let (body, _) = read_reply(response.into_body(), max_body, &described).await?;
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn targets_are_read_off_http_urls() {
        let v4 = Target::parse("http://127.0.0.1:1337/").expect("valid");
        let v6 = Target::parse("http://[::1]:8080/api?x=1").expect("valid");
        let default_port = Target::parse("http://svc.local/").expect("valid");

        assert_eq!(
            (v4.host.as_str(), v4.port, v4.path.as_str()),
            ("127.0.0.1", 1337, "/")
        );
        assert_eq!(v4.authority, "127.0.0.1:1337");
        assert_eq!(
            (v6.host.as_str(), v6.authority.as_str()),
            ("::1", "[::1]:8080")
        );
        assert_eq!(v6.path, "/api?x=1");
        assert_eq!(default_port.port, 80);
        let tls = Target::parse("https://svc.local/").expect("valid");
        assert_eq!((tls.secure, tls.port), (true, 443));
        assert_eq!(tls.key, "https://svc.local:443");
        assert_ne!(
            v4.key,
            Target::parse("https://127.0.0.1:1337/").expect("valid").key
        );
    }

    #[test]
    fn a_url_is_read_once_and_a_peer_has_one_slot() {
        let pool = HttpPool::new(4, 2, Duration::from_secs(4));

        let (a, slot_a) = pool.route("http://127.0.0.1:1/").expect("valid");
        let (again, slot_again) = pool.route("http://127.0.0.1:1/").expect("valid");
        let (_, other_path) = pool.route("http://127.0.0.1:1/other").expect("valid");
        let (_, tls) = pool.route("https://127.0.0.1:1/").expect("valid");

        assert!(Arc::ptr_eq(&a, &again), "the URL was parsed again");
        assert!(Arc::ptr_eq(&slot_a, &slot_again));
        assert!(Arc::ptr_eq(&slot_a, &other_path), "one peer, one slot");
        assert!(
            !Arc::ptr_eq(&slot_a, &tls),
            "a TLS connection is not a plain one"
        );
        assert!(pool.route("ftp://127.0.0.1:1/").is_err());
    }

    #[test]
    fn a_new_peer_forgets_unused_ones_past_the_cap() {
        let pool = HttpPool::new(4, 2, Duration::from_secs(4));
        let (_, held) = pool.route("http://127.0.0.1:1/").expect("valid");
        drop(pool.route("http://127.0.0.1:2/").expect("valid"));

        let (_, third) = pool.route("http://127.0.0.1:3/").expect("valid");
        let (_, held_again) = pool.route("http://127.0.0.1:1/").expect("valid");
        let (_, fourth) = pool.route("http://127.0.0.1:4/").expect("valid");

        let peers = pool.peers.lock().expect("not poisoned");
        assert!(Arc::ptr_eq(&held, &held_again), "a slot in use is kept");
        assert!(
            !peers.slots.contains_key("http://127.0.0.1:2"),
            "unused: forgotten"
        );
        assert!(peers.slots.contains_key("http://127.0.0.1:4"));
        assert!(peers.targets.len() <= 2);
        drop((third, fourth));
    }

    #[test]
    fn other_schemes_and_garbage_are_transport_errors() {
        for url in ["ftp://h:1/", "ws://h:1/ws", "not a url", "http:///"] {
            let err = Target::parse(url).err();

            assert!(err.is_some(), "{url}");
        }
    }
}
