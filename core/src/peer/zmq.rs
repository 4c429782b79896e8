//! Grenache RPC and PUB/SUB over ZeroMQ (docs/zeromq-wire.md), on top of the ZMTP
//! connections of [`crate::peer::zmtp`].
//!
//! The frames follow grenache-nodejs-zmq: a DEALER sends `[rid, key, payload]`, the
//! ROUTER answers `[rid, result]` on the same connection. Where that package is silent we
//! choose, without breaking its frames:
//! * payload and result are JSON text, like the HTTP and WebSocket transports; a frame
//!   that is not JSON is read as a string (grenache-nodejs-zmq sent raw strings);
//! * an error is `[rid, message, "ERR"]`: the third frame marks it. An old client reads
//!   only two frames and takes a result starting with `ERR_` for an error, so a message
//!   that does not start with `ERR_` is sent as `ERR_` + message ([`zmq_error_text`]);
//!   a two-frame raw string starting with `ERR_` from an old server is read as an error too;
//! * a publisher sends each message as one frame, verbatim; a subscriber subscribes to
//!   everything (grenache-nodejs-zmq forgot to subscribe at all).
//!
//! [`ZmqServerConn`] and [`ZmqPubConn`] are the server-side halves, one per accepted
//! TCP connection: the adapter feeds them bytes and writes what they give back. The
//! client side lives in [`crate::peer::Client`] (`RpcTransport::Zmq`,
//! `PubSubTransport::Zmq`).

use std::borrow::Cow;
use std::collections::VecDeque;

use serde_json::Value;

use crate::peer::framing::{FrameError, ReplyFrame, RequestFrame, push_json};
use crate::peer::json::{JsonError, read_json};
use crate::peer::zmtp::{
    Connection, CurvePublicKey, Limits, Security, SocketType, ZmtpError, ZmtpEvent,
};
use rand::RngCore;

/// The third frame of an error reply.
pub(crate) const ZMQ_ERROR_MARKER: &[u8] = b"ERR";

/// How every error text on ZeroMQ starts, so that old clients see an error.
pub(crate) const ZMQ_ERROR_PREFIX: &str = "ERR_";

/// Subscription prefixes one subscriber may hold; more are ignored (and logged).
const MAX_PREFIXES: usize = 64;

/// ZMTP limits for a connection whose messages hold frames of at most `max_frame_len`.
pub(crate) fn limits(max_frame_len: usize, max_queued: usize) -> Limits {
    Limits {
        // rid and key besides the payload: a few hundred bytes at most.
        max_message_len: max_frame_len.saturating_add(1024),
        max_frames: 8,
        max_queued: max_queued.max(1),
    }
}

/// A frame as JSON, or, when it is not JSON at all, as the string it holds (old
/// grenache-nodejs-zmq peers sent raw strings). JSON we cannot hold is refused with its
/// reason: read as a string it would reach the handler as a different value.
fn lenient_json(rid: &str, frame: &[u8]) -> Result<Value, FrameError> {
    match read_json(frame) {
        Ok(value) => Ok(value),
        Err(JsonError::NotJson) => Ok(Value::String(String::from_utf8_lossy(frame).into_owned())),
        Err(JsonError::Refused(why)) => Err(FrameError::Payload {
            rid: rid.to_owned(),
            why,
        }),
    }
}

/// The frames of a request: `[rid, key, payload JSON]`.
#[cfg(test)]
pub(crate) fn encode_zmq_request(rid: &str, key: &str, payload: &Value) -> Vec<Vec<u8>> {
    let mut json = Vec::new();
    push_json(&mut json, payload);
    vec![rid.as_bytes().to_vec(), key.as_bytes().to_vec(), json]
}

/// Reads a request's frames (as the ROUTER received them, without the identity).
///
/// # Errors
/// [`FrameError::Shape`] without a UTF-8 rid, [`FrameError::Key`] without a UTF-8 key
/// (the rid is kept, so the client gets an error reply instead of a timeout),
/// [`FrameError::Payload`] for a JSON payload we cannot pass on unchanged.
pub(crate) fn decode_zmq_request(frames: &[Vec<u8>]) -> Result<RequestFrame, FrameError> {
    let rid = frames
        .first()
        .and_then(|f| std::str::from_utf8(f).ok())
        .filter(|rid| !rid.is_empty())
        .ok_or(FrameError::Shape)?
        .to_owned();
    let Some(key) = frames.get(1).and_then(|f| std::str::from_utf8(f).ok()) else {
        return Err(FrameError::Key { rid });
    };
    let payload = match frames.get(2) {
        Some(frame) => lenient_json(&rid, frame)?,
        None => Value::Null,
    };
    Ok(RequestFrame {
        rid,
        key: key.to_owned(),
        payload,
    })
}

