//! A one-shot signal that wakes every waiter: how the server tells its tasks to wind down.

use tokio::sync::watch;

/// The firing end; dropping it fires too, so a dropped server stops its tasks.
#[derive(Debug)]
pub(crate) struct StopTrigger(Option<watch::Sender<()>>);

/// The waiting end; clone it for every task that must hear the signal.
#[derive(Debug, Clone)]
pub(crate) struct Stop(watch::Receiver<()>);

/// Makes a connected trigger and signal.
pub(crate) fn stop_pair() -> (StopTrigger, Stop) {
    // Nothing is ever sent: dropping the sender is the signal, and it reaches every clone.
    let (tx, rx) = watch::channel(());
    (StopTrigger(Some(tx)), Stop(rx))
}

impl StopTrigger {
    /// Fires the signal; later calls do nothing.
    pub(crate) fn fire(&mut self) {
        self.0 = None;
    }
}

impl Stop {
    /// Waits until the signal fires (at once if it already has).
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        while rx.changed().await.is_ok() {}
    }
}
