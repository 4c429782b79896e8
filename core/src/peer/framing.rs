//! Peer-RPC frames as grenache-nodejs-http and -ws write them, and gzip for `grc-compress`.
//!
//! A request is the JSON text `[rid, key, payload]`, a reply `[rid, err, result]` with `err`
//! the error message or `null` (docs/protocol.md §6, §7). Both are compact JSON,
//! as `JSON.stringify` writes it: keys in their order, numbers in JavaScript's notation
//! (see [`crate::peer::json`]), so a payload Node wrote leaves byte for byte as it came.
//! JSON we cannot hold as a [`Value`] (a lone surrogate, ...) is refused with
//! [`FrameError::Payload`], which keeps the rid so the sender gets a typed error.
//!
//! The server half (`decode_request`, `encode_reply`, [`http_error_reply`]) is all an
//! RPC server needs: it has no state, so there is no server state machine.

use std::io::{Read, Write};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::peer::json::{JsonError, PayloadError, raw_items, read_json};
use crate::peer::types::HttpResponse;

pub(crate) use crate::peer::json::{push_json, push_json_str};

/// Header that says whether both HTTP bodies are gzip-compressed.
pub const COMPRESS_HEADER: &str = "grc-compress";

/// Default bound on a frame, compressed or not; Node has none, we need one.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 << 20;

/// How an HTTP body is encoded, from the `grc-compress` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain JSON (`grc-compress: none`, or no header).
    None,
    /// gzip (`grc-compress` contains `gzip`, as the Node server tests it).
    Gzip,
}

impl Compression {
    /// Reads the header as the Node server does: gzip if its value contains `gzip`.
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.contains("gzip") => Compression::Gzip,
            _ => Compression::None,
        }
    }

    /// The header value a client sends.
    pub fn header_value(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// A decoded request frame.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestFrame {
    /// Request id to echo in the reply.
    pub rid: String,
    /// Service name the client looked up.
    pub key: String,
    /// Anything JSON; `null` when the frame has only two elements.
    pub payload: Value,
}

/// A decoded reply frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyFrame {
    /// The request id it answers.
    pub rid: String,
    /// The result, or the server's error message.
    pub result: Result<Value, String>,
}

/// Why a frame could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is longer than allowed (before or after gunzip); refuse it.
    #[error("ERR_FRAME_TOO_LARGE: {len} > {max}")]
    TooLarge {
        /// Bytes seen (a lower bound when inflating stopped early).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not JSON (or is `null`, `false`, `0`, `""`, which Node treats alike).
    #[error("ERR_FRAME_NOT_JSON")]
    NotJson,
    /// JSON, but not an array `[rid, key|err, payload|result]` with a string rid.
    #[error("ERR_FRAME_SHAPE")]
    Shape,
    /// The rid is readable but the key is not a string; reply with an error to that rid.
    #[error("ERR_FRAME_KEY")]
    Key {
        /// The request id, so the client gets an answer instead of waiting for its timeout.
        rid: String,
    },
    /// The body says gzip but does not inflate.
    #[error("ERR_FRAME_COMPRESSION")]
    Compression,
    /// The frame is JSON Node accepts, but its payload (or result) cannot pass through
    /// unchanged; answer the rid with the reason.
    #[error("{why}")]
    Payload {
        /// The request id to answer.
        rid: String,
        /// Which JSON we cannot hold.
        why: PayloadError,
    },
}

impl FrameError {
    /// The request id, when the frame got far enough to have one.
    pub fn rid(&self) -> Option<&str> {
        match self {
            FrameError::Key { rid } | FrameError::Payload { rid, .. } => Some(rid),
            _ => None,
        }
    }
}

/// Writes a request frame, `[rid, key, payload]`.
pub fn encode_request(rid: &str, key: &str, payload: &Value) -> Vec<u8> {
    let mut json = Vec::new();
    push_json(&mut json, payload);
    encode_request_json(rid, key, &json)
}

