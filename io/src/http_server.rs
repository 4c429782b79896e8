//! What both HTTP servers here (the Grape API and the RPC server) do the same way: serve
//! one HTTP/1.1 connection with hyper, and read a request body within a limit and a time.
//!
//! hyper rather than async-h1: async-h1 is unmaintained, and it closes the connection with
//! no reply at all when a handler fails.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

use crate::runtime::Runtime;
use crate::stop::Stop;
use crate::time::timeout;

/// Cap on hyper's per-connection read buffer (its default is about 400 KiB): headers must fit
/// in it, bodies stream through it. hyper refuses less than 8 KiB.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Why a connection is closed without a reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// The client sent its body too slowly.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The body could not be read (the client went away or broke the framing).
    #[error("reading the request body: {0}")]
    Body(#[from] hyper::Error),
}

/// What a request handler answers: a response, or a reason to drop the connection.
pub(crate) type Answer = Result<Response<Full<Bytes>>, ConnectionError>;

/// Serves one HTTP/1.1 connection (keep-alive on) until it ends or `stop` fires; on stop,
/// the request in progress is answered first. A client silent for `header_timeout` before
/// its request head is hung up on. `io` is the runtime's TCP glue, or TLS over it.
pub(crate) async fn serve<R, I, H, F, B>(io: I, header_timeout: Duration, stop: &Stop, handle: H)
where
    R: Runtime,
    I: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<B>, ConnectionError>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(R::hyper_timer())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service_fn(handle));
    let mut connection = std::pin::pin!(connection);
    let finished = async { Some(connection.as_mut().await) }
        .or(async {
            stop.wait().await;
            None
        })
        .await;
    let result = match finished {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "HTTP connection ended");
    }
}

/// A request body as far as it was read.
#[derive(Debug)]
pub enum Body {
    /// The whole body, within the limit.
    Complete(Vec<u8>),
    /// Longer than the limit (at least this long); reading stopped there.
    TooLarge(usize),
}

/// Reads at most `max + 1` bytes of body within `limit`, so a huge or slow body is never
/// read whole.
///
/// # Errors
/// [`ConnectionError`]: the body came too slowly or broke off.
pub(crate) async fn read_body<R: Runtime>(
    body: Incoming,
    max: usize,
    limit: Duration,
) -> Result<Body, ConnectionError> {
    let mut read = std::pin::pin!(read_within(body, max));
    // A small body usually came in with its head: then no timer is set for it.
    if let Some(done) = futures_lite::future::poll_once(read.as_mut()).await {
        return Ok(done?);
    }
    Ok(timeout::<R, _>(limit, read)
        .await
        .ok_or(ConnectionError::BodyTimeout)??)
}

async fn read_within(mut body: Incoming, max: usize) -> Result<Body, hyper::Error> {
    let declared = body.size_hint().lower();
    if usize::try_from(declared).map_or(true, |len| len > max) {
        return Ok(Body::TooLarge(
            usize::try_from(declared).unwrap_or(usize::MAX),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        let len = bytes.len().saturating_add(data.len());
        if len > max {
            return Ok(Body::TooLarge(len));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Body::Complete(bytes))
}
