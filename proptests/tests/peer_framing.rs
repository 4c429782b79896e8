//! Property tests for the peer-RPC frames (`grenache_core::peer` framing): every request
//! and reply survives encode then decode, over plain HTTP, gzip HTTP and WebSocket; no
//! input makes a decoder panic; and the frame limit holds before and after gunzip.

use crate::common;

use grenache_core::peer::{
    Compression, DEFAULT_MAX_FRAME_LEN, FrameError, ReplyFrame, RequestFrame, decode_http_request,
    decode_reply, decode_request, encode_http_reply, encode_reply, encode_request, gunzip, gzip,
    http_error_reply, ws_error_reply,
};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value serde_json can hold, nested a little deeper than the API tests need,
/// with numbers as JavaScript has them (see [`js_value`]).
fn json() -> BoxedStrategy<Value> {
    common::json(4, 48, 6).prop_map(js_value).boxed()
}

/// `v` as it reads back after a hop: we write numbers as `JSON.stringify` does, so a
/// double with an integral value (`2.0`) is written `2` and reads back as an integer, the
/// same number in JavaScript. Everything else is unchanged.
fn js_value(v: Value) -> Value {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f != 0.0 => {
                if (0.0..2.0 * TWO_63).contains(&f) {
                    Value::from(f as u64)
                } else if (-TWO_63..0.0).contains(&f) {
                    Value::from(f as i64)
                } else {
                    Value::Number(n)
                }
            }
            Some(f) if n.is_f64() && f == 0.0 && f.is_sign_positive() => Value::from(0u64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(js_value).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, js_value(v))).collect()),
        other => other,
    }
}

fn js_request(r: RequestFrame) -> RequestFrame {
    RequestFrame {
        payload: js_value(r.payload),
        ..r
    }
}

fn js_reply(r: ReplyFrame) -> ReplyFrame {
    ReplyFrame {
        result: r.result.map(js_value),
        ..r
    }
}

/// A request id: usually a uuid as the Node packages make them, sometimes any string.
fn rid() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|b| {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }),
        any::<String>(),
    ]
}

/// A reply outcome. An empty error message is falsy in JavaScript, so `[rid, "", x]` is a
/// success (as in Node); identity holds for non-empty messages only.
fn outcome() -> impl Strategy<Value = Result<Value, String>> {
    // json() already has numbers as JavaScript has them.
    prop_oneof![
        json().prop_map(Ok),
        ".+".prop_map(Err),
        any::<String>()
            .prop_filter("non-empty", |s| !s.is_empty())
            .prop_map(Err),
    ]
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Gzip)]
}

fn header(c: Compression) -> Option<&'static str> {
    match c {
        Compression::None => None,
        Compression::Gzip => Some("gzip"),
    }
}

fn as_ref(r: &Result<Value, String>) -> Result<&Value, &str> {
    r.as_ref().map_err(String::as_str)
}

/// A request body as a client sends it over HTTP.
fn http_request_body(frame: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => frame.to_vec(),
        Compression::Gzip => gzip(frame),
    }
}

/// A TooLarge error must name the limit and a length past it.
fn check_limit(err: &FrameError, max: usize) -> Result<(), TestCaseError> {
    if let FrameError::TooLarge { len, max: m } = err {
        prop_assert_eq!(*m, max);
        prop_assert!(*len > max, "TooLarge with len {} <= max {}", len, max);
    }
    prop_assert!(!err.to_string().is_empty());
    Ok(())
}

