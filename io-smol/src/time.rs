//! The runtime's clock and timers, in the shapes the adapter needs.

use std::future::Future;
use std::time::{Duration, Instant};

use smol::Timer;
use smol::future::{self, FutureExt as _};

/// The runtime's idea of now, for the core's `now` arguments and for deadlines.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Waits until `deadline`; forever if there is none.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => {
            Timer::at(at).await;
        }
        None => future::pending().await,
    }
}

/// Waits for `duration`.
pub(crate) async fn sleep(duration: Duration) {
    Timer::after(duration).await;
}

/// Runs `fut` for at most `limit`; `None` if time ran out first.
pub(crate) async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    async { Some(fut.await) }
        .or(async {
            Timer::after(limit).await;
            None
        })
        .await
}
