//! HTTP request streams (issue 13 item 3) between the Rust peers and the real
//! grenache-nodejs-http 1.0.2, both directions, on smol and on tokio: a Node
//! `PeerRPCClient.stream` to our streaming handler, our `request_stream` to a Node
//! server's 'stream' handler, and a bad `_gr` header answered alike by both servers.
//!
//! Needs Node.js 20+ and npm (it fails without them; `GRENACHE_SKIP_INTEROP=1` reports it as
//! ignored instead). The case is written once, in `peer_cases/stream_interop.rs`.

// The runtime files give every case file the same helpers; these cases need only some.
#[allow(dead_code)]
mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/stream_interop.rs");
}

#[allow(dead_code)]
mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/node_side.rs");
    include!("peer_cases/stream_interop.rs");
}
