//! The HTTP API: hyper 1 frames requests and replies; the core decides everything else.
//!
//! hyper rather than async-h1: async-h1 is unmaintained, and it closes the connection with no
//! reply at all when a handler fails. One HTTP stack (hyper) serves both runtime adapters.

use std::sync::Arc;

use bytes::Bytes;
use futures_lite::FutureExt as _;
use grenache_core::api::{MAX_WATCH_WAIT, Reply};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

use super::ApiContext;
use super::driver::{Command, RequestBody};
use crate::runtime::Runtime;
use crate::time::timeout;

/// Cap on hyper's per-connection read buffer (its default is about 400 KiB): headers must fit
/// in it, bodies stream through it. hyper refuses less than 8 KiB.
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Why a connection is closed without a reply.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    /// The client sent its body too slowly.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The body could not be read (the client went away or broke the framing).
    #[error("reading the request body: {0}")]
    Body(#[from] hyper::Error),
}

/// Serves one HTTP/1.1 connection (keep-alive on) until it ends or the server stops; on stop,
/// the request in progress is finished first.
pub(crate) async fn serve_connection<R: Runtime>(stream: R::TcpStream, ctx: Arc<ApiContext>) {
    let service_ctx = Arc::clone(&ctx);
    let service = service_fn(move |req| handle_request::<R>(req, Arc::clone(&service_ctx)));
    let mut builder = http1::Builder::new();
    builder
        .timer(R::hyper_timer())
        .header_read_timeout(ctx.limits.header_read_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    let connection = builder.serve_connection(R::hyper_io(stream), service);
    let mut connection = std::pin::pin!(connection);
    let finished = async { Some(connection.as_mut().await) }
        .or(async {
            ctx.stop.wait().await;
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

/// Reads the body (within the core's limit), queues the request for the driver and turns the
/// core's reply into a response.
async fn handle_request<R: Runtime>(
    req: Request<Incoming>,
    ctx: Arc<ApiContext>,
) -> Result<Response<Full<Bytes>>, ConnectionError> {
    let (parts, body) = req.into_parts();
    let body = timeout::<R, _>(
        ctx.limits.body_read_timeout,
        read_body(body, ctx.max_payload),
    )
    .await
    .ok_or(ConnectionError::BodyTimeout)??;
    let (reply_tx, reply_rx) = async_channel::bounded(1);
    // A `/watch` waits for a change, up to its `wait`; the core answers it by then.
    let reply_timeout = if parts.uri.path() == "/watch" {
        ctx.limits.reply_timeout + MAX_WATCH_WAIT
    } else {
        ctx.limits.reply_timeout
    };
    let command = Command::Http {
        method: parts.method,
        uri: parts.uri,
        body,
        reply: reply_tx,
    };
    if ctx.commands.send(command).await.is_err() {
        return Ok(empty_response(StatusCode::SERVICE_UNAVAILABLE));
    }
    match timeout::<R, _>(reply_timeout, reply_rx.recv()).await {
        Some(Ok(reply)) => Ok(reply_response(reply)),
        // The driver refused the request (too many pending) or stopped.
        Some(Err(_)) => Ok(empty_response(StatusCode::SERVICE_UNAVAILABLE)),
        None => {
            tracing::warn!("no reply from the core in time");
            Ok(empty_response(StatusCode::GATEWAY_TIMEOUT))
        }
    }
}

/// Reads at most `max + 1` bytes of body: past `max` it stops and reports
/// [`RequestBody::TooLarge`], so a huge body is never read whole.
async fn read_body(mut body: Incoming, max: usize) -> Result<RequestBody, hyper::Error> {
    let declared = body.size_hint().lower();
    if usize::try_from(declared).map_or(true, |len| len > max) {
        return Ok(RequestBody::TooLarge);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        if bytes.len().saturating_add(data.len()) > max {
            return Ok(RequestBody::TooLarge);
        }
        bytes.extend_from_slice(&data);
    }
    Ok(RequestBody::Complete(bytes))
}

/// Frames the core's reply as it is: status, content type, body.
fn reply_response(reply: Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(reply.content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// A bodiless response for when the core could not be asked or did not answer.
fn empty_response(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
