//! The UDP load generator and the bare echo server it is compared with.
//!
//! Each load thread owns one socket and keeps a window of queries in flight: every reply
//! frees a slot that is refilled at once; when nothing arrives for a short while the
//! window is sent again (lost datagrams are simply forgotten). Replies are told apart
//! from queries the target sends us (a Grape pings new contacts) by the KRPC `y` key.
//! A reply's latency is the time since the query with its transaction id left.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::stats::Latencies;

/// What to send: the `i`-th datagram of thread `t`.
pub type Generator = dyn Fn(usize, u64) -> Vec<u8> + Send + Sync;

/// One UDP load run.
pub struct Spec<'a> {
    pub target: SocketAddr,
    pub threads: usize,
    pub window: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Stop after this many datagrams sent in total (a flood), if set; `measure` is then
    /// a hard time limit and the rate is over the flood's whole length.
    pub max_sends: Option<u64>,
    /// Count only datagrams that carry a KRPC response (`1:y1:r`); an echo server's
    /// replies are counted whatever they hold.
    pub krpc_replies_only: bool,
    pub generator: &'a Generator,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Replies per second over the measuring window.
    pub rps: f64,
    pub replies: u64,
    pub sent: u64,
    /// Round trips of the replies counted (those whose query's send time is known).
    pub latency: Latencies,
}

/// Runs `spec` on its own threads and returns what it measured.
pub fn run(spec: &Spec<'_>) -> Result<Outcome, String> {
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.measure;
    let per_thread_sends = spec
        .max_sends
        .map(|n| n.div_ceil(spec.threads.max(1) as u64));
    let parts: Vec<Result<Part, String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.threads.max(1))
            .map(|t| scope.spawn(move || worker(spec, t, measure_from, end, per_thread_sends)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("load thread panicked".into()))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut out = Outcome::default();
    let mut round_trips = Vec::new();
    for part in parts {
        let part = part?;
        out.replies += part.replies;
        out.sent += part.sent;
        round_trips.extend(part.round_trips_us);
    }
    out.latency = Latencies::from_micros(round_trips);
    let window = if spec.max_sends.is_some() {
        elapsed
    } else {
        spec.measure
    };
    out.rps = out.replies as f64 / window.as_secs_f64();
    Ok(out)
}

/// What one load thread counted.
struct Part {
    replies: u64,
    sent: u64,
    round_trips_us: Vec<u32>,
}

/// When each transaction id (two bytes) was last sent.
struct SendTimes(Vec<Option<Instant>>);

impl SendTimes {
    fn new() -> SendTimes {
        SendTimes(vec![None; 1 << 16])
    }

    fn sent(&mut self, datagram: &[u8], at: Instant) {
        if let Some(slot) = tid(datagram).and_then(|t| self.0.get_mut(usize::from(t))) {
            *slot = Some(at);
        }
    }

    /// The round trip of `reply`, once: a duplicate or a stray reply has none.
    fn answered(&mut self, reply: &[u8], at: Instant) -> Option<Duration> {
        let sent = self.0.get_mut(usize::from(tid(reply)?))?.take()?;
        Some(at.duration_since(sent))
    }
}

