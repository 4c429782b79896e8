//! HTTP/1.1 exchanges for the core's [`Io::Http`](grenache_core::peer::Io):
//! hyper's client over the runtime's TCP (or TLS over it, for `https://` URLs), with a
//! keep-alive pool bounded per peer. Request streams ([`send_stream`]) go the same way
//! on a connection of their own, as Node's `requestStream` sends `connection: close`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grenache_core::peer::{
    Delivery, HttpMethod, HttpRequest, HttpResponse, Protocol, TransportError,
};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, TRANSFER_ENCODING};
use hyper::{Request, Uri};

use super::first_bytes::{FirstBytes, Recording};
use crate::net::connect;
use crate::runtime::Runtime;
use crate::task::Limiter;
use crate::time::timeout;
use crate::tls::{FuturesIo, TlsClient, TlsFailure};

type Sender = SendRequest<Full<Bytes>>;

/// A request stream's body: the caller's chunks, pulled only as the socket takes them.
pub(crate) type ChunkedBody = UnsyncBoxBody<Bytes, Infallible>;

/// Keep-alive connections by peer (`scheme://host:port`).
#[derive(Debug)]
pub(crate) struct HttpPool {
    peers: Mutex<BTreeMap<String, Slot>>,
    max_per_peer: usize,
    max_peers: usize,
    idle_timeout: Duration,
    /// For `https://` URLs; without it they are refused.
    tls: Option<Arc<TlsClient>>,
}

/// One peer's connections: a limiter on those in use, and the idle ones.
#[derive(Debug)]
struct Slot {
    in_use: Limiter,
    idle: Vec<(Sender, Instant)>,
}

impl HttpPool {
    pub(crate) fn new(max_per_peer: usize, max_peers: usize, idle_timeout: Duration) -> Self {
        HttpPool {
            peers: Mutex::new(BTreeMap::new()),
            max_per_peer: max_per_peer.max(1),
            max_peers: max_peers.max(1),
            idle_timeout,
            tls: None,
        }
    }

    /// The same pool, able to dial `https://` URLs.
    pub(crate) fn with_tls(mut self, tls: Option<Arc<TlsClient>>) -> Self {
        self.tls = tls;
        self
    }

    /// The limiter of `peer`'s connections, making room for a new peer by forgetting
    /// unused ones (their idle connections close).
    fn limiter(&self, peer: &str) -> Limiter {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if !peers.contains_key(peer) && peers.len() >= self.max_peers {
            peers.retain(|_, slot| !slot.in_use.is_unused());
        }
        peers
            .entry(peer.to_owned())
            .or_insert_with(|| Slot {
                in_use: Limiter::new(self.max_per_peer),
                idle: Vec::new(),
            })
            .in_use
            .clone()
    }

    /// The most recently used idle connection to `peer` that is still open and fresh.
    fn take_idle(&self, peer: &str, now: Instant) -> Option<Sender> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = peers.get_mut(peer)?;
        while let Some((sender, since)) = slot.idle.pop() {
            if !sender.is_closed() && now.saturating_duration_since(since) < self.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps a connection whose exchange ended cleanly for the next request to `peer`.
    fn put_idle(&self, peer: &str, sender: Sender, now: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = peers.get_mut(peer) else {
            return;
        };
        let idle_timeout = self.idle_timeout;
        slot.idle.retain(|(s, since)| {
            !s.is_closed() && now.saturating_duration_since(*since) < idle_timeout
        });
        if slot.idle.len() < self.max_per_peer {
            slot.idle.push((sender, now));
        }
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
struct Target {
    host: String,
    port: u16,
    /// Whether it is an `https://` URL.
    secure: bool,
    /// `host:port`, the `Host` header.
    authority: String,
    /// `scheme://host:port`, the pool key: a TLS connection is not a plain one.
    key: String,
    path: String,
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
        Ok(Target {
            secure,
            key: format!("{scheme}://{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority: format!("{host}:{port}"),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

async fn attempt<R: Runtime>(
    pool: &HttpPool,
    request: HttpRequest,
    max_body: usize,
) -> Result<HttpResponse, TransportError> {
    let target = Target::parse(&request.url)?;
    let body = Bytes::from(request.body);
    let limiter = pool.limiter(&target.key);
    let _permit = limiter.acquire().await;
    if let Some(sender) = pool.take_idle(&target.key, R::now()) {
        match send(
            sender,
            &target,
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
                    pool.put_idle(&target.key, sender, R::now());
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
    // state would make every exchange's future, moved into a task per request, many KB.
    let (sender, first) = Box::pin(open::<R, _>(&target, pool.tls.as_ref())).await?;
    let sent = send(
        sender,
        &target,
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
        pool.put_idle(&target.key, sender, R::now());
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
        None => handshake::<R, _, B>(target, R::hyper_io(stream), None).await,
        Some(tls) => {
            let stream = tls
                .connect::<R>(&target.host, stream)
                .await
                .map_err(|failure| TransportError::unsent(format!("{failure}: {}", target.key)))?;
            handshake::<R, _, B>(target, FuturesIo::<R>::new(stream), Some(Arc::clone(tls))).await
        }
    }
}

/// hyper's client handshake on an open stream, recording its first bytes; its connection
/// half runs in the background.
async fn handshake<R, I, B>(
    target: &Target,
    io: I,
    tls: Option<Arc<TlsClient>>,
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
    R::spawn_detached(async move {
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
        HttpMethod::Post => Request::post(target.path.as_str()),
        HttpMethod::Get => Request::get(target.path.as_str()),
    };
    let mut builder = builder.header(HOST, target.authority.as_str());
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
    let (sender, first) = open::<R, ChunkedBody>(&target, tls).await?;
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
    let mut builder = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
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
    fn other_schemes_and_garbage_are_transport_errors() {
        for url in ["ftp://h:1/", "ws://h:1/ws", "not a url", "http:///"] {
            let err = Target::parse(url).err();

            assert!(err.is_some(), "{url}");
        }
    }
}
