//! The runtime's clock and timers, in the shapes the adapter needs.

use std::future::Future;
use std::time::{Duration, Instant};

/// The runtime's idea of now, for the core's `now` arguments and for deadlines. tokio's
/// clock, so tests with paused time drive the core too.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Waits until `deadline`; forever if there is none.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits for `duration`.
pub(crate) async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Runs `fut` for at most `limit`; `None` if time ran out first.
pub(crate) async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}
