//! Runs the Grape on smol.

use grenache_smol::Smol;

use crate::run::serve;
use crate::settings::Settings;

/// Starts the Grape, serves until SIGINT or SIGTERM, then shuts down cleanly.
pub(crate) fn run(settings: Settings) -> Result<(), String> {
    grenache_smol::run_until_signal(|signal| serve::<Smol>(settings, signal))
}
