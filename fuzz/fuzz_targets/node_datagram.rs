//! Arbitrary datagrams into a fixed-seed node that has a routing table, a bootstrap and a
//! lookup running: it must never panic, and after any input, once its output is drained,
//! the timer it asks for must lie after the time it was woken (no busy loop).
//!
//! The input is a list of datagrams, each `[from: u8][wait: u8][len: u8][len bytes]`
//! (the last one takes what is left). `from` picks one of a few senders, including the
//! nodes in the table, and `wait` advances the clock by that many 10 ms steps. A datagram
//! whose bytes hold `1:t4:` gets the four bytes after it replaced by the transaction id of
//! one of the node's pending queries, so mutated answers reach the response paths.
#![no_main]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{epoch, ping_from};
use grenache_core::dht::Key;
use grenache_core::dht::krpc::{Body, Message};
use grenache_core::dht::{Config, Node};
use libfuzzer_sys::fuzz_target;

/// Nodes put in the table before the input is fed (they ping us, we learn them).
const KNOWN: u8 = 6;
/// How far past the last datagram the timers are run.
const AFTER: Duration = Duration::from_secs(180);
/// Timer firings allowed per input; a node that needs more is looping.
const MAX_WAKEUPS: usize = 10_000;

fn sender(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i % (KNOWN + 2) + 1], 6881))
}

/// Drains the node, remembering the transaction ids of the queries it sends.
fn drain(node: &mut Node, tids: &mut Vec<Vec<u8>>) {
    while let Some(t) = node.poll_transmit() {
        if let Ok(Message {
            tid,
            body: Body::Query(_),
            ..
        }) = Message::decode(&t.payload)
        {
            if tids.len() < 64 {
                tids.push(tid);
            }
        }
    }
    while node.poll_event().is_some() {}
}

/// Replaces the 4 bytes after `1:t4:` by a pending tid, if both exist.
fn with_tid(bytes: &[u8], tids: &[Vec<u8>], pick: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let marker = b"1:t4:";
    let Some(tid) = tids.get(usize::from(pick) % tids.len().max(1)) else {
        return out;
    };
    if let Some(at) = out.windows(marker.len()).position(|w| w == marker) {
        let start = at + marker.len();
        if let Some(slot) = out.get_mut(start..start + 4)
            && tid.len() == 4
        {
            slot.copy_from_slice(tid);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut now = epoch();
    let mut node = Node::new(Config::default(), [7; 32], now);
    let mut tids = Vec::new();
    for i in 0..KNOWN {
        node.handle_datagram(now, sender(i), &ping_from(i));
    }
    node.bootstrap(now, &[sender(KNOWN)]);
    if let Some(key) = Key::new(b"fuzz:service") {
        node.get_peers(now, key);
    }
    drain(&mut node, &mut tids);

    let mut rest = data;
    while let [from, wait, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = if next_is_last(tail, n) {
            (tail, &[][..])
        } else {
            tail.split_at(n)
        };
        now += Duration::from_millis(10 * u64::from(*wait));
        let bytes = with_tid(bytes, &tids, *wait);
        node.handle_datagram(now, sender(*from), &bytes);
        drain(&mut node, &mut tids);
        rest = next;
    }

    let end = now + AFTER;
    for _ in 0..MAX_WAKEUPS {
        let Some(at) = node.poll_timeout() else {
            return;
        };
        if at > end {
            return;
        }
        now = now.max(at);
        node.handle_timeout(now);
        drain(&mut node, &mut tids);
        assert!(
            node.poll_timeout().is_none_or(|t| t > now),
            "poll_timeout not after handle_timeout({now:?})"
        );
    }
    panic!("more than {MAX_WAKEUPS} wake-ups in {AFTER:?}");
});

/// The last datagram takes the rest of the input, whatever its length byte says.
fn next_is_last(tail: &[u8], n: usize) -> bool {
    tail.len() - n < 3
}
