//! Keeps the first bytes a server sent on a client connection, so that when the HTTP or
//! WebSocket library fails to read its answer, the core can tell what the server speaks
//! ([`Protocol::sniff`]) and the request fails with `ERR_WRONG_TRANSPORT` at once.
//!
//! The wrapper copies at most [`KEEP`] bytes, once, then only passes reads through.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use grenache_core::peer::Protocol;

/// Enough to see a ZMTP signature (10 bytes) or `HTTP/1.`.
const KEEP: usize = 16;

/// The bytes seen so far, shared by the wrapper (inside the I/O library) and its owner.
#[derive(Clone, Debug, Default)]
pub(crate) struct FirstBytes(Arc<Mutex<Vec<u8>>>);

impl FirstBytes {
    /// What the bytes seen say the server speaks.
    pub(crate) fn protocol(&self) -> Option<Protocol> {
        let seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Protocol::sniff(&seen)
    }

    /// Keeps what is still missing of the first [`KEEP`] bytes; `true` once full.
    fn record(&self, read: &[u8]) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let take = KEEP.saturating_sub(seen.len()).min(read.len());
        seen.extend_from_slice(read.get(..take).unwrap_or_default());
        seen.len() >= KEEP
    }
}

/// A stream that records its first bytes into a [`FirstBytes`].
#[derive(Debug)]
pub(crate) struct Recording<T> {
    inner: T,
    first: FirstBytes,
    full: bool,
}

impl<T> Recording<T> {
    /// Wraps `inner`; the returned [`FirstBytes`] fills as it is read.
    pub(crate) fn new(inner: T) -> (Self, FirstBytes) {
        let first = FirstBytes::default();
        let stream = Recording {
            inner,
            first: first.clone(),
            full: false,
        };
        (stream, first)
    }

    fn saw(&mut self, read: &[u8]) {
        if !self.full {
            self.full = self.first.record(read);
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Recording<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.full {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        // Until the first bytes are kept, read through a small buffer of our own: hyper's
        // cursor does not let its filled part be read back without unsafe code.
        let mut scratch = [0u8; KEEP];
        let room = buf.remaining().min(KEEP);
        let mut small = hyper::rt::ReadBuf::new(scratch.get_mut(..room).unwrap_or_default());
        ready!(Pin::new(&mut self.inner).poll_read(cx, small.unfilled()))?;
        let read = small.filled();
        buf.put_slice(read);
        self.saw(read);
        Poll::Ready(Ok(()))
    }
}

impl<T: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for Recording<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.saw(buf.get(..n).unwrap_or_default());
        Poll::Ready(Ok(n))
    }
}

// Writes go straight through: only reads are watched.
crate::writes_through::writes_through!(Recording);
