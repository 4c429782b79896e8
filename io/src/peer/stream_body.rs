//! What a streaming handler gets from an [`RpcServer`](super::RpcServer): the stream's
//! `_gr` metadata and its body as chunks, read off the socket only as the handler asks
//! for them. The headers' rules and the size limit are the core's
//! ([`grenache_core::peer::StreamHead`], [`StreamBudget`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::{Stream, StreamExt as _};
use grenache_core::peer::{StreamBudget, StreamHead, StreamTooLarge};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};

use super::rpc_server::RequestContext;

/// A request stream's metadata: its `_gr` (rid, key), `_a` and `_ar` headers, and what
/// the server knows of the client.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StreamRequest {
    /// The rid, key, action and arguments the client sent.
    pub head: StreamHead,
    /// The client's verified certificate (mutual TLS), as an ordinary handler gets it.
    pub context: RequestContext,
}

/// Why a request stream's body ended early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body passed the server's
    /// [`max_stream_len`](super::RpcServerConfig::max_stream_len); the client gets 413
    /// `ERR_STREAM_TOO_LARGE` whatever the handler answers.
    #[error(transparent)]
    TooLarge(StreamTooLarge),
    /// The client went away or broke the chunked framing.
    #[error("ERR_STREAM_BROKEN: {0}")]
    Broken(String),
}

/// The body of a request stream, chunk by chunk, as the client sent it (gzip or not: a
/// stream's bytes are the handler's business).
///
/// Nothing is read ahead: the next chunk comes off the socket when the handler asks for
/// it, so a slow handler slows the client (TCP flow control) and the server holds at most
/// one read buffer per stream. Dropping it stops reading (the connection then closes after
/// the reply).
#[derive(Debug)]
pub struct RequestBody {
    incoming: Option<Incoming>,
    budget: StreamBudget,
    /// Filled once the body passes its limit, for the server's reply.
    overflow: Arc<Mutex<Option<Overflow>>>,
}

/// A body that passed its limit: by how much, and the unread rest, which the server
/// drains (within bounds) before its 413 so the client is not reset mid-send and can
/// read why.
#[derive(Debug)]
pub(crate) struct Overflow {
    pub(crate) over: StreamTooLarge,
    pub(crate) rest: Incoming,
}

/// Where the server finds a body's [`Overflow`] after its handler.
pub(crate) type OverflowSlot = Arc<Mutex<Option<Overflow>>>;

impl RequestBody {
    /// The body, with the slot the server reads for an overflow after the handler.
    pub(crate) fn new(incoming: Incoming, max: usize) -> (Self, OverflowSlot) {
        let overflow = Arc::new(Mutex::new(None));
        let body = RequestBody {
            incoming: Some(incoming),
            budget: StreamBudget::new(max),
            overflow: Arc::clone(&overflow),
        };
        (body, overflow)
    }

    /// The next chunk; `None` at the end of the body (or after an error).
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.next().await
    }

    /// The rest of the body in one buffer (bounded by the server's stream limit).
    ///
    /// # Errors
    /// As [`chunk`](Self::chunk).
    pub async fn to_vec(mut self) -> Result<Vec<u8>, BodyError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    /// Bytes read so far.
    pub fn read_len(&self) -> u64 {
        self.budget.read()
    }
}

impl Stream for RequestBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(incoming) = this.incoming.as_mut() else {
                return Poll::Ready(None);
            };
            let frame = match Pin::new(incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.incoming = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(err))) => {
                    this.incoming = None;
                    return Poll::Ready(Some(Err(BodyError::Broken(err.to_string()))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if let Err(over) = this.budget.take(len) {
                // What is past the limit never reaches the handler.
                if let Some(rest) = this.incoming.take() {
                    let mut slot = this.overflow.lock().unwrap_or_else(PoisonError::into_inner);
                    *slot = Some(Overflow { over, rest });
                }
                return Poll::Ready(Some(Err(BodyError::TooLarge(over))));
            }
            return Poll::Ready(Some(Ok(data)));
        }
    }
}

/// Reads and drops up to `max` more bytes of an overflowing body, so the client's send
/// ends before the server answers and closes; stops at the end of the body, at `max`, or
/// at an error.
pub(crate) async fn discard(mut rest: Incoming, max: u64) {
    let mut left = max;
    while let Some(Ok(frame)) = rest.frame().await {
        let len = frame.data_ref().map_or(0, |d| d.len());
        left = left.saturating_sub(u64::try_from(len).unwrap_or(u64::MAX));
        if left == 0 {
            return;
        }
    }
}
