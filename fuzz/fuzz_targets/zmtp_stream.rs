//! Arbitrary bytes as the TCP stream into a ROUTER and a PUB `zmtp::Connection`: no panic,
//! no more events than the bytes hold frames, output bounded, the second part of our
//! greeting held until the peer's signature and version came, and dead stays dead.
//!
//! Input: `[mode: u8][cut: u8][cut: u8][stream ...]`. The stream is fed in pieces cut
//! after `cut` bytes, then after the next `cut` bytes, then the rest, so frame headers and
//! bodies straddle `handle_input` calls. When `mode`'s low bit is set, the stream is
//! preceded by a valid greeting and READY from a compatible peer (DEALER to the ROUTER,
//! SUB to the PUB), so short inputs reach the frame and command decoders at once.
#![no_main]

use grenache_core::peer::zmtp::frame::{self, GREETING_HEAD_LEN, GREETING_LEN};
use grenache_core::peer::zmtp::{Connection, Limits, SocketType, ZmtpError, ZmtpEvent};
use libfuzzer_sys::fuzz_target;

/// A well-behaved peer's greeting and READY.
fn hello(peer: SocketType) -> Vec<u8> {
    let mut out = frame::greeting().to_vec();
    let mut ready = Vec::new();
    frame::encode_properties(&mut ready, &[(b"Socket-Type", peer.as_str().as_bytes())]);
    frame::encode_command(&mut out, b"READY", &ready);
    out
}

fn run(ours: SocketType, peer: SocketType, mode: u8, cuts: [usize; 2], stream: &[u8]) {
    // Small limits so the fuzzer reaches them with short inputs.
    let mut limits = Limits::default();
    limits.max_message_len = 512;
    limits.max_frames = 8;
    let mut c = Connection::new(ours, b"fuzz".to_vec(), limits);
    assert_eq!(c.take_output().len(), GREETING_HEAD_LEN);
    // The rest of our greeting and READY, as a twin sends them after a peer's first bytes.
    let mut twin = Connection::new(ours, b"fuzz".to_vec(), limits);
    let _ = twin.take_output();
    let _ = twin.handle_input(&frame::greeting()[..GREETING_HEAD_LEN]);
    let rest_len = twin.output_len();
    assert!(rest_len > GREETING_LEN - GREETING_HEAD_LEN);

    let mut input = if mode & 1 == 1 {
        hello(peer)
    } else {
        Vec::new()
    };
    input.extend_from_slice(stream);
    let first = cuts[0].min(input.len());
    let second = (first + cuts[1]).min(input.len());
    let pieces = [&input[..first], &input[first..second], &input[second..]];

    let mut events = 0usize;
    let mut ready = false;
    let mut output = 0usize;
    let mut failed = false;
    let mut fed = 0usize;
    for piece in pieces {
        let result = c.handle_input(piece);
        fed += piece.len();
        if fed < GREETING_HEAD_LEN {
            assert_eq!(c.output_len(), 0, "the rest of our greeting waits");
        }
        if failed {
            assert_eq!(result, Err(ZmtpError::Closed));
            continue;
        }
        failed = result.is_err();
        while let Some(event) = c.poll_event() {
            match event {
                ZmtpEvent::Ready { peer: p, .. } => {
                    assert!(!ready, "one Ready");
                    assert_eq!(events, 0, "Ready first");
                    assert!(ours.compatible_with(p));
                    ready = true;
                }
                ZmtpEvent::Message(frames) => {
                    assert!(!frames.is_empty() && frames.len() <= limits.max_frames);
                    assert!(frames.iter().map(Vec::len).sum::<usize>() <= limits.max_message_len);
                }
                ZmtpEvent::Subscribe(_) | ZmtpEvent::Cancel(_) => {
                    assert!(matches!(ours, SocketType::Pub | SocketType::XPub));
                }
            }
            events += 1;
        }
        output += c.take_output().len();
        if !failed {
            // A live connection still takes a message (held or written).
            let _ = c.send(&[b"ping"]);
            output += c.take_output().len();
        }
    }
    // Each event needs a frame of at least two bytes after the greeting.
    assert!(events <= input.len().saturating_sub(GREETING_LEN) / 2);
    // Besides the rest of our greeting and our own messages (three of 6 bytes at most), at most one ERROR, plus PONGs
    // that are never longer than the PINGs they answer.
    assert!(output <= rest_len + 3 * 6 + (2 + 6 + 256) + input.len());
    if failed {
        assert!(!c.is_ready());
        assert_eq!(c.send(&[b"x"]), Err(ZmtpError::Closed));
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, cut1, cut2, stream @ ..] = data else {
        return;
    };
    let cuts = [usize::from(*cut1), usize::from(*cut2)];
    run(SocketType::Router, SocketType::Dealer, *mode, cuts, stream);
    run(SocketType::Pub, SocketType::Sub, *mode, cuts, stream);
});
