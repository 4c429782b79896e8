//! CURVE between two codecs: the handshake, wrong keys, the allow-list, garbage in every
//! handshake command, messages cut anywhere, replays.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::frame::{GREETING_HEAD_LEN, GREETING_LEN};
use super::{events, msg, opening};
use crate::peer::zmtp::{
    Connection, CurveClientConfig, CurveError, CurveKeyPair, CurvePublicKey, CurveServerConfig,
    Limits, Mechanism, Security, SocketType, ZmtpError, ZmtpEvent,
};

// libzmq's test keys (tests/test_heartbeats.cpp): derived public keys must match its own.
const SERVER_SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";
const SERVER_PUBLIC: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
const CLIENT_SECRET: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";
const CLIENT_PUBLIC: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

fn server_keys() -> CurveKeyPair {
    CurveKeyPair::from_secret_z85(SERVER_SECRET).expect("key")
}

fn client_keys() -> CurveKeyPair {
    CurveKeyPair::from_secret_z85(CLIENT_SECRET).expect("key")
}

fn server_security(config: CurveServerConfig) -> Security {
    Security::CurveServer(Arc::new(config))
}

fn client_security(server: CurvePublicKey) -> Security {
    Security::CurveClient(Arc::new(CurveClientConfig::new(client_keys(), server)))
}

fn curve_conn(socket: SocketType, identity: &[u8], security: &Security, seed: u64) -> Connection {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Connection::secure(
        socket,
        identity.to_vec(),
        Limits::default(),
        security,
        &mut rng,
    )
}

fn server(socket: SocketType, seed: u64) -> Connection {
    curve_conn(
        socket,
        b"",
        &server_security(CurveServerConfig::new(server_keys())),
        seed,
    )
}

fn client(socket: SocketType, seed: u64) -> Connection {
    curve_conn(
        socket,
        b"c-1",
        &client_security(server_keys().public()),
        seed,
    )
}

/// Moves bytes both ways, `chunk` at a time, until both are quiet or one fails; returns
/// the first error of each side.
fn pump(
    a: &mut Connection,
    b: &mut Connection,
    chunk: usize,
) -> (Option<ZmtpError>, Option<ZmtpError>) {
    let (mut ea, mut eb) = (None, None);
    for _ in 0..16 {
        let ab = a.take_output();
        let ba = b.take_output();
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        for piece in ab.chunks(chunk.max(1)) {
            if let Err(e) = b.handle_input(piece) {
                eb.get_or_insert(e);
                break;
            }
        }
        for piece in ba.chunks(chunk.max(1)) {
            if let Err(e) = a.handle_input(piece) {
                ea.get_or_insert(e);
                break;
            }
        }
    }
    (ea, eb)
}

#[test]
fn keys_derive_as_libzmq_does_and_read_z85() {
    assert_eq!(server_keys().public().to_z85(), SERVER_PUBLIC);
    assert_eq!(client_keys().public().to_z85(), CLIENT_PUBLIC);
    assert_eq!(server_keys().secret_z85(), SERVER_SECRET);
    let parsed: CurvePublicKey = SERVER_PUBLIC.parse().expect("z85");
    assert_eq!(parsed, server_keys().public());
    assert!(CurvePublicKey::from_z85("short").is_err());
    assert!(CurvePublicKey::from_z85(&SERVER_PUBLIC[..35]).is_err());
    assert!(!format!("{:?}", server_keys()).contains(SERVER_SECRET));
}

fn full_handshake(chunk: usize) {
    let mut c = client(SocketType::Dealer, 1);
    let mut s = server(SocketType::Router, 2);
    c.send(&[b"", b"early"]).expect("held");

    assert_eq!(pump(&mut c, &mut s, chunk), (None, None));
    assert!(c.is_ready() && s.is_ready());
    assert_eq!(
        events(&mut s),
        [
            ZmtpEvent::Ready {
                peer: SocketType::Dealer,
                identity: b"c-1".to_vec()
            },
            msg(&[b"", b"early"]),
        ]
    );
    assert_eq!(s.curve_client_key(), Some(client_keys().public()));
    assert_eq!(s.mechanism(), Mechanism::Curve);

    let big = vec![7u8; 70_000];
    s.send(&[b"rid", &big]).expect("sent");
    c.send(&[b"x"]).expect("sent");
    let wire = s.take_output();
    assert!(
        !wire.windows(64).any(|w| w == &big[..64]),
        "the payload is not on the wire in the clear"
    );
    for piece in wire.chunks(chunk.max(1)) {
        c.handle_input(piece).expect("client reads");
    }
    assert_eq!(pump(&mut c, &mut s, chunk), (None, None));
    let got = events(&mut c);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], msg(&[b"rid", &big]));
    assert_eq!(events(&mut s), [msg(&[b"x"])]);
}

