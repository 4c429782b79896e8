//! Arbitrary bytes into every peer-RPC frame decoder: `decode_request`, `decode_reply`,
//! `decode_http_request` (without and with `grc-compress: gzip`) and `gunzip`. None may
//! panic; whatever decodes must re-encode (through the matching encoder, gzipped when the
//! request was) to a frame that passes another hop byte for byte (the first hop may
//! rewrite a number: `2.0` leaves as `2`, as `JSON.stringify` writes it); a `TooLarge` must name a
//! length past the limit; and `gunzip` never returns more than its `max_len`.
//!
//! The first byte sets `max_len` (bits 1-7: 0 to 4064, in steps of 32) and, in bit 0,
//! whether the rest is gzipped before it is fed, so the gzip paths see valid streams too.
#![no_main]

use grenache_core::peer::{
    Compression, DEFAULT_MAX_FRAME_LEN, FrameError, decode_http_request, decode_reply,
    decode_request, encode_http_reply, encode_reply, encode_request, gunzip, gzip,
    http_error_reply, ws_error_reply,
};
use libfuzzer_sys::fuzz_target;

fn check_error(err: &FrameError, max: usize) {
    if let FrameError::TooLarge { len, max: m } = err {
        assert_eq!(*m, max);
        assert!(*len > max, "TooLarge {len} <= {max}");
    }
    // Only a request that got as far as its rid has a frame to answer on a WebSocket.
    assert_eq!(ws_error_reply(err).is_some(), err.rid().is_some());
    let http = http_error_reply(err);
    assert!(matches!(http.status, 400 | 413));
}

/// A request frame read and written again, as a server passing it on would.
fn request_hop(wire: &[u8]) -> Result<Vec<u8>, FrameError> {
    decode_request(wire, DEFAULT_MAX_FRAME_LEN).map(|r| encode_request(&r.rid, &r.key, &r.payload))
}

fn header(c: Compression) -> Option<&'static str> {
    match c {
        Compression::None => Some("none"),
        Compression::Gzip => Some("gzip"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(head >> 1) * 32;
    let packed;
    let frame = if head & 1 == 1 {
        packed = gzip(rest);
        &packed[..]
    } else {
        rest
    };

    match decode_request(frame, max) {
        Ok(req) => {
            assert!(
                frame.len() <= max,
                "{} bytes accepted, max {max}",
                frame.len()
            );
            let wire = encode_request(&req.rid, &req.key, &req.payload);
            assert_eq!(request_hop(&wire).as_deref(), Ok(&wire[..]));
        }
        Err(e) => {
            if frame.len() > max {
                let len = frame.len();
                assert_eq!(e, FrameError::TooLarge { len, max });
            }
            check_error(&e, max);
        }
    }

    match decode_reply(frame, max) {
        Ok(reply) => {
            let result = reply.result.as_ref().map_err(String::as_str);
            for c in [Compression::None, Compression::Gzip] {
                let body = encode_http_reply(&reply.rid, result, c);
                let plain = match c {
                    Compression::None => body,
                    Compression::Gzip => gunzip(&body, DEFAULT_MAX_FRAME_LEN).expect("our gzip"),
                };
                assert_eq!(plain, encode_reply(&reply.rid, result));
                let again = decode_reply(&plain, DEFAULT_MAX_FRAME_LEN)
                    .map(|r| encode_reply(&r.rid, r.result.as_ref().map_err(String::as_str)));
                assert_eq!(again.as_deref(), Ok(&plain[..]));
            }
        }
        Err(e) => check_error(&e, max),
    }

    for c in [Compression::None, Compression::Gzip] {
        match decode_http_request(header(c), frame, max) {
            Ok((req, comp)) => {
                assert_eq!(comp, c);
                let wire = encode_request(&req.rid, &req.key, &req.payload);
                let body = match comp {
                    Compression::None => wire.clone(),
                    Compression::Gzip => gzip(&wire),
                };
                let again = decode_http_request(header(c), &body, DEFAULT_MAX_FRAME_LEN)
                    .map(|(r, comp)| (encode_request(&r.rid, &r.key, &r.payload), comp));
                assert_eq!(again, Ok((wire, comp)));
            }
            Err(e) => check_error(&e, max),
        }
    }

    match gunzip(frame, max) {
        Ok(out) => {
            assert!(out.len() <= max, "gunzip gave {} > {max}", out.len());
            assert_eq!(gunzip(&gzip(&out), max).as_ref(), Ok(&out));
        }
        Err(e) => check_error(&e, max),
    }
});
