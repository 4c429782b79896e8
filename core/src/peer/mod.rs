//! Grenache peers, sans-IO: the Link to a Grape, peer RPC over HTTP, WebSocket and
//! ZeroMQ, and PUB/SUB over WebSocket and ZeroMQ (docs/protocol.md §5–§9,
//! docs/zeromq-wire.md).
//!
//! * [`Client`] is what an adapter drives: [`Link`] (lookup with a cache, announce and
//!   announce schedules, put, get, watch), RPC `request`/`map` with retries, timeouts and peer
//!   choice, and subscriptions that reconnect. [`Link`] also runs alone.
//! * An RPC server needs no state: [`decode_request`] / [`decode_http_request`] read a
//!   request, [`encode_reply`] / [`encode_http_reply`] write the answer, and
//!   [`http_error_reply`] / [`ws_error_reply`] answer what could not be read. Announce
//!   the service with [`Client::start_announcing`].
//! * A publisher is a [`Publisher`] plus `start_announcing(channel, port)`.
//! * HTTP request streams (grenache-nodejs-http's `_gr` headers and a chunked body):
//!   [`StreamHead`] reads and writes the headers, [`StreamBudget`] bounds a body, and
//!   [`Client::plan_stream`] picks a client's peer and rid.
//!
//! Nothing here reads a clock, opens a socket or draws from a global RNG: `now` comes
//! from the caller, and randomness (request ids are uuid v4; peer choice; jitter) from a
//! ChaCha8 RNG that the [`Client`] (or a lone [`Link`]) owns, seeded by whoever builds
//! it, as a DHT [`Node`](crate::dht::Node) is.
//!
//! # Driving a [`Client`]
//! One task owns the `Client`, an HTTP client, the WebSocket connections (a map from
//! [`ConnId`] to socket) and a timer. Time must not go backwards.
//!
//! 1. After building it, after every command (`request`, `lookup`, `subscribe`, ...) and
//!    after every `handle_*`, drain `poll_transmit` and then `poll_event`:
//!    * [`Io::Http`]: send `body` to `url` with `method` (POST, or GET for a
//!      Grape watch) and `headers`; when it ends call
//!      [`Client::handle_http_reply`] with the same id and `Ok(HttpResponse { status,
//!      body })` for any status, or `Err(TransportError)` when there is no response:
//!      [`TransportError::unsent`] only when no byte of the request was written (the
//!      request then goes to another peer), [`TransportError::new`] otherwise.
//!      Nothing needs to be reported after `deadline`; a late report is ignored.
//!      Cap the body you read (the frame limit plus a little) and report a bigger one
//!      as a `TransportError`.
//!    * [`Io::WsConnect`]: open `url`, remember `conn`; report
//!      [`Client::handle_ws_open`], each message with [`Client::handle_ws_message`]
//!      (text and binary alike), and [`Client::handle_ws_closed`] once, when it closes
//!      or fails to open (a close before the open tells the core nothing was sent).
//!    * [`Io::WsSend`]: send the message on `conn` (it is open).
//!    * [`Io::WsClose`]: close `conn`; no report is needed any more.
//!    * [`Io::TcpConnect`], [`Io::TcpSend`], [`Io::TcpClose`]: the same
//!      for a plain TCP stream (ZeroMQ): report [`Client::handle_tcp_open`], every read
//!      with [`Client::handle_tcp_data`], and [`Client::handle_tcp_closed`] once. The
//!      core speaks ZMTP itself, so these are bytes in, bytes out.
//!    * Hand each [`ClientEvent`] to whoever waits for its [`CommandId`] or [`SubscriptionId`],
//!      and drain [`Client::poll_watch`] too: each [`WatchEvent`] to its [`WatchId`]'s
//!      owner (only the latest set of a watch waits there).
//! 2. Sleep until [`Client::poll_timeout`] (or forever if `None`), a network report, or
//!    a new command; at the timer call [`Client::handle_timeout`]; go to 1.
//!
//! Per transport, the adapter does no more than that: HTTP is one request per
//! [`HttpId`], the Grape's WebSocket API and the peers' WebSockets are all just
//! connections named by [`ConnId`]; which is which is the Client's business.
//!
//! # Serving RPC
//! HTTP: for each `POST`, read the body (bounded), call [`decode_http_request`] with the
//! `grc-compress` header; on error send [`http_error_reply`]; otherwise hand
//! `(rid, key, payload)` to the handler and answer status 200 with
//! [`encode_http_reply`] (gzip when the request was). WebSocket (`/ws`): for each text
//! message call [`decode_request`]; on error send [`ws_error_reply`] if it gives a frame;
//! otherwise answer on the same socket with [`encode_reply`], in any order. ZeroMQ: one
//! [`ZmqServerConn`] per accepted TCP connection; feed it the bytes read, take requests
//! from it, answer through it, and write its output. A ZeroMQ publisher keeps one
//! [`ZmqPubConn`] per subscriber the same way.

mod balance;
mod cache;
mod client;
mod error;
mod framing;
mod json;
mod link;
mod pubsub;
mod rpc;
mod serve;
mod sniff;
mod stream;
mod types;
mod watch;
mod zmq;
pub mod zmtp;

pub use balance::PeerChoice;
pub use client::{Client, ClientConfig, ClientEvent, ClientStats};
pub use error::{CommandError, ConfigError, LinkError, RpcError};
pub use framing::{
    COMPRESS_HEADER, Compression, DEFAULT_MAX_FRAME_LEN, FrameError, ReplyFrame, RequestFrame,
    decode_http_request, decode_reply, decode_request, encode_http_reply, encode_reply,
    encode_request, gunzip, gzip, http_error_reply, ws_error_reply,
};
pub use json::{PayloadError, payload_text};
pub use link::{GetItem, Link, LinkConfig, LinkEvent, LinkStats, MAX_LOOKUP_PEERS, Put};
pub use pubsub::{PubSubTransport, PublishError, Publisher, SubConfig, SubStats};
pub use rpc::{RequestOptions, RpcConfig, RpcStats, RpcTransport};
pub use serve::{
    ERR_HANDLER_PANIC, ERR_HANDLER_TIMEOUT, ERR_REPLY_TOO_LARGE, HandlerFailure,
    reply_content_type, reply_frame,
};
pub use sniff::{Protocol, UnknownProtocol};
pub use stream::{
    ACTION_HEADER, ARGS_HEADER, DEFAULT_MAX_STREAM_LEN, ERR_HEADER_PARSE_GR, GR_HEADER,
    StreamBudget, StreamHead, StreamHeadError, StreamOptions, StreamPlan, StreamTooLarge,
    header_error_reply,
};
pub use types::{
    CommandId, ConnId, Delivery, HttpId, HttpMethod, HttpRequest, HttpResponse, Io, MAX_ADDR_LEN,
    PeerAddr, SubscriptionId, TransportError, WatchId, WsMessage,
};
pub use watch::WatchEvent;
pub use zmq::{ZmqPubConn, ZmqServerConn};
