//! HTTP request streams in grenache-nodejs-http's format (docs/protocol.md §6.4).
//!
//! A client that has more to send than one frame should hold streams it instead: a
//! chunked `POST` whose body is raw bytes, not a frame. What a frame would carry travels
//! in headers: `_gr` is the JSON text `[rid, key]`, `_a` an optional action name and `_ar`
//! optional JSON arguments. The server hands the body to a streaming handler as it
//! arrives and answers with an ordinary reply frame `[rid, err, result]`, never gzipped
//! (Node's stream reply ignores `grc-compress`).
//!
//! The rules here are the ones both ends share: reading and writing the headers, which
//! requests are streams, the byte budget of one stream, and the replies to a stream that
//! could not be read. Node answers a `_gr` it cannot parse with status 500 and the body
//! `[null, "ERR_HEADER_PARSE_GR", null]` (with its spaces), and so do we.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::peer::error::RpcError;
use crate::peer::framing::{encode_reply, push_json, push_json_str};
use crate::peer::types::{HttpResponse, PeerAddr, TransportError};

/// Header with the JSON text `[rid, key]`.
pub const GR_HEADER: &str = "_gr";
/// Header with the action name (optional).
pub const ACTION_HEADER: &str = "_a";
/// Header with the JSON arguments (optional).
pub const ARGS_HEADER: &str = "_ar";
/// The error a stream with an unreadable `_gr` gets.
pub const ERR_HEADER_PARSE_GR: &str = "ERR_HEADER_PARSE_GR";
/// Default bound on one stream's body; Node has none, we need one.
pub const DEFAULT_MAX_STREAM_LEN: usize = 64 << 20;

/// Node's body for an unreadable `_gr`, byte for byte (a literal in its server).
const HEADER_PARSE_GR_BODY: &[u8] = b"[null, \"ERR_HEADER_PARSE_GR\", null]";

/// What a request stream carries besides its body.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamHead {
    /// Request id; the reply names it.
    pub rid: String,
    /// Service name the client looked up.
    pub key: String,
    /// The `_a` header: what the client asks the service to do with the body.
    pub action: Option<String>,
    /// The `_ar` header's JSON; `{}` when absent or not JSON, as Node's server reads it.
    pub args: Value,
}

/// Why a request's headers do not make a stream the server can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamHeadError {
    /// A chunked request with no `_gr`: the server cannot tell whose stream it is.
    #[error("ERR_HEADER_PARSE_GR: no _gr header")]
    Missing,
    /// `_gr` is not JSON (what Node refuses).
    #[error("ERR_HEADER_PARSE_GR: _gr is not JSON")]
    NotJson,
    /// `_gr` is JSON but not `[rid, key]` with two strings.
    #[error("ERR_HEADER_PARSE_GR: _gr is not [rid, key]")]
    Shape,
}

impl StreamHead {
    /// The head of a stream to `key` with request id `rid`, no action, no arguments.
    pub fn new(rid: impl Into<String>, key: impl Into<String>) -> Self {
        StreamHead {
            rid: rid.into(),
            key: key.into(),
            action: None,
            args: Value::Object(serde_json::Map::new()),
        }
    }

    /// Reads a request's headers (raw bytes; `None` when absent), as a server that takes
    /// streams (`takes_streams`) or not.
    ///
    /// `Ok(None)`: not a stream, serve it as an ordinary request. A request is a stream
    /// when it has `_gr`; a chunked one without `_gr`, to a server that takes streams, is
    /// [`StreamHeadError::Missing`]. A bad `_gr` is refused by every server, as Node's
    /// refuses it before looking at the body.
    ///
    /// # Errors
    /// [`StreamHeadError`]; answer it with [`header_error_reply`].
    pub fn from_headers(
        gr: Option<&[u8]>,
        action: Option<&[u8]>,
        args: Option<&[u8]>,
        chunked: bool,
        takes_streams: bool,
    ) -> Result<Option<StreamHead>, StreamHeadError> {
        let Some(gr) = gr else {
            if chunked && takes_streams {
                return Err(StreamHeadError::Missing);
            }
            return Ok(None);
        };
        let parsed: Value = serde_json::from_slice(gr).map_err(|_| StreamHeadError::NotJson)?;
        let Value::Array(items) = parsed else {
            return Err(StreamHeadError::Shape);
        };
        let (Some(Value::String(rid)), Some(Value::String(key))) = (items.first(), items.get(1))
        else {
            return Err(StreamHeadError::Shape);
        };
        if !takes_streams {
            return Ok(None);
        }
        let action = action
            .and_then(|a| std::str::from_utf8(a).ok())
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        let args = args
            .and_then(|a| serde_json::from_slice(a).ok())
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        Ok(Some(StreamHead {
            rid: rid.clone(),
            key: key.clone(),
            action,
            args,
        }))
    }

