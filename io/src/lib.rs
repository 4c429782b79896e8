//! The runtime adapter of Grenache, written once: everything between the sans-IO core
//! (`grenache-core`) and the sockets, generic over a small [`Runtime`] trait.
//!
//! - [`GrapeServer`]: a Grape. One driver task owns the core's
//!   [`Grape`](grenache_core::api::Grape), the DHT's UDP socket and a queue of API requests.
//!   Its loop: drain `poll_transmit` onto the socket, in batches where the OS allows (a
//!   send error is logged and counted, never fatal); hand each `poll_reply` to the connection waiting on its `RequestId`;
//!   sleep until a datagram, the timer at `poll_timeout`, a request or the stop signal,
//!   whichever comes first, and pass it to the core with `now` from the runtime's clock.
//!   HTTP connections (hyper 1) and WebSocket connections (async-tungstenite) only frame
//!   bytes: they read a body or message, queue it for the driver and write back what the
//!   core answers.
//! - [`peer`]: Grenache peers (a client, an RPC server, a publisher), driven the same way
//!   around the core's [`Client`](grenache_core::peer::Client).
//!
//! Nobody uses this crate directly: `grenache-smol` and `grenache-tokio` implement
//! [`Runtime`] in a few hundred lines each and export these types under their runtime's
//! name, so a program written against one runs on the other by changing the crate name.
//! The crate holds no protocol logic: what to send, when to retry and what a reply means
//! are the core's.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod busy_poll;
mod config;
mod error;
mod grape;
mod head;
mod http_server;
mod listen;
mod net;
pub mod peer;
mod read_burst;
mod runtime;
mod runtime_kind;
mod state;
mod stop;
mod task;
mod time;
mod tls;
mod udp;
mod web_server;
mod writes_through;
mod ws_batch;
mod ws_server;

#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;

pub use config::{Limits, ServerConfig};
pub use error::{Listener, StartError};
pub use grape::server::{GrapeServer, IoStats};
pub use http_server::Body;
pub use runtime::{Interest, Runtime, SockRef};
pub use runtime_kind::RuntimeKind;
pub use stop::Signalled;
pub use web_server::{CorsOrigin, WebBody, WebReply, WebRequest, WebServer, WebServerConfig};

/// Logs to stderr (colours on a terminal), filtered by RUST_LOG (default `info`): the
/// one setup of every binary, so their logs read alike.
#[cfg(feature = "log-init")]
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
