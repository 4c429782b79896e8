//! The Grape API (docs/protocol.md §3), as sans-IO protocol logic.
//!
//! Adapters only move bytes: they hand each HTTP request ([`Grape::handle_http`]) or
//! WebSocket text message ([`Grape::handle_ws`]) to the [`Grape`] with a [`RequestId`] of
//! their choosing, and send back every [`Reply`] that [`Grape::poll_reply`] yields.
//! Everything else (parsing, validation, error strings and statuses, how commands map onto
//! the DHT, lookup caching and coalescing, `/health`, `/metrics`, the dashboard and its `/status`,
//! per-client limits) lives here, once, so
//! both runtimes answer exactly as the Node.js Grape 1.0 does.

mod cache;
mod clients;
mod dashboard;
mod error;
mod grape;
mod metrics;
mod recent;
mod reply;
mod request;
mod status;
mod watch;
mod ws;

pub use cache::LookupMirror;
pub use clients::{
    ApiConnection, ApiLimits, DEFAULT_CONNECTIONS_PER_CLIENT, DEFAULT_REQUESTS_PER_SECOND,
};
pub use dashboard::{CONTENT_TYPE_HTML, MAX_GET_TARGET};
pub use error::ApiError;
pub use grape::{Grape, GrapeConfig};
pub use reply::{CONTENT_TYPE_JSON, CONTENT_TYPE_METRICS, CONTENT_TYPE_TEXT};
pub use request::{
    Command, CommandKind, MutablePut, PutRequest, data_of, parse_body, parse_command,
};
pub use status::{Listeners, MAX_NODES_SHOWN, MAX_PEERS_SHOWN, MAX_ROWS_SHOWN};
pub use watch::{DEFAULT_WAIT, MAX_WATCH_WAIT, RENEW};

/// Names one API request until its last [`Reply`]; chosen by the adapter, unique among the
/// requests still waiting for a reply (a counter is enough).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Names one WebSocket connection, chosen by the adapter: the watches made on it end
/// with it ([`Grape::ws_closed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WsConn(pub u64);

/// The body of an HTTP request, as far as the adapter read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpBody<'a> {
    /// The whole body, at most [`Grape::max_payload`] bytes.
    Complete(&'a [u8]),
    /// The body is longer than [`Grape::max_payload`]: the adapter stopped reading at
    /// `max_payload + 1` bytes (or saw a larger `Content-Length`).
    TooLarge,
}

/// One answer for the adapter to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request this answers.
    pub req: RequestId,
    /// HTTP status (200 for WebSocket replies, whose errors travel inside the body).
    pub status: u16,
    /// HTTP `Content-Type`.
    pub content_type: &'static str,
    /// HTTP body, or the text of the WebSocket message to send back.
    pub body: Vec<u8>,
    /// More replies to this request will follow (a WebSocket watch): keep it routed until
    /// [`Grape::poll_ended`] names it.
    pub more: bool,
}