    /// The headers a client sends, as grenache-nodejs-http's `requestStream` writes them
    /// (`_gr` by `JSON.stringify`, `_ar` as JSON); the body goes chunked.
    pub fn headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut gr = Vec::with_capacity(self.rid.len() + self.key.len() + 8);
        gr.push(b'[');
        push_json_str(&mut gr, self.rid.as_str());
        gr.push(b',');
        push_json_str(&mut gr, self.key.as_str());
        gr.push(b']');
        let mut headers = vec![(GR_HEADER, gr)];
        if let Some(action) = &self.action {
            headers.push((ACTION_HEADER, action.clone().into_bytes()));
        }
        if self.args.as_object().is_none_or(|o| !o.is_empty()) {
            let mut args = Vec::new();
            push_json(&mut args, &self.args);
            headers.push((ARGS_HEADER, args));
        }
        headers
    }
}

/// Node's answer to a stream whose `_gr` it cannot read: 500,
/// `[null, "ERR_HEADER_PARSE_GR", null]`.
pub fn header_error_reply() -> HttpResponse {
    HttpResponse {
        status: 500,
        body: HEADER_PARSE_GR_BODY.to_vec(),
    }
}

/// A stream passed its server's size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ERR_STREAM_TOO_LARGE: {len} > {max}")]
pub struct StreamTooLarge {
    /// Bytes seen (a lower bound: reading stopped there).
    pub len: u64,
    /// The limit.
    pub max: u64,
}

impl StreamTooLarge {
    /// The server's answer: 413 and `[rid, "ERR_STREAM_TOO_LARGE: len > max", null]`,
    /// whatever the handler made of the cut body.
    pub fn reply(&self, rid: &str) -> HttpResponse {
        HttpResponse {
            status: 413,
            body: encode_reply(rid, Err(&self.to_string())),
        }
    }
}

/// The byte budget of one stream: every chunk is counted before the handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamBudget {
    read: u64,
    max: u64,
}

impl StreamBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        StreamBudget {
            read: 0,
            max: u64::try_from(max).unwrap_or(u64::MAX),
        }
    }

    /// Counts `len` more bytes (a chunk, or a declared `content-length` up front).
    ///
    /// # Errors
    /// [`StreamTooLarge`] once the total passes the limit; it stays passed.
    pub fn take(&mut self, len: u64) -> Result<(), StreamTooLarge> {
        self.read = self.read.saturating_add(len);
        if self.read > self.max {
            return Err(StreamTooLarge {
                len: self.read,
                max: self.max,
            });
        }
        Ok(())
    }

    /// Bytes counted so far.
    pub fn read(&self) -> u64 {
        self.read
    }
}

/// Per-stream options of a client; `StreamOptions::default()` takes the timeout from
/// [`RpcConfig`](crate::peer::RpcConfig) and sends no action and no arguments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamOptions {
    /// Time for the whole exchange (the body and the reply), instead of
    /// [`RpcConfig::timeout`](crate::peer::RpcConfig).
    pub timeout: Option<Duration>,
    /// The `_a` header.
    pub action: Option<String>,
    /// The `_ar` header's JSON (omitted when `None`).
    pub args: Option<Value>,
}

impl StreamOptions {
    /// Sets the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the action (`_a`).
    #[must_use]
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// Sets the arguments (`_ar`).
    #[must_use]
    pub fn args(mut self, args: Value) -> Self {
        self.args = Some(args);
        self
    }
}

/// One attempt of a request stream, as [`Client::plan_stream`](crate::peer::Client::plan_stream)
/// chose it: where it goes and what its headers say. The adapter sends the body to `url`
/// (a fresh connection, chunked, with [`StreamHead::headers`]) before `deadline`, and reads
/// the answer with [`read_reply`](Self::read_reply).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamPlan {
    /// The chosen peer.
    pub peer: PeerAddr,
    /// `http://` or `https://` URL of the peer.
    pub url: String,
    /// The headers' content.
    pub head: StreamHead,
    /// When the attempt fails with [`RpcError::Timeout`].
    pub deadline: Instant,
    pub(crate) max_reply_len: usize,
}

