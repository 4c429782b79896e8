//! Running a program on smol until SIGINT or SIGTERM.

use std::future::Future;

use async_signal::{Signal, Signals};
use futures_lite::StreamExt as _;
use grenache_io::Signalled;

/// Runs `main` on smol, handing it a future that resolves when the process gets SIGINT or
/// SIGTERM. The signals are watched before `main` starts, so one sent right after start is
/// not lost to the default handler (which would end the process without a clean stop).
///
/// # Errors
/// The signals cannot be watched, or `main` failed.
pub fn run_until_signal<T, F, Fut>(main: F) -> Result<T, String>
where
    F: FnOnce(Signalled) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    smol::block_on(async {
        #[cfg(unix)]
        let wanted = [Signal::Int, Signal::Term];
        #[cfg(not(unix))]
        let wanted = [Signal::Int];
        let mut signals = Signals::new(wanted)
            .map_err(|err| format!("cannot watch for SIGINT/SIGTERM: {err}"))?;
        main(Box::pin(async move {
            match signals.next().await {
                Some(Ok(Signal::Term)) => "SIGTERM",
                Some(Ok(Signal::Int)) => "SIGINT",
                _ => "a signal",
            }
        }))
        .await
    })
}
