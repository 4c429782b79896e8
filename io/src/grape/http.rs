//! The HTTP API: hyper 1 frames requests and replies; the core decides everything else.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use grenache_core::api::{ApiError, CONTENT_TYPE_JSON, Grape, HttpBody, Reply};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Uri};

use super::driver::{Answered, Command};
use super::too_large::JsonTooLarge;
use super::{ApiContext, in_slot};
use crate::http_server::{self, Answer, Body, read_body};
use crate::runtime::Runtime;

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
    let io = JsonTooLarge::<R, _>::new(R::hyper_io(stream), head_too_large);
    http_server::serve::<R, _, _, _, _>(io, head_timeout, &ctx.stop, handle).await;
}

/// Reads the body (within the core's limit), then answers a hot lookup from the copy of the
/// cache, or queues the request for the driver and turns the core's reply into a response.
async fn handle_request<R: Runtime>(
    req: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<ApiContext>,
) -> Answer {
    let (parts, body) = req.into_parts();
    let body = read_body::<R>(body, ctx.max_payload, ctx.limits.body_read_timeout).await?;
    if let Some(cached) = cached_lookup::<R>(&ctx, peer, &parts, &body) {
        return Ok(cached);
    }
    let (reply_tx, reply_rx) = async_channel::bounded(1);
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
    // The driver keeps the deadline (one timer for all requests, not one each).
    match reply_rx.recv().await {
        Ok(Answered::Reply(reply)) => Ok(reply_response(reply)),
        Ok(Answered::TimedOut) => Ok(empty_response(StatusCode::GATEWAY_TIMEOUT)),
        // The driver refused the request (too many pending) or stopped.
        Err(_) => Ok(empty_response(StatusCode::SERVICE_UNAVAILABLE)),
    }
}

/// The request target as the core reads it: the query string too (`/watch` reads its
/// arguments there).
pub(super) fn target(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The response to a lookup the copy of the core's cache holds, as the core would answer it;
/// `None` for every other request, and for clients the per-client limits apply to (the
/// core counts their requests).
fn cached_lookup<R: Runtime>(
    ctx: &ApiContext,
    peer: SocketAddr,
    parts: &Parts,
    body: &Body,
) -> Option<Response<Full<Bytes>>> {
    if ctx.api_limits.apply_to(peer.ip()) {
        return None;
    }
    let Body::Complete(body) = body else {
        return None;
    };
    let body = HttpBody::Complete(body);
    let name = Grape::http_lookup_name(parts.method.as_str(), target(&parts.uri), body)?;
    let reply = ctx.hot.answer(R::now(), name.as_bytes())?;
    Some(response(StatusCode::OK, CONTENT_TYPE_JSON, reply))
}

/// The whole response to a request head longer than the API reads (or with more fields):
/// 431 with the API's JSON error, where hyper would send a bare 431.
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
    response(status, reply.content_type, Bytes::from(reply.body))
}

/// A response with `body` of `content_type`: one framing for the core's replies and the
/// cached ones.
fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
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