/// [`encode_request`] with the payload already serialized (a map sends it many times).
pub(crate) fn encode_request_json(rid: &str, key: &str, payload_json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rid.len() + key.len() + payload_json.len() + 16);
    out.push(b'[');
    push_json_str(&mut out, rid);
    out.push(b',');
    push_json_str(&mut out, key);
    out.push(b',');
    out.extend_from_slice(payload_json);
    out.push(b']');
    out
}

/// Reads a request frame of at most `max_len` bytes.
///
/// Lenient where Node is: extra elements are ignored and a missing payload is `null`.
///
/// # Errors
/// [`FrameError::TooLarge`], [`FrameError::NotJson`], [`FrameError::Shape`] (not an array,
/// or no string rid), [`FrameError::Key`] (no string key; the rid is kept for the reply),
/// [`FrameError::Payload`] (a payload we cannot pass on unchanged; the rid is kept).
pub fn decode_request(bytes: &[u8], max_len: usize) -> Result<RequestFrame, FrameError> {
    let items = match decode_array(bytes, max_len) {
        Ok(items) => items,
        Err(FrameError::NotJson) => return decode_request_item_by_item(bytes),
        Err(e) => return Err(e),
    };
    let mut items = items.into_iter();
    let Some(Value::String(rid)) = items.next() else {
        return Err(FrameError::Shape);
    };
    let Some(Value::String(key)) = items.next() else {
        return Err(FrameError::Key { rid });
    };
    let payload = items.next().unwrap_or(Value::Null);
    Ok(RequestFrame { rid, key, payload })
}

/// [`decode_request`] for a frame serde_json could not read whole: item by item, so a
/// payload we cannot hold is answered with its reason to the rid, and a bad item past the
/// payload is ignored, as Node ignores it.
fn decode_request_item_by_item(bytes: &[u8]) -> Result<RequestFrame, FrameError> {
    let (rid, mut items) = raw_frame(bytes)?;
    let Some(key) = read_string(items.next()) else {
        return Err(FrameError::Key { rid });
    };
    let payload = read_item(&rid, items.next())?;
    Ok(RequestFrame { rid, key, payload })
}

/// A frame serde_json could not read whole, as raw items: its rid and the items after it.
fn raw_frame(bytes: &[u8]) -> Result<(String, std::vec::IntoIter<&RawValue>), FrameError> {
    let mut items = raw_items(bytes).ok_or(FrameError::NotJson)?.into_iter();
    let rid = read_string(items.next()).ok_or(FrameError::Shape)?;
    Ok((rid, items))
}

/// An item that must be a string we can hold (a rid, a key).
fn read_string(item: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(item?.get()).ok()
}

/// A payload or result item; `null` when absent.
fn read_item(rid: &str, item: Option<&RawValue>) -> Result<Value, FrameError> {
    let Some(item) = item else {
        return Ok(Value::Null);
    };
    read_json(item.get().as_bytes()).map_err(|e| match e {
        JsonError::Refused(why) => FrameError::Payload {
            rid: rid.to_owned(),
            why,
        },
        JsonError::NotJson => FrameError::NotJson,
    })
}

/// Writes a reply frame, `[rid, err, result]`: `[rid, null, result]` or `[rid, "msg", null]`.
pub fn encode_reply(rid: &str, result: Result<&Value, &str>) -> Vec<u8> {
    let (err, res) = match result {
        Ok(v) => (Value::Null, v),
        Err(msg) => (Value::from(msg), &Value::Null),
    };
    let mut out = Vec::new();
    out.push(b'[');
    push_json_str(&mut out, rid);
    out.push(b',');
    push_json(&mut out, &err);
    out.push(b',');
    push_json(&mut out, res);
    out.push(b']');
    out
}

