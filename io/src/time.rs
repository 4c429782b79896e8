//! Timers in the shapes the adapter needs, built on [`Runtime::sleep_until`].

use std::future::Future;
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;

use crate::runtime::Runtime;

/// Waits until `deadline`; forever if there is none.
pub(crate) async fn sleep_until<R: Runtime>(deadline: Option<Instant>) {
    match deadline {
        Some(at) => R::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for `duration`.
pub(crate) async fn sleep<R: Runtime>(duration: Duration) {
    R::sleep_until(R::now() + duration).await;
}

/// Runs `fut` for at most `limit`; `None` if time ran out first.
pub(crate) async fn timeout<R: Runtime, T>(
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let deadline = R::now() + limit;
    async { Some(fut.await) }
        .or(async {
            R::sleep_until(deadline).await;
            None
        })
        .await
}
