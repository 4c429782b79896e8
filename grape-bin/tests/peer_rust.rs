//! Rust peers against Rust peers, on smol and on tokio: round trips over HTTP and
//! WebSocket, PUB/SUB, the typed errors (timeout, oversized payloads and replies, malformed
//! replies, a server that accepts and never answers), failover when one of three servers
//! dies mid-load, and a stopped server leaving the lookups.
//!
//! The cases are written once, in `peer_cases/rust.rs`, against `rt` (the runtime crate)
//! and a few runtime helpers; each module below includes them for its runtime.

mod smol_rt {
    use std::future::Future;
    use std::pin::Pin;

    use grenache_smol as rt;

    struct Runtime;

    impl Runtime {
        fn new() -> Self {
            Runtime
        }

        fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
            smol::block_on(fut)
        }
    }

    async fn sleep(d: std::time::Duration) {
        smol::Timer::after(d).await;
    }

    async fn within<T>(d: std::time::Duration, fut: impl Future<Output = T>) -> Option<T> {
        smol::future::or(async { Some(fut.await) }, async {
            smol::Timer::after(d).await;
            None
        })
        .await
    }

    fn spawn<T: Send + 'static>(
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = T> + Send>> {
        Box::pin(smol::spawn(fut))
    }

    include!("peer_cases/rust.rs");
}

mod tokio_rt {
    use std::future::Future;
    use std::pin::Pin;

    use grenache_tokio as rt;

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

        fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
            self.0.block_on(fut)
        }
    }

    async fn sleep(d: std::time::Duration) {
        tokio::time::sleep(d).await;
    }

    async fn within<T>(d: std::time::Duration, fut: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(d, fut).await.ok()
    }

    fn spawn<T: Send + 'static>(
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = T> + Send>> {
        let handle = tokio::spawn(fut);
        Box::pin(async move { handle.await.expect("a test task panicked") })
    }

    include!("peer_cases/rust.rs");
}
