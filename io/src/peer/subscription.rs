//! A subscription's receiving end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::Stream;
use grenache_core::peer::{LinkError, PeerAddr, SubscriptionId, WsMessage};

use super::driver::Command;

/// What happens to a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubEvent {
    /// Connected to this publisher; messages published from now on arrive.
    Subscribed(PeerAddr),
    /// A published message, verbatim.
    Message(WsMessage),
    /// The publisher went away or could not be found; the subscription looks the channel
    /// up and connects again at `retry_at` (messages published meanwhile are missed).
    Disconnected {
        /// `ERR_TRANSPORT_CLOSE`, or why the lookup failed.
        error: LinkError,
        /// When the next attempt starts.
        retry_at: Instant,
    },
}

/// The messages of one channel, as a [`Stream`] of [`WsMessage`]s (or, with
/// [`next_event`](Self::next_event), with connection changes in between).
///
/// Dropping it unsubscribes. If it is not read, events beyond
/// [`PeerConfig::subscription_queue`](super::PeerConfig::subscription_queue) are dropped.
#[derive(Debug)]
pub struct Subscription {
    id: SubscriptionId,
    /// Boxed: the receiver is not `Unpin`, and `Stream` polls it through a pin.
    events: Pin<Box<async_channel::Receiver<SubEvent>>>,
    /// The client's command queue: it keeps the driver running while the subscription
    /// lives, and takes the unsubscribe when it is dropped.
    commands: async_channel::Sender<Command>,
}

impl Subscription {
    pub(crate) fn new(
        id: SubscriptionId,
        events: async_channel::Receiver<SubEvent>,
        commands: async_channel::Sender<Command>,
    ) -> Self {
        Subscription {
            id,
            events: Box::pin(events),
            commands,
        }
    }

    /// The subscription's id.
    pub fn id(&self) -> SubscriptionId {
        self.id
    }

    /// The next event; `None` once the client has stopped.
    pub async fn next_event(&mut self) -> Option<SubEvent> {
        self.events.recv().await.ok()
    }

    /// The next published message, skipping connection changes; `None` once the client
    /// has stopped.
    pub async fn next_message(&mut self) -> Option<WsMessage> {
        loop {
            match self.next_event().await? {
                SubEvent::Message(msg) => return Some(msg),
                other => tracing::debug!(sub = %self.id, ?other, "subscription event"),
            }
        }
    }
}

impl Stream for Subscription {
    type Item = WsMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WsMessage>> {
        loop {
            match self.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(SubEvent::Message(msg))) => return Poll::Ready(Some(msg)),
                Poll::Ready(Some(other)) => {
                    tracing::debug!(sub = %self.id, ?other, "subscription event");
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // If the queue is full, the driver notices the dropped events queue at its next
        // event instead.
        let _ = self
            .commands
            .try_send(Command::Unsubscribe { sub: self.id });
    }
}
