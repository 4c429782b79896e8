//! Per-client limits on the Grape API: how many connections one client may hold open and
//! how many requests per second it may make.
//!
//! A Grape's clients are normally on its own host, so loopback is exempt by default. The
//! limits are for a Grape whose API other hosts reach: there one host must not take every
//! connection slot, nor keep the node busy for everyone else. Clients are counted as the
//! DHT port counts sources, by IPv4 address or IPv6 /64 (a host owns a whole /64), and
//! the rate is the DHT port's own [`SourceLimiter`], so both ports follow one rule.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::error::ApiError;
use crate::dht::defence::{DEFAULT_MAX_SOURCES, Limit, SourceLimiter, source_key};

/// Open API connections (HTTP and WebSocket together) one client may hold by default.
///
/// Above the 64 requests in flight our benchmarks drive from one client (an HTTP/1.1
/// client holds a connection per request in flight), and a quarter of one listener's 512
/// connection slots, so a single host can never fill them.
pub const DEFAULT_CONNECTIONS_PER_CLIENT: usize = 128;

/// API requests per second one client may make by default, with as many saved up.
///
/// A host's services re-announce every few seconds and look up on a cache miss: a host
/// with a hundred services sends a few hundred requests a second. Ten times that still
/// leaves a flooding host at most a fifth of the ten thousand DHT traversals a second one
/// Grape runs (docs/benchmarks.md).
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 2_000;

/// Settings of the API's per-client limits; `Default` has them on, loopback exempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiLimits {
    /// Open connections one client may hold (`None`: no cap); past it a new connection is
    /// closed before anything is read from it.
    pub connections_per_client: Option<usize>,
    /// Requests (HTTP requests and WebSocket messages) one client may make per second
    /// (`None`: no limit); past it they get 429 `ERR_GRAPE_RATE_LIMIT`.
    pub requests_per_second: Option<Limit>,
    /// Whether loopback clients skip both limits.
    pub exempt_loopback: bool,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            connections_per_client: Some(DEFAULT_CONNECTIONS_PER_CLIENT),
            requests_per_second: Some(Limit::per_second(DEFAULT_REQUESTS_PER_SECOND)),
            exempt_loopback: true,
        }
    }
}

impl ApiLimits {
    /// No limit at all: what the Node Grape does.
    pub fn off() -> Self {
        ApiLimits {
            connections_per_client: None,
            requests_per_second: None,
            exempt_loopback: true,
        }
    }

    /// Whether the limits apply to a client at `ip` at all. Adapters may skip asking for a
    /// connection slot ([`Grape::api_connected`](super::Grape::api_connected)) when not.
    pub fn apply_to(&self, ip: IpAddr) -> bool {
        let any = self.connections_per_client.is_some() || self.requests_per_second.is_some();
        any && !(self.exempt_loopback && ip.to_canonical().is_loopback())
    }
}

/// One open API connection, counted against its client's cap. Hand it back to
/// [`Grape::api_disconnected`](super::Grape::api_disconnected) when the connection ends;
/// it can be neither copied nor made outside the core, so a slot is given back once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "hand it back to Grape::api_disconnected when the connection ends"]
pub struct ApiConnection {
    /// The client key it is counted under; `None` when it is not counted.
    client: Option<IpAddr>,
}

/// The API's per-client counts.
#[derive(Debug)]
pub(crate) struct Clients {
    limits: ApiLimits,
    /// Open connections per client key; only counted clients have an entry.
    open: HashMap<IpAddr, usize>,
    rate: Option<SourceLimiter>,
    refused_connections: u64,
    limited_requests: u64,
}

impl Clients {
    pub(crate) fn new(limits: ApiLimits) -> Clients {
        let rate = limits
            .requests_per_second
            .map(|l| SourceLimiter::new(l, None, limits.exempt_loopback, DEFAULT_MAX_SOURCES));
        Clients {
            limits,
            open: HashMap::new(),
            rate,
            refused_connections: 0,
            limited_requests: 0,
        }
    }

    /// Takes a connection slot for a client at `ip`, or refuses it when the client already
    /// holds its cap.
    pub(crate) fn connect(&mut self, ip: IpAddr) -> Result<ApiConnection, ApiError> {
        let Some(max) = self.limits.connections_per_client else {
            return Ok(ApiConnection { client: None });
        };
        if !self.limits.apply_to(ip) {
            return Ok(ApiConnection { client: None });
        }
        let key = source_key(ip);
        let open = self.open.entry(key).or_default();
        if *open >= max {
            self.refused_connections += 1;
            tracing::debug!(client = %key, open = *open, "API connection refused: client at its cap");
            return Err(ApiError::ConnectionLimit);
        }
        *open += 1;
        Ok(ApiConnection { client: Some(key) })
    }

