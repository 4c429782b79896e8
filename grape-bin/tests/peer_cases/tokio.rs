// What the peer cases need from tokio: the runtime crate as `rt`, an executor, and timers.

use grenache_tokio as rt;

/// The runtime's name, for log folders and messages.
const RT: &str = "tokio";

/// A multi-thread runtime, so the servers keep running while a test blocks on a probe.
struct Runtime(tokio::runtime::Runtime);

impl Runtime {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Runtime(runtime)
    }

    fn block_on<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        self.0.block_on(fut)
    }
}

async fn sleep(d: std::time::Duration) {
    tokio::time::sleep(d).await;
}

/// `fut`'s output, or `None` if `d` passes first.
async fn within<T>(d: std::time::Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, fut).await.ok()
}

/// Runs `fut` in the background; await the result for its output.
fn spawn<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> {
    let handle = tokio::spawn(fut);
    Box::pin(async move { handle.await.expect("a test task panicked") })
}
