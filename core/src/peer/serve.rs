//! What an RPC server answers when the handler does not: the rules every transport and
//! both runtimes share, kept here so the adapter only moves bytes.
//!
//! - A handler that panics is answered [`ERR_HANDLER_PANIC`], one that outlives its time
//!   [`ERR_HANDLER_TIMEOUT`]: the client gets an error it can read instead of waiting out
//!   its own timeout.
//! - A result whose frame would pass the frame limit is answered [`ERR_REPLY_TOO_LARGE`]:
//!   the client would refuse the frame anyway, and could not tell why.
//! - A plain JSON HTTP reply says `application/json`; a gzip one carries no type, as
//!   grenache-nodejs-http sends it.

use serde_json::Value;

use super::framing::{Compression, encode_http_reply};

/// The reply when the handler did not finish within its time.
pub const ERR_HANDLER_TIMEOUT: &str = "ERR_HANDLER_TIMEOUT";
/// The reply when the handler panicked.
pub const ERR_HANDLER_PANIC: &str = "ERR_HANDLER_PANIC";
/// The reply when the handler's result is longer than the frame limit.
pub const ERR_REPLY_TOO_LARGE: &str = "ERR_REPLY_TOO_LARGE";

/// Why a handler gave no result of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerFailure {
    /// It panicked (while starting or while running).
    Panicked,
    /// It did not finish within the server's handler timeout.
    TimedOut,
}

impl HandlerFailure {
    /// The error the client gets.
    pub fn error(self) -> &'static str {
        match self {
            HandlerFailure::Panicked => ERR_HANDLER_PANIC,
            HandlerFailure::TimedOut => ERR_HANDLER_TIMEOUT,
        }
    }
}

/// The reply frame for HTTP and WebSocket (`[rid, err, data]`, gzipped when asked), or
/// an [`ERR_REPLY_TOO_LARGE`] frame when the result's would be longer than `max_len`.
pub fn reply_frame(
    rid: &str,
    result: Result<&Value, &str>,
    compression: Compression,
    max_len: usize,
) -> Vec<u8> {
    let frame = encode_http_reply(rid, result, compression);
    if frame.len() > max_len {
        tracing::warn!(
            len = frame.len(),
            max = max_len,
            "reply over the frame limit"
        );
        return encode_http_reply(rid, Err(ERR_REPLY_TOO_LARGE), compression);
    }
    frame
}

/// The `Content-Type` of an HTTP reply body.
pub fn reply_content_type(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::None => Some("application/json"),
        Compression::Gzip => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::framing::{ReplyFrame, decode_reply, gunzip};

    #[test]
    fn a_reply_within_the_limit_is_the_result() {
        let frame = reply_frame("r1", Ok(&Value::from("ok")), Compression::None, 1024);

        assert_eq!(frame, br#"["r1",null,"ok"]"#);
    }

    #[test]
    fn a_reply_over_the_limit_becomes_an_error_the_client_can_read() {
        // Text that gzip cannot shrink below the limit either.
        let mut state = 1u32;
        let noise: String = (0..2000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                char::from(b'a' + u8::try_from((state >> 16) % 26).unwrap_or(0))
            })
            .collect();
        let big = Value::from(noise);

        for compression in [Compression::None, Compression::Gzip] {
            let frame = reply_frame("r2", Ok(&big), compression, 100);
            let plain = match compression {
                Compression::None => frame,
                Compression::Gzip => gunzip(&frame, 4096).expect("gzip"),
            };

            let reply: ReplyFrame = decode_reply(&plain, 1024).expect("a reply frame");
            assert_eq!(reply.rid, "r2");
            assert_eq!(reply.result, Err(ERR_REPLY_TOO_LARGE.to_owned()));
        }
    }

    #[test]
    fn only_plain_replies_are_typed() {
        assert_eq!(
            reply_content_type(Compression::None),
            Some("application/json")
        );
        assert_eq!(reply_content_type(Compression::Gzip), None);
    }

    #[test]
    fn handler_failures_have_their_own_errors() {
        assert_eq!(HandlerFailure::Panicked.error(), "ERR_HANDLER_PANIC");
        assert_eq!(HandlerFailure::TimedOut.error(), "ERR_HANDLER_TIMEOUT");
    }
}
