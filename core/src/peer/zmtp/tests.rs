//! Connection tests: two connections back to back, hand-built peers, and the exact bytes
//! libzmq 4.3 sends.

use super::frame::{
    self, GREETING_HEAD_LEN, GREETING_LEN, encode_command, encode_frame, encode_properties,
    greeting,
};
use super::*;

fn conn(socket: SocketType) -> Connection {
    Connection::new(socket, Vec::new(), Limits::default())
}

/// A connection that has read the first part of a peer's greeting, its own output drained:
/// what it writes next answers what follows.
fn greeted(socket: SocketType) -> Connection {
    let mut c = conn(socket);
    let _ = opening(&mut c);
    c
}

/// Everything a connection of type `socket` writes before it hears more than a peer's
/// greeting: the whole greeting and READY.
fn our_hello(socket: SocketType) -> Vec<u8> {
    opening(&mut conn(socket))
}

/// All a connection writes up to its first command, as if a peer's greeting had begun
/// (the connection has read those first bytes; feed it the rest of a greeting).
fn opening(c: &mut Connection) -> Vec<u8> {
    let mut out = c.take_output();
    c.handle_input(&greeting()[..GREETING_HEAD_LEN])
        .expect("a greeting's first part");
    out.extend(c.take_output());
    out
}

fn events(c: &mut Connection) -> Vec<ZmtpEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn msg(frames: &[&[u8]]) -> ZmtpEvent {
    ZmtpEvent::Message(frames.iter().map(|f| f.to_vec()).collect())
}

/// Moves bytes both ways until neither side has anything to write, `chunk` bytes per
/// `handle_input` call. Panics on an error.
fn pump(a: &mut Connection, b: &mut Connection, chunk: usize) {
    loop {
        let ab = a.take_output();
        let ba = b.take_output();
        if ab.is_empty() && ba.is_empty() {
            return;
        }
        for piece in ab.chunks(chunk) {
            b.handle_input(piece).expect("b accepts a's bytes");
        }
        for piece in ba.chunks(chunk) {
            a.handle_input(piece).expect("a accepts b's bytes");
        }
    }
}

/// The bytes of a peer of type `socket`: greeting and READY with these properties.
fn peer_hello(properties: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = greeting().to_vec();
    let mut data = Vec::new();
    encode_properties(&mut data, properties);
    encode_command(&mut out, b"READY", &data);
    out
}

fn hello(socket: SocketType) -> Vec<u8> {
    peer_hello(&[(b"Socket-Type", socket.as_str().as_bytes())])
}

/// A connection of type `ours` that completed the handshake with a hand-built peer.
fn ready(ours: SocketType, peer: SocketType) -> Connection {
    let mut c = conn(ours);
    c.handle_input(&hello(peer)).expect("handshake");
    assert!(c.is_ready());
    let _ = c.take_output();
    assert_eq!(
        c.poll_event(),
        Some(ZmtpEvent::Ready {
            peer,
            identity: Vec::new()
        })
    );
    c
}

fn command(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(&mut out, name, data);
    out
}

fn exchange(chunk: usize) {
    let mut dealer = Connection::new(SocketType::Dealer, b"d-1".to_vec(), Limits::default());
    let mut router = conn(SocketType::Router);
    pump(&mut dealer, &mut router, chunk);

    assert!(dealer.is_ready() && router.is_ready());
    assert_eq!(
        events(&mut dealer),
        [ZmtpEvent::Ready {
            peer: SocketType::Router,
            identity: vec![]
        }]
    );
    assert_eq!(
        events(&mut router),
        [ZmtpEvent::Ready {
            peer: SocketType::Dealer,
            identity: b"d-1".to_vec()
        }]
    );
    assert_eq!(router.peer_identity(), Some(&b"d-1"[..]));
    assert_eq!(dealer.peer_identity(), Some(&b""[..]));
    assert_eq!(router.peer_socket_type(), Some(SocketType::Dealer));

    let big = vec![0xAB; 70_000];
    dealer.send(&[b"", b"request", &big]).expect("queued");
    dealer.send(&[b"x"]).expect("queued");
    router.send(&[b"reply", b"", b""]).expect("queued");
    pump(&mut dealer, &mut router, chunk);

    assert_eq!(
        events(&mut router),
        [msg(&[b"", b"request", &big]), msg(&[b"x"])]
    );
    assert_eq!(events(&mut dealer), [msg(&[b"reply", b"", b""])]);
}

