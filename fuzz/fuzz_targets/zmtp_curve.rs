//! Arbitrary bytes into the CURVE handshake and MESSAGE decoders of `zmtp::Connection`:
//! no panic, and dead stays dead.
//!
//! Input: `[stage: u8][stream ...]`. A client and a server with fixed keys and seeds
//! shake hands for real; `stage` picks how far the peer's genuine bytes go before the
//! fuzzed stream takes over: 0 a server after the client's greeting (HELLO, INITIATE
//! decoders), 1 a client after the server's greeting (WELCOME), 2 a client after WELCOME
//! (READY), 3 a client after the whole handshake (MESSAGE boxes, nonces), 4 the same on
//! the server side.
#![no_main]

use std::sync::Arc;

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
    let c_greeting_hello = c.take_output();
    let s_greeting = s.take_output();
    match stage % 5 {
        0 => {
            let greeting = c_greeting_hello.get(..64).unwrap_or_default();
            s.handle_input(greeting).expect("greeting");
            feed(&mut s, stream);
        }
        1 => {
            c.handle_input(&s_greeting).expect("greeting");
            feed(&mut c, stream);
        }
        2 | 3 | 4 => {
            c.handle_input(&s_greeting).expect("greeting");
            s.handle_input(&c_greeting_hello).expect("HELLO");
            c.handle_input(&s.take_output()).expect("WELCOME");
            if stage % 5 == 2 {
                feed(&mut c, stream);
                return;
            }
            s.handle_input(&c.take_output()).expect("INITIATE");
            c.handle_input(&s.take_output()).expect("READY");
            assert!(c.is_ready() && s.is_ready());
            if stage % 5 == 3 {
                feed(&mut c, stream);
            } else {
                feed(&mut s, stream);
            }
        }
        _ => {}
    }
});
