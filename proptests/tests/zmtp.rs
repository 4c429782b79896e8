//! Property tests for `grenache_core::peer::zmtp`: multipart messages cross a DEALER–ROUTER pair
//! unchanged however TCP cuts the stream, and no input makes a connection panic or
//! produce more than the bytes could encode.

use grenache_core::peer::zmtp::frame::{self, GREETING_LEN};
use grenache_core::peer::zmtp::{
    Connection, CurveClientConfig, CurveKeyPair, CurveServerConfig, Limits, Mechanism, Security,
    SocketType, ZmtpError, ZmtpEvent,
};
use proptest::collection::vec;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// 0..8 frames of 0..600 bytes; zero frames is what `send` must refuse.
fn message() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(vec(any::<u8>(), 0..600), 0..8)
}

/// Chunk sizes, used in a cycle to cut a byte stream into `handle_input` calls.
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1usize..4, 1usize..80, 1usize..2000], 1..16)
}

fn socket_type() -> impl Strategy<Value = SocketType> {
    proptest::sample::select(SocketType::ALL.to_vec())
}

/// Feeds `bytes` to `c` in chunks of the cycled `cuts`; stops at the first error.
fn feed(c: &mut Connection, bytes: &[u8], cuts: &[usize]) -> Result<(), ZmtpError> {
    let mut rest = bytes;
    for &cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(cut.min(rest.len()));
        c.handle_input(now)?;
        rest = later;
    }
    Ok(())
}

/// Moves bytes both ways until both sides are quiet.
fn pump(a: &mut Connection, b: &mut Connection, a_cuts: &[usize], b_cuts: &[usize]) {
    loop {
        let ab = a.take_output();
        let ba = b.take_output();
        if ab.is_empty() && ba.is_empty() {
            return;
        }
        feed(b, &ab, b_cuts).expect("b accepts a's bytes");
        feed(a, &ba, a_cuts).expect("a accepts b's bytes");
    }
}

/// Sends each message; returns what should arrive (the ones `send` accepted).
fn send_all(c: &mut Connection, messages: &[Vec<Vec<u8>>]) -> Vec<ZmtpEvent> {
    let mut sent = Vec::new();
    for m in messages {
        let frames: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
        match c.send(&frames) {
            Ok(()) => sent.push(ZmtpEvent::Message(m.clone())),
            Err(err) => assert_eq!(
                (m.is_empty(), err),
                (true, ZmtpError::EmptyMessage),
                "only an empty message is refused"
            ),
        }
    }
    sent
}

fn drain(c: &mut Connection) -> Vec<ZmtpEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// The bytes of a well-behaved peer of type `peer`: greeting, READY, messages.
fn peer_stream(peer: SocketType, messages: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut out = frame::greeting().to_vec();
    let mut ready = Vec::new();
    frame::encode_properties(&mut ready, &[(b"Socket-Type", peer.as_str().as_bytes())]);
    frame::encode_command(&mut out, b"READY", &ready);
    for m in messages {
        for (i, f) in m.iter().enumerate() {
            frame::encode_frame(&mut out, f, i + 1 < m.len());
        }
    }
    out
}

/// What a connection of type `socket` writes on its own: its whole greeting and READY
/// (the second part once a peer's greeting has begun).
fn hello_len(socket: SocketType) -> usize {
    let mut c = Connection::new(socket, b"id".to_vec(), Limits::default());
    let head = c.take_output().len();
    let _ = c.handle_input(&frame::greeting()[..frame::GREETING_HEAD_LEN]);
    head + c.output_len()
}

/// Feeds `input` cut by `cuts` to a fresh connection and checks what must hold whatever
/// the bytes: no panic, events bounded by the frames the bytes could hold, output bounded
/// by what we write on our own plus one ERROR plus PONGs (each shorter than its PING),
/// and a dead connection stays dead.
fn check_arbitrary(socket: SocketType, input: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let mut c = Connection::new(socket, b"id".to_vec(), Limits::default());
    let hello_len = hello_len(socket);
    let result = feed(&mut c, input, cuts);
    let events = drain(&mut c);
    // Every event needs at least one whole frame (2 bytes) after the 64-byte greeting;
    // Ready needs a READY command, which is longer.
    prop_assert!(
        events.len() <= input.len().saturating_sub(GREETING_LEN) / 2,
        "{} events from {} bytes",
        events.len(),
        input.len()
    );
    let ready_events = events
        .iter()
        .filter(|e| matches!(e, ZmtpEvent::Ready { .. }))
        .count();
    prop_assert!(ready_events <= 1);
    if let Some(first) = events.first() {
        prop_assert!(
            matches!(first, ZmtpEvent::Ready { .. }),
            "Ready comes first"
        );
    }
    prop_assert!(c.output_len() <= hello_len + 2 + 6 + 256 + input.len());
    if result.is_err() {
        prop_assert!(!c.is_ready());
        prop_assert_eq!(c.handle_input(b"\x00\x00"), Err(ZmtpError::Closed));
        prop_assert_eq!(c.send(&[b"x"]), Err(ZmtpError::Closed));
        prop_assert_eq!(c.poll_event(), None);
    }
    Ok(())
}

/// Messages sent before and after the handshake, and how TCP cuts each direction.
struct Exchange {
    early: Vec<Vec<Vec<u8>>>,
    to_router: Vec<Vec<Vec<u8>>>,
    to_dealer: Vec<Vec<Vec<u8>>>,
    dealer_cuts: Vec<usize>,
    router_cuts: Vec<usize>,
}

