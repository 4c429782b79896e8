//! Rendering command results the way the Node.js Grape does, for HTTP and WebSocket.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{Map, Value};

use super::error::{ApiError, json_string};
use super::{Reply, RequestId};
use crate::dht::id::hex;

/// Content type of JSON replies.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of plain-text replies (payload errors, overload).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// Content type of `/metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Deepest bencode nesting rendered in a `/get` reply; stored values are at most 1000 bytes.
const MAX_RENDER_DEPTH: usize = 32;

/// What a command produced: the result as JSON text (empty for JavaScript's `undefined`,
/// which the Node Grape sends as an empty body), or an error.
pub(crate) type Answer = Result<Vec<u8>, ApiError>;

/// Frames an answer for HTTP: the result with status 200, or the error's status and body.
pub(crate) fn http_reply(req: RequestId, answer: Answer) -> Reply {
    match answer {
        Ok(body) => Reply {
            req,
            status: 200,
            content_type: CONTENT_TYPE_JSON,
            body,
            more: false,
        },
        Err(err) => Reply {
            req,
            status: err.status(),
            content_type: if err.is_plain_text() {
                CONTENT_TYPE_TEXT
            } else {
                CONTENT_TYPE_JSON
            },
            body: err.http_body(),
            more: false,
        },
    }
}

/// Frames an answer for the WebSocket API: `[rid, err, result]` (docs/protocol.md §3b).
///
/// `rid` is the request's id as JSON text (`null` when it had none). An `undefined` result
/// becomes `null`.
pub(crate) fn ws_reply(req: RequestId, rid: &str, answer: Answer) -> Reply {
    let mut body = Vec::with_capacity(rid.len() + 32);
    body.push(b'[');
    body.extend_from_slice(rid.as_bytes());
    match answer {
        Ok(result) => {
            body.extend_from_slice(b",null,");
            if result.is_empty() {
                body.extend_from_slice(b"null");
            } else {
                body.extend_from_slice(&result);
            }
        }
        Err(err) => {
            body.push(b',');
            body.extend_from_slice(json_string(&err.to_string()).as_bytes());
            body.extend_from_slice(b",null");
        }
    }
    body.push(b']');
    Reply {
        req,
        status: 200,
        content_type: CONTENT_TYPE_JSON,
        body,
        more: false,
    }
}

/// A `/lookup` result: a JSON array of `"host:port"` strings (`[v6]:port` for IPv6).
pub(crate) fn peers_json(peers: &[SocketAddr]) -> Vec<u8> {
    let mut out = String::with_capacity(2 + peers.len() * 24);
    out.push('[');
    for (i, peer) in peers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // A socket address has no characters JSON would escape.
        let _ = write!(out, "\"{peer}\"");
    }
    out.push(']');
    out.into_bytes()
}

/// The mutable-item fields of a `/get` result.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MutableFields<'a> {
    pub(crate) k: &'a [u8; 32],
    pub(crate) salt: &'a [u8],
    pub(crate) seq: i64,
    pub(crate) sig: &'a [u8; 64],
}

/// A `/get` result: `{id, k?, salt?, seq?, sig?, v}` with `id`, `k` and `sig` in hex, `salt`
/// and `v` as strings (Node's `Buffer#toString()`), keys in the bencoded reply's order.
pub(crate) fn item_json(id: &[u8], v: &[u8], mutable: Option<MutableFields<'_>>) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(hex(id)));
    if let Some(f) = mutable {
        m.insert("k".into(), Value::String(hex(f.k)));
        if !f.salt.is_empty() {
            m.insert(
                "salt".into(),
                Value::String(String::from_utf8_lossy(f.salt).into_owned()),
            );
        }
        m.insert("seq".into(), Value::from(f.seq));
        m.insert("sig".into(), Value::String(hex(f.sig)));
    }
    m.insert("v".into(), Value::String(js_string_of_bencode(v)));
    Value::Object(m).to_string().into_bytes()
}

/// JavaScript's `String(value)` of a bencoded value, as the Node Grape's `res.v.toString()`:
/// a byte string as UTF-8 (invalid bytes replaced), an integer in decimal, a list as its
/// items joined by commas, a dict as `[object Object]`. Malformed input comes out as its
/// raw bytes read as UTF-8.
pub(crate) fn js_string_of_bencode(v: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    match render(v, &mut pos, 0, &mut out) {
        Some(()) if pos == v.len() => out,
        _ => String::from_utf8_lossy(v).into_owned(),
    }
}