#[test]
fn dealer_and_router_exchange_messages_all_at_once() {
    exchange(usize::MAX);
}

#[test]
fn dealer_and_router_exchange_messages_one_byte_at_a_time() {
    exchange(1);
}

#[test]
fn dealer_and_router_exchange_messages_in_odd_chunks() {
    exchange(7);
}

#[test]
fn greeting_goes_out_in_two_parts_then_ready() {
    let mut c = Connection::new(SocketType::Dealer, b"abc".to_vec(), Limits::default());
    assert!(!c.is_ready());
    assert_eq!(c.peer_socket_type(), None);
    assert_eq!(c.peer_identity(), None);
    assert_eq!(c.socket_type(), SocketType::Dealer);

    // Signature and major version first (RFC 23), as libzmq sends them.
    assert_eq!(c.output_len(), GREETING_HEAD_LEN);
    assert_eq!(c.take_output(), greeting()[..GREETING_HEAD_LEN]);
    assert_eq!(c.output_len(), 0);
    // The peer's signature alone is not enough; its major version is.
    c.handle_input(&greeting()[..GREETING_HEAD_LEN - 1])
        .expect("a signature");
    assert!(c.take_output().is_empty());
    c.handle_input(&greeting()[GREETING_HEAD_LEN - 1..GREETING_HEAD_LEN])
        .expect("a major version");

    let mut expected = greeting()[GREETING_HEAD_LEN..].to_vec();
    expected.extend_from_slice(
        b"\x04\x2c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER\x08Identity\x00\x00\x00\x03abc",
    );
    assert_eq!(c.output_len(), expected.len());
    assert_eq!(c.take_output(), expected);
    assert_eq!(c.output_len(), 0);
    // The rest of the peer's greeting adds nothing to write.
    c.handle_input(&greeting()[GREETING_HEAD_LEN..])
        .expect("the rest of a greeting");
    assert!(c.take_output().is_empty());
}

#[test]
fn a_bad_signature_or_version_holds_back_the_rest_of_our_greeting() {
    let mut bad_signature = greeting();
    bad_signature[9] = 0x7E;
    let mut old = greeting();
    old[10] = 2;
    for (bytes, err) in [
        (bad_signature, ZmtpError::BadGreeting),
        (old, ZmtpError::UnsupportedVersion { major: 2 }),
    ] {
        let mut c = conn(SocketType::Dealer);
        let _ = c.take_output();
        assert_eq!(c.handle_input(&bytes), Err(err));
        assert!(c.take_output().is_empty(), "nothing more for a stranger");
    }
}

#[test]
fn a_mismatched_mechanism_still_gets_ours_first() {
    // The peer learns our mechanism even though we close: libzmq reports the mismatch
    // on its side too rather than a dropped connection.
    let mut curve = greeting();
    curve[12..17].copy_from_slice(b"CURVE");
    let mut c = conn(SocketType::Dealer);
    let mut out = c.take_output();
    assert_eq!(
        c.handle_input(&curve),
        Err(ZmtpError::MechanismMismatch {
            ours: Mechanism::Null,
            peer: Mechanism::Curve
        })
    );
    out.extend(c.take_output());
    assert_eq!(out, our_hello(SocketType::Dealer));
}

#[test]
fn incompatible_types_fail_both_sides_with_an_error_command() {
    let mut dealer = greeted(SocketType::Dealer);
    let mut publisher = greeted(SocketType::Pub);
    let to_pub = our_hello(SocketType::Dealer)[GREETING_HEAD_LEN..].to_vec();
    let to_dealer = our_hello(SocketType::Pub)[GREETING_HEAD_LEN..].to_vec();

    assert_eq!(
        dealer.handle_input(&to_dealer),
        Err(ZmtpError::IncompatibleSocket {
            ours: SocketType::Dealer,
            peer: SocketType::Pub
        })
    );
    assert_eq!(
        publisher.handle_input(&to_pub),
        Err(ZmtpError::IncompatibleSocket {
            ours: SocketType::Pub,
            peer: SocketType::Dealer
        })
    );
    for side in [&mut dealer, &mut publisher] {
        assert!(!side.is_ready());
        assert!(events(side).is_empty());
        let out = side.take_output();
        let (name, data) = frame::split_command(&out[2..]).expect("a command");
        assert_eq!(name, b"ERROR");
        assert!(String::from_utf8_lossy(&data[1..]).contains("cannot talk"));
        assert_eq!(usize::from(out[1]), out.len() - 2, "one command frame");
    }
}

