//! Runs the Grape on tokio.

use grenache_tokio::{GrapeServer, Listener, ServerConfig, StartError};

use crate::settings::Settings;
use crate::{SHUTDOWN_LIMIT, bind_failure, log_started};

/// Most worker threads the Grape starts. The DHT is one task (the core is one state machine),
/// so more workers only spread HTTP and WebSocket connections, and each idle one still costs
/// memory: tokio's default of one per core could take a many-core host's idle Grape past 5 MB.
const WORKERS: usize = 4;

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Starts the Grape, serves until SIGINT or SIGTERM, then shuts down cleanly.
pub(crate) fn run(settings: Settings) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS.min(available_cores()))
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the tokio runtime: {err}"))?;
    runtime.block_on(async {
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
        let signal = signals.next().await;
        tracing::info!(signal, "shutting down");
        let stopped = tokio::time::timeout(SHUTDOWN_LIMIT, server.shutdown())
            .await
            .is_ok();
        if !stopped {
            tracing::warn!("clean shutdown took too long; exiting anyway");
        }
        Ok(())
    })
}

/// SIGINT and SIGTERM (Ctrl-C only off Unix), registered at once.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

fn watch_signals() -> Result<Signals, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let failed = |err| format!("cannot watch for SIGINT/SIGTERM: {err}");
        Ok(Signals {
            int: signal(SignalKind::interrupt()).map_err(failed)?,
            term: signal(SignalKind::terminate()).map_err(failed)?,
        })
    }
    #[cfg(not(unix))]
    Ok(Signals {})
}

impl Signals {
    /// Waits for the next signal and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
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
