//! The HTTP API: hyper 1 frames requests and replies; the core decides everything else.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use grenache_core::api::{ApiError, CONTENT_TYPE_JSON, MAX_WATCH_WAIT, Reply};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};

use super::driver::Command;
use super::{ApiContext, in_slot};
use crate::http_server::{self, Answer, read_body};
use crate::runtime::Runtime;
use crate::time::timeout;

/// Serves one HTTP/1.1 connection from `peer` until it ends or the server stops; closes it
/// unread when the client already holds its cap of connections.
pub(crate) async fn serve_connection<R: Runtime>(
    stream: R::TcpStream,
    peer: SocketAddr,
    ctx: Arc<ApiContext>,
) {
    in_slot(&ctx, peer, serve_http::<R>(stream, peer, &ctx)).await;
}

/// The connection once it holds a slot.
async fn serve_http<R: Runtime>(stream: R::TcpStream, peer: SocketAddr, ctx: &Arc<ApiContext>) {
    let handler_ctx = Arc::clone(ctx);
    let handle = move |req| handle_request::<R>(req, peer, Arc::clone(&handler_ctx));
    let head_timeout = ctx.limits.header_read_timeout;
    let io = R::hyper_io(stream);
    let io = http_server::first_head::<R, _>(io, head_timeout, head_too_large).await;
    if let Some(io) = io {
        http_server::serve::<R, _, _, _, _>(io, head_timeout, &ctx.stop, handle).await;
    }
}

/// Reads the body (within the core's limit), queues the request for the driver and turns the
/// core's reply into a response.
async fn handle_request<R: Runtime>(
    req: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<ApiContext>,
) -> Answer {
    let (parts, body) = req.into_parts();
    let body = read_body::<R>(body, ctx.max_payload, ctx.limits.body_read_timeout).await?;
    let (reply_tx, reply_rx) = async_channel::bounded(1);
    // A `/watch` waits for a change, up to its `wait`; the core answers it by then.
    let reply_timeout = if parts.uri.path() == "/watch" {
        ctx.limits.reply_timeout + MAX_WATCH_WAIT
    } else {
        ctx.limits.reply_timeout
    };
    let command = Command::Http {
        client: peer,
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

/// The whole response to a request head longer than the API reads: 431 with the API's
/// JSON error, where hyper would send a bare 431.
fn head_too_large() -> Vec<u8> {
    let err = ApiError::HeadTooLarge;
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    crate::head::response(
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        &[("content-type", CONTENT_TYPE_JSON)],
        &err.http_body(),
    )
}

/// Frames the core's reply as it is: status, content type, body.
fn reply_response(reply: Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(reply.content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        // A client over its rate has a token again within a second.
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
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
