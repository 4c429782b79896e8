//! PUB/SUB routes: subscribe to TARGET over TO, publish every message on FROM as NAME.
//!
//! The proxy subscribes only while someone listens: with no subscriber on NAME it drops its
//! subscription to TARGET, and takes it again when one comes. The subscription itself
//! reconnects when TARGET's publisher goes and comes (the client's rule).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::FutureExt as _;
use grenache_core::peer::Protocol;
use grenache_io::Runtime;
use grenache_io::peer::{
    PeerClient, PubSubTransport, Publisher, PublisherConfig, ServerError, SubEvent, Subscription,
};

use crate::route::Route;

/// How often the relay checks whether anybody listens on NAME.
const LISTENER_CHECK: Duration = Duration::from_millis(250);

/// The PUB/SUB transport that speaks `p`; HTTP has none.
pub fn pubsub_transport(p: Protocol) -> Option<PubSubTransport> {
    match p {
        Protocol::Ws => Some(PubSubTransport::Ws),
        Protocol::Zmq => Some(PubSubTransport::Zmq),
        Protocol::Http => None,
    }
}

/// A PUB/SUB route's counters so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Messages received from TARGET and published on NAME.
    pub relayed: u64,
    /// Times the proxy subscribed to TARGET (someone started listening).
    pub subscribed: u64,
    /// Times it dropped its subscription (nobody listened any more).
    pub unsubscribed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    relayed: AtomicU64,
    subscribed: AtomicU64,
    unsubscribed: AtomicU64,
}

impl RelayCounters {
    pub(crate) fn snapshot(&self) -> RelayStats {
        RelayStats {
            relayed: self.relayed.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            unsubscribed: self.unsubscribed.load(Ordering::Relaxed),
        }
    }
}

/// One PUB/SUB route at work: its publisher lives in the relay task.
pub(crate) struct Relay<R: Runtime> {
    pub(crate) route: Route,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) counters: Arc<RelayCounters>,
    stop: async_channel::Sender<()>,
    task: R::Task,
}

impl<R: Runtime> std::fmt::Debug for Relay<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Relay<R> {
    /// Starts and announces NAME's publisher on FROM; the relay subscribes to TARGET
    /// through `client` (whose PUB/SUB transport is TO) while NAME has subscribers.
    pub(crate) async fn start(
        route: &Route,
        from: PubSubTransport,
        bind: std::net::IpAddr,
        client: PeerClient<R>,
    ) -> Result<Self, ServerError> {
        let config = PublisherConfig::new()
            .transport(from)
            .listen_on(bind, route.port);
        let publisher = Publisher::start(&client, &route.name, config).await?;
        let addr = publisher.local_addr();
        let counters = Arc::new(RelayCounters::default());
        let (stop, stopped) = async_channel::bounded(1);
        let task = R::spawn(relay::<R>(
            publisher,
            client,
            route.target.clone(),
            stopped,
            Arc::clone(&counters),
        ));
        Ok(Relay {
            route: route.clone(),
            addr,
            counters,
            stop,
            task,
        })
    }

    /// Unsubscribes, unannounces and stops the publisher.
    pub(crate) async fn stop(self) {
        let _ = self.stop.try_send(());
        self.task.await;
    }
}

/// What woke the relay.
enum Wake {
    Stop,
    Event(Option<SubEvent>),
    Check,
}

async fn relay<R: Runtime>(
    publisher: Publisher<R>,
    client: PeerClient<R>,
    target: String,
    stop: async_channel::Receiver<()>,
    counters: Arc<RelayCounters>,
) {
    let mut sub: Option<Subscription> = None;
    loop {
        let stopping = async { stop.recv().await.map_or(Wake::Stop, |()| Wake::Stop) };
        let check = async {
            R::sleep_until(R::now() + LISTENER_CHECK).await;
            Wake::Check
        };
        let wake = match sub.as_mut() {
            Some(s) => {
                let event = async { Wake::Event(s.next_event().await) };
                stopping.race(event).race(check).await
            }
            None => stopping.race(check).await,
        };
        match wake {
            Wake::Stop => break,
            Wake::Event(Some(SubEvent::Message(msg))) => {
                if publisher.publish(msg).is_ok() {
                    counters.relayed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Wake::Event(Some(other)) => tracing::debug!(target, ?other, "relay subscription"),
            // The client has stopped: subscribe again at the next check.
            Wake::Event(None) => sub = None,
            Wake::Check => {}
        }
        let listening = publisher.subscribers() > 0;
        if listening && sub.is_none() {
            match client.subscribe(&target).await {
                Ok(s) => {
                    counters.subscribed.fetch_add(1, Ordering::Relaxed);
                    sub = Some(s);
                }
                Err(err) => tracing::warn!(target, %err, "cannot subscribe"),
            }
        } else if !listening && sub.take().is_some() {
            counters.unsubscribed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target, "nobody listens; unsubscribed");
        }
    }
    drop(sub);
    publisher.stop().await;
}
