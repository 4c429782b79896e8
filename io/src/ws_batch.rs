//! Writing WebSocket messages in batches. A message written and flushed on its own costs a
//! `send` system call (and, over TLS, a record) each; on loopback that call also carries
//! the receiving side's TCP work, and it was 40-46% of the CPU of both our RPC client and
//! server at 16-64 requests in flight. So every message already waiting when a connection
//! wakes is queued in tungstenite's write buffer first, and the buffer goes out in one
//! flush: one write (one TLS record) per wake, however many messages it carries.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::SinkExt as _;

/// Messages queued before one flush, at most, so one busy connection cannot hold its task
/// (and the memory of its write buffer) for long.
pub(crate) const MAX_BATCH: usize = 256;

/// Writes `first`, then each message `next` gives (up to [`MAX_BATCH`] in all; `next`
/// returns `None` when nothing more is ready), with one flush at the end.
///
/// # Errors
/// When the connection broke; what was queued is lost with it.
pub(crate) async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    first: Message,
    mut next: impl FnMut() -> Option<Message>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.feed(first).await?;
    for _ in 1..MAX_BATCH {
        let Some(msg) = next() else { break };
        ws.feed(msg).await?;
    }
    ws.flush().await
}
