//! Runs the Grape on smol.

use async_signal::{Signal, Signals};
use grenache_smol::Smol;
use smol::stream::StreamExt as _;

use crate::run::serve;
use crate::settings::Settings;

/// Starts the Grape, serves until SIGINT or SIGTERM, then shuts down cleanly.
pub(crate) fn run(settings: Settings) -> Result<(), String> {
    smol::block_on(async {
        // Before starting, so a signal right after start is not lost to the default handler.
        let mut signals = watch_signals()?;
        let signal = async move {
            match signals.next().await {
                Some(Ok(Signal::Term)) => "SIGTERM",
                Some(Ok(Signal::Int)) => "SIGINT",
                _ => "a signal",
            }
        };
        serve::<Smol>(settings, signal).await
    })
}

fn watch_signals() -> Result<Signals, String> {
    #[cfg(unix)]
    let wanted = [Signal::Int, Signal::Term];
    #[cfg(not(unix))]
    let wanted = [Signal::Int];
    Signals::new(wanted).map_err(|err| format!("cannot watch for SIGINT/SIGTERM: {err}"))
}
