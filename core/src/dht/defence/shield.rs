//! The defences a node applies to its datagrams: the rate limit on what comes in and the
//! byte budget on the answers that go out.

use std::net::IpAddr;
use std::time::Instant;

use super::{Defences, SourceLimiter, TokenBucket, Verdict};

/// The DHT port's limiters, built from [`Defences`].
#[derive(Clone, Debug)]
pub(crate) struct Shield {
    exempt_loopback: bool,
    incoming: Option<SourceLimiter>,
    replies: Option<TokenBucket>,
    replies_per_source: Option<SourceLimiter>,
}

impl Shield {
    pub(crate) fn new(d: &Defences, now: Instant) -> Shield {
        let per_source =
            |limit, ban| SourceLimiter::new(limit, ban, d.exempt_loopback, d.max_sources);
        Shield {
            exempt_loopback: d.exempt_loopback,
            incoming: d.rate_limit.map(|limit| per_source(limit, d.ban)),
            replies: d.reply_budget.map(|limit| TokenBucket::new(limit, now)),
            replies_per_source: d
                .reply_budget_per_source
                .map(|limit| per_source(limit, None)),
        }
    }

    /// Whether a datagram from `ip` may be handled.
    pub(crate) fn admit(&mut self, now: Instant, ip: IpAddr) -> Verdict {
        self.incoming
            .as_mut()
            .map_or(Verdict::Allowed, |l| l.check(now, ip, 1))
    }

    /// Whether an answer of `bytes` to `ip` fits the budgets; charges them if it does.
    ///
    /// The querier's own budget is charged first: a source over its share does not spend
    /// the global budget that others' answers need.
    pub(crate) fn may_reply(&mut self, now: Instant, ip: IpAddr, bytes: usize) -> bool {
        let cost = u32::try_from(bytes).unwrap_or(u32::MAX);
        if let Some(l) = &mut self.replies_per_source
            && !l.check(now, ip, cost).allowed()
        {
            return false;
        }
        let exempt = self.exempt_loopback && ip.to_canonical().is_loopback();
        match &mut self.replies {
            Some(bucket) if !exempt => bucket.take(now, cost),
            _ => true,
        }
    }

    /// Forgets sources that have gone quiet, so the tables shrink after a flood.
    pub(crate) fn forget_quiet(&mut self, now: Instant) {
        for l in [&mut self.incoming, &mut self.replies_per_source]
            .into_iter()
            .flatten()
        {
            l.forget_quiet(now);
        }
    }

    /// Whether `ip` is banned at `now`: its datagrams are dropped, so its nodes can only
    /// waste our queries.
    pub(crate) fn is_banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.incoming.as_ref().is_some_and(|l| l.is_banned(now, ip))
    }

    /// Sources banned at `now`.
    pub(crate) fn banned_now(&self, now: Instant) -> usize {
        self.incoming.as_ref().map_or(0, |l| l.banned_now(now))
    }
}
