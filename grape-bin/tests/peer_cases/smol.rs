// What the peer cases need from smol: the runtime crate as `rt`, an executor, and timers.

use grenache_smol as rt;

/// The runtime's name, for log folders and messages.
const RT: &str = "smol";

/// smol's global executor runs the tasks; `block_on` drives the test's own future.
struct Runtime;

impl Runtime {
    fn new() -> Self {
        Runtime
    }

    fn block_on<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        smol::block_on(fut)
    }
}

async fn sleep(d: std::time::Duration) {
    smol::Timer::after(d).await;
}

/// `fut`'s output, or `None` if `d` passes first.
async fn within<T>(d: std::time::Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(d).await;
        None
    })
    .await
}

/// Runs `fut` in the background; await the result for its output.
fn spawn<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> {
    Box::pin(smol::spawn(fut))
}