#[test]
fn a_peer_error_command_is_fatal_and_reported() {
    let mut c = conn(SocketType::Router);
    let mut input = greeting().to_vec();
    input.extend(command(b"ERROR", b"\x0bAccess deny"));
    assert_eq!(
        c.handle_input(&input),
        Err(ZmtpError::PeerError("Access deny".into()))
    );
    // We do not answer an ERROR with an ERROR.
    assert_eq!(c.take_output(), our_hello(SocketType::Router));
    assert_eq!(c.handle_input(b"x"), Err(ZmtpError::Closed));

    // After the handshake too.
    let mut c = ready(SocketType::Dealer, SocketType::Router);
    assert_eq!(
        c.handle_input(&command(b"ERROR", b"\x00")),
        Err(ZmtpError::PeerError(String::new()))
    );
    assert!(c.take_output().is_empty());
}

#[test]
fn refusing_a_ready_answers_with_error() {
    for (properties, err) in [
        (
            &[(&b"Identity"[..], &b"x"[..])][..],
            ZmtpError::BadCommand("READY without Socket-Type"),
        ),
        (
            &[(&b"Socket-Type"[..], &b"STREAM"[..])][..],
            ZmtpError::UnknownSocketType("STREAM".into()),
        ),
        (
            &[
                (&b"Socket-Type"[..], &b"DEALER"[..]),
                (&b"Identity"[..], &[1; 256][..]),
            ][..],
            ZmtpError::BadCommand("Identity over 255 bytes"),
        ),
    ] {
        let mut c = greeted(SocketType::Router);
        let input = peer_hello(properties);
        assert_eq!(c.handle_input(&input[GREETING_HEAD_LEN..]), Err(err));
        let out = c.take_output();
        assert_eq!(
            frame::split_command(&out[2..]).expect("a command").0,
            b"ERROR"
        );
    }
}

#[test]
fn property_names_are_case_insensitive() {
    let mut c = conn(SocketType::Router);
    c.handle_input(&peer_hello(&[
        (b"X-Other", b"1"),
        (b"socket-type", b"DEALER"),
        (b"IDENTITY", b"who"),
    ]))
    .expect("input accepted");
    assert_eq!(
        c.poll_event(),
        Some(ZmtpEvent::Ready {
            peer: SocketType::Dealer,
            identity: b"who".to_vec()
        })
    );
}

#[test]
fn an_oversized_long_frame_fails_at_its_header() {
    // 2^62 bytes announced: refused from the 9 header bytes alone, with no allocation
    // (a Vec of that capacity would abort the test).
    let mut c = ready(SocketType::Router, SocketType::Dealer);
    let mut header = vec![0x02];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    for &b in &header[..8] {
        c.handle_input(&[b]).expect("input accepted");
    }
    assert_eq!(
        c.handle_input(&header[8..]),
        Err(ZmtpError::MessageTooLarge {
            len: 1 << 62,
            max: 1 << 20
        })
    );

    // The same as a command during the handshake, body bytes following in the same read.
    let mut c = conn(SocketType::Router);
    let _ = c.take_output();
    let mut input = greeting().to_vec();
    input.push(0x06);
    input.extend_from_slice(&u64::MAX.to_be_bytes());
    input.extend_from_slice(&[0; 100]);
    assert!(matches!(
        c.handle_input(&input),
        Err(ZmtpError::MessageTooLarge {
            len: usize::MAX,
            ..
        })
    ));
}

