//! A watch's receiving end: the peer sets of one service name, as the Grape reports them.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;
use grenache_core::peer::{LinkError, PeerAddr, WatchId};

use super::driver::Command;
use super::shards::WatchedName;

/// What the driver hands a [`Watch`]: a set, or why the watch ended.
pub(crate) type WatchUpdate = Result<Vec<PeerAddr>, LinkError>;

/// The peers serving one name, each time the set changes (the first set as soon as the
/// Grape answers), as a [`Stream`] of sets; see [`PeerClient::watch`].
///
/// Only the latest set waits to be read: one not read before the next change is replaced.
/// While it exists, requests to the name go to the watched set without a lookup. Dropping
/// it unwatches.
#[derive(Debug)]
pub struct Watch {
    id: WatchId,
    name: String,
    /// Boxed: the receiver is not `Unpin`, and `Stream` polls it through a pin.
    updates: Pin<Box<async_channel::Receiver<WatchUpdate>>>,
    ended: Option<LinkError>,
    /// The client's command queue: it keeps the driver running while the watch lives,
    /// and takes the unwatch when it is dropped.
    commands: async_channel::Sender<Command>,
    /// Keeps requests to the name on the client's home shard, which holds the watched set.
    _watched: WatchedName,
}

impl Watch {
    pub(crate) fn new(
        id: WatchId,
        name: String,
        updates: async_channel::Receiver<WatchUpdate>,
        commands: async_channel::Sender<Command>,
        watched: WatchedName,
    ) -> Self {
        Watch {
            id,
            name,
            updates: Box::pin(updates),
            ended: None,
            commands,
            _watched: watched,
        }
    }

    /// The watch's id.
    pub fn id(&self) -> WatchId {
        self.id
    }

    /// The name watched.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next peer set (sorted; empty when nobody serves the name); `None` once the
    /// watch has ended ([`error`](Self::error) says why) or the client has stopped.
    pub async fn next(&mut self) -> Option<Vec<PeerAddr>> {
        let update = self.updates.recv().await.ok();
        self.take(update)
    }

    /// Why the watch ended, once [`next`](Self::next) returned `None` for it: the Grape
    /// refused it (`ERR_GRAPE_WATCH_LIMIT`, or a Grape that does not speak watch). `None`
    /// while it runs, and when it ended because the client stopped.
    pub fn error(&self) -> Option<&LinkError> {
        self.ended.as_ref()
    }

    fn take(&mut self, update: Option<WatchUpdate>) -> Option<Vec<PeerAddr>> {
        match update? {
            Ok(peers) => Some(peers),
            Err(error) => {
                tracing::debug!(watch = %self.id, name = self.name, %error, "watch ended");
                self.ended = Some(error);
                None
            }
        }
    }
}

impl Stream for Watch {
    type Item = Vec<PeerAddr>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<PeerAddr>>> {
        match self.updates.as_mut().poll_next(cx) {
            Poll::Ready(update) => Poll::Ready(self.take(update)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.ended.is_none() {
            // If the queue is full, the driver notices the dropped watch at its next report.
            let _ = self.commands.try_send(Command::Unwatch { watch: self.id });
        }
    }
}
