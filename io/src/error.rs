//! Why a server could not start.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// The socket a [`StartError`] is about, so a caller can name the setting to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listener {
    /// The DHT's UDP socket ([`ServerConfig::dht_port`](crate::ServerConfig::dht_port)).
    Dht,
    /// The HTTP API's TCP listener ([`ServerConfig::api_port`](crate::ServerConfig::api_port)).
    Api,
    /// The WebSocket API's TCP listener ([`ServerConfig::ws_port`](crate::ServerConfig::ws_port)).
    Ws,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dht => "DHT UDP socket",
            Self::Api => "HTTP API listener",
            Self::Ws => "WebSocket API listener",
        })
    }
}

/// Why [`GrapeServer::start`](crate::GrapeServer::start) failed; nothing is left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A socket could not be bound: the port is taken (`io::ErrorKind::AddrInUse`), the
    /// address is not local, or the process lacks the right. Pick another port or address.
    #[error("cannot bind the {listener} to {addr}: {source}")]
    Bind {
        /// Which socket failed.
        listener: Listener,
        /// The address it tried.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A socket was bound but its local address could not be read back: an OS failure.
    #[error("cannot read the local address of the {listener}: {source}")]
    LocalAddr {
        /// Which socket failed.
        listener: Listener,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl From<StartError> for io::Error {
    fn from(err: StartError) -> Self {
        let kind = match &err {
            StartError::Bind { source, .. } | StartError::LocalAddr { source, .. } => source.kind(),
        };
        io::Error::new(kind, err)
    }
}
