//! When a connection should stop reading and let what it read be answered.
//!
//! A connection task that reads requests (or replies) hands each to another task (a
//! handler, or the client's driver and its callers) and writes what comes back in one
//! batch. Read everything waiting first, and the two ends of a connection take turns on
//! whole windows of requests, each idle while the other works; so every connection loop
//! (WebSocket server and client, ZeroMQ server) counts what it reads with a [`ReadBurst`].

use crate::runtime::Runtime;

/// The longest a burst grows: as long as the longest write batch, so that at its longest
/// it reads as if there were no bursts.
pub(crate) const MAX_BURST: usize = 256;

/// Counts messages read in a row, to say when a connection should stop reading and let
/// the tasks those messages woke (handlers, or the driver and its callers) run, then write
/// what they queued. Without it a connection reads everything waiting (the peer's whole
/// window) before anything answers, and the two ends take turns on whole windows, each
/// idle while the other works: at 64 requests in flight, 100 B, our WebSocket pair used
/// 0.56 + 0.38 of two cores (174k req/s); with bursts of 4 on the server and 8 on the
/// client, 0.99 + 0.82 (about 300k). A burst is one more write and a yield, so the client's
/// is longer: at 64 in flight it is the side that saturates.
///
/// A burst pays only when the woken tasks answer at once. Where they wait on something
/// else (a proxy's handler waits for the service behind it), the yield finds nothing to
/// write and only splits what the tasks send on into smaller writes: so each yield that
/// finds nothing doubles the burst (up to [`MAX_BURST`], reading as if there were none),
/// and each that finds something halves it back towards its start.
#[derive(Debug)]
pub(crate) struct ReadBurst {
    start: usize,
    limit: usize,
    read: usize,
}

impl ReadBurst {
    /// A server's burst: a yield lets the handlers (on the same thread) answer.
    pub(crate) const SERVER: usize = 4;
    /// A ZeroMQ server's burst, found by measuring: at 16 requests in flight (100 B),
    /// bursts of 2 gave our pair 236-259k req/s, of 4 and 8 only 130-139k, and all three
    /// about the same at 64.
    pub(crate) const ZMQ_SERVER: usize = 2;
    /// A client's burst: a yield lets the driver hand the answers to their callers and
    /// take the callers' next requests.
    pub(crate) const CLIENT: usize = 8;

    pub(crate) fn new(start: usize) -> Self {
        let start = start.clamp(1, MAX_BURST);
        Self {
            start,
            limit: start,
            read: 0,
        }
    }

    /// One message read. At the end of a burst, yields (so the tasks it woke run) and returns
    /// what `take` then finds to write, letting the burst's length follow whether it found
    /// anything; otherwise `None` at once.
    pub(crate) async fn after_one<R: Runtime, T>(
        &mut self,
        take: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        if !self.read_one() {
            return None;
        }
        R::yield_now().await;
        let found = take();
        self.found(found.is_some());
        found
    }

    /// One message read; `true` when the burst is over.
    fn read_one(&mut self) -> bool {
        self.read += 1;
        if self.read < self.limit {
            return false;
        }
        self.read = 0;
        true
    }

    /// Whether the yield that ended a burst found something to write.
    fn found(&mut self, something: bool) {
        self.limit = if something {
            (self.limit / 2).max(self.start)
        } else {
            (self.limit * 2).min(MAX_BURST)
        };
    }

    /// Everything queued was written: the next burst starts from here.
    pub(crate) fn wrote(&mut self) {
        self.read = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages read until a burst ends.
    fn burst_len(burst: &mut ReadBurst) -> usize {
        (1..=MAX_BURST + 1)
            .find(|_| burst.read_one())
            .expect("a burst ends within MAX_BURST messages")
    }

    #[test]
    fn a_burst_whose_yields_find_answers_stays_short() {
        let mut burst = ReadBurst::new(ReadBurst::SERVER);
        for _ in 0..10 {
            assert_eq!(burst_len(&mut burst), ReadBurst::SERVER);
            burst.found(true);
        }
    }

    #[test]
    fn yields_that_find_nothing_lengthen_the_burst_until_answers_come_back() {
        let mut burst = ReadBurst::new(4);
        let mut lengths = Vec::new();
        for _ in 0..8 {
            lengths.push(burst_len(&mut burst));
            burst.found(false);
        }
        assert_eq!(lengths, [4, 8, 16, 32, 64, 128, 256, 256]);
        burst.found(true);
        assert_eq!(burst_len(&mut burst), 128);
        for _ in 0..10 {
            burst.found(true);
        }
        assert_eq!(burst_len(&mut burst), 4);
    }

    #[test]
    fn a_write_starts_a_new_burst() {
        let mut burst = ReadBurst::new(4);
        assert!(!burst.read_one());
        assert!(!burst.read_one());
        burst.wrote();
        assert_eq!(burst_len(&mut burst), 4);
    }
}
