//! The record of a run: a running hash of everything that happened, and a bounded log.
//!
//! Two runs with the same seed and the same script must end with the same hash; the log
//! shows what happened last when they do not.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::host::HostEvent;
use crate::dht::id::NodeId;

/// One thing that happened in the simulated network.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TraceEntry {
    /// A host was started.
    Spawned {
        /// Virtual time since the epoch.
        at: Duration,
        /// Its address.
        node: SocketAddr,
        /// Its DHT id, when it runs a DHT node.
        id: Option<NodeId>,
    },
    /// A node was stopped; datagrams to and from it that are in flight are dropped.
    Killed {
        /// Virtual time since the epoch.
        at: Duration,
        /// Its address.
        node: SocketAddr,
    },
    /// A datagram reached its destination.
    Delivered {
        /// Virtual time since the epoch.
        at: Duration,
        /// Sender.
        from: SocketAddr,
        /// Receiver.
        to: SocketAddr,
        /// Payload length in bytes.
        len: usize,
    },
    /// A datagram was dropped: lost on its link, cut by a partition, or its sender or
    /// receiver is gone.
    Dropped {
        /// Virtual time since the epoch.
        at: Duration,
        /// Sender.
        from: SocketAddr,
        /// Intended receiver.
        to: SocketAddr,
    },
    /// A node's timer fired.
    Timeout {
        /// Virtual time since the epoch.
        at: Duration,
        /// The node.
        node: SocketAddr,
    },
    /// A host reported an event.
    Event {
        /// Virtual time since the epoch.
        at: Duration,
        /// The host.
        node: SocketAddr,
        /// What it reported.
        event: HostEvent,
    },
}

/// The running hash plus the last few entries.
#[derive(Debug)]
pub(crate) struct Trace {
    hash: u64,
    log: VecDeque<TraceEntry>,
    cap: usize,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub(crate) fn new() -> Self {
        Trace {
            hash: FNV_OFFSET,
            log: VecDeque::new(),
            cap: 0,
        }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn log(&self) -> impl Iterator<Item = &TraceEntry> {
        self.log.iter()
    }

    /// Keeps the last `cap` entries (0 keeps none; the hash is always kept).
    pub(crate) fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        while self.log.len() > cap {
            self.log.pop_front();
        }
    }

    /// Hashes a datagram that reached its destination, payload included.
    pub(crate) fn delivered(
        &mut self,
        at: Duration,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) {
        self.mix(&[1]);
        self.mix_time(at);
        self.mix_addr(from);
        self.mix_addr(to);
        self.mix(&(payload.len() as u64).to_le_bytes());
        self.mix(payload);
        self.push(|| TraceEntry::Delivered {
            at,
            from,
            to,
            len: payload.len(),
        });
    }

    pub(crate) fn dropped(&mut self, at: Duration, from: SocketAddr, to: SocketAddr) {
        self.mix(&[2]);
        self.mix_time(at);
        self.mix_addr(from);
        self.mix_addr(to);
        self.push(|| TraceEntry::Dropped { at, from, to });
    }

    pub(crate) fn timeout(&mut self, at: Duration, node: SocketAddr) {
        self.mix(&[3]);
        self.mix_time(at);
        self.mix_addr(node);
        self.push(|| TraceEntry::Timeout { at, node });
    }

    pub(crate) fn event(&mut self, at: Duration, node: SocketAddr, event: &HostEvent) {
        self.mix(&[4]);
        self.mix_time(at);
        self.mix_addr(node);
        // Debug output of the event types is derived, so it is stable within a build,
        // which is all a same-seed comparison needs. A node's event hashes as it did
        // before hosts other than nodes existed.
        let text = match event {
            HostEvent::Dht(e) => format!("{e:?}"),
            other => format!("{other:?}"),
        };
        self.mix(text.as_bytes());
        self.push(|| TraceEntry::Event {
            at,
            node,
            event: event.clone(),
        });
    }

    pub(crate) fn spawned(&mut self, at: Duration, node: SocketAddr, id: Option<NodeId>) {
        self.mix(&[5]);
        self.mix_time(at);
        self.mix_addr(node);
        if let Some(id) = &id {
            self.mix(&id.0);
        }
        self.push(|| TraceEntry::Spawned { at, node, id });
    }

    pub(crate) fn killed(&mut self, at: Duration, node: SocketAddr) {
        self.mix(&[6]);
        self.mix_time(at);
        self.mix_addr(node);
        self.push(|| TraceEntry::Killed { at, node });
    }

    fn push(&mut self, entry: impl FnOnce() -> TraceEntry) {
        if self.cap == 0 {
            return;
        }
        if self.log.len() >= self.cap {
            self.log.pop_front();
        }
        self.log.push_back(entry());
    }

    /// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    fn mix_time(&mut self, at: Duration) {
        self.mix(&at.as_secs().to_le_bytes());
        self.mix(&at.subsec_nanos().to_le_bytes());
    }

    fn mix_addr(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => self.mix(&a.ip().octets()),
            SocketAddr::V6(a) => self.mix(&a.ip().octets()),
        }
        self.mix(&addr.port().to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn same_history_same_hash() {
        let mut a = Trace::new();
        let mut b = Trace::new();

        for t in [&mut a, &mut b] {
            t.delivered(Duration::from_millis(5), addr(1), addr(2), b"hello");
            t.timeout(Duration::from_millis(9), addr(2));
        }

        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn any_difference_changes_the_hash() {
        let mut base = Trace::new();
        base.delivered(Duration::from_millis(5), addr(1), addr(2), b"hello");
        let mut later = Trace::new();
        later.delivered(Duration::from_millis(6), addr(1), addr(2), b"hello");
        let mut other = Trace::new();
        other.delivered(Duration::from_millis(5), addr(1), addr(2), b"hellp");

        assert_ne!(base.hash(), later.hash());
        assert_ne!(base.hash(), other.hash());
    }

    #[test]
    fn log_keeps_only_the_last_entries() {
        let mut t = Trace::new();
        t.set_cap(2);

        for port in 1..=3 {
            t.timeout(Duration::ZERO, addr(port));
        }

        let nodes: Vec<SocketAddr> = t
            .log()
            .map(|e| match e {
                TraceEntry::Timeout { node, .. } => *node,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(nodes, vec![addr(2), addr(3)]);
    }
}
