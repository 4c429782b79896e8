//! Rust ZeroMQ peers with libzmq 4.3.5 (the `zeromq` npm package 6.8.0, pinned in
//! `node/package.json`), on smol and on tokio, every service found through our Grape:
//! Node DEALER -> Rust ROUTER server, Rust client -> Node ROUTER server, Node PUB -> Rust
//! SUB and Rust PUB -> Node SUB, in the frames of docs/zeromq-wire.md.
//!
//! Needs Node.js 20+ and npm (it fails without them; `GRENACHE_SKIP_INTEROP=1` reports it as
//! ignored instead). The cases are written once, in `peer_cases/zmq_interop.rs`, and included per runtime.

mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/zmq_interop.rs");
}

mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/zmq_interop.rs");
}