#[test]
fn a_full_curve_handshake_then_messages_all_at_once() {
    full_handshake(usize::MAX);
}

#[test]
fn a_full_curve_handshake_one_byte_at_a_time() {
    full_handshake(1);
}

#[test]
fn a_full_curve_handshake_in_odd_chunks() {
    full_handshake(13);
}

#[test]
fn pub_sub_over_curve() {
    let mut sub = client(SocketType::Sub, 3);
    let mut publisher = server(SocketType::Pub, 4);
    sub.subscribe(b"").expect("held");
    assert_eq!(pump(&mut sub, &mut publisher, 5), (None, None));
    assert_eq!(
        events(&mut publisher),
        [
            ZmtpEvent::Ready {
                peer: SocketType::Sub,
                identity: b"c-1".to_vec()
            },
            ZmtpEvent::Subscribe(Vec::new())
        ]
    );
    publisher.send(&[b"{\"n\":1}"]).expect("sent");
    assert_eq!(pump(&mut sub, &mut publisher, 5), (None, None));
    assert_eq!(events(&mut sub)[1..], [msg(&[b"{\"n\":1}"])]);
}

#[test]
fn a_client_with_the_wrong_server_key_is_refused_on_both_sides() {
    let other = CurveKeyPair::from_secret([9; 32]).public();
    let mut c = curve_conn(SocketType::Dealer, b"", &client_security(other), 1);
    let mut s = server(SocketType::Router, 2);

    let (ce, se) = pump(&mut c, &mut s, usize::MAX);

    assert_eq!(se, Some(ZmtpError::Curve(CurveError::BadBox("HELLO"))));
    assert!(
        matches!(ce, Some(ZmtpError::Curve(CurveError::Refused(_)))),
        "{ce:?}"
    );
    assert!(!c.is_ready() && !s.is_ready());
}

#[test]
fn a_client_key_not_on_the_allow_list_is_refused() {
    let stranger = CurveKeyPair::from_secret([5; 32]).public();
    let allow = CurveServerConfig::new(server_keys()).allow([stranger]);
    let mut s = curve_conn(SocketType::Router, b"", &server_security(allow), 2);
    let mut c = client(SocketType::Dealer, 1);

    let (ce, se) = pump(&mut c, &mut s, usize::MAX);

    assert_eq!(
        se,
        Some(ZmtpError::Curve(CurveError::ClientNotAllowed(
            client_keys().public()
        )))
    );
    assert!(
        matches!(ce, Some(ZmtpError::Curve(CurveError::Refused(_)))),
        "{ce:?}"
    );
    assert!(!s.is_ready());

    // Listed, it gets in.
    let allow = CurveServerConfig::new(server_keys()).allow([client_keys().public()]);
    let mut s = curve_conn(SocketType::Router, b"", &server_security(allow), 2);
    let mut c = client(SocketType::Dealer, 1);
    assert_eq!(pump(&mut c, &mut s, usize::MAX), (None, None));
    assert!(s.is_ready());
}

#[test]
fn null_against_curve_fails_at_the_greeting_on_both_sides() {
    let mismatch = |ours, peer| Some(ZmtpError::MechanismMismatch { ours, peer });
    let mut null = Connection::new(SocketType::Dealer, Vec::new(), Limits::default());
    let mut s = server(SocketType::Router, 2);
    let (ne, se) = pump(&mut null, &mut s, usize::MAX);
    assert_eq!(ne, mismatch(Mechanism::Null, Mechanism::Curve));
    assert_eq!(se, mismatch(Mechanism::Curve, Mechanism::Null));

    let mut c = client(SocketType::Dealer, 1);
    let mut null = Connection::new(SocketType::Router, Vec::new(), Limits::default());
    let (ce, ne) = pump(&mut c, &mut null, usize::MAX);
    assert_eq!(ce, mismatch(Mechanism::Curve, Mechanism::Null));
    assert_eq!(ne, mismatch(Mechanism::Null, Mechanism::Curve));
}

