//! The reference model: what lookups and watches must show, from the commands alone.
//!
//! It knows which services were announced (and when the Grape first took the announce)
//! and which were withdrawn, and when the network was in a loss burst. From that it
//! answers two questions for any moment: must a service be seen, and may it still be?
//! Between the two lies the slack the caches and expiry rules allow; nothing in between
//! is checked.

use std::time::Duration;

/// How long each rule lets an answer lag behind the truth.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// From the Grape taking an announce to every lookup finding it: the Grape's and the
    /// client's lookup caches, plus slack for the traversal.
    pub(crate) seen: Duration,
    /// From an unannounce to every lookup missing it: a storing node that missed the
    /// unannounce keeps the peer for its lifetime, then both caches.
    pub(crate) gone: Duration,
    /// From an announce taken to a watch reporting it: a notification from the storing
    /// nodes, or at worst the next renewal of the Grape's watch and its lookup.
    pub(crate) watch_seen: Duration,
    /// From an unannounce to a watch dropping it: the peer's lifetime, then a renewal.
    pub(crate) watch_gone: Duration,
    /// After a loss burst ends, how long answers are exempt from the "must be seen"
    /// rule. A node marks the nodes that missed its queries in the burst as silent and
    /// skips them until they answer something or the mark expires (`SILENT_FOR`, 10
    /// min): a Grape may not reach the storing nodes that long. Then a lookup cached
    /// meanwhile may be reused for the client's cache time.
    pub(crate) after_burst: Duration,
    /// How long after its last successful announce round a service must still be found:
    /// a little less than the peer's lifetime (rounds fail in bursts, and then the stored
    /// peer may expire before the next one succeeds).
    pub(crate) fresh: Duration,
}

/// One announce of a service until its unannounce.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// When the announce was issued.
    announced: Duration,
    /// When the Grape first answered an announce round of it with success.
    taken: Option<Duration>,
    /// When the Grape last did.
    renewed: Option<Duration>,
    /// When it was unannounced, if it was.
    withdrawn: Option<Duration>,
}

/// One service: a name served at an address.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    pub(crate) name: usize,
    pub(crate) addr: String,
    spans: Vec<Span>,
}

/// Spans kept per service; the oldest are forgotten past it (their "gone" bound has long
/// passed by then in any scenario that fits a fuzz input).
const MAX_SPANS: usize = 64;

impl Service {
    pub(crate) fn new(name: usize, addr: String) -> Service {
        Service {
            name,
            addr,
            spans: Vec::new(),
        }
    }

    /// Whether it is announced now (withdrawn or never: false).
    pub(crate) fn is_announced(&self) -> bool {
        self.spans.last().is_some_and(|s| s.withdrawn.is_none())
    }

    /// Whether it was ever announced: if not, no answer may name it.
    pub(crate) fn ever_announced(&self) -> bool {
        !self.spans.is_empty()
    }

    pub(crate) fn announce(&mut self, at: Duration) {
        if !self.is_announced() {
            if self.spans.len() >= MAX_SPANS {
                self.spans.remove(0);
            }
            self.spans.push(Span {
                announced: at,
                taken: None,
                renewed: None,
                withdrawn: None,
            });
        }
    }

    /// An announce round succeeded at `at`.
    pub(crate) fn taken(&mut self, at: Duration) {
        if let Some(span) = self.spans.last_mut()
            && span.withdrawn.is_none()
        {
            span.taken.get_or_insert(at);
            span.renewed = Some(at);
        }
    }

    pub(crate) fn withdraw(&mut self, at: Duration) {
        if let Some(span) = self.spans.last_mut()
            && span.withdrawn.is_none()
        {
            span.withdrawn = Some(at);
        }
    }

    /// Must a lookup issued at `at` find it? Announced, taken at least `seen` before,
    /// and renewed within `fresh`.
    pub(crate) fn must_be_seen(&self, at: Duration, bounds: &Bounds) -> bool {
        self.spans.last().is_some_and(|s| {
            s.withdrawn.is_none()
                && s.taken.is_some_and(|t| t + bounds.seen <= at)
                && s.renewed.is_some_and(|r| at <= r + bounds.fresh)
        })
    }

