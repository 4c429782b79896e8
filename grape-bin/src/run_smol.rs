//! Runs the Grape on smol.

use async_signal::{Signal, Signals};
use grenache_smol::{GrapeServer, Listener, ServerConfig, StartError};
use smol::Timer;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;

use crate::settings::Settings;
use crate::{SHUTDOWN_LIMIT, bind_failure, log_started};

/// Starts the Grape, serves until SIGINT or SIGTERM, then shuts down cleanly.
pub(crate) fn run(settings: Settings) -> Result<(), String> {
    smol::block_on(async {
        // Before starting, so a signal right after start is not lost to the default handler.
        let mut signals = watch_signals()?;
        let server = GrapeServer::start(server_config(settings))
            .await
            .map_err(|err| start_failure(&err))?;
        log_started(
            server.local_dht_addr(),
            server.local_api_addr(),
            server.local_ws_addr(),
            server.node_id(),
        );
        let signal = match signals.next().await {
            Some(Ok(Signal::Term)) => "SIGTERM",
            Some(Ok(Signal::Int)) => "SIGINT",
            _ => "a signal",
        };
        tracing::info!(signal, "shutting down");
        let stopped = async {
            server.shutdown().await;
            true
        }
        .or(async {
            Timer::after(SHUTDOWN_LIMIT).await;
            false
        })
        .await;
        if !stopped {
            tracing::warn!("clean shutdown took too long; exiting anyway");
        }
        Ok(())
    })
}

fn watch_signals() -> Result<Signals, String> {
    #[cfg(unix)]
    let wanted = [Signal::Int, Signal::Term];
    #[cfg(not(unix))]
    let wanted = [Signal::Int];
    Signals::new(wanted).map_err(|err| format!("cannot watch for SIGINT/SIGTERM: {err}"))
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
