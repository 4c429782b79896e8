//! TLS and mutual TLS between the Rust peers and the real Node.js peers
//! (grenache-nodejs-http 1.0.2 and grenache-nodejs-ws 1.0.0 with `secure`), both
//! directions, on smol and on tokio: HTTPS and WSS RPC, and PUB/SUB over WSS. Each side
//! checks the certificate the other showed. Certificates are made by the test (rcgen).
//!
//! Needs Node.js 20+ and npm (it fails without them; `GRENACHE_SKIP_INTEROP=1` reports it as
//! ignored instead). The case is written once, in `peer_cases/tls_interop.rs`.

mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/tls_interop.rs");
}

mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/tls_interop.rs");
}