impl StreamPlan {
    /// What the peer's answer means, as for an ordinary HTTP request: the result, the
    /// peer's error, or why the answer is not one.
    ///
    /// # Errors
    /// [`RpcError::Remote`] (the handler's error), [`RpcError::Request`] (no answer, or
    /// a non-2xx status with its body: a 500 `ERR_HEADER_PARSE_GR`, a 413
    /// `ERR_STREAM_TOO_LARGE`), or a reply that is not a frame for this rid.
    pub fn read_reply(
        &self,
        reply: Result<HttpResponse, TransportError>,
    ) -> Result<Value, RpcError> {
        crate::peer::rpc::read_http_reply(&self.head.rid, false, reply, self.max_reply_len)
    }

    /// The longest reply worth reading: read one byte past it and
    /// [`read_reply`](Self::read_reply) calls it too large.
    pub fn max_reply_len(&self) -> usize {
        self.max_reply_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head(gr: &str) -> Result<Option<StreamHead>, StreamHeadError> {
        StreamHead::from_headers(Some(gr.as_bytes()), None, None, true, true)
    }

    #[test]
    fn headers_round_trip_as_node_writes_them() {
        let mut sent = StreamHead::new("r1", "svc");
        sent.action = Some("upload".into());
        sent.args = json!({"name": "a.txt", "n": 1});

        let headers = sent.headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_slice())
        };
        let read = StreamHead::from_headers(
            get(GR_HEADER),
            get(ACTION_HEADER),
            get(ARGS_HEADER),
            true,
            true,
        );

        assert_eq!(get(GR_HEADER), Some(&br#"["r1","svc"]"#[..]));
        assert_eq!(get(ARGS_HEADER), Some(&br#"{"name":"a.txt","n":1}"#[..]));
        assert_eq!(read, Ok(Some(sent)));
        assert_eq!(StreamHead::new("r", "k").headers().len(), 1, "only _gr");
    }

    #[test]
    fn bad_gr_is_refused_with_nodes_exact_reply() {
        assert_eq!(head("not json"), Err(StreamHeadError::NotJson));
        assert_eq!(head("[\"r\""), Err(StreamHeadError::NotJson));
        assert_eq!(head("{\"rid\":\"r\"}"), Err(StreamHeadError::Shape));
        assert_eq!(head("[\"r\"]"), Err(StreamHeadError::Shape));
        assert_eq!(head("[1,\"k\"]"), Err(StreamHeadError::Shape));
        assert_eq!(
            StreamHead::from_headers(Some(b"nope"), None, None, false, false),
            Err(StreamHeadError::NotJson),
            "refused even by a server without a stream handler, as Node does"
        );

        let reply = header_error_reply();

        assert_eq!(reply.status, 500);
        assert_eq!(reply.body, b"[null, \"ERR_HEADER_PARSE_GR\", null]");
    }

    #[test]
    fn which_requests_are_streams() {
        let plain = StreamHead::from_headers(None, None, None, false, true);
        let chunked_no_gr = StreamHead::from_headers(None, None, None, true, true);
        let chunked_elsewhere = StreamHead::from_headers(None, None, None, true, false);
        let good_gr_elsewhere =
            StreamHead::from_headers(Some(br#"["r","k"]"#), None, None, true, false);

        assert_eq!(plain, Ok(None));
        assert_eq!(chunked_no_gr, Err(StreamHeadError::Missing));
        assert_eq!(chunked_elsewhere, Ok(None));
        assert_eq!(good_gr_elsewhere, Ok(None));
    }

    #[test]
    fn args_are_read_leniently_like_node() {
        let bad =
            StreamHead::from_headers(Some(br#"["r","k"]"#), Some(b""), Some(b"{oops"), true, true)
                .expect("readable")
                .expect("a stream");

        assert_eq!(bad.action, None);
        assert_eq!(bad.args, json!({}));
    }

    #[test]
    fn budget_stops_past_the_limit() {
        let mut budget = StreamBudget::new(10);

        assert_eq!(budget.take(6), Ok(()));
        assert_eq!(budget.take(4), Ok(()));
        let err = budget.take(1).expect_err("over");

        assert_eq!(err, StreamTooLarge { len: 11, max: 10 });
        assert_eq!(budget.take(0), Err(StreamTooLarge { len: 11, max: 10 }));
        let reply = err.reply("r1");
        assert_eq!(reply.status, 413);
        assert_eq!(
            reply.body,
            br#"["r1","ERR_STREAM_TOO_LARGE: 11 > 10",null]"#
        );
    }
}