fn render(b: &[u8], pos: &mut usize, depth: usize, out: &mut String) -> Option<()> {
    if depth > MAX_RENDER_DEPTH {
        return None;
    }
    match *b.get(*pos)? {
        b'i' => {
            let end = *pos + b.get(*pos..)?.iter().position(|&c| c == b'e')?;
            let digits = std::str::from_utf8(b.get(*pos + 1..end)?).ok()?;
            let n: i64 = digits.parse().ok()?;
            let _ = write!(out, "{n}");
            *pos = end + 1;
        }
        b'0'..=b'9' => {
            let bytes = byte_string(b, pos)?;
            out.push_str(&String::from_utf8_lossy(bytes));
        }
        b'l' => {
            *pos += 1;
            let mut first = true;
            while *b.get(*pos)? != b'e' {
                if !first {
                    out.push(',');
                }
                first = false;
                render(b, pos, depth + 1, out)?;
            }
            *pos += 1;
        }
        b'd' => {
            *pos += 1;
            let mut ignored = String::new();
            while *b.get(*pos)? != b'e' {
                byte_string(b, pos)?;
                render(b, pos, depth + 1, &mut ignored)?;
            }
            *pos += 1;
            out.push_str("[object Object]");
        }
        _ => return None,
    }
    Some(())
}

fn byte_string<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let colon = *pos + b.get(*pos..)?.iter().position(|&c| c == b':')?;
    let len: usize = std::str::from_utf8(b.get(*pos..colon)?)
        .ok()?
        .parse()
        .ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    let bytes = b.get(start..end)?;
    *pos = end;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_render_as_host_port_strings() {
        let peers: Vec<SocketAddr> = vec![
            "127.0.0.1:1337".parse().expect("addr"),
            "[::1]:80".parse().expect("addr"),
        ];

        let body = peers_json(&peers);

        assert_eq!(body, br#"["127.0.0.1:1337","[::1]:80"]"#);
        assert_eq!(peers_json(&[]), b"[]");
    }

    #[test]
    fn http_reply_of_an_error_uses_its_status() {
        let reply = http_reply(RequestId(1), Err(ApiError::PayloadSize));

        assert_eq!(reply.status, 413);
        assert_eq!(reply.content_type, CONTENT_TYPE_TEXT);
        assert_eq!(reply.body, b"ERR_GRAPE_PAYLOAD_SIZE");
    }

    #[test]
    fn http_reply_of_undefined_is_empty() {
        let reply = http_reply(RequestId(1), Ok(Vec::new()));

        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty());
    }

    #[test]
    fn ws_reply_is_rid_err_result() {
        let ok = ws_reply(RequestId(1), "\"r1\"", Ok(b"[\"1.2.3.4:5\"]".to_vec()));
        let err = ws_reply(RequestId(2), "7", Err(ApiError::Lookup));
        let undefined = ws_reply(RequestId(3), "null", Ok(Vec::new()));

        assert_eq!(ok.body, br#"["r1",null,["1.2.3.4:5"]]"#);
        assert_eq!(err.body, br#"[7,"ERR_GRAPE_LOOKUP",null]"#);
        assert_eq!(undefined.body, b"[null,null,null]");
    }

    #[test]
    fn immutable_item_renders_id_and_v() {
        let body = item_json(&[0xab; 20], b"11:hello world", None);

        let want = format!(r#"{{"id":"{}","v":"hello world"}}"#, "ab".repeat(20));
        assert_eq!(String::from_utf8(body).expect("utf8"), want);
    }

    #[test]
    fn mutable_item_renders_hex_keys_and_salt_string() {
        let fields = MutableFields {
            k: &[1; 32],
            salt: b"s",
            seq: 3,
            sig: &[2; 64],
        };

        let body = item_json(&[0; 20], b"1:x", Some(fields));

        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["k"], Value::String("01".repeat(32)));
        assert_eq!(v["sig"], Value::String("02".repeat(64)));
        assert_eq!(v["salt"], "s");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["v"], "x");
    }

    #[test]
    fn v_renders_like_javascript_to_string() {
        assert_eq!(js_string_of_bencode(b"i-42e"), "-42");
        assert_eq!(js_string_of_bencode(b"l1:ai1el1:b1:cee"), "a,1,b,c");
        assert_eq!(js_string_of_bencode(b"d1:ai1ee"), "[object Object]");
        assert_eq!(js_string_of_bencode(b"2:\xff\xfe"), "\u{fffd}\u{fffd}");
        assert_eq!(js_string_of_bencode(b"5:ab"), "5:ab");
        assert_eq!(js_string_of_bencode(b"1:ab"), "1:ab");
    }
}
