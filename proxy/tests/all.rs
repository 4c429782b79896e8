//! Every integration test of this crate, in one binary: each file of `tests/` is a module
//! here. One binary links and instantiates the shared code once instead of once per file,
//! which was most of CI's build time. Run one file's tests with a filter on its module name,
//! e.g. `cargo test -p grenache-proxy --test all cli::`.

#[macro_use]
mod common;

mod cli;
mod gateway;
mod pubsub_routes;
mod rpc_routes;
