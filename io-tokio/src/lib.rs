//! Runs Grenache on [tokio]: a Grape (the DHT node from `grenache-core` on a UDP socket,
//! the Grape HTTP API and, optionally, the old WebSocket API) and Grenache peers.
//!
//! The adapter itself is `grenache-io`, written once over its `Runtime` trait; this crate is
//! tokio's [`Runtime`](grenache_io::Runtime) ([`Tokio`]) and the adapter's types named for it. `grenache-smol` is
//! the same for smol: a program written against one runs on the other by changing the
//! crate name.
//!
//! A Grape:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use grenache_tokio::{GrapeServer, ServerConfig};
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
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
//! use grenache_tokio::peer::{PeerClient, PeerConfig, RequestOptions, RpcServer, RpcServerConfig};
//! use serde_json::{Value, json};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
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
pub use process::{run_on_one_thread_until_signal, run_until_signal};
pub use runtime::{Tokio, WsIo};

/// A running Grape on tokio; see [`grenache_io::GrapeServer`].
pub type GrapeServer = grenache_io::GrapeServer<Tokio>;

pub use peer::{PeerClient, PeerConfig, Publisher, RpcServer};

/// Grenache peers on tokio: a client, an RPC server and a publisher; see
/// [`grenache_io::peer`].
pub mod peer {
    pub use grenache_io::peer::*;

    use super::Tokio;

    /// A Grenache client on tokio; see [`grenache_io::peer::PeerClient`].
    pub type PeerClient = grenache_io::peer::PeerClient<Tokio>;
    /// An RPC server on tokio; see [`grenache_io::peer::RpcServer`].
    pub type RpcServer = grenache_io::peer::RpcServer<Tokio>;
    /// A publisher on tokio; see [`grenache_io::peer::Publisher`].
    pub type Publisher = grenache_io::peer::Publisher<Tokio>;
}

#[cfg(test)]
mod tests {
    grenache_io::adapter_tests!(crate::Tokio, block_on);

    /// Runs `fut` on a current-thread runtime of its own.
    pub(crate) fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for a test")
            .block_on(fut)
    }
}