/// The frames of a reply: `[rid, result JSON]`, or `[rid, message, "ERR"]`.
pub(crate) fn encode_zmq_reply(rid: &str, result: Result<&Value, &str>) -> Vec<Vec<u8>> {
    match result {
        Ok(value) => {
            let mut json = Vec::new();
            push_json(&mut json, value);
            vec![rid.as_bytes().to_vec(), json]
        }
        Err(message) => vec![
            rid.as_bytes().to_vec(),
            zmq_error_text(message).into_owned().into_bytes(),
            ZMQ_ERROR_MARKER.to_vec(),
        ],
    }
}

/// The error text an error reply carries: `message` when it starts with `ERR_`, otherwise
/// `ERR_` + `message`. An original grenache-nodejs-zmq client reads only `[rid, data]` and
/// takes `data` for an error only when it starts with `ERR_`, so without the prefix a
/// handler's `Err("boom")` would reach it as the successful result `"boom"`.
pub(crate) fn zmq_error_text(message: &str) -> Cow<'_, str> {
    if message.starts_with(ZMQ_ERROR_PREFIX) {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(format!("{ZMQ_ERROR_PREFIX}{message}"))
    }
}

/// Reads a reply's frames.
///
/// # Errors
/// [`FrameError::Shape`]: not `[rid, result]` or `[rid, message, "ERR"]` with a UTF-8 rid;
/// [`FrameError::Payload`]: a JSON result we cannot pass on unchanged.
pub(crate) fn decode_zmq_reply(frames: &[Vec<u8>]) -> Result<ReplyFrame, FrameError> {
    let (rid, body, marker) = match frames {
        [rid, body] => (rid, body, None),
        [rid, body, marker] => (rid, body, Some(marker)),
        _ => return Err(FrameError::Shape),
    };
    let rid = std::str::from_utf8(rid)
        .map_err(|_| FrameError::Shape)?
        .to_owned();
    let result = match marker {
        Some(m) if m.as_slice() == ZMQ_ERROR_MARKER => {
            Err(String::from_utf8_lossy(body).into_owned())
        }
        Some(_) => return Err(FrameError::Shape),
        // grenache-nodejs-base's rule for raw strings: `ERR_…` is an error.
        None if body.starts_with(ZMQ_ERROR_PREFIX.as_bytes()) => {
            Err(String::from_utf8_lossy(body).into_owned())
        }
        None => Ok(lenient_json(&rid, body)?),
    };
    Ok(ReplyFrame { rid, result })
}

/// Counters of one server-side connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZmqConnStats {
    /// Messages that were not a request (answered with an error when they had a rid).
    pub bad_frames: u64,
}

/// One client connection of a ZeroMQ RPC server (the ROUTER side), sans-IO.
///
/// Feed it what the socket reads ([`handle_input`](Self::handle_input)), take requests
/// ([`poll_request`](Self::poll_request)), answer them in any order
/// ([`reply`](Self::reply)), and write [`take_output`](Self::take_output) to the socket
/// after each of those calls. An `Err` from `handle_input` ends the connection: write the
/// output (it may hold an ERROR command for the peer), then close.
#[derive(Debug)]
pub struct ZmqServerConn {
    zmtp: Connection,
    max_frame_len: usize,
    requests: VecDeque<RequestFrame>,
    stats: ZmqConnStats,
}

impl ZmqServerConn {
    /// A connection whose requests and replies are at most `max_frame_len` bytes of JSON;
    /// our greeting is in the output at once.
    pub fn new(max_frame_len: usize) -> Self {
        let zmtp = Connection::new(SocketType::Router, Vec::new(), limits(max_frame_len, 64));
        ZmqServerConn::over(zmtp, max_frame_len)
    }

    /// The same with `security` (CURVE as the server, normally); CURVE's random bytes
    /// come from `rng`.
    pub fn secure(max_frame_len: usize, security: &Security, rng: &mut impl RngCore) -> Self {
        let limits = limits(max_frame_len, 64);
        let zmtp = Connection::secure(SocketType::Router, Vec::new(), limits, security, rng);
        ZmqServerConn::over(zmtp, max_frame_len)
    }

    fn over(zmtp: Connection, max_frame_len: usize) -> Self {
        ZmqServerConn {
            zmtp,
            max_frame_len,
            requests: VecDeque::new(),
            stats: ZmqConnStats::default(),
        }
    }

