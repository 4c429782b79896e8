//! Running a program on tokio until SIGINT or SIGTERM.

use std::future::Future;

use grenache_io::Signalled;

/// Runs `main` on a multi-thread tokio runtime of at most `max_workers` worker threads
/// (fewer on a host with fewer cores), handing it a future that resolves when the process
/// gets SIGINT or SIGTERM. The signals are watched before `main` starts, so one sent right
/// after start is not lost to the default handler.
///
/// Why a cap: each idle worker costs memory, and a Grenache program's work is mostly one
/// state machine plus connections, so tokio's default of a worker per core buys little on a
/// many-core host.
///
/// # Errors
/// The runtime cannot start, the signals cannot be watched, or `main` failed.
pub fn run_until_signal<T, F, Fut>(max_workers: usize, main: F) -> Result<T, String>
where
    F: FnOnce(Signalled) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(max_workers.clamp(1, cores))
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the tokio runtime: {err}"))?;
    runtime.block_on(async {
        let signalled = watch_signals()?;
        main(signalled).await
    })
}

#[cfg(unix)]
fn watch_signals() -> Result<Signalled, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let failed = |err| format!("cannot watch for SIGINT/SIGTERM: {err}");
    let mut int = signal(SignalKind::interrupt()).map_err(failed)?;
    let mut term = signal(SignalKind::terminate()).map_err(failed)?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }))
}

#[cfg(not(unix))]
fn watch_signals() -> Result<Signalled, String> {
    Ok(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }))
}
