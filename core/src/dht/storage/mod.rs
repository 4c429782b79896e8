//! What a node stores for others: announced peers (BEP 5) and BEP-44 items.
//!
//! Both stores are sans-IO: they take `now` from the caller, expire entries through an
//! ordered index (never a scan), and hold a configured maximum. Past that bound they
//! evict the stalest entry, count it in `evicted()` and log a warning, so a full store
//! is visible (the Node Grape dropped names silently: docs/protocol.md §10).

mod items;
mod peers;

pub use items::ItemStore;
pub use peers::PeerStore;

/// Logs a warning the first time a store evicts and again each time the total doubles,
/// so a flood shows up in the logs without flooding them.
fn warn_on_eviction(store: &'static str, before: u64, after: u64, cap: usize) {
    if crossed_power_of_two(before, after) {
        tracing::warn!(
            store,
            evicted = after,
            cap,
            "store full: evicting the stalest entries; raise the cap if this is legitimate load"
        );
    }
}

/// Reports whether the count went past 1, 2, 4, 8, ... between `before` and `after`.
fn crossed_power_of_two(before: u64, after: u64) -> bool {
    before.leading_zeros() != after.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_thin_out_as_evictions_grow() {
        let warned: Vec<u64> = (0..1000u64)
            .filter(|n| crossed_power_of_two(*n, n + 1))
            .map(|n| n + 1)
            .collect();

        assert_eq!(warned, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
        assert!(crossed_power_of_two(0, 7));
        assert!(!crossed_power_of_two(5, 7));
    }
}