#[test]
fn message_limits_apply_across_frames() {
    let limits = Limits {
        max_message_len: 10,
        max_frames: 3,
        ..Limits::default()
    };
    let mut c = Connection::new(SocketType::Router, Vec::new(), limits);
    c.handle_input(&hello(SocketType::Dealer))
        .expect("input accepted");
    let mut input = Vec::new();
    encode_frame(&mut input, b"123456", true);
    encode_frame(&mut input, b"12345", false);
    assert_eq!(
        c.handle_input(&input),
        Err(ZmtpError::MessageTooLarge { len: 11, max: 10 })
    );

    let mut c = Connection::new(SocketType::Router, Vec::new(), limits);
    c.handle_input(&hello(SocketType::Dealer))
        .expect("input accepted");
    let mut input = Vec::new();
    for _ in 0..3 {
        encode_frame(&mut input, b"", true);
    }
    c.handle_input(&input).expect("input accepted");
    assert_eq!(
        c.handle_input(&[0, 0]),
        Err(ZmtpError::TooManyFrames { max: 3 })
    );

    // Exactly at the limits is fine.
    let mut c = Connection::new(SocketType::Router, Vec::new(), limits);
    c.handle_input(&hello(SocketType::Dealer))
        .expect("input accepted");
    let mut input = Vec::new();
    encode_frame(&mut input, b"1234", true);
    encode_frame(&mut input, b"", true);
    encode_frame(&mut input, b"123456", false);
    c.handle_input(&input).expect("input accepted");
    let _ = c.poll_event();
    assert_eq!(c.poll_event(), Some(msg(&[b"1234", b"", b"123456"])));
}

#[test]
fn send_limits_refuse_without_queueing() {
    let limits = Limits {
        max_message_len: 4,
        max_frames: 2,
        ..Limits::default()
    };
    let mut c = Connection::new(SocketType::Dealer, Vec::new(), limits);
    c.handle_input(&hello(SocketType::Router))
        .expect("input accepted");
    let _ = c.take_output();
    assert_eq!(
        c.send(&[b"12", b"345"]),
        Err(ZmtpError::MessageTooLarge { len: 5, max: 4 })
    );
    assert_eq!(
        c.send(&[b"", b"", b""]),
        Err(ZmtpError::TooManyFrames { max: 2 })
    );
    assert_eq!(c.send(&[]), Err(ZmtpError::EmptyMessage));
    assert_eq!(c.output_len(), 0);
    // Refusals are not fatal.
    c.send(&[b"12", b"34"]).expect("queued");
    assert_eq!(c.take_output(), b"\x01\x0212\x00\x0234");
}

#[test]
fn reserved_flag_bits_are_fatal() {
    for flags in [0x08, 0x10, 0x20, 0x40, 0x80, 0xF9] {
        let mut c = ready(SocketType::Router, SocketType::Dealer);
        assert_eq!(
            c.handle_input(&[flags, 0]),
            Err(ZmtpError::BadFrame("reserved flag bits set"))
        );
        // Once ready, no ERROR command: the handshake is over.
        assert!(c.take_output().is_empty());
    }
}

#[test]
fn a_command_with_more_is_fatal() {
    let mut c = ready(SocketType::Router, SocketType::Dealer);
    assert_eq!(
        c.handle_input(b"\x05\x05\x04PING"),
        Err(ZmtpError::BadFrame("command with the MORE flag"))
    );
}

#[test]
fn handshake_order_is_enforced() {
    let before_ready = |extra: &[u8]| {
        let mut c = greeted(SocketType::Router);
        let mut input = greeting()[GREETING_HEAD_LEN..].to_vec();
        input.extend_from_slice(extra);
        let result = c.handle_input(&input);
        let out = c.take_output();
        assert_eq!(
            frame::split_command(&out[2..]).expect("a command").0,
            b"ERROR"
        );
        result
    };
    assert_eq!(
        before_ready(b"\x00\x01x"),
        Err(ZmtpError::BadFrame(
            "message frame before the handshake ended"
        ))
    );
    assert!(matches!(
        before_ready(&command(b"PING", b"\x00\x00")),
        Err(ZmtpError::BadCommand(_))
    ));

    let mut c = ready(SocketType::Router, SocketType::Dealer);
    let mut data = Vec::new();
    encode_properties(&mut data, &[(b"Socket-Type", b"DEALER")]);
    assert_eq!(
        c.handle_input(&command(b"READY", &data)),
        Err(ZmtpError::BadCommand("second READY"))
    );
}