    /// May an answer given at or after `at` still name it? Announced now, or withdrawn
    /// less than `gone` before.
    pub(crate) fn may_be_seen(&self, at: Duration, gone: Duration) -> bool {
        self.spans
            .last()
            .is_some_and(|s| s.withdrawn.is_none_or(|w| at < w + gone))
    }

    /// The spans as `(announced, taken, withdrawn)`, for the watch checks.
    pub(crate) fn spans(
        &self,
    ) -> impl Iterator<Item = (Duration, Option<Duration>, Option<Duration>)> + '_ {
        self.spans
            .iter()
            .map(|s| (s.announced, s.taken, s.withdrawn))
    }
}

/// Loss bursts: when the network was in one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bursts {
    /// Start, and end once it ended.
    spans: Vec<(Duration, Option<Duration>)>,
}

impl Bursts {
    pub(crate) fn is_on(&self) -> bool {
        self.spans.last().is_some_and(|(_, end)| end.is_none())
    }

    pub(crate) fn start(&mut self, at: Duration) {
        if !self.is_on() {
            if self.spans.len() >= MAX_SPANS {
                self.spans.remove(0);
            }
            self.spans.push((at, None));
        }
    }

    pub(crate) fn stop(&mut self, at: Duration) {
        if let Some((_, end)) = self.spans.last_mut()
            && end.is_none()
        {
            *end = Some(at);
        }
    }

    /// When the last burst ended, if one did.
    pub(crate) fn last_end(&self) -> Option<Duration> {
        self.spans.last().and_then(|(_, end)| *end)
    }

    /// Whether an answer to a command issued at `from` and read at `to` can be blamed on
    /// a burst: one overlapped `[from - after, to]`.
    pub(crate) fn touched(&self, from: Duration, to: Duration, after: Duration) -> bool {
        let from = from.saturating_sub(after);
        self.spans
            .iter()
            .any(|&(start, end)| start <= to && end.is_none_or(|e| e >= from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn bounds() -> Bounds {
        Bounds {
            seen: s(10),
            gone: s(100),
            watch_seen: s(40),
            watch_gone: s(150),
            after_burst: s(10),
            fresh: s(110),
        }
    }

    #[test]
    fn a_service_must_be_seen_once_taken_and_settled() {
        let mut svc = Service::new(0, "10.0.0.1:4000".into());
        assert!(!svc.may_be_seen(s(0), s(100)));

        svc.announce(s(0));
        assert!(!svc.must_be_seen(s(50), &bounds()), "not taken yet");
        svc.taken(s(5));

        assert!(!svc.must_be_seen(s(14), &bounds()));
        assert!(svc.must_be_seen(s(15), &bounds()));
        assert!(svc.may_be_seen(s(15), s(100)));
        assert!(
            !svc.must_be_seen(s(116), &bounds()),
            "not renewed since 5 s"
        );
        svc.taken(s(100));
        assert!(svc.must_be_seen(s(116), &bounds()));
    }

    #[test]
    fn a_withdrawn_service_may_linger_within_its_bound_only() {
        let mut svc = Service::new(0, "10.0.0.1:4000".into());
        svc.announce(s(0));
        svc.taken(s(1));
        svc.withdraw(s(20));

        assert!(!svc.must_be_seen(s(30), &bounds()));
        assert!(svc.may_be_seen(s(119), s(100)));
        assert!(!svc.may_be_seen(s(120), s(100)));
        assert!(svc.ever_announced());
    }

    #[test]
    fn bursts_cover_their_span_and_the_time_after() {
        let mut b = Bursts::default();
        b.start(s(10));
        b.stop(s(20));

        assert!(b.touched(s(5), s(12), s(0)));
        assert!(b.touched(s(25), s(26), s(10)));
        assert!(!b.touched(s(31), s(40), s(10)));
        assert!(!b.touched(s(0), s(9), s(10)));
    }
}
