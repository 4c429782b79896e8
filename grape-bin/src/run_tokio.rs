//! Runs the Grape on tokio.

use grenache_tokio::Tokio;

use crate::run::serve;
use crate::settings::Settings;

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
        serve::<Tokio>(settings, async move { signals.next().await }).await
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