#[test]
fn bad_greetings_are_fatal_without_an_error_command() {
    let mut c = conn(SocketType::Dealer);
    let _ = c.take_output();
    assert_eq!(
        c.handle_input(b"GET / HTTP/1.1\r\n"),
        Err(ZmtpError::BadGreeting)
    );
    assert!(c.take_output().is_empty());

    // libzmq 3.x (ZMTP 2.0) sends 12 bytes and waits: refuse at the version byte.
    let mut c = conn(SocketType::Dealer);
    assert_eq!(
        c.handle_input(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 1]),
        Err(ZmtpError::UnsupportedVersion { major: 1 })
    );

    let mut c = conn(SocketType::Dealer);
    let mut g = greeting();
    g[12..17].copy_from_slice(b"PLAIN");
    assert_eq!(
        c.handle_input(&g),
        Err(ZmtpError::UnsupportedMechanism("PLAIN".into()))
    );
}

#[test]
fn ping_is_answered_with_pong() {
    let mut c = ready(SocketType::Dealer, SocketType::Router);
    c.handle_input(&command(b"PING", b"\x00\x64hb-1"))
        .expect("input accepted");
    assert_eq!(c.take_output(), command(b"PONG", b"hb-1"));
    // A context over 16 bytes is cut, as libzmq does.
    c.handle_input(&command(b"PING", &[7; 30]))
        .expect("input accepted");
    assert_eq!(c.take_output(), command(b"PONG", &[7; 16]));
    // PONG and unknown commands are ignored.
    c.handle_input(&command(b"PONG", b"x"))
        .expect("input accepted");
    c.handle_input(&command(b"JOIN", b"group"))
        .expect("input accepted");
    assert!(c.take_output().is_empty());
    assert!(events(&mut c).is_empty());
    assert!(c.is_ready());
    assert!(matches!(
        c.handle_input(&command(b"PING", b"\x00")),
        Err(ZmtpError::BadCommand(_))
    ));
}

#[test]
fn a_command_between_frames_keeps_the_message_whole() {
    let mut c = ready(SocketType::Dealer, SocketType::Router);
    let mut input = Vec::new();
    encode_frame(&mut input, b"a", true);
    input.extend(command(b"PING", b"\x00\x01"));
    encode_frame(&mut input, b"b", false);
    c.handle_input(&input).expect("input accepted");
    assert_eq!(events(&mut c), [msg(&[b"a", b"b"])]);
    assert_eq!(c.take_output(), command(b"PONG", b""));
}

#[test]
fn sub_subscribe_reaches_pub() {
    let mut publisher = conn(SocketType::Pub);
    let mut sub = conn(SocketType::Sub);
    sub.subscribe(b"").expect("queued"); // before the handshake: held
    pump(&mut publisher, &mut sub, 3);
    assert_eq!(
        events(&mut publisher),
        [
            ZmtpEvent::Ready {
                peer: SocketType::Sub,
                identity: vec![]
            },
            ZmtpEvent::Subscribe(vec![])
        ]
    );
    sub.subscribe(b"topic").expect("queued");
    sub.unsubscribe(b"topic").expect("queued");
    publisher.send(&[b"topic", b"data"]).expect("queued");
    pump(&mut publisher, &mut sub, 3);
    assert_eq!(
        events(&mut publisher),
        [
            ZmtpEvent::Subscribe(b"topic".to_vec()),
            ZmtpEvent::Cancel(b"topic".to_vec())
        ]
    );
    let _ = sub.poll_event(); // Ready
    assert_eq!(events(&mut sub), [msg(&[b"topic", b"data"])]);
}

#[test]
fn subscribe_is_for_subscribers_only() {
    let mut c = conn(SocketType::Dealer);
    assert_eq!(
        c.subscribe(b""),
        Err(ZmtpError::NotSubscriber(SocketType::Dealer))
    );
    let mut c = conn(SocketType::XSub);
    c.subscribe(b"a").expect("queued");
}

#[test]
fn zmtp_3_1_subscribe_and_cancel_commands_reach_pub() {
    let mut c = ready(SocketType::Pub, SocketType::Sub);
    c.handle_input(&command(b"SUBSCRIBE", b""))
        .expect("input accepted");
    c.handle_input(&command(b"SUBSCRIBE", b"abc"))
        .expect("input accepted");
    c.handle_input(&command(b"CANCEL", b"abc"))
        .expect("input accepted");
    assert_eq!(
        events(&mut c),
        [
            ZmtpEvent::Subscribe(vec![]),
            ZmtpEvent::Subscribe(b"abc".to_vec()),
            ZmtpEvent::Cancel(b"abc".to_vec())
        ]
    );
    // On a non-publisher they mean nothing.
    let mut c = ready(SocketType::Dealer, SocketType::Router);
    c.handle_input(&command(b"SUBSCRIBE", b"abc"))
        .expect("input accepted");
    assert!(events(&mut c).is_empty());
}

