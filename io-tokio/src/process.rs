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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(max_workers.clamp(1, cores));
    run_on(builder, main)
}

/// [`run_until_signal`] on a current-thread runtime: every task on the calling thread.
/// For a program whose work is many small hand-offs between tasks (a proxy), on a box whose
/// cores are busy anyway: no task is woken across threads (no eventfd or futex system call
/// per hand-off), and each wake finds more work ready, so writes gather more per system call.
///
/// # Errors
/// As [`run_until_signal`].
pub fn run_on_one_thread_until_signal<T, F, Fut>(main: F) -> Result<T, String>
where
    F: FnOnce(Signalled) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    run_on(tokio::runtime::Builder::new_current_thread(), main)
}

fn run_on<T, F, Fut>(mut builder: tokio::runtime::Builder, main: F) -> Result<T, String>
where
    F: FnOnce(Signalled) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let runtime = builder
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