impl Exchange {
    /// Sends the messages both ways (some held before the handshake) and checks each side
    /// got exactly the other's, in order.
    fn check(self, dealer: &mut Connection, router: &mut Connection) -> Result<(), TestCaseError> {
        let (dc, rc) = (&self.dealer_cuts, &self.router_cuts);
        let mut expected_at_router = send_all(dealer, &self.early);
        pump(dealer, router, dc, rc);
        prop_assert!(dealer.is_ready() && router.is_ready());
        expected_at_router.extend(send_all(dealer, &self.to_router));
        let expected_at_dealer = send_all(router, &self.to_dealer);
        pump(dealer, router, dc, rc);

        let mut at_router = drain(router);
        prop_assert_eq!(
            at_router.remove(0),
            ZmtpEvent::Ready {
                peer: SocketType::Dealer,
                identity: b"d".to_vec()
            }
        );
        prop_assert_eq!(at_router, expected_at_router);
        let mut at_dealer = drain(dealer);
        prop_assert_eq!(
            at_dealer.remove(0),
            ZmtpEvent::Ready {
                peer: SocketType::Router,
                identity: vec![]
            }
        );
        prop_assert_eq!(at_dealer, expected_at_dealer);
        Ok(())
    }
}

proptest! {
    #[test]
    fn multipart_messages_cross_dealer_router_under_any_chunking(
        early in vec(message(), 0..4),
        to_router in vec(message(), 0..6),
        to_dealer in vec(message(), 0..6),
        dealer_cuts in cuts(),
        router_cuts in cuts(),
    ) {
        let mut dealer = Connection::new(SocketType::Dealer, b"d".to_vec(), Limits::default());
        let mut router = Connection::new(SocketType::Router, Vec::new(), Limits::default());
        // Some before the handshake (held, then flushed), the rest after.
        let exchange = Exchange { early, to_router, to_dealer, dealer_cuts, router_cuts };
        exchange.check(&mut dealer, &mut router)?;
    }

    #[test]
    fn curve_messages_cross_dealer_router_under_any_chunking(
        early in vec(message(), 0..4),
        to_router in vec(message(), 0..6),
        to_dealer in vec(message(), 0..6),
        dealer_cuts in cuts(),
        router_cuts in cuts(),
        seed in any::<u64>(),
    ) {
        let server = CurveKeyPair::from_secret([1; 32]);
        let client = CurveKeyPair::from_secret([2; 32]);
        let client = Security::CurveClient(Arc::new(CurveClientConfig::new(client, server.public())));
        let server = Security::CurveServer(Arc::new(CurveServerConfig::new(server)));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dealer =
            Connection::secure(SocketType::Dealer, b"d".to_vec(), Limits::default(), &client, &mut rng);
        let mut router =
            Connection::secure(SocketType::Router, Vec::new(), Limits::default(), &server, &mut rng);
        let exchange = Exchange { early, to_router, to_dealer, dealer_cuts, router_cuts };
        exchange.check(&mut dealer, &mut router)?;
    }

    #[test]
    fn a_mechanism_mismatch_is_typed_on_both_sides_under_any_chunking(
        null_cuts in cuts(),
        curve_cuts in cuts(),
        curve_is_server in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // The rest of a greeting waits for the peer's first 11 bytes: neither side may
        // stall, and each names both mechanisms however TCP cuts the bytes.
        let keys = CurveKeyPair::from_secret([1; 32]);
        let security = if curve_is_server {
            Security::CurveServer(Arc::new(CurveServerConfig::new(keys)))
        } else {
            let me = CurveKeyPair::from_secret([2; 32]);
            Security::CurveClient(Arc::new(CurveClientConfig::new(me, keys.public())))
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut null = Connection::new(SocketType::Dealer, Vec::new(), Limits::default());
        let mut curve =
            Connection::secure(SocketType::Router, Vec::new(), Limits::default(), &security, &mut rng);
        let (mut null_err, mut curve_err) = (None, None);
        for _ in 0..8 {
            let (to_curve, to_null) = (null.take_output(), curve.take_output());
            if to_curve.is_empty() && to_null.is_empty() {
                break;
            }
            if curve_err.is_none() {
                curve_err = feed(&mut curve, &to_curve, &curve_cuts).err();
            }
            if null_err.is_none() {
                null_err = feed(&mut null, &to_null, &null_cuts).err();
            }
        }
        prop_assert_eq!(
            null_err,
            Some(ZmtpError::MechanismMismatch { ours: Mechanism::Null, peer: Mechanism::Curve })
        );
        prop_assert_eq!(
            curve_err,
            Some(ZmtpError::MechanismMismatch { ours: Mechanism::Curve, peer: Mechanism::Null })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        socket in socket_type(),
        bytes in vec(any::<u8>(), 0..2048),
        cuts in cuts(),
    ) {
        check_arbitrary(socket, &bytes, &cuts)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_handshake_never_panic(
        socket in socket_type(),
        bytes in vec(any::<u8>(), 0..2048),
        cuts in cuts(),
    ) {
        // Random bytes rarely pass a greeting; start from a compatible peer's hello so
        // they reach the frame and command decoders.
        let peer = SocketType::ALL
            .into_iter()
            .find(|p| socket.compatible_with(*p))
            .expect("every type has a partner");
        let mut input = peer_stream(peer, &[]);
        input.extend_from_slice(&bytes);
        check_arbitrary(socket, &input, &cuts)?;
    }

    #[test]
    fn edited_streams_never_panic(
        socket in socket_type(),
        messages in vec(message(), 0..4),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
        cuts in cuts(),
    ) {
        // Near-valid streams reach the checks of later frames, which random bytes never do.
        let peer = SocketType::ALL
            .into_iter()
            .find(|p| socket.compatible_with(*p))
            .expect("every type has a partner");
        let mut input = peer_stream(peer, &messages);
        for (at, byte) in edits {
            let len = input.len();
            input[at % len] = byte;
        }
        check_arbitrary(socket, &input, &cuts)?;
    }
}
