//! Token buckets, one per source address, with a temporary ban for sources that keep going
//! over: the one rate limiter of the DHT port, the reply budget and the Grape API.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::subnet::source_key;

/// A rate: `per_second` units refill each second, up to `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Units (datagrams, bytes, requests) per second.
    pub per_second: u32,
    /// Most units a quiet source saves up; at least 1.
    pub burst: u32,
}

impl Limit {
    /// `n` per second with one second's worth of burst; `None` for 0 (the flags' "off").
    pub fn per_second(n: u32) -> Limit {
        Limit {
            per_second: n,
            burst: n.max(1),
        }
    }

    /// A limit from a flag value, where 0 means off.
    pub fn from_flag(n: u32) -> Option<Limit> {
        (n > 0).then(|| Limit::per_second(n))
    }
}

/// What happens to a source that keeps going over its limit: after `after` refusals within
/// `window`, everything it sends is dropped for `duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// Refusals within `window` that earn a ban.
    pub after: u32,
    /// The window refusals are counted over.
    pub window: Duration,
    /// How long the ban lasts.
    pub duration: Duration,
}

impl Default for Ban {
    /// A source refused a thousand times within 10 s (it sent well over twice its
    /// allowance) is ignored for 5 minutes, as libtorrent does.
    fn default() -> Self {
        Ban {
            after: 1_000,
            window: Duration::from_secs(10),
            duration: super::DEFAULT_BAN_FOR,
        }
    }
}

/// Nano-units per unit: tokens are kept in integers, exact at any rate.
const NANO: u128 = 1_000_000_000;

