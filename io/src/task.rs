//! Tasks and the semaphore that bounds them, in the shapes the adapter needs.

use std::sync::Arc;

use async_lock::{Semaphore, SemaphoreGuardArc};

use crate::runtime::Runtime;

/// A background task that is cancelled when dropped, unless it has finished; it can be
/// joined through a `&mut`, so a server can wait for it and still be dropped later.
pub(crate) struct Task<R: Runtime>(Option<R::Task>);

impl<R: Runtime> std::fmt::Debug for Task<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("joined", &self.0.is_none())
            .finish()
    }
}

impl<R: Runtime> Task<R> {
    /// Runs `fut` in the background.
    pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Self {
        Task(Some(R::spawn(fut)))
    }

    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(R::is_finished)
    }

    /// Waits for the task to end.
    pub(crate) async fn join(&mut self) {
        if let Some(task) = self.0.take() {
            task.await;
        }
    }
}

/// A counting semaphore shared by tasks.
#[derive(Debug, Clone)]
pub(crate) struct Limiter(Arc<Semaphore>);

/// One unit of a [`Limiter`], given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(#[allow(dead_code)] SemaphoreGuardArc);

impl Limiter {
    /// A limiter of `n` units (at least one).
    pub(crate) fn new(n: usize) -> Self {
        Limiter(Arc::new(Semaphore::new(n.max(1))))
    }

    /// Waits for a unit.
    pub(crate) async fn acquire(&self) -> Permit {
        Permit(self.0.acquire_arc().await)
    }
}