fn worker(
    spec: &Spec<'_>,
    t: usize,
    measure_from: Instant,
    end: Instant,
    max_sends: Option<u64>,
) -> Result<Part, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.connect(spec.target).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    let mut sent = 0u64;
    let mut replies = 0u64;
    let mut times = SendTimes::new();
    let mut round_trips_us = Vec::new();
    let send = |sent: &mut u64, times: &mut SendTimes| -> bool {
        if max_sends.is_some_and(|max| *sent >= max) {
            return false;
        }
        let datagram = (spec.generator)(t, *sent);
        times.sent(&datagram, Instant::now());
        // A full socket buffer is a lost datagram, like any other.
        let _ = socket.send(&datagram);
        *sent += 1;
        true
    };
    for _ in 0..spec.window {
        send(&mut sent, &mut times);
    }
    let mut quiet_since = Instant::now();
    loop {
        let now = Instant::now();
        let flood_done = max_sends.is_some_and(|max| sent >= max);
        // For a flood, `end` is only a hard limit.
        if now >= end {
            break;
        }
        if flood_done && now.duration_since(quiet_since) > Duration::from_millis(300) {
            break;
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                let datagram = buf.get(..n).unwrap_or_default();
                if spec.krpc_replies_only && !is_krpc_response(datagram) {
                    continue;
                }
                quiet_since = Instant::now();
                let round_trip = times.answered(datagram, quiet_since);
                if max_sends.is_some() || quiet_since >= measure_from {
                    replies += 1;
                    if let Some(rtt) = round_trip {
                        round_trips_us.push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
                    }
                }
                send(&mut sent, &mut times);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // The window drained through losses: refill it.
                for _ in 0..spec.window {
                    if !send(&mut sent, &mut times) {
                        break;
                    }
                }
            }
            // ICMP port unreachable and the like: the target is gone or not up yet.
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(Part {
        replies,
        sent,
        round_trips_us,
    })
}

/// The transaction id of a KRPC datagram (the string after its first `1:t`), when it is
/// one or two bytes long, as the load generator's are.
pub fn tid(datagram: &[u8]) -> Option<u16> {
    let at = datagram.windows(3).position(|w| w == b"1:t")?;
    match datagram.get(at + 3..)? {
        [b'1', b':', a, ..] => Some(u16::from(*a)),
        [b'2', b':', a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Whether a datagram is a KRPC response: its top-level dict has `y` = `r`.
pub fn is_krpc_response(datagram: &[u8]) -> bool {
    datagram.windows(6).any(|w| w == b"1:y1:r")
}

/// Echoes every datagram back to its sender, forever (the `udp-echo` subcommand).
pub fn serve_echo(port: u16) -> Result<(), String> {
    let socket = UdpSocket::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let _ = socket.send_to(buf.get(..n).unwrap_or_default(), from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_responses_from_queries() {
        assert!(is_krpc_response(
            b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re"
        ));
        assert!(!is_krpc_response(
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"
        ));
    }

    #[test]
    fn counts_echoes_of_a_local_echo_socket() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        echo.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Instant::now() + Duration::from_millis(600);
        let server = thread::spawn(move || {
            let mut buf = [0u8; 64];
            while Instant::now() < stop {
                if let Ok((n, from)) = echo.recv_from(&mut buf) {
                    let _ = echo.send_to(&buf[..n], from);
                }
            }
        });
        let generator = |_t: usize, i: u64| i.to_le_bytes().to_vec();
        let out = run(&Spec {
            target,
            threads: 1,
            window: 4,
            warmup: Duration::ZERO,
            measure: Duration::from_millis(300),
            max_sends: Some(100),
            krpc_replies_only: false,
            generator: &generator,
        })
        .unwrap();
        server.join().unwrap();
        assert_eq!(out.sent, 100);
        assert!(out.replies >= 90, "{out:?}");
        // Eight-byte payloads carry no `1:t`: no round trips to time.
        assert!(out.latency.p99().is_none(), "{out:?}");
    }

    #[test]
    fn reads_the_transaction_id_and_times_each_reply_once() {
        assert_eq!(
            tid(b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:\x01\x02e"),
            Some(0x0102)
        );
        assert_eq!(tid(b"d1:t1:ze"), Some(u16::from(b'z')));
        assert_eq!(tid(b"d1:t3:abce"), None, "a longer id is not ours");
        assert_eq!(tid(b"d1:y1:re"), None);
        let mut times = SendTimes::new();
        let start = Instant::now();
        let query = b"d1:t2:ABe";
        times.sent(query, start);
        let later = start + Duration::from_millis(3);
        assert_eq!(times.answered(query, later), Some(Duration::from_millis(3)));
        assert_eq!(
            times.answered(query, later),
            None,
            "a duplicate is not timed"
        );
    }
}
