//! Runs Grenache on [smol]: a Grape (the DHT node from `grenache-core` on a UDP socket,
//! the Grape HTTP API and, optionally, the old WebSocket API) and Grenache peers.
//!
//! The adapter itself is `grenache-io`, written once over its `Runtime` trait; this crate is
//! smol's [`Runtime`](grenache_io::Runtime) ([`Smol`]) and the adapter's types named for it. `grenache-tokio` is
//! the same for tokio: a program written against one runs on the other by changing the
//! crate name.
//!
//! A Grape:
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
//!
//! A client and an RPC server:
//!
//! ```no_run
//! use grenache_smol::peer::{PeerClient, PeerConfig, RequestOptions, RpcServer, RpcServerConfig};
//! use serde_json::{Value, json};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let client = PeerClient::new(PeerConfig::new("http://127.0.0.1:30001"))?;
//!     let server = RpcServer::start(&client, "rpc_test", RpcServerConfig::default(),
//!         |_key: String, payload: Value| async move { Ok(json!({ "echo": payload })) },
//!     ).await?;
//!     let reply = client.request("rpc_test", json!("hello"), RequestOptions::default()).await?;
//!     assert_eq!(reply, json!({ "echo": "hello" }));
//!     server.stop().await;
//!     Ok(())
//! })
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod process;
mod runtime;

pub use grenache_io::{IoStats, Limits, Listener, ServerConfig, StartError};
pub use process::run_until_signal;
pub use runtime::Smol;

/// A running Grape on smol; see [`grenache_io::GrapeServer`].
pub type GrapeServer = grenache_io::GrapeServer<Smol>;

pub use peer::{PeerClient, PeerConfig, Publisher, RpcServer};

/// Grenache peers on smol: a client, an RPC server and a publisher; see
/// [`grenache_io::peer`].
pub mod peer {
    pub use grenache_io::peer::*;

    use super::Smol;

    /// A Grenache client on smol; see [`grenache_io::peer::PeerClient`].
    pub type PeerClient = grenache_io::peer::PeerClient<Smol>;
    /// An RPC server on smol; see [`grenache_io::peer::RpcServer`].
    pub type RpcServer = grenache_io::peer::RpcServer<Smol>;
    /// A publisher on smol; see [`grenache_io::peer::Publisher`].
    pub type Publisher = grenache_io::peer::Publisher<Smol>;
}

#[cfg(test)]
mod tests {
    grenache_io::adapter_tests!(crate::Smol, smol::block_on);
}
