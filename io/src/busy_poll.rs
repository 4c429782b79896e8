//! Busy polling: a connection that was just woken keeps its thread polling for a short
//! window instead of letting it sleep.
//!
//! Why: a request at low concurrency is a ping-pong of two processes that each go to
//! sleep between messages, so every message pays a wake-up. On bare metal that is a few
//! microseconds; on a virtual machine whose idle vCPU halts, it is an exit to the host and
//! back, tens of microseconds, and it dwarfs what either side computes (one request in
//! flight between our WebSocket client and server: about 12k req/s with both processes
//! asleep between messages, 53k with both on one core where no vCPU idles). A thread that
//! keeps polling its sockets for a moment after each wake-up is awake when the answer
//! arrives. It costs CPU: up to the window's length per wake-up, spent spinning, so it is
//! off unless asked for (`busy_poll` on the peer client's and the RPC server's configs).
//!
//! It is done per task, not per thread, so it needs nothing from the runtime but a way to
//! be polled again after the runtime has looked at its sockets
//! ([`Runtime::yield_now`]): [`BusyPoll`] wraps a connection's future and tells the
//! wake-ups that matter (a socket or a queue woke it) from its own spins, so the window
//! runs from the last real one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use crate::runtime::Runtime;

/// Spawns `fut` detached, wrapped in [`BusyPoll`] when `window` is set.
pub(crate) fn spawn_detached<R: Runtime>(
    window: Option<Duration>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    match window {
        Some(window) => R::spawn_detached(BusyPoll::<R, _>::new(fut, window)),
        None => R::spawn_detached(fut),
    }
}

/// A future that, after each real wake-up, keeps itself polled for `window`; see the
/// module docs.
pub(crate) struct BusyPoll<R, F> {
    inner: Pin<Box<F>>,
    window: Duration,
    /// Until when the task spins; `None` before its first poll.
    spin_until: Option<Instant>,
    woken: Arc<WokenFlag>,
    /// `woken` as a waker, made once.
    waker: Waker,
    _runtime: std::marker::PhantomData<fn() -> R>,
}

/// The waker the inner future sees: it notes that something other than a spin woke it,
/// then wakes the task.
#[derive(Default)]
struct WokenFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<R: Runtime, F: Future> BusyPoll<R, F> {
    pub(crate) fn new(fut: F, window: Duration) -> Self {
        let woken = Arc::new(WokenFlag::default());
        BusyPoll {
            inner: Box::pin(fut),
            window,
            spin_until: None,
            waker: Waker::from(Arc::clone(&woken)),
            woken,
            _runtime: std::marker::PhantomData,
        }
    }
}

impl<R: Runtime, F: Future> Future for BusyPoll<R, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.woken.task.register(cx.waker());
        let woken = this.woken.woken.swap(false, Ordering::Acquire);
        let mut inner_cx = Context::from_waker(&this.waker);
        if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
            return Poll::Ready(out);
        }
        let now = R::now();
        if woken || this.spin_until.is_none() {
            this.spin_until = Some(now + this.window);
        }
        if this.spin_until.is_some_and(|until| now < until) {
            // A spinning thread must not hold a core that the process it waits for needs
            // (more runnable threads than cores): the OS may run another thread here first.
            std::thread::yield_now();
            // Woken with the task's own waker, not `waker`: a spin is not a wake-up.
            let yielded = std::pin::pin!(R::yield_now());
            let _ = yielded.poll(cx);
        }
        Poll::Pending
    }
}