/// Whatever a decoder accepts re-encodes to something that decodes to the same value, and
/// whatever it refuses is a typed error that respects the limit.
fn check_request(bytes: &[u8], max: usize) -> Result<(), TestCaseError> {
    match decode_request(bytes, max) {
        Ok(req) => {
            prop_assert!(bytes.len() <= max);
            let again = decode_request(
                &encode_request(&req.rid, &req.key, &req.payload),
                DEFAULT_MAX_FRAME_LEN,
            );
            prop_assert_eq!(again, Ok(js_request(req)));
        }
        Err(e) => {
            check_limit(&e, max)?;
            if let Some(frame) = ws_error_reply(&e) {
                let reply = decode_reply(&frame, DEFAULT_MAX_FRAME_LEN);
                prop_assert_eq!(
                    reply.map(|r| (Some(r.rid), r.result)),
                    Ok((e.rid().map(str::to_owned), Err(e.to_string())))
                );
            }
            let http = http_error_reply(&e);
            prop_assert!(http.status == 400 || http.status == 413);
        }
    }
    Ok(())
}

fn check_reply(bytes: &[u8], max: usize) -> Result<(), TestCaseError> {
    match decode_reply(bytes, max) {
        Ok(reply) => {
            prop_assert!(bytes.len() <= max);
            let again = decode_reply(
                &encode_reply(&reply.rid, as_ref(&reply.result)),
                DEFAULT_MAX_FRAME_LEN,
            );
            prop_assert_eq!(again, Ok(js_reply(reply)));
        }
        Err(e) => check_limit(&e, max)?,
    }
    Ok(())
}

fn check_http_request(bytes: &[u8], c: Compression, max: usize) -> Result<(), TestCaseError> {
    match decode_http_request(header(c), bytes, max) {
        Ok((req, comp)) => {
            prop_assert_eq!(comp, c);
            let frame = encode_request(&req.rid, &req.key, &req.payload);
            let body = http_request_body(&frame, comp);
            let again = decode_http_request(header(c), &body, DEFAULT_MAX_FRAME_LEN);
            prop_assert_eq!(again, Ok((js_request(req), comp)));
        }
        Err(e) => check_limit(&e, max)?,
    }
    Ok(())
}

fn check_gunzip(bytes: &[u8], max: usize) -> Result<(), TestCaseError> {
    match gunzip(bytes, max) {
        Ok(out) => {
            prop_assert!(out.len() <= max, "{} bytes out, max {}", out.len(), max);
            prop_assert_eq!(gunzip(&gzip(&out), max), Ok(out));
        }
        Err(e) => check_limit(&e, max)?,
    }
    Ok(())
}

/// Every decoder on the same bytes.
fn check_all(bytes: &[u8], max: usize) -> Result<(), TestCaseError> {
    check_request(bytes, max)?;
    check_reply(bytes, max)?;
    check_http_request(bytes, Compression::None, max)?;
    check_http_request(bytes, Compression::Gzip, max)?;
    check_gunzip(bytes, max)
}