/// One token bucket: `take` succeeds while tokens last, and they refill at the limit's rate.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    limit: Limit,
    /// Tokens in nano-units, at most `burst * NANO`: under 2^63 for any `u32` burst, so
    /// 8 bytes hold it (the sums are done in `u128`). A source limiter keeps one per source.
    tokens: u64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: to_u64(capacity(limit)),
            refilled: now,
        }
    }

    /// Takes `cost` units if the bucket holds them; reports whether it did.
    pub fn take(&mut self, now: Instant, cost: u32) -> bool {
        self.refill(now);
        let cost = u128::from(cost) * NANO;
        let tokens = u128::from(self.tokens);
        if tokens >= cost {
            self.tokens = to_u64(tokens - cost);
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now`: its source has been quiet long enough to forget.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        u128::from(self.tokens) >= capacity(self.limit)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        self.refilled = self.refilled.max(now);
        let added = elapsed.saturating_mul(u128::from(self.limit.per_second));
        let tokens = u128::from(self.tokens).saturating_add(added);
        self.tokens = to_u64(tokens.min(capacity(self.limit)));
    }
}

fn capacity(limit: Limit) -> u128 {
    u128::from(limit.burst.max(1)) * NANO
}

/// A token count at most [`capacity`], which always fits.
fn to_u64(tokens: u128) -> u64 {
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

/// What a [`SourceLimiter`] decided about one datagram or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit, or the source is exempt.
    Allowed,
    /// Over the limit: drop it.
    Limited,
    /// The source is banned: drop it. `new` is true for the refusal that earned the ban.
    Banned {
        /// This refusal started the ban.
        new: bool,
    },
}

impl Verdict {
    /// Whether the datagram or request goes on.
    pub fn allowed(self) -> bool {
        self == Verdict::Allowed
    }
}

#[derive(Clone, Debug)]
struct Source {
    bucket: TokenBucket,
    last_seen: Instant,
    /// Refusals since `strikes_from`.
    strikes: u32,
    strikes_from: Instant,
    banned_until: Option<Instant>,
}

/// A token bucket per source address, at most `max_sources` of them, with an optional ban.
///
/// Sources are IPv4 addresses and IPv6 /64 networks (a host owns a whole /64, and a flood
/// from one host may come from any port). Past `max_sources` the idlest source is forgotten,
/// so a flood of distinct addresses costs bounded memory; a forgotten source starts again
/// with a full bucket, which is what a quiet source has anyway.
#[derive(Clone, Debug)]
pub struct SourceLimiter {
    limit: Limit,
    ban: Option<Ban>,
    exempt_loopback: bool,
    max_sources: usize,
    sources: HashMap<IpAddr, Source>,
    /// Every source by its last datagram: the eviction order.
    by_seen: BTreeSet<(Instant, IpAddr)>,
    bans: u64,
}

impl SourceLimiter {
    /// A limiter with no source known yet. `max_sources` of 0 is taken as 1.
    pub fn new(
        limit: Limit,
        ban: Option<Ban>,
        exempt_loopback: bool,
        max_sources: usize,
    ) -> SourceLimiter {
        SourceLimiter {
            limit,
            ban,
            exempt_loopback,
            max_sources: max_sources.max(1),
            sources: HashMap::new(),
            by_seen: BTreeSet::new(),
            bans: 0,
        }
    }

    /// Charges `cost` units to `ip` at `now`.
    pub fn check(&mut self, now: Instant, ip: IpAddr, cost: u32) -> Verdict {
        if self.is_exempt(ip) {
            return Verdict::Allowed;
        }
        let key = source_key(ip);
        let source = match self.sources.get_mut(&key) {
            Some(source) => {
                self.by_seen.remove(&(source.last_seen, key));
                source
            }
            None => {
                if self.sources.len() >= self.max_sources {
                    self.forget_idlest();
                }
                self.sources.entry(key).or_insert_with(|| Source {
                    bucket: TokenBucket::new(self.limit, now),
                    last_seen: now,
                    strikes: 0,
                    strikes_from: now,
                    banned_until: None,
                })
            }
        };
        source.last_seen = source.last_seen.max(now);
        self.by_seen.insert((source.last_seen, key));
        if let Some(until) = source.banned_until {
            if now < until {
                return Verdict::Banned { new: false };
            }
            source.banned_until = None;
            source.strikes = 0;
        }
        if source.bucket.take(now, cost) {
            return Verdict::Allowed;
        }
        let Some(ban) = self.ban else {
            return Verdict::Limited;
        };
        if now.saturating_duration_since(source.strikes_from) > ban.window {
            source.strikes = 0;
            source.strikes_from = now;
        }
        source.strikes = source.strikes.saturating_add(1);
        if source.strikes < ban.after.max(1) {
            return Verdict::Limited;
        }
        source.banned_until = now.checked_add(ban.duration);
        self.bans += 1;
        tracing::info!(source = %key, for_secs = ban.duration.as_secs(), "source banned: it kept going over its rate limit");
        Verdict::Banned { new: true }
    }

    /// Whether `ip` skips this limiter: a loopback sender, when loopback is exempt.
    fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt_loopback && ip.to_canonical().is_loopback()
    }

    /// Sources banned so far (each ban counted once).
    pub fn bans(&self) -> u64 {
        self.bans
    }

    /// Whether `ip` (its address, or its /64) is banned at `now`. Read-only: it charges
    /// nothing, so it may be asked about addresses that sent us nothing.
    pub fn is_banned(&self, now: Instant, ip: IpAddr) -> bool {
        if self.is_exempt(ip) {
            return false;
        }
        self.sources
            .get(&source_key(ip))
            .and_then(|s| s.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Sources banned at `now`.
    pub fn banned_now(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|s| s.banned_until.is_some_and(|until| now < until))
            .count()
    }

    /// Sources tracked now (at most `max_sources`).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Forgets the source heard from longest ago; a banned one is kept if any other can go.
    fn forget_idlest(&mut self) {
        let victim = self
            .by_seen
            .iter()
            .find(|(_, ip)| {
                self.sources
                    .get(ip)
                    .is_none_or(|s| s.banned_until.is_none())
            })
            .or_else(|| self.by_seen.first())
            .copied();
        if let Some(entry) = victim {
            self.by_seen.remove(&entry);
            self.sources.remove(&entry.1);
        }
    }

    /// Drops sources whose bucket is full again and that are not banned: they are
    /// indistinguishable from new ones. Costs O(forgotten) plus one look at the oldest.
    pub fn forget_quiet(&mut self, now: Instant) {
        while let Some(&(seen, ip)) = self.by_seen.first() {
            let Some(source) = self.sources.get_mut(&ip) else {
                self.by_seen.remove(&(seen, ip));
                continue;
            };
            let banned = source.banned_until.is_some_and(|until| now < until);
            if banned || !source.bucket.is_full(now) {
                break;
            }
            self.by_seen.remove(&(seen, ip));
            self.sources.remove(&ip);
        }
        crate::dht::release_slack(&mut self.sources);
        crate::dht::release_empty_set(&mut self.by_seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    fn limiter(rate: u32, ban: Option<Ban>) -> SourceLimiter {
        SourceLimiter::new(Limit::per_second(rate), ban, true, 16)
    }

    #[test]
    fn the_largest_burst_fits_in_a_bucket_of_32_bytes() {
        let now = Instant::now();
        let most = Limit {
            per_second: u32::MAX,
            burst: u32::MAX,
        };
        let mut bucket = TokenBucket::new(most, now);

        let all = bucket.take(now, u32::MAX);
        let none_left = bucket.take(now, 1);
        let refilled = bucket.take(now + Duration::from_secs(1), u32::MAX);

        assert!(all && !none_left && refilled);
        assert!(std::mem::size_of::<TokenBucket>() <= 32);
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let now = Instant::now();
        let mut l = limiter(10, None);

        let first: Vec<Verdict> = (0..11).map(|_| l.check(now, ip(1), 1)).collect();
        let later = l.check(now + Duration::from_millis(100), ip(1), 1);
        let again = l.check(now + Duration::from_millis(100), ip(1), 1);

        assert!(first[..10].iter().all(|v| v.allowed()));
        assert_eq!(first[10], Verdict::Limited);
        assert_eq!(later, Verdict::Allowed, "a tenth of a second refills one");
        assert_eq!(again, Verdict::Limited);
    }

    #[test]
    fn sources_are_limited_apart_and_ports_do_not_matter() {
        let now = Instant::now();
        let mut l = limiter(1, None);

        assert!(l.check(now, ip(1), 1).allowed());
        assert_eq!(l.check(now, ip(1), 1), Verdict::Limited);
        assert!(l.check(now, ip(2), 1).allowed());
    }

    #[test]
    fn ipv6_sources_are_whole_64s() {
        let now = Instant::now();
        let mut l = limiter(1, None);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");

        assert!(l.check(now, a, 1).allowed());
        assert_eq!(l.check(now, b, 1), Verdict::Limited);
        assert!(l.check(now, other, 1).allowed());
    }

    #[test]
    fn a_source_that_keeps_going_over_is_banned_for_a_while() {
        let now = Instant::now();
        let ban = Ban {
            after: 3,
            window: Duration::from_secs(10),
            duration: Duration::from_secs(60),
        };
        let mut l = limiter(1, Some(ban));

        let verdicts: Vec<Verdict> = (0..5).map(|_| l.check(now, ip(1), 1)).collect();
        let during = l.check(now + Duration::from_secs(30), ip(1), 1);
        let after = l.check(now + Duration::from_secs(61), ip(1), 1);

        assert_eq!(
            verdicts,
            [
                Verdict::Allowed,
                Verdict::Limited,
                Verdict::Limited,
                Verdict::Banned { new: true },
                Verdict::Banned { new: false },
            ]
        );
        assert_eq!(
            during,
            Verdict::Banned { new: false },
            "refilled, but banned"
        );
        assert_eq!(after, Verdict::Allowed);
        assert_eq!(l.bans(), 1);
    }

    #[test]
    fn loopback_is_exempt_unless_told_otherwise() {
        let now = Instant::now();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut exempt = limiter(1, None);
        let mut strict = SourceLimiter::new(Limit::per_second(1), None, false, 16);

        assert!((0..100).all(|_| exempt.check(now, lo, 1).allowed()));
        assert!(strict.check(now, lo, 1).allowed());
        assert_eq!(strict.check(now, lo, 1), Verdict::Limited);
    }

    #[test]
    fn a_flood_of_addresses_keeps_the_table_bounded() {
        let now = Instant::now();
        let mut l = SourceLimiter::new(Limit::per_second(1), None, true, 8);

        for n in 0..=255u8 {
            let _ = l.check(now + Duration::from_millis(u64::from(n)), ip(n), 1);
        }

        assert_eq!(l.len(), 8);
    }

    #[test]
    fn the_idlest_source_is_forgotten_first_and_bans_outlast_it() {
        let now = Instant::now();
        let ban = Ban {
            after: 1,
            window: Duration::from_secs(10),
            duration: Duration::from_secs(60),
        };
        let mut l = SourceLimiter::new(Limit::per_second(1), Some(ban), true, 2);
        let _ = l.check(now, ip(1), 1);
        assert_eq!(l.check(now, ip(1), 1), Verdict::Banned { new: true });
        let _ = l.check(now + Duration::from_secs(1), ip(2), 1);

        // A third source: ip(1) is idler but banned, so ip(2) goes.
        let _ = l.check(now + Duration::from_secs(2), ip(3), 1);

        assert_eq!(
            l.check(now + Duration::from_secs(3), ip(1), 1),
            Verdict::Banned { new: false }
        );
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn quiet_sources_are_forgotten() {
        let now = Instant::now();
        let mut l = limiter(10, None);
        let _ = l.check(now, ip(1), 5);

        l.forget_quiet(now + Duration::from_millis(100));
        let still = l.len();
        l.forget_quiet(now + Duration::from_secs(1));

        assert_eq!((still, l.len()), (1, 0));
    }

    #[test]
    fn a_byte_budget_charges_by_size() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(Limit::per_second(1000), now);

        assert!(bucket.take(now, 600));
        assert!(!bucket.take(now, 600));
        assert!(bucket.take(now + Duration::from_millis(200), 600));
    }
}
