//! Rust peers against Rust peers, on smol and on tokio: round trips over HTTP and
//! WebSocket, PUB/SUB, the typed errors (timeout, oversized payloads and replies, malformed
//! replies, a server that accepts and never answers), failover when one of three servers
//! dies mid-load, a stopped server leaving the lookups, and watches (`peer_cases/watch.rs`).
//!
//! The cases are written once, in `peer_cases/rust.rs`, against `rt` (the runtime crate)
//! and the helpers of `peer_cases/{smol,tokio}.rs`; each module below includes them.

mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/rust.rs");
    include!("peer_cases/watch.rs");
}

mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/rust.rs");
    include!("peer_cases/watch.rs");
}
