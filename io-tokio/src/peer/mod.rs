//! Grenache peers on this runtime: a client ([`PeerClient`]: lookup, announce, put, get,
//! watch, peer RPC and subscriptions), an RPC server ([`RpcServer`]) and a publisher
//! ([`Publisher`]), wire-compatible with grenache-nodejs-link, -http and -ws.
//!
//! Like the Grape adapter, this holds no protocol logic: the core's
//! [`Client`](grenache_core::peer::Client) decides what to send, when to retry and what a
//! reply means; one driver task owns it and does the I/O it asks for (hyper HTTP/1.1 with
//! a keep-alive pool, WebSocket connections by id, a timer). The servers read and write
//! frames with the core's framing functions. Only `rt.rs` (spawning, sockets, timers,
//! the hyper and WebSocket glue) is tokio's own: every other module is compiled from
//! grenache-smol's source (`#[path]` below), so the two runtimes cannot drift apart, and
//! a program written against one runs on the other by changing the crate name.
//!
//! ```no_run
//! use grenache_tokio::peer::{PeerClient, PeerConfig, RequestOptions, RpcServer, RpcServerConfig};
//! use serde_json::{Value, json};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
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
//!
//! Every queue and table is bounded (see [`PeerConfig`], [`RpcServerConfig`],
//! [`PublisherConfig`]); every failure reaches the caller as a typed error
//! ([`PeerError`], [`ServerError`]), never as a hang: each request has a deadline, and
//! the core answers it when the peer does not.

#[path = "../../../io-smol/src/peer/client.rs"]
mod client;
#[path = "../../../io-smol/src/peer/config.rs"]
mod config;
#[path = "../../../io-smol/src/peer/driver.rs"]
mod driver;
#[path = "../../../io-smol/src/peer/error.rs"]
mod error;
#[path = "../../../io-smol/src/peer/http_client.rs"]
mod http_client;
#[path = "../../../io-smol/src/peer/listen.rs"]
mod listen;
#[path = "../../../io-smol/src/peer/publisher.rs"]
mod publisher;
#[path = "../../../io-smol/src/peer/rpc_server.rs"]
mod rpc_server;
mod rt;
#[path = "../../../io-smol/src/peer/subscription.rs"]
mod subscription;
#[path = "../../../io-smol/src/peer/tcp_client.rs"]
mod tcp_client;
#[path = "../../../io-smol/src/peer/watch.rs"]
mod watch;
#[path = "../../../io-smol/src/peer/ws_client.rs"]
mod ws_client;

pub use client::PeerClient;
pub use config::{PeerConfig, PublisherConfig, RpcServerConfig};
pub use error::{PeerError, ServerError};
pub use publisher::Publisher;
pub use rpc_server::{
    ERR_HANDLER_PANIC, ERR_HANDLER_TIMEOUT, ERR_REPLY_TOO_LARGE, RpcServer, ServerStats,
};
pub use subscription::{SubEvent, Subscription};
pub use watch::Watch;

// The core types a user of this module needs, so one `use` line names the runtime.
pub use grenache_core::bep44::Target;
pub use grenache_core::peer::{
    ClientConfig, ClientStats, CommandError, ConfigError, GetItem, LinkConfig, LinkError, PeerAddr,
    PeerChoice, PubSubTransport, PublishError, Put, RequestOptions, RpcConfig, RpcError,
    RpcTransport, SubConfig, SubscriptionId, WatchId, WsMessage,
};
