//! Arbitrary bytes into the CURVE handshake and MESSAGE decoders of `zmtp::Connection`:
//! no panic, and dead stays dead.
//!
//! Input: `[stage: u8][stream ...]`. A client and a server with fixed keys and seeds
//! shake hands for real; `stage` picks how far the peer's genuine bytes go before the
//! fuzzed stream takes over: 0 a server after the client's greeting (HELLO, INITIATE
//! decoders), 1 a client after the server's greeting (WELCOME), 2 a client after WELCOME
//! (READY), 3 a client after the whole handshake (MESSAGE boxes, nonces), 4 the same on
//! the server side, 5 a fresh client or 6 a fresh server from the first byte (the greeting,
//! sent in two parts: the second only after the peer's signature and version).
#![no_main]

use std::sync::Arc;

use grenache_core::peer::zmtp::frame::{GREETING_HEAD_LEN, GREETING_LEN};
use grenache_core::peer::zmtp::{
    Connection, CurveClientConfig, CurveKeyPair, CurveServerConfig, Limits, Security, SocketType,
    ZmtpError,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn pair() -> (Connection, Connection) {
    let server_keys = CurveKeyPair::from_secret([1; 32]);
    let client_keys = CurveKeyPair::from_secret([2; 32]);
    let client = Security::CurveClient(Arc::new(CurveClientConfig::new(
        client_keys,
        server_keys.public(),
    )));
    let server = Security::CurveServer(Arc::new(CurveServerConfig::new(server_keys)));
    let mut limits = Limits::default();
    limits.max_message_len = 512;
    limits.max_frames = 8;
    let c = Connection::secure(
        SocketType::Dealer,
        b"fuzz".to_vec(),
        limits,
        &client,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    let s = Connection::secure(
        SocketType::Router,
        Vec::new(),
        limits,
        &server,
        &mut ChaCha8Rng::seed_from_u64(2),
    );
    (c, s)
}

fn feed(c: &mut Connection, stream: &[u8]) {
    let mut failed = false;
    for piece in stream.chunks(97) {
        let result = c.handle_input(piece);
        if failed {
            assert_eq!(result, Err(ZmtpError::Closed));
        }
        failed |= result.is_err();
        while c.poll_event().is_some() {}
        let _ = c.take_output();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&stage, stream)) = data.split_first() else {
        return;
    };
    let (mut c, mut s) = pair();
    match stage % 7 {
        5 => return feed(&mut c, stream),
        6 => return feed(&mut s, stream),
        _ => {}
    }
    // Each reads the other's first greeting bytes (signature, version), then sends the
    // rest of its greeting (and the client its HELLO).
    let (c_head, s_head) = (c.take_output(), s.take_output());
    c.handle_input(&s_head).expect("greeting head");
    s.handle_input(&c_head).expect("greeting head");
    let (c_rest, s_rest) = (c.take_output(), s.take_output());
    let (c_rest, s_rest) = (c_rest.as_slice(), s_rest.as_slice());
    match stage % 7 {
        0 => {
            let greeting = c_rest.get(..GREETING_LEN - GREETING_HEAD_LEN).unwrap_or_default();
            s.handle_input(greeting).expect("greeting");
            feed(&mut s, stream);
        }
        1 => {
            c.handle_input(s_rest).expect("greeting");
            feed(&mut c, stream);
        }
        2..=4 => {
            c.handle_input(s_rest).expect("greeting");
            s.handle_input(c_rest).expect("HELLO");
            c.handle_input(&s.take_output()).expect("WELCOME");
            if stage % 7 == 2 {
                feed(&mut c, stream);
                return;
            }
            s.handle_input(&c.take_output()).expect("INITIATE");
            c.handle_input(&s.take_output()).expect("READY");
            assert!(c.is_ready() && s.is_ready());
            if stage % 7 == 3 {
                feed(&mut c, stream);
            } else {
                feed(&mut s, stream);
            }
        }
        _ => {}
    }
});
