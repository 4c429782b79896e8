//! Runs the Grape on tokio.

use grenache_tokio::Tokio;

use crate::run::serve;
use crate::settings::Settings;

/// Most worker threads the Grape starts. The DHT is one task (the core is one state machine),
/// so more workers only spread HTTP and WebSocket connections, and each idle one still costs
/// memory: tokio's default of one per core could take a many-core host's idle Grape past 5 MB.
const WORKERS: usize = 4;

/// Starts the Grape, serves until SIGINT or SIGTERM, then shuts down cleanly.
pub(crate) fn run(settings: Settings) -> Result<(), String> {
    grenache_tokio::run_until_signal(WORKERS, |signal| serve::<Tokio>(settings, signal))
}