#[test]
fn a_libzmq_server_greeting_without_as_server_is_accepted() {
    // libzmq 4.3 sends as-server 0 on its CURVE servers: our client must not mind.
    let mut c = client(SocketType::Dealer, 1);
    let mut s = server(SocketType::Router, 2);
    let c_out = opening(&mut c);
    let mut greeting = opening(&mut s);
    greeting[32] = 0;
    c.handle_input(&greeting[GREETING_HEAD_LEN..])
        .expect("accepted");
    s.handle_input(&c_out[GREETING_HEAD_LEN..]).expect("HELLO");
    c.handle_input(&s.take_output()).expect("WELCOME");
    assert_eq!(pump(&mut c, &mut s, usize::MAX), (None, None));
    assert!(c.is_ready() && s.is_ready());
}

#[test]
fn two_curve_clients_fail_typed() {
    let mut a = client(SocketType::Dealer, 1);
    let mut b = client(SocketType::Router, 2);
    let (ea, eb) = pump(&mut a, &mut b, usize::MAX);
    assert!(
        matches!(ea, Some(ZmtpError::Curve(CurveError::Malformed(_)))),
        "{ea:?}"
    );
    assert!(
        matches!(eb, Some(ZmtpError::Curve(CurveError::Malformed(_)))),
        "{eb:?}"
    );
}

#[test]
fn two_curve_servers_refuse_each_other() {
    let mut a = server(SocketType::Dealer, 1);
    let mut b = server(SocketType::Router, 2);
    let (ea, eb) = pump(&mut a, &mut b, usize::MAX);
    assert_eq!(ea, Some(ZmtpError::Curve(CurveError::SameRole("server"))));
    assert_eq!(eb, Some(ZmtpError::Curve(CurveError::SameRole("server"))));
}

/// Splits a connection's output into its greeting and its frames (header + body each).
fn split_frames(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (greeting, rest) = bytes.split_at(64);
    (greeting.to_vec(), frames_of(rest))
}

/// Splits output without a greeting into frames.
fn frames_of(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(&flags) = rest.first() {
        let (head, len) = if flags & 0x02 == 0 {
            (2, usize::from(rest[1]))
        } else {
            let n: [u8; 8] = rest[1..9].try_into().expect("8 bytes");
            (9, usize::try_from(u64::from_be_bytes(n)).expect("fits"))
        };
        frames.push(rest[..head + len].to_vec());
        rest = &rest[head + len..];
    }
    frames
}

/// Every way to spoil one handshake frame: each truncation, and each byte flipped (past
/// the name; HELLO's 72 padding bytes carry nothing and are skipped).
fn spoilt(frame: &[u8], skip: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    let head = if frame[0] & 0x02 == 0 { 2 } else { 9 };
    let name_end = head + 1 + usize::from(frame[head]);
    let mut out = Vec::new();
    for cut in name_end..frame.len() {
        let mut f = frame[..cut].to_vec();
        // Keep the frame well-formed: a shorter size, so the command itself is short.
        if head == 2 {
            f[1] = u8::try_from(cut - head).expect("short");
        } else {
            f[1..9].copy_from_slice(&((cut - head) as u64).to_be_bytes());
        }
        out.push(f);
    }
    for i in name_end..frame.len() {
        if skip.contains(&(i - name_end)) {
            continue;
        }
        let mut f = frame.to_vec();
        f[i] ^= 0x20;
        out.push(f);
    }
    out
}

