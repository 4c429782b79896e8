//! Grenache peers on this runtime: a client ([`PeerClient`]: lookup, announce, put, get,
//! watch, peer RPC and subscriptions), an RPC server ([`RpcServer`]) and a publisher
//! ([`Publisher`]), wire-compatible with grenache-nodejs-link, -http and -ws.
//!
//! Like the Grape adapter, this holds no protocol logic: the core's
//! [`Client`](grenache_core::peer::Client) decides what to send, when to retry and what a
//! reply means; one driver task owns it and does the I/O it asks for (hyper HTTP/1.1 with
//! a keep-alive pool, WebSocket connections by id, a timer). The servers read and write
//! frames with the core's framing functions. The code is the same, file for file, in
//! `grenache-smol` and `grenache-tokio`, except `rt.rs`: a program written against one
//! runs on the other by changing the crate name.
//!
//! Every module here but `rt.rs` is also compiled into grenache-tokio (through `#[path]`),
//! so it may only reach the runtime through `super::rt`.
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
//!
//! Every queue and table is bounded (see [`PeerConfig`], [`RpcServerConfig`],
//! [`PublisherConfig`]); every failure reaches the caller as a typed error
//! ([`PeerError`], [`ServerError`]), never as a hang: each request has a deadline, and
//! the core answers it when the peer does not.

mod client;
mod config;
mod driver;
mod error;
mod http_client;
mod listen;
mod publisher;
mod rpc_server;
mod rt;
mod subscription;
mod tcp_client;
mod watch;
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
