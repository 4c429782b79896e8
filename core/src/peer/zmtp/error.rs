//! Why a ZMTP connection failed or refused a call.

use std::time::Duration;

use crate::peer::zmtp::{CurveError, Mechanism, SocketType};

/// A ZMTP failure. From [`Connection::handle_input`](crate::peer::zmtp::Connection::handle_input)
/// every error is fatal; from `send`/`subscribe` only [`ZmtpError::Closed`] is (the others
/// refuse that one call and queue nothing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZmtpError {
    /// The peer's first bytes are not a ZMTP 3 signature (`FF ... 7F`): not ZeroMQ, or
    /// ZMTP 1.0.
    #[error("ZMTP: bad greeting signature")]
    BadGreeting,
    /// The peer speaks ZMTP 1.0 or 2.0 (libzmq before 4.0), which we do not downgrade to.
    #[error("ZMTP: unsupported protocol version {major}.x, need 3.0 or later")]
    UnsupportedVersion {
        /// The peer's major version.
        major: u8,
    },
    /// The peer wants a security mechanism we do not speak (PLAIN, GSSAPI, ...).
    #[error("ZMTP: unsupported security mechanism {0:?}, only NULL and CURVE")]
    UnsupportedMechanism(String),
    /// The peer uses the other mechanism we speak: a NULL client at a CURVE server, or a
    /// CURVE client at a NULL server. Configure both ends alike.
    #[error("ZMTP: security mismatch: we use {ours}, the peer uses {peer}")]
    MechanismMismatch {
        /// Ours.
        ours: Mechanism,
        /// The peer's.
        peer: Mechanism,
    },
    /// The peer closed the stream in the middle of its greeting, after a valid ZMTP
    /// signature: libzmq does this when our security mechanism is not its own (it closes
    /// before the part of its greeting that names its mechanism has left).
    #[error("ZMTP: the peer closed during the greeting (a security mechanism mismatch?)")]
    ClosedInGreeting,
    /// The CURVE handshake failed, or a MESSAGE did not open.
    #[error("ZMTP CURVE: {0}")]
    Curve(CurveError),
    /// Nothing came from the peer for this long, though we sent it PINGs: it is gone.
    #[error("ZMTP: peer silent for {0:?} (heartbeat timeout)")]
    HeartbeatTimeout(Duration),
    /// A frame header that breaks RFC 23 (reserved flag bits, a command with MORE, data
    /// before the handshake ended).
    #[error("ZMTP: bad frame: {0}")]
    BadFrame(&'static str),
    /// A command that is malformed or comes when it may not.
    #[error("ZMTP: bad command: {0}")]
    BadCommand(&'static str),
    /// The peer's `Socket-Type` may not talk to ours (say DEALER to PUB).
    #[error("ZMTP: a {ours} socket cannot talk to a {peer} socket")]
    IncompatibleSocket {
        /// Our socket type.
        ours: SocketType,
        /// What the peer announced.
        peer: SocketType,
    },
    /// The peer's `Socket-Type` is not one we know (STREAM, or a draft type like CLIENT).
    #[error("ZMTP: unknown peer socket type {0:?}")]
    UnknownSocketType(String),
    /// A message (the sum of its frame bodies) or a command is over the limit.
    #[error("ZMTP: message of {len} bytes is over the {max}-byte limit")]
    MessageTooLarge {
        /// Bytes announced so far (saturating).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message has more frames than the limit.
    #[error("ZMTP: message has more than {max} frames")]
    TooManyFrames {
        /// The limit.
        max: usize,
    },
    /// The peer sent an ERROR command with this reason and will close.
    #[error("ZMTP: peer error: {0}")]
    PeerError(String),
    /// `send` with no frames: ZMTP has no empty message (one empty frame is fine).
    #[error("ZMTP: a message needs at least one frame")]
    EmptyMessage,
    /// `subscribe`/`unsubscribe` on a socket that is not SUB or XSUB.
    #[error("ZMTP: a {0} socket has no subscriptions")]
    NotSubscriber(SocketType),
    /// Too many messages are waiting for the handshake; wait for `Ready`.
    #[error("ZMTP: send queue full before the handshake ended")]
    QueueFull,
    /// The connection already failed; drop it.
    #[error("ZMTP: connection closed after an error")]
    Closed,
}
