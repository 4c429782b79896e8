//! Timers in the shapes the adapter needs, built on [`Runtime::sleep_until`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
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

/// A runtime's sleep, boxed so that the [`Timer`] can keep it.
type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A timer kept from one pass of an event loop to the next: re-armed only for an earlier
/// deadline, so a pass makes no new sleep while the deadline it has is still the one due.
pub(crate) struct Timer<R: Runtime> {
    /// When it fires, and the sleep; `None` once it has fired (or before the first deadline).
    armed: Option<(Instant, Sleep)>,
    runtime: PhantomData<R>,
}

impl<R: Runtime> Default for Timer<R> {
    fn default() -> Self {
        Timer {
            armed: None,
            runtime: PhantomData,
        }
    }
}

impl<R: Runtime> Timer<R> {
    /// Makes sure it fires by `deadline`: a new sleep only when none is armed or the armed
    /// one is later. Without a deadline, an armed sleep is kept (it only wakes the loop).
    pub(crate) fn arm(&mut self, deadline: Option<Instant>) {
        let Some(at) = deadline else {
            return;
        };
        if self.armed.as_ref().is_none_or(|(armed, _)| *armed > at) {
            self.armed = Some((at, Box::pin(R::sleep_until(at))));
        }
    }

    /// Waits until the armed sleep ends (forever if none is armed), then disarms.
    pub(crate) async fn wait(&mut self) {
        match self.armed.as_mut() {
            Some((_, sleep)) => sleep.await,
            None => std::future::pending().await,
        }
        self.armed = None;
    }
}
