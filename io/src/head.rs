//! A connection's first request head, read before the library that serves the connection
//! (hyper, tungstenite) sees it, so the server can answer what the library would only
//! drop or answer bare: a plain HTTP request on a WebSocket port gets 426 Upgrade
//! Required (a client then knows it met a WebSocket server). What was read is then handed
//! on ([`Replay`]). (The Grape API's JSON 431 for any oversized head, first or later, is
//! written under hyper instead: `grape::too_large`.)
//!
//! Only the first head of a connection is read this way: finding the next one would mean
//! following the body's framing, which is the library's job.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_lite::FutureExt as _;

use crate::runtime::Runtime;
use crate::time::sleep;

/// Longest method a request line may start with before the bytes are taken for another
/// protocol (the longest registered method, `UPDATEREDIRECTREF`, is 17).
const MAX_METHOD: usize = 20;

/// Bytes read per call while looking for the end of a head.
const CHUNK: usize = 4096;

/// What the first bytes of a connection turned out to be.
#[derive(Debug)]
pub(crate) enum FirstHead {
    /// A whole request head; `bytes` may run on past it (a body, a next request).
    Complete(Vec<u8>),
    /// Bytes that cannot start an HTTP request (a ZMTP greeting, say).
    NotHttp,
    /// No end of head within the limit.
    TooLarge,
    /// The client closed the connection, or reading failed.
    Ended,
}

/// Reads until a whole head is in, at most `max` bytes of it. `poll_read` reads into the
/// buffer it is given, as `AsyncRead::poll_read` does.
pub(crate) async fn read_first_head<F>(max: usize, mut poll_read: F) -> FirstHead
where
    F: FnMut(&mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>,
{
    let mut bytes = Vec::with_capacity(CHUNK);
    let mut chunk = [0u8; CHUNK];
    loop {
        let searched = bytes.len().saturating_sub(3);
        let n = match poll_fn(|cx| poll_read(cx, &mut chunk)).await {
            Ok(0) => return FirstHead::Ended,
            Ok(n) => n,
            Err(err) => {
                tracing::trace!(%err, "reading a request head failed");
                return FirstHead::Ended;
            }
        };
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if !could_be_http(&bytes) {
            return FirstHead::NotHttp;
        }
        let end = bytes
            .get(searched..)
            .and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n"))
            .map(|at| searched + at + 4);
        match end {
            Some(end) if end <= max => return FirstHead::Complete(bytes),
            Some(_) => return FirstHead::TooLarge,
            None if bytes.len() > max => return FirstHead::TooLarge,
            None => {}
        }
    }
}

/// Whether `bytes` can be the start of a request line: an upper-case method, then a space.
fn could_be_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().position(|b| *b == b' ').unwrap_or(bytes.len());
    let method = bytes.get(..method_len).unwrap_or_default();
    (1..=MAX_METHOD).contains(&method_len) && method.iter().all(u8::is_ascii_uppercase)
}

/// Whether a complete head asks for a WebSocket (`Upgrade: websocket`, in any case).
pub(crate) fn asks_for_websocket(head: &[u8]) -> bool {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    head.get(..end)
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let (name, value) = line.split_at(colon);
            Some((name, value.get(1..).unwrap_or_default()))
        })
        .any(|(name, value)| {
            name.trim_ascii().eq_ignore_ascii_case(b"upgrade")
                && value
                    .split(|b| *b == b',')
                    .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        })
}