/// Reads a reply frame of at most `max_len` bytes.
///
/// A truthy `err` is an error (`new Error(err)` in Node): a string as is, anything else as
/// its JSON text; `null`, `false`, `0` and `""` mean success. A missing result is `null`.
///
/// # Errors
/// [`FrameError::TooLarge`], [`FrameError::NotJson`] (Node's `ERR_REPLY_EMPTY`),
/// [`FrameError::Shape`] (not an array with a string rid), [`FrameError::Payload`] (an
/// error or result we cannot pass on unchanged; the rid is kept).
pub fn decode_reply(bytes: &[u8], max_len: usize) -> Result<ReplyFrame, FrameError> {
    let (rid, err, res) = match decode_array(bytes, max_len) {
        Ok(items) => {
            let mut items = items.into_iter();
            let Some(Value::String(rid)) = items.next() else {
                return Err(FrameError::Shape);
            };
            let err = items.next().unwrap_or(Value::Null);
            (rid, err, items.next().unwrap_or(Value::Null))
        }
        Err(FrameError::NotJson) => {
            // Read item by item, so a result we cannot hold fails its request at once.
            let (rid, mut items) = raw_frame(bytes)?;
            let err = read_item(&rid, items.next())?;
            let res = read_item(&rid, items.next())?;
            (rid, err, res)
        }
        Err(e) => return Err(e),
    };
    let result = match err {
        e if !is_truthy(&e) => Ok(res),
        Value::String(msg) => Err(msg),
        other => Err(other.to_string()),
    };
    Ok(ReplyFrame { rid, result })
}

/// Reads an HTTP request body the way grenache-nodejs-http's server does.
///
/// With `grc-compress: gzip` the body is inflated; if that fails the raw body is tried,
/// as Node does. Returns the request and the compression to use for the reply.
///
/// # Errors
/// As [`decode_request`]; a body that inflates past `max_len` is [`FrameError::TooLarge`].
pub fn decode_http_request(
    compress_header: Option<&str>,
    body: &[u8],
    max_len: usize,
) -> Result<(RequestFrame, Compression), FrameError> {
    let compression = Compression::from_header(compress_header);
    let request = match compression {
        Compression::Gzip => match gunzip(body, max_len) {
            Ok(plain) => decode_request(&plain, max_len)?,
            Err(FrameError::Compression) => decode_request(body, max_len)?,
            Err(e) => return Err(e),
        },
        Compression::None => decode_request(body, max_len)?,
    };
    Ok((request, compression))
}

/// Writes an HTTP reply body, gzipped when the request was.
pub fn encode_http_reply(
    rid: &str,
    result: Result<&Value, &str>,
    compression: Compression,
) -> Vec<u8> {
    let plain = encode_reply(rid, result);
    match compression {
        Compression::None => plain,
        Compression::Gzip => gzip(&plain),
    }
}

/// What an HTTP server answers to a request it could not read.
///
/// Node's server never answers (the client waits for its timeout, grenache #8); this
/// answers at once: 413 for an oversized body, 400 otherwise, with a reply frame
/// `[rid|null, "ERR_…", null]` (the rid when it was readable). A Node client reports it as
/// `ERR_REQUEST_GENERIC: <body>`.
pub fn http_error_reply(err: &FrameError) -> HttpResponse {
    let status = match err {
        FrameError::TooLarge { .. } => 413,
        _ => 400,
    };
    HttpResponse {
        status,
        body: error_frame(err),
    }
}

/// A reply frame for a request that could not be read, for a WebSocket server to send:
/// `[rid, "ERR_FRAME_KEY", null]` when the rid was readable, otherwise `None` (Node's
/// server stays silent and so should we: there is no rid to answer).
pub fn ws_error_reply(err: &FrameError) -> Option<Vec<u8>> {
    err.rid().map(|_| error_frame(err))
}

/// gzip with the header Node's zlib writes (no name, mtime 0, OS byte 3).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail; an error here could only be a bug in flate2.
    match enc.write_all(bytes).and_then(|()| enc.finish()) {
        Ok(out) => out,
        Err(e) => {
            tracing::error!(error = %e, "gzip into memory failed");
            Vec::new()
        }
    }
}

/// Inflates gzip (every member, as Node's `zlib.gunzip`), refusing output over `max_len`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the output would pass `max_len` (a gzip bomb stops
/// there), [`FrameError::Compression`] when the bytes are not gzip.
pub fn gunzip(bytes: &[u8], max_len: usize) -> Result<Vec<u8>, FrameError> {
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| FrameError::Compression)?;
    if out.len() > max_len {
        return Err(FrameError::TooLarge {
            len: out.len(),
            max: max_len,
        });
    }
    Ok(out)
}