    /// Reads bytes from the socket; decoded requests wait in [`poll_request`](Self::poll_request).
    ///
    /// # Errors
    /// A ZMTP error: the connection is dead.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ZmtpError> {
        let result = self.zmtp.handle_input(bytes);
        while let Some(event) = self.zmtp.poll_event() {
            let ZmtpEvent::Message(frames) = event else {
                continue;
            };
            match decode_zmq_request(&frames) {
                Ok(request) => self.requests.push_back(request),
                Err(err) => {
                    self.stats.bad_frames += 1;
                    tracing::debug!(%err, "unreadable ZeroMQ request");
                    if let Some(rid) = err.rid() {
                        let reply = encode_zmq_reply(rid, Err(&err.to_string()));
                        self.send(&reply)?;
                    }
                }
            }
        }
        result
    }

    /// The next request read.
    pub fn poll_request(&mut self) -> Option<RequestFrame> {
        self.requests.pop_front()
    }

    /// Answers `rid`; a result longer than the frame limit is answered
    /// `ERR_REPLY_TOO_LARGE` instead.
    ///
    /// # Errors
    /// A ZMTP error: the connection is dead.
    pub fn reply(&mut self, rid: &str, result: Result<&Value, &str>) -> Result<(), ZmtpError> {
        let frames = encode_zmq_reply(rid, result);
        if frames.iter().map(Vec::len).sum::<usize>() > self.max_frame_len {
            tracing::warn!(max = self.max_frame_len, "reply over the frame limit");
            return self.send(&encode_zmq_reply(rid, Err(super::ERR_REPLY_TOO_LARGE)));
        }
        self.send(&frames)
    }

    /// Whether the handshake is done (a peer that never gets here should be dropped).
    pub fn is_ready(&self) -> bool {
        self.zmtp.is_ready()
    }

    /// Bytes to write to the socket.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.zmtp.take_output()
    }

    /// The ZMTP connection underneath (heartbeats, the CURVE client key).
    pub fn zmtp(&mut self) -> &mut Connection {
        &mut self.zmtp
    }

    /// Under CURVE, the client's long-term key once its handshake passed.
    pub fn curve_client_key(&self) -> Option<CurvePublicKey> {
        self.zmtp.curve_client_key()
    }

    /// Counters.
    pub fn stats(&self) -> ZmqConnStats {
        self.stats
    }

    fn send(&mut self, frames: &[Vec<u8>]) -> Result<(), ZmtpError> {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        self.zmtp.send(&refs)
    }
}

/// One subscriber connection of a ZeroMQ publisher (the PUB side), sans-IO.
///
/// Feed it what the socket reads (subscriptions), [`publish`](Self::publish) each message,
/// and write [`take_output`](Self::take_output) after each call. A subscriber gets the
/// messages that match one of its prefixes (Grenache subscribers ask for everything),
/// published after its subscription arrived, as ZeroMQ's PUB does.
#[derive(Debug)]
pub struct ZmqPubConn {
    zmtp: Connection,
    prefixes: Vec<Vec<u8>>,
}