#[test]
fn garbage_in_every_handshake_command_fails_typed_without_panic() {
    // What each side says, from fixed seeds, so a fresh side can be fed a spoilt copy.
    let mut c = client(SocketType::Dealer, 11);
    let mut s = server(SocketType::Router, 12);
    let (c_greeting, c_hello) = split_frames(&opening(&mut c));
    let (s_greeting, _) = split_frames(&opening(&mut s));
    s.handle_input(&c_greeting[GREETING_HEAD_LEN..])
        .expect("greeting");
    s.handle_input(&c_hello[0]).expect("HELLO");
    let s_welcome = frames_of(&s.take_output());
    c.handle_input(&s_greeting[GREETING_HEAD_LEN..])
        .expect("greeting");
    c.handle_input(&s_welcome[0]).expect("WELCOME");
    let c_initiate = frames_of(&c.take_output());
    s.handle_input(&c_initiate[0]).expect("INITIATE");
    let s_ready = frames_of(&s.take_output());
    c.handle_input(&s_ready[0]).expect("READY");
    assert!(c.is_ready() && s.is_ready());

    let is_typed = |e: &ZmtpError| {
        matches!(
            e,
            ZmtpError::Curve(_) | ZmtpError::BadCommand(_) | ZmtpError::BadFrame(_)
        )
    };
    // HELLO and INITIATE into a fresh server (at the same point).
    for bad in spoilt(&c_hello[0], 2..74) {
        let mut s = server(SocketType::Router, 12);
        s.handle_input(&c_greeting).expect("greeting");
        let err = s.handle_input(&bad).expect_err("spoilt HELLO refused");
        assert!(is_typed(&err), "{err:?}");
    }
    for bad in spoilt(&c_initiate[0], 0..0) {
        let mut s = server(SocketType::Router, 12);
        s.handle_input(&c_greeting).expect("greeting");
        s.handle_input(&c_hello[0]).expect("HELLO");
        let err = s.handle_input(&bad).expect_err("spoilt INITIATE refused");
        assert!(is_typed(&err), "{err:?}");
    }
    // WELCOME and READY into a fresh client.
    for bad in spoilt(&s_welcome[0], 0..0) {
        let mut c = client(SocketType::Dealer, 11);
        let _ = c.take_output();
        c.handle_input(&s_greeting).expect("greeting");
        let err = c.handle_input(&bad).expect_err("spoilt WELCOME refused");
        assert!(is_typed(&err), "{err:?}");
    }
    for bad in spoilt(&s_ready[0], 0..0) {
        let mut c = client(SocketType::Dealer, 11);
        c.handle_input(&s_greeting).expect("greeting");
        c.handle_input(&s_welcome[0]).expect("WELCOME");
        let err = c.handle_input(&bad).expect_err("spoilt READY refused");
        assert!(is_typed(&err), "{err:?}");
        assert!(!c.is_ready());
    }
    // A command out of turn.
    let mut s = server(SocketType::Router, 12);
    s.handle_input(&c_greeting).expect("greeting");
    let err = s
        .handle_input(&c_initiate[0])
        .expect_err("INITIATE before HELLO");
    assert!(is_typed(&err), "{err:?}");
}

/// Two connections after the handshake, and the quiet output of both.
fn pair() -> (Connection, Connection) {
    let mut c = client(SocketType::Dealer, 21);
    let mut s = server(SocketType::Router, 22);
    assert_eq!(pump(&mut c, &mut s, usize::MAX), (None, None));
    let _ = (events(&mut c), events(&mut s));
    (c, s)
}

#[test]
fn a_message_cut_at_every_byte_arrives_once() {
    let mut s_ref = pair().1;
    s_ref.send(&[b"rid", b"{\"result\":42}"]).expect("sent");
    let wire = s_ref.take_output();
    for cut in 0..=wire.len() {
        let (mut c2, mut s2) = pair();
        s2.send(&[b"rid", b"{\"result\":42}"]).expect("sent");
        let wire = s2.take_output();
        c2.handle_input(&wire[..cut]).expect("first part");
        if cut < wire.len() {
            assert!(
                events(&mut c2).is_empty(),
                "nothing before the end (cut {cut})"
            );
        }
        c2.handle_input(&wire[cut..]).expect("second part");
        let got: Vec<ZmtpEvent> = events(&mut c2);
        assert_eq!(got, [msg(&[b"rid", b"{\"result\":42}"])], "cut {cut}");
    }
    // A flipped byte anywhere in a MESSAGE's nonce or box is fatal.
    let frames = frames_of(&wire);
    for i in 10..frames[0].len() {
        let (mut c2, mut s2) = pair();
        s2.send(&[b"rid", b"{\"result\":42}"]).expect("sent");
        let mut frames = frames_of(&s2.take_output());
        frames[0][i] ^= 1;
        let err = c2.handle_input(&frames[0]).expect_err("spoilt MESSAGE");
        assert!(
            matches!(err, ZmtpError::Curve(CurveError::BadBox("MESSAGE"))),
            "{err:?}"
        );
    }
}

#[test]
fn a_replayed_or_reordered_message_is_fatal() {
    let (mut c, mut s) = pair();
    s.send(&[b"one"]).expect("sent");
    let first = s.take_output();
    s.send(&[b"two"]).expect("sent");
    let second = s.take_output();

    c.handle_input(&second).expect("newer first");
    assert_eq!(
        c.handle_input(&first),
        Err(ZmtpError::Curve(CurveError::NonceReplay))
    );

    let (mut c, mut s) = pair();
    s.send(&[b"one"]).expect("sent");
    let first = s.take_output();
    c.handle_input(&first).expect("once");
    assert_eq!(
        c.handle_input(&first),
        Err(ZmtpError::Curve(CurveError::NonceReplay))
    );
}

#[test]
fn plaintext_after_a_curve_handshake_is_fatal() {
    let (mut c, _) = pair();
    let mut plain = Vec::new();
    crate::peer::zmtp::frame::encode_frame(&mut plain, b"hello", false);
    assert!(matches!(
        c.handle_input(&plain),
        Err(ZmtpError::Curve(CurveError::Malformed(_)))
    ));
}

