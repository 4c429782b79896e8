//! The API's JSON 431 for every request head over the limit, not only a connection's first.
//!
//! hyper bounds every head it reads (its read buffer, and a count of header fields) and
//! answers one past either bound with a bare 431, no body; and only hyper can find the
//! heads after a connection's first (that means following each body's framing). So the
//! stream under hyper watches what hyper writes: hyper writes that 431 only where a
//! response starts, with its own status line, and this stream sends the API's JSON 431 in
//! its place. It then reads on what the client still sends, for a while, before closing:
//! closing with unread bytes makes the kernel send a reset, which can destroy the answer
//! before the client reads it.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::head::{LINGER, LINGER_BYTES, poll_read_hyper};
use crate::runtime::Runtime;
use crate::time::sleep;

/// The status line hyper starts its bare 431 with.
const BARE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";

/// A stream under hyper that answers an oversized head with `reply` (a whole response).
pub(crate) struct JsonTooLarge<R, I> {
    inner: I,
    reply: fn() -> Vec<u8>,
    state: State,
    runtime: PhantomData<fn() -> R>,
}

/// Where the connection is.
enum State {
    /// Serving: hyper's bytes go through.
    Passing,
    /// hyper refused a head: `bytes[at..]` of our answer are still to be written.
    Answering { bytes: Vec<u8>, at: usize },
    /// Answered: reading on until the client closes, `read` bytes so far, or time is up.
    Lingering {
        read: usize,
        until: Pin<Box<dyn Future<Output = ()> + Send>>,
    },
    /// Nothing more goes out.
    Done,
}

impl<R: Runtime, I> JsonTooLarge<R, I> {
    /// `inner`, answering an oversized head with `reply()`.
    pub(crate) fn new(inner: I, reply: fn() -> Vec<u8>) -> Self {
        Self {
            inner,
            reply,
            state: State::Passing,
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime, I: hyper::rt::Read + hyper::rt::Write + Unpin> JsonTooLarge<R, I> {
    /// Writes what is left of the answer, then starts lingering.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let State::Answering { bytes, at } = &mut self.state {
            let rest = bytes.get(*at..).unwrap_or_default();
            if rest.is_empty() {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.state = State::Lingering {
                    read: 0,
                    until: Box::pin(sleep::<R>(LINGER)),
                };
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and drops what the client sends until it closes, [`LINGER_BYTES`] or [`LINGER`].
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Lingering { read, until } = &mut self.state else {
            return Poll::Ready(());
        };
        let mut chunk = [0u8; 4096];
        while *read < LINGER_BYTES && until.as_mut().poll(cx).is_pending() {
            match ready!(poll_read_hyper(&mut self.inner, cx, &mut chunk)) {
                Ok(0) | Err(_) => break,
                Ok(n) => *read += n,
            }
        }
        self.state = State::Done;
        Poll::Ready(())
    }
}

impl<R, I: hyper::rt::Read + Unpin> hyper::rt::Read for JsonTooLarge<R, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<R: Runtime, I: hyper::rt::Read + hyper::rt::Write + Unpin> hyper::rt::Write
    for JsonTooLarge<R, I>
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !matches!(self.state, State::Passing) {
            // hyper writes nothing after its 431; what it would is not wanted.
            return Poll::Ready(Ok(buf.len()));
        }
        match find(buf, BARE_431) {
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
            // The responses before it go out as they are.
            Some(at) if at > 0 => {
                Pin::new(&mut self.inner).poll_write(cx, buf.get(..at).unwrap_or_default())
            }
            Some(_) => {
                self.state = State::Answering {
                    bytes: (self.reply)(),
                    at: 0,
                };
                // The bare 431 counts as written: ours goes out in its place.
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.state {
            State::Passing => Pin::new(&mut self.inner).poll_flush(cx),
            State::Answering { .. } => self.poll_answer(cx),
            State::Lingering { .. } | State::Done => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !matches!(self.state, State::Passing) {
            ready!(self.poll_answer(cx))?;
            ready!(self.poll_linger(cx));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// No: hyper then gathers each response in one buffer (its "flatten" strategy), so a
    /// status line is never split across the buffers of one write.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Where `needle` first occurs in `haystack`. Compares only where its first byte is: on
/// every response written, a comparison at each position showed in a profile (1.5%).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    haystack
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .map(|(at, _)| at)
        .find(|at| {
            haystack
                .get(*at..)
                .is_some_and(|rest| rest.starts_with(needle))
        })
}

impl<R, I: std::fmt::Debug> std::fmt::Debug for JsonTooLarge<R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonTooLarge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_is_found_anywhere_and_only_whole() {
        let after = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";

        assert_eq!(find(after, BARE_431), Some(40));
        assert_eq!(find(&after[40..], BARE_431), Some(0));
        assert_eq!(find(&after[..60], BARE_431), None);
        assert_eq!(find(b"HTTP/1.1 200 OK\r\n\r\n", BARE_431), None);
    }
}
