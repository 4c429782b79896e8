//! A one-shot signal that wakes every waiter: how the server tells its tasks to wind down.

/// The firing end; dropping it fires too, so a dropped server stops its tasks.
#[derive(Debug)]
pub(crate) struct StopTrigger(async_channel::Sender<()>);

/// The waiting end; clone it for every task that must hear the signal.
#[derive(Debug, Clone)]
pub(crate) struct Stop(async_channel::Receiver<()>);

/// Makes a connected trigger and signal.
pub(crate) fn stop_pair() -> (StopTrigger, Stop) {
    // Nothing is ever sent: closing the channel is the signal, and it reaches every clone.
    let (tx, rx) = async_channel::bounded(1);
    (StopTrigger(tx), Stop(rx))
}

impl StopTrigger {
    /// Fires the signal; later calls do nothing.
    pub(crate) fn fire(&mut self) {
        self.0.close();
    }
}

impl Stop {
    /// Waits until the signal fires (at once if it already has).
    pub(crate) async fn wait(&self) {
        let _ = self.0.recv().await;
    }
}

/// Resolves with the name of the first SIGINT or SIGTERM the process gets (`"SIGINT"`,
/// `"SIGTERM"`); what each runtime crate's `run_until_signal` hands a program so it can stop
/// cleanly (unannounce, answer what is in flight) instead of dying to the default handler.
pub type Signalled = std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>;