#[test]
fn ping_and_pong_travel_inside_message_boxes() {
    let (mut c, mut s) = pair();
    c.ping(300).expect("ping");
    let ping = c.take_output();
    assert!(!ping.windows(4).any(|w| w == b"PING"), "PING is boxed");
    s.handle_input(&ping).expect("server reads PING");
    let pong = s.take_output();
    assert!(!pong.is_empty(), "PONG written");
    assert!(!pong.windows(4).any(|w| w == b"PONG"), "PONG is boxed");
    c.handle_input(&pong).expect("client reads PONG");
    assert!(events(&mut c).is_empty() && events(&mut s).is_empty());
}

#[test]
fn an_oversized_reply_keeps_its_rid_for_the_caller() {
    let limits = Limits {
        max_message_len: 100,
        ..Limits::default()
    };
    let mut c = Connection::secure(
        SocketType::Dealer,
        Vec::new(),
        limits,
        &client_security(server_keys().public()),
        &mut ChaCha8Rng::seed_from_u64(31),
    );
    let mut s = server(SocketType::Router, 32);
    assert_eq!(pump(&mut c, &mut s, usize::MAX), (None, None));
    s.send(&[b"rid-7", &[1u8; 500]]).expect("sent");
    let err = c.handle_input(&s.take_output()).expect_err("too large");
    assert!(matches!(err, ZmtpError::MessageTooLarge { .. }), "{err:?}");
    assert_eq!(c.cut_message_head(), Some(&b"rid-7"[..]));
}

/// Everything each side of a CURVE handshake writes until both are ready, from the
/// seeds of [`client`] 31 and [`server`] 32.
fn handshake_streams() -> (Vec<u8>, Vec<u8>) {
    let mut c = client(SocketType::Dealer, 31);
    let mut s = server(SocketType::Router, 32);
    let (mut to_s, mut to_c) = (Vec::new(), Vec::new());
    while !(c.is_ready() && s.is_ready()) {
        let (cs, sc) = (c.take_output(), s.take_output());
        assert!(!cs.is_empty() || !sc.is_empty(), "stalled");
        s.handle_input(&cs).expect("server reads");
        c.handle_input(&sc).expect("client reads");
        to_s.extend(cs);
        to_c.extend(sc);
    }
    (to_s, to_c)
}

#[test]
fn a_handshake_cut_at_every_byte_is_never_ready_and_a_cut_greeting_is_named() {
    let (to_s, to_c) = handshake_streams();
    for cut in 0..to_s.len() {
        let mut s = server(SocketType::Router, 32);
        s.handle_input(&to_s[..cut]).expect("a prefix is valid");
        assert!(!s.is_ready() && events(&mut s).is_empty(), "cut {cut}");
        // A close now: inside the greeting after its signature, a typed reason.
        let in_greeting = cut > 9 && cut < GREETING_LEN;
        assert_eq!(s.close_reason().is_some(), in_greeting, "cut {cut}");
    }
    for cut in 0..to_c.len() {
        let mut c = client(SocketType::Dealer, 31);
        c.handle_input(&to_c[..cut]).expect("a prefix is valid");
        assert!(!c.is_ready() && events(&mut c).is_empty(), "cut {cut}");
    }
}

#[test]
fn a_client_takes_the_server_key_of_the_service_it_calls() {
    let south = CurveKeyPair::from_secret([12; 32]);
    let config = Arc::new(
        CurveClientConfig::new(client_keys(), server_keys().public())
            .service("south", south.public()),
    );
    assert_eq!(config.server_for("south"), south.public());
    assert_eq!(config.server_for("north"), server_keys().public());
    let south_server = server_security(CurveServerConfig::new(south));
    for (service, server, refused) in [
        ("south", &south_server, false),
        ("north", &south_server, true),
        (
            "north",
            &server_security(CurveServerConfig::new(server_keys())),
            false,
        ),
    ] {
        let security = Security::client_for(Some(&config), service);
        let mut c = curve_conn(SocketType::Dealer, b"", &security, 1);
        let mut s = curve_conn(SocketType::Router, b"", server, 2);
        let (_, se) = pump(&mut c, &mut s, usize::MAX);
        if refused {
            assert_eq!(se, Some(ZmtpError::Curve(CurveError::BadBox("HELLO"))));
        } else {
            assert_eq!(se, None, "{service}");
            assert!(c.is_ready() && s.is_ready(), "{service}");
        }
    }
    assert_eq!(Security::client_for(None, "south"), Security::Null);
}
