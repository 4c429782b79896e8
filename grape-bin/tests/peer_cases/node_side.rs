// What the interop cases with Node share, written once against `rt` and the runtime
// helpers: one Grape of ours in-process, and a publisher fed `{"n": k}` every 100 ms.

/// A Grape of ours on 127.0.0.1, ports picked by the OS.
async fn local_grape(seed: u8) -> rt::GrapeServer {
    let mut config = rt::ServerConfig::new([seed; 32]);
    config.bind = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    config.dht_port = 0;
    config.api_port = 0;
    rt::GrapeServer::start(config).await.expect("start a Grape")
}

/// Publishes `{"n": k}` (k = 0, 1, ...) every 100 ms until [`stop`](Self::stop).
struct Publishing {
    on: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Publishing {
    /// Starts publishing on `publisher`; call it inside the runtime (tokio needs its context).
    fn start(publisher: &std::sync::Arc<rt::peer::Publisher>) -> Publishing {
        let on = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (p, running) = (std::sync::Arc::clone(publisher), std::sync::Arc::clone(&on));
        let task = spawn(async move {
            let mut n = 0u64;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = p.publish_text(serde_json::json!({ "n": n }).to_string());
                n += 1;
                sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        Publishing { on, task }
    }

    /// Stops publishing, then stops `publisher` once this was the last hold on it.
    async fn stop(self, publisher: std::sync::Arc<rt::peer::Publisher>) {
        self.on.store(false, std::sync::atomic::Ordering::Relaxed);
        self.task.await;
        if let Some(publisher) = std::sync::Arc::into_inner(publisher) {
            publisher.stop().await;
        }
    }
}