/// A frame-ish input: JSON text with a few bytes changed, so the decoders get past the
/// JSON parser more often than with random bytes.
fn edited(frame: Vec<u8>, edits: Vec<(usize, u8)>) -> Vec<u8> {
    let mut frame = frame;
    for (at, byte) in edits {
        if !frame.is_empty() {
            let len = frame.len();
            frame[at % len] = byte;
        }
    }
    frame
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_encode_then_decode_is_identity(rid in rid(), key in any::<String>(), payload in json()) {
        let frame = encode_request(&rid, &key, &payload);

        // The WebSocket transport sends exactly this frame as a text message.
        prop_assert!(std::str::from_utf8(&frame).is_ok());
        prop_assert_eq!(
            decode_request(&frame, frame.len()),
            Ok(RequestFrame { rid, key, payload })
        );
    }

    #[test]
    fn reply_encode_then_decode_is_identity(rid in rid(), result in outcome()) {
        let frame = encode_reply(&rid, as_ref(&result));

        prop_assert!(std::str::from_utf8(&frame).is_ok());
        prop_assert_eq!(decode_reply(&frame, frame.len()), Ok(ReplyFrame { rid, result }));
    }

    #[test]
    fn http_request_round_trips_with_and_without_gzip(
        rid in rid(),
        key in any::<String>(),
        payload in json(),
        c in compression(),
    ) {
        let frame = encode_request(&rid, &key, &payload);
        let body = http_request_body(&frame, c);

        let got = decode_http_request(header(c), &body, frame.len());

        prop_assert_eq!(got, Ok((RequestFrame { rid, key, payload }, c)));
    }

    #[test]
    fn http_reply_round_trips_with_and_without_gzip(
        rid in rid(),
        result in outcome(),
        c in compression(),
    ) {
        let body = encode_http_reply(&rid, as_ref(&result), c);
        let plain = match c {
            Compression::None => body,
            Compression::Gzip => gunzip(&body, DEFAULT_MAX_FRAME_LEN).expect("our own gzip"),
        };

        prop_assert_eq!(decode_reply(&plain, plain.len()), Ok(ReplyFrame { rid, result }));
    }

    #[test]
    fn an_empty_error_message_is_a_success_as_in_node(rid in rid()) {
        let frame = encode_reply(&rid, Err(""));

        prop_assert_eq!(
            decode_reply(&frame, frame.len()),
            Ok(ReplyFrame { rid, result: Ok(Value::Null) })
        );
    }

    #[test]
    fn frames_past_the_limit_are_too_large(
        rid in rid(),
        payload in json(),
        c in compression(),
        short in 1usize..64,
    ) {
        let frame = encode_request(&rid, "svc", &payload);
        let max = frame.len().saturating_sub(short);
        let too_large = FrameError::TooLarge { len: frame.len(), max };

        prop_assert_eq!(decode_request(&frame, max), Err(too_large.clone()));
        prop_assert_eq!(decode_reply(&frame, max), Err(too_large));
        // Through gzip the limit applies to the inflated frame, however small the body.
        let body = http_request_body(&frame, c);
        let got = decode_http_request(header(c), &body, max);
        prop_assert!(
            matches!(got, Err(FrameError::TooLarge { len, max: m }) if m == max && len > max),
            "{:?}", got
        );
    }

    #[test]
    fn gunzip_stops_at_the_limit(plain in vec(any::<u8>(), 0..2048), max in 0usize..2048) {
        let packed = gzip(&plain);

        let got = gunzip(&packed, max);

        if plain.len() <= max {
            prop_assert_eq!(got, Ok(plain));
        } else {
            prop_assert_eq!(got, Err(FrameError::TooLarge { len: max + 1, max }));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), max in 0usize..600) {
        check_all(&bytes, max)?;
    }

    #[test]
    fn edited_frames_never_panic(
        rid in rid(),
        payload in json(),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
        max in 0usize..2048,
    ) {
        let frame = edited(encode_request(&rid, "svc", &payload), edits);

        check_all(&frame, max)?;
    }

    #[test]
    fn edited_and_truncated_gzip_never_panics(
        rid in rid(),
        payload in json(),
        edits in vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
        max in 0usize..2048,
    ) {
        let packed = gzip(&encode_request(&rid, "svc", &payload));
        let packed = edited(packed, edits);
        let packed = &packed[..cut % (packed.len() + 1)];

        check_gunzip(packed, max)?;
        check_http_request(packed, Compression::Gzip, max)?;
    }
}

/// JSON with every kind of string (control characters, quotes, backslashes, any Unicode)
/// and only integers, whose text serde_json and `JSON.stringify` agree on.
fn stringy_json() -> impl Strategy<Value = Value> {
    let text = prop_oneof![any::<String>(), "[\\x00-\\x7f]{0,40}", "[a-z\"\\\\]{0,24}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text.prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Our writer's text is serde_json's wherever numbers do not differ (we write doubles
    /// as JavaScript does): the word-at-a-time string escaping changes no byte.
    #[test]
    fn payload_text_is_serde_json_text_for_strings(v in stringy_json()) {
        let ours = grenache_core::peer::payload_text(&v);
        let theirs = serde_json::to_string(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(ours, theirs);
    }
}
