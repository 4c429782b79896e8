//! Write tokens for `announce_peer` and `put` (BEP 5, BEP 44).
//!
//! A node hands a token to whoever asks `get_peers` or `get`, and accepts a later
//! `announce_peer` or `put` only with a token it issued to the same IP address. This
//! stops a host from announcing someone else's address. The token is SHA-1 over the
//! querier's IP and a random secret; the secret rotates every [`ROTATE_EVERY`] and the
//! previous one stays valid, so a token lives between 5 and 10 minutes (as in
//! bittorrent-dht, docs/protocol.md §4.4). Tokens bind the IP only, not the
//! port, as BEP 5 says.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use sha1::{Digest, Sha1};

/// How often the secret changes; a token stays valid for one to two periods.
pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Length of a token in bytes (one SHA-1 digest).
pub const TOKEN_LEN: usize = 20;

const SECRET_LEN: usize = 20;

/// Issues and checks write tokens; owns the current and the previous secret.
pub struct Tokens {
    current: [u8; SECRET_LEN],
    previous: [u8; SECRET_LEN],
    next_rotation: Instant,
}

impl Tokens {
    /// Draws fresh secrets; the first rotation is due [`ROTATE_EVERY`] after `now`.
    ///
    /// The previous secret is random too, so no token is valid before it was issued.
    pub fn new<R: Rng + ?Sized>(rng: &mut R, now: Instant) -> Self {
        let mut current = [0u8; SECRET_LEN];
        let mut previous = [0u8; SECRET_LEN];
        rng.fill(&mut current);
        rng.fill(&mut previous);
        Tokens {
            current,
            previous,
            next_rotation: now + ROTATE_EVERY,
        }
    }

    /// Returns the token for `ip` under the current secret.
    pub fn issue(&self, ip: IpAddr) -> Vec<u8> {
        token_for(ip, &self.current).to_vec()
    }

    /// Reports whether `token` was issued to `ip` under the current or previous secret.
    ///
    /// The comparison takes the same time wherever the bytes differ, so a querier cannot
    /// learn a valid token byte by byte from response timing.
    pub fn check(&self, ip: IpAddr, token: &[u8]) -> bool {
        let current = ct_eq(&token_for(ip, &self.current), token);
        let previous = ct_eq(&token_for(ip, &self.previous), token);
        current | previous
    }

    /// Rotates the secret once it is due; calling earlier does nothing.
    ///
    /// After a gap of two periods or more (the caller was asleep), both secrets are
    /// replaced, so no token outlives its two-period bound.
    pub fn handle_timeout<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        if now < self.next_rotation {
            return;
        }
        if now >= self.next_rotation + ROTATE_EVERY {
            rng.fill(&mut self.current);
        }
        self.previous = self.current;
        rng.fill(&mut self.current);
        self.next_rotation = now + ROTATE_EVERY;
    }

    /// When [`Tokens::handle_timeout`] next has work to do.
    pub fn next_rotation(&self) -> Instant {
        self.next_rotation
    }
}

impl fmt::Debug for Tokens {
    /// Shows the schedule only: the secrets must not end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("next_rotation", &self.next_rotation)
            .finish_non_exhaustive()
    }
}

/// SHA-1 over the IP's bytes and the secret.
///
/// An IPv4-mapped IPv6 address counts as the IPv4 address, so a dual-stack socket gives
/// one host the same token whichever way its datagrams arrive.
fn token_for(ip: IpAddr, secret: &[u8; SECRET_LEN]) -> [u8; TOKEN_LEN] {
    let mut hasher = Sha1::new();
    match ip.to_canonical() {
        IpAddr::V4(v4) => hasher.update(v4.octets()),
        IpAddr::V6(v6) => hasher.update(v6.octets()),
    }
    hasher.update(secret);
    hasher.finalize().into()
}

/// Compares without an early exit on the first differing byte (the length is public).
fn ct_eq(expected: &[u8; TOKEN_LEN], given: &[u8]) -> bool {
    if given.len() != TOKEN_LEN {
        return false;
    }
    let diff = expected
        .iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn setup() -> (Tokens, ChaCha8Rng, Instant) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let now = epoch();
        (Tokens::new(&mut rng, now), rng, now)
    }

    /// Any instant will do as the origin: the tests only use offsets from it.
    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    #[test]
    fn issued_token_checks_for_same_ip_only() {
        let (tokens, _, _) = setup();

        let token = tokens.issue(A);

        assert_eq!(token.len(), TOKEN_LEN);
        assert!(tokens.check(A, &token));
        assert!(!tokens.check(B, &token));
    }

    #[test]
    fn wrong_length_or_altered_token_fails() {
        let (tokens, _, _) = setup();
        let mut token = tokens.issue(A);

        let short = &token[..TOKEN_LEN - 1];
        assert!(!tokens.check(A, short));
        assert!(!tokens.check(A, &[]));
        token[TOKEN_LEN - 1] ^= 1;

        assert!(!tokens.check(A, &token));
    }

    #[test]
    fn mapped_ipv6_gets_the_ipv4_token() {
        let (tokens, _, _) = setup();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());

        let token = tokens.issue(mapped);

        assert!(tokens.check(A, &token));
        assert!(!tokens.check(IpAddr::V6(Ipv6Addr::LOCALHOST), &token));
    }

    #[test]
    fn token_survives_one_rotation_but_not_two() {
        let (mut tokens, mut rng, now) = setup();
        let token = tokens.issue(A);

        let t1 = tokens.next_rotation();
        tokens.handle_timeout(t1, &mut rng);
        assert!(tokens.check(A, &token));
        assert_ne!(tokens.issue(A), token);

        let t2 = tokens.next_rotation();
        tokens.handle_timeout(t2, &mut rng);
        assert!(!tokens.check(A, &token));
        assert_eq!(t2, now + 2 * ROTATE_EVERY);
    }

    #[test]
    fn early_timeout_does_nothing() {
        let (mut tokens, mut rng, now) = setup();
        let token = tokens.issue(A);

        tokens.handle_timeout(now + ROTATE_EVERY - Duration::from_millis(1), &mut rng);

        assert_eq!(tokens.issue(A), token);
        assert_eq!(tokens.next_rotation(), now + ROTATE_EVERY);
    }

    #[test]
    fn long_gap_invalidates_both_secrets() {
        let (mut tokens, mut rng, now) = setup();
        let token = tokens.issue(A);

        tokens.handle_timeout(now + 2 * ROTATE_EVERY, &mut rng);

        assert!(!tokens.check(A, &token));
        assert_eq!(tokens.next_rotation(), now + 3 * ROTATE_EVERY);
    }

    #[test]
    fn debug_hides_secrets() {
        let (tokens, _, _) = setup();

        let shown = format!("{tokens:?}");

        assert!(!shown.contains("current"));
        assert!(shown.contains("next_rotation"));
    }
}
