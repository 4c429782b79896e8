//! The internals of `grape-bench`: our Grape against the Node.js Grape on loopback, side by
//! side in one run (issue 5). See docs/benchmarks.md for what each section measures and the
//! results. A package of its own so that `cargo install --path grape-bin` builds only `grape`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod fixed;
pub mod grapes;
pub mod http_load;
pub mod krpc;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod rpc;
pub mod scale;
pub mod sections;
pub mod stats;
pub mod tls;
pub mod udp_load;
