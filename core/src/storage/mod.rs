//! What a node stores for others: announced peers (BEP 5) and BEP-44 items.
//!
//! Both stores are sans-IO: they take `now` from the caller, expire entries through an
//! ordered index (never a scan), and hold a configured maximum. Past that bound they
//! evict the stalest entry, count it in `evicted()` and log a warning, so a full store
//! is visible (the Node Grape dropped names silently: docs/grenache-protocol.md §10).

mod items;
mod peers;

pub use items::ItemStore;
pub use peers::PeerStore;

/// Logs a warning the first time a store evicts and again each time the total doubles,
/// so a flood shows up in the logs without flooding them.
fn warn_on_eviction(store: &'static str, before: u64, after: u64, cap: usize) {
    if before.leading_zeros() != after.leading_zeros() {
        tracing::warn!(
            store,
            evicted = after,
            cap,
            "store full: evicting the stalest entries; raise the cap if this is legitimate load"
        );
    }
}
