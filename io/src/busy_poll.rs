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
//! A spin that finds its thread was kept from running (its next poll comes long after it
//! yielded: another thread took the core) stops spinning for a while: on a busy machine
//! a sleeping thread is woken at once by the scheduler's preference for sleepers, and a
//! spinning one only takes turns with the work the peer waits for.
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

use futures_util::future::Either;
use futures_util::task::AtomicWaker;

use crate::runtime::Runtime;
use crate::task::Task;

/// A spin poll that comes this long after its yield means another thread had the core.
const CONTENDED_GAP: Duration = Duration::from_micros(250);

/// How long a task that met contention sleeps as usual before it tries spinning again;
/// doubled at each contention in a row (up to [`MAX_STRIKES`] doublings), so that on a
/// machine that stays busy spinning is rare.
const CONTENDED_PAUSE: Duration = Duration::from_millis(50);

/// Doublings of [`CONTENDED_PAUSE`] at most (50 ms << 7: 6.4 s).
const MAX_STRIKES: u32 = 7;

/// A configured window: a zero one is off.
pub(crate) fn window(window: Duration) -> Option<Duration> {
    (!window.is_zero()).then_some(window)
}

/// `fut`, wrapped in [`BusyPoll`] when `window` is set: the one place that decides it for
/// every task spawned with a window.
fn with_window<R: Runtime, F: Future>(
    window: Option<Duration>,
    fut: F,
) -> Either<BusyPoll<R, F>, F> {
    match window {
        Some(window) => Either::Left(BusyPoll::new(fut, window)),
        None => Either::Right(fut),
    }
}

/// Spawns `fut` detached, busy-polling for `window` if set.
pub(crate) fn spawn_detached<R: Runtime>(
    window: Option<Duration>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    R::spawn_detached(with_window::<R, _>(window, fut));
}

/// Spawns `fut` as a [`Task`], busy-polling for `window` if set.
pub(crate) fn spawn<R: Runtime>(
    window: Option<Duration>,
    fut: impl Future<Output = ()> + Send + 'static,
) -> Task<R> {
    Task::spawn(with_window::<R, _>(window, fut))
}

