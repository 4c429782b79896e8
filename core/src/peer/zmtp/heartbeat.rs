//! ZMTP heartbeats (RFC 37's PING and PONG), sans-IO: when to send a PING, and when a
//! peer that sends nothing is gone. A dead peer behind a NAT or a pulled cable sends no
//! FIN, so without this a connection (and every request on it) would wait forever.

use std::time::{Duration, Instant};

use crate::peer::zmtp::{Connection, ZmtpError};

/// The longest TTL we announce, in tenths of a second (65.5 s; see `ttl_deciseconds`).
const MAX_TTL: u16 = 655;

/// How often a connection PINGs a silent peer, and how long it waits before giving up.
/// Both ends of our ZeroMQ connections use it: servers to drop dead clients, clients to
/// notice a dead server (a request then fails instead of waiting out its timeout, and a
/// subscriber reconnects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// A PING goes out after this much silence from the peer. Default 10 s.
    pub interval: Duration,
    /// A peer silent this long (PINGs unanswered) is gone. Default 30 s.
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

impl HeartbeatConfig {
    /// The clock of a connection that opened at `now`.
    pub fn start(self, now: Instant) -> Heartbeat {
        Heartbeat::new(now, self.interval, self.timeout)
    }
}

/// The heartbeat clock of one connection. Feed it [`heard`](Self::heard) whenever bytes
/// arrive, wake at [`poll_timeout`](Self::poll_timeout), and call
/// [`handle_timeout`](Self::handle_timeout): `Ok(true)` means send a PING now
/// ([`Connection::ping`](crate::peer::zmtp::Connection::ping)), an error means close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    last_heard: Instant,
    last_ping: Instant,
}

impl Heartbeat {
    /// A clock that PINGs after `interval` of silence from the peer (and every `interval`
    /// while it stays silent) and gives up after `timeout` of silence. A `timeout` below
    /// `interval` is raised to it.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Heartbeat {
            interval,
            timeout: timeout.max(interval),
            last_heard: now,
            last_ping: now,
        }
    }

    /// The peer sent something (a PONG, a message, anything): it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// The TTL our PINGs announce (RFC 37, in tenths of a second): the peer may close
    /// the connection when it hears nothing from us for this long.
    pub fn ttl_deciseconds(&self) -> u16 {
        // libzmq 4.3 turns the TTL into milliseconds in 16 bits: past 655 it wraps.
        u16::try_from(self.timeout.as_millis() / 100).map_or(MAX_TTL, |t| t.min(MAX_TTL))
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_ping().min(self.deadline())
    }

    /// `Ok(true)`: send a PING now. `Err(HeartbeatTimeout)`: the peer is gone.
    ///
    /// # Errors
    /// [`ZmtpError::HeartbeatTimeout`] once the peer has been silent for `timeout`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<bool, ZmtpError> {
        if now >= self.deadline() {
            return Err(ZmtpError::HeartbeatTimeout(self.timeout));
        }
        if now >= self.next_ping() {
            self.last_ping = now;
            return Ok(true);
        }
        Ok(false)
    }

    /// One tick on `zmtp`: queues a PING when one is due (take the connection's output
    /// afterwards).
    ///
    /// # Errors
    /// [`ZmtpError::HeartbeatTimeout`] when the peer has been silent too long (close the
    /// connection), or the connection's own error if it is dead.
    pub fn tick(&mut self, zmtp: &mut Connection, now: Instant) -> Result<(), ZmtpError> {
        if self.handle_timeout(now)? {
            zmtp.ping(self.ttl_deciseconds())?;
        }
        Ok(())
    }

    fn next_ping(&self) -> Instant {
        self.last_heard.max(self.last_ping) + self.interval
    }

    fn deadline(&self) -> Instant {
        self.last_heard + self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_when_idle_and_gives_up_after_the_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut hb = Heartbeat::new(t0, s(10), s(30));

        assert_eq!(hb.poll_timeout(), t0 + s(10));
        assert_eq!(hb.handle_timeout(t0 + s(5)), Ok(false));
        assert_eq!(hb.handle_timeout(t0 + s(10)), Ok(true));
        assert_eq!(hb.poll_timeout(), t0 + s(20), "the next PING, while silent");
        hb.heard(t0 + s(12));
        assert_eq!(hb.poll_timeout(), t0 + s(22));
        assert_eq!(hb.handle_timeout(t0 + s(22)), Ok(true));
        assert_eq!(hb.handle_timeout(t0 + s(32)), Ok(true));
        assert_eq!(hb.poll_timeout(), t0 + s(42));
        assert_eq!(
            hb.handle_timeout(t0 + s(42)),
            Err(ZmtpError::HeartbeatTimeout(s(30)))
        );
        assert_eq!(hb.ttl_deciseconds(), 300);
    }

    #[test]
    fn a_timeout_below_the_interval_is_raised() {
        let t0 = Instant::now();
        let hb = Heartbeat::new(t0, Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(hb.poll_timeout(), t0 + Duration::from_secs(10));
        assert_eq!(hb.ttl_deciseconds(), 100);
        let long = Heartbeat::new(t0, Duration::from_secs(10), Duration::from_secs(600));
        assert_eq!(
            long.ttl_deciseconds(),
            655,
            "libzmq would overflow past 655"
        );
    }
}