#[test]
fn pub_drops_other_messages_and_xpub_keeps_them() {
    let mut input = Vec::new();
    encode_frame(&mut input, b"\x02hello", false); // not a subscription
    encode_frame(&mut input, b"", false); // empty
    encode_frame(&mut input, b"\x01a", true); // two frames: not a subscription
    encode_frame(&mut input, b"b", false);
    encode_frame(&mut input, b"\x00x", false); // cancel

    let mut c = ready(SocketType::Pub, SocketType::Sub);
    c.handle_input(&input).expect("input accepted");
    assert_eq!(events(&mut c), [ZmtpEvent::Cancel(b"x".to_vec())]);

    let mut c = ready(SocketType::XPub, SocketType::XSub);
    c.handle_input(&input).expect("input accepted");
    assert_eq!(
        events(&mut c),
        [
            msg(&[b"\x02hello"]),
            msg(&[b""]),
            msg(&[b"\x01a", b"b"]),
            ZmtpEvent::Cancel(b"x".to_vec())
        ]
    );

    // A SUB hands subscription-looking bytes up as messages: only publishers read them.
    let mut c = ready(SocketType::Sub, SocketType::Pub);
    c.handle_input(&input).expect("input accepted");
    assert_eq!(events(&mut c).len(), 4);
}

#[test]
fn messages_sent_before_ready_are_held_then_flushed_after_ready() {
    let mut dealer = conn(SocketType::Dealer);
    dealer.send(&[b"first"]).expect("queued");
    dealer.send(&[b"second", b"part"]).expect("queued");
    assert_eq!(dealer.output_len(), GREETING_HEAD_LEN, "held, not written");
    let mut out = dealer.take_output();

    dealer
        .handle_input(&hello(SocketType::Router))
        .expect("input accepted");
    out.extend(dealer.take_output());
    let mut expected = our_hello(SocketType::Dealer);
    encode_frame(&mut expected, b"first", false);
    encode_frame(&mut expected, b"second", true);
    encode_frame(&mut expected, b"part", false);
    assert_eq!(out, expected, "right after our READY, in order");

    dealer.send(&[b"third"]).expect("queued");
    assert_eq!(dealer.take_output(), b"\x00\x05third");
}

#[test]
fn the_pre_ready_queue_is_bounded() {
    let limits = Limits {
        max_queued: 2,
        ..Limits::default()
    };
    let mut c = Connection::new(SocketType::Dealer, Vec::new(), limits);
    c.send(&[b"1"]).expect("queued");
    c.send(&[b"2"]).expect("queued");
    assert_eq!(c.send(&[b"3"]), Err(ZmtpError::QueueFull));
    c.handle_input(&hello(SocketType::Router))
        .expect("input accepted");
    // Unbounded by max_queued once ready: back-pressure is output_len's business.
    for _ in 0..5 {
        c.send(&[b"n"]).expect("queued");
    }
}

#[test]
fn after_a_fatal_error_everything_is_closed() {
    let mut c = ready(SocketType::Router, SocketType::Dealer);
    let mut input = Vec::new();
    encode_frame(&mut input, b"before", false);
    input.push(0xFF);
    encode_frame(&mut input, b"after", false);
    assert!(matches!(
        c.handle_input(&input),
        Err(ZmtpError::BadFrame(_))
    ));
    // What was decoded before the bad byte is still delivered; nothing after it.
    assert_eq!(events(&mut c), [msg(&[b"before"])]);
    assert!(!c.is_ready());
    assert_eq!(c.handle_input(&[0, 1, b'x']), Err(ZmtpError::Closed));
    assert_eq!(c.handle_input(&[]), Err(ZmtpError::Closed));
    assert_eq!(c.send(&[b"x"]), Err(ZmtpError::Closed));
    assert!(c.poll_event().is_none());
    assert!(c.take_output().is_empty());

    let mut c = conn(SocketType::Sub);
    let _ = c.handle_input(b"nope");
    assert_eq!(c.subscribe(b""), Err(ZmtpError::Closed));
}