impl ZmqPubConn {
    /// A subscriber connection for messages of at most `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        ZmqPubConn {
            zmtp: Connection::new(SocketType::Pub, Vec::new(), limits(max_message_len, 1)),
            prefixes: Vec::new(),
        }
    }

    /// The same with `security` (CURVE as the server, normally); CURVE's random bytes
    /// come from `rng`.
    pub fn secure(max_message_len: usize, security: &Security, rng: &mut impl RngCore) -> Self {
        let limits = limits(max_message_len, 1);
        ZmqPubConn {
            zmtp: Connection::secure(SocketType::Pub, Vec::new(), limits, security, rng),
            prefixes: Vec::new(),
        }
    }

    /// Reads bytes from the socket: the handshake and subscriptions.
    ///
    /// # Errors
    /// A ZMTP error: the connection is dead.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ZmtpError> {
        let result = self.zmtp.handle_input(bytes);
        while let Some(event) = self.zmtp.poll_event() {
            match event {
                ZmtpEvent::Subscribe(prefix) => {
                    if self.prefixes.contains(&prefix) {
                        continue;
                    }
                    if self.prefixes.len() >= MAX_PREFIXES {
                        tracing::debug!("subscriber holds too many prefixes; ignoring one");
                        continue;
                    }
                    self.prefixes.push(prefix);
                }
                ZmtpEvent::Cancel(prefix) => self.prefixes.retain(|p| *p != prefix),
                ZmtpEvent::Ready { .. } | ZmtpEvent::Message(_) => {}
            }
        }
        result
    }

    /// Sends `msg` as one frame if the subscriber asked for it; returns whether it did.
    ///
    /// # Errors
    /// A ZMTP error (a message over the limit): nothing was sent.
    pub fn publish(&mut self, msg: &[u8]) -> Result<bool, ZmtpError> {
        if !self.prefixes.iter().any(|p| msg.starts_with(p)) {
            return Ok(false);
        }
        self.zmtp.send(&[msg])?;
        Ok(true)
    }

    /// Whether the subscriber has subscribed to anything yet.
    pub fn is_subscribed(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Whether the handshake is done.
    pub fn is_ready(&self) -> bool {
        self.zmtp.is_ready()
    }

    /// The ZMTP connection underneath (heartbeats, the CURVE client key).
    pub fn zmtp(&mut self) -> &mut Connection {
        &mut self.zmtp
    }

    /// Bytes to write to the socket.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.zmtp.take_output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RID: &str = "3e4c2c9a-6a0b-4d3c-9a55-08f1b7a3d2e1";

    fn frames(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn request_round_trips() {
        let sent = encode_zmq_request(RID, "rpc_test", &json!({"a": [1, "x"]}));

        let got = decode_zmq_request(&sent).expect("valid");

        assert_eq!(sent, frames(&[RID, "rpc_test", r#"{"a":[1,"x"]}"#]));
        assert_eq!(got.rid, RID);
        assert_eq!(got.key, "rpc_test");
        assert_eq!(got.payload, json!({"a": [1, "x"]}));
    }

    #[test]
    fn raw_string_payloads_of_old_clients_are_strings() {
        let got = decode_zmq_request(&frames(&[RID, "test", "hello"])).expect("valid");

        assert_eq!(got.payload, json!("hello"));
    }

    #[test]
    fn bad_requests_keep_the_rid_when_they_can() {
        assert_eq!(decode_zmq_request(&[]), Err(FrameError::Shape));
        assert_eq!(decode_zmq_request(&frames(&[""])), Err(FrameError::Shape));
        assert_eq!(decode_zmq_request(&[vec![0xff]]), Err(FrameError::Shape));
        assert_eq!(
            decode_zmq_request(&[RID.as_bytes().to_vec(), vec![0xff, 0xfe]]),
            Err(FrameError::Key { rid: RID.into() })
        );
        assert_eq!(
            decode_zmq_request(&frames(&[RID, "k"])).map(|r| r.payload),
            Ok(Value::Null)
        );
    }

    #[test]
    fn replies_round_trip_and_errors_carry_the_marker() {
        let ok = encode_zmq_reply(RID, Ok(&json!("ERR_not_an_error")));
        let err = encode_zmq_reply(RID, Err("ERR_BAD"));

        assert_eq!(ok, frames(&[RID, "\"ERR_not_an_error\""]));
        assert_eq!(err, frames(&[RID, "ERR_BAD", "ERR"]));
        assert_eq!(
            decode_zmq_reply(&ok).map(|r| r.result),
            Ok(Ok(json!("ERR_not_an_error")))
        );
        assert_eq!(
            decode_zmq_reply(&err).map(|r| r.result),
            Ok(Err("ERR_BAD".into()))
        );
    }

    #[test]
    fn errors_start_with_err_so_old_clients_see_them() {
        // Issue 17: `Err("boom")` went out as `[rid, "boom", "ERR"]`, which an original
        // grenache-nodejs-zmq client reads as the result "boom".
        let err = encode_zmq_reply(RID, Err("boom"));

        assert_eq!(err, frames(&[RID, "ERR_boom", "ERR"]));
        assert_eq!(
            decode_zmq_reply(&err).map(|r| r.result),
            Ok(Err("ERR_boom".into()))
        );
        assert_eq!(zmq_error_text("ERR_BUSY"), "ERR_BUSY");
        assert_eq!(zmq_error_text(""), "ERR_");
    }

    #[test]
    fn json_we_cannot_hold_is_refused_not_read_as_a_string() {
        // Issue 17: this payload reached the handler as the string of the whole frame.
        let lone = frames(&[RID, "k", r#"{"s":"\ud800 x"}"#]);
        let refused = FrameError::Payload {
            rid: RID.into(),
            why: crate::peer::PayloadError::LoneSurrogate,
        };

        assert_eq!(decode_zmq_request(&lone), Err(refused.clone()));
        assert_eq!(
            decode_zmq_reply(&frames(&[RID, r#""\udc00""#])),
            Err(refused)
        );
        assert_eq!(
            decode_zmq_request(&frames(&[RID, "k", r#"{"s":"#])).map(|r| r.payload),
            Ok(json!(r#"{"s":"#)),
            "what is not JSON at all is still a raw string"
        );
    }

    #[test]
    fn old_style_raw_replies_follow_grenache_base() {
        let plain = decode_zmq_reply(&frames(&[RID, "world"])).expect("valid");
        let err = decode_zmq_reply(&frames(&[RID, "ERR_TIMEOUT"])).expect("valid");

        assert_eq!(plain.result, Ok(json!("world")));
        assert_eq!(err.result, Err("ERR_TIMEOUT".into()));
    }

    #[test]
    fn malformed_replies_are_shape_errors() {
        for bad in [
            frames(&[RID]),
            frames(&[RID, "1", "NOPE"]),
            frames(&[RID, "1", "ERR", "x"]),
            vec![vec![0xff], b"1".to_vec()],
        ] {
            assert_eq!(decode_zmq_reply(&bad), Err(FrameError::Shape), "{bad:?}");
        }
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(a: &mut Connection, b: &mut ZmqServerConn) {
        loop {
            let ab = a.take_output();
            let ba = b.take_output();
            if ab.is_empty() && ba.is_empty() {
                return;
            }
            b.handle_input(&ab).expect("server reads");
            a.handle_input(&ba).expect("client reads");
        }
    }

    #[test]
    fn server_conn_serves_a_dealer() {
        let mut dealer = Connection::new(SocketType::Dealer, b"me".to_vec(), Limits::default());
        let mut server = ZmqServerConn::new(1024);
        let request = encode_zmq_request(RID, "svc", &json!({"x": 1}));
        let refs: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
        dealer.send(&refs).expect("queued");
        pump(&mut dealer, &mut server);

        let got = server.poll_request().expect("a request");
        server.reply(&got.rid, Ok(&got.payload)).expect("sent");
        server
            .reply(RID, Ok(&json!("x".repeat(2000))))
            .expect("sent");
        pump(&mut dealer, &mut server);
        let replies: Vec<ZmtpEvent> = std::iter::from_fn(|| dealer.poll_event())
            .filter(|e| matches!(e, ZmtpEvent::Message(_)))
            .collect();

        assert_eq!(got.key, "svc");
        assert!(server.is_ready());
        assert_eq!(
            replies,
            vec![
                ZmtpEvent::Message(frames(&[RID, r#"{"x":1}"#])),
                ZmtpEvent::Message(frames(&[RID, "ERR_REPLY_TOO_LARGE", "ERR"])),
            ]
        );
    }

    #[test]
    fn server_conn_answers_a_request_without_key_and_counts_it() {
        let mut dealer = Connection::new(SocketType::Dealer, Vec::new(), Limits::default());
        let mut server = ZmqServerConn::new(1024);
        dealer.send(&[RID.as_bytes(), &[0xff]]).expect("queued");
        pump(&mut dealer, &mut server);
        let replies: Vec<ZmtpEvent> = std::iter::from_fn(|| dealer.poll_event())
            .filter(|e| matches!(e, ZmtpEvent::Message(_)))
            .collect();

        assert!(server.poll_request().is_none());
        assert_eq!(server.stats().bad_frames, 1);
        assert_eq!(
            replies,
            vec![ZmtpEvent::Message(frames(&[RID, "ERR_FRAME_KEY", "ERR"]))]
        );
    }

    #[test]
    fn pub_conn_sends_only_after_a_matching_subscription() {
        let mut sub = Connection::new(SocketType::Sub, Vec::new(), Limits::default());
        let mut publisher = ZmqPubConn::new(1024);
        let deliver = |sub: &mut Connection, publisher: &mut ZmqPubConn| loop {
            let a = sub.take_output();
            let b = publisher.take_output();
            if a.is_empty() && b.is_empty() {
                break;
            }
            publisher.handle_input(&a).expect("pub reads");
            sub.handle_input(&b).expect("sub reads");
        };
        deliver(&mut sub, &mut publisher);

        let before = publisher.publish(b"early").expect("ok");
        sub.subscribe(b"").expect("sub");
        deliver(&mut sub, &mut publisher);
        let after = publisher.publish(b"{\"n\":1}").expect("ok");
        deliver(&mut sub, &mut publisher);
        let got: Vec<ZmtpEvent> = std::iter::from_fn(|| sub.poll_event())
            .filter(|e| matches!(e, ZmtpEvent::Message(_)))
            .collect();

        assert!(!before);
        assert!(after);
        assert!(publisher.is_subscribed());
        assert_eq!(got, vec![ZmtpEvent::Message(vec![b"{\"n\":1}".to_vec()])]);
    }
}
