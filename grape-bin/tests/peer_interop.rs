//! Rust peers with the real Node.js peers (grenache-nodejs-http 1.0.2, grenache-nodejs-ws
//! 1.0.0, pinned in `node/package.json`), on smol and on tokio: Node client -> Rust server
//! and Rust client -> Node server over HTTP (plain and gzip) and WebSocket, Node publisher
//! -> Rust subscriber and Rust publisher -> Node subscriber.
//!
//! Needs Node.js 20+ and npm (it fails without them; `GRENACHE_SKIP_INTEROP=1` reports it as
//! ignored instead). The cases are written once, in `peer_cases/interop.rs`, and included per runtime.

mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/interop.rs");
}

mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/interop.rs");
}
