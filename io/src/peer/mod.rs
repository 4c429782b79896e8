//! Grenache peers: a client ([`PeerClient`]: lookup, announce, put, get, watch,
//! peer RPC and subscriptions), an RPC server ([`RpcServer`]) and a publisher
//! ([`Publisher`]), wire-compatible with grenache-nodejs-link, -http and -ws.
//!
//! Like the Grape adapter, this holds no protocol logic: the core's
//! [`Client`](grenache_core::peer::Client) decides what to send, when to retry and what a
//! reply means; one driver task owns it and does the I/O it asks for (hyper HTTP/1.1 with
//! a keep-alive pool, WebSocket connections by id, a timer). The servers read and write
//! frames with the core's framing functions. Each type is generic over the
//! [`Runtime`](crate::Runtime); `grenache-smol` and `grenache-tokio` name them for theirs,
//! so a program written for one runs on the other by changing the crate name.
//!
//! `grenache-smol`'s and `grenache-tokio`'s crate docs show a client and a server at work.
//!
//! Every queue and table is bounded (see [`PeerConfig`], [`RpcServerConfig`],
//! [`PublisherConfig`]); every failure reaches the caller as a typed error
//! ([`PeerError`], [`ServerError`]), never as a hang: each request has a deadline, and
//! the core answers it when the peer does not.

mod client;
mod config;
mod curve;
mod driver;
mod error;
mod first_bytes;
pub(crate) mod http_client;
mod listen;
pub(crate) use listen::bind;
mod publisher;
mod rpc_server;
mod shards;
mod stream_body;
mod subscription;
mod tcp_client;
mod watch;
mod ws_client;

pub use client::PeerClient;
pub use config::{PeerConfig, PublisherConfig, RpcServerConfig, available_cores};
pub use curve::{CurveFailure, CurveStats, ZmqHeartbeat};
pub use error::{PeerError, ServerError};
pub use grenache_core::peer::zmtp::{
    CurveClientConfig, CurveKeyError, CurveKeyPair, CurvePublicKey, CurveServerConfig,
};
pub use publisher::Publisher;
pub use rpc_server::{RequestContext, RpcServer, ServerStats, StatsReader};
pub use stream_body::{BodyError, RequestBody, StreamRequest};
pub use subscription::{SubEvent, Subscription};
pub use watch::Watch;

pub use crate::tls::{
    BadFingerprint, ClientTls, Fingerprint, PeerIdentity, ServerTls, TlsConfigError, TlsFailure,
    TlsStats, VerifyClient,
};

// The core types a user of this module needs, so one `use` line names the runtime.
pub use grenache_core::dht::bep44::Target;
pub use grenache_core::peer::{
    ClientConfig, ClientStats, CommandError, ConfigError, ERR_HANDLER_PANIC, ERR_HANDLER_TIMEOUT,
    ERR_REPLY_TOO_LARGE, GetItem, LinkConfig, LinkError, PeerAddr, PeerChoice, Protocol,
    PubSubTransport, PublishError, Put, RequestOptions, RpcConfig, RpcError, RpcTransport,
    StreamHead, StreamOptions, StreamTooLarge, SubConfig, SubscriptionId, UnknownProtocol,
    WsMessage,
};