/// A future that, after each real wake-up, keeps itself polled for a window; see the
/// module docs.
pub(crate) struct BusyPoll<R, F> {
    inner: Pin<Box<F>>,
    spin: Spin,
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
        Self::with_spin(fut, Spin::new(window, CONTENDED_GAP))
    }

    /// One that never pauses for contention, for a test on a loaded machine that checks
    /// the spinning itself.
    #[cfg(feature = "testkit")]
    pub(crate) fn ignoring_contention(fut: F, window: Duration) -> Self {
        Self::with_spin(fut, Spin::new(window, Duration::MAX))
    }

    fn with_spin(fut: F, spin: Spin) -> Self {
        let woken = Arc::new(WokenFlag::default());
        BusyPoll {
            inner: Box::pin(fut),
            spin,
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
        let start = R::now();
        this.woken.task.register(cx.waker());
        let woken = this.woken.woken.swap(false, Ordering::Acquire);
        let mut inner_cx = Context::from_waker(&this.waker);
        if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
            return Poll::Ready(out);
        }
        if this.spin.after_poll(start, R::now(), woken) {
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

/// When a task spins, decided from the times of its polls alone.
#[derive(Debug)]
struct Spin {
    window: Duration,
    /// A poll this long after the spin that asked for it means contention.
    gap: Duration,
    /// Until when the task spins; `None` before its first poll.
    until: Option<Instant>,
    /// When it last asked to be polled again, if that poll is still to come.
    asked_at: Option<Instant>,
    /// No spinning before this, after contention was seen.
    paused_until: Option<Instant>,
    /// Contentions since a spin last paid off (a wake-up came while it spun).
    strikes: u32,
}

impl Spin {
    fn new(window: Duration, gap: Duration) -> Self {
        Spin {
            window,
            gap,
            until: None,
            asked_at: None,
            paused_until: None,
            strikes: 0,
        }
    }

    /// After a poll that began at `start` and left the future pending at `end` (`woken`:
    /// something other than a spin woke it), whether to spin once more.
    fn after_poll(&mut self, start: Instant, end: Instant, woken: bool) -> bool {
        if let Some(asked) = self.asked_at.take() {
            if start.saturating_duration_since(asked) > self.gap {
                self.paused_until = Some(start + CONTENDED_PAUSE * (1 << self.strikes));
                self.strikes = (self.strikes + 1).min(MAX_STRIKES);
            } else if woken {
                self.strikes = 0;
            }
        }
        if woken || self.until.is_none() {
            self.until = Some(end + self.window);
        }
        let paused = self.paused_until.is_some_and(|until| end < until);
        let spin = !paused && self.until.is_some_and(|until| end < until);
        if spin {
            self.asked_at = Some(end);
        }
        spin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(50);

    fn us(t0: Instant, us: u64) -> Instant {
        t0 + Duration::from_micros(us)
    }

    #[test]
    fn spins_for_the_window_after_each_wake_up_only() {
        let t0 = Instant::now();
        let mut spin = Spin::new(WINDOW, CONTENDED_GAP);
        assert!(
            spin.after_poll(t0, us(t0, 1), false),
            "the first poll starts a window"
        );
        assert!(spin.after_poll(us(t0, 3), us(t0, 4), false), "within it");
        assert!(
            spin.after_poll(us(t0, 49), us(t0, 50), false),
            "its last microsecond"
        );
        assert!(
            !spin.after_poll(us(t0, 52), us(t0, 53), false),
            "past it: sleep"
        );
        assert!(
            spin.after_poll(us(t0, 900), us(t0, 901), true),
            "a wake-up starts another"
        );
        assert!(
            spin.after_poll(us(t0, 940), us(t0, 945), true),
            "and another extends it"
        );
        assert!(
            spin.after_poll(us(t0, 990), us(t0, 992), false),
            "from the last one"
        );
        assert!(!spin.after_poll(us(t0, 996), us(t0, 997), false));
    }

    #[test]
    fn a_spin_kept_off_its_core_pauses_spinning() {
        let t0 = Instant::now();
        let mut spin = Spin::new(WINDOW, CONTENDED_GAP);
        assert!(spin.after_poll(t0, us(t0, 1), true));
        // The poll the spin asked for comes 2 ms later: another thread had the core.
        let late = us(t0, 2_001);
        assert!(
            !spin.after_poll(late, us(t0, 2_002), true),
            "paused, even when woken"
        );
        let within = us(t0, 2_001 + 49_000);
        assert!(!spin.after_poll(within, within, true), "still paused");
        // A poll that follows no spin is no evidence of contention: it waited for its wake.
        let after = us(t0, 2_001 + 50_001);
        assert!(
            spin.after_poll(after, after, true),
            "spins again after the pause"
        );
        assert!(
            spin.after_poll(us(t0, 52_010), us(t0, 52_011), false),
            "prompt: spins on"
        );
    }

    #[test]
    fn contention_in_a_row_doubles_the_pause_and_a_spin_that_pays_ends_it() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut spin = Spin::new(WINDOW, CONTENDED_GAP);
        assert!(spin.after_poll(t0, t0, true));
        assert!(
            !spin.after_poll(ms(2), ms(2), true),
            "first contention: 50 ms"
        );
        assert!(spin.after_poll(ms(53), ms(53), true), "over at 52 ms");
        assert!(
            !spin.after_poll(ms(56), ms(56), true),
            "second in a row: 100 ms"
        );
        assert!(
            !spin.after_poll(ms(150), ms(150), true),
            "still paused at 150 ms"
        );
        assert!(spin.after_poll(ms(157), ms(157), true), "over at 156 ms");
        // This time the wake-up comes while it spins: spinning paid off.
        let prompt = ms(157) + Duration::from_micros(20);
        assert!(spin.after_poll(prompt, prompt, true));
        assert!(
            !spin.after_poll(ms(160), ms(160), true),
            "contention again: back to 50 ms"
        );
        assert!(spin.after_poll(ms(211), ms(211), true), "over at 210 ms");
    }
}
