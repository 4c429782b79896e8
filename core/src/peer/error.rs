//! Errors of the peer state machines. Display strings are Node's where Node has one, so
//! logs and error replies read the same as grenache-nodejs-* ones.

use crate::peer::json::PayloadError;
use crate::peer::sniff::Protocol;
use crate::peer::types::TransportError;
use crate::peer::zmtp::ZmtpError;

/// Why a command was refused at once (no id was issued, no event will come).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Too many commands are waiting for their result; poll events, then try again.
    #[error("ERR_TOO_MANY_PENDING")]
    TooManyPending,
    /// The service or channel name is empty or longer than the DHT accepts (256 bytes).
    #[error("ERR_INVALID_NAME")]
    InvalidName,
    /// Port 0 cannot be announced (the Grape would announce its own DHT port instead).
    #[error("ERR_GRAPE_SERVICE_PORT")]
    InvalidPort,
    /// The announce schedule table is full; stop announcing something first.
    #[error("ERR_TOO_MANY_ANNOUNCES")]
    TooManyAnnounces,
    /// The request frame would be longer than the configured frame limit; send less.
    #[error("ERR_PAYLOAD_TOO_LARGE")]
    PayloadTooLarge,
    /// The subscription table is full; unsubscribe something first.
    #[error("ERR_TOO_MANY_SUBSCRIPTIONS")]
    TooManySubscriptions,
    /// The Link watches `max_watches` names already (or holds as many watches as it
    /// allows commands); end a watch first.
    #[error("ERR_TOO_MANY_WATCHES")]
    TooManyWatches,
}

/// Why a Grape command (lookup, announce, put, get) failed, after its retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The Grape did not answer within the request timeout; it may be down or overloaded.
    #[error("ERR_TIMEOUT")]
    Timeout,
    /// The lookup found no peer: nobody announces the name (or not for 120 s).
    #[error("ERR_GRAPE_LOOKUP_EMPTY")]
    LookupEmpty,
    /// The WebSocket to the Grape closed with the command in flight; it is reopened on
    /// the next command.
    #[error("ERR_TRANSPORT_CLOSE")]
    TransportClose,
    /// The Grape could not be reached (refused, reset, DNS); check its address.
    #[error("{0}")]
    Transport(TransportError),
    /// The Grape answered with a non-2xx status (500 `ERR_GRAPE_PAYLOAD_INVALID`,
    /// 413 `ERR_GRAPE_PAYLOAD_SIZE`); the message is its body, as Node reports it.
    #[error("{message}")]
    Http {
        /// The status code.
        status: u16,
        /// The body, decoded as a JSON string when it is one.
        message: String,
    },
    /// The Grape refused the command (`ERR_GRAPE_LOOKUP`, `ERR_GRAPE_SERVICE_PORT`,
    /// `All queries failed`, ...): fix the argument, retrying will not help.
    #[error("{0}")]
    Grape(String),
    /// The reply was not what the command expects (wrong type, wrong target, too long).
    #[error("ERR_GRAPE_REPLY_INVALID: {0}")]
    BadReply(&'static str),
}

impl LinkError {
    /// Whether another attempt could succeed (Node's `async.retry` retries every error;
    /// a refusal from the Grape itself will only repeat).
    pub(crate) fn is_retryable(&self) -> bool {
        !matches!(self, LinkError::LookupEmpty | LinkError::Grape(_))
    }
}

/// Why a peer request (or one branch of a map) failed, after its retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The lookup of the service failed; `ERR_GRAPE_LOOKUP_EMPTY` means nobody serves it.
    #[error(transparent)]
    Lookup(LinkError),
    /// No reply within the request timeout; the request may still have run on the peer.
    #[error("ERR_TIMEOUT")]
    Timeout,
    /// The WebSocket to the peer closed with the request queued or in flight; the next
    /// request opens a new connection.
    #[error("ERR_TRANSPORT_CLOSE")]
    TransportClose,
    /// HTTP failed below the RPC: connection error, or a non-2xx status (its body here).
    #[error("ERR_REQUEST_GENERIC: {0}")]
    Request(String),
    /// The handler on the peer replied with this error message.
    #[error("{0}")]
    Remote(String),
    /// The reply body was not JSON (or was empty); the peer is probably not a Grenache
    /// server of this transport.
    #[error("ERR_REPLY_EMPTY")]
    ReplyEmpty,
    /// The reply should have been gzip and was not.
    #[error("ERR_REPLY_ENCODING_COMPRESSION")]
    ReplyCompression,
    /// The reply was JSON but not `[rid, err, result]` for this request.
    #[error("ERR_REPLY_INVALID")]
    ReplyInvalid,
    /// The reply was longer than the frame limit.
    #[error("ERR_REPLY_TOO_LARGE")]
    ReplyTooLarge,
    /// The result is JSON Node accepts but we cannot hold without changing it (a lone
    /// surrogate, ...; docs/protocol.md §8).
    #[error("{0}")]
    ReplyPayload(PayloadError),
    /// The ZeroMQ server answered none of our PINGs for this long: it is gone (or cut
    /// off), and the request may or may not have run. The connection is closed; the next
    /// request opens a new one.
    #[error("ERR_HEARTBEAT_TIMEOUT: server silent for {0:?}")]
    HeartbeatTimeout(std::time::Duration),
    /// The WebSocket connection table is full; wait for idle connections to close.
    #[error("ERR_TOO_MANY_CONNECTIONS")]
    TooManyConnections,
    /// The ZeroMQ security handshake failed: NULL against CURVE, a server that refused
    /// our CURVE key or HELLO, a WELCOME or READY that does not open. No handler ran;
    /// configure both ends alike (docs/security.md).
    #[error("ERR_ZMQ_SECURITY: {0}")]
    Security(ZmtpError),
    /// The peer speaks another transport (named here): no handler ran. The client is
    /// configured for the wrong transport, or the Grape lists a port now used by
    /// something else.
    #[error("ERR_WRONG_TRANSPORT: {0}")]
    WrongTransport(Protocol),
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The Grape URL must start with `http://`, `https://`, `ws://` or `wss://`.
    #[error("grape URL must be http(s):// or ws(s)://, got {0:?}")]
    GrapeUrl(String),
}
