//! Serving the Grape, once for both runtimes: start it, log where it listens, wait for a
//! signal, shut down within [`SHUTDOWN_LIMIT`]. `run_smol` and `run_tokio` only supply the
//! runtime and its way of hearing signals.

use std::future::Future;

use futures_lite::FutureExt as _;
use grenache_io::{GrapeServer, Listener, Runtime, ServerConfig, StartError};

use crate::settings::Settings;
use crate::{SHUTDOWN_LIMIT, bind_failure, log_started};

/// Starts the Grape, serves until `signal` (which names the signal that came), then shuts
/// down cleanly.
pub(crate) async fn serve<R: Runtime>(
    settings: Settings,
    signal: impl Future<Output = &'static str>,
) -> Result<(), String> {
    let server = GrapeServer::<R>::start(server_config(settings))
        .await
        .map_err(|err| start_failure(&err))?;
    log_started(
        server.local_dht_addr(),
        server.local_api_addr(),
        server.local_ws_addr(),
        server.node_id(),
    );
    let signal = signal.await;
    tracing::info!(signal, "shutting down");
    let deadline = R::now() + SHUTDOWN_LIMIT;
    let stopped = async {
        server.shutdown().await;
        true
    }
    .or(async {
        R::sleep_until(deadline).await;
        false
    })
    .await;
    if !stopped {
        tracing::warn!("clean shutdown took too long; exiting anyway");
    }
    Ok(())
}

fn server_config(settings: Settings) -> ServerConfig {
    let mut config = ServerConfig::new(settings.seed);
    config.bind = settings.bind;
    config.dht_port = settings.dht_port;
    config.api_port = settings.api_port;
    config.ws_port = settings.ws_port;
    config.bootstrap = settings.bootstrap;
    config.known_nodes = settings.known_nodes;
    config.state_file = settings.state_file;
    config.grape = settings.grape;
    config.udp_batching = settings.udp_batching;
    config
}

fn start_failure(err: &StartError) -> String {
    match err {
        StartError::Bind {
            listener,
            addr,
            source,
        } => {
            let (flag, what) = match listener {
                Listener::Dht => ("--dp", "DHT UDP port"),
                Listener::Api => ("--aph", "HTTP API port"),
                Listener::Ws => ("--apw", "WebSocket API port"),
                _ => ("?", "a listener"),
            };
            bind_failure(flag, what, *addr, source)
        }
        other => other.to_string(),
    }
}
