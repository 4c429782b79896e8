//! Busy polling (`busy_poll` on the peer configs): a woken connection keeps its task
//! polled for its window, then sleeps; peers that busy-poll answer as any other.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use grenache_core::peer::{RequestOptions, RpcTransport};
use serde_json::{Value, json};

use super::local_config;
use crate::busy_poll::BusyPoll;
use crate::peer::{PeerClient, PeerConfig, RpcServer, RpcServerConfig};
use crate::time::sleep;
use crate::{GrapeServer, Runtime};

/// The busy-poll window of the first test: long beside a poll, short beside its pauses.
const WINDOW: Duration = Duration::from_millis(20);

/// A future that counts its polls, keeps its latest waker for the test to wake it with,
/// and ends when told to.
#[derive(Clone, Default)]
struct Probe {
    polls: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<Waker>>>,
    done: Arc<AtomicBool>,
}

impl Probe {
    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        let waker = self.waker.lock().expect("probe lock").take();
        waker.expect("the probe was polled").wake();
    }
}

impl Future for Probe {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        *self.waker.lock().expect("probe lock") = Some(cx.waker().clone());
        if self.done.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// See the test of this name in each runtime's crate.
pub async fn busy_poll_spins_after_each_wake_up_then_sleeps<R: Runtime>() {
    // Arrange: a task that only a wake-up from here would poll again, busy-polling (and
    // not pausing when the test machine's load keeps it off its core: that rule has a unit
    // test of its own).
    let probe = Probe::default();
    let task = R::spawn(BusyPoll::<R, _>::ignoring_contention(probe.clone(), WINDOW));

    // Act and assert: after its first poll it spins (a plain task would be polled once),
    // and once the window has passed it sleeps.
    sleep::<R>(WINDOW * 5).await;
    let after_start = probe.polls();
    assert!(
        after_start > 2,
        "polled {after_start} times in its first window"
    );
    sleep::<R>(WINDOW * 3).await;
    assert_eq!(probe.polls(), after_start, "asleep once the window passed");

    // A wake-up from outside starts a new window.
    probe.wake();
    sleep::<R>(WINDOW * 5).await;
    let after_wake = probe.polls();
    assert!(
        after_wake > after_start + 2,
        "spun again after a wake-up: {after_start} -> {after_wake} polls"
    );
    sleep::<R>(WINDOW * 3).await;
    assert_eq!(probe.polls(), after_wake, "asleep again");

    probe.done.store(true, Ordering::SeqCst);
    probe.wake();
    task.await;
}

/// See the test of this name in each runtime's crate.
pub async fn busy_polling_peers_answer_on_every_transport<R: Runtime>() {
    let grape = GrapeServer::<R>::start(local_config(71))
        .await
        .expect("Grape");
    let url = format!("http://{}", grape.local_api_addr());
    let window = Duration::from_micros(50);
    let announcer = PeerClient::<R>::new(PeerConfig::new(url.clone())).expect("client");
    for (transport, name) in [
        (RpcTransport::Http, "busy_http"),
        (RpcTransport::Ws, "busy_ws"),
        (RpcTransport::Zmq, "busy_zmq"),
    ] {
        let config = RpcServerConfig::new(transport)
            .listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
            .busy_poll(window);
        let server = RpcServer::start(
            &announcer,
            name,
            config,
            |_key, payload: Value| async move { Ok(json!({ "echo": payload })) },
        )
        .await
        .expect("start an RPC server");
        let client = PeerClient::<R>::new(
            PeerConfig::new(url.clone())
                .transport(transport)
                .busy_poll(window),
        )
        .expect("client");
        let opts = RequestOptions::default().timeout(Duration::from_secs(30));
        for i in 0..20 {
            let reply = client.request(name, json!(i), opts.clone()).await;
            assert_eq!(
                reply.expect("a reply"),
                json!({ "echo": i }),
                "{transport:?}: request {i}"
            );
            if i % 5 == 0 {
                // Past the window, so the connections sleep and are woken again.
                sleep::<R>(Duration::from_millis(2)).await;
            }
        }
        server.stop().await;
    }
    grape.shutdown().await;
}
