//! A Rust PeerClient watching a service in a network with a Node Grape 1.0.0, on smol and on
//! tokio (our Grape and the client on the same runtime): the watch sees announces made
//! through our Grape and through the Node one, the Node Grape keeps answering lookups
//! meanwhile, and a client whose Grape is the Node one gets its watch ended with the Node
//! Grape's error, while its lookups and the Node Grape keep working.
//!
//! Fails without Node.js 20+ and npm; `GRENACHE_SKIP_INTEROP=1` reports it as ignored instead.

// The runtime files give every case file the same helpers; these cases need only some.
#[allow(dead_code)]
mod smol_rt {
    include!("peer_cases/smol.rs");
    include!("peer_cases/watch_interop.rs");
}

#[allow(dead_code)]
mod tokio_rt {
    include!("peer_cases/tokio.rs");
    include!("peer_cases/watch_interop.rs");
}