/// The bytes libzmq 4.3.5 writes as a DEALER with `ZMQ_ROUTING_ID` "abc" connecting to us,
/// built by hand from RFC 23 and libzmq's `zmtp_engine.cpp` / `mechanism.cpp`.
#[test]
fn golden_libzmq_dealer() {
    // 1. plug_internal(): the 10-byte signature, sent at once. The padding is the
    //    routing id length + 1 as a u64 big-endian (a ZMTP 1.0 identity frame header):
    //    0xFF, 00 00 00 00 00 00 00 04, 0x7F.
    let chunk1: &[u8] = &[0xFF, 0, 0, 0, 0, 0, 0, 0, 4, 0x7F];
    // 2. receive_greeting_versioned(), once our signature and major arrived: major 3,
    //    minor 1 (libzmq speaks 3.1), "NULL" padded to 20 bytes, then 32 zeros
    //    (as-server 0 and the 31-byte filler): 1 + 1 + 20 + 32 = 54 bytes.
    let mut chunk2 = vec![3, 1];
    chunk2.extend_from_slice(b"NULL");
    chunk2.extend_from_slice(&[0; 16]);
    chunk2.extend_from_slice(&[0; 32]);
    assert_eq!(chunk2.len(), 54);
    // 3. null_mechanism's READY, from make_command_with_basic_properties(): a short
    //    command frame (flags 0x04, size 44) with body "\x05READY", then Socket-Type
    //    (1 + 11 + 4 + 6 = 22 bytes) and, for REQ/DEALER/ROUTER, Identity (1 + 8 + 4 + 3
    //    = 16 bytes): 6 + 22 + 16 = 44.
    let mut ready = vec![0x04, 44, 5];
    ready.extend_from_slice(b"READY");
    ready.extend_from_slice(&[11]);
    ready.extend_from_slice(b"Socket-Type");
    ready.extend_from_slice(&[0, 0, 0, 6]);
    ready.extend_from_slice(b"DEALER");
    ready.extend_from_slice(&[8]);
    ready.extend_from_slice(b"Identity");
    ready.extend_from_slice(&[0, 0, 0, 3]);
    ready.extend_from_slice(b"abc");
    assert_eq!(ready.len(), 2 + 44);
    // 4. A two-frame message [ "", "hello" ] through the v2 encoder (ZMTP 3.0, since we
    //    advertise 3.0): 0x01 (MORE) size 0, then 0x00 size 5 "hello".
    let mut message = vec![0x01, 0, 0x00, 5];
    message.extend_from_slice(b"hello");

    let mut router = conn(SocketType::Router);
    router.handle_input(chunk1).expect("input accepted");
    router.handle_input(&chunk2).expect("input accepted");
    assert!(!router.is_ready());
    router.handle_input(&ready).expect("input accepted");
    router.handle_input(&message).expect("input accepted");

    assert_eq!(
        events(&mut router),
        [
            ZmtpEvent::Ready {
                peer: SocketType::Dealer,
                identity: b"abc".to_vec()
            },
            msg(&[b"", b"hello"])
        ]
    );
    // What libzmq got from us: greeting (3.0, NULL) and READY with only Socket-Type.
    let mut ours = greeting().to_vec();
    ours.extend_from_slice(b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06ROUTER");
    assert_eq!(router.take_output(), ours);
}

/// libzmq 4.3.5 as a SUB talking to our 3.0 PUB: READY without Identity (only
/// REQ/DEALER/ROUTER send one), then `zmq_setsockopt(ZMQ_SUBSCRIBE, "")` as the 3.0
/// subscription message 0x01 (the v2 encoder; a 3.1 peer would get a SUBSCRIBE command).
#[test]
fn golden_libzmq_sub() {
    let mut input = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1];
    input.extend_from_slice(b"NULL");
    input.extend_from_slice(&[0; 48]);
    // READY body: 6 ("\x05READY") + 1 + 11 + 4 + 3 = 25 = 0x19.
    input.extend_from_slice(b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03SUB");
    assert_eq!(input.len(), GREETING_LEN + 2 + 25);
    input.extend_from_slice(&[0x00, 1, 0x01]);

    let mut publisher = conn(SocketType::Pub);
    publisher.handle_input(&input).expect("input accepted");
    assert_eq!(
        events(&mut publisher),
        [
            ZmtpEvent::Ready {
                peer: SocketType::Sub,
                identity: vec![]
            },
            ZmtpEvent::Subscribe(vec![])
        ]
    );
}

mod curve;