fn error_frame(err: &FrameError) -> Vec<u8> {
    let rid = err.rid().map_or(Value::Null, Value::from);
    let mut out = Vec::new();
    out.push(b'[');
    push_json(&mut out, &rid);
    out.push(b',');
    push_json_str(&mut out, &err.to_string());
    out.extend_from_slice(b",null]");
    out
}

fn decode_array(bytes: &[u8], max_len: usize) -> Result<Vec<Value>, FrameError> {
    if bytes.len() > max_len {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    // serde_json stops at 128 levels of nesting, so deep input is an error, not a crash.
    let value: Value = serde_json::from_slice(bytes).map_err(|_| FrameError::NotJson)?;
    match value {
        Value::Array(items) => Ok(items),
        v if !is_truthy(&v) => Err(FrameError::NotJson),
        _ => Err(FrameError::Shape),
    }
}

/// JavaScript truthiness of a JSON value.
pub(crate) fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A WebSocket text message from serialised JSON. serde_json writes UTF-8, so this takes the
/// bytes as they are, without a copy; only bytes from elsewhere that are not UTF-8 get copied,
/// with U+FFFD in place of what is invalid.
pub(crate) fn json_text(json: Vec<u8>) -> String {
    String::from_utf8(json).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_keeps_utf8_and_replaces_the_rest() {
        let frame = encode_request_json("r1", "svc", "\"héllo ✓\"".as_bytes());
        let ptr = frame.as_ptr();
        let text = json_text(frame);
        assert_eq!(text, "[\"r1\",\"svc\",\"héllo ✓\"]");
        assert_eq!(text.as_ptr(), ptr, "valid UTF-8 is taken without a copy");
        assert_eq!(json_text(vec![b'"', 0xff, b'"']), "\"\u{fffd}\"");
    }

    const RID: &str = "3e4c2c9a-6a0b-4d3c-9a55-08f1b7a3d2e1";

    #[test]
    fn request_frame_is_byte_exact() {
        // JSON.stringify([rid, 'rpc_test', { action: 'ping' }]) in grenache-nodejs-base.
        let payload = json!({"action": "ping"});

        let frame = encode_request(RID, "rpc_test", &payload);

        assert_eq!(
            frame,
            format!(r#"["{RID}","rpc_test",{{"action":"ping"}}]"#).as_bytes()
        );
    }

    #[test]
    fn request_frame_escapes_like_json_stringify() {
        let frame = encode_request(RID, "k", &json!("a\"b\\c\n\u{1}é/"));

        assert_eq!(
            frame,
            format!(r#"["{RID}","k","a\"b\\c\n\u0001é/"]"#).as_bytes()
        );
    }

    #[test]
    fn reply_frames_are_byte_exact() {
        // sendReply: JSON.stringify([rid, err ? err.message : null, res]).
        let ok = encode_reply(RID, Ok(&json!("world")));
        let err = encode_reply(RID, Err("ERR_BUSY"));

        assert_eq!(ok, format!(r#"["{RID}",null,"world"]"#).as_bytes());
        assert_eq!(err, format!(r#"["{RID}","ERR_BUSY",null]"#).as_bytes());
    }

    #[test]
    fn request_round_trips() {
        let frame = encode_request(RID, "svc", &json!([1, {"a": null}]));

        let req = decode_request(&frame, DEFAULT_MAX_FRAME_LEN).expect("valid frame");

        assert_eq!(
            req,
            RequestFrame {
                rid: RID.into(),
                key: "svc".into(),
                payload: json!([1, {"a": null}])
            }
        );
    }

    #[test]
    fn float_payloads_survive_a_hop_exactly() {
        // Found by proptests/tests/peer_framing.rs: serde_json's default float parser read
        // this back one ULP off (…329e-65), so a payload changed as it passed through.
        let x = -1.837_387_190_640_232_7e-65_f64;
        let frame = encode_request(RID, "k", &json!(x));

        let req = decode_request(&frame, DEFAULT_MAX_FRAME_LEN).expect("valid frame");

        assert_eq!(req.payload.as_f64().map(f64::to_bits), Some(x.to_bits()));
    }

    #[test]
    fn request_without_payload_has_null_payload() {
        let req = decode_request(br#"["r","k"]"#, 100).expect("valid frame");

        assert_eq!(req.payload, Value::Null);
    }

    #[test]
    fn malformed_requests_give_typed_errors() {
        let cases: [(&[u8], FrameError); 7] = [
            (b"", FrameError::NotJson),
            (b"[\"r\",", FrameError::NotJson),
            (b"null", FrameError::NotJson),
            (b"{\"rid\":\"r\"}", FrameError::Shape),
            (b"[]", FrameError::Shape),
            (b"[1,\"k\",null]", FrameError::Shape),
            (b"[\"r\",7,null]", FrameError::Key { rid: "r".into() }),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_request(bytes, 100), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn oversized_request_is_refused_before_parsing() {
        let frame = encode_request(RID, "k", &json!("x".repeat(100)));

        let err = decode_request(&frame, 64);

        assert_eq!(
            err,
            Err(FrameError::TooLarge {
                len: frame.len(),
                max: 64
            })
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("[\"r\",\"k\",{}{}]", "[".repeat(10_000), "]".repeat(10_000));

        assert_eq!(
            decode_request(deep.as_bytes(), 1 << 20),
            Err(FrameError::Payload {
                rid: "r".into(),
                why: PayloadError::TooDeep
            })
        );
        let no_rid = format!("[{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            decode_request(no_rid.as_bytes(), 1 << 20),
            Err(FrameError::Shape)
        );
    }

    #[test]
    fn payloads_node_wrote_pass_through_byte_for_byte() {
        // Issue 17: serde_json without preserve_order sent these keys back sorted.
        let frame =
            r#"["r","k",{"z":1,"a":2,"m":3,"B":4,"é":5,"10":6,"9":7,"f":1e+21}]"#.as_bytes();

        let req = decode_request(frame, 1000).expect("valid frame");
        let again = encode_request(&req.rid, &req.key, &req.payload);
        let reply = encode_reply(&req.rid, Ok(&req.payload));

        assert_eq!(again, frame);
        assert_eq!(
            reply,
            r#"["r",null,{"z":1,"a":2,"m":3,"B":4,"é":5,"10":6,"9":7,"f":1e+21}]"#.as_bytes()
        );
    }

    #[test]
    fn a_lone_surrogate_is_refused_to_its_rid_not_changed() {
        // Node's JSON.parse takes `"\ud800 x"`; a Rust string cannot hold it.
        let frame = br#"["r1","k",{"s":"\ud800 x"}]"#;
        let refused = FrameError::Payload {
            rid: "r1".into(),
            why: PayloadError::LoneSurrogate,
        };

        assert_eq!(decode_request(frame, 1000), Err(refused.clone()));
        assert_eq!(
            ws_error_reply(&refused),
            Some(br#"["r1","ERR_PAYLOAD_LONE_SURROGATE",null]"#.to_vec())
        );
        assert_eq!(
            http_error_reply(&refused).body,
            br#"["r1","ERR_PAYLOAD_LONE_SURROGATE",null]"#
        );
        assert_eq!(decode_reply(br#"["r1",null,"\udfff"]"#, 1000), Err(refused));
        assert_eq!(
            decode_reply(br#"["r1","\ud800",null]"#, 1000).map_err(|e| e.rid().map(str::to_owned)),
            Err(Some("r1".into()))
        );
        // Past the payload Node ignores items, and so do we.
        let extra = decode_request(br#"["r1","k",1,"\ud800"]"#, 1000).map(|r| r.payload);
        assert_eq!(extra, Ok(json!(1)));
        assert_eq!(
            decode_request(br#"["\ud800","k",1]"#, 1000),
            Err(FrameError::Shape)
        );
        assert_eq!(
            decode_request(br#"["r1","\ud800",1]"#, 1000),
            Err(FrameError::Key { rid: "r1".into() })
        );
    }

    #[test]
    fn reply_error_follows_js_truthiness() {
        let ok = decode_reply(br#"["r",null,5]"#, 100).expect("frame");
        let empty_err = decode_reply(br#"["r","",5]"#, 100).expect("frame");
        let err = decode_reply(br#"["r","ERR_X",null]"#, 100).expect("frame");
        let obj_err = decode_reply(br#"["r",{"a":1}]"#, 100).expect("frame");
        let short = decode_reply(br#"["r"]"#, 100).expect("frame");

        assert_eq!(ok.result, Ok(json!(5)));
        assert_eq!(empty_err.result, Ok(json!(5)));
        assert_eq!(err.result, Err("ERR_X".into()));
        assert_eq!(obj_err.result, Err(r#"{"a":1}"#.into()));
        assert_eq!(short.result, Ok(Value::Null));
    }

    #[test]
    fn falsy_reply_bodies_are_not_json() {
        for body in [&b"0"[..], b"false", b"\"\"", b"null", b"garbage"] {
            assert_eq!(
                decode_reply(body, 100),
                Err(FrameError::NotJson),
                "{body:?}"
            );
        }
    }

    #[test]
    fn gzip_round_trips_and_has_nodes_header() {
        let plain = encode_request(RID, "k", &json!({"big": "y".repeat(1000)}));

        let packed = gzip(&plain);

        assert_eq!(&packed[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
        assert!(packed.len() < plain.len());
        assert_eq!(gunzip(&packed, plain.len()), Ok(plain));
    }

    #[test]
    fn gunzip_reads_concatenated_members() {
        let mut two = gzip(b"[\"r\",");
        two.extend(gzip(b"\"k\",1]"));

        assert_eq!(gunzip(&two, 100), Ok(b"[\"r\",\"k\",1]".to_vec()));
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 1 << 20]);

        let err = gunzip(&bomb, 4096);

        assert_eq!(
            err,
            Err(FrameError::TooLarge {
                len: 4097,
                max: 4096
            })
        );
    }

    #[test]
    fn gunzip_of_garbage_is_a_compression_error() {
        assert_eq!(gunzip(b"not gzip", 100), Err(FrameError::Compression));
    }

    #[test]
    fn http_server_inflates_and_answers_in_kind() {
        let body = gzip(&encode_request(RID, "svc", &json!(1)));

        let (req, comp) =
            decode_http_request(Some("gzip"), &body, DEFAULT_MAX_FRAME_LEN).expect("request");
        let reply = encode_http_reply(&req.rid, Ok(&json!(2)), comp);

        assert_eq!(comp, Compression::Gzip);
        assert_eq!(req.key, "svc");
        assert_eq!(
            gunzip(&reply, 1000),
            Ok(format!(r#"["{RID}",null,2]"#).into_bytes())
        );
    }

    #[test]
    fn http_server_falls_back_to_the_raw_body_like_node() {
        let body = encode_request(RID, "svc", &json!(1));

        let (req, comp) = decode_http_request(Some("gzip"), &body, 1000).expect("request");

        assert_eq!(req.rid, RID);
        assert_eq!(comp, Compression::Gzip);
    }

    #[test]
    fn compress_header_is_read_like_node() {
        assert_eq!(Compression::from_header(None), Compression::None);
        assert_eq!(Compression::from_header(Some("none")), Compression::None);
        assert_eq!(Compression::from_header(Some("x-gzip")), Compression::Gzip);
        assert_eq!(Compression::Gzip.header_value(), "gzip");
    }

    #[test]
    fn bad_requests_get_an_answer() {
        let too_big = http_error_reply(&FrameError::TooLarge { len: 9, max: 8 });
        let no_key = http_error_reply(&FrameError::Key { rid: "r1".into() });

        assert_eq!(too_big.status, 413);
        assert_eq!(too_big.body, br#"[null,"ERR_FRAME_TOO_LARGE: 9 > 8",null]"#);
        assert_eq!(no_key.status, 400);
        assert_eq!(no_key.body, br#"["r1","ERR_FRAME_KEY",null]"#);
        assert_eq!(ws_error_reply(&FrameError::NotJson), None);
        assert_eq!(
            ws_error_reply(&FrameError::Key { rid: "r1".into() }),
            Some(br#"["r1","ERR_FRAME_KEY",null]"#.to_vec())
        );
    }
}
