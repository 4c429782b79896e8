//! Runs a Grenache Grape on [smol]: the DHT node from `grenache-core` on a UDP socket, the
//! Grape HTTP API and, optionally, the old WebSocket API.
//!
//! The crate holds no protocol logic. One driver task owns the core's
//! [`Grape`](grenache_core::api::Grape), the UDP socket and a queue of API requests. Its loop:
//!
//! 1. drain `poll_transmit` into `send_to` (a send error is logged and counted, never fatal);
//! 2. hand each `poll_reply` to the connection waiting on its `RequestId`;
//! 3. sleep until a datagram, the timer at `poll_timeout`, a request or the stop signal,
//!    whichever comes first, and pass it to the core with `now` from the runtime's clock.
//!
//! HTTP connections (hyper 1) and WebSocket connections (async-tungstenite) only frame bytes:
//! they read a body or message, queue it for the driver and write back what the core answers.
//! `grenache-tokio` is the same crate for tokio, file for file and function for function.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use grenache_smol::{GrapeServer, ServerConfig};
//! smol::block_on(async {
//!     let server = GrapeServer::start(ServerConfig::new([7; 32])).await?;
//!     println!("API on {}", server.local_api_addr());
//!     server.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod driver;
mod error;
mod http;
mod listen;
pub mod peer;
mod server;
mod state;
mod stop;
mod time;
mod udp;
mod ws;

pub use config::{Limits, ServerConfig};
pub use error::{Listener, StartError};
pub use peer::{PeerClient, PeerConfig, Publisher, RpcServer};
pub use server::{GrapeServer, IoStats};

#[cfg(test)]
mod tests;