    /// Gives a connection's slot back.
    pub(crate) fn disconnect(&mut self, conn: ApiConnection) {
        let Some(key) = conn.client else { return };
        if let Some(open) = self.open.get_mut(&key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Charges one request to the client at `ip`.
    pub(crate) fn admit(&mut self, now: Instant, ip: IpAddr) -> Result<(), ApiError> {
        let Some(rate) = &mut self.rate else {
            return Ok(());
        };
        if rate.check(now, ip, 1).allowed() {
            return Ok(());
        }
        self.limited_requests += 1;
        Err(ApiError::RateLimited)
    }

    /// Forgets clients whose bucket is full again, so the table shrinks after a burst.
    pub(crate) fn forget_quiet(&mut self, now: Instant) {
        if let Some(rate) = &mut self.rate {
            rate.forget_quiet(now);
        }
    }

    /// Connections refused at the cap and requests refused over the rate, since start.
    pub(crate) fn refused(&self) -> (u64, u64) {
        (self.refused_connections, self.limited_requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn strict(connections: usize, rate: u32) -> Clients {
        Clients::new(ApiLimits {
            connections_per_client: Some(connections),
            requests_per_second: Some(Limit::per_second(rate)),
            exempt_loopback: false,
        })
    }

    #[test]
    fn a_client_holds_at_most_its_cap_of_connections_and_gets_them_back() {
        let mut c = strict(2, 100);
        let a = ip("203.0.113.1");

        let first = c.connect(a).expect("first");
        let _second = c.connect(a).expect("second");
        let third = c.connect(a);
        let other = c.connect(ip("203.0.113.2"));
        c.disconnect(first);
        let again = c.connect(a);

        assert_eq!(third, Err(ApiError::ConnectionLimit));
        assert!(other.is_ok(), "other clients have their own cap");
        assert!(again.is_ok(), "a closed connection frees its slot");
        assert_eq!(c.refused(), (1, 0));
    }

    #[test]
    fn an_ipv6_client_is_its_whole_64() {
        let mut c = strict(1, 100);

        let _held = c.connect(ip("2001:db8:1:2::1")).expect("first");

        assert_eq!(
            c.connect(ip("2001:db8:1:2::ffff")),
            Err(ApiError::ConnectionLimit)
        );
        assert!(c.connect(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn requests_over_the_rate_are_refused_until_it_refills() {
        let mut c = strict(10, 3);
        let a = ip("198.51.100.7");
        let t = Instant::now();

        let burst: Vec<bool> = (0..4).map(|_| c.admit(t, a).is_ok()).collect();
        let later = c.admit(t + Duration::from_millis(400), a);

        assert_eq!(burst, [true, true, true, false]);
        assert_eq!(later, Ok(()), "a third of a second refills one");
        assert_eq!(c.admit(t, ip("198.51.100.8")), Ok(()));
        assert_eq!(c.refused(), (0, 1));
    }

    #[test]
    fn loopback_is_exempt_by_default_and_off_means_off() {
        let lo = ip("127.0.0.1");
        let mut default = Clients::new(ApiLimits::default());
        let mut off = Clients::new(ApiLimits::off());
        let t = Instant::now();

        let held: Vec<ApiConnection> = (0..DEFAULT_CONNECTIONS_PER_CLIENT + 1)
            .map(|_| default.connect(lo).expect("loopback is exempt"))
            .collect();
        let remote = ip("203.0.113.9");

        assert_eq!(held.len(), DEFAULT_CONNECTIONS_PER_CLIENT + 1);
        assert!((0..10_000).all(|_| default.admit(t, lo).is_ok()));
        assert!((0..10_000).all(|_| off.admit(t, remote).is_ok()));
        assert!((0..1_000).all(|_| off.connect(remote).is_ok()));
        assert!(!ApiLimits::default().apply_to(lo));
        assert!(ApiLimits::default().apply_to(remote));
        assert!(!ApiLimits::off().apply_to(remote));
        assert_eq!(default.refused(), (0, 0));
    }
}
