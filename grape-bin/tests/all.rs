//! Every integration test of this crate, in one binary: each file of `tests/` is a module
//! here. One binary links and instantiates the shared code once instead of once per file,
//! which was most of CI's build time. Run one file's tests with a filter on its module name,
//! e.g. `cargo test -p grenache-grape --test all dashboard::`.

#[macro_use]
mod common;

mod dashboard;
mod deploy;
mod mixed_dht;
mod node_link;
mod node_reference;
mod node_rpc;
mod payload_interop;
mod peer_interop;
mod peer_rust;
mod proxy_interop;
mod runtime;
mod scale;
mod state;
mod std_loop;
mod stream_interop;
mod tls_interop;
mod unannounce;
mod watch_interop;
mod zmq_interop;
