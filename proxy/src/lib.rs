//! The Grenache proxy: a peer that serves a service on one transport (HTTP, WebSocket or
//! ZeroMQ) and answers it by calling another service over another transport, so clients
//! and servers of different Grenache libraries can talk (docs/operators.md, "The proxy").

pub mod config;
pub mod gateway;
mod metrics;
pub mod pubsub;
pub mod route;
pub mod rpc;

pub use config::{ConfigError, GatewayLimits, Settings};
pub use gateway::{Gateway, GatewayStats};
pub use pubsub::RelayStats;
pub use route::{FanOut, Route, RouteError};
pub use rpc::{ERR_PROXY, Proxy, RouteStats, StartError};
