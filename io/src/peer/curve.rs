//! CURVE and heartbeats on our ZeroMQ servers (RPC ROUTER and PUB): the server's
//! security, its handshake counters by failure kind (as [`TlsStats`](crate::tls::TlsStats)
//! counts TLS), and their heartbeat settings. The protocol is the core's
//! ([`grenache_core::peer::zmtp`]); this only keeps score and time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use grenache_core::peer::zmtp::{
    Connection, CurveError, CurveServerConfig, Mechanism, Security, ZmtpError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Why a ZeroMQ security handshake failed, as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CurveFailure {
    /// The client spoke the other mechanism (NULL to a CURVE server, or the reverse).
    Mismatch,
    /// The client's HELLO did not open: it uses another server key.
    WrongServerKey,
    /// The client's long-term key is not on the allow-list.
    NotAllowed,
    /// A malformed or forged handshake command, a replayed nonce, or a role clash.
    BadHandshake,
}

impl CurveFailure {
    /// Every reason, in the order [`CurveStats`] keeps them.
    pub const ALL: [CurveFailure; 4] = [
        CurveFailure::Mismatch,
        CurveFailure::WrongServerKey,
        CurveFailure::NotAllowed,
        CurveFailure::BadHandshake,
    ];

    /// The short code used in logs.
    pub fn code(self) -> &'static str {
        match self {
            CurveFailure::Mismatch => "ERR_ZMQ_MECHANISM_MISMATCH",
            CurveFailure::WrongServerKey => "ERR_CURVE_WRONG_SERVER_KEY",
            CurveFailure::NotAllowed => "ERR_CURVE_NOT_ALLOWED",
            CurveFailure::BadHandshake => "ERR_CURVE_BAD_HANDSHAKE",
        }
    }

    /// The kind of a handshake failure; `None` for failures that are not about security.
    pub fn of(err: &ZmtpError) -> Option<CurveFailure> {
        match err {
            ZmtpError::MechanismMismatch { .. } => Some(CurveFailure::Mismatch),
            ZmtpError::Curve(CurveError::BadBox("HELLO")) => Some(CurveFailure::WrongServerKey),
            ZmtpError::Curve(CurveError::ClientNotAllowed(_)) => Some(CurveFailure::NotAllowed),
            ZmtpError::Curve(_) => Some(CurveFailure::BadHandshake),
            _ => None,
        }
    }

    fn index(self) -> usize {
        CurveFailure::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(CurveFailure::ALL.len() - 1)
    }
}

impl std::fmt::Display for CurveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A ZeroMQ server's security handshakes, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CurveStats {
    /// CURVE handshakes that succeeded (and passed the allow-list).
    pub established: u64,
    failed: [u64; CurveFailure::ALL.len()],
}

impl CurveStats {
    /// Handshakes that failed for `reason`.
    pub fn failed(&self, reason: CurveFailure) -> u64 {
        self.failed.get(reason.index()).copied().unwrap_or(0)
    }

    /// Handshakes that failed, for any reason.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
}

/// What a ZeroMQ server's connections share: its security and counters.
#[derive(Debug, Default)]
pub(crate) struct ZmqSecurity {
    security: Security,
    established: AtomicU64,
    failed: [AtomicU64; CurveFailure::ALL.len()],
}

impl ZmqSecurity {
    pub(crate) fn new(curve: Option<&Arc<CurveServerConfig>>) -> Self {
        ZmqSecurity {
            security: Security::server(curve),
            ..ZmqSecurity::default()
        }
    }

    pub(crate) fn security(&self) -> &Security {
        &self.security
    }

    /// An RNG for one connection's CURVE keys and nonces, seeded from the OS: each
    /// connection's transient keys must be unpredictable.
    pub(crate) fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_os_rng()
    }

    /// Counts what one read did to the handshake: it ended (`was_ready` false, now
    /// ready), or it failed with `result`'s error.
    pub(crate) fn record(
        &self,
        zmtp: &Connection,
        was_ready: bool,
        result: Result<(), &ZmtpError>,
    ) {
        if let Err(err) = result {
            if let Some(kind) = CurveFailure::of(err) {
                tracing::info!(code = kind.code(), %err, "ZeroMQ security handshake refused");
                if let Some(counter) = self.failed.get(kind.index()) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else if !was_ready && zmtp.is_ready() && zmtp.mechanism() == Mechanism::Curve {
            self.established.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> CurveStats {
        let mut stats = CurveStats {
            established: self.established.load(Ordering::Relaxed),
            ..CurveStats::default()
        };
        for (out, counter) in stats.failed.iter_mut().zip(&self.failed) {
            *out = counter.load(Ordering::Relaxed);
        }
        stats
    }
}

/// Heartbeat settings of a ZeroMQ server (RPC ROUTER or PUB); the core's, under the name
/// the server configs have always used.
pub use grenache_core::peer::zmtp::HeartbeatConfig as ZmqHeartbeat;