/// A plain HTTP response head and body, closing the connection.
pub(crate) fn response(
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// How long a refused connection is read on after its answer, and how much of it.
pub(crate) const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read while lingering.
pub(crate) const LINGER_BYTES: usize = 1 << 20;

/// Reads on what the client still sends, for a while, after a refusal was written: closing
/// with unread bytes makes the kernel send a reset, which can destroy the refusal before
/// the client reads it.
pub(crate) async fn linger<R, F>(mut poll_read: F)
where
    R: Runtime,
    F: FnMut(&mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>,
{
    let drain = async {
        let mut chunk = [0u8; CHUNK];
        let mut read = 0;
        while read < LINGER_BYTES {
            match poll_fn(|cx| poll_read(cx, &mut chunk)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    drain.or(sleep::<R>(LINGER)).await;
}

/// A stream whose first reads give back bytes already read from it.
#[derive(Debug)]
pub(crate) struct Replay<T> {
    read: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Replay<T> {
    /// `inner`, with `read` to be read again first.
    pub(crate) fn new(read: Vec<u8>, inner: T) -> Self {
        Replay { read, at: 0, inner }
    }

    /// What is left to replay, if anything.
    fn pending(&self) -> Option<&[u8]> {
        self.read.get(self.at..).filter(|rest| !rest.is_empty())
    }
}

impl<T: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for Replay<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(rest) = self.pending() {
            let n = rest.len().min(buf.len());
            if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
                to.copy_from_slice(from);
            }
            self.at += n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

// Writes go straight through: only reads are replayed.
crate::writes_through::writes_through!(Replay);

/// `poll_read` of a hyper stream, in the shape [`read_first_head`] takes.
pub(crate) fn poll_read_hyper<T: hyper::rt::Read + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut read = hyper::rt::ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, read.unfilled()))?;
    Poll::Ready(Ok(read.filled().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` in pieces of `step` bytes.
    fn head_of(input: &[u8], step: usize, max: usize) -> FirstHead {
        let mut at = 0;
        let read = move |_: &mut Context<'_>, buf: &mut [u8]| {
            let n = step.min(buf.len()).min(input.len() - at);
            buf[..n].copy_from_slice(&input[at..at + n]);
            at += n;
            Poll::Ready(Ok(n))
        };
        futures_lite::future::block_on(read_first_head(max, read))
    }

    #[test]
    fn a_head_is_found_across_reads_and_kept_with_what_follows() {
        let input = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";

        for step in [1, 3, 7, 4096] {
            match head_of(input, step, 1024) {
                FirstHead::Complete(bytes) => assert!(input.starts_with(&bytes)),
                other => panic!("step {step}: {other:?}"),
            }
        }
        let FirstHead::Complete(bytes) = head_of(input, 4096, 1024) else {
            panic!("complete");
        };
        assert_eq!(bytes, input);
    }

    #[test]
    fn long_heads_other_protocols_and_closes_are_told_apart() {
        let long = format!("GET /?{} HTTP/1.1\r\n\r\n", "a".repeat(5000));
        let zmtp = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

        assert!(matches!(
            head_of(long.as_bytes(), 4096, 1024),
            FirstHead::TooLarge
        ));
        let whole_but_long = format!("GET /?{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            head_of(whole_but_long.as_bytes(), 4096, 1024),
            FirstHead::TooLarge
        ));
        assert!(matches!(head_of(&zmtp, 4096, 1024), FirstHead::NotHttp));
        assert!(matches!(head_of(b"GET / HT", 4096, 1024), FirstHead::Ended));
        assert!(matches!(
            head_of(b"get / HTTP/1.1\r\n\r\n", 4096, 1024),
            FirstHead::NotHttp
        ));
    }

    #[test]
    fn only_an_upgrade_to_websocket_asks_for_one() {
        let upgrade =
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUPGRADE: WebSocket\r\n\r\n";
        let listed = b"GET / HTTP/1.1\r\nUpgrade: h2c, websocket\r\n\r\n";
        let plain = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
        let in_body = b"POST / HTTP/1.1\r\nContent-Length: 19\r\n\r\nUpgrade: websocket\n";

        assert!(asks_for_websocket(upgrade));
        assert!(asks_for_websocket(listed));
        assert!(!asks_for_websocket(plain));
        assert!(!asks_for_websocket(in_body));
    }
}
