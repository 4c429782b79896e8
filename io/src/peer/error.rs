//! Why a peer command or a server failed.

use std::io;
use std::net::SocketAddr;

use grenache_core::peer::{CommandError, LinkError, RpcError};

/// Why a [`PeerClient`](super::PeerClient) command gave no result.
///
/// The `Display` text is Node's error message where Node has one (`ERR_TIMEOUT`,
/// `ERR_GRAPE_LOOKUP_EMPTY`, ...), so logs read like grenache-nodejs ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Refused before anything was sent (bad name or port, payload over the frame limit,
    /// too many commands pending); the inner error says what to change.
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The Grape could not answer (lookup, announce, put, get); the inner error says
    /// whether a retry can help.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A request or map failed: lookup, timeout, transport, the peer's own error, or a
    /// reply that could not be read.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The announce schedule was stopped before its first round ended.
    #[error("ERR_ANNOUNCE_STOPPED")]
    Cancelled,
    /// The client's driver task has stopped (its runtime is shutting down); build a new
    /// client.
    #[error("ERR_CLIENT_CLOSED")]
    Closed,
}

impl PeerError {
    /// Whether this is a request timeout (`ERR_TIMEOUT`), from the Grape or from a peer.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            PeerError::Link(LinkError::Timeout)
                | PeerError::Rpc(RpcError::Timeout | RpcError::Lookup(LinkError::Timeout))
        )
    }
}

/// Why an [`RpcServer`](super::RpcServer) or [`Publisher`](super::Publisher) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be bound: the port is taken or the address is not
    /// local. Pick another port (0 lets the OS choose).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The socket was bound but its address could not be read back: an OS failure.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] io::Error),
    /// The first announce failed, so nobody could find the server; it was stopped. Check
    /// that the Grape is running at the client's URL.
    #[error("announcing failed: {0}")]
    Announce(#[source] PeerError),
    /// TLS was configured for ZeroMQ, which has no TLS (its security is CURVE).
    #[error("TLS is for HTTP and WebSocket servers; ZeroMQ does not carry it")]
    TlsUnsupported,
    /// A streaming handler was given to a WebSocket or ZeroMQ server: request streams are
    /// an HTTP feature (a chunked body).
    #[error("request streams need an HTTP server")]
    StreamsNeedHttp,
}
