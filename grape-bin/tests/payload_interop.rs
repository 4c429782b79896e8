//! Payloads arrive as they were sent (issue 17): JSON texts that Node's JSON.stringify
//! wrote pass between Rust peers and the real Node peers (grenache-nodejs-http 1.0.2,
//! grenache-nodejs-ws 1.0.0, libzmq 4.3.5 through zeromq 6.8.0, pinned in
//! `node/package.json`) byte for byte, over HTTP, WebSocket, ZeroMQ and PUB/SUB, in both
//! directions, on smol and on tokio; lone surrogates are refused with a typed error.
//!
//! Fails without Node.js 20+ and npm; `GRENACHE_SKIP_INTEROP=1` reports it as ignored. The
//! cases are written once, in `peer_cases/payload.rs`, and included per runtime.

mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/payload.rs");
}

mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/payload.rs");
}
